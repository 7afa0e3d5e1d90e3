//! `finish` (ci_fetch): the last step of a job whose results were
//! post-processed: the job takes its lab status (kept on its test run while
//! it was `Fetching`) and its build's status is brought up to date.

use serde::{Deserialize, Serialize};
use squadron_queue::{Job, NewTask, Outcome, Task, TaskError};
use squadron_store::sql::Sql;

use super::Ci;
use crate::jobs::{self, unique_per_job, FETCHING};

/// Finishes test job `testjob_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinishJob {
    /// The job.
    pub testjob_id: i64,
}

impl FinishJob {
    /// The task for job `id` (one waiting per job).
    pub fn task(id: i64) -> NewTask {
        unique_per_job(NewTask::of(&FinishJob { testjob_id: id }), "finish", id)
    }
}

impl Task for FinishJob {
    const KIND: &'static str = "ci_finish";
    const QUEUE: &'static str = "ci_fetch";
    type Context = Ci;

    async fn run(&self, cx: &Ci, job: &mut Job) -> Result<Outcome, TaskError> {
        let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
        let mut sql = Sql::new(
            "UPDATE testjobs SET job_status = COALESCE((SELECT r.job_status FROM testruns r \
             WHERE r.id = testjobs.testrun_id), 'Complete') WHERE job_status = ",
        );
        sql.bind(FETCHING).push(" AND id = ").bind(self.testjob_id);
        if tx.execute(&sql).await.map_err(TaskError::failed)? > 0 {
            jobs::build_changed(&mut tx, &cx.queue, self.testjob_id).await.map_err(TaskError::failed)?;
        }
        job.commit_last_step(tx).await
    }
}
