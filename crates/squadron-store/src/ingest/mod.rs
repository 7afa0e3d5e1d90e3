//! Ingestion of a submitted test run without long write transactions
//! (DESIGN.md §3).
//!
//! A run is first created *hidden*, owned by its writer and carrying a
//! heartbeat. Its tests and metrics are parsed from their blobs on a
//! blocking thread and written in short transactions of at most
//! [`IngestOptions::batch_rows`] rows each. One last short transaction writes
//! its status rows and makes it visible. A rejected run is removed by its
//! writer before it answers; a writer that dies leaves a hidden run whose
//! heartbeat goes stale, and [`Store::sweep_hidden_runs`] removes it. Either
//! way every table returns to its earlier row count, interned names and
//! suites included.

pub(crate) mod batch;
pub(crate) mod discard;
pub(crate) mod name_cache;
pub(crate) mod names;
mod plain_insert;
pub(crate) mod run;
mod writes;

use std::ops::ControlFlow;
use std::time::Duration;

use squadron_core::submission::{parse_metrics, parse_tests, InputError, RunMetadata};
use tracing::warn;

use crate::blob::{Blob, BlobStore};
use crate::db::WriteTx;
use crate::{Store, StoreError};
pub use batch::parse_measurements;
use batch::Named;
pub use discard::retire_run;
use run::HiddenRun;
pub use writes::StepWriter;
use writes::Writes;

/// The largest number of rows one ingestion transaction writes.
pub const MAX_BATCH_ROWS: usize = 5000;

/// Runs of at least this many tests and metrics refresh PostgreSQL's
/// planner statistics once published.
const LARGE_RUN_ROWS: i64 = 10_000;

/// A hidden run whose writer has not shown life for this long is removed by
/// the sweep.
pub const SWEEP_AFTER: Duration = Duration::from_secs(10 * 60);

/// Everything needed to store one submitted test run. Its files are already
/// in the blob store.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The project.
    pub project_id: i64,
    /// The build's version (created on first use).
    pub build_version: String,
    /// The environment's slug (created on first use).
    pub environment_slug: String,
    /// The validated metadata.
    pub metadata: RunMetadata,
    /// The `tests` document.
    pub tests_file: Option<Blob>,
    /// The `metrics` document.
    pub metrics_file: Option<Blob>,
    /// The log.
    pub log_file: Option<Blob>,
    /// Attachments: file name and content.
    pub attachments: Vec<(String, Blob)>,
    /// Whether the run completed (SQUAD's `completed`).
    pub completed: bool,
}

/// Tuning of an ingestion.
#[derive(Clone)]
pub struct IngestOptions {
    /// Rows per write transaction (at most [`MAX_BATCH_ROWS`]).
    pub batch_rows: usize,
    /// A task to enqueue for the run's build in the transaction that
    /// publishes the run, so that it exists exactly when the run is
    /// visible (the build status recomputation, for one).
    pub on_publish: Option<crate::builds::BuildTask>,
    /// Plugins to post-process the run with: their `pending_postprocess`
    /// rows and tasks commit with the publication.
    pub postprocess: Option<crate::postprocess::RunPostprocess>,
    /// Names the writer of the hidden run (a task, say): a later ingestion
    /// by the same owner removes an earlier hidden run it left behind at
    /// once, instead of waiting for its heartbeat to go stale. Unnamed
    /// writers get a fresh owner each time.
    pub owner: Option<String>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions { batch_rows: MAX_BATCH_ROWS, on_publish: None, postprocess: None, owner: None }
    }
}

/// A run whose rows are written but which is not published yet: a hidden
/// run from [`Store::stage`], or a visible run reopened by
/// [`Store::reopen_run`]. [`StagedRun::publish_in`] publishes it in the
/// caller's transaction, so that the caller's own writes (and follow-up
/// tasks) commit with it; a staged run never published stays hidden and is
/// removed by the sweep or by its owner's next attempt.
pub struct StagedRun<'s> {
    run: HiddenRun<'s>,
    metadata: squadron_core::submission::RunMetadata,
    batch_rows: usize,
    /// Rows appended since the planner's statistics were last refreshed.
    unanalyzed_rows: i64,
}

/// Items of a submission after which PostgreSQL's statistics of the name
/// table are refreshed, then again after twice as many, and so on.
const FIRST_NAME_STATISTICS_REFRESH: usize = 50_000;

/// Rows a run appended to in steps (a plugin's output) gets between two
/// refreshes of PostgreSQL's statistics: names are looked up in
/// `suite_metadata` as it grows by millions, and with stale statistics the
/// planner scans it whole for each batch.
const ANALYZE_EVERY_ROWS: i64 = 500_000;

