//! squadron's HTTP API: SQUAD's native endpoints (`/api/submit`,
//! `/api/createbuild`, …) and REST API, with SQUAD's paths, field names and
//! status codes, so `squad-client` and existing CI scripts work unchanged.

mod auth;
mod ci;
mod data;
pub mod error;
mod fetchjob;
mod form;
mod native;
mod ops;
mod rest;
mod urlencoded;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use squadron_ci::Backends;
use squadron_queue::{Metrics, Queue};
use squadron_store::blob::BlobStore;
use squadron_store::Store;

pub use native::{SQUAD_API_VERSION, VERSION};
pub use ops::{ops_router, Ops};

/// Settings of the HTTP API.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The largest request body accepted, in bytes (413 beyond).
    pub max_upload_bytes: u64,
    /// The base of absolute URLs in API answers (`https://squad.example.com`);
    /// without it, the scheme and host the client used.
    pub base_url: Option<String>,
    /// The site's name, in rendered emails.
    pub site_name: String,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig { max_upload_bytes: 1024 * 1024 * 1024, base_url: None, site_name: "squadron".to_string() }
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
    /// Enqueues tasks, routed as configured.
    pub queue: Queue,
    /// The queue's metrics in this process.
    pub metrics: Metrics,
    /// The plugins that post-process submitted runs.
    pub plugins: squadron_plugins::Plugins,
    /// Opens the CI labs (to check job definitions, link to jobs).
    pub backends: Backends,
}

impl AppState {
    /// State with the default settings, routes and a fresh metrics registry.
    pub fn new(store: Store, blobs: BlobStore, backends: Backends) -> AppState {
        AppState {
            store,
            blobs,
            config: Arc::new(WebConfig::default()),
            queue: Queue::default(),
            metrics: Metrics::default(),
            plugins: squadron_plugins::Plugins::builtin(),
            backends,
        }
    }

    /// What the operators' probes look at.
    pub fn ops(&self) -> Ops {
        let queues = self.queue.routes().known_queues(std::iter::empty());
        Ops { metrics: self.metrics.clone(), db: self.store.queue_db(), queues }
    }
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/submit/{group}/{project}/{build}/{environment}", post(native::submit))
        .route("/api/submit/{group}/{project}/{build}/{environment}/", post(native::submit))
        .route("/api/createbuild/{group}/{project}/{version}", post(native::create_build))
        .route("/api/createbuild/{group}/{project}/{version}/", post(native::create_build))
        .route("/api/fetchjob/{group}/{project}/{version}/{environment}/{backend}", post(fetchjob::fetch_job))
        .route("/api/fetchjob/{group}/{project}/{version}/{environment}/{backend}/", post(fetchjob::fetch_job))
        .merge(ci::routes())
        .route("/api/data/{group}/{project}", get(data::data))
        .route("/api/data/{group}/{project}/", get(data::data))
        .route("/api/version/", get(native::version))
        .route("/api/version", get(native::version))
        .merge(rest::routes())
        .with_state(state.clone())
        .merge(ops_router(state.ops()))
}
