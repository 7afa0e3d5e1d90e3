//! Test jobs as stored (SQUAD's `TestJob`), and the changes to them that
//! start pipeline work: creating a job, resubmitting, cancelling and asking
//! for a fetch. Each change and the task that acts on it commit together.

use chrono::{DateTime, Utc};
use squadron_queue::{NewTask, Queue, RunAt, StepTx};
use squadron_store::sql::Sql;
use squadron_store::{Store, WriteTx};

use crate::backend::BackendRecord;
use crate::pipeline::{CancelJob, FetchJob, SubmitJob};
use crate::CiError;

/// A test job, with its project's settings.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TestJob {
    /// Row id.
    pub id: i64,
    /// Its backend.
    pub backend_id: i64,
    /// The job definition as given.
    pub definition: Option<String>,
    /// The job's name (from its definition or the lab).
    pub name: Option<String>,
    /// The project.
    pub target_id: i64,
    /// The build.
    pub target_build_id: Option<i64>,
    /// The environment's slug.
    pub environment: String,
    /// When the job was created.
    pub created_at: DateTime<Utc>,
    /// When it was handed to the lab.
    pub submitted_at: Option<DateTime<Utc>>,
    /// When its results were fetched.
    pub fetched_at: Option<DateTime<Utc>>,
    /// When it started in the lab.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended in the lab.
    pub ended_at: Option<DateTime<Utc>>,
    /// The last time the lab was asked for results.
    pub last_fetch_attempt: Option<DateTime<Utc>>,
    /// Whether the lab has it.
    pub submitted: bool,
    /// Whether its results were fetched (or fetching was given up).
    pub fetched: bool,
    /// Failed fetches so far.
    pub fetch_attempts: i64,
    /// Why the job failed, if it did.
    pub failure: Option<String>,
    /// Whether `resubmit` may resubmit it.
    pub can_resubmit: bool,
    /// How many times its ancestors were resubmitted.
    pub resubmitted_count: i64,
    /// The job this one resubmits.
    pub parent_job_id: Option<i64>,
    /// The lab's id of the job.
    pub job_id: Option<String>,
    /// The lab's status, or `Fetching` while its results are processed.
    pub job_status: Option<String>,
    /// The test run made of its results.
    pub testrun_id: Option<i64>,
    /// The key of the submission in flight (see [`crate::backend::Backend::lookup`]).
    pub submission_key: Option<String>,
    /// A results payload pushed by the lab, consumed by the next fetch.
    pub results_input: Option<String>,
    /// The project's settings text (YAML).
    pub project_settings: String,
}

/// The internal status of a job whose results are being post-processed.
pub const FETCHING: &str = "Fetching";

const JOB_COLUMNS: &str = "j.id, j.backend_id, j.definition, j.name, j.target_id, j.target_build_id, j.environment, \
    j.created_at, j.submitted_at, j.fetched_at, j.started_at, j.ended_at, j.last_fetch_attempt, j.submitted, \
    j.fetched, j.fetch_attempts, j.failure, j.can_resubmit, j.resubmitted_count, j.parent_job_id, j.job_id, \
    j.job_status, j.testrun_id, j.submission_key, j.results_input, p.project_settings";

impl TestJob {
    /// The project's settings, parsed (empty when they do not parse).
    pub fn settings(&self) -> serde_json::Map<String, serde_json::Value> {
        squadron_core::settings::parse_settings(&self.project_settings).unwrap_or_default()
    }
}

/// Loads job `id` with its backend; `None` if either is gone.
pub async fn load(store: &Store, id: i64) -> Result<Option<(TestJob, BackendRecord)>, CiError> {
    let mut sql =
        Sql::new(&format!("SELECT {JOB_COLUMNS} FROM testjobs j JOIN projects p ON p.id = j.target_id WHERE j.id = "));
    sql.bind(id);
    let Some(job) = store.fetch_optional::<TestJob>(&sql).await? else {
        return Ok(None);
    };
    Ok(backend(store, job.backend_id).await?.map(|backend| (job, backend)))
}

