//! `cancel` (ci_quick): asks the lab to cancel a job; its status follows
//! at the fetch enqueued right after.

use serde::{Deserialize, Serialize};
use squadron_queue::{Job, NewTask, Outcome, RunAt, Task, TaskError};

use super::Ci;
use crate::backend::BackendError;
use crate::jobs::{self, unique_per_job};

/// Cancels test job `testjob_id` in its lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelJob {
    /// The job.
    pub testjob_id: i64,
}

impl CancelJob {
    /// The task for job `id` (one waiting per job).
    pub fn task(id: i64) -> NewTask {
        unique_per_job(NewTask::of(&CancelJob { testjob_id: id }), "cancel", id)
    }
}

impl Task for CancelJob {
    const KIND: &'static str = "ci_cancel";
    const QUEUE: &'static str = "ci_quick";
    const MAX_ATTEMPTS: i32 = 5;
    type Context = Ci;

    async fn run(&self, cx: &Ci, job: &mut Job) -> Result<Outcome, TaskError> {
        let Some((testjob, record)) = jobs::load(&cx.store, self.testjob_id).await.map_err(TaskError::failed)? else {
            return Ok(Outcome::Done);
        };
        if testjob.fetched {
            return Ok(Outcome::Done);
        }
        let backend = cx.backends.open(&record).map_err(TaskError::permanent)?;
        match backend.cancel(&testjob).await {
            Ok(_) => {}
            Err(BackendError::Temporary(e)) => return Err(TaskError::failed(e)),
            Err(e) => return Err(TaskError::permanent(e)),
        }
        let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
        jobs::request_fetch(&mut tx, &cx.queue, self.testjob_id, RunAt::Now).await.map_err(TaskError::failed)?;
        job.commit_last_step(tx).await
    }
}
