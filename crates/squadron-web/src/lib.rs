//! squadron's HTTP API: SQUAD's native endpoints (`/api/submit`,
//! `/api/createbuild`, …) and REST API, with SQUAD's paths, field names and
//! status codes, so `squad-client` and existing CI scripts work unchanged.

mod auth;
pub mod error;
mod form;
mod native;
mod rest;
mod urlencoded;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use squadron_store::blob::BlobStore;
use squadron_store::Store;

pub use native::{SQUAD_API_VERSION, VERSION};

/// Settings of the HTTP API.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The largest request body accepted, in bytes (413 beyond).
    pub max_upload_bytes: u64,
    /// The base of absolute URLs in API answers (`https://squad.example.com`);
    /// without it, the scheme and host the client used.
    pub base_url: Option<String>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig { max_upload_bytes: 1024 * 1024 * 1024, base_url: None }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The blob store.
    pub blobs: BlobStore,
    /// Settings.
    pub config: Arc<WebConfig>,
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/submit/{group}/{project}/{build}/{environment}", post(native::submit))
        .route("/api/submit/{group}/{project}/{build}/{environment}/", post(native::submit))
        .route("/api/createbuild/{group}/{project}/{version}", post(native::create_build))
        .route("/api/createbuild/{group}/{project}/{version}/", post(native::create_build))
        .route("/api/version/", get(native::version))
        .route("/api/version", get(native::version))
        .merge(rest::routes())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Ready when the database answers.
async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable"),
    }
}
