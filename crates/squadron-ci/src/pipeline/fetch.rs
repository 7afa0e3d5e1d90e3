//! `fetch` (ci_fetch): asks the lab for a job's results and stores them.
//!
//! The lab is asked outside any transaction. A job still running snoozes
//! the task until the next poll interval. Finished results are written as
//! blobs (raw results, tests, metrics, log; content-addressed, so a retry
//! rewrites the same files) and ingested into a hidden test run owned by
//! this task, in short transactions (DESIGN §3). One last transaction
//! publishes the run, marks the job fetched and enqueues its
//! post-processing (or finishes it), fenced by the task's lease. A crash
//! anywhere before that commit leaves a hidden run that the retry removes
//! before ingesting again; nothing is visible twice, nothing half.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use squadron_core::submission::{parse_metadata, RunMetadata};
use squadron_queue::{Job, NewTask, Outcome, Task, TaskError};
use squadron_store::blob::Blob;
use squadron_store::ingest::{IngestError, IngestOptions, Submission};
use squadron_store::sql::Sql;
use squadron_store::WriteTx;
use tracing::{info, warn};

use super::{poll_interval, Ci, PostprocessRun};
use crate::backend::{BackendError, Fetched, JobResults};
use crate::jobs::{self, unique_per_job, NewJob, TestJob, FETCHING};

/// Fetches test job `testjob_id`'s results from its lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchJob {
    /// The job.
    pub testjob_id: i64,
}

impl FetchJob {
    /// The task for job `id`: one waiting per job; a request while it runs
    /// makes it run once more.
    pub fn task(id: i64) -> NewTask {
        unique_per_job(NewTask::of(&FetchJob { testjob_id: id }), "fetch", id)
    }
}

/// LAVA's automatic resubmission gives up after this many.
const MAX_AUTOMATIC_RESUBMISSIONS: i64 = 3;

impl Task for FetchJob {
    const KIND: &'static str = "ci_fetch";
    const QUEUE: &'static str = "ci_fetch";
    type Context = Ci;

    async fn run(&self, cx: &Ci, job: &mut Job) -> Result<Outcome, TaskError> {
        let loaded = jobs::load(&cx.store, self.testjob_id).await.map_err(TaskError::failed)?;
        let Some((testjob, record)) = loaded else {
            return Ok(Outcome::Done);
        };
        if testjob.job_id.is_none() || testjob.fetched || testjob.fetch_attempts >= record.max_fetch_attempts {
            return Ok(Outcome::Done);
        }
        let fetched = match cx.backends.open(&record) {
            Ok(backend) => backend.fetch(&testjob).await.map(|f| (f, backend.job_url(&testjob))),
            Err(e) => Err(e),
        };
        match fetched {
            Ok((Fetched::Running { status }, _)) => {
                let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
                let mut sql = Sql::new("UPDATE testjobs SET last_fetch_attempt = ");
                sql.bind(Utc::now()).push(", job_status = COALESCE(").bind_optional(status).push(", job_status)");
                sql.push(" WHERE NOT fetched AND id = ").bind(self.testjob_id);
                tx.execute(&sql).await.map_err(TaskError::failed)?;
                consume_input(&mut tx, &testjob).await?;
                job.commit_step(tx, &Value::Null).await?;
                Ok(Outcome::Snooze(poll_interval(record.poll_interval)))
            }
            Ok((Fetched::Finished(results), job_url)) => store_results(cx, job, &testjob, *results, job_url).await,
            Err(BackendError::Temporary(message)) => {
                let attempts = testjob.fetch_attempts + 1;
                let give_up = attempts >= record.max_fetch_attempts;
                let message =
                    if give_up { format!("{message} (gave up after {attempts} failed fetches)") } else { message };
                let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
                record_fetch_failure(&mut tx, cx, self.testjob_id, &message, give_up).await?;
                consume_input(&mut tx, &testjob).await?;
                if give_up {
                    return job.commit_last_step(tx).await;
                }
                job.commit_step(tx, &Value::Null).await?;
                Ok(Outcome::Snooze(poll_interval(record.poll_interval)))
            }
            Err(e) => {
                let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
                record_fetch_failure(&mut tx, cx, self.testjob_id, &e.to_string(), true).await?;
                job.commit_last_step(tx).await
            }
        }
    }
}

