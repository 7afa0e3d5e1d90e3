//! Enqueueing, always inside the caller's transaction.

use std::collections::BTreeSet;

use crate::db::{Conn, QueueDb, NOW};
use crate::routing::Routes;
use crate::task::NewTask;
use crate::{with_conn, QueueError};

/// The PostgreSQL channel that wakes workers; its payload is a queue name.
pub(crate) const NOTIFY_CHANNEL: &str = "squadron_tasks";

/// The states in which a task counts as pending work for its unique key.
const PENDING_STATES: &str = "('available', 'scheduled', 'retryable', 'running')";

/// What an enqueue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// A new task was inserted.
    Inserted(i64),
    /// A task with the same unique key was already waiting: nothing changed.
    AlreadyWaiting(i64),
    /// A task with the same unique key was running: it will run once more
    /// when it finishes.
    RerunRequested(i64),
}

impl Enqueued {
    /// The id of the task that will do the work.
    pub fn id(self) -> i64 {
        match self {
            Enqueued::Inserted(id) | Enqueued::AlreadyWaiting(id) | Enqueued::RerunRequested(id) => id,
        }
    }
}

/// Enqueues tasks, routing each kind to its queue. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    routes: Routes,
}

impl Queue {
    /// A client with these routes.
    pub fn new(routes: Routes) -> Queue {
        Queue { routes }
    }

    /// The routes.
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// Enqueues `task` on `conn`, usually the caller's transaction: the task
    /// exists if and only if that transaction commits.
    pub async fn enqueue(&self, conn: Conn<'_>, task: &NewTask) -> Result<Enqueued, QueueError> {
        enqueue_one(conn, &self.routes, task, None).await
    }

    /// Enqueues many tasks on `conn` at once; returns how many tasks were
    /// inserted (tasks whose unique key was already pending are not).
    pub async fn enqueue_many(&self, conn: Conn<'_>, tasks: &[NewTask]) -> Result<u64, QueueError> {
        let (unique, plain): (Vec<&NewTask>, Vec<&NewTask>) = tasks.iter().partition(|t| t.unique_key.is_some());
        let mut inserted = 0;
        let mut woken = BTreeSet::new();
        match conn {
            Conn::Sqlite(c) => {
                for chunk in plain.chunks(5000) {
                    inserted += insert_plain_sqlite(&mut *c, &self.routes, chunk).await?;
                }
                for task in unique {
                    if let Enqueued::Inserted(_) = enqueue_one(Conn::Sqlite(&mut *c), &self.routes, task, None).await? {
                        inserted += 1;
                    }
                }
            }
            Conn::Postgres(c) => {
                for chunk in plain.chunks(5000) {
                    inserted += insert_plain_postgres(&mut *c, &self.routes, chunk, &mut woken).await?;
                }
                for task in unique {
                    if let Enqueued::Inserted(_) =
                        enqueue_one(Conn::Postgres(&mut *c), &self.routes, task, None).await?
                    {
                        inserted += 1;
                    }
                }
                for queue in woken {
                    notify_postgres(&mut *c, &queue).await?;
                }
            }
        }
        Ok(inserted)
    }
}

