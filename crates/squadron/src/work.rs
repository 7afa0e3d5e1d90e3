//! Running tasks: `squadron worker`, `squadron scheduler`, and the same
//! inside `serve`. Wires the task kinds of every component to the queue.

use std::sync::Arc;

use anyhow::{bail, Context};
use squadron_ci::{Backends, CancelJob, Ci, FetchJob, FinishJob, Listener, PollBackends, PostprocessRun, SubmitJob};
use squadron_plugins::Plugins;
use squadron_queue::admin::{PruneFinished, Pruning};
use squadron_queue::{
    default_owner, register_test_kinds, Metrics, NewTask, Periodic, Queue, QueueDb, Registry, Scheduler, Shutdown,
    Timing, Worker, WorkerConfig,
};
use squadron_status::notify::{
    Mailer, NotificationTimeout, NotifyBuild, Notifying, PrepareReport, RemoveDelayedReports, SendReportCallback,
    SendReportEmail,
};
use squadron_status::patches::{NotifyPatchSource, Patching};
use squadron_status::{
    Delivering, ReapplyKnownIssues, ReconcileBuildStatus, SendBuildCallbacks, StatusContext, UpdateBuildStatus,
};
use squadron_store::blob::BlobStore;
use squadron_store::maintenance::SweepHiddenRuns;
use squadron_store::retention::{CleanupBuild, CleanupOldBuilds, DataRetention, SweepBlobs};
use squadron_store::Store;
use squadron_web::{ops_router, Ops};
use tracing::{info, warn};

use crate::cli::{Cli, QueueOptions, WorkOptions, WorkerArgs};

/// Every task kind this binary runs, with what its handler needs.
pub fn registry(store: &Store, blobs: &BlobStore, cli: &Cli, owner: &str) -> anyhow::Result<Registry> {
    let (options, mail) = (&cli.queue, &cli.mail);
    let mut registry = Registry::new();
    registry.register::<SweepHiddenRuns>(Arc::new(store.clone()));
    let retention = Arc::new(DataRetention {
        store: store.clone(),
        blobs: blobs.clone(),
        queue: Queue::new(options.routes()),
        options: cli.retention.options(),
    });
    registry.register::<CleanupOldBuilds>(retention.clone());
    registry.register::<CleanupBuild>(retention.clone());
    registry.register::<SweepBlobs>(retention);
    registry.register::<PruneFinished>(Arc::new(Pruning { db: store.queue_db(), retention: options.retention() }));
    let status = Arc::new(StatusContext { store: store.clone(), queue: Queue::new(options.routes()) });
    registry.register::<UpdateBuildStatus>(status.clone());
    registry.register::<ReconcileBuildStatus>(status.clone());
    registry.register::<ReapplyKnownIssues>(status);
    registry.register::<RemoveDelayedReports>(Arc::new(store.clone()));
    let delivering = Arc::new(Delivering::new(store.clone()));
    registry.register::<SendBuildCallbacks>(delivering.clone());
    registry.register::<SendReportCallback>(delivering);
    let settings = mail.settings();
    registry.register::<NotifyPatchSource>(Arc::new(Patching::new(store.clone(), settings.site.clone())));
    let mailer = Mailer::new(settings).context("cannot set up email")?;
    let notifying = Arc::new(Notifying { store: store.clone(), queue: Queue::new(options.routes()), mailer });
    registry.register::<NotifyBuild>(notifying.clone());
    registry.register::<NotificationTimeout>(notifying.clone());
    registry.register::<PrepareReport>(notifying.clone());
    registry.register::<SendReportEmail>(notifying);
    let ci = Arc::new(Ci {
        store: store.clone(),
        blobs: blobs.clone(),
        queue: Queue::new(options.routes()),
        backends: Backends::new(cli.data_dir()),
        plugins: Plugins::builtin(),
        base_url: instance_base(cli.mail.base_url.as_deref()),
        submit_retry_delay: cli.ci.ci_submit_retry,
    });
    registry.register::<SubmitJob>(ci.clone());
    registry.register::<PollBackends>(ci.clone());
    registry.register::<FetchJob>(ci.clone());
    registry.register::<PostprocessRun>(ci.clone());
    registry.register::<FinishJob>(ci.clone());
    registry.register::<CancelJob>(ci);
    if register_test_kinds(&mut registry, owner).context("cannot open the crash-test execution log")? {
        warn!("this is a test build: the crash-test task kinds are registered");
    }
    Ok(registry)
}

/// The base URL of this instance's addresses in attached files, if
/// `SQUADRON_BASE_URL` is one; a value that is not is set aside with a
/// warning (links then start at the server's root).
fn instance_base(configured: Option<&str>) -> String {
    match configured {
        Some(base) if squadron_ci::pipeline::links::valid_base(base) => base.trim_end_matches('/').to_string(),
        Some(base) => {
            warn!(base, "SQUADRON_BASE_URL is not an http(s) URL: links in attached files start at the server's root");
            String::new()
        }
        None => String::new(),
    }
}

