//! `postprocess` (ci_fetch_postprocess): one enabled plugin on one test
//! run, in checkpointed steps.
//!
//! Each step runs the plugin on a blocking thread (no transaction held),
//! writes its tests and metrics into the run (upserts by name, so a
//! replayed step changes nothing), then commits the plugin's cursor as the
//! task's checkpoint. The last step recounts the run's status rows, removes
//! the run's `pending_postprocess` row and, under a lock on the job's row,
//! counts the plugins still pending on the run: the one that finds none
//! enqueues the job's `finish` (fan-in, DESIGN §5). Runs submitted directly
//! (no job) have their build status updated instead.

use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use squadron_plugins::{PluginError, PluginInput, ReadSeek};
use squadron_queue::{Job, NewTask, Outcome, StepTx, Task, TaskError};
use squadron_store::blob::BlobStore;
use squadron_store::sql::Sql;
use squadron_store::{Store, WriteTx};
use tracing::warn;

use super::{Ci, FinishJob};

/// Runs plugin `plugin` on test run `testrun_id` (of CI job `testjob_id`,
/// if it came from one).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PostprocessRun {
    /// The run.
    pub testrun_id: i64,
    /// The plugin's name.
    pub plugin: String,
    /// The CI job whose results the run holds.
    pub testjob_id: Option<i64>,
}

impl PostprocessRun {
    /// The task (one per run and plugin).
    pub fn task(testrun_id: i64, plugin: &str, testjob_id: Option<i64>) -> NewTask {
        NewTask::of(&PostprocessRun { testrun_id, plugin: plugin.to_string(), testjob_id })
            .unique(format!("postprocess:{testrun_id}:{plugin}"))
    }
}

/// A stored run's inputs for plugins: its log and attachments in the blob
/// store, and its project's settings.
pub struct RunInput {
    blobs: BlobStore,
    /// Writes stashed files from the blocking thread a step runs on.
    runtime: tokio::runtime::Handle,
    log: Option<String>,
    attachments: Vec<(String, String)>,
    settings: Value,
}

impl RunInput {
    /// The inputs of run `id`; `None` if the run is gone.
    pub async fn load(store: &Store, blobs: &BlobStore, id: i64) -> Result<Option<RunInput>, TaskError> {
        let mut run = Sql::new(
            "SELECT r.log_file, p.project_settings FROM testruns r JOIN builds b ON b.id = r.build_id \
             JOIN projects p ON p.id = b.project_id WHERE r.id = ",
        );
        run.bind(id);
        let Some((log, settings)) =
            store.fetch_optional::<(Option<String>, String)>(&run).await.map_err(TaskError::failed)?
        else {
            return Ok(None);
        };
        let mut attachments = Sql::new("SELECT filename, blob FROM attachments WHERE test_run_id = ");
        attachments.bind(id).push(" ORDER BY id");
        let attachments = store.fetch_all(&attachments).await.map_err(TaskError::failed)?;
        let settings = squadron_core::settings::parse_settings(&settings).unwrap_or_default();
        Ok(Some(RunInput {
            blobs: blobs.clone(),
            runtime: tokio::runtime::Handle::current(),
            log,
            attachments,
            settings: Value::Object(settings),
        }))
    }
}

impl PluginInput for RunInput {
    fn log(&self) -> std::io::Result<Option<Box<dyn BufRead + Send + '_>>> {
        match &self.log {
            Some(key) => Ok(Some(Box::new(BufReader::new(self.blobs.open_blob(key)?)))),
            None => Ok(None),
        }
    }

    fn attachments(&self) -> Vec<String> {
        self.attachments.iter().map(|(name, _)| name.clone()).collect()
    }

    fn attachment(&self, name: &str) -> std::io::Result<Option<Box<dyn ReadSeek + Send + '_>>> {
        match self.attachments.iter().find(|(n, _)| n == name) {
            Some((_, key)) => Ok(Some(Box::new(self.blobs.open_blob(key)?))),
            None => Ok(None),
        }
    }

    /// Stashed files are blobs: content-addressed, so a replayed step
    /// stashes the same file under the same key. Nothing refers to them,
    /// so the blob sweep removes them once they are older than its grace.
    fn stash(&self, write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>) -> std::io::Result<String> {
        let mut out = BlockingBlobWriter { writer: self.blobs.writer()?, runtime: &self.runtime };
        write(&mut out)?;
        let blob = self.runtime.block_on(out.writer.finish())?;
        Ok(blob.key)
    }

    fn stashed(&self, key: &str) -> std::io::Result<Option<Box<dyn ReadSeek + Send + '_>>> {
        match self.blobs.open_blob(key) {
            Ok(file) => Ok(Some(Box::new(file))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn settings(&self) -> &Value {
        &self.settings
    }
}

/// A blob written from a blocking thread.
struct BlockingBlobWriter<'a> {
    writer: squadron_store::blob::BlobWriter,
    runtime: &'a tokio::runtime::Handle,
}

