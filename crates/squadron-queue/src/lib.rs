//! squadron's durable task queue, stored in the same database as the data
//! (SQLite or PostgreSQL), and the worker runtime that runs it.
//!
//! It knows nothing about test results: it runs typed [`Task`]s. A worker
//! may be stopped or killed at any instant without losing, duplicating or
//! wedging a task:
//!
//! * a task is enqueued in the caller's transaction ([`Queue::enqueue`]),
//!   so it exists exactly when the data it is about does;
//! * a claim leases a task to one worker; the worker renews all its leases
//!   in one statement every third of the lease, and any worker makes a task
//!   whose lease expired runnable again (the rescue);
//! * every write a handler makes under a lease is fenced: it commits only
//!   while the lease is still that claim's ([`Job::commit_step`]);
//! * long work is a sequence of steps, each committing its output and a
//!   checkpoint in one short transaction; a task resumes from its last
//!   checkpoint;
//! * on shutdown a worker stops claiming, lets handlers reach their next
//!   step boundary and hands their tasks back without charging an attempt.
//!
//! # States
//!
//! | state | meaning | next |
//! |---|---|---|
//! | `available` | due now, waiting for a worker | `running`, `cancelled` |
//! | `scheduled` | waiting for its `run_at` (enqueued for later, or snoozed) | `running` once due, `cancelled` |
//! | `retryable` | failed, waiting for its backoff to pass | `running` once due, `cancelled` |
//! | `running` | leased to one worker (`lease_owner`, `lease_token`, `lease_expires_at`) | `completed`; `retryable` or `failed` on error; `scheduled` on snooze; `available` when handed back on shutdown, rescued after its lease expired, or asked to run once more; `cancelled` |
//! | `completed` | done; pruned after the retention | `available` by manual retry |
//! | `failed` | out of attempts, or failed for good; keeps `last_error` | `available` by manual retry |
//! | `cancelled` | cancelled by hand | `available` by manual retry |
//!
//! Counters kept per task: `attempt` (charged at claim; refunded on
//! snooze and on release, except that every [`INTERRUPT_BUDGET`]th release
//! without a new checkpoint is charged), `rescues`, `releases`.
//!
//! # Unique keys
//!
//! Enqueueing a task whose unique key belongs to a task that is waiting
//! (available, scheduled, retryable) does nothing; if that task is running,
//! an enqueue from outside it marks it to run once more, fresh, after it
//! finishes (so an event that arrives mid-run is not lost). Unique keys
//! de-duplicate pending work; they do not remember the past.

pub mod admin;
mod backoff;
pub mod bench;
#[cfg(feature = "test-kinds")]
pub mod crash_test;
mod db;
mod enqueue;
mod job;
mod lease;
pub mod metrics;
mod periodic;
mod registry;
pub mod routing;
mod task;
#[cfg(feature = "testing")]
pub mod testing;
mod worker;

pub use backoff::Backoff;
pub use db::{install_sqlite_wake, Conn, QueueDb, QueueTx, StepTx, Wake, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
pub use enqueue::{Enqueued, Queue};
pub use job::{Job, StopSignal};
pub use lease::{Released, INTERRUPT_BUDGET};
pub use metrics::Metrics;
pub use periodic::{Fired, Periodic, Scheduler};
pub use registry::Registry;
pub use routing::Routes;
pub use task::{NewTask, Outcome, RunAt, Task, TaskError, DEFAULT_MAX_ATTEMPTS};
pub use worker::{default_owner, Shutdown, Timing, Worker, WorkerConfig, WorkerReport};

/// Errors of the queue's own operations.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// No task has this id.
    #[error("no task {0}")]
    NoSuchTask(i64),
    /// The task's state does not allow the action.
    #[error("task {id} is {state}: cannot {action} it")]
    WrongState {
        /// The task.
        id: i64,
        /// Its state.
        state: String,
        /// What was refused.
        action: &'static str,
    },
    /// Retrying the task would make two pending tasks share a unique key.
    #[error("task {0} cannot run again: another task with its unique key is waiting or running")]
    UniqueKeyTaken(i64),
    /// A periodic schedule's cron expression does not parse.
    #[error("schedule {name}: {reason}")]
    BadSchedule {
        /// The schedule.
        name: String,
        /// What is wrong with its expression.
        reason: String,
    },
    /// The database could not be reached for a background duty.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Registers the crash-test task kinds in builds with feature
/// `test-kinds` (test builds only) and returns whether it did; does
/// nothing otherwise. Lets a binary's tests run them without the release
/// binary knowing them.
pub fn register_test_kinds(registry: &mut Registry, worker: &str) -> std::io::Result<bool> {
    #[cfg(feature = "test-kinds")]
    {
        crash_test::register(registry, worker)?;
        Ok(true)
    }
    #[cfg(not(feature = "test-kinds"))]
    {
        let _ = (registry, worker);
        Ok(false)
    }
}
