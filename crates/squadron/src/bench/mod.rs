//! `squadron bench …`: measurements printed as tables (see
//! docs/performance.md).

mod ci;
mod ingest;
mod plugins;
mod queue;

use std::path::Path;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use squadron_store::Store;

pub use ingest::IngestArgs;
pub use queue::QueueArgs;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Ingestion throughput through HTTP, and its raw ceiling.
    Ingest(IngestArgs),
    /// Task queue throughput and latency beside raw SQL loops and Celery.
    Queue(QueueArgs),
    /// Test jobs per second through the CI pipeline, and results latency.
    Ci(ci::CiArgs),
    /// The tradefed plugin end to end: a submitted report drained by real
    /// workers, and the hand-over of its task on SIGTERM.
    Plugins(plugins::PluginsArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Engines {
    Sqlite,
    Postgres,
    Both,
}

impl Engines {
    /// The engines this selects, SQLite first.
    fn selected(self) -> Vec<Engines> {
        [Engines::Sqlite, Engines::Postgres].into_iter().filter(|e| self == *e || self == Engines::Both).collect()
    }

    fn name(self) -> &'static str {
        match self {
            Engines::Sqlite => "sqlite",
            Engines::Postgres => "postgres",
            Engines::Both => "both",
        }
    }
}

/// A scratch database, dropped at the end for PostgreSQL.
struct Scratch {
    url: String,
    postgres: Option<(String, String)>,
}

impl Scratch {
    async fn new(engine: Engines, dir: &Path, admin_url: &str) -> anyhow::Result<Scratch> {
        if engine == Engines::Sqlite {
            let file = dir.join(format!("bench-{}.db", uuid::Uuid::new_v4().simple()));
            return Ok(Scratch { url: format!("sqlite://{}", file.display()), postgres: None });
        }
        let name = format!("squadron_bench_{}", uuid::Uuid::new_v4().simple());
        let admin = Store::connect(admin_url).await.context("connect to PostgreSQL")?;
        admin.execute_ddl(&format!("CREATE DATABASE {name}")).await?;
        admin.close().await;
        let base = admin_url.rsplit_once('/').map_or(admin_url, |(b, _)| b);
        Ok(Scratch { url: format!("{base}/{name}"), postgres: Some((admin_url.to_string(), name)) })
    }

    async fn drop(self) -> anyhow::Result<()> {
        if let Some((admin_url, name)) = self.postgres {
            let admin = Store::connect(&admin_url).await?;
            admin.execute_ddl(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
            admin.close().await;
        }
        Ok(())
    }
}

/// Runs a bench command.
pub async fn run(command: &BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ingest(args) => ingest::run(args).await,
        BenchCommand::Queue(args) => queue::run(args).await,
        BenchCommand::Ci(args) => ci::run(args).await,
        BenchCommand::Plugins(args) => plugins::run(args).await,
    }
}

/// The peak resident memory (VmHWM) of process `pid` so far, in MiB.
pub(crate) fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    use anyhow::Context;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmHWM")?;
    Ok(kib / 1024.0)
}