/// Loads backend `id`.
pub async fn backend(store: &Store, id: i64) -> Result<Option<BackendRecord>, CiError> {
    let mut sql = Sql::new("SELECT * FROM backends WHERE id = ");
    sql.bind(id);
    Ok(store.fetch_optional(&sql).await?)
}

/// What is needed to create a job.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    /// Its backend.
    pub backend_id: i64,
    /// The project.
    pub project_id: i64,
    /// The build.
    pub build_id: i64,
    /// The environment's slug.
    pub environment: &'a str,
    /// The definition.
    pub definition: Option<&'a str>,
    /// The lab's id, for a job submitted by someone else (`watchjob`).
    pub job_id: Option<&'a str>,
    /// The job this one resubmits.
    pub parent_job_id: Option<i64>,
    /// How many resubmissions came before.
    pub resubmitted_count: i64,
}

/// Inserts a job in `tx`; returns its id. A job with a `job_id` is
/// already submitted.
pub async fn insert(tx: &mut WriteTx, job: &NewJob<'_>) -> Result<i64, CiError> {
    let mut sql = Sql::new(
        "INSERT INTO testjobs (backend_id, definition, target_id, target_build_id, environment, created_at, \
         submitted, submitted_at, job_id, parent_job_id, resubmitted_count) VALUES (",
    );
    let now = Utc::now();
    sql.bind(job.backend_id)
        .push(", ")
        .bind_optional(job.definition)
        .push(", ")
        .bind(job.project_id)
        .push(", ")
        .bind(job.build_id)
        .push(", ")
        .bind(job.environment)
        .push(", ")
        .bind(now)
        .push(", ")
        .bind(job.job_id.is_some())
        .push(", ")
        .bind_optional(job.job_id.map(|_| now))
        .push(", ")
        .bind_optional(job.job_id)
        .push(", ")
        .bind_optional(job.parent_job_id)
        .push(", ")
        .bind(job.resubmitted_count)
        .push(") RETURNING id");
    Ok(tx.fetch_integer(&sql).await?)
}

/// Creates a job to be submitted to its lab and enqueues its submission,
/// in `tx`; returns its id.
pub async fn submit_new(tx: &mut WriteTx, queue: &Queue, job: &NewJob<'_>) -> Result<i64, CiError> {
    let id = insert(tx, job).await?;
    // The build has one more pending job: it is not finished any more.
    mark_stale(tx, job.build_id).await?;
    queue.enqueue(tx.conn(), &SubmitJob::task(id)).await?;
    Ok(id)
}

/// Creates a job someone else submitted to its lab (`watchjob`: `job.job_id`
/// is set) and, when `fetch_now`, enqueues its first fetch, in `tx`;
/// returns its id. Without a fetch now, the poll or a callback fetches it.
pub async fn watch_new(tx: &mut WriteTx, queue: &Queue, job: &NewJob<'_>, fetch_now: bool) -> Result<i64, CiError> {
    let id = insert(tx, job).await?;
    // One more pending job: the build is not finished any more.
    build_changed(tx, queue, id).await?;
    if fetch_now {
        request_fetch(tx, queue, id, RunAt::Now).await?;
    }
    Ok(id)
}

/// Enqueues a fetch of job `id` in `tx` (a no-op while one is waiting).
pub async fn request_fetch(tx: &mut WriteTx, queue: &Queue, id: i64, run_at: RunAt) -> Result<(), CiError> {
    queue.enqueue(tx.conn(), &FetchJob::task(id).run_at(run_at)).await?;
    Ok(())
}

/// Why a resubmission was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Resubmitted {
    /// The new job's id.
    Job(i64),
    /// The job may not be resubmitted (SQUAD's `can_resubmit` is false).
    NotAllowed,
}

