//! The pipeline's tasks and what they need from the process.

mod cancel;
mod fetch;
mod finish;
pub mod links;
mod poll;
mod postprocess;
mod submit;

use std::time::Duration;

use squadron_plugins::Plugins;
use squadron_queue::Queue;
use squadron_store::blob::BlobStore;
use squadron_store::Store;

use crate::backend::Backends;

pub use cancel::CancelJob;
pub use fetch::FetchJob;
pub use finish::FinishJob;
pub use poll::PollBackends;
pub use postprocess::{PostprocessRun, RunInput};
pub use submit::SubmitJob;

/// What the pipeline's tasks need.
pub struct Ci {
    /// The database.
    pub store: Store,
    /// Where logs and raw results go.
    pub blobs: BlobStore,
    /// Routes follow-up tasks.
    pub queue: Queue,
    /// Opens the labs.
    pub backends: Backends,
    /// The plugins projects may enable.
    pub plugins: Plugins,
    /// The base URL of this instance (`SQUADRON_BASE_URL`, no trailing
    /// slash; empty if not configured): the links plugins write into
    /// attached files start with it, and a lab result that points under it
    /// is read from the store.
    pub base_url: String,
    /// How long a submission that failed for a temporary reason waits
    /// before it is tried again (SQUAD: an hour).
    pub submit_retry_delay: Duration,
}

/// How many times a submission that failed for a temporary reason is tried
/// again (SQUAD: Celery's default of 3 retries).
pub const SUBMIT_RETRIES: u32 = 3;

/// A backend's poll interval as a duration (at least a second).
fn poll_interval(seconds: i64) -> Duration {
    Duration::from_secs(seconds.max(1) as u64)
}
