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
use serde_json::{Map, Value};
use squadron_plugins::{KnownIssueRef, LabJob, PluginError, PluginInput, ReadSeek, StashedAttachment, StepOutput};
use squadron_queue::{Job, NewTask, Outcome, StepTx, StopSignal, Task, TaskError};
use squadron_store::blob::BlobStore;
use squadron_store::ingest::{StagedRun, StepWriter};
use squadron_store::sql::Sql;
use squadron_store::{Store, WriteTx};
use tracing::warn;

use super::links::{local_attachment, RunPlace};
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
/// store, its project's settings, and the CI job it came from.
pub struct RunInput {
    store: Store,
    blobs: BlobStore,
    http: reqwest::Client,
    /// Writes stashed files from the blocking thread a step runs on.
    runtime: tokio::runtime::Handle,
    id: i64,
    /// The run's project.
    project_id: i64,
    /// Where the run's attachments are served.
    place: RunPlace,
    /// [`Ci::base_url`].
    base_url: String,
    log: Option<String>,
    attachments: Vec<(String, String)>,
    settings: Value,
    job: Option<LabJob>,
    /// Set once the task's run should stop.
    stop: Option<StopSignal>,
}

/// The largest file a plugin downloads from a lab.
const MAX_DOWNLOAD_BYTES: u64 = 16 << 30;

impl RunInput {
    /// The inputs of run `id` (of CI job `testjob`, if any); `None` if the
    /// run is gone.
    pub async fn load(cx: &Ci, id: i64, testjob: Option<i64>) -> Result<Option<RunInput>, TaskError> {
        let store = &cx.store;
        let mut run = Sql::new(
            "SELECT r.log_file, p.project_settings, p.id, g.slug, p.slug, b.version FROM testruns r \
             JOIN builds b ON b.id = r.build_id JOIN projects p ON p.id = b.project_id \
             JOIN groups g ON g.id = p.group_id WHERE r.id = ",
        );
        run.bind(id);
        type Row = (Option<String>, String, i64, String, String, String);
        let Some((log, settings, project_id, group, project, version)) =
            store.fetch_optional::<Row>(&run).await.map_err(TaskError::failed)?
        else {
            return Ok(None);
        };
        let mut attachments = Sql::new("SELECT filename, blob FROM attachments WHERE test_run_id = ");
        attachments.bind(id).push(" ORDER BY id");
        let attachments = store.fetch_all(&attachments).await.map_err(TaskError::failed)?;
        let settings = squadron_core::settings::parse_settings(&settings).unwrap_or_default();
        let job = match testjob {
            Some(testjob) => lab_job(store, testjob).await?,
            None => None,
        };
        Ok(Some(RunInput {
            store: store.clone(),
            blobs: cx.blobs.clone(),
            http: cx.backends.http.clone(),
            runtime: tokio::runtime::Handle::current(),
            id,
            project_id,
            place: RunPlace { group, project, version, testrun: id },
            base_url: cx.base_url.clone(),
            log,
            attachments,
            settings: Value::Object(settings),
            job,
            stop: None,
        }))
    }

    /// Streams `url` into a blob; an attachment of this instance is
    /// taken from the store instead.
    async fn fetch(&self, url: &str) -> Result<String, PluginError> {
        if let Some((testrun, filename)) = local_attachment(&self.base_url, url) {
            return self.local(url, testrun, &filename).await;
        }
        let retry = |e: &dyn std::fmt::Display| PluginError::Io(std::io::Error::other(format!("{url}: {e}")));
        let mut response = self.http.get(url).send().await.map_err(|e| retry(&e))?;
        let status = response.status();
        if status.is_client_error() {
            return Err(PluginError::BadInput(format!("{url}: the server answered {status}")));
        }
        if !status.is_success() {
            return Err(retry(&format!("the server answered {status}")));
        }
        let mut writer = self.blobs.writer()?;
        let mut length = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(|e| retry(&e))? {
            length += chunk.len() as u64;
            if length > MAX_DOWNLOAD_BYTES {
                return Err(PluginError::BadInput(format!("{url}: larger than {MAX_DOWNLOAD_BYTES} bytes")));
            }
            writer.write(&chunk).await?;
        }
        Ok(writer.finish().await?.key)
    }

