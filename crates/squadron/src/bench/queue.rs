//! `squadron bench queue`: the task queue's throughput with 1, 2 and 4
//! workers in this process, (a) with no-op tasks and (b) with tasks that
//! complete in a fenced transaction of their own, each beside a raw SQL
//! loop doing the same state changes with nothing else; batched enqueue
//! rate; enqueue-to-start latency; and, with `--celery-python`, the same
//! no-op workload on Celery 5 + RabbitMQ.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use squadron_queue::bench::{raw_loop, BenchProbe, Fenced, NoOp, RawCompletion, Timed, BENCH_QUEUE};
use squadron_queue::{Metrics, NewTask, Queue, QueueDb, Registry, Shutdown, StepTx, Worker, WorkerConfig};
use squadron_store::{Migrations, Store};

use super::{Engines, Scratch};

/// The Celery side, run by the Python given to `--celery-python`.
const CELERY_SCRIPT: &str = include_str!("../../../../scripts/celery_bench.py");

/// Tasks per enqueue transaction.
const ENQUEUE_BATCH: usize = 5000;

/// Handlers running at once per worker with no-op tasks (claims batch up
/// to the free slots).
const NOOP_CONCURRENCY: usize = 1000;

/// Handlers running at once per worker with fenced tasks: as many
/// transactions at once as the PostgreSQL pool gives one process.
const FENCED_CONCURRENCY: usize = 16;

#[derive(Debug, Args)]
pub struct QueueArgs {
    /// Tasks per no-op run (a), and enqueued to measure enqueueing.
    #[arg(long, default_value_t = 50_000)]
    pub tasks: usize,
    /// Tasks per fenced run (b).
    #[arg(long, default_value_t = 10_000)]
    pub fenced_tasks: usize,
    /// Numbers of workers (each a whole worker in this process).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub workers: Vec<usize>,
    /// Tasks enqueued one at a time to measure enqueue-to-start latency.
    #[arg(long, default_value_t = 2000)]
    pub latency_tasks: usize,
    /// Which engines to measure.
    #[arg(long, value_enum, default_value_t = Engines::Both)]
    pub engine: Engines,
    /// PostgreSQL server on which a scratch database is created and dropped.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub postgres: String,
    /// A Python with Celery 5 installed: runs the same no-op workload on
    /// Celery + RabbitMQ for comparison (skipped without it).
    #[arg(long)]
    pub celery_python: Option<PathBuf>,
    /// The RabbitMQ broker Celery uses.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672//")]
    pub broker: String,
    /// Tasks in the Celery run.
    #[arg(long, default_value_t = 20_000)]
    pub celery_tasks: usize,
}

/// Celery's figures.
struct Celery {
    enqueue_per_second: f64,
    tasks_per_second: f64,
}

fn run_celery(python: &PathBuf, args: &QueueArgs) -> anyhow::Result<Celery> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("celery_bench.py");
    std::fs::write(&script, CELERY_SCRIPT)?;
    let out = Command::new(python)
        .arg(&script)
        .args(["--tasks", &args.celery_tasks.to_string(), "--broker", &args.broker])
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !out.status.success() {
        bail!("the Celery benchmark failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> anyhow::Result<f64> {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in the Celery benchmark's output: {text}"))
    };
    Ok(Celery { enqueue_per_second: field("enqueue_per_second")?, tasks_per_second: field("tasks_per_second")? })
}

/// Enqueues `count` tasks like `task` in transactions of
/// [`ENQUEUE_BATCH`]; returns how long it took.
async fn enqueue(db: &QueueDb, task: &NewTask, count: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let queue = Queue::default();
    let mut left = count;
    while left > 0 {
        let n = left.min(ENQUEUE_BATCH);
        let mut tx = db.begin().await?;
        queue.enqueue_many(tx.conn(), &vec![task.clone(); n]).await?;
        tx.commit().await?;
        left -= n;
    }
    Ok(started.elapsed())
}

/// Empties the tasks table between runs, so each starts alike.
async fn reset(store: &Store) -> anyhow::Result<()> {
    store.execute_ddl("DELETE FROM tasks").await?;
    if store.engine_name() == "postgres" {
        store.execute_ddl("VACUUM ANALYZE tasks").await?;
    }
    Ok(())
}

