//! Post-processing a build waits for (DESIGN §5): a `pending_postprocess`
//! row per (run, plugin), inserted in the transaction that enqueues the
//! plugin's task and deleted in that task's last step, which also enqueues
//! the build's status update. While a build has such rows it is not
//! finished, so it is not notified before its plugins are done.

use chrono::Utc;
use squadron_queue::{NewTask, Queue, StepTx};
use squadron_store::sql::Sql;
use squadron_store::WriteTx;

use crate::tasks::UpdateBuildStatus;
use crate::StatusError;

/// Records that `plugin` will post-process `testrun_id` and enqueues its
/// `task`, in `tx`.
pub async fn hold(
    tx: &mut WriteTx,
    queue: &Queue,
    testrun_id: i64,
    plugin: &str,
    task: &NewTask,
) -> Result<(), StatusError> {
    let mut sql = Sql::new("INSERT INTO pending_postprocess (testrun_id, plugin, build_id, created_at) SELECT id, ");
    sql.bind(plugin).push(", build_id, ").bind(Utc::now()).push(" FROM testruns WHERE id = ").bind(testrun_id);
    sql.push(" ON CONFLICT DO NOTHING");
    tx.execute(&sql).await?;
    bump_status_version(tx, testrun_id).await?;
    queue.enqueue(tx.conn(), task).await?;
    Ok(())
}

/// Records, in the plugin task's last step `tx`, that `plugin` is done with
/// `testrun_id`, and enqueues its build's status update.
pub async fn release(tx: &mut WriteTx, queue: &Queue, testrun_id: i64, plugin: &str) -> Result<(), StatusError> {
    let mut build = Sql::new("SELECT build_id FROM testruns WHERE id = ");
    build.bind(testrun_id);
    let rows: Vec<(i64,)> = tx.fetch_all(&build).await?;
    let mut sql = Sql::new("DELETE FROM pending_postprocess WHERE testrun_id = ");
    sql.bind(testrun_id).push(" AND plugin = ").bind(plugin);
    tx.execute(&sql).await?;
    bump_status_version(tx, testrun_id).await?;
    if let Some(&(build_id,)) = rows.first() {
        queue.enqueue(tx.conn(), &UpdateBuildStatus::task(build_id)).await?;
    }
    Ok(())
}

/// Marks the run's build status out of date: whether it is finished has
/// changed.
async fn bump_status_version(tx: &mut WriteTx, testrun_id: i64) -> Result<(), StatusError> {
    let mut sql = Sql::new(
        "UPDATE builds SET status_version = status_version + 1 WHERE id IN (SELECT build_id FROM testruns WHERE id = ",
    );
    sql.bind(testrun_id).push(")");
    tx.execute(&sql).await?;
    Ok(())
}
