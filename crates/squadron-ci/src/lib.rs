//! The CI pipeline (DESIGN §5): lab backends and the test-job tasks.
//!
//! ```text
//! submitjob/watchjob ─► submit (ci_quick) ─► [the lab runs the job]
//!   ─► fetch (ci_fetch; enqueued by the submit, the poll, the listener or a callback)
//!   ─► postprocess (ci_fetch_postprocess, one task per enabled plugin, in steps)
//!   ─► finish (ci_fetch) ─► the build's status update (core_postprocess)
//! ```
//!
//! Every arrow is a task whose data change and successor commit together,
//! so no job is left `Fetching`, no result is stored twice, and a crash at
//! any instant loses at most the step that was running. Calls to a lab
//! happen outside transactions; a submission is recorded (its key) before
//! the lab is called, and a retried submission looks the job up in the lab
//! before submitting again.

pub mod backend;
pub mod callback;
pub mod jobs;
pub mod listener;
pub mod pipeline;

pub use backend::{Backend, BackendError, BackendRecord, Backends, Fetched, JobResults, LabEvent};
pub use jobs::TestJob;
pub use listener::Listener;
pub use pipeline::{CancelJob, Ci, FetchJob, FinishJob, PollBackends, PostprocessRun, SubmitJob};

/// Why a CI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CiError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] squadron_store::StoreError),
    /// Enqueueing a task failed.
    #[error(transparent)]
    Queue(#[from] squadron_queue::QueueError),
    /// Build-status bookkeeping failed.
    #[error(transparent)]
    Status(#[from] squadron_status::StatusError),
    /// Something named does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
    /// The lab refused or failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}
