//! `squadron bench plugins`: the `tradefed` plugin end to end. A run is
//! submitted with a `test_result.xml` (or an archive holding one) to a
//! project with `enabled_plugins_list = 'tradefed'`, and real `squadron
//! worker` processes drain `ci_fetch_postprocess` until the run's tests
//! and status rows are stored and its build is finished. Measured for a
//! first build (every test name new) and a repeat build (names known), on
//! SQLite and PostgreSQL, with the worker's peak RSS; then a worker is
//! SIGTERMed in the middle of the task and the hand-over to another worker
//! is timed.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use squadron_ci::PostprocessRun;
use squadron_plugins::tradefed::archive::{detect_format, extract_test_result, Format, Limits};
use squadron_queue::Queue;
use squadron_store::blob::{Blob, BlobStore};
use squadron_store::ingest::{IngestOptions, Submission};
use squadron_store::postprocess::RunPostprocess;
use squadron_store::projects::NewProject;
use squadron_store::sql::Sql;
use squadron_store::{Migrations, Store};
use tokio::io::AsyncReadExt;

use super::{Engines, Scratch};

#[derive(Debug, Args)]
pub struct PluginsArgs {
    /// The tradefed report: a `test_result.xml`, or a `.tar.xz`, `.tar.gz`
    /// or `.zip` holding one (e.g. from `scripts/gen_cts_result.py`).
    #[arg(long)]
    pub report: PathBuf,
    /// Which engines to measure.
    #[arg(long, value_enum, default_value_t = Engines::Both)]
    pub engine: Engines,
    /// Skip the SIGTERM hand-over measurement.
    #[arg(long)]
    pub no_handover: bool,
    /// Measure the first build only (no repeat build: on a multi-GB report
    /// each build takes minutes).
    #[arg(long)]
    pub first_only: bool,
    /// Where the blobs and the SQLite databases go (a temporary directory
    /// by default). The report is copied into its blob store once.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// PostgreSQL server on which a scratch database is created and dropped.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub postgres: String,
}

/// The queues of a plugin task and of the build status update it enqueues.
const QUEUES: &str = "ci_fetch_postprocess,core_postprocess";

/// A `squadron worker` process, its log in a file.
struct WorkerProcess {
    child: Child,
    log: PathBuf,
}

