//! Post-processing a build waits for (DESIGN §5): a `pending_postprocess`
//! row per (run, plugin), inserted in the transaction that enqueues the
//! plugin's task and deleted in that task's last step, which also enqueues
//! the build's status update. While a build has such rows it is not
//! finished, so it is not notified before its plugins are done.

use squadron_queue::{Queue, StepTx};
pub use squadron_store::postprocess::hold;
use squadron_store::postprocess::status_changed;
use squadron_store::sql::Sql;
use squadron_store::WriteTx;

use crate::tasks::UpdateBuildStatus;
use crate::StatusError;

/// Records, in the plugin task's last step `tx`, that `plugin` is done with
/// `testrun_id`, and enqueues its build's status update.
pub async fn release(tx: &mut WriteTx, queue: &Queue, testrun_id: i64, plugin: &str) -> Result<(), StatusError> {
    let mut build = Sql::new("SELECT build_id FROM testruns WHERE id = ");
    build.bind(testrun_id);
    let rows: Vec<(i64,)> = tx.fetch_all(&build).await?;
    let mut sql = Sql::new("DELETE FROM pending_postprocess WHERE testrun_id = ");
    sql.bind(testrun_id).push(" AND plugin = ").bind(plugin);
    tx.execute(&sql).await?;
    status_changed(tx, testrun_id).await?;
    if let Some(&(build_id,)) = rows.first() {
        queue.enqueue(tx.conn(), &UpdateBuildStatus::task(build_id)).await?;
    }
    Ok(())
}