/// Runs `workers` workers with `concurrency` handlers each until `count`
/// handlers started, then stops them (which flushes their completions);
/// returns how long from start to the last completion.
async fn run_workers(
    db: &QueueDb,
    probe: &Arc<BenchProbe>,
    workers: usize,
    concurrency: usize,
    count: u64,
) -> anyhow::Result<Duration> {
    let mut registry = Registry::new();
    registry.register::<NoOp>(probe.clone()).register::<Fenced>(probe.clone()).register::<Timed>(probe.clone());
    probe.started.store(0, Ordering::SeqCst);
    let shutdown = Shutdown::new();
    let started = Instant::now();
    let running: Vec<_> = (0..workers)
        .map(|_| {
            let mut config = WorkerConfig::new(db, vec![(BENCH_QUEUE.to_string(), concurrency)]);
            config.claim_batch = concurrency;
            let worker = Worker::new(db.clone(), Queue::default(), registry.clone(), config, Metrics::default());
            tokio::spawn(worker.run(shutdown.clone()))
        })
        .collect();
    while probe.started.load(Ordering::SeqCst) < count {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    shutdown.signal();
    for worker in running {
        worker.await??;
    }
    Ok(started.elapsed())
}

async fn completed(store: &Store) -> anyhow::Result<i64> {
    let db = store.queue_db();
    Ok(squadron_queue::admin::count(&db, Some("completed"), None).await?)
}

fn per_second(count: usize, took: Duration) -> f64 {
    count as f64 / took.as_secs_f64()
}

/// One row of the throughput table.
struct Row {
    workers: usize,
    noop: f64,
    raw_batched: f64,
    fenced: f64,
    raw_one_commit: f64,
}

async fn bench_engine(engine: Engines, args: &QueueArgs, celery: Option<&Celery>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let scratch = Scratch::new(engine, dir.path(), &args.postgres).await?;
    let store = Store::open(&scratch.url, Migrations::Apply).await?;
    let db = store.queue_db();
    let probe = Arc::new(BenchProbe::default());
    let n = args.tasks;

    let enqueue_took = enqueue(&db, &NewTask::of(&NoOp {}), n).await?;
    reset(&store).await?;
    let mut rows = Vec::new();
    for &workers in &args.workers {
        enqueue(&db, &NewTask::of(&NoOp {}), n).await?;
        let noop = run_workers(&db, &probe, workers, NOOP_CONCURRENCY, n as u64).await?;
        check_completed(&store, n).await?;
        reset(&store).await?;
        enqueue(&db, &NewTask::of(&NoOp {}), n).await?;
        let raw_batched = raw_loop(&db, workers, NOOP_CONCURRENCY, RawCompletion::Batched).await?;
        check_completed(&store, n).await?;
        reset(&store).await?;
        let m = args.fenced_tasks;
        enqueue(&db, &NewTask::of(&Fenced {}), m).await?;
        let fenced = run_workers(&db, &probe, workers, FENCED_CONCURRENCY, m as u64).await?;
        check_completed(&store, m).await?;
        reset(&store).await?;
        enqueue(&db, &NewTask::of(&NoOp {}), m).await?;
        let raw_one_commit = raw_loop(&db, workers, FENCED_CONCURRENCY, RawCompletion::OneCommitPerTask).await?;
        check_completed(&store, m).await?;
        reset(&store).await?;
        rows.push(Row {
            workers,
            noop: per_second(n, noop),
            raw_batched: per_second(n, raw_batched),
            fenced: per_second(m, fenced),
            raw_one_commit: per_second(m, raw_one_commit),
        });
    }
    let (p50, p99) = latency(&db, &probe, args.latency_tasks).await?;
    check_completed(&store, args.latency_tasks).await?;

    println!("\n{} ({n} tasks per no-op run, {} per fenced run)", engine.name(), args.fenced_tasks);
    println!("  batched enqueue: {:.0} tasks/s", per_second(n, enqueue_took));
    println!(
        "  {:>7}  {:>12}  {:>12}  {:>12}  {:>14}  {:>7}  {:>9}  {:>9}",
        "workers",
        "(a) no-op/s",
        "raw batched",
        "(b) fenced/s",
        "raw 1 commit/s",
        "(b)/raw",
        "(a)/Celery",
        "(b)/Celery"
    );
    for row in &rows {
        let vs_celery = |rate: f64| celery.map_or("-".to_string(), |c| format!("{:.1}x", rate / c.tasks_per_second));
        println!(
            "  {:>7}  {:>12.0}  {:>12.0}  {:>12.0}  {:>14.0}  {:>6.0}%  {:>9}  {:>9}",
            row.workers,
            row.noop,
            row.raw_batched,
            row.fenced,
            row.raw_one_commit,
            100.0 * row.fenced / row.raw_one_commit,
            vs_celery(row.noop),
            vs_celery(row.fenced),
        );
    }
    println!(
        "  enqueue-to-start latency, one worker, {} tasks enqueued one at a time: p50 {:.2} ms, p99 {:.2} ms",
        args.latency_tasks,
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0
    );
    store.close().await;
    scratch.drop().await?;
    Ok(())
}

async fn check_completed(store: &Store, expected: usize) -> anyhow::Result<()> {
    let done = completed(store).await?;
    if done != expected as i64 {
        bail!("{done} tasks completed, {expected} expected");
    }
    Ok(())
}

/// Enqueues `count` tasks one per transaction, a millisecond apart, to an
/// idle worker; returns the p50 and p99 of enqueue-to-start, µs.
async fn latency(db: &QueueDb, probe: &Arc<BenchProbe>, count: usize) -> anyhow::Result<(i64, i64)> {
    probe.latencies_us.lock().expect("latencies").clear();
    let enqueuer = {
        let db = db.clone();
        tokio::spawn(async move {
            // Let the worker start and wait first.
            tokio::time::sleep(Duration::from_millis(300)).await;
            for _ in 0..count {
                enqueue(&db, &NewTask::of(&Timed {}), 1).await?;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok::<(), anyhow::Error>(())
        })
    };
    run_workers(db, probe, 1, FENCED_CONCURRENCY, count as u64).await?;
    enqueuer.await??;
    let mut latencies = probe.latencies_us.lock().expect("latencies").clone();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Ok((at(0.50), at(0.99)))
}

/// `squadron bench queue`.
pub async fn run(args: &QueueArgs) -> anyhow::Result<()> {
    println!(
        "squadron bench queue: tasks/s with batched claims; (a) no-op tasks, completions batched; \
         (b) each task completes in a fenced transaction of its own"
    );
    let celery = match &args.celery_python {
        Some(python) => {
            let celery = run_celery(python, args)?;
            println!(
                "\nCelery 5 + RabbitMQ (prefork -c 2, prefetch 1, acks_late, ignore_result; {} tasks): \
                 {:.0} tasks/s; enqueue {:.0} tasks/s",
                args.celery_tasks, celery.tasks_per_second, celery.enqueue_per_second
            );
            Some(celery)
        }
        None => None,
    };
    for engine in args.engine.selected() {
        bench_engine(engine, args, celery.as_ref()).await?;
    }
    Ok(())
}
