//! Removing a hidden run and everything it alone brought: its tests and
//! metrics (in short batches), names and suites no other row uses, its
//! attachments, and the build and environment it created if they are empty.

use sqlx::Row;

use super::names::{bump_name_epoch, list_placeholders};
use super::MAX_BATCH_ROWS;
use crate::db::{EngineTx, WriteTx};
use crate::{Store, StoreError};

/// Deletes `ids` from `suite_metadata` where nothing refers to them any more.
async fn delete_unused_names(tx: &mut WriteTx, ids: &[i64]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    bump_name_epoch(tx).await?;
    let unused = "AND NOT EXISTS (SELECT 1 FROM tests t WHERE t.metadata_id = suite_metadata.id) \
                  AND NOT EXISTS (SELECT 1 FROM metrics m WHERE m.metadata_id = suite_metadata.id) \
                  AND NOT EXISTS (SELECT 1 FROM suites s WHERE s.metadata_id = suite_metadata.id)";
    match &mut tx.tx {
        EngineTx::Sqlite(c) => {
            let sql = format!("DELETE FROM suite_metadata WHERE id IN ({}) {unused}", list_placeholders(ids.len()));
            let mut q = sqlx::query(&sql);
            for id in ids {
                q = q.bind(id);
            }
            q.execute(&mut **c).await?;
        }
        EngineTx::Postgres(c) => {
            let sql = format!("DELETE FROM suite_metadata WHERE id = ANY($1) {unused}");
            sqlx::query(&sql).bind(ids).execute(&mut **c).await?;
        }
    }
    Ok(())
}

/// Deletes suites of `ids` that no status row refers to; returns their
/// names' ids.
async fn delete_unused_suites(tx: &mut WriteTx, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let unused = "AND NOT EXISTS (SELECT 1 FROM statuses s WHERE s.suite_id = suites.id) RETURNING metadata_id";
    let rows = match &mut tx.tx {
        EngineTx::Sqlite(c) => {
            let sql = format!("DELETE FROM suites WHERE id IN ({}) {unused}", list_placeholders(ids.len()));
            let mut q = sqlx::query(&sql);
            for id in ids {
                q = q.bind(id);
            }
            q.fetch_all(&mut **c).await?.iter().filter_map(|r| r.get::<Option<i64>, _>(0)).collect()
        }
        EngineTx::Postgres(c) => {
            let sql = format!("DELETE FROM suites WHERE id = ANY($1) {unused}");
            sqlx::query(&sql)
                .bind(ids)
                .fetch_all(&mut **c)
                .await?
                .iter()
                .filter_map(|r| r.get::<Option<i64>, _>(0))
                .collect()
        }
    };
    Ok(rows)
}