/// Enqueues one task; `from_task` is the running task enqueueing it, whose
/// own unique key must not make it run again.
pub(crate) async fn enqueue_one(
    mut conn: Conn<'_>,
    routes: &Routes,
    task: &NewTask,
    from_task: Option<i64>,
) -> Result<Enqueued, QueueError> {
    let queue = routes.queue_for(&task.kind, &task.default_queue);
    if let Some(key) = &task.unique_key {
        // Try the pending task first, then insert; an insert that loses a
        // race with another transaction's inserts nothing and goes round.
        loop {
            let (delay, at) = task.due();
            let existing: Option<(i64, String, bool)> = with_conn!(&mut conn, c => {
                sqlx::query_as(&format!(
                    "UPDATE tasks SET rerun = CASE WHEN state = 'running' AND id IS DISTINCT FROM $2 THEN TRUE ELSE rerun END, \
                     run_at = CASE WHEN $3 AND state IN ('scheduled', 'retryable') AND run_at > {DUE} THEN {DUE} ELSE run_at END \
                     WHERE unique_key = $1 AND state IN {PENDING_STATES} RETURNING id, state, run_at <= {NOW}"
                ))
                .bind(key)
                .bind(from_task)
                .bind(task.advance)
                .bind(at)
                .bind(delay)
                .fetch_optional(&mut **c)
                .await?
            });
            if let Some((id, state, due)) = existing {
                if let (true, true, Conn::Postgres(c)) = (task.advance, due && state != "running", &mut conn) {
                    notify_postgres(c, queue).await?;
                }
                return Ok(if state == "running" && from_task != Some(id) {
                    Enqueued::RerunRequested(id)
                } else {
                    Enqueued::AlreadyWaiting(id)
                });
            }
            let sql = format!(
                "{INSERT_SQL} ON CONFLICT (unique_key) WHERE state IN {PENDING_STATES} DO NOTHING RETURNING id, state"
            );
            if let Some(id) = insert_returning(&mut conn, &sql, queue, task).await? {
                return Ok(Enqueued::Inserted(id));
            }
        }
    }
    let sql = format!("{INSERT_SQL} RETURNING id, state");
    let id = insert_returning(&mut conn, &sql, queue, task)
        .await?
        .expect("an insert without conflict target returns its row");
    Ok(Enqueued::Inserted(id))
}

/// When a task enqueued with delay `$5` or at time `$4` is due.
const DUE: &str = "(SELECT COALESCE($4, now_us + $5) FROM queue_clock)";

/// `INSERT … SELECT` of one task, due at `COALESCE($6, now + $5)`. The
/// `WHERE TRUE` lets SQLite parse an `ON CONFLICT` after it.
const INSERT_SQL: &str =
    "INSERT INTO tasks (kind, queue, args, state, priority, run_at, created_at, max_attempts, unique_key) \
     SELECT $1, $2, $3, CASE WHEN c.due > c.now_us THEN 'scheduled' ELSE 'available' END, $4, c.due, c.now_us, $7, $8 \
     FROM (SELECT now_us, COALESCE($6, now_us + $5) AS due FROM queue_clock) c WHERE TRUE";

/// Runs an insert of one task; returns its id, or `None` when a pending
/// task with the same unique key made it insert nothing. On PostgreSQL a
/// task due at once wakes the queue's workers when the transaction commits.
async fn insert_returning(
    conn: &mut Conn<'_>,
    sql: &str,
    queue: &str,
    task: &NewTask,
) -> Result<Option<i64>, QueueError> {
    let (delay, at) = task.due();
    let row: Option<(i64, String)> = with_conn!(conn, c => {
        sqlx::query_as(sql)
            .bind(&task.kind)
            .bind(queue)
            .bind(&task.args)
            .bind(task.priority)
            .bind(delay)
            .bind(at)
            .bind(task.max_attempts)
            .bind(&task.unique_key)
            .fetch_optional(&mut **c)
            .await?
    });
    if let (Some((_, state)), Conn::Postgres(c)) = (&row, conn) {
        if state == "available" {
            notify_postgres(c, queue).await?;
        }
    }
    Ok(row.map(|(id, _)| id))
}

