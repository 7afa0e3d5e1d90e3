//! `squadron bench ci`: test jobs per second through the whole CI pipeline
//! (submit → fetch → ingest → finish → build status) on PostgreSQL, run by
//! 1 and 3 real `squadron worker` processes on the fake lab, and the time
//! from a job finishing in the lab to its results being visible.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::Args;
use squadron_ci::jobs::{self, NewJob};
use squadron_queue::Queue;
use squadron_store::projects::NewProject;
use squadron_store::sql::Sql;
use squadron_store::{Migrations, Store};

use super::{Engines, Scratch};

#[derive(Debug, Args)]
pub struct CiArgs {
    /// Test jobs per run (ten per build).
    #[arg(long, default_value_t = 1000)]
    pub jobs: i64,
    /// Tests in each job's results.
    #[arg(long, default_value_t = 100)]
    pub tests: i64,
    /// How long each job runs in the fake lab.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub runtime: Duration,
    /// The fake backend's poll interval (how often a running job is asked).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// Numbers of worker processes.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub workers: Vec<usize>,
    /// Also run `squadron listener`, which makes a job's fetch due as soon
    /// as the lab reports it over (use with a long --poll-interval).
    #[arg(long)]
    pub listener: bool,
    /// Tasks each worker runs at once per queue.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// PostgreSQL server on which a scratch database is created and dropped.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub postgres: String,
}

/// Creates the project, the fake backend and `args.jobs` submitted jobs.
async fn prepare(store: &Store, args: &CiArgs) -> anyhow::Result<()> {
    let group = store.create_group("bench", None).await?;
    let project = store
        .create_project(NewProject { group_id: group.id, slug: "ci", is_public: true, ..Default::default() })
        .await?;
    let mut backend =
        Sql::new("INSERT INTO backends (name, url, implementation_type, poll_interval) VALUES ('lab', 'x', 'fake', ");
    backend.bind(args.poll_interval.as_secs().max(1) as i64).push(") RETURNING id");
    let backend: Vec<(i64,)> = store.fetch_all(&backend).await?;
    let definition = format!(
        "tests: {}\nfailures: 1\nsuites: 5\nruntime: {}s\nlog_lines: 100\n",
        args.tests,
        args.runtime.as_secs()
    );
    let now = Utc::now();
    for b in 0..(args.jobs + 9) / 10 {
        let mut build = Sql::new("INSERT INTO builds (project_id, version, created_at, datetime) VALUES (");
        build
            .bind(project.id)
            .push(", ")
            .bind(format!("v{b}"))
            .push(", ")
            .bind(now)
            .push(", ")
            .bind(now)
            .push(") RETURNING id");
        let build: Vec<(i64,)> = store.fetch_all(&build).await?;
        let mut tx = store.begin_write().await?;
        for j in 0..10.min(args.jobs - b * 10) {
            let definition = format!("{definition}seed: {j}\n");
            let job = NewJob {
                backend_id: backend[0].0,
                project_id: project.id,
                build_id: build[0].0,
                environment: "qemu",
                definition: Some(&definition),
                job_id: None,
                parent_job_id: None,
                resubmitted_count: 0,
            };
            jobs::submit_new(&mut tx, &Queue::default(), &job).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Starts `squadron <command>` on the scratch database.
fn spawn(url: &str, data: &std::path::Path, command: &[&str]) -> anyhow::Result<Child> {
    Command::new(std::env::current_exe()?)
        .args(["--database", url, "--data-dir"])
        .arg(data)
        .args(command)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start squadron {command:?}"))
}

/// Median and 95th percentile.
fn percentiles(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values.get(((values.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0);
    (at(0.5), at(0.95))
}

/// One run with `workers` worker processes; prints its figures.
async fn run_once(args: &CiArgs, workers: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let scratch = Scratch::new(Engines::Postgres, dir.path(), &args.postgres).await?;
    let store = Store::open(&scratch.url, Migrations::Apply).await?;
    prepare(&store, args).await?;
    let started = Instant::now();
    let concurrency = args.concurrency.to_string();
    let mut children: Vec<Child> = (0..workers)
        .map(|_| spawn(&scratch.url, dir.path(), &["worker", "--concurrency", &concurrency]))
        .collect::<Result<_, _>>()?;
    if args.listener {
        children.push(spawn(&scratch.url, dir.path(), &["listener"])?);
    }
    let builds = (args.jobs + 9) / 10;
    let done = Sql::new(
        "SELECT (SELECT COUNT(*) FROM testjobs WHERE job_status = 'Complete') + \
         (SELECT COUNT(*) FROM build_status WHERE finished)",
    );
    let deadline = started + Duration::from_secs(600);
    while store.fetch_count(&done).await? < args.jobs + builds {
        if Instant::now() > deadline {
            bail!("the pipeline did not finish within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    for child in &mut children {
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
        child.wait()?;
    }
    let rows: Vec<(String, DateTime<Utc>)> =
        store.fetch_all(&Sql::new("SELECT job_id, fetched_at FROM testjobs")).await?;
    let latencies: Vec<f64> = rows
        .iter()
        .filter_map(|(job_id, fetched)| {
            let submitted = DateTime::from_timestamp_millis(job_id.split('-').next()?.parse().ok()?)?;
            let ended = submitted + chrono::Duration::from_std(args.runtime).ok()?;
            Some((*fetched - ended).num_milliseconds() as f64 / 1000.0)
        })
        .collect();
    let (median, p95) = percentiles(latencies);
    println!(
        "postgres  {workers} worker(s): {} jobs ({} tests each) in {:.1} s: {:.1} jobs/s, {:.0} tests/s; \
         lab end → results visible ({}): median {median:.2} s, p95 {p95:.2} s",
        args.jobs,
        args.tests,
        elapsed.as_secs_f64(),
        args.jobs as f64 / elapsed.as_secs_f64(),
        (args.jobs * args.tests) as f64 / elapsed.as_secs_f64(),
        if args.listener {
            format!("listener, polling every {:?}", args.poll_interval)
        } else {
            format!("polling every {:?}", args.poll_interval)
        },
    );
    store.close().await;
    scratch.drop().await
}

/// Runs the benchmark for each number of workers.
pub async fn run(args: &CiArgs) -> anyhow::Result<()> {
    for &workers in &args.workers {
        run_once(args, workers).await?;
    }
    Ok(())
}