/// Drops the payload a lab pushed once a fetch has read it without
/// storing results (SQUAD consumes it at every fetch), unless a newer one
/// arrived meanwhile: the next fetch asks the lab itself.
async fn consume_input(tx: &mut WriteTx, testjob: &TestJob) -> Result<(), TaskError> {
    if let Some(input) = &testjob.results_input {
        let mut sql = Sql::new("UPDATE testjobs SET results_input = NULL WHERE id = ");
        sql.bind(testjob.id).push(" AND results_input = ").bind(input.as_str());
        tx.execute(&sql).await.map_err(TaskError::failed)?;
    }
    Ok(())
}

/// Counts a failed fetch; a `final` one ends the job (SQUAD leaves a job
/// whose fetches are exhausted pending, and its build unfinished, forever).
async fn record_fetch_failure(tx: &mut WriteTx, cx: &Ci, id: i64, message: &str, last: bool) -> Result<(), TaskError> {
    let mut sql = Sql::new("UPDATE testjobs SET fetch_attempts = fetch_attempts + 1, failure = ");
    sql.bind(message).push(", last_fetch_attempt = ").bind(Utc::now());
    if last {
        sql.push(", fetched = TRUE, can_resubmit = TRUE, job_status = COALESCE(job_status, 'Incomplete')");
    }
    sql.push(" WHERE NOT fetched AND id = ").bind(id);
    tx.execute(&sql).await.map_err(TaskError::failed)?;
    if last {
        jobs::build_changed(tx, &cx.queue, id).await.map_err(TaskError::failed)?;
    }
    warn!(testjob = id, error = %message, last, "fetching a test job failed");
    Ok(())
}

/// What a job's results become: SQUAD's rules for incomplete jobs, and the
/// metadata it adds.
struct Outcomes {
    completed: bool,
    can_resubmit: bool,
    metadata: RunMetadata,
}

fn outcomes(testjob: &TestJob, results: &mut JobResults, job_url: Option<&str>) -> Result<Outcomes, String> {
    let mut completed = results.completed;
    if !completed {
        results.tests.clear();
        results.metrics.clear();
    } else if results.tests.is_empty() && results.metrics.is_empty() {
        completed = false;
    }
    let metadata = &mut results.metadata;
    metadata.insert("job_id".into(), Value::from(testjob.job_id.clone()));
    metadata.insert("job_status".into(), Value::from(results.status.clone()));
    if let Some(url) = job_url {
        metadata.insert("job_url".into(), Value::from(url));
    }
    let metadata = parse_metadata(&Value::Object(metadata.clone()).to_string()).map_err(|e| e.to_string())?;
    Ok(Outcomes { completed, can_resubmit: !completed, metadata })
}

/// Writes `document` (a JSON object built by `entries`) as a blob, without
/// holding more than one entry's text at a time besides the input.
async fn json_blob(cx: &Ci, entries: impl Iterator<Item = (String, Value)>) -> Result<Option<Blob>, TaskError> {
    let mut writer = cx.blobs.writer().map_err(TaskError::failed)?;
    let mut first = true;
    for (name, value) in entries {
        let mut chunk = if first { b"{".to_vec() } else { b",".to_vec() };
        first = false;
        serde_json::to_writer(&mut chunk, &name).map_err(TaskError::failed)?;
        chunk.push(b':');
        serde_json::to_writer(&mut chunk, &value).map_err(TaskError::failed)?;
        writer.write(&chunk).await.map_err(TaskError::failed)?;
    }
    if first {
        return Ok(None);
    }
    writer.write(b"}").await.map_err(TaskError::failed)?;
    Ok(Some(writer.finish().await.map_err(TaskError::failed)?))
}

