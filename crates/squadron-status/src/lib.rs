//! squadron's build status (SQUAD's ProjectStatus): a build's totals and
//! per-environment summaries, whether it is finished and why not, its
//! baseline, and its regressions and fixes against that baseline.
//!
//! A status is computed from a read snapshot, holding no transaction, and
//! written in one short transaction only if the build's runs did not change
//! meanwhile (`builds.status_version`, bumped by every publish, is the
//! compare-and-set guard). The transaction that publishes a run also
//! enqueues [`UpdateBuildStatus`], so a process that dies before the status
//! is written leaves the work to a worker.
//!
//! Where squadron differs from SQUAD on purpose:
//! * the baseline is re-evaluated on every computation until the build's
//!   notifications are sent (SQUAD freezes the one found when the first run
//!   arrives, which is usually wrong);
//! * counters follow the data: a removed run lowers them (SQUAD never lets
//!   them decrease).

mod callbacks;
mod compare;
mod compute;
mod crash_window;
mod known_issues;
pub mod notify;
pub mod patches;
pub mod postprocess;
mod reset;
mod tasks;
mod update;

pub use callbacks::{idempotency_key, Delivering, SendBuildCallbacks};
pub use compare::{metric_regressions_and_fixes, regressions_and_fixes, ByEnvironment, BySuite, Changes, Pairing};
pub use compute::{compute, BuildStatus, EnvironmentSummary, Runs};
pub use known_issues::ReapplyKnownIssues;
pub use reset::reset_build_events;
pub use tasks::{on_publish, on_submit, ReconcileBuildStatus, StatusContext, UpdateBuildStatus};
pub use update::{recompute_project, update_build_status, write_if_current, Updated};

/// Errors of the build status.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] squadron_store::StoreError),
    /// No build has this id.
    #[error("build {0} not found")]
    NoSuchBuild(i64),
    /// Enqueueing a follow-up task failed.
    #[error(transparent)]
    Queue(#[from] squadron_queue::QueueError),
    /// An email template does not parse or render.
    #[error("template error in {0}")]
    Template(String),
    /// No email template has this id.
    #[error("email template {0} not found")]
    NoSuchTemplate(i64),
    /// An email could not be built or sent.
    #[error("email: {0}")]
    Mail(String),
}
