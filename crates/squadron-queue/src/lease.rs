//! The statements that move a task between states once it is claimed:
//! claim, heartbeat, rescue, the fenced writes of a lease, and releases.
//!
//! Every statement on a claimed task is fenced: it matches the task only
//! while it is `running` under the claim's `lease_token`, so a worker that
//! lost its lease (rescued, cancelled, taken over) changes nothing.

use std::sync::LazyLock;
use std::time::Duration;

use crate::db::{on_writer, Conn, QueueDb, NOW};
use crate::task::micros;
use crate::{with_conn, QueueError};

/// Releases on shutdown a task may take without a new checkpoint before
/// one of them is charged as an attempt, so that a step longer than the
/// shutdown timeout cannot loop for ever under steady scale-down.
pub const INTERRUPT_BUDGET: i32 = 5;

/// The states of a task waiting to run.
pub(crate) const WAITING_STATES: &str = "('available', 'scheduled', 'retryable')";

/// Clears the lease of a task that stops running.
const NO_LEASE: &str = "lease_owner = NULL, lease_expires_at = NULL";

/// A task this worker claimed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    /// The task's id.
    pub id: i64,
    /// Its kind.
    pub kind: String,
    /// Its arguments, JSON.
    pub args: String,
    /// This attempt's number (1 for the first).
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The claim's fencing token.
    pub lease_token: i64,
    /// The last committed checkpoint, JSON.
    pub checkpoint: Option<String>,
    /// When it was enqueued (µs since the epoch, database clock).
    pub created_at: i64,
}

const CLAIMED_COLUMNS: &str = "id, kind, args, attempt, max_attempts, lease_token, checkpoint, created_at";

static CLAIM_POSTGRES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE tasks SET state = 'running', attempt = attempt + 1, lease_token = lease_token + 1, \
                lease_owner = $2, lease_expires_at = {NOW} + $3, claimed_at = {NOW} \
         WHERE id IN (SELECT id FROM tasks WHERE queue = $1 AND state IN {WAITING_STATES} AND run_at <= {NOW} \
                      AND kind = ANY($5) ORDER BY priority DESC, run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
         RETURNING {CLAIMED_COLUMNS}"
    )
});

static CLAIM_SQLITE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE tasks SET state = 'running', attempt = attempt + 1, lease_token = lease_token + 1, \
                lease_owner = $2, lease_expires_at = {NOW} + $3, claimed_at = {NOW} \
         WHERE id IN (SELECT id FROM tasks WHERE queue = $1 AND state IN {WAITING_STATES} AND run_at <= {NOW} \
                      AND kind IN (SELECT value FROM json_each($5)) ORDER BY priority DESC, run_at, id LIMIT $4) \
         RETURNING {CLAIMED_COLUMNS}"
    )
});

/// Claims up to `limit` due tasks of `queue` whose kind is in `kinds`,
/// leasing them to `owner` for `lease`.
pub(crate) async fn claim(
    db: &QueueDb,
    queue: &str,
    kinds: &[String],
    owner: &str,
    lease: Duration,
    limit: usize,
) -> Result<Vec<Claimed>, QueueError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(match db {
        QueueDb::Sqlite { writer, .. } => {
            let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
            let kinds = serde_json::to_string(kinds).expect("kind names serialize");
            let claimed = sqlx::query_as(&CLAIM_SQLITE)
                .bind(queue)
                .bind(owner)
                .bind(micros(lease))
                .bind(limit)
                .bind(kinds)
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            claimed
        }
        QueueDb::Postgres(pool) => {
            sqlx::query_as(&CLAIM_POSTGRES)
                .bind(queue)
                .bind(owner)
                .bind(micros(lease))
                .bind(limit)
                .bind(kinds)
                .fetch_all(pool)
                .await?
        }
    })
}

static RENEW: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE tasks SET lease_expires_at = {NOW} + $2 WHERE state = 'running' AND lease_owner = $1 \
         RETURNING id, lease_token"
    )
});

/// Extends every lease `owner` holds, in one statement; returns the
/// `(id, lease_token)` of the leases it still holds.
pub(crate) async fn renew(conn: Conn<'_>, owner: &str, lease: Duration) -> Result<Vec<(i64, i64)>, QueueError> {
    Ok(with_conn!(conn, c => sqlx::query_as(&RENEW).bind(owner).bind(micros(lease)).fetch_all(c).await?))
}

/// A task whose lease had expired, made runnable again by the rescuer.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Rescued {
    /// The task's id.
    pub id: i64,
    /// Its kind.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// `available`, or `failed` when it had no attempt left.
    pub state: String,
}

static RESCUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE tasks SET \
            state = CASE WHEN attempt >= max_attempts THEN 'failed' ELSE 'available' END, \
            finished_at = CASE WHEN attempt >= max_attempts THEN {NOW} ELSE NULL END, \
            run_at = {NOW}, rescues = rescues + 1, \
            last_error = 'lease expired: worker ' || lease_owner || ' stopped renewing it', {NO_LEASE} \
         WHERE state = 'running' AND lease_expires_at < {NOW} \
         RETURNING id, kind, queue, state"
    )
});

/// Makes every task whose lease expired runnable again (or `failed`, when
/// it has no attempt left: the lost attempt counts, since a task that
/// kills its worker must not do so for ever).
pub(crate) async fn rescue(db: &QueueDb) -> Result<Vec<Rescued>, QueueError> {
    Ok(on_writer!(db, c => sqlx::query_as(&RESCUE).fetch_all(c).await?))
}

/// The fence of every statement on a claimed task.
const FENCE: &str = "id = $1 AND lease_token = $2 AND state = 'running'";

static CHECKPOINT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE tasks SET checkpoint = $3, releases_since_checkpoint = 0, lease_expires_at = {NOW} + $4 \
         WHERE {FENCE}"
    )
});

/// Records a step's checkpoint inside the step's transaction, and renews
/// the lease; false when the lease is no longer this claim's (the caller
/// must then roll back).
pub(crate) async fn checkpoint(
    conn: Conn<'_>,
    id: i64,
    token: i64,
    checkpoint: &str,
    lease: Duration,
) -> Result<bool, QueueError> {
    let done = with_conn!(conn, c => sqlx::query(&CHECKPOINT)
        .bind(id)
        .bind(token)
        .bind(checkpoint)
        .bind(micros(lease))
        .execute(c)
        .await?
        .rows_affected());
    Ok(done == 1)
}

/// The assignments that complete a running task, or make it available
/// again, fresh, when an enqueue asked for one more run meanwhile.
static COMPLETE_SET: LazyLock<String> = LazyLock::new(|| {
    format!(
        "state = CASE WHEN rerun THEN 'available' ELSE 'completed' END, \
         run_at = CASE WHEN rerun THEN {NOW} ELSE run_at END, \
         finished_at = CASE WHEN rerun THEN NULL ELSE {NOW} END, \
         attempt = CASE WHEN rerun THEN 0 ELSE attempt END, \
         checkpoint = CASE WHEN rerun THEN NULL ELSE checkpoint END, \
         releases_since_checkpoint = 0, rerun = FALSE, {NO_LEASE}"
    )
});

static COMPLETE_ONE: LazyLock<String> =
    LazyLock::new(|| format!("UPDATE tasks SET {} WHERE {FENCE} RETURNING queue, state", *COMPLETE_SET));

static COMPLETE_MANY_POSTGRES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE tasks SET {} FROM unnest($1::bigint[], $2::bigint[]) AS d(id, token) \
         WHERE tasks.id = d.id AND tasks.lease_token = d.token AND tasks.state = 'running' \
         RETURNING tasks.queue, tasks.state",
        *COMPLETE_SET
    )
});

static COMPLETE_MANY_SQLITE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE tasks SET {} WHERE state = 'running' AND (id, lease_token) IN \
            (SELECT value ->> 0, value ->> 1 FROM json_each($1)) \
         RETURNING queue, state",
        *COMPLETE_SET
    )
});

/// Completes one claimed task on `conn` (the handler's last step's
/// transaction); `None` when the lease was lost, otherwise the queue it
/// was on when it runs again.
pub(crate) async fn complete_in(conn: Conn<'_>, id: i64, token: i64) -> Result<Option<Finished>, QueueError> {
    let row: Option<(String, String)> =
        with_conn!(conn, c => sqlx::query_as(&COMPLETE_ONE).bind(id).bind(token).fetch_optional(c).await?);
    Ok(row.map(Finished::from))
}

/// Completes claimed tasks, `(id, lease_token)`, in one transaction; tasks
/// whose lease was lost are left alone. Returns what was finished.
pub(crate) async fn complete_many(db: &QueueDb, tasks: &[(i64, i64)]) -> Result<Vec<Finished>, QueueError> {
    let rows: Vec<(String, String)> = match db {
        QueueDb::Sqlite { writer, .. } => {
            let pairs = serde_json::to_string(tasks).expect("pairs of integers serialise");
            sqlx::query_as(&COMPLETE_MANY_SQLITE).bind(pairs).fetch_all(writer).await?
        }
        QueueDb::Postgres(pool) => {
            let (ids, tokens): (Vec<i64>, Vec<i64>) = tasks.iter().copied().unzip();
            sqlx::query_as(&COMPLETE_MANY_POSTGRES).bind(ids).bind(tokens).fetch_all(pool).await?
        }
    };
    Ok(rows.into_iter().map(Finished::from).collect())
}

/// A task a fenced statement finished: its queue, and whether it is
/// runnable again (asked to run once more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finished {
    pub queue: String,
    pub runs_again: bool,
}

