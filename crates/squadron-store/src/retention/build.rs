//! Deleting one build without a long transaction.
//!
//! SQUAD deletes a build, and everything under it, in one transaction. Here
//! every transaction is short:
//!
//! 1. Each transaction starts by **hiding** the build's runs in one
//!    statement (`visible = FALSE`, and no ingestion owner or heartbeat),
//!    a no-op once done. Every read ignores hidden runs, so the build loses
//!    all its results at once, never part of a run: it stays listed, with
//!    its last computed status, until its row goes. Its `status_version` is
//!    left alone on purpose: a recomputation would find an empty build,
//!    which may count as finished and notify. Taking the owner away stops
//!    an ingestion still writing into the build (its batches check that
//!    they own their run), and without a heartbeat the sweep of hidden runs
//!    leaves these runs to the deletion.
//! 2. Then it deletes one batch of the first remaining run: up to
//!    `batch_rows` tests (their known-issue links go with them), else up to
//!    `batch_rows` metrics, else the run itself with its status rows and
//!    attachments. The progress is the step's checkpoint.
//! 3. Once no run is left, one transaction deletes the build row (its
//!    status, summaries, events, callbacks, CI jobs, notifications,
//!    pending post-processing and annotation go with it by cascade) and
//!    records its placeholder, or updates the placeholder a deletion of the
//!    same version left earlier.
//!
//! Every step deletes what is still there, so a step replayed after a
//! crash, or a deletion run twice, is harmless. Interned names and suites
//! stay, as in SQUAD.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use squadron_queue::Job;

use super::RetentionError;
use crate::ingest::discard::{delete_results_batch, delete_run_row};
use crate::sql::Sql;
use crate::{Store, WriteTx};

/// What a build deletion removed so far: its checkpoint.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    /// Tests deleted.
    pub tests: u64,
    /// Metrics deleted.
    pub metrics: u64,
    /// Test runs deleted.
    pub runs: u64,
    /// Transactions committed before the last one (which deletes the build).
    pub transactions: u64,
}

/// Where the steps of a deletion commit.
pub enum Steps<'j> {
    /// As steps of a queue task: with the progress as checkpoint, fenced by
    /// the task's lease.
    Task(&'j mut Job),
    /// Plainly (`squadron admin cleanup`).
    Direct,
}

impl Steps<'_> {
    async fn step(&mut self, tx: WriteTx, progress: &Deletion) -> Result<(), RetentionError> {
        match self {
            Steps::Task(job) => job.commit_step(tx, progress).await?,
            Steps::Direct => tx.commit().await?,
        }
        Ok(())
    }

    async fn last(&mut self, tx: WriteTx) -> Result<(), RetentionError> {
        match self {
            Steps::Task(job) => {
                job.commit_last_step(tx).await?;
            }
            Steps::Direct => tx.commit().await?,
        }
        Ok(())
    }
}

/// Deletes build `build` (see the module documentation), going on from
/// `progress`; returns what it deleted.
pub async fn delete(
    store: &Store,
    build: i64,
    batch_rows: usize,
    mut progress: Deletion,
    steps: &mut Steps<'_>,
) -> Result<Deletion, RetentionError> {
    let batch_rows = batch_rows.max(1);
    loop {
        let mut tx = store.begin_write().await?;
        hide_runs(&mut tx, build).await?;
        let mut first = Sql::new("SELECT id FROM testruns WHERE build_id = ");
        first.bind(build).push(" ORDER BY id LIMIT 1");
        let Some((run,)) = tx.fetch_all::<(i64,)>(&first).await?.into_iter().next() else {
            delete_build_row(&mut tx, build).await?;
            steps.last(tx).await?;
            return Ok(progress);
        };
        let tests = delete_results_batch(&mut tx, "tests", run, batch_rows).await?.len() as u64;
        if tests > 0 {
            progress.tests += tests;
        } else {
            let metrics = delete_results_batch(&mut tx, "metrics", run, batch_rows).await?.len() as u64;
            if metrics > 0 {
                progress.metrics += metrics;
            } else {
                delete_run_row(&mut tx, run).await?;
                progress.runs += 1;
            }
        }
        progress.transactions += 1;
        steps.step(tx, &progress).await?;
    }
}

/// What deleting build `build` would delete (for a dry run).
pub async fn count(store: &Store, build: i64) -> Result<Deletion, RetentionError> {
    let of_runs = |table: &str| {
        let mut sql = Sql::new(&format!(
            "SELECT COUNT(*) FROM {table} WHERE test_run_id IN (SELECT id FROM testruns WHERE build_id = "
        ));
        sql.bind(build).push(")");
        sql
    };
    let mut runs = Sql::new("SELECT COUNT(*) FROM testruns WHERE build_id = ");
    runs.bind(build);
    Ok(Deletion {
        tests: store.fetch_count(&of_runs("tests")).await? as u64,
        metrics: store.fetch_count(&of_runs("metrics")).await? as u64,
        runs: store.fetch_count(&runs).await? as u64,
        transactions: 0,
    })
}

/// Hides the build's runs from every read and from their writers (step 1
/// of the module documentation).
async fn hide_runs(tx: &mut WriteTx, build: i64) -> Result<(), RetentionError> {
    let mut sql = Sql::new(
        "UPDATE testruns SET visible = FALSE, ingest_owner = NULL, ingest_heartbeat_at = NULL, \
         ingest_created_build = FALSE, ingest_created_environment = FALSE \
         WHERE (visible OR ingest_owner IS NOT NULL OR ingest_heartbeat_at IS NOT NULL) AND build_id = ",
    );
    sql.bind(build);
    tx.execute(&sql).await?;
    Ok(())
}

/// Deletes the build row, now without runs, and records its placeholder.
async fn delete_build_row(tx: &mut WriteTx, build: i64) -> Result<(), RetentionError> {
    let mut delete = Sql::new("DELETE FROM builds WHERE id = ");
    delete.bind(build).push(" RETURNING project_id, version");
    for (project, version) in tx.fetch_all::<(i64, String)>(&delete).await? {
        let mut placeholder =
            Sql::new("INSERT INTO build_placeholders (project_id, version, build_deleted_at) VALUES (");
        placeholder
            .bind(project)
            .push(", ")
            .bind(version)
            .push(", ")
            .bind(Utc::now())
            .push(") ON CONFLICT (project_id, version) DO UPDATE SET build_deleted_at = excluded.build_deleted_at");
        tx.execute(&placeholder).await?;
    }
    Ok(())
}
