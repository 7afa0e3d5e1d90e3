//! What `squadron bench queue` measures: no-op task kinds (with and without
//! a fenced transaction of their own, and one that records its
//! enqueue-to-start latency) and the raw SQL loops they are compared with,
//! which do the same state changes with nothing else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use serde::{Deserialize, Serialize};

use crate::db::{QueueDb, NOW};
use crate::{Job, Outcome, QueueError, Task, TaskError};

/// The queue the benchmark kinds run on.
pub const BENCH_QUEUE: &str = "bench";

/// What the benchmark kinds record.
#[derive(Debug, Default)]
pub struct BenchProbe {
    /// Handlers started.
    pub started: AtomicU64,
    /// Enqueue-to-start latencies of [`Timed`] tasks, µs.
    pub latencies_us: Mutex<Vec<i64>>,
}

/// Does nothing: what the queue itself costs per task.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct NoOp {}

impl Task for NoOp {
    const KIND: &'static str = "bench_noop";
    const QUEUE: &'static str = BENCH_QUEUE;
    type Context = BenchProbe;

    async fn run(&self, probe: &BenchProbe, _job: &mut Job) -> Result<Outcome, TaskError> {
        probe.started.fetch_add(1, Ordering::Relaxed);
        Ok(Outcome::Done)
    }
}

/// Completes itself in a fenced transaction of its own: what a real task,
/// whose writes commit with its completion, pays.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Fenced {}

impl Task for Fenced {
    const KIND: &'static str = "bench_fenced";
    const QUEUE: &'static str = BENCH_QUEUE;
    type Context = BenchProbe;

    async fn run(&self, probe: &BenchProbe, job: &mut Job) -> Result<Outcome, TaskError> {
        probe.started.fetch_add(1, Ordering::Relaxed);
        let tx = job.begin().await?;
        job.commit_last_step(tx).await
    }
}

/// Records how long after its enqueue it started.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Timed {}

impl Task for Timed {
    const KIND: &'static str = "bench_timed";
    const QUEUE: &'static str = BENCH_QUEUE;
    type Context = BenchProbe;

    async fn run(&self, probe: &BenchProbe, job: &mut Job) -> Result<Outcome, TaskError> {
        let now = chrono::Utc::now().timestamp_micros();
        probe.latencies_us.lock().expect("latencies").push(now - job.enqueued_at_micros());
        probe.started.fetch_add(1, Ordering::Relaxed);
        Ok(Outcome::Done)
    }
}

static RAW_CLAIM_POSTGRES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE tasks SET state = 'running', attempt = attempt + 1, lease_token = lease_token + 1, \
                claimed_at = {NOW}, lease_expires_at = {NOW} + 30000000 \
         WHERE id IN (SELECT id FROM tasks WHERE queue = $1 AND state = 'available' \
                      ORDER BY priority DESC, run_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) \
         RETURNING id, lease_token"
    )
});

static RAW_CLAIM_SQLITE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE tasks SET state = 'running', attempt = attempt + 1, lease_token = lease_token + 1, \
                claimed_at = {NOW}, lease_expires_at = {NOW} + 30000000 \
         WHERE id IN (SELECT id FROM tasks WHERE queue = $1 AND state = 'available' \
                      ORDER BY priority DESC, run_at, id LIMIT $2) \
         RETURNING id, lease_token"
    )
});

static RAW_COMPLETE_ONE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE tasks SET state = 'completed', finished_at = {NOW}, lease_expires_at = NULL \
         WHERE id = $1 AND lease_token = $2 AND state = 'running'"
    )
});

static RAW_COMPLETE_MANY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE tasks SET state = 'completed', finished_at = {NOW}, lease_expires_at = NULL \
         WHERE id = ANY($1) AND state = 'running'"
    )
});

static RAW_COMPLETE_MANY_SQLITE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE tasks SET state = 'completed', finished_at = {NOW}, lease_expires_at = NULL \
         WHERE state = 'running' AND (id, lease_token) IN (SELECT value ->> 0, value ->> 1 FROM json_each($1))"
    )
});

/// Claims up to `limit` available tasks of the bench queue, bare.
async fn raw_claim(db: &QueueDb, limit: i64) -> Result<Vec<(i64, i64)>, QueueError> {
    Ok(match db {
        QueueDb::Sqlite { writer, .. } => {
            let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
            let rows = sqlx::query_as(&RAW_CLAIM_SQLITE).bind(BENCH_QUEUE).bind(limit).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            rows
        }
        QueueDb::Postgres(pool) => {
            sqlx::query_as(&RAW_CLAIM_POSTGRES).bind(BENCH_QUEUE).bind(limit).fetch_all(pool).await?
        }
    })
}

/// Completes one claimed task in a transaction of its own, bare.
async fn raw_complete_one(db: &QueueDb, id: i64, token: i64) -> Result<(), QueueError> {
    match db {
        QueueDb::Sqlite { writer, .. } => {
            let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query(&RAW_COMPLETE_ONE).bind(id).bind(token).execute(&mut *tx).await?;
            tx.commit().await?;
        }
        QueueDb::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            sqlx::query(&RAW_COMPLETE_ONE).bind(id).bind(token).execute(&mut *tx).await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

/// Completes claimed tasks in one statement, bare.
async fn raw_complete_many(db: &QueueDb, claimed: &[(i64, i64)]) -> Result<(), QueueError> {
    match db {
        QueueDb::Sqlite { writer, .. } => {
            let pairs = serde_json::to_string(claimed).expect("pairs of integers serialise");
            sqlx::query(&RAW_COMPLETE_MANY_SQLITE).bind(pairs).execute(writer).await?;
        }
        QueueDb::Postgres(pool) => {
            let ids: Vec<i64> = claimed.iter().map(|c| c.0).collect();
            sqlx::query(&RAW_COMPLETE_MANY).bind(ids).execute(pool).await?;
        }
    }
    Ok(())
}

/// How a raw loop completes what it claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawCompletion {
    /// One statement for the whole claimed batch.
    Batched,
    /// One transaction per task, the batch's transactions concurrent.
    OneCommitPerTask,
}

/// Runs `actors` bare loops, each claiming up to `batch` tasks at a time
/// and completing them as `completion` says, until the bench queue has no
/// available task; returns how long it took.
pub async fn raw_loop(
    db: &QueueDb,
    actors: usize,
    batch: usize,
    completion: RawCompletion,
) -> Result<Duration, QueueError> {
    let started = Instant::now();
    let loops = (0..actors).map(|_| {
        let db = db.clone();
        tokio::spawn(async move {
            loop {
                let claimed = raw_claim(&db, batch as i64).await?;
                if claimed.is_empty() {
                    return Ok::<(), QueueError>(());
                }
                match completion {
                    RawCompletion::Batched => raw_complete_many(&db, &claimed).await?,
                    RawCompletion::OneCommitPerTask => {
                        try_join_all(claimed.iter().map(|&(id, token)| raw_complete_one(&db, id, token))).await?;
                    }
                }
            }
        })
    });
    for result in futures_util::future::join_all(loops).await {
        result.map_err(|e| QueueError::Unavailable(e.to_string()))??;
    }
    Ok(started.elapsed())
}
