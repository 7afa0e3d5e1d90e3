//! `squadron serve`: the HTTP API, workers for every queue, the periodic
//! scheduler and the labs' event listener in one process, until SIGTERM or
//! SIGINT.
use std::sync::Arc;

use anyhow::Context;
use squadron_ci::Backends;
use squadron_queue::{Metrics, Queue, Shutdown};
use squadron_web::{router, AppState, WebConfig};
use tracing::info;

use crate::cli::{Cli, ServeArgs};
use crate::work;

pub async fn serve(cli: &Cli, args: &ServeArgs) -> anyhow::Result<()> {
    let store = cli.open_store().await?;
    let blobs = cli.open_blobs()?;
    let metrics = Metrics::default();
    let (worker, _) = work::worker(&store, cli, &args.work, &[], metrics.clone())?;
    let state = AppState {
        store: store.clone(),
        blobs,
        config: Arc::new(WebConfig {
            max_upload_bytes: args.max_upload_bytes,
            base_url: cli.mail.base_url.clone(),
            site_name: cli.mail.site_name.clone(),
        }),
        queue: Queue::new(cli.queue.routes()),
        metrics,
        plugins: squadron_plugins::Plugins::builtin(),
        backends: Backends::new(cli.data_dir()),
    };
    let listener =
        tokio::net::TcpListener::bind(&args.bind).await.with_context(|| format!("cannot listen on {}", args.bind))?;
    info!(
        "squadron listening on http://{} (database {}, data in {})",
        listener.local_addr()?,
        store.url(),
        cli.data_dir().display()
    );
    let shutdown = Shutdown::new();
    work::forward_signals(shutdown.clone());
    let scheduler = tokio::spawn(work::scheduler(store.queue_db(), &cli.queue).run(shutdown.clone()));
    let workers = tokio::spawn(work::run_worker(worker, shutdown.clone()));
    let events = work::listener(&store, cli);
    let listening = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { events.run(shutdown).await }
    });
    let web_shutdown = shutdown.clone();
    axum::serve(listener, router(state)).with_graceful_shutdown(async move { web_shutdown.signalled().await }).await?;
    workers.await.context("the workers panicked")??;
    scheduler.await.context("the scheduler panicked")?;
    listening.await.context("the listener panicked")?.context("the listener failed")?;
    let stats = store.write_stats();
    info!(
        write_transactions = stats.transactions,
        longest_write_hold_ms = stats.longest_hold.as_secs_f64() * 1000.0,
        "squadron stopped"
    );
    store.close().await;
    Ok(())
}