/// The periodic tasks: the poll of the labs for results every minute (each
/// job is asked at most once per its backend's poll interval), the sweep
/// of hidden runs left by dead writers every minute, the reconciliation of stale build statuses every five minutes,
/// the pruning of old finished tasks every ten minutes, the removal of
/// delayed reports past their retention every hour (SQUAD does it daily,
/// so its reports outlive their retention by up to a day), and, daily, data
/// retention at 03:41 UTC (SQUAD's time) and the blob sweep two hours later.
pub fn schedules() -> Vec<Periodic> {
    vec![
        Periodic::new("poll_backends", "* * * * *", NewTask::of(&PollBackends {})).expect("valid schedule"),
        Periodic::new("reconcile_build_status", "*/5 * * * *", NewTask::of(&ReconcileBuildStatus {}))
            .expect("valid schedule"),
        Periodic::new("sweep_hidden_runs", "* * * * *", NewTask::of(&SweepHiddenRuns {})).expect("valid schedule"),
        Periodic::new("prune_finished_tasks", "*/10 * * * *", NewTask::of(&PruneFinished {})).expect("valid schedule"),
        Periodic::new("remove_delayed_reports", "21 * * * *", NewTask::of(&RemoveDelayedReports {}))
            .expect("valid schedule"),
        Periodic::new("cleanup_old_builds", "41 3 * * *", NewTask::of(&CleanupOldBuilds {})).expect("valid schedule"),
        Periodic::new("sweep_blobs", "41 5 * * *", NewTask::of(&SweepBlobs {})).expect("valid schedule"),
    ]
}

/// The queues a worker serves: those named, each checked to be a known
/// queue, or every queue some task kind runs on.
fn worker_queues(named: &[String], registry: &Registry, queue: &Queue) -> anyhow::Result<Vec<String>> {
    if named.is_empty() {
        return Ok(registry.queues(queue.routes()).into_iter().collect());
    }
    let known = queue.routes().known_queues(registry.queues(queue.routes()));
    for name in named {
        if !known.contains(name) {
            bail!("no task kind runs on queue {name:?}; the queues are: {}", known.join(", "));
        }
    }
    Ok(named.to_vec())
}

/// A worker for the `named` queues (every queue when empty) as `options`
/// say, and the queues it serves.
pub fn worker(
    store: &Store,
    cli: &Cli,
    options: &WorkOptions,
    named: &[String],
    metrics: Metrics,
) -> anyhow::Result<(Worker, Vec<String>)> {
    let db = store.queue_db();
    let owner = default_owner();
    let registry = registry(store, &cli.open_blobs()?, cli, &owner)?;
    let queue = Queue::new(cli.queue.routes());
    let queues = worker_queues(named, &registry, &queue)?;
    let mut config =
        WorkerConfig::new(&db, queues.iter().map(|q| (q.clone(), usize::from(options.concurrency))).collect());
    config.owner = owner;
    config.timing = Timing::new(cli.queue.lease, Timing::default_for(&db).poll);
    config.shutdown_timeout = options.shutdown_timeout;
    Ok((Worker::new(db, queue, registry, config, metrics), queues))
}

/// Runs `worker` until `shutdown`, logging what it handed back.
pub async fn run_worker(worker: Worker, shutdown: Shutdown) -> anyhow::Result<()> {
    let report = worker.run(shutdown).await.context("the worker failed")?;
    for task in &report.released {
        info!(task = task.id, kind = %task.kind, queue = %task.queue, state = %task.state, checkpointed = task.checkpointed, "task handed back");
    }
    info!(completed = report.completed, released = report.released.len(), drained = report.drained, "worker stopped");
    Ok(())
}

/// A scheduler for this binary's periodic tasks.
pub fn scheduler(db: QueueDb, options: &QueueOptions) -> Scheduler {
    Scheduler::new(db, Queue::new(options.routes()), schedules())
}

/// Signals `shutdown` on every SIGTERM or SIGINT: the first starts a
/// graceful shutdown, the second makes it immediate.
pub fn forward_signals(shutdown: Shutdown) {
    use tokio::signal::unix::{signal, SignalKind};
    // Registered before this returns, so no signal is missed.
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            if shutdown.is_signalled() {
                info!("{name} received again: handing back every task now");
            } else {
                info!("{name} received: stopping at the next step boundary");
            }
            shutdown.signal();
        }
    });
}

/// `squadron worker`.
pub async fn worker_command(cli: &Cli, args: &WorkerArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    forward_signals(shutdown.clone());
    let store = cli.open_store().await?;
    let metrics = Metrics::default();
    let (worker, queues) = worker(&store, cli, &args.work, &args.queues, metrics.clone())?;
    if let Some(bind) = &args.metrics_bind {
        let listener = tokio::net::TcpListener::bind(bind).await.with_context(|| format!("cannot listen on {bind}"))?;
        info!("metrics on http://{}/metrics", listener.local_addr()?);
        let ops = Ops { metrics, db: store.queue_db(), queues: queues.clone() };
        tokio::spawn(async move { axum::serve(listener, ops_router(ops)).await });
    }
    run_worker(worker, shutdown).await?;
    store.close().await;
    Ok(())
}

/// `squadron scheduler`.
/// The labs' event listener.
pub fn listener(store: &Store, cli: &Cli) -> Listener {
    Listener {
        store: store.clone(),
        queue: Queue::new(cli.queue.routes()),
        backends: Backends::new(cli.data_dir()),
        reconcile_every: std::time::Duration::from_secs(60),
    }
}

/// `squadron listener`: follows the labs' events until SIGTERM or SIGINT.
pub async fn listener_command(cli: &Cli) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    forward_signals(shutdown.clone());
    let store = cli.open_store().await?;
    info!("listener started");
    listener(&store, cli).run(shutdown).await.context("the listener failed")?;
    info!("listener stopped");
    store.close().await;
    Ok(())
}

/// `squadron scheduler`: enqueues the periodic tasks until SIGTERM or SIGINT.
pub async fn scheduler_command(cli: &Cli) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    forward_signals(shutdown.clone());
    let store = cli.open_store().await?;
    info!(schedules = ?schedules().iter().map(|s| s.name().to_string()).collect::<Vec<_>>(), "scheduler started");
    scheduler(store.queue_db(), &cli.queue).run(shutdown).await;
    info!("scheduler stopped");
    store.close().await;
    Ok(())
}
