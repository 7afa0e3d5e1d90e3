//! What operators do with the queue: look at it, retry or cancel a task,
//! and prune finished tasks.

use std::sync::LazyLock;
use std::time::Duration;

use serde::Serialize;

use crate::db::{on_writer, QueueDb, NOW};
use crate::lease::WAITING_STATES;
use crate::task::{micros, Outcome, Task, TaskError};
use crate::{Job, QueueError};

/// Every state a task can be in, in the order they are shown.
pub const STATES: [&str; 7] = ["available", "scheduled", "retryable", "running", "completed", "failed", "cancelled"];

/// One task as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TaskInfo {
    /// Its id.
    pub id: i64,
    /// Its kind.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// Its arguments, JSON.
    pub args: String,
    /// Its state.
    pub state: String,
    /// Higher runs first.
    pub priority: i16,
    /// When it is due (µs since the epoch).
    pub run_at: i64,
    /// When it was enqueued (µs since the epoch).
    pub created_at: i64,
    /// Attempts so far (the current one included while running).
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Its unique key.
    pub unique_key: Option<String>,
    /// Whether it runs once more after the current run.
    pub rerun: bool,
    /// The last committed checkpoint, JSON.
    pub checkpoint: Option<String>,
    /// The worker holding its lease.
    pub lease_owner: Option<String>,
    /// When its lease expires (µs since the epoch).
    pub lease_expires_at: Option<i64>,
    /// When it was last claimed (µs since the epoch).
    pub claimed_at: Option<i64>,
    /// When it completed, failed or was cancelled (µs since the epoch).
    pub finished_at: Option<i64>,
    /// Times its lease expired and it was rescued.
    pub rescues: i32,
    /// Times it was handed back on shutdown.
    pub releases: i32,
    /// The last error.
    pub last_error: Option<String>,
}

const TASK_COLUMNS: &str = "id, kind, queue, args, state, priority, run_at, created_at, attempt, max_attempts, \
     unique_key, rerun, checkpoint, lease_owner, lease_expires_at, claimed_at, finished_at, rescues, releases, last_error";

/// The tasks of one queue, by state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueDepth {
    /// The queue.
    pub queue: String,
    /// How many tasks are in each state, every state listed. A scheduled or
    /// retryable task that is due counts as available.
    pub states: Vec<(String, i64)>,
    /// How long the oldest due task has waited.
    pub oldest_waiting: Option<Duration>,
}

impl QueueDepth {
    /// How many tasks are in `state`.
    pub fn count(&self, state: &str) -> i64 {
        self.states.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n)
    }
}

static DEPTHS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT queue, CASE WHEN state IN {WAITING_STATES} AND run_at <= n.now THEN 'available' ELSE state END AS shown, \
                COUNT(*), MAX(CASE WHEN state IN {WAITING_STATES} AND run_at <= n.now THEN n.now - run_at END) \
         FROM tasks, (SELECT {NOW} AS now) n GROUP BY queue, shown"
    )
});

/// The depth of every queue in `queues` and of any other queue that holds
/// tasks, sorted by name.
pub async fn depths(db: &QueueDb, queues: &[String]) -> Result<Vec<QueueDepth>, QueueError> {
    let rows: Vec<(String, String, i64, Option<i64>)> = match db {
        QueueDb::Sqlite { reader, .. } => sqlx::query_as(&DEPTHS).fetch_all(reader).await?,
        QueueDb::Postgres(pool) => sqlx::query_as(&DEPTHS).fetch_all(pool).await?,
    };
    let mut names: Vec<String> = queues.to_vec();
    names.extend(rows.iter().map(|r| r.0.clone()));
    names.sort();
    names.dedup();
    Ok(names
        .into_iter()
        .map(|queue| {
            let mine = || rows.iter().filter(|r| r.0 == queue);
            let states = STATES
                .iter()
                .map(|state| (state.to_string(), mine().filter(|r| r.1 == *state).map(|r| r.2).sum()))
                .collect();
            let oldest = mine().filter_map(|r| r.3).max().map(|us| Duration::from_micros(us.max(0) as u64));
            QueueDepth { queue, states, oldest_waiting: oldest }
        })
        .collect())
}

