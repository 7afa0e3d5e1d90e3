//! The status's queue tasks: the recomputation a publish enqueues, and the
//! periodic reconciler that catches statuses left stale.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use squadron_queue::{Job, NewTask, Outcome, Queue, RunAt, StepTx, Task, TaskError};
use squadron_store::builds::BuildTask;
use squadron_store::sql::Sql;
use squadron_store::Store;

use crate::update::{update_build_status, Updated};

/// Recomputes one build's status unless it is current already (or
/// `rebaseline` asks for it anyway).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateBuildStatus {
    /// The build.
    pub build_id: i64,
    /// Recompute even if the build's runs did not change: an earlier build
    /// finished and may be its baseline now.
    #[serde(default)]
    pub rebaseline: bool,
}

impl UpdateBuildStatus {
    /// The task for `build_id`, unique per build: an update enqueued while
    /// one waits is the same work, and one enqueued while it runs makes it
    /// run once more.
    pub fn task(build_id: i64) -> NewTask {
        NewTask::of(&UpdateBuildStatus { build_id, rebaseline: false }).unique(format!("build_status:{build_id}"))
    }

    /// The update a submission enqueues to repair what a process that died
    /// before updating the status itself left: due after
    /// [`SUBMIT_STATUS_GRACE`], and unique apart from [`Self::task`], so
    /// that an update due now (a plugin finishing, say) is not held back
    /// by it.
    pub fn repair(build_id: i64) -> NewTask {
        NewTask::of(&UpdateBuildStatus { build_id, rebaseline: false })
            .unique(format!("build_status_repair:{build_id}"))
            .run_at(RunAt::After(SUBMIT_STATUS_GRACE))
    }

    /// The task that looks at `build_id`'s baseline again.
    pub fn rebaseline(build_id: i64) -> NewTask {
        NewTask::of(&UpdateBuildStatus { build_id, rebaseline: true }).unique(format!("build_baseline:{build_id}"))
    }
}

impl Task for UpdateBuildStatus {
    const KIND: &'static str = "update_build_status";
    const QUEUE: &'static str = "core_postprocess";
    type Context = StatusContext;

    async fn run(&self, cx: &StatusContext, _job: &mut Job) -> Result<Outcome, TaskError> {
        let store = &cx.store;
        let mut current = Sql::new(
            "SELECT COUNT(*) FROM builds b JOIN build_status s ON s.build_id = b.id \
             AND s.computed_version = b.status_version WHERE b.id = ",
        );
        current.bind(self.build_id);
        if !self.rebaseline && store.fetch_count(&current).await.map_err(TaskError::failed)? > 0 {
            return Ok(Outcome::Done);
        }
        match update_build_status(store, &cx.queue, self.build_id).await {
            Ok(Updated::Written(_)) => Ok(Outcome::Done),
            Ok(Updated::Stale) => Err(TaskError::failed("the build's runs kept changing; trying again")),
            Err(crate::StatusError::NoSuchBuild(_)) => Ok(Outcome::Done),
            Err(e) => Err(TaskError::failed(e)),
        }
    }
}

/// What the ingestion enqueues with every published run: the build's
/// status update, in the publishing transaction.
pub fn on_publish(queue: Queue) -> BuildTask {
    BuildTask { queue, task: Arc::new(UpdateBuildStatus::task) }
}

/// How long the status update enqueued by a submission waits: the
/// submission updates the status itself before it answers, so the task
/// only repairs what a process that died in between left (and then finds
/// the status current, at the cost of one query). Run at once, it would
/// compute the same status, comparisons and all, beside the submission.
pub const SUBMIT_STATUS_GRACE: Duration = Duration::from_secs(60);

/// [`on_publish`] for a caller that updates the build's status itself
/// right after publishing: the task is [`UpdateBuildStatus::repair`].
pub fn on_submit(queue: Queue) -> BuildTask {
    BuildTask { queue, task: Arc::new(UpdateBuildStatus::repair) }
}

/// What the status tasks need.
pub struct StatusContext {
    /// The store.
    pub store: Store,
    /// Routes the tasks they enqueue.
    pub queue: Queue,
}

/// Builds whose status one reconciler run looks at most.
const RECONCILE_BATCH: i64 = 1000;

/// Enqueues a status update for every build whose status is missing or
/// older than its runs: what a lost update (a bug, a restore, a schema
/// change) would otherwise leave wrong for ever.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ReconcileBuildStatus {}

impl Task for ReconcileBuildStatus {
    const KIND: &'static str = "reconcile_build_status";
    const QUEUE: &'static str = "core_quick";
    type Context = StatusContext;

    async fn run(&self, cx: &StatusContext, _job: &mut Job) -> Result<Outcome, TaskError> {
        let sql = Sql::new(&format!(
            "SELECT b.id FROM builds b LEFT JOIN build_status s ON s.build_id = b.id \
             WHERE s.build_id IS NULL OR s.computed_version <> b.status_version \
             ORDER BY b.datetime, b.id LIMIT {RECONCILE_BATCH}"
        ));
        let stale: Vec<(i64,)> = cx.store.fetch_all(&sql).await.map_err(TaskError::failed)?;
        if stale.is_empty() {
            return Ok(Outcome::Done);
        }
        let tasks: Vec<NewTask> = stale.iter().map(|&(id,)| UpdateBuildStatus::task(id)).collect();
        let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
        cx.queue.enqueue_many(tx.conn(), &tasks).await?;
        tx.commit().await.map_err(TaskError::failed)?;
        tracing::info!(builds = stale.len(), "enqueued status updates for builds whose status was stale");
        Ok(Outcome::Done)
    }
}
