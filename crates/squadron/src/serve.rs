//! `squadron serve`: the HTTP API on the embedded database or a given one,
//! until SIGTERM or SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use squadron_store::ingest::SWEEP_AFTER;
use squadron_store::Store;
use squadron_web::{router, AppState, WebConfig};
use tracing::{info, warn};

use crate::cli::{Cli, ServeArgs};

/// How often hidden runs left by dead writers are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Removes hidden runs whose writer died, now and then every minute.
async fn sweep_forever(store: Store) {
    let mut ticks = tokio::time::interval(SWEEP_EVERY);
    loop {
        ticks.tick().await;
        match store.sweep_hidden_runs(SWEEP_AFTER).await {
            Ok(0) => {}
            Ok(n) => info!(removed = n, "removed test runs left unfinished by writers that died"),
            Err(e) => warn!(error = %e, "sweeping unfinished test runs failed"),
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = interrupt => info!("SIGINT received, shutting down"),
        _ = terminate.recv() => info!("SIGTERM received, shutting down"),
    }
}

pub async fn serve(cli: &Cli, args: &ServeArgs) -> anyhow::Result<()> {
    let store = cli.open_store().await?;
    let blobs = cli.open_blobs()?;
    let sweeper = tokio::spawn(sweep_forever(store.clone()));
    let state = AppState {
        store: store.clone(),
        blobs,
        config: Arc::new(WebConfig { max_upload_bytes: args.max_upload_bytes, base_url: args.base_url.clone() }),
    };
    let listener =
        tokio::net::TcpListener::bind(&args.bind).await.with_context(|| format!("cannot listen on {}", args.bind))?;
    info!(
        "squadron listening on http://{} (database {}, data in {})",
        listener.local_addr()?,
        store.url(),
        cli.data_dir().display()
    );
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown_signal()).await?;
    sweeper.abort();
    let stats = store.write_stats();
    info!(
        write_transactions = stats.transactions,
        longest_write_hold_ms = stats.longest_hold.as_secs_f64() * 1000.0,
        "squadron stopped"
    );
    store.close().await;
    Ok(())
}
