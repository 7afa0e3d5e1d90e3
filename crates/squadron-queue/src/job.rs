//! What a handler sees of the task it runs: its checkpoint, whether it
//! should stop, and the fenced commit of each step.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::db::{Conn, QueueDb, QueueTx, StepTx};
use crate::enqueue::{enqueue_one, Enqueued, Queue};
use crate::lease::{self, Claimed};
use crate::metrics::Metrics;
use crate::task::{NewTask, Outcome, TaskError};
use crate::worker::Timing;

/// One run of a claimed task, handed to its handler.
///
/// A long handler is a loop of steps: compute without holding any
/// transaction, then open one ([`Job::begin`], or the store's), write the
/// step's output and call [`Job::commit_step`] with the cursor to resume
/// from. The commit checks, in the same transaction, that the lease is
/// still this run's; a run that lost it gets [`TaskError::Fenced`] and its
/// writes are rolled back. A run asked to stop (shutdown) gets
/// [`TaskError::Interrupted`] right after a commit, and the task goes back
/// to the queue at that checkpoint.
pub struct Job {
    claimed: Claimed,
    db: QueueDb,
    queue: Queue,
    timing: Timing,
    metrics: Metrics,
    shutdown: CancellationToken,
    lost: CancellationToken,
    completed: bool,
}

/// Whether a run should stop, readable from any thread
/// ([`Job::stop_signal`]).
#[derive(Clone, Debug)]
pub struct StopSignal {
    shutdown: CancellationToken,
    lost: CancellationToken,
}

impl StopSignal {
    /// Whether the worker is shutting down or the run lost its lease.
    pub fn is_set(&self) -> bool {
        self.shutdown.is_cancelled() || self.lost.is_cancelled()
    }
}

impl Job {
    pub(crate) fn new(
        claimed: Claimed,
        db: QueueDb,
        queue: Queue,
        timing: Timing,
        metrics: Metrics,
        shutdown: CancellationToken,
        lost: CancellationToken,
    ) -> Job {
        Job { claimed, db, queue, timing, metrics, shutdown, lost, completed: false }
    }

    /// The task's id.
    pub fn id(&self) -> i64 {
        self.claimed.id
    }

    /// This run's attempt number (1 for the first).
    pub fn attempt(&self) -> i32 {
        self.claimed.attempt
    }

    /// The claim's fencing token (it grows with every claim of the task).
    pub fn lease_token(&self) -> i64 {
        self.claimed.lease_token
    }

    /// When the task was enqueued, in microseconds since the Unix epoch by
    /// the database's clock.
    pub fn enqueued_at_micros(&self) -> i64 {
        self.claimed.created_at
    }

    /// The last committed checkpoint, if any step committed one.
    pub fn checkpoint<C: DeserializeOwned>(&self) -> Result<Option<C>, TaskError> {
        self.claimed
            .checkpoint
            .as_deref()
            .map(|text| serde_json::from_str(text))
            .transpose()
            .map_err(|e| TaskError::permanent(format!("unreadable checkpoint: {e}")))
    }

    /// Whether the run should stop at its next step boundary.
    pub fn should_stop(&self) -> bool {
        self.shutdown.is_cancelled() || self.lost.is_cancelled()
    }

    /// A handle that tells, from any thread, whether the run should stop:
    /// for work that checks it inside a long step and gives the step up.
    pub fn stop_signal(&self) -> StopSignal {
        StopSignal { shutdown: self.shutdown.clone(), lost: self.lost.clone() }
    }

    /// Resolves once the run should stop (to cut a long wait short).
    pub async fn stop_requested(&self) {
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            _ = self.lost.cancelled() => {}
        }
    }

    /// `Err` when the run should stop: [`TaskError::Fenced`] when the lease
    /// was lost, [`TaskError::Interrupted`] on shutdown.
    pub fn check_stop(&self) -> Result<(), TaskError> {
        if self.lost.is_cancelled() {
            Err(TaskError::Fenced)
        } else if self.shutdown.is_cancelled() {
            Err(TaskError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Opens a write transaction on the queue's database for a step.
    pub async fn begin(&self) -> Result<QueueTx, TaskError> {
        Ok(self.db.begin().await?)
    }

    /// Commits a step: records `checkpoint` and checks the lease in `tx`,
    /// then commits `tx` with the step's writes. Afterwards, returns
    /// [`TaskError::Interrupted`] if the worker is shutting down, so that
    /// `?` hands the task back at this checkpoint.
    pub async fn commit_step<T: StepTx>(&mut self, mut tx: T, checkpoint: &impl Serialize) -> Result<(), TaskError> {
        let text = serde_json::to_string(checkpoint).map_err(TaskError::permanent)?;
        let held =
            lease::checkpoint(tx.conn(), self.claimed.id, self.claimed.lease_token, &text, self.timing.lease).await?;
        self.fence(held)?;
        tx.commit().await?;
        self.claimed.checkpoint = Some(text);
        self.check_stop()
    }

    /// Commits the last step: completes the task in `tx`, with the step's
    /// writes, after checking the lease.
    pub async fn commit_last_step<T: StepTx>(&mut self, mut tx: T) -> Result<Outcome, TaskError> {
        let finished = lease::complete_in(tx.conn(), self.claimed.id, self.claimed.lease_token).await?;
        self.fence(finished.is_some())?;
        tx.commit().await?;
        self.completed = true;
        Ok(Outcome::Done)
    }

    /// Enqueues a task from inside this one, on `conn` (usually a step's
    /// transaction). Unlike an enqueue from outside, a unique key that
    /// names this very task does not make it run again: a task that wants
    /// to run again returns [`Outcome::Snooze`].
    pub async fn enqueue(&self, conn: Conn<'_>, task: &NewTask) -> Result<Enqueued, TaskError> {
        Ok(enqueue_one(conn, self.queue.routes(), task, Some(self.claimed.id)).await?)
    }

    /// Whether [`Job::commit_last_step`] already completed the task.
    pub(crate) fn completed(&self) -> bool {
        self.completed
    }

    fn fence(&self, held: bool) -> Result<(), TaskError> {
        if held {
            Ok(())
        } else {
            self.metrics.fenced();
            tracing::warn!(task = self.claimed.id, kind = %self.claimed.kind, "fenced: the lease was lost, the step's writes were rolled back");
            Err(TaskError::Fenced)
        }
    }
}