    /// The blob of attachment `filename` of run `testrun`, which `url` names
    /// on this instance. Only a run of the same project or of a public
    /// one is read (SQUAD read any), so a job cannot reach into a private
    /// project by naming its attachments.
    async fn local(&self, url: &str, testrun: i64, filename: &str) -> Result<String, PluginError> {
        let mut sql = Sql::new(
            "SELECT a.blob FROM attachments a JOIN testruns r ON r.id = a.test_run_id \
             JOIN builds b ON b.id = r.build_id JOIN projects p ON p.id = b.project_id \
             WHERE r.visible AND a.test_run_id = ",
        );
        sql.bind(testrun).push(" AND a.filename = ").bind(filename.to_string());
        sql.push(" AND (p.is_public OR p.id = ").bind(self.project_id).push(") ORDER BY a.id DESC");
        let found: Option<(String,)> =
            self.store.fetch_optional(&sql).await.map_err(|e| PluginError::Io(std::io::Error::other(e)))?;
        found.map(|(blob,)| blob).ok_or_else(|| {
            PluginError::BadInput(format!(
                "{url}: no such attachment on this instance (or not visible to this project)"
            ))
        })
    }
}

/// What plugins may know of CI job `id`.
async fn lab_job(store: &Store, id: i64) -> Result<Option<LabJob>, TaskError> {
    let mut sql = Sql::new(
        "SELECT b.implementation_type, t.job_id, t.definition, t.artifacts FROM testjobs t \
         JOIN backends b ON b.id = t.backend_id WHERE t.id = ",
    );
    sql.bind(id);
    type Row = (String, Option<String>, Option<String>, Option<String>);
    let Some((backend, job_id, definition, artifacts)) =
        store.fetch_optional::<Row>(&sql).await.map_err(TaskError::failed)?
    else {
        return Ok(None);
    };
    let artifacts = artifacts.and_then(|a| serde_json::from_str(&a).ok()).unwrap_or_default();
    Ok(Some(LabJob { backend, job_id, definition, artifacts }))
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

    fn job(&self) -> Option<&LabJob> {
        self.job.as_ref()
    }

    fn failed_tests(&self) -> std::io::Result<Vec<(String, String)>> {
        let mut sql = Sql::new(
            "SELECT m.suite, m.name FROM tests t JOIN suite_metadata m ON m.id = t.metadata_id \
             WHERE t.result = FALSE AND t.test_run_id = ",
        );
        sql.bind(self.id).push(" ORDER BY m.suite, m.name");
        self.runtime.block_on(self.store.fetch_all(&sql)).map_err(std::io::Error::other)
    }

    fn download(&self, url: &str) -> Result<String, PluginError> {
        self.runtime.block_on(self.fetch(url))
    }

    fn attachment_url(&self, filename: &str) -> Option<String> {
        Some(self.place.attachment_url(&self.base_url, filename))
    }

    fn should_stop(&self) -> bool {
        self.stop.as_ref().is_some_and(StopSignal::is_set)
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
        let Some(mut input) = RunInput::load(cx, self.testrun_id, self.testjob_id).await? else {
            return Ok(Outcome::Done);
        };
        input.stop = Some(job.stop_signal());
        let Some(plugin) = cx.plugins.get(&self.plugin) else {
            warn!(plugin = %self.plugin, testrun = self.testrun_id, "plugin unknown to this worker; skipped");
            return self.last_step(cx, job, None, RunAdditions::default()).await;
        };
        let input = Arc::new(input);
        let cursor = job.checkpoint::<Cursor>()?.map(|c| c.next);
        if cursor.is_none() && !plugin.applies_to(input.as_ref()) {
            return self.last_step(cx, job, None, RunAdditions::default()).await;
        }
        // The run is reopened once for all the steps of this attempt: its
        // suites, known issues and ids are looked up once, not per step.
        let mut run = cx.store.reopen_run(self.testrun_id).await.map_err(TaskError::failed)?;
        let mut writer = run.step_writer::<Mark>();
        let mut steps = Steps::start(plugin, input, cursor);
        // The last step's additions, once its rows are written.
        let mut last_written = None;
        let additions = loop {
            let committed = match self.next_step(cx, &mut steps, &mut writer).await {
                Ok((end, done)) => self.commit_marks(cx, job, done).await.map(|tail| (end, tail)),
                Err(e) => Err(e),
            };
            let end = match committed {
                Ok((end, tail)) => {
                    last_written = tail.or(last_written);
                    end
                }
                Err(e) => {
                    let _ = writer.finish().await;
                    return Err(e);
                }
            };
            let Some(end) = end else { continue };
            let done = writer.finish().await.map_err(TaskError::failed)?;
            let tail = self.commit_marks(cx, job, done).await?;
            match end {
                StepEnd::Last => break tail.or(last_written).unwrap_or_default(),
                StepEnd::Failed(message) => break RunAdditions::failure(&self.plugin, message),
                StepEnd::Interrupted => {
                    job.check_stop()?;
                    return Err(TaskError::Interrupted);
                }
            }
        };
        self.last_step(cx, job, Some(run), additions).await
    }
}