impl From<(String, String)> for Finished {
    fn from((queue, state): (String, String)) -> Finished {
        Finished { queue, runs_again: state == "available" }
    }
}

static RETRY_LATER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE tasks SET state = 'retryable', run_at = {NOW} + $4, last_error = $3, {NO_LEASE} \
         WHERE {FENCE} RETURNING queue, state"
    )
});

static FAIL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE tasks SET \
            state = CASE WHEN rerun THEN 'available' ELSE 'failed' END, \
            run_at = CASE WHEN rerun THEN {NOW} ELSE run_at END, \
            finished_at = CASE WHEN rerun THEN NULL ELSE {NOW} END, \
            attempt = CASE WHEN rerun THEN 0 ELSE attempt END, \
            checkpoint = CASE WHEN rerun THEN NULL ELSE checkpoint END, \
            last_error = $3, rerun = FALSE, {NO_LEASE} \
         WHERE {FENCE} RETURNING queue, state"
    )
});

static SNOOZE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE tasks SET state = 'scheduled', run_at = {NOW} + $3, attempt = attempt - 1, rerun = FALSE, {NO_LEASE} \
         WHERE {FENCE} RETURNING queue, state"
    )
});

/// What becomes of a claimed task that did not complete.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Setback {
    /// Retry after `backoff`.
    Retry { error: String, backoff: Duration },
    /// End `failed` (unless one more run was asked for: then it runs again,
    /// fresh).
    Fail { error: String },
    /// Run again after `delay`, uncharged.
    Snooze { delay: Duration },
}

/// Applies a setback to a claimed task; `None` when the lease was lost.
pub(crate) async fn set_back(
    db: &QueueDb,
    id: i64,
    token: i64,
    setback: &Setback,
) -> Result<Option<Finished>, QueueError> {
    let row: Option<(String, String)> = on_writer!(db, c => match setback {
        Setback::Retry { error, backoff } => {
            sqlx::query_as(&RETRY_LATER).bind(id).bind(token).bind(error).bind(micros(*backoff)).fetch_optional(c).await?
        }
        Setback::Fail { error } => sqlx::query_as(&FAIL).bind(id).bind(token).bind(error).fetch_optional(c).await?,
        Setback::Snooze { delay } => {
            sqlx::query_as(&SNOOZE).bind(id).bind(token).bind(micros(*delay)).fetch_optional(c).await?
        }
    });
    Ok(row.map(Finished::from))
}

/// A task a worker handed back on shutdown.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Released {
    /// The task's id.
    pub id: i64,
    /// Its kind.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// `available`, or `failed` when the release used up its last attempt.
    pub state: String,
    /// Whether it had a checkpoint to resume from.
    pub checkpointed: bool,
}

/// The assignments of a release: back to `available` at once, the attempt
/// refunded unless the interrupt budget ran out.
static RELEASE_SET: LazyLock<String> = LazyLock::new(|| {
    let spent = format!("releases_since_checkpoint + 1 >= {INTERRUPT_BUDGET}");
    format!(
        "state = CASE WHEN {spent} AND attempt >= max_attempts THEN 'failed' ELSE 'available' END, \
         finished_at = CASE WHEN {spent} AND attempt >= max_attempts THEN {NOW} ELSE NULL END, \
         last_error = CASE WHEN {spent} THEN 'released {INTERRUPT_BUDGET} times on shutdown without a new checkpoint' \
                      ELSE last_error END, \
         attempt = CASE WHEN {spent} THEN attempt ELSE attempt - 1 END, \
         releases_since_checkpoint = CASE WHEN {spent} THEN 0 ELSE releases_since_checkpoint + 1 END, \
         releases = releases + 1, run_at = {NOW}, {NO_LEASE}"
    )
});

const RELEASED_COLUMNS: &str = "id, kind, queue, state, checkpoint IS NOT NULL AS checkpointed";

static RELEASE_ONE: LazyLock<String> =
    LazyLock::new(|| format!("UPDATE tasks SET {} WHERE {FENCE} RETURNING {RELEASED_COLUMNS}", *RELEASE_SET));

static RELEASE_OWNER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE tasks SET {} WHERE state = 'running' AND lease_owner = $1 RETURNING {RELEASED_COLUMNS}",
        *RELEASE_SET
    )
});

/// Hands one claimed task back; `None` when the lease was already lost.
pub(crate) async fn release(db: &QueueDb, id: i64, token: i64) -> Result<Option<Released>, QueueError> {
    Ok(on_writer!(db, c => sqlx::query_as(&RELEASE_ONE).bind(id).bind(token).fetch_optional(c).await?))
}

/// Hands back every task `owner` still holds, in one statement.
pub(crate) async fn release_owner(db: &QueueDb, owner: &str) -> Result<Vec<Released>, QueueError> {
    Ok(on_writer!(db, c => sqlx::query_as(&RELEASE_OWNER).bind(owner).fetch_all(c).await?))
}
