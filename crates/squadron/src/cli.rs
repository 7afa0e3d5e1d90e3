//! Command-line arguments, environment variables, and opening the database
//! they name.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use squadron_queue::admin::Retention;
use squadron_queue::Routes;
use squadron_status::notify::{MailSettings, Site};
use squadron_store::blob::BlobStore;
use squadron_store::retention::{RetentionOptions, DEFAULT_BATCH_ROWS};
use squadron_store::{redact_url, Migrations, Store};

use crate::admin::AdminCommand;
use crate::bench::BenchCommand;
use crate::queue::QueueCommand;

/// squadron: test results and CI results pipeline, compatible with SQUAD.
#[derive(Debug, Parser)]
#[command(name = "squadron", version, about)]
pub struct Cli {
    /// The database: sqlite://PATH or postgres://USER@HOST/DB. Without it,
    /// the embedded SQLite database in the data directory is used (and
    /// migrated as needed).
    #[arg(long, global = true, env = "SQUADRON_DATABASE_URL")]
    pub database: Option<String>,

    /// With --database, apply pending migrations before running the command
    /// (otherwise a database with pending migrations is refused).
    #[arg(long, global = true)]
    pub migrate: bool,

    /// Where the embedded database and the blobs (logs, attachments, submitted files) live.
    #[arg(long, global = true, env = "SQUADRON_DATA_DIR", default_value = "squadron-data")]
    pub data_dir: PathBuf,

    /// Connections this process keeps to PostgreSQL at most (many worker
    /// pods share the server's max_connections).
    #[arg(long, global = true, env = "SQUADRON_DB_MAX_CONNECTIONS", default_value_t = squadron_store::DEFAULT_POSTGRES_CONNECTIONS)]
    pub db_max_connections: u32,

    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, global = true, env = "SQUADRON_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub queue: QueueOptions,

    #[command(flatten)]
    pub mail: MailOptions,

    #[command(flatten)]
    pub retention: RetentionArgs,

    #[command(flatten)]
    pub ci: CiOptions,

    #[command(subcommand)]
    pub command: Command,
}

/// How the task queue is configured; every command that enqueues, runs or
/// shows tasks reads the same options.
#[derive(Debug, Args)]
pub struct QueueOptions {
    /// Run a kind of task on another queue than its default: KIND=QUEUE
    /// (repeatable, or comma-separated in the variable).
    #[arg(long = "route", global = true, env = "SQUADRON_QUEUE_ROUTES", value_delimiter = ',', value_parser = parse_route)]
    pub routes: Vec<(String, String)>,

    /// How long a worker holds a task between lease renewals (renewed
    /// every third of it): how soon another worker takes over the tasks of
    /// a worker that died.
    #[arg(long, global = true, env = "SQUADRON_QUEUE_LEASE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease: Duration,

    /// How long completed and cancelled tasks are kept.
    #[arg(long, global = true, env = "SQUADRON_KEEP_COMPLETED_TASKS", default_value = "24h", value_parser = humantime::parse_duration)]
    pub keep_completed: Duration,

    /// How long failed tasks are kept.
    #[arg(long, global = true, env = "SQUADRON_KEEP_FAILED_TASKS", default_value = "7days", value_parser = humantime::parse_duration)]
    pub keep_failed: Duration,
}

fn parse_route(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((kind, queue)) if !kind.trim().is_empty() && !queue.trim().is_empty() => {
            Ok((kind.trim().to_string(), queue.trim().to_string()))
        }
        _ => Err(format!("{raw:?} is not KIND=QUEUE")),
    }
}

impl QueueOptions {
    /// The configured routes.
    pub fn routes(&self) -> Routes {
        Routes::new(self.routes.iter().cloned().collect::<BTreeMap<_, _>>())
    }

    /// How long finished tasks are kept.
    pub fn retention(&self) -> Retention {
        Retention { completed: self.keep_completed, failed: self.keep_failed }
    }
}

/// How the CI pipeline talks to labs.
#[derive(Debug, Args)]
pub struct CiOptions {
    /// How long a job submission that failed for a temporary reason (the
    /// lab down, a timeout) waits before it is tried again; it is tried
    /// three more times (SQUAD: an hour).
    #[arg(long, global = true, env = "SQUADRON_CI_SUBMIT_RETRY", default_value = "1h", value_parser = humantime::parse_duration)]
    pub ci_submit_retry: Duration,
}

/// Where notifications are sent from and what they link to. The variables
/// are SQUAD's, so an existing deployment's settings carry over.
#[derive(Debug, Args)]
pub struct MailOptions {
    /// The base of absolute URLs (e.g. https://squad.example.com): in
    /// emails, and in API answers instead of the scheme and host the client
    /// used.
    #[arg(long, global = true, env = "SQUADRON_BASE_URL")]
    pub base_url: Option<String>,

    /// The site's name: the sender's name and the signature of emails.
    #[arg(long, global = true, env = "SQUAD_SITE_NAME", default_value = "squadron")]
    pub site_name: String,

    /// The SMTP server notifications are sent through.
    #[arg(long, global = true, env = "SQUAD_EMAIL_HOST", default_value = "localhost")]
    pub smtp_host: String,

