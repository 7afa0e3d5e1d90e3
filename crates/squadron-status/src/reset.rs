//! Re-arming a build's notifications (SQUAD's `reset_events`, used when a
//! CI job is resubmitted and the project sets
//! `CI_RESET_BUILD_EVENTS_ON_JOB_RESUBMISSION`).

use squadron_queue::{Queue, StepTx};
use squadron_store::sql::Sql;
use squadron_store::WriteTx;

use crate::tasks::UpdateBuildStatus;
use crate::StatusError;

/// In `tx`: bumps the build's event generation, so that its next
/// `on_build_finished` is a new event whose callbacks, email and patch
/// verdict go out again with keys of the new generation; marks its status
/// not notified (timer disarmed, not approved) and its callbacks and patch
/// verdict unsent; and enqueues its status update.
pub async fn reset_build_events(tx: &mut WriteTx, queue: &Queue, build_id: i64) -> Result<(), StatusError> {
    let mut build = Sql::new(
        "UPDATE builds SET event_generation = event_generation + 1, patch_notified = FALSE, \
         status_version = status_version + 1 WHERE id = ",
    );
    build.bind(build_id);
    if tx.execute(&build).await? == 0 {
        return Err(StatusError::NoSuchBuild(build_id));
    }
    let mut status = Sql::new(
        "UPDATE build_status SET finished = FALSE, notified = FALSE, notified_on_timeout = NULL, approved = FALSE \
         WHERE build_id = ",
    );
    status.bind(build_id);
    tx.execute(&status).await?;
    let mut callbacks = Sql::new("UPDATE callbacks SET is_sent = FALSE WHERE build_id = ");
    callbacks.bind(build_id);
    tx.execute(&callbacks).await?;
    queue.enqueue(tx.conn(), &UpdateBuildStatus::task(build_id)).await?;
    Ok(())
}