impl StagedRun<'_> {
    /// The run's id.
    pub fn id(&self) -> i64 {
        self.run.id
    }

    /// The run's build.
    pub fn build_id(&self) -> i64 {
        self.run.ids().build
    }

    /// Adds tests and metrics to the run, each batch in a short transaction
    /// of its own. A test or metric already in the run is overwritten, so
    /// writing the same items twice gives the same rows.
    pub async fn append(
        &mut self,
        tests: Vec<squadron_core::submission::SubmittedTest>,
        metrics: Vec<squadron_core::submission::SubmittedMetric>,
    ) -> Result<(), IngestError> {
        let mut writer = self.step_writer();
        writer.push(tests, metrics, ()).await?;
        writer.finish().await?;
        Ok(())
    }

    /// Makes the tests appended next see known issues filed for the run's
    /// environment since it was opened, as `(id, test_name)` (as
    /// [`Store::file_known_issues`] returns them). Issues are added to the
    /// run's matcher one by one: nothing is read again or rebuilt, so a
    /// plugin filing thousands of issues in steps pays for each once.
    pub fn add_known_issues(&mut self, issues: &[(i64, String)]) {
        self.run.add_known_issues(issues)
    }

    /// Counts the run's stored rows on a read connection, if its status
    /// rows must be recounted (a reopened run, or names repeated across
    /// batches): call it before opening the transaction of
    /// [`StagedRun::publish_in`], which then only checks that no row was
    /// added since instead of counting millions of rows under the write
    /// lock.
    pub async fn count_ahead(&mut self) -> Result<(), StoreError> {
        self.run.count_ahead().await
    }

    /// Writes the run's status rows and makes it visible in `tx`.
    pub async fn publish_in(&mut self, tx: &mut WriteTx) -> Result<(), IngestError> {
        let metadata = std::mem::take(&mut self.metadata);
        self.run.publish_in(tx, &metadata).await
    }

    /// Removes a hidden run that will not be published (a reopened visible
    /// run is left as it is).
    pub async fn discard(self) -> Result<(), StoreError> {
        if self.run.is_hidden() {
            discard::discard_run(self.run.store, self.run.id).await?;
        }
        Ok(())
    }
}

/// Why a submission was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A submitted field is invalid (the client's fault).
    #[error(transparent)]
    Input(#[from] InputError),
    /// The build already has a visible run with this `job_id`.
    #[error("There is already a test run with job_id {0}")]
    DuplicateJobId(String),
    /// The hidden run was removed by the sweep before it was published.
    #[error("the test run was removed while it was being stored (its writer stalled for too long)")]
    Swept,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for IngestError {
    fn from(e: sqlx::Error) -> Self {
        IngestError::Store(e.into())
    }
}

impl From<std::io::Error> for IngestError {
    fn from(e: std::io::Error) -> Self {
        IngestError::Store(e.into())
    }
}

impl Store {
    /// Stores a submitted test run; returns the new test run's id.
    ///
    /// On any error nothing of the submission stays behind: the hidden run,
    /// and the build and environment if this call created them, are removed
    /// before the error is returned.
    pub async fn ingest(
        &self,
        blobs: &BlobStore,
        submission: &Submission,
        options: IngestOptions,
    ) -> Result<i64, IngestError> {
        let (on_publish, postprocess) = (options.on_publish.clone(), options.postprocess.clone());
        let StagedRun { mut run, .. } = self.stage(blobs, submission, options).await?;
        let outcome = run.publish(&submission.metadata, on_publish.as_ref(), postprocess.as_ref()).await;
        if let Ok(id) = &outcome {
            if run.written() >= LARGE_RUN_ROWS {
                self.refresh_statistics(*id, &["suite_metadata", "tests", "metrics"]);
            }
        }
        if outcome.is_err() {
            if let Err(e) = discard::discard_run(self, run.id).await {
                warn!(testrun = run.id, error = %e, "could not remove a rejected hidden run; the sweep will");
            }
        }
        outcome
    }

    /// After a large run, asks PostgreSQL to refresh its statistics of
    /// `tables` in the background: until autovacuum gets to it, the planner
    /// believes the run has a few rows and sorts it whole for each page of
    /// a listing. `ANALYZE` reads a fixed-size sample (~0.1 s) and blocks no
    /// writer. SQLite needs nothing of the kind.
    fn refresh_statistics(&self, run: i64, tables: &'static [&'static str]) {
        if self.engine_name() != "postgres" {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            for table in tables {
                if let Err(e) = store.execute_ddl(&format!("ANALYZE {table}")).await {
                    warn!(testrun = run, error = %e, "could not refresh planner statistics");
                }
            }
        });
    }

    /// Writes a submitted test run into a hidden run without publishing it
    /// (see [`StagedRun`]). On error nothing of the submission stays
    /// behind. `options.on_publish` is not used: the caller enqueues what
    /// it needs in its publishing transaction.
    pub async fn stage(
        &self,
        blobs: &BlobStore,
        submission: &Submission,
        options: IngestOptions,
    ) -> Result<StagedRun<'_>, IngestError> {
        let batch_rows = options.batch_rows.clamp(1, MAX_BATCH_ROWS);
        let mut run = HiddenRun::begin(self, submission, options.owner.as_deref()).await?;
        if let Err(e) = feed(&mut run, blobs, submission, batch_rows).await {
            if let Err(e) = discard::discard_run(self, run.id).await {
                warn!(testrun = run.id, error = %e, "could not remove a rejected hidden run; the sweep will");
            }
            return Err(e);
        }
        Ok(StagedRun { run, metadata: submission.metadata.clone(), batch_rows, unanalyzed_rows: 0 })
    }

    /// Reopens the visible run `id` so that post-processing can add tests
    /// and metrics to it (see [`StagedRun::append`]); publishing it again
    /// recounts its status rows.
    pub async fn reopen_run(&self, id: i64) -> Result<StagedRun<'_>, IngestError> {
        let run = HiddenRun::reopen(self, id).await?;
        Ok(StagedRun { run, metadata: Default::default(), batch_rows: MAX_BATCH_ROWS, unanalyzed_rows: 0 })
    }

    /// Removes hidden runs whose heartbeat is older than `older_than`: what
    /// writers that died mid-ingestion left behind. Returns how many.
    pub async fn sweep_hidden_runs(&self, older_than: Duration) -> Result<usize, StoreError> {
        let cutoff = chrono::Utc::now() - older_than;
        let stale: Vec<i64> = with_reader!(self, pool => sqlx::query_scalar(
            "SELECT id FROM testruns WHERE NOT visible AND ingest_heartbeat_at < $1",
        ).bind(cutoff).fetch_all(pool).await)?;
        for &id in &stale {
            discard::discard_run(self, id).await?;
        }
        Ok(stale.len())
    }
}