impl Write for BlockingBlobWriter<'_> {
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<usize> {
        self.runtime.block_on(self.writer.write(chunk))?;
        Ok(chunk.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The task's checkpoint: the plugin's cursor for the next step.
#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    next: Value,
}

impl Task for PostprocessRun {
    const KIND: &'static str = "ci_postprocess";
    const QUEUE: &'static str = "ci_fetch_postprocess";
    type Context = Ci;

    async fn run(&self, cx: &Ci, job: &mut Job) -> Result<Outcome, TaskError> {
        let Some(input) = RunInput::load(&cx.store, &cx.blobs, self.testrun_id).await? else {
            return Ok(Outcome::Done);
        };
        let Some(plugin) = cx.plugins.get(&self.plugin) else {
            warn!(plugin = %self.plugin, testrun = self.testrun_id, "plugin unknown to this worker; skipped");
            return self.last_step(cx, job, None).await;
        };
        let input = Arc::new(input);
        let mut cursor = job.checkpoint::<Cursor>()?.map(|c| c.next);
        if cursor.is_none() && !plugin.applies_to(input.as_ref()) {
            return self.last_step(cx, job, None).await;
        }
        // The run is reopened once for all the steps of this attempt: its
        // suites, known issues and ids are looked up once, not per step.
        let mut run = None;
        loop {
            let output = {
                let (plugin, input, from) = (plugin.clone(), input.clone(), cursor.clone());
                tokio::task::spawn_blocking(move || plugin.step(input.as_ref(), from.as_ref()))
                    .await
                    .map_err(|e| TaskError::failed(format!("the plugin panicked: {e}")))?
            };
            let output = match output {
                Ok(output) => output,
                Err(PluginError::BadInput(message)) => return self.last_step(cx, job, Some(&message)).await,
                Err(e) => return Err(TaskError::failed(e)),
            };
            if !output.tests.is_empty() || !output.metrics.is_empty() {
                if run.is_none() {
                    run = Some(cx.store.reopen_run(self.testrun_id).await.map_err(TaskError::failed)?);
                }
                let run = run.as_mut().expect("reopened above");
                run.append(output.tests, output.metrics).await.map_err(TaskError::failed)?;
            }
            match output.next {
                Some(next) => {
                    let tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
                    let checkpoint = Cursor { next };
                    job.commit_step(tx, &checkpoint).await?;
                    cursor = Some(checkpoint.next);
                }
                None => return self.last_step(cx, job, None).await,
            }
        }
    }
}

impl PostprocessRun {
    /// Recounts the run, releases its pending row, records a plugin
    /// `failure` on the job, and fans in, all in one fenced transaction.
    async fn last_step(&self, cx: &Ci, job: &mut Job, failure: Option<&str>) -> Result<Outcome, TaskError> {
        let run = cx.store.reopen_run(self.testrun_id).await;
        let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
        if let Ok(mut run) = run {
            run.publish_in(&mut tx).await.map_err(TaskError::failed)?;
        }
        squadron_status::postprocess::release(&mut tx, &cx.queue, self.testrun_id, &self.plugin)
            .await
            .map_err(TaskError::failed)?;
        if let Some(testjob) = self.testjob_id {
            if let Some(message) = failure {
                warn!(testjob, plugin = %self.plugin, error = %message, "post-processing failed");
                let mut sql = Sql::new("UPDATE testjobs SET failure = ");
                sql.bind(format!("{}: {message}", self.plugin)).push(" WHERE id = ").bind(testjob);
                tx.execute(&sql).await.map_err(TaskError::failed)?;
            }
            fan_in(&mut tx, job, testjob, self.testrun_id).await?;
        }
        job.commit_last_step(tx).await
    }
}

/// Enqueues the job's `finish` if no plugin is pending on its run any
/// more. The job's row is locked first (PostgreSQL; SQLite has one writer),
/// so of two plugins finishing at the same moment the second one to commit
/// sees the first one's release.
async fn fan_in(tx: &mut WriteTx, job: &Job, testjob: i64, run: i64) -> Result<(), TaskError> {
    let mut lock = Sql::new("UPDATE testjobs SET job_status = job_status WHERE id = ");
    lock.bind(testjob);
    tx.execute(&lock).await.map_err(TaskError::failed)?;
    let mut pending = Sql::new("SELECT COUNT(*) FROM pending_postprocess WHERE testrun_id = ");
    pending.bind(run);
    if tx.fetch_integer(&pending).await.map_err(TaskError::failed)? == 0 {
        job.enqueue(tx.conn(), &FinishJob::task(testjob)).await?;
    }
    Ok(())
}
