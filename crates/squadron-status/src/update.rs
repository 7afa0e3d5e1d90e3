//! Writing a computed status: one short compare-and-set transaction.

use chrono::Utc;
use squadron_queue::{NewTask, Queue, StepTx};
use squadron_store::sql::Sql;
use squadron_store::{Store, WriteTx};

use crate::callbacks::SendBuildCallbacks;
use crate::compute::{compute, BuildStatus};
use crate::notify::{arm_timeout, record_event, NotifyBuild, FINISHED};
use crate::tasks::UpdateBuildStatus;
use crate::StatusError;

/// What [`update_build_status`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Updated {
    /// The status was written.
    Written(Box<BuildStatus>),
    /// The build's runs changed while it was computed, twice: the
    /// recomputation task the change enqueued will write it.
    Stale,
}

/// Computes the status of `build_id` and writes it if the build's runs did
/// not change meanwhile; on a conflict computes once more.
pub async fn update_build_status(store: &Store, queue: &Queue, build_id: i64) -> Result<Updated, StatusError> {
    for _ in 0..2 {
        let status = compute(store, build_id).await?;
        if write_if_current(store, queue, &status).await? {
            return Ok(Updated::Written(Box::new(status)));
        }
    }
    Ok(Updated::Stale)
}

/// Recomputes every build of a project, oldest first (a build's baseline
/// depends on whether earlier builds are finished); returns how many.
pub async fn recompute_project(store: &Store, queue: &Queue, project_id: i64) -> Result<usize, StatusError> {
    let mut sql = Sql::new("SELECT id FROM builds WHERE project_id = ");
    sql.bind(project_id).push(" ORDER BY datetime, id");
    let builds: Vec<(i64,)> = store.fetch_all(&sql).await?;
    for &(id,) in &builds {
        if update_build_status(store, queue, id).await? == Updated::Stale {
            tracing::info!(build = id, "build changed while its status was recomputed; its task will finish it");
        }
    }
    Ok(builds.len())
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("maps of strings serialise")
}