fn sorted_unique(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Deletes at most `limit` rows of `table` (tests or metrics) of run `run`
/// in `tx` (their known-issue links go with them); returns the names
/// (metadata ids) of the rows deleted.
pub(crate) async fn delete_results_batch(
    tx: &mut WriteTx,
    table: &str,
    run: i64,
    limit: usize,
) -> Result<Vec<i64>, StoreError> {
    let sql = format!(
        "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE test_run_id = $1 LIMIT $2) RETURNING metadata_id"
    );
    Ok(with_tx!(tx, c => sqlx::query_scalar(&sql).bind(run).bind(limit as i64).fetch_all(&mut *c).await)?)
}

/// Deletes run `run` with its status rows and attachments (its tests and
/// metrics must be gone already); returns the suites its status rows named.
pub(crate) async fn delete_run_row(tx: &mut WriteTx, run: i64) -> Result<Vec<i64>, StoreError> {
    let suites: Vec<Option<i64>> = with_tx!(tx, c => {
        let suites = sqlx::query_scalar("DELETE FROM statuses WHERE test_run_id = $1 RETURNING suite_id")
            .bind(run).fetch_all(&mut *c).await?;
        sqlx::query("DELETE FROM attachments WHERE test_run_id = $1").bind(run).execute(&mut *c).await?;
        sqlx::query("DELETE FROM testruns WHERE id = $1").bind(run).execute(&mut *c).await?;
        suites
    });
    Ok(suites.into_iter().flatten().collect())
}

/// Removes the rows of `table` (tests or metrics) of a run in batches, and
/// the names only they used.
async fn delete_results(store: &Store, table: &str, run: i64) -> Result<(), StoreError> {
    loop {
        let mut tx = store.begin_write().await?;
        let names = delete_results_batch(&mut tx, table, run, MAX_BATCH_ROWS).await?;
        let done = names.len() < MAX_BATCH_ROWS;
        delete_unused_names(&mut tx, &sorted_unique(names)).await?;
        tx.commit().await?;
        if done {
            return Ok(());
        }
    }
}

/// Removes a hidden run (see the module documentation). Safe to call on a
/// run that is already gone.
pub(crate) async fn discard_run(store: &Store, run: i64) -> Result<(), StoreError> {
    // First take the run from its writer: no batch can land in it after
    // this (on PostgreSQL, this waits for batches being written).
    let mut tx = store.begin_write().await?;
    with_tx!(tx, c => sqlx::query("UPDATE testruns SET ingest_owner = NULL WHERE id = $1 AND NOT visible")
        .bind(run).execute(&mut *c).await.map(|r| r.rows_affected()))?;
    tx.commit().await?;
    delete_results(store, "tests", run).await?;
    delete_results(store, "metrics", run).await?;

    let mut tx = store.begin_write().await?;
    let owner: Option<(i64, i64, bool, bool)> = with_tx!(tx, c => sqlx::query_as(
        "SELECT build_id, environment_id, ingest_created_build, ingest_created_environment \
         FROM testruns WHERE id = $1 AND NOT visible",
    ).bind(run).fetch_optional(&mut *c).await)?;
    let Some((build, environment, created_build, created_environment)) = owner else {
        return Ok(());
    };
    let suites = delete_run_row(&mut tx, run).await?;
    let suite_names = delete_unused_suites(&mut tx, &sorted_unique(suites)).await?;
    delete_unused_names(&mut tx, &sorted_unique(suite_names)).await?;
    if created_build {
        with_tx!(tx, c => sqlx::query(
            "DELETE FROM builds WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM testruns WHERE build_id = $1) \
             AND NOT EXISTS (SELECT 1 FROM testjobs WHERE target_build_id = $1) \
             AND NOT EXISTS (SELECT 1 FROM callbacks WHERE build_id = $1) \
             AND NOT EXISTS (SELECT 1 FROM builds b WHERE b.patch_baseline_id = $1)",
        ).bind(build).execute(&mut *c).await.map(|r| r.rows_affected()))?;
    }
    if created_environment {
        with_tx!(tx, c => sqlx::query(
            "DELETE FROM environments WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM testruns WHERE environment_id = $1) \
             AND NOT EXISTS (SELECT 1 FROM known_issue_environments WHERE environment_id = $1)",
        ).bind(environment).execute(&mut *c).await.map(|r| r.rows_affected()))?;
    }
    tx.commit().await?;
    Ok(())
}

/// Retires the visible run `id` in `tx`: it is hidden at once and removed,
/// in short batches, by the next sweep of hidden runs (SQUAD deletes a run
/// in one long transaction). Its build's status becomes stale.
pub async fn retire_run(tx: &mut WriteTx, id: i64) -> Result<(), StoreError> {
    let epoch = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    with_tx!(tx, c => {
        sqlx::query(
            "UPDATE testruns SET visible = FALSE, ingest_owner = 'retired', ingest_heartbeat_at = $2, \
             ingest_created_build = FALSE, ingest_created_environment = FALSE WHERE id = $1 AND visible",
        ).bind(id).bind(epoch).execute(&mut *c).await?;
        sqlx::query("UPDATE builds SET status_version = status_version + 1 WHERE id IN (SELECT build_id FROM testruns WHERE id = $1)")
            .bind(id).execute(&mut *c).await?;
    });
    Ok(())
}