/// Resubmits job `id` as SQUAD does: a new job (with `parent_job` and one
/// more `resubmitted_count`) is created and its submission enqueued, in one
/// transaction, so the lab is called by the task (never twice, never while
/// a lock is held). `force` ignores `can_resubmit`. The project settings
/// `CI_DELETE_RESULTS_RESUBMITTED_JOBS` (delete the old job's test run) and
/// `CI_RESET_BUILD_EVENTS_ON_JOB_RESUBMISSION` (notify the build again)
/// apply.
pub async fn resubmit(store: &Store, queue: &Queue, id: i64, force: bool) -> Result<Resubmitted, CiError> {
    let Some((job, _)) = load(store, id).await? else {
        return Err(CiError::NotFound(format!("test job {id}")));
    };
    let settings = job.settings();
    let setting = |key: &str| settings.get(key).is_some_and(|v| v.as_bool() == Some(true));
    let mut tx = store.begin_write().await?;
    // Claimed in the transaction: two concurrent resubmissions make one job.
    let mut claim = Sql::new("UPDATE testjobs SET can_resubmit = FALSE WHERE id = ");
    claim.bind(id);
    if !force {
        claim.push(" AND can_resubmit");
    }
    if tx.execute(&claim).await? == 0 {
        return Ok(Resubmitted::NotAllowed);
    }
    let Some(build_id) = job.target_build_id else {
        return Err(CiError::Invalid(format!("test job {id} has no build")));
    };
    if job.job_id.is_none() && !job.submitted {
        // Never reached the lab: submit it again instead.
        let mut reset = Sql::new(
            "UPDATE testjobs SET failure = NULL, fetched = FALSE, job_status = NULL, submission_key = NULL WHERE id = ",
        );
        reset.bind(id);
        tx.execute(&reset).await?;
        queue.enqueue(tx.conn(), &SubmitJob::task(id)).await?;
        build_changed(&mut tx, queue, id).await?;
        tx.commit().await?;
        return Ok(Resubmitted::Job(id));
    }
    if setting("CI_RESET_BUILD_EVENTS_ON_JOB_RESUBMISSION") {
        squadron_status::reset_build_events(&mut tx, queue, build_id).await?;
    }
    if setting("CI_DELETE_RESULTS_RESUBMITTED_JOBS") {
        if let Some(run) = job.testrun_id {
            squadron_store::ingest::retire_run(&mut tx, run).await?;
        }
    }
    let child = submit_new(
        &mut tx,
        queue,
        &NewJob {
            backend_id: job.backend_id,
            project_id: job.target_id,
            build_id,
            environment: &job.environment,
            definition: job.definition.as_deref(),
            job_id: None,
            parent_job_id: Some(id),
            resubmitted_count: job.resubmitted_count + 1,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Resubmitted::Job(child))
}

/// Cancels job `id`: a job the lab does not have yet is marked `Canceled`
/// at once ("Canceled before submission"); otherwise the lab is asked by a
/// task and the job's status follows at its next fetch. Returns `false`
/// when the job was already cancelled or is over.
pub async fn cancel(store: &Store, queue: &Queue, id: i64) -> Result<bool, CiError> {
    let mut tx = store.begin_write().await?;
    let mut local = Sql::new(
        "UPDATE testjobs SET submitted = TRUE, fetched = TRUE, job_status = 'Canceled', \
         failure = 'Canceled before submission' WHERE NOT submitted AND job_id IS NULL AND id = ",
    );
    local.bind(id);
    if tx.execute(&local).await? > 0 {
        build_changed(&mut tx, queue, id).await?;
        tx.commit().await?;
        return Ok(true);
    }
    let mut running = Sql::new(
        "SELECT id FROM testjobs WHERE NOT fetched AND job_id IS NOT NULL \
         AND (job_status IS NULL OR job_status <> 'Canceled') AND id = ",
    );
    running.bind(id);
    if tx.fetch_optional::<(i64,)>(&running).await?.is_none() {
        return Ok(false);
    }
    queue.enqueue(tx.conn(), &CancelJob::task(id)).await?;
    tx.commit().await?;
    Ok(true)
}

/// Fetches job `id` again now, as SQUAD's `fetch` action does: its
/// `fetched` flag and failed attempts are reset and a fetch is enqueued,
/// together. Only a job without results qualifies (a job given up after
/// failed fetches, say): fetching one that has a test run, or whose results
/// are being post-processed, would store them twice. Returns whether the
/// fetch was enqueued.
pub async fn refetch(store: &Store, queue: &Queue, id: i64) -> Result<bool, CiError> {
    let mut tx = store.begin_write().await?;
    let mut reset = Sql::new("UPDATE testjobs SET fetched = FALSE, fetch_attempts = 0 WHERE job_id IS NOT NULL ");
    reset.push("AND testrun_id IS NULL AND (job_status IS NULL OR job_status <> ").bind(FETCHING);
    reset.push(") AND id = ").bind(id);
    if tx.execute(&reset).await? == 0 {
        return Ok(false);
    }
    // A job that was over is pending again: its build is not finished.
    build_changed(&mut tx, queue, id).await?;
    request_fetch(&mut tx, queue, id, RunAt::Now).await?;
    tx.commit().await?;
    Ok(true)
}

/// A job definition as it may be shown to anyone who can see the job:
/// the values of a YAML definition's `secrets` mapping are masked (SQUAD's
/// `show_definition`). Other definitions are returned as they are, comments
/// included.
pub fn show_definition(definition: &str) -> std::borrow::Cow<'_, str> {
    use serde_norway::Value;
    let Ok(Value::Mapping(mut document)) = serde_norway::from_str::<Value>(definition) else {
        return definition.into();
    };
    let Some(Value::Mapping(secrets)) = document.get_mut("secrets") else {
        return definition.into();
    };
    for value in secrets.values_mut() {
        *value = Value::String("****".into());
    }
    match serde_norway::to_string(&document) {
        Ok(text) => text.into(),
        // Never show what could not be masked.
        Err(_) => "".into(),
    }
}

