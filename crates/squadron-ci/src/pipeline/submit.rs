//! `submit` (ci_quick): hands a job to its lab, exactly once.
//!
//! First step: a submission key is recorded on the job (and in the task's
//! checkpoint). Then the lab is called with the key embedded in the job; a
//! retry of the task (after a crash between the lab's answer and the
//! commit) first asks the lab for jobs with that key and adopts them
//! instead of submitting again. Last step: the lab's job ids, the
//! multinode clones and the first fetch commit together.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use squadron_queue::{Job, NewTask, Outcome, RunAt, StepTx, Task, TaskError};
use squadron_store::sql::Sql;
use squadron_store::WriteTx;
use tracing::warn;

use super::{poll_interval, Ci, FetchJob, SUBMIT_RETRIES};
use crate::backend::BackendError;
use crate::jobs::{self, unique_per_job};

/// Submits test job `testjob_id` to its lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitJob {
    /// The job.
    pub testjob_id: i64,
}

impl SubmitJob {
    /// The task for job `id` (one waiting per job).
    pub fn task(id: i64) -> NewTask {
        unique_per_job(NewTask::of(&SubmitJob { testjob_id: id }), "submit", id)
    }
}

/// The submission in flight, kept in the task's checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct InFlight {
    /// The key sent with the job.
    key: String,
    /// Temporary failures so far.
    #[serde(default)]
    temporary_failures: u32,
}

impl Task for SubmitJob {
    const KIND: &'static str = "ci_submit";
    const QUEUE: &'static str = "ci_quick";
    type Context = Ci;

    async fn run(&self, cx: &Ci, job: &mut Job) -> Result<Outcome, TaskError> {
        let loaded = jobs::load(&cx.store, self.testjob_id).await.map_err(TaskError::failed)?;
        let Some((testjob, record)) = loaded.filter(|(j, _)| !j.submitted) else {
            return Ok(Outcome::Done);
        };
        let backend = match cx.backends.open(&record) {
            Ok(backend) => backend,
            Err(e) => return self.give_up(cx, job, &e.to_string()).await,
        };
        let checkpoint: Option<InFlight> = job.checkpoint()?;
        let (mut flight, retried) = match checkpoint {
            Some(flight) => (flight, true),
            None => {
                let flight = InFlight { key: uuid::Uuid::new_v4().to_string(), temporary_failures: 0 };
                let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
                let mut sql = Sql::new("UPDATE testjobs SET submission_key = ");
                sql.bind(flight.key.as_str()).push(" WHERE id = ").bind(self.testjob_id);
                tx.execute(&sql).await.map_err(TaskError::failed)?;
                job.commit_step(tx, &flight).await?;
                (flight, false)
            }
        };
        // After a crash the lab may have the job already: adopt it.
        let found = if retried {
            match backend.lookup(&testjob, &flight.key).await {
                Ok(found) => found,
                Err(e) => return Err(TaskError::failed(format!("cannot look the job up in the lab: {e}"))),
            }
        } else {
            None
        };
        let ids = match found {
            Some(ids) => ids,
            None => match backend.submit(&testjob, &flight.key).await {
                Ok(ids) if !ids.is_empty() => ids,
                Ok(_) => return self.give_up(cx, job, "the lab returned no job id").await,
                Err(BackendError::Temporary(message)) if flight.temporary_failures < SUBMIT_RETRIES => {
                    flight.temporary_failures += 1;
                    let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
                    record_failure(&mut tx, self.testjob_id, &message).await?;
                    job.commit_step(tx, &flight).await?;
                    warn!(testjob = self.testjob_id, error = %message, "submission failed; retrying later");
                    return Ok(Outcome::Snooze(cx.submit_retry_delay));
                }
                Err(e) => return self.give_up(cx, job, &e.to_string()).await,
            },
        };
        let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
        let mut sql = Sql::new("UPDATE testjobs SET submitted = TRUE, failure = NULL, submitted_at = ");
        sql.bind(Utc::now())
            .push(", job_id = ")
            .bind(ids[0].as_str())
            .push(" WHERE NOT submitted AND id = ")
            .bind(self.testjob_id);
        if tx.execute(&sql).await.map_err(TaskError::failed)? == 0 {
            // Cancelled meanwhile: the lab's job is left to the lab.
            return job.commit_last_step(tx).await;
        }
        let first_fetch = RunAt::After(poll_interval(record.poll_interval));
        jobs::request_fetch(&mut tx, &cx.queue, self.testjob_id, first_fetch).await.map_err(TaskError::failed)?;
        for extra in &ids[1..] {
            // A multinode job: one test job per node, as SQUAD clones them.
            let mut clone = Sql::new(
                "INSERT INTO testjobs (backend_id, definition, name, target_id, target_build_id, environment, \
                 created_at, submitted, submitted_at, job_id, parent_job_id, resubmitted_count, submission_key) \
                 SELECT backend_id, definition, name, target_id, target_build_id, environment, created_at, TRUE, \
                 submitted_at, ",
            );
            clone
                .bind(extra.as_str())
                .push(", parent_job_id, resubmitted_count, submission_key FROM testjobs WHERE id = ");
            clone.bind(self.testjob_id).push(" RETURNING id");
            let id = tx.fetch_integer(&clone).await.map_err(TaskError::failed)?;
            job.enqueue(tx.conn(), &FetchJob::task(id).run_at(first_fetch)).await?;
        }
        job.commit_last_step(tx).await
    }
}

impl SubmitJob {
    /// Records a failure that no retry fixes. The job ends `Incomplete`,
    /// unsubmitted, with its failure, and may be resubmitted; its build can
    /// finish (in SQUAD such a job stays pending, and its build unfinished,
    /// forever).
    async fn give_up(&self, cx: &Ci, job: &mut Job, message: &str) -> Result<Outcome, TaskError> {
        let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
        record_failure(&mut tx, self.testjob_id, message).await?;
        let mut resubmittable =
            Sql::new("UPDATE testjobs SET can_resubmit = TRUE, fetched = TRUE, job_status = 'Incomplete' WHERE id = ");
        resubmittable.bind(self.testjob_id);
        tx.execute(&resubmittable).await.map_err(TaskError::failed)?;
        jobs::build_changed(&mut tx, &cx.queue, self.testjob_id).await.map_err(TaskError::failed)?;
        job.commit_last_step(tx).await
    }
}

async fn record_failure(tx: &mut WriteTx, id: i64, message: &str) -> Result<(), TaskError> {
    let mut sql = Sql::new("UPDATE testjobs SET failure = ");
    sql.bind(message).push(" WHERE id = ").bind(id);
    tx.execute(&sql).await.map_err(TaskError::failed)?;
    Ok(())
}