/// A task running now, as the status shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunningTask {
    /// Its id.
    pub id: i64,
    /// Its kind.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// The worker holding the lease.
    pub lease_owner: Option<String>,
    /// The attempt.
    pub attempt: i32,
    /// How long ago it was claimed (µs).
    pub running_for: i64,
    /// How long until its lease expires unless renewed (µs; negative once
    /// expired and not yet rescued).
    pub lease_left: i64,
}

/// Everything `squadron queue status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct QueueStatus {
    /// Every queue's depth.
    pub queues: Vec<QueueDepth>,
    /// The running tasks, longest running first.
    pub running: Vec<RunningTask>,
    /// The most recently failed tasks.
    pub failed: Vec<TaskInfo>,
}

/// Reads the status of the queues (`queues` are listed even when empty).
pub async fn status(db: &QueueDb, queues: &[String], list_limit: i64) -> Result<QueueStatus, QueueError> {
    let running_sql = format!(
        "SELECT id, kind, queue, lease_owner, attempt, n.now - claimed_at AS running_for, \
                lease_expires_at - n.now AS lease_left \
         FROM tasks, (SELECT {NOW} AS now) n WHERE state = 'running' ORDER BY claimed_at LIMIT $1"
    );
    let failed_sql =
        format!("SELECT {TASK_COLUMNS} FROM tasks WHERE state = 'failed' ORDER BY finished_at DESC, id DESC LIMIT $1");
    let (running, failed) = match db {
        QueueDb::Sqlite { reader, .. } => (
            sqlx::query_as(&running_sql).bind(list_limit).fetch_all(reader).await?,
            sqlx::query_as(&failed_sql).bind(list_limit).fetch_all(reader).await?,
        ),
        QueueDb::Postgres(pool) => (
            sqlx::query_as(&running_sql).bind(list_limit).fetch_all(pool).await?,
            sqlx::query_as(&failed_sql).bind(list_limit).fetch_all(pool).await?,
        ),
    };
    Ok(QueueStatus { queues: depths(db, queues).await?, running, failed })
}

/// One task, by id.
pub async fn task(db: &QueueDb, id: i64) -> Result<TaskInfo, QueueError> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1");
    let found: Option<TaskInfo> = match db {
        QueueDb::Sqlite { reader, .. } => sqlx::query_as(&sql).bind(id).fetch_optional(reader).await?,
        QueueDb::Postgres(pool) => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?,
    };
    found.ok_or(QueueError::NoSuchTask(id))
}

/// How many tasks are in `state` (any state when `None`) on `queue` (any
/// when `None`).
pub async fn count(db: &QueueDb, state: Option<&str>, queue: Option<&str>) -> Result<i64, QueueError> {
    let sql = "SELECT COUNT(*) FROM tasks WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR queue = $2)";
    Ok(match db {
        QueueDb::Sqlite { reader, .. } => sqlx::query_scalar(sql).bind(state).bind(queue).fetch_one(reader).await?,
        QueueDb::Postgres(pool) => sqlx::query_scalar(sql).bind(state).bind(queue).fetch_one(pool).await?,
    })
}

/// Tasks in `state` (any state when `None`) on `queue` (any when `None`),
/// newest first, at most `limit` after skipping `offset`.
pub async fn list(
    db: &QueueDb,
    state: Option<&str>,
    queue: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<Vec<TaskInfo>, QueueError> {
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR queue = $2) \
         ORDER BY id DESC LIMIT $3 OFFSET $4"
    );
    Ok(match db {
        QueueDb::Sqlite { reader, .. } => {
            sqlx::query_as(&sql).bind(state).bind(queue).bind(limit).bind(offset).fetch_all(reader).await?
        }
        QueueDb::Postgres(pool) => {
            sqlx::query_as(&sql).bind(state).bind(queue).bind(limit).bind(offset).fetch_all(pool).await?
        }
    })
}

/// Makes a task that is not running due at once, with its attempts reset
/// (a failed, cancelled or completed task runs again, from its last
/// checkpoint).
pub async fn retry(db: &QueueDb, id: i64) -> Result<TaskInfo, QueueError> {
    let sql = format!(
        "UPDATE tasks SET state = 'available', run_at = {NOW}, attempt = 0, finished_at = NULL, rerun = FALSE, \
                releases_since_checkpoint = 0 \
         WHERE id = $1 AND state IN ('scheduled', 'retryable', 'completed', 'failed', 'cancelled') RETURNING id"
    );
    let result: Result<Option<i64>, sqlx::Error> =
        on_writer!(db, c => sqlx::query_scalar(&sql).bind(id).fetch_optional(c).await);
    match result {
        Ok(Some(_)) => task(db, id).await,
        Ok(None) => Err(refused(db, id, "retry").await),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(QueueError::UniqueKeyTaken(id)),
        Err(e) => Err(e.into()),
    }
}

