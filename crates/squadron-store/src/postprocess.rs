//! Post-processing a build waits for (DESIGN §5): a `pending_postprocess`
//! row per (run, plugin), inserted in the transaction that enqueues the
//! plugin's task and deleted in that task's last step. While a build has
//! such rows it is not finished.

use std::sync::Arc;

use chrono::Utc;
use squadron_queue::{NewTask, Queue, StepTx};

use crate::sql::Sql;
use crate::{StoreError, WriteTx};

/// Records that `plugin` will post-process `testrun_id` and enqueues its
/// `task`, in `tx`.
pub async fn hold(
    tx: &mut WriteTx,
    queue: &Queue,
    testrun_id: i64,
    plugin: &str,
    task: &NewTask,
) -> Result<(), StoreError> {
    let mut sql = Sql::new("INSERT INTO pending_postprocess (testrun_id, plugin, build_id, created_at) SELECT id, ");
    sql.bind(plugin).push(", build_id, ").bind(Utc::now()).push(" FROM testruns WHERE id = ").bind(testrun_id);
    sql.push(" ON CONFLICT DO NOTHING");
    tx.execute(&sql).await?;
    status_changed(tx, testrun_id).await?;
    queue.enqueue(tx.conn(), task).await?;
    Ok(())
}

/// Marks the status of `testrun_id`'s build out of date: whether it is
/// finished has changed.
pub async fn status_changed(tx: &mut WriteTx, testrun_id: i64) -> Result<(), StoreError> {
    let mut sql = Sql::new(
        "UPDATE builds SET status_version = status_version + 1 WHERE id IN (SELECT build_id FROM testruns WHERE id = ",
    );
    sql.bind(testrun_id).push(")");
    tx.execute(&sql).await?;
    Ok(())
}

/// Makes a plugin's task for a run: `(run id, plugin) → task`.
pub type PluginTask = Arc<dyn Fn(i64, &str) -> NewTask + Send + Sync>;

/// The plugins to run on a run once it is published, and their tasks: the
/// rows and tasks commit with the publication.
#[derive(Clone)]
pub struct RunPostprocess {
    /// Routes the tasks.
    pub queue: Queue,
    /// The plugins' names.
    pub plugins: Vec<String>,
    /// Makes each plugin's task.
    pub task: PluginTask,
}

impl RunPostprocess {
    /// Holds every plugin on `testrun_id`, in `tx`.
    pub async fn hold_all(&self, tx: &mut WriteTx, testrun_id: i64) -> Result<(), StoreError> {
        for plugin in &self.plugins {
            hold(tx, &self.queue, testrun_id, plugin, &(self.task)(testrun_id, plugin)).await?;
        }
        Ok(())
    }
}
