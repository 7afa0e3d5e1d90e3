//! The store's periodic maintenance, as queue tasks.

use serde::{Deserialize, Serialize};
use squadron_queue::{Job, Outcome, Task, TaskError};
use tracing::info;

use crate::ingest::SWEEP_AFTER;
use crate::Store;

/// Removes the hidden test runs that writers which died mid-ingestion left
/// behind (see [`Store::sweep_hidden_runs`]). Removing a stale run is
/// idempotent, so a sweep cut short is simply run again.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SweepHiddenRuns {}

impl Task for SweepHiddenRuns {
    const KIND: &'static str = "sweep_hidden_runs";
    const QUEUE: &'static str = "core_quick";
    type Context = Store;

    async fn run(&self, store: &Store, _job: &mut Job) -> Result<Outcome, TaskError> {
        let removed = store.sweep_hidden_runs(SWEEP_AFTER).await.map_err(TaskError::failed)?;
        if removed > 0 {
            info!(removed, "removed test runs left unfinished by writers that died");
        }
        Ok(Outcome::Done)
    }
}