async fn store_results(
    cx: &Ci,
    job: &mut Job,
    testjob: &TestJob,
    mut results: JobResults,
    job_url: Option<String>,
) -> Result<Outcome, TaskError> {
    let id = testjob.id;
    let outcomes = match outcomes(testjob, &mut results, job_url.as_deref()) {
        Ok(outcomes) => outcomes,
        Err(e) => return reject(cx, job, id, &format!("the lab's results have invalid metadata: {e}")).await,
    };
    let raw = cx.blobs.put(&results.raw).await.map_err(TaskError::failed)?;
    let tests = json_blob(
        cx,
        results.tests.drain(..).map(|t| {
            let mut entry = Map::new();
            entry.insert("result".into(), Value::from(t.result));
            if let Some(log) = t.log {
                entry.insert("log".into(), Value::from(log));
            }
            (t.name, Value::Object(entry))
        }),
    )
    .await?;
    let metrics = json_blob(
        cx,
        results.metrics.drain(..).map(|m| {
            let mut entry = Map::new();
            entry.insert("value".into(), Value::from(m.values));
            if let Some(unit) = m.unit {
                entry.insert("unit".into(), Value::from(unit));
            }
            (m.name, Value::Object(entry))
        }),
    )
    .await?;
    let log = match &results.log {
        Some(log) => Some(cx.blobs.put(log).await.map_err(TaskError::failed)?),
        None => None,
    };
    let mut attachments = Vec::with_capacity(results.attachments.len());
    for (name, content) in &results.attachments {
        attachments.push((name.clone(), cx.blobs.put(content).await.map_err(TaskError::failed)?));
    }
    let environment = results.environment.clone().unwrap_or_else(|| testjob.environment.clone());
    let mut version = Sql::new("SELECT version FROM builds WHERE id = ");
    version.bind(testjob.target_build_id.unwrap_or(-1));
    let Some((build_version,)) = cx.store.fetch_optional::<(String,)>(&version).await.map_err(TaskError::failed)?
    else {
        return Ok(Outcome::Done);
    };
    let submission = Submission {
        project_id: testjob.target_id,
        build_version,
        environment_slug: environment.clone(),
        metadata: outcomes.metadata,
        tests_file: tests,
        metrics_file: metrics,
        log_file: log,
        attachments,
        completed: outcomes.completed,
    };
    let options = IngestOptions { owner: Some(format!("fetch:testjob:{id}")), ..IngestOptions::default() };
    let mut staged = match cx.store.stage(&cx.blobs, &submission, options).await {
        Ok(staged) => staged,
        Err(IngestError::Input(e)) => return reject(cx, job, id, &format!("the lab's results are invalid: {e}")).await,
        Err(IngestError::DuplicateJobId(job_id)) => {
            return reject(cx, job, id, &format!("the build already has a test run with job_id {job_id}")).await
        }
        Err(e) => return Err(TaskError::failed(e)),
    };
    let plugins = enabled_plugins(cx, testjob.target_id).await?;
    staged.count_ahead().await.map_err(TaskError::failed)?;
    let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
    staged.publish_in(&mut tx).await.map_err(TaskError::failed)?;
    let run = staged.id();
    let status = if plugins.is_empty() { results.status.as_str() } else { FETCHING };
    let now = Utc::now();
    let mut sql = Sql::new("UPDATE testjobs SET fetched = TRUE, fetched_at = ");
    sql.bind(now).push(", last_fetch_attempt = ").bind(now);
    sql.push(", job_status = ").bind(status).push(", testrun_id = ").bind(run);
    sql.push(", environment = ").bind(environment.as_str());
    sql.push(", name = COALESCE(name, ").bind_optional(results.name.as_deref()).push(")");
    sql.push(", started_at = ").bind_optional(results.started_at).push(", ended_at = ").bind_optional(results.ended_at);
    sql.push(", failure = ").bind_optional(results.failure.as_deref());
    sql.push(", can_resubmit = ").bind(outcomes.can_resubmit);
    sql.push(", results_blob = ").bind(raw.key.as_str()).push(", results_input = NULL");
    let artifacts = (!results.artifacts.is_empty())
        .then(|| serde_json::to_string(&results.artifacts).expect("artifacts serialize"));
    sql.push(", artifacts = ").bind_optional(artifacts);
    sql.push(" WHERE NOT fetched AND id = ").bind(id);
    if tx.execute(&sql).await.map_err(TaskError::failed)? == 0 {
        // Fetched by someone else meanwhile (a cancel, say): ours goes.
        drop(tx);
        staged.discard().await.map_err(TaskError::failed)?;
        return Ok(Outcome::Done);
    }
    if results.resubmit && testjob.resubmitted_count < MAX_AUTOMATIC_RESUBMISSIONS {
        resubmit_automatically(&mut tx, cx, testjob).await?;
    }
    for plugin in &plugins {
        let task = PostprocessRun::task(run, plugin, Some(id));
        squadron_status::postprocess::hold(&mut tx, &cx.queue, run, plugin, &task).await.map_err(TaskError::failed)?;
    }
    if plugins.is_empty() {
        jobs::build_changed(&mut tx, &cx.queue, id).await.map_err(TaskError::failed)?;
    }
    // If fenced, the worker that owns the task now removes our hidden run.
    let outcome = job.commit_last_step(tx).await?;
    info!(testjob = id, testrun = run, status = %results.status, plugins = plugins.len(), "test job fetched");
    Ok(outcome)
}

