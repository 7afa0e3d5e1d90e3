//! What operators and Kubernetes probe: `/metrics` (Prometheus text),
//! `/healthz` (the process answers) and `/readyz` (the database answers).
//! Served by `serve` beside the API and by each worker on its own address.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use squadron_queue::{admin, Metrics, QueueDb};

/// What the probes look at.
#[derive(Clone)]
pub struct Ops {
    /// The queue's metrics in this process.
    pub metrics: Metrics,
    /// The database.
    pub db: QueueDb,
    /// The queues whose depth is reported even when empty.
    pub queues: Vec<String>,
}

/// `/metrics`, `/healthz` and `/readyz`.
pub fn ops_router(ops: Ops) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(ops)
}

/// The metrics, with queue depths read from the database at scrape time.
async fn metrics(State(ops): State<Ops>) -> impl IntoResponse {
    match admin::depths(&ops.db, &ops.queues).await {
        Ok(depths) => ops.metrics.set_depths(&depths),
        Err(e) => tracing::warn!(error = %e, "cannot read queue depths for /metrics"),
    }
    ([(header::CONTENT_TYPE, squadron_queue::metrics::CONTENT_TYPE)], ops.metrics.encode())
}

/// Ready when the database answers.
async fn readyz(State(ops): State<Ops>) -> (StatusCode, &'static str) {
    match ops.db.ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable"),
    }
}