async fn feed(
    run: &mut HiddenRun<'_>,
    blobs: &BlobStore,
    s: &Submission,
    batch_rows: usize,
) -> Result<(), IngestError> {
    if let Some(blob) = &s.tests_file {
        let file = blobs.open_blob(&blob.key)?;
        pipeline(run, Batches::spawn(batch_rows, move |sink| parse_tests(file, sink))).await?;
    }
    if let Some(blob) = &s.metrics_file {
        let file = blobs.open_blob(&blob.key)?;
        pipeline(run, Batches::spawn(batch_rows, move |sink| parse_metrics(file, sink))).await?;
    }
    Ok(())
}

/// Writes parsed batches into the run. Each batch is prepared (its names
/// looked up on a read connection) while earlier ones are being written;
/// PostgreSQL writes [`Store::write_parallelism`] batches at once.
async fn pipeline<T: Named>(run: &mut HiddenRun<'_>, mut batches: Batches<T>) -> Result<(), IngestError> {
    let mut writes = Writes::<()>::new();
    let mut failed = None;
    let (mut parsed, mut refresh_at) = (0, FIRST_NAME_STATISTICS_REFRESH);
    while let Some(batch) = batches.next().await {
        parsed += batch.len();
        if parsed >= refresh_at {
            // A first build adds as many names as tests: with statistics
            // of a name table a fraction of its size, PostgreSQL looks each
            // batch's names up by scanning the table whole.
            run.store.refresh_statistics(run.id, &["suite_metadata"]);
            refresh_at *= 2;
        }
        if let Err(e) = writes.add(run, batch).await {
            failed = Some(e);
            break;
        }
    }
    if let Err(e) = writes.drain(run).await {
        failed = failed.or(Some(e));
    }
    batches.finish(failed).await
}

/// Items parsed on a blocking thread, handed over in batches: one batch is
/// parsed while the previous one is written.
struct Batches<T> {
    receiver: tokio::sync::mpsc::Receiver<Vec<T>>,
    parser: tokio::task::JoinHandle<Result<usize, InputError>>,
}

impl<T: Send + 'static> Batches<T> {
    /// Starts `parse` on a blocking thread, batching its items by `batch_rows`.
    fn spawn(
        batch_rows: usize,
        parse: impl FnOnce(&mut dyn FnMut(T) -> ControlFlow<()>) -> Result<usize, InputError> + Send + 'static,
    ) -> Batches<T> {
        let (sender, receiver) = tokio::sync::mpsc::channel::<Vec<T>>(2);
        let parser = tokio::task::spawn_blocking(move || {
            let mut batch = Vec::with_capacity(batch_rows);
            let outcome = parse(&mut |item| {
                batch.push(item);
                if batch.len() >= batch_rows {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_rows));
                    if sender.blocking_send(full).is_err() {
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            });
            if outcome.is_ok() && !batch.is_empty() && sender.blocking_send(batch).is_err() {
                return Err(InputError::Aborted);
            }
            outcome
        });
        Batches { receiver, parser }
    }

    /// The next batch, or `None` when the parser is done.
    async fn next(&mut self) -> Option<Vec<T>> {
        self.receiver.recv().await
    }

    /// Stops the parser and reports the outcome: the writer's error if it
    /// failed, else the parser's.
    async fn finish(self, write_error: Option<IngestError>) -> Result<(), IngestError> {
        drop(self.receiver);
        let parsed = self.parser.await.expect("the parser thread does not panic");
        match (write_error, parsed) {
            (Some(e), _) => Err(e),
            (None, Err(e)) => Err(e.into()),
            (None, Ok(_)) => Ok(()),
        }
    }
}
