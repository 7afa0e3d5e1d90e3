//! `poll` (ci_poll, periodic): the safety net that asks for a fetch of
//! every submitted job not fetched yet whose last fetch attempt is older
//! than its backend's poll interval. Fetches are unique per job, so a job
//! whose fetch is already waiting (snoozed until its next poll) is left
//! alone.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use squadron_queue::{Job, NewTask, Outcome, StepTx, Task, TaskError};
use squadron_store::sql::Sql;

use super::{Ci, FetchJob};

/// Enqueues the fetches that are due.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PollBackends {}

/// Jobs looked at per transaction.
const POLL_BATCH: i64 = 1000;

impl Task for PollBackends {
    const KIND: &'static str = "ci_poll";
    const QUEUE: &'static str = "ci_poll";
    type Context = Ci;

    async fn run(&self, cx: &Ci, job: &mut Job) -> Result<Outcome, TaskError> {
        let mut after: i64 = job.checkpoint()?.unwrap_or(0);
        loop {
            let mut sql = Sql::new(
                "SELECT j.id, j.last_fetch_attempt, b.poll_interval FROM testjobs j \
                 JOIN backends b ON b.id = j.backend_id WHERE b.poll_enabled AND j.submitted AND NOT j.fetched \
                 AND j.job_id IS NOT NULL AND j.fetch_attempts < b.max_fetch_attempts AND j.id > ",
            );
            sql.bind(after).push(" ORDER BY j.id LIMIT ").bind(POLL_BATCH);
            let page: Vec<(i64, Option<DateTime<Utc>>, i64)> =
                cx.store.fetch_all(&sql).await.map_err(TaskError::failed)?;
            let now = Utc::now();
            let due: Vec<NewTask> = page
                .iter()
                .filter(|(_, last, interval)| last.is_none_or(|l| now - l >= chrono::Duration::seconds(*interval)))
                .map(|(id, _, _)| FetchJob::task(*id))
                .collect();
            let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
            cx.queue.enqueue_many(tx.conn(), &due).await?;
            match page.last() {
                Some(&(id, _, _)) if page.len() as i64 == POLL_BATCH => {
                    after = id;
                    job.commit_step(tx, &after).await?;
                }
                _ => return job.commit_last_step(tx).await,
            }
        }
    }
}