    /// Its port.
    #[arg(long, global = true, env = "SQUAD_EMAIL_PORT", default_value_t = 25)]
    pub smtp_port: u16,

    /// The sender's address.
    #[arg(long, global = true, env = "SQUAD_EMAIL_FROM", default_value = "noreply@localhost")]
    pub email_from: String,
}

impl MailOptions {
    /// The mail settings (links default to http://localhost:8000).
    pub fn settings(&self) -> MailSettings {
        let base_url = self.base_url.as_deref().unwrap_or("http://localhost:8000").trim_end_matches('/');
        MailSettings {
            smtp_host: self.smtp_host.clone(),
            smtp_port: self.smtp_port,
            from: self.email_from.clone(),
            site: Site { name: self.site_name.clone(), base_url: base_url.to_string() },
        }
    }
}

/// How data retention deletes expired builds and sweeps blobs.
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// How long a blob file must have gone unwritten before the blob sweep
    /// may remove it when no row refers to it: longer than any upload takes
    /// between writing a file and storing its test run.
    #[arg(long, global = true, env = "SQUADRON_BLOB_GRACE", default_value = "24h", value_parser = humantime::parse_duration)]
    pub blob_grace: Duration,

    /// Rows (tests or metrics) one transaction of a build deletion deletes
    /// at most.
    #[arg(long, global = true, env = "SQUADRON_CLEANUP_BATCH_ROWS", default_value_t = DEFAULT_BATCH_ROWS as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub cleanup_batch_rows: u32,
}

impl RetentionArgs {
    /// The retention options.
    pub fn options(&self) -> RetentionOptions {
        RetentionOptions { batch_rows: self.cleanup_batch_rows as usize, blob_grace: self.blob_grace }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API, workers for every queue, the periodic scheduler and the labs' event listener.
    Serve(ServeArgs),
    /// Run tasks from some or all queues until SIGTERM or SIGINT.
    Worker(WorkerArgs),
    /// Enqueue periodic tasks as their periods start (safe to run twice).
    Scheduler,
    /// Follow the labs' job events (backends with listen_enabled) and
    /// fetch a job's results as soon as it is over.
    Listener,
    /// Look at the task queue, retry or cancel a task.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Apply pending database migrations.
    Migrate,
    /// Manage users, tokens, groups and projects.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Measure performance (see docs/performance.md).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SQUADRON_BIND", default_value = "127.0.0.1:8000")]
    pub bind: String,

    /// Largest accepted request body, in bytes (larger uploads get 413).
    #[arg(long, env = "SQUADRON_MAX_UPLOAD_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub max_upload_bytes: u64,

    #[command(flatten)]
    pub work: WorkOptions,
}

/// How a worker runs its tasks.
#[derive(Debug, Args)]
pub struct WorkOptions {
    /// How many tasks of each queue run at once.
    #[arg(long, env = "SQUADRON_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// On SIGTERM or SIGINT, how long running tasks get to reach a step
    /// boundary before they are handed back anyway (a second signal hands
    /// them back at once).
    #[arg(long, env = "SQUADRON_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The queues to serve (comma-separated); every queue when absent.
    #[arg(long, env = "SQUADRON_QUEUES", value_delimiter = ',')]
    pub queues: Vec<String>,

    #[command(flatten)]
    pub work: WorkOptions,

    /// Serve /metrics, /healthz and /readyz on this address.
    #[arg(long, env = "SQUADRON_METRICS_BIND")]
    pub metrics_bind: Option<String>,
}

/// Sets up logging to standard error (`RUST_LOG` filters; default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

impl Cli {
    fn embedded_url(&self) -> String {
        format!("sqlite://{}", self.data_dir.join("squadron.db").display())
    }

    /// Opens the database. The embedded default is migrated first; an
    /// explicit one only with `--migrate` (or by `squadron migrate`).
    pub async fn open_store(&self) -> anyhow::Result<Store> {
        let (url, migrations) = match &self.database {
            None => (self.embedded_url(), Migrations::Apply),
            Some(url) if self.migrate => (url.clone(), Migrations::Apply),
            Some(url) => (url.clone(), Migrations::Require),
        };
        Store::open_sized(&url, migrations, self.db_max_connections)
            .await
            .with_context(|| format!("cannot open the database {}", redact_url(&url)))
    }

    /// Opens the blob store in the data directory.
    pub fn open_blobs(&self) -> anyhow::Result<BlobStore> {
        let dir = self.data_dir.join("blobs");
        BlobStore::open(&dir).with_context(|| format!("cannot open the blob store in {}", dir.display()))
    }

    /// The data directory, for messages.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// `squadron migrate`.
pub async fn migrate(cli: &Cli) -> anyhow::Result<()> {
    let url = cli.database.clone().unwrap_or_else(|| cli.embedded_url());
    let store = Store::connect(&url).await.with_context(|| format!("cannot open the database {}", redact_url(&url)))?;
    let applied = store.migrate().await.with_context(|| format!("cannot migrate {}", redact_url(&url)))?;
    println!("applied {applied} migration(s); the database {} is up to date", store.url());
    Ok(())
}