/// The names of the plugins `project` enables that this process has.
async fn enabled_plugins(cx: &Ci, project: i64) -> Result<Vec<String>, TaskError> {
    let mut sql = Sql::new("SELECT enabled_plugins_list FROM projects WHERE id = ");
    sql.bind(project);
    let list: Option<(Option<String>,)> = cx.store.fetch_optional(&sql).await.map_err(TaskError::failed)?;
    let list = list.and_then(|(l,)| l).unwrap_or_default();
    let names = list.split(',').map(str::trim).filter(|n| !n.is_empty());
    Ok(cx.plugins.enabled(names).iter().map(|p| p.name().to_string()).collect())
}

/// Ends a job whose results cannot be stored, with the reason.
async fn reject(cx: &Ci, job: &mut Job, id: i64, message: &str) -> Result<Outcome, TaskError> {
    let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
    record_fetch_failure(&mut tx, cx, id, message, true).await?;
    job.commit_last_step(tx).await
}

/// LAVA's automatic resubmission of a job that failed for an
/// infrastructure reason: the new job and its submission commit with the
/// old job's results, so the lab is called once, by the new job's task.
async fn resubmit_automatically(tx: &mut WriteTx, cx: &Ci, testjob: &TestJob) -> Result<(), TaskError> {
    let Some(build_id) = testjob.target_build_id else {
        return Ok(());
    };
    let child = NewJob {
        backend_id: testjob.backend_id,
        project_id: testjob.target_id,
        build_id,
        environment: &testjob.environment,
        definition: testjob.definition.as_deref(),
        job_id: None,
        parent_job_id: Some(testjob.id),
        resubmitted_count: testjob.resubmitted_count + 1,
    };
    let id = jobs::submit_new(tx, &cx.queue, &child).await.map_err(TaskError::failed)?;
    let mut sql = Sql::new("UPDATE testjobs SET can_resubmit = FALSE WHERE id = ");
    sql.bind(testjob.id);
    tx.execute(&sql).await.map_err(TaskError::failed)?;
    info!(testjob = testjob.id, resubmitted_as = id, "infrastructure error: resubmitted automatically");
    Ok(())
}