/// Cancels a task that is waiting or running (a running task's handler is
/// stopped by its next fenced write).
pub async fn cancel(db: &QueueDb, id: i64) -> Result<TaskInfo, QueueError> {
    let sql = format!(
        "UPDATE tasks SET state = 'cancelled', finished_at = {NOW}, rerun = FALSE, lease_owner = NULL, \
                lease_expires_at = NULL \
         WHERE id = $1 AND state IN ('available', 'scheduled', 'retryable', 'running') RETURNING id"
    );
    let cancelled: Option<i64> = on_writer!(db, c => sqlx::query_scalar(&sql).bind(id).fetch_optional(c).await?);
    match cancelled {
        Some(_) => task(db, id).await,
        None => Err(refused(db, id, "cancel").await),
    }
}

/// Why `action` did nothing to task `id`.
async fn refused(db: &QueueDb, id: i64, action: &'static str) -> QueueError {
    match task(db, id).await {
        Ok(task) => QueueError::WrongState { id, state: task.state, action },
        Err(e) => e,
    }
}

/// How long finished tasks are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Completed and cancelled tasks (and the record of periodic runs).
    pub completed: Duration,
    /// Failed tasks, kept longer for people to look at.
    pub failed: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { completed: Duration::from_secs(24 * 3600), failed: Duration::from_secs(7 * 24 * 3600) }
    }
}

/// Rows one pruning statement deletes at most, so that it never holds the
/// database for long.
const PRUNE_BATCH: i64 = 5000;

/// Deletes finished tasks older than their retention, in short batches;
/// returns how many tasks went.
pub async fn prune(db: &QueueDb, retention: Retention) -> Result<u64, QueueError> {
    let tasks_sql = format!(
        "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE state IN ('completed', 'cancelled', 'failed') \
            AND finished_at < {NOW} - CASE WHEN state = 'failed' THEN $2 ELSE $1 END LIMIT $3)"
    );
    // The latest period of each schedule stays whatever its age: it is what
    // tells a scheduler that period already ran.
    let runs_sql = format!(
        "DELETE FROM periodic_runs WHERE (schedule, period_start) IN \
            (SELECT schedule, period_start FROM periodic_runs r WHERE period_start < {NOW} - $1 \
                AND period_start < (SELECT MAX(period_start) FROM periodic_runs l WHERE l.schedule = r.schedule) \
             LIMIT $2)"
    );
    let mut pruned = 0;
    loop {
        let done = on_writer!(db, c => sqlx::query(&tasks_sql)
            .bind(micros(retention.completed))
            .bind(micros(retention.failed))
            .bind(PRUNE_BATCH)
            .execute(c)
            .await?
            .rows_affected());
        pruned += done;
        if done < PRUNE_BATCH as u64 {
            break;
        }
    }
    loop {
        let done = on_writer!(db, c => sqlx::query(&runs_sql)
            .bind(micros(retention.completed))
            .bind(PRUNE_BATCH)
            .execute(c)
            .await?
            .rows_affected());
        if done < PRUNE_BATCH as u64 {
            break;
        }
    }
    Ok(pruned)
}

/// What [`PruneFinished`] needs: the database and how long to keep tasks.
pub struct Pruning {
    /// The queue's database.
    pub db: QueueDb,
    /// How long finished tasks are kept.
    pub retention: Retention,
}

/// The periodic task that prunes finished tasks (see [`prune`]). Deleting
/// rows past their retention is idempotent, so a run cut short is simply
/// run again.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PruneFinished {}

impl Task for PruneFinished {
    const KIND: &'static str = "prune_finished_tasks";
    const QUEUE: &'static str = "core_quick";
    type Context = Pruning;

    async fn run(&self, cx: &Pruning, _job: &mut Job) -> Result<Outcome, TaskError> {
        let pruned = prune(&cx.db, cx.retention).await?;
        if pruned > 0 {
            tracing::info!(pruned, "pruned finished tasks past their retention");
        }
        Ok(Outcome::Done)
    }
}