/// Marks build `build_id`'s status stale in `tx`: it has a new pending job.
async fn mark_stale(tx: &mut WriteTx, build_id: i64) -> Result<(), CiError> {
    let mut stale = Sql::new("UPDATE builds SET status_version = status_version + 1 WHERE id = ");
    stale.bind(build_id);
    tx.execute(&stale).await?;
    Ok(())
}

/// Records, in `tx`, that job `id` changed in a way that matters to its
/// build's status (whether it is finished): the status becomes stale and
/// its update is enqueued.
pub(crate) async fn build_changed(tx: &mut WriteTx, queue: &Queue, id: i64) -> Result<(), CiError> {
    let mut build = Sql::new("SELECT target_build_id FROM testjobs WHERE id = ");
    build.bind(id);
    if let Some((Some(build_id),)) = tx.fetch_optional::<(Option<i64>,)>(&build).await? {
        mark_stale(tx, build_id).await?;
        queue.enqueue(tx.conn(), &squadron_status::UpdateBuildStatus::task(build_id)).await?;
    }
    Ok(())
}

/// A task of `kind` for job `id`, unique per job and kind.
pub(crate) fn unique_per_job(task: NewTask, kind: &str, id: i64) -> NewTask {
    task.unique(format!("{kind}:testjob:{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_shown_without_their_secrets() {
        let shown = show_definition("job_name: boot\nsecrets:\n  API_KEY: s3cret\n  OTHER: x\n");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("API_KEY: '****'") && shown.contains("job_name: boot"), "{shown}");
        for plain in ["# a comment\njob_name: boot\n", "not: [valid", "- a list\n", "secrets: none\n"] {
            assert_eq!(show_definition(plain), plain, "left as it is");
        }
    }
}
