//! The retention queue tasks.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use squadron_queue::{Job, NewTask, Outcome, StepTx, Task, TaskError};
use tracing::info;

use super::blobs::{self, SweepReport, SHARDS};
use super::build::{self, Deletion, Steps};
use super::DataRetention;

/// Build deletions enqueued per transaction.
const ENQUEUE_CHUNK: usize = 1000;

/// SQUAD's `cleanup_old_builds` (daily): enqueues a [`CleanupBuild`] for
/// every expired build.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CleanupOldBuilds {}

impl Task for CleanupOldBuilds {
    const KIND: &'static str = "cleanup_old_builds";
    const QUEUE: &'static str = "core_quick";
    type Context = DataRetention;

    async fn run(&self, cx: &DataRetention, _job: &mut Job) -> Result<Outcome, TaskError> {
        let expired = cx.store.expired_builds(Utc::now()).await.map_err(TaskError::failed)?;
        let tasks: Vec<NewTask> = expired.iter().map(|b| CleanupBuild::task(b.id)).collect();
        for chunk in tasks.chunks(ENQUEUE_CHUNK) {
            let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
            cx.queue.enqueue_many(tx.conn(), chunk).await?;
            tx.commit().await.map_err(TaskError::failed)?;
        }
        if !tasks.is_empty() {
            info!(builds = tasks.len(), "enqueued the deletion of builds older than their project's data retention");
        }
        Ok(Outcome::Done)
    }
}

/// SQUAD's `cleanup_build`: deletes one build in short transactions and
/// leaves its placeholder (see [`build`]). The build is checked to be
/// still expired (not kept meanwhile) before anything is deleted.
#[derive(Debug, Serialize, Deserialize)]
pub struct CleanupBuild {
    /// The build.
    pub build_id: i64,
}

impl CleanupBuild {
    /// The task deleting `build_id`, once however often it is asked for.
    pub fn task(build_id: i64) -> NewTask {
        NewTask::of(&CleanupBuild { build_id }).unique(format!("cleanup_build:{build_id}"))
    }
}

impl Task for CleanupBuild {
    const KIND: &'static str = "cleanup_build";
    const QUEUE: &'static str = "core_quick";
    type Context = DataRetention;

    async fn run(&self, cx: &DataRetention, job: &mut Job) -> Result<Outcome, TaskError> {
        let progress = match job.checkpoint::<Deletion>()? {
            Some(progress) => progress,
            None => {
                let expired = cx.store.expired_build(self.build_id, Utc::now()).await.map_err(TaskError::failed)?;
                if expired.is_none() {
                    return Ok(Outcome::Done);
                }
                Deletion::default()
            }
        };
        let done =
            build::delete(&cx.store, self.build_id, cx.options.batch_rows, progress, &mut Steps::Task(job)).await?;
        info!(
            build = self.build_id,
            tests = done.tests,
            metrics = done.metrics,
            runs = done.runs,
            "deleted an expired build"
        );
        Ok(Outcome::Done)
    }
}

/// The blob sweep (see [`blobs`]): one pass over the blob store,
/// checkpointed after each shard.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SweepBlobs {}

impl Task for SweepBlobs {
    const KIND: &'static str = "sweep_blobs";
    const QUEUE: &'static str = "core_reporting";
    type Context = DataRetention;

    async fn run(&self, cx: &DataRetention, job: &mut Job) -> Result<Outcome, TaskError> {
        let cutoff = blobs::cutoff(cx);
        let mut report = job.checkpoint::<SweepReport>()?.unwrap_or_default();
        if report.next_shard == 0 {
            blobs::begin_pass(cx, cutoff, &mut report).await?;
        }
        while report.next_shard < SHARDS {
            blobs::sweep_shard(cx, cutoff, false, &mut report).await?;
            let tx = job.begin().await?;
            job.commit_step(tx, &report).await?;
        }
        info!(
            examined = report.examined,
            removed = report.removed,
            bytes = report.removed_bytes,
            partials = report.partials,
            "swept the blob store"
        );
        Ok(Outcome::Done)
    }
}
