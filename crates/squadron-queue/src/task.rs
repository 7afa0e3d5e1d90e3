//! Typed tasks: what a kind of task is, how a handler ends, and a task
//! ready to be enqueued.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::job::Job;

/// How many times a task is tried before it ends `failed`, unless its
/// kind says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 20;

/// A kind of task. The value is the task's arguments, stored as JSON; the
/// handler is [`Task::run`]. A long handler is written as steps (see
/// [`Job::commit_step`]) and must stay correct when a step is replayed
/// after a crash.
pub trait Task: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The kind's name, stored with each task.
    const KIND: &'static str;
    /// The queue the kind runs on unless the configuration routes it
    /// elsewhere.
    const QUEUE: &'static str;
    /// How many attempts before the task ends `failed`.
    const MAX_ATTEMPTS: i32 = DEFAULT_MAX_ATTEMPTS;
    /// Higher runs first among the tasks of a queue that are due.
    const PRIORITY: i16 = 0;
    /// What the handler needs from the process (the store, clients, …).
    type Context: Send + Sync + 'static;

    /// Runs the task. CPU-heavy work belongs in `spawn_blocking` (or a
    /// pool of its own), never on the async threads the heartbeats use.
    fn run(&self, cx: &Self::Context, job: &mut Job) -> impl Future<Output = Result<Outcome, TaskError>> + Send;
}

/// How a handler that did not fail ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The task is complete (unless an enqueue of its unique key asked for
    /// one more run while it ran).
    Done,
    /// Run the same task again after this delay: no attempt is charged and
    /// any request for one more run is absorbed by it.
    Snooze(Duration),
}

/// Why a handler did not finish.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A failure worth retrying (after a backoff) while attempts remain.
    #[error("{0}")]
    Failed(String),
    /// A failure that no retry can fix (bad arguments): the task ends
    /// `failed` at once.
    #[error("{0}")]
    Permanent(String),
    /// The worker is shutting down: the task goes back to the queue at the
    /// last checkpoint, without charging an attempt.
    #[error("interrupted by shutdown")]
    Interrupted,
    /// The lease was lost (another worker took the task over, or it was
    /// cancelled): this worker's writes were rolled back and it must stop.
    #[error("lease lost: the task belongs to another run now")]
    Fenced,
}

impl TaskError {
    /// A failure worth retrying.
    pub fn failed(error: impl std::fmt::Display) -> TaskError {
        TaskError::Failed(error.to_string())
    }

    /// A failure no retry can fix.
    pub fn permanent(error: impl std::fmt::Display) -> TaskError {
        TaskError::Permanent(error.to_string())
    }
}

impl From<sqlx::Error> for TaskError {
    fn from(error: sqlx::Error) -> TaskError {
        TaskError::Failed(format!("database: {error}"))
    }
}

impl From<crate::QueueError> for TaskError {
    fn from(error: crate::QueueError) -> TaskError {
        TaskError::Failed(error.to_string())
    }
}

/// When a task becomes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunAt {
    /// At once.
    #[default]
    Now,
    /// This long after the enqueue (by the database's clock).
    After(Duration),
    /// At this time.
    At(DateTime<Utc>),
}

/// A task ready to be enqueued: a kind, its arguments and how to run it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// The kind's name.
    pub kind: String,
    /// The kind's default queue; routing may override it.
    pub default_queue: String,
    /// The arguments, as JSON text.
    pub args: String,
    /// Higher runs first.
    pub priority: i16,
    /// When the task becomes due.
    pub run_at: RunAt,
    /// At most one task waiting or running per unique key.
    pub unique_key: Option<String>,
    /// Attempts before the task ends `failed`.
    pub max_attempts: i32,
    /// With a unique key: a task with that key already waiting until later
    /// becomes due at this task's time instead (an event that makes work
    /// urgent, such as a lab reporting a job over while its fetch is
    /// snoozed until the next poll).
    pub advance: bool,
}

impl NewTask {
    /// A task of kind `T` with `task` as its arguments and the kind's
    /// defaults.
    pub fn of<T: Task>(task: &T) -> NewTask {
        NewTask {
            kind: T::KIND.to_string(),
            default_queue: T::QUEUE.to_string(),
            args: serde_json::to_string(task).expect("task arguments serialize to JSON"),
            priority: T::PRIORITY,
            run_at: RunAt::Now,
            unique_key: None,
            max_attempts: T::MAX_ATTEMPTS,
            advance: false,
        }
    }

    /// Sets the unique key.
    pub fn unique(mut self, key: impl Into<String>) -> NewTask {
        self.unique_key = Some(key.into());
        self
    }

    /// Makes a waiting task with the same unique key due no later than
    /// this one (see [`NewTask::advance`]).
    pub fn advancing(mut self) -> NewTask {
        self.advance = true;
        self
    }

    /// Sets when the task becomes due.
    pub fn run_at(mut self, run_at: RunAt) -> NewTask {
        self.run_at = run_at;
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i16) -> NewTask {
        self.priority = priority;
        self
    }

    /// `(delay, absolute time)` in microseconds, as the enqueue statements
    /// take them.
    pub(crate) fn due(&self) -> (i64, Option<i64>) {
        match self.run_at {
            RunAt::Now => (0, None),
            RunAt::After(delay) => (micros(delay), None),
            RunAt::At(at) => (0, Some(at.timestamp_micros())),
        }
    }
}

/// A duration in whole microseconds (saturating).
pub(crate) fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}