/// How the plugin's steps ended.
enum StepEnd {
    /// That was the plugin's last step.
    Last,
    /// The plugin gave up on its input.
    Failed(String),
    /// The step was given up because the worker is stopping.
    Interrupted,
}

/// A step whose rows are being written: what commits with its checkpoint.
struct Mark {
    additions: RunAdditions,
    /// The cursor of the step after it; `None` after the last one.
    next: Option<Value>,
}

impl PostprocessRun {
    /// Takes the plugin's next step and starts writing its output; returns
    /// how the steps ended (`None` while more follow) and the marks of the
    /// steps now fully written.
    async fn next_step(
        &self,
        cx: &Ci,
        steps: &mut Steps,
        writer: &mut StepWriter<'_, '_, Mark>,
    ) -> Result<(Option<StepEnd>, Vec<Mark>), TaskError> {
        let output = match steps.next().await? {
            Ok(output) => output,
            Err(PluginError::BadInput(message)) => return Ok((Some(StepEnd::Failed(message)), Vec::new())),
            Err(PluginError::Interrupted) => return Ok((Some(StepEnd::Interrupted), Vec::new())),
            Err(e) => return Err(TaskError::failed(e)),
        };
        let StepOutput { tests, metrics, known_issues, attachments, metadata, next } = output;
        if !known_issues.is_empty() {
            let issues: Vec<(String, String)> =
                known_issues.into_iter().map(|KnownIssueRef { title, test_name }| (title, test_name)).collect();
            let filed = cx.store.file_known_issues(self.testrun_id, &issues).await.map_err(TaskError::failed)?;
            writer.add_known_issues(&filed);
        }
        let end = next.is_none().then_some(StepEnd::Last);
        let mark = Mark { additions: RunAdditions { attachments, metadata, failure: None }, next };
        let done = writer.push(tests, metrics, mark).await.map_err(TaskError::failed)?;
        Ok((end, done))
    }

    /// Commits the checkpoint after the written steps `done`, with what
    /// they add to the run, in one transaction. The last step's additions
    /// are returned instead, for the task's last transaction.
    async fn commit_marks(&self, cx: &Ci, job: &mut Job, done: Vec<Mark>) -> Result<Option<RunAdditions>, TaskError> {
        let Some(next) = done.last().map(|mark| mark.next.clone()) else {
            return Ok(None);
        };
        let mut additions = RunAdditions::default();
        for mark in done {
            additions.attachments.extend(mark.additions.attachments);
            additions.metadata.extend(mark.additions.metadata);
        }
        let Some(next) = next else {
            return Ok(Some(additions));
        };
        let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
        additions.write(&mut tx, &cx.blobs, self.testrun_id).await?;
        job.commit_step(tx, &Cursor { next }).await?;
        Ok(None)
    }
}

/// A plugin's steps, each taken on a blocking thread as soon as the one
/// before it is handed over: the next step is parsed while the rows of the
/// previous one are written.
struct Steps {
    receiver: tokio::sync::mpsc::Receiver<Result<StepOutput, PluginError>>,
    thread: tokio::task::JoinHandle<()>,
}