/// Inserts tasks without unique keys in one statement: their fields go
/// in as one JSON array (SQLite has no array parameters).
async fn insert_plain_sqlite(
    conn: &mut sqlx::SqliteConnection,
    routes: &Routes,
    tasks: &[&NewTask],
) -> Result<u64, QueueError> {
    let rows: Vec<serde_json::Value> = tasks
        .iter()
        .map(|task| {
            let (delay, at) = task.due();
            serde_json::json!([
                task.kind,
                routes.queue_for(&task.kind, &task.default_queue),
                task.args,
                task.priority,
                delay,
                at,
                task.max_attempts
            ])
        })
        .collect();
    let done = sqlx::query(
        "INSERT INTO tasks (kind, queue, args, state, priority, run_at, created_at, max_attempts) \
         SELECT t.kind, t.queue, t.args, CASE WHEN t.due > t.now THEN 'scheduled' ELSE 'available' END, \
                t.priority, t.due, t.now, t.max_attempts \
         FROM (SELECT j.value ->> 0 AS kind, j.value ->> 1 AS queue, j.value ->> 2 AS args, \
                      j.value ->> 3 AS priority, COALESCE(j.value ->> 5, c.now_us + (j.value ->> 4)) AS due, \
                      c.now_us AS now, j.value ->> 6 AS max_attempts \
               FROM json_each($1) j, queue_clock c ORDER BY j.key) t",
    )
    .bind(serde_json::Value::Array(rows).to_string())
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Inserts tasks without unique keys in one statement; notes the queues
/// that got work due at once in `woken`.
async fn insert_plain_postgres(
    conn: &mut sqlx::PgConnection,
    routes: &Routes,
    tasks: &[&NewTask],
    woken: &mut BTreeSet<String>,
) -> Result<u64, QueueError> {
    let mut kinds = Vec::with_capacity(tasks.len());
    let mut queues = Vec::with_capacity(tasks.len());
    let mut args = Vec::with_capacity(tasks.len());
    let mut priorities = Vec::with_capacity(tasks.len());
    let mut delays = Vec::with_capacity(tasks.len());
    let mut ats = Vec::with_capacity(tasks.len());
    let mut max_attempts = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (delay, at) = task.due();
        let queue = routes.queue_for(&task.kind, &task.default_queue);
        if delay == 0 && at.is_none() && !woken.contains(queue) {
            woken.insert(queue.to_string());
        }
        kinds.push(task.kind.as_str());
        queues.push(queue);
        args.push(task.args.as_str());
        priorities.push(task.priority);
        delays.push(delay);
        ats.push(at);
        max_attempts.push(task.max_attempts);
    }
    let done = sqlx::query(&format!(
        "INSERT INTO tasks (kind, queue, args, state, priority, run_at, created_at, max_attempts) \
         SELECT t.kind, t.queue, t.args, CASE WHEN COALESCE(t.at, n.now + t.delay) > n.now THEN 'scheduled' ELSE 'available' END, \
                t.priority, COALESCE(t.at, n.now + t.delay), n.now, t.max_attempts \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[], $5::bigint[], $6::bigint[], $7::int[]) \
              AS t(kind, queue, args, priority, delay, at, max_attempts), \
              (SELECT {NOW} AS now) n"
    ))
    .bind(&kinds)
    .bind(&queues)
    .bind(&args)
    .bind(&priorities)
    .bind(&delays)
    .bind(&ats)
    .bind(&max_attempts)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Wakes the workers of `queue` (delivered when the transaction commits;
/// PostgreSQL folds repeats within one transaction).
async fn notify_postgres(conn: &mut sqlx::PgConnection, queue: &str) -> Result<(), QueueError> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(NOTIFY_CHANNEL).bind(queue).execute(conn).await?;
    Ok(())
}

/// Wakes the workers of other processes serving `queues` (PostgreSQL;
/// SQLite workers in other processes poll). A failure only delays them
/// until their next poll.
pub(crate) async fn notify_queues<'a>(db: &QueueDb, queues: impl IntoIterator<Item = &'a str>) {
    if let QueueDb::Postgres(pool) = db {
        for queue in queues {
            let sent = sqlx::query("SELECT pg_notify($1, $2)").bind(NOTIFY_CHANNEL).bind(queue).execute(pool).await;
            if let Err(e) = sent {
                tracing::warn!(queue, error = %e, "NOTIFY failed; workers will find the task at their next poll");
            }
        }
    }
}