/// Writes `status` if `builds.status_version` is still the one it was
/// computed from; false otherwise (nothing written). A finished build's
/// `on_build_finished` event of the current generation is recorded, and
/// its callbacks task enqueued, in the same transaction: once per
/// generation, however often the status is written.
pub async fn write_if_current(store: &Store, queue: &Queue, status: &BuildStatus) -> Result<bool, StatusError> {
    let now = Utc::now();
    let mut tx = store.begin_write().await?;
    // Locks the build's row (PostgreSQL) and checks the version: a publish
    // committed meanwhile makes this match nothing.
    let mut guard = Sql::new("UPDATE builds SET status_version = status_version WHERE id = ");
    guard.bind(status.build_id).push(" AND status_version = ").bind(status.version);
    if tx.execute(&guard).await? == 0 {
        return Ok(false);
    }
    let (regressions, fixes) = match &status.changes {
        Some(c) => (Some(json(&c.regressions)), Some(json(&c.fixes))),
        None => (None, None),
    };
    let (metric_regressions, metric_fixes) = match &status.metric_changes {
        Some(c) => (Some(json(&c.regressions)), Some(json(&c.fixes))),
        None => (None, None),
    };
    let mut upsert = Sql::new(
        "INSERT INTO build_status (build_id, computed_version, created_at, last_updated, finished, finished_reasons, \
         tests_pass, tests_fail, tests_xfail, tests_skip, test_runs_total, test_runs_completed, test_runs_incomplete, \
         metrics_summary, has_metrics, baseline_id, regressions, fixes, metric_regressions, metric_fixes) VALUES (",
    );
    let c = &status.counts;
    let r = &status.runs;
    upsert.bind(status.build_id).push(", ").bind(status.version).push(", ").bind(now).push(", ").bind(now);
    upsert.push(", ").bind(status.finished).push(", ").bind(json(&status.reasons));
    for n in [c.pass, c.fail, c.xfail, c.skip, r.total, r.completed, r.incomplete] {
        upsert.push(", ").bind(n);
    }
    upsert.push(", ").bind(status.metrics_summary).push(", ").bind(status.has_metrics).push(", ");
    upsert.bind_optional(status.baseline_id);
    upsert.push(", ");
    upsert.bind_optional(regressions);
    upsert.push(", ");
    upsert.bind_optional(fixes);
    upsert.push(", ");
    upsert.bind_optional(metric_regressions);
    upsert.push(", ");
    upsert.bind_optional(metric_fixes);
    upsert.push(
        ") ON CONFLICT (build_id) DO UPDATE SET computed_version = excluded.computed_version, \
         last_updated = excluded.last_updated, finished = excluded.finished, \
         finished_reasons = excluded.finished_reasons, tests_pass = excluded.tests_pass, \
         tests_fail = excluded.tests_fail, tests_xfail = excluded.tests_xfail, tests_skip = excluded.tests_skip, \
         test_runs_total = excluded.test_runs_total, test_runs_completed = excluded.test_runs_completed, \
         test_runs_incomplete = excluded.test_runs_incomplete, metrics_summary = excluded.metrics_summary, \
         has_metrics = excluded.has_metrics, baseline_id = excluded.baseline_id, \
         regressions = excluded.regressions, fixes = excluded.fixes, \
         metric_regressions = excluded.metric_regressions, metric_fixes = excluded.metric_fixes",
    );
    tx.execute(&upsert).await?;
    let mut clear = Sql::new("DELETE FROM build_summaries WHERE build_id = ");
    clear.bind(status.build_id);
    tx.execute(&clear).await?;
    for env in &status.environments {
        let mut insert = Sql::new(
            "INSERT INTO build_summaries (build_id, environment_id, tests_pass, tests_fail, tests_xfail, tests_skip, \
             test_runs_total, test_runs_completed, test_runs_incomplete, metrics_summary, has_metrics) VALUES (",
        );
        insert.bind(status.build_id).push(", ").bind(env.environment_id);
        let (c, r) = (&env.counts, &env.runs);
        for n in [c.pass, c.fail, c.xfail, c.skip, r.total, r.completed, r.incomplete] {
            insert.push(", ").bind(n);
        }
        insert.push(", ").bind(env.metrics_summary).push(", ").bind(env.has_metrics).push(")");
        tx.execute(&insert).await?;
    }
    arm_timeout(&mut tx, queue, status.build_id).await?;
    if status.finished {
        record_finished(&mut tx, queue, status.build_id).await?;
    }
    let mut touch = Sql::new("UPDATE projects SET datetime = ");
    touch.bind(now).push(" WHERE id = ").bind(status.project_id);
    tx.execute(&touch).await?;
    tx.commit().await?;
    Ok(true)
}

/// Inserts the build's `on_build_finished` event of its current generation
/// and, if it was not there yet, enqueues the tasks that send its callbacks
/// and its email.
async fn record_finished(tx: &mut WriteTx, queue: &Queue, build_id: i64) -> Result<(), StatusError> {
    if let Some(generation) = record_event(tx, build_id, FINISHED).await? {
        let tasks = [
            NewTask::of(&SendBuildCallbacks { build_id, generation }),
            NotifyBuild::task(build_id, FINISHED, generation),
        ];
        queue.enqueue_many(tx.conn(), &tasks).await?;
        // This build may now be the baseline of later builds not yet
        // notified: they are looked at again.
        let mut later = Sql::new("SELECT b.id FROM builds b JOIN builds f ON f.id = ");
        later
            .bind(build_id)
            .push(
                " JOIN build_status s ON s.build_id = b.id \
                 WHERE b.project_id = f.project_id AND NOT s.notified \
                   AND (b.datetime > f.datetime OR (b.datetime = f.datetime AND b.id > f.id)) \
                 ORDER BY b.datetime, b.id LIMIT ",
            )
            .bind(LATER_BUILDS);
        let later: Vec<(i64,)> = tx.fetch_all(&later).await?;
        let tasks: Vec<NewTask> = later.into_iter().map(|(id,)| UpdateBuildStatus::rebaseline(id)).collect();
        queue.enqueue_many(tx.conn(), &tasks).await?;
    }
    Ok(())
}

/// How many later builds a newly finished build has looked at again (the
/// ones whose baseline it may have become).
const LATER_BUILDS: i64 = 20;