impl Steps {
    /// Starts taking the steps of `plugin` from `cursor`.
    fn start(plugin: Arc<dyn squadron_plugins::Plugin>, input: Arc<RunInput>, cursor: Option<Value>) -> Steps {
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        let thread = tokio::task::spawn_blocking(move || {
            let mut cursor = cursor;
            loop {
                let output = plugin.step(input.as_ref(), cursor.as_ref());
                cursor = output.as_ref().ok().and_then(|o| o.next.clone());
                if sender.blocking_send(output).is_err() || cursor.is_none() {
                    break;
                }
            }
        });
        Steps { receiver, thread }
    }

    /// The next step's output.
    async fn next(&mut self) -> Result<Result<StepOutput, PluginError>, TaskError> {
        match self.receiver.recv().await {
            Some(output) => Ok(output),
            None => {
                let ended = (&mut self.thread).await;
                Err(TaskError::failed(format!("the plugin stopped without an answer: {ended:?}")))
            }
        }
    }
}

/// What a step adds to its run besides tests and metrics.
#[derive(Default)]
struct RunAdditions {
    attachments: Vec<StashedAttachment>,
    metadata: Map<String, Value>,
    /// Why the plugin failed.
    failure: Option<String>,
}

impl RunAdditions {
    /// A plugin's failure: recorded in the run's metadata as
    /// `<plugin>_failure` (and on the job, if the run came from one).
    fn failure(plugin: &str, message: String) -> RunAdditions {
        let mut metadata = Map::new();
        metadata.insert(format!("{plugin}_failure"), Value::from(message.as_str()));
        RunAdditions { failure: Some(message), metadata, ..RunAdditions::default() }
    }

    /// Attaches the files and merges the metadata into run `run`, in `tx`.
    async fn write(&self, tx: &mut WriteTx, blobs: &BlobStore, run: i64) -> Result<(), TaskError> {
        for file in &self.attachments {
            let length = blobs.open_blob(&file.key).and_then(|f| f.metadata()).map_err(TaskError::failed)?.len();
            let mut sql = Sql::new("INSERT INTO attachments (test_run_id, filename, mimetype, length, blob) VALUES (");
            sql.bind(run).push(", ").bind(file.filename.as_str()).push(", ").bind(file.mimetype.as_str());
            sql.push(", ").bind(length as i64).push(", ").bind(file.key.as_str()).push(")");
            tx.execute(&sql).await.map_err(TaskError::failed)?;
        }
        if !self.metadata.is_empty() {
            let mut read = Sql::new("SELECT metadata_file FROM testruns WHERE id = ");
            read.bind(run);
            let current: Option<(Option<String>,)> = tx.fetch_optional(&read).await.map_err(TaskError::failed)?;
            let mut metadata: Map<String, Value> =
                current.and_then(|(text,)| serde_json::from_str(&text?).ok()).unwrap_or_default();
            metadata.extend(self.metadata.clone());
            let mut sql = Sql::new("UPDATE testruns SET metadata_file = ");
            sql.bind(Value::Object(metadata).to_string()).push(" WHERE id = ").bind(run);
            tx.execute(&sql).await.map_err(TaskError::failed)?;
        }
        Ok(())
    }
}

impl PostprocessRun {
    /// Recounts the run, adds the last step's files and metadata, releases
    /// the run's pending row, records a plugin failure on the job, and fans
    /// in, all in one fenced transaction.
    /// `run` is the run as this attempt reopened it, if it did.
    async fn last_step(
        &self,
        cx: &Ci,
        job: &mut Job,
        run: Option<StagedRun<'_>>,
        additions: RunAdditions,
    ) -> Result<Outcome, TaskError> {
        let mut run = match run {
            Some(run) => Ok(run),
            None => cx.store.reopen_run(self.testrun_id).await,
        };
        if let Ok(run) = run.as_mut() {
            run.count_ahead().await.map_err(TaskError::failed)?;
        }
        let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
        if let Ok(mut run) = run {
            run.publish_in(&mut tx).await.map_err(TaskError::failed)?;
        }
        additions.write(&mut tx, &cx.blobs, self.testrun_id).await?;
        squadron_status::postprocess::release(&mut tx, &cx.queue, self.testrun_id, &self.plugin)
            .await
            .map_err(TaskError::failed)?;
        if let Some(message) = &additions.failure {
            warn!(testrun = self.testrun_id, plugin = %self.plugin, error = %message, "post-processing failed");
        }
        if let Some(testjob) = self.testjob_id {
            if let Some(message) = &additions.failure {
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
