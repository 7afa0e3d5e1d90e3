//! Task kinds for crash tests of whole worker processes (feature
//! `test-kinds`): they exist in test builds only, never in a release
//! binary.
//!
//! [`CrashTestSteps`] runs a number of steps. Each step first appends a
//! line to an execution log (outside any transaction: it records that the
//! step *ran*, committed or not), computes for a while, then appends one
//! row to [`STEP_ROWS_TABLE`] — a table deliberately without a unique key —
//! and commits it with its checkpoint under the lease check. A test can
//! then count committed rows per (task, step) against step executions.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{with_conn, Job, Outcome, Registry, StepTx, Task, TaskError};

/// The table the steps append to; tests create it with
/// [`CREATE_STEP_ROWS_TABLE`].
pub const STEP_ROWS_TABLE: &str = "crash_test_steps";

/// Creates [`STEP_ROWS_TABLE`] (on either engine). No unique key, so a
/// step committed twice would show as two rows.
pub const CREATE_STEP_ROWS_TABLE: &str = "CREATE TABLE IF NOT EXISTS crash_test_steps \
    (task_id BIGINT NOT NULL, step INTEGER NOT NULL, attempt INTEGER NOT NULL, worker TEXT NOT NULL, \
     value BIGINT NOT NULL)";

/// The environment variable naming the execution log file.
pub const EXECUTION_LOG_ENV: &str = "SQUADRON_CRASH_TEST_LOG";

/// The value a step of a task writes: what the output must hold, however
/// often the step ran.
pub fn expected_value(task_id: i64, step: i32) -> i64 {
    task_id * 1_000_003 + i64::from(step) * 7919
}

/// What the crash-test kinds need: who runs them, and where step starts
/// are logged.
pub struct CrashTestContext {
    worker: String,
    log: Option<Mutex<std::fs::File>>,
}

impl CrashTestContext {
    /// For worker `worker`, logging to the file named by
    /// [`EXECUTION_LOG_ENV`] if it is set.
    pub fn from_env(worker: impl Into<String>) -> std::io::Result<CrashTestContext> {
        let log = match std::env::var_os(EXECUTION_LOG_ENV) {
            Some(path) => Some(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?)),
            None => None,
        };
        Ok(CrashTestContext { worker: worker.into(), log })
    }

    /// Appends `start TASK STEP ATTEMPT PID WORKER` with one write, so
    /// lines from several processes never interleave.
    fn log_start(&self, job: &Job, step: i32) {
        if let Some(log) = &self.log {
            let line =
                format!("start {} {} {} {} {}\n", job.id(), step, job.attempt(), std::process::id(), self.worker);
            let _ = log.lock().expect("log lock").write_all(line.as_bytes());
        }
    }
}

/// A checkpointed task of `steps` steps of `step_ms` milliseconds each.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrashTestSteps {
    /// How many steps.
    pub steps: i32,
    /// How long each step computes.
    pub step_ms: u64,
}

impl Task for CrashTestSteps {
    const KIND: &'static str = "crash_test_steps";
    const QUEUE: &'static str = "core_postprocess";
    type Context = CrashTestContext;

    async fn run(&self, cx: &CrashTestContext, job: &mut Job) -> Result<Outcome, TaskError> {
        let mut step: i32 = job.checkpoint()?.unwrap_or(0);
        loop {
            job.check_stop()?;
            cx.log_start(job, step);
            // The computation holds no transaction and no connection.
            tokio::time::sleep(Duration::from_millis(self.step_ms)).await;
            let mut tx = job.begin().await?;
            let sql = format!(
                "INSERT INTO {STEP_ROWS_TABLE} (task_id, step, attempt, worker, value) VALUES ($1, $2, $3, $4, $5)"
            );
            with_conn!(tx.conn(), c => sqlx::query(&sql)
                .bind(job.id())
                .bind(step)
                .bind(job.attempt())
                .bind(&cx.worker)
                .bind(expected_value(job.id(), step))
                .execute(&mut *c)
                .await
                .map(|_| ()))?;
            step += 1;
            if step >= self.steps {
                return job.commit_last_step(tx).await;
            }
            job.commit_step(tx, &step).await?;
        }
    }
}

/// Registers the crash-test kinds for worker `worker`.
pub fn register(registry: &mut Registry, worker: &str) -> std::io::Result<()> {
    registry.register::<CrashTestSteps>(Arc::new(CrashTestContext::from_env(worker)?));
    Ok(())
}