impl WorkerProcess {
    /// Starts a worker on `url` and waits until it runs.
    fn start(url: &str, dir: &Path, name: &str) -> anyhow::Result<WorkerProcess> {
        let log = dir.join(format!("worker-{name}.log"));
        let child = Command::new(std::env::current_exe()?)
            .args(["--database", url, "--data-dir"])
            .arg(dir)
            .args(["worker", "--queues", QUEUES, "--concurrency", "1"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .spawn()
            .context("cannot start squadron worker")?;
        let worker = WorkerProcess { child, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&worker.log).unwrap_or_default().contains("worker started") {
            if Instant::now() > deadline {
                bail!("the worker did not start:\n{}", worker.tail());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(worker)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The end of its log, to explain a failure.
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Peak resident memory so far (VmHWM), in MiB.
    fn peak_rss_mib(&self) -> anyhow::Result<f64> {
        super::peak_rss_mib(self.pid())
    }

    fn signal(&self, name: &str) -> anyhow::Result<()> {
        Command::new("kill").args([&format!("-{name}"), &self.pid().to_string()]).status()?;
        Ok(())
    }

    /// SIGTERMs it and waits for it to exit 0.
    fn stop(mut self) -> anyhow::Result<()> {
        self.signal("TERM")?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the worker exited with {status}:\n{}", self.tail());
        }
        Ok(())
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Copies the report into the blob store.
async fn store_report(blobs: &BlobStore, report: &Path) -> anyhow::Result<Blob> {
    let mut file = tokio::fs::File::open(report).await.with_context(|| format!("cannot open {}", report.display()))?;
    let mut writer = blobs.writer()?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buf).await?;
        if read == 0 {
            break;
        }
        writer.write(&buf[..read]).await?;
    }
    Ok(writer.finish().await?)
}

/// The size of the report: the file's, or its `test_result.xml`'s for an
/// archive (extracted and counted, not kept).
async fn report_bytes(report: &Path) -> anyhow::Result<u64> {
    let path = report.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = File::open(&path)?;
        let mut head = [0u8; 512];
        let read = file.read(&mut head)?;
        match detect_format(&head[..read]) {
            Some(Format::Zip | Format::TarGz | Format::TarXz) => {
                file.seek(SeekFrom::Start(0))?;
                let mut counted = Counted(0);
                extract_test_result(&mut file, &mut counted, &Limits::default())?;
                Ok(counted.0)
            }
            _ => Ok(std::fs::metadata(&path)?.len()),
        }
    })
    .await?
}

/// A writer that only counts.
struct Counted(u64);

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The attachment's name: the report's own for an XML, else the archive's.
fn attachment_name(report: &Path) -> String {
    let name = report.file_name().and_then(|n| n.to_str()).unwrap_or("results.tar.xz");
    if name.ends_with(".xml") {
        "test_result.xml".to_string()
    } else {
        name.to_string()
    }
}

/// A task's `(lease_owner, checkpoint, releases, state)`.
type TaskState = (Option<String>, Option<String>, i64, String);

/// One scratch database with project `bench/tradefed`.
struct Bench {
    store: Store,
    url: String,
    project: i64,
    blobs: BlobStore,
    attachment: (String, Blob),
}

impl Bench {
    /// Submits a run of the report into build `version`, as `/api/submit`
    /// does: the publication holds the run for its plugins and enqueues
    /// their tasks and the build's status update. Returns the run's id.
    async fn submit(&self, version: &str) -> anyhow::Result<i64> {
        let queue = Queue::default();
        let submission = Submission {
            project_id: self.project,
            build_version: version.to_string(),
            environment_slug: "android".to_string(),
            metadata: Default::default(),
            tests_file: None,
            metrics_file: None,
            log_file: None,
            attachments: vec![self.attachment.clone()],
            completed: true,
        };
        let options = IngestOptions {
            on_publish: Some(squadron_status::on_publish(queue.clone())),
            postprocess: Some(RunPostprocess {
                queue,
                plugins: vec!["tradefed".to_string()],
                task: Arc::new(|run, plugin| PostprocessRun::task(run, plugin, None)),
            }),
            ..Default::default()
        };
        Ok(self.store.ingest(&self.blobs, &submission, options).await?)
    }

    async fn count(&self, sql: String) -> anyhow::Result<i64> {
        Ok(self.store.fetch_count(&Sql::new(&sql)).await?)
    }

    /// Fails if a task failed (the plugin's error, say).
    async fn check_no_failure(&self, worker: &WorkerProcess) -> anyhow::Result<()> {
        let failed: Vec<(String, Option<String>)> = self
            .store
            .fetch_all(&Sql::new("SELECT kind, last_error FROM tasks WHERE state IN ('failed', 'retryable')"))
            .await?;
        if let Some((kind, error)) = failed.first() {
            bail!("task {kind} failed: {}\n{}", error.as_deref().unwrap_or(""), worker.tail());
        }
        Ok(())
    }

    /// Waits until the run's plugin is done (no `pending_postprocess` row
    /// left: every test and the status rows stored) and then until its
    /// build is finished; returns both times since `started`.
    async fn wait_stored(
        &self,
        run: i64,
        started: Instant,
        worker: &WorkerProcess,
    ) -> anyhow::Result<(Duration, Duration)> {
        let deadline = started + Duration::from_secs(3600);
        let pending = format!("SELECT COUNT(*) FROM pending_postprocess WHERE testrun_id = {run}");
        let mut polls = 0u64;
        while self.count(pending.clone()).await? > 0 {
            polls += 1;
            if polls.is_multiple_of(50) {
                self.check_no_failure(worker).await?;
            }
            if Instant::now() > deadline {
                bail!("the run was not post-processed within an hour:\n{}", worker.tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stored = started.elapsed();
        let finished = format!(
            "SELECT COUNT(*) FROM build_status s JOIN testruns r ON r.build_id = s.build_id \
             WHERE r.id = {run} AND s.finished"
        );
        while self.count(finished.clone()).await? == 0 {
            if Instant::now() > deadline {
                bail!("the build did not finish:\n{}", worker.tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.check_no_failure(worker).await?;
        Ok((stored, started.elapsed()))
    }

    /// One submission drained by a fresh worker; prints its figures and
    /// returns the number of tests stored.
    async fn measure(&self, dir: &Path, engine: &str, label: &str, report_mb: f64) -> anyhow::Result<i64> {
        let worker = WorkerProcess::start(&self.url, dir, &format!("{engine}-{label}"))?;
        let started = Instant::now();
        let run = self.submit(label).await?;
        let (stored, finished) = self.wait_stored(run, started, &worker).await?;
        let rss = worker.peak_rss_mib()?;
        worker.stop()?;
        let tests = self.count(format!("SELECT COUNT(*) FROM tests WHERE test_run_id = {run}")).await?;
        let secs = stored.as_secs_f64();
        println!(
            "{engine:<8} {label:<6} {tests:>9} tests {report_mb:>7.1} MB  stored in {secs:>7.2} s: {:>7.0} tests/s \
             {:>6.1} MB/s  (build finished after {:.2} s)  worker peak RSS {rss:.1} MiB",
            tests as f64 / secs,
            report_mb / secs,
            finished.as_secs_f64(),
        );
        Ok(tests)
    }

    /// The post-processing task's `(lease_owner, checkpoint, releases, state)`.
    async fn task_state(&self, run: i64) -> anyhow::Result<TaskState> {
        let mut sql = Sql::new(
            "SELECT lease_owner, checkpoint, CAST(releases AS BIGINT), state FROM tasks \
             WHERE kind = 'ci_postprocess' AND unique_key = ",
        );
        sql.bind(format!("postprocess:{run}:tradefed"));
        self.store.fetch_optional(&sql).await?.context("the post-processing task is gone")
    }

    /// A worker SIGTERMed in the middle of the task, another one waiting:
    /// prints the time from the signal to the first worker's exit and to
    /// the next step committed by the other one.
    async fn handover(&self, dir: &Path, engine: &str, expected: i64) -> anyhow::Result<()> {
        let first = WorkerProcess::start(&self.url, dir, &format!("{engine}-handover-1"))?;
        let run = self.submit("handover").await?;
        // Let the first worker commit a few steps, and time them.
        let owner = format!(":{}:", first.pid());
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut seen: Vec<(Instant, Option<String>)> = Vec::new();
        while seen.len() < 4 {
            let (lease, checkpoint, _, state) = self.task_state(run).await?;
            if state == "completed" {
                bail!("the report is too small for the hand-over: the task ended within four steps");
            }
            if lease.is_some_and(|l| l.contains(&owner))
                && seen.last().is_none_or(|(_, c)| *c != checkpoint)
                && checkpoint.is_some()
            {
                seen.push((Instant::now(), checkpoint));
            }
            if Instant::now() > deadline {
                bail!("the first worker committed no steps:\n{}", first.tail());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let step = (seen[3].0 - seen[1].0) / 2;
        let second = WorkerProcess::start(&self.url, dir, &format!("{engine}-handover-2"))?;
        // Mid-step: half a step after the first worker's next commit.
        let last = self.task_state(run).await?.1;
        while self.task_state(run).await?.1 == last {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(step / 2).await;
        let mut first = first;
        let sent = Instant::now();
        first.signal("TERM")?;
        let (mut exited, mut resumed) = (None, None);
        let mut handed_back: Option<Option<String>> = None;
        while exited.is_none() || resumed.is_none() {
            if exited.is_none() {
                if let Some(status) = first.child.try_wait()? {
                    if !status.success() {
                        bail!("the SIGTERMed worker exited with {status}:\n{}", first.tail());
                    }
                    exited = Some(sent.elapsed());
                }
            }
            let (_, checkpoint, releases, _) = self.task_state(run).await?;
            match &handed_back {
                None if releases > 0 => handed_back = Some(checkpoint),
                Some(at) if resumed.is_none() && *at != checkpoint => resumed = Some(sent.elapsed()),
                _ => {}
            }
            if sent.elapsed() > Duration::from_secs(120) {
                bail!("no hand-over within 2 minutes:\n{}\n{}", first.tail(), second.tail());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (stored, _) = self.wait_stored(run, sent, &second).await?;
        second.stop()?;
        let tests = self.count(format!("SELECT COUNT(*) FROM tests WHERE test_run_id = {run}")).await?;
        if tests != expected {
            bail!("the handed-over run has {tests} tests instead of {expected}");
        }
        let ms = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        println!(
            "{engine:<8} SIGTERM hand-over (steps of {:.0} ms): SIGTERM → worker exit {:.0} ms, \
             → next step committed by the other worker {:.0} ms; run stored {:.1} s after the signal, {tests} tests",
            step.as_secs_f64() * 1000.0,
            ms(exited),
            ms(resumed),
            stored.as_secs_f64(),
        );
        Ok(())
    }
}

async fn bench_engine(
    engine: Engines,
    args: &PluginsArgs,
    dir: &Path,
    blobs: &BlobStore,
    attachment: &(String, Blob),
    report_mb: f64,
) -> anyhow::Result<()> {
    let name = engine.name();
    let scratch = Scratch::new(engine, dir, &args.postgres).await?;
    let store = Store::open(&scratch.url, Migrations::Apply).await?;
    let group = store.create_group("bench", None).await?;
    let project = store
        .create_project(NewProject {
            group_id: group.id,
            slug: "tradefed",
            is_public: true,
            enabled_plugins_list: Some("tradefed"),
            ..Default::default()
        })
        .await?;
    let bench = Bench {
        store,
        url: scratch.url.clone(),
        project: project.id,
        blobs: blobs.clone(),
        attachment: attachment.clone(),
    };
    let outcome = async {
        let first = bench.measure(dir, name, "first", report_mb).await?;
        if !args.first_only {
            let repeat = bench.measure(dir, name, "repeat", report_mb).await?;
            if first != repeat {
                bail!("the repeat build has {repeat} tests, the first {first}");
            }
        }
        if !args.no_handover {
            bench.handover(dir, name, first).await?;
        }
        Ok(())
    }
    .await;
    bench.store.close().await;
    scratch.drop().await?;
    outcome
}

/// `squadron bench plugins`.
pub async fn run(args: &PluginsArgs) -> anyhow::Result<()> {
    let temporary = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temporary.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let blobs = BlobStore::open(dir.join("blobs"))?;
    let copied = Instant::now();
    let blob = store_report(&blobs, &args.report).await?;
    let copied = copied.elapsed();
    let report_mb = report_bytes(&args.report).await? as f64 / 1e6;
    println!(
        "squadron bench plugins: tradefed on {} ({:.1} MB, {report_mb:.1} MB of XML; copied into the blob store \
         in {:.1} s); one `squadron worker` process; times from the submission to the run stored",
        args.report.display(),
        blob.length as f64 / 1e6,
        copied.as_secs_f64(),
    );
    let attachment = (attachment_name(&args.report), blob);
    for engine in args.engine.selected() {
        bench_engine(engine, args, &dir, &blobs, &attachment, report_mb).await?;
    }
    Ok(())
}
