//! Data retention: SQUAD's `cleanup_old_builds`, without its long
//! transaction, and the sweep of blobs no row refers to any more.
//!
//! A project with `data_retention_days > 0` loses every build created
//! longer ago than that, unless the build has `keep_data`. Each build is
//! deleted by a task of its own ([`CleanupBuild`]) in short transactions
//! (see [`build`]), and leaves a placeholder (`build_placeholders`) with its
//! version. Blob files are removed later, by the sweep ([`SweepBlobs`],
//! see [`blobs`]), once no row refers to them.

pub mod blobs;
pub mod build;
mod tasks;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use squadron_queue::{Queue, TaskError};

use crate::blob::BlobStore;
use crate::sql::Sql;
use crate::{Store, StoreError};
pub use blobs::SweepReport;
pub use build::Deletion;
pub use tasks::{CleanupBuild, CleanupOldBuilds, SweepBlobs};

/// Rows one retention transaction deletes at most.
pub const DEFAULT_BATCH_ROWS: usize = 10_000;

/// How long a blob file must have gone unwritten before the sweep may
/// remove it: far longer than any upload takes between writing a blob and
/// creating the row that refers to it.
pub const DEFAULT_BLOB_GRACE: Duration = Duration::from_secs(24 * 60 * 60);

/// How retention runs.
#[derive(Debug, Clone)]
pub struct RetentionOptions {
    /// Rows (tests or metrics) one transaction deletes at most.
    pub batch_rows: usize,
    /// See [`DEFAULT_BLOB_GRACE`].
    pub blob_grace: Duration,
}

impl Default for RetentionOptions {
    fn default() -> Self {
        RetentionOptions { batch_rows: DEFAULT_BATCH_ROWS, blob_grace: DEFAULT_BLOB_GRACE }
    }
}

/// What the retention tasks need.
pub struct DataRetention {
    /// The store.
    pub store: Store,
    /// The blob store.
    pub blobs: BlobStore,
    /// Routes the build deletions the daily task enqueues.
    pub queue: Queue,
    /// Batch size and grace period.
    pub options: RetentionOptions,
}

/// Why a retention step failed.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue refused a step (the task was interrupted or fenced).
    #[error(transparent)]
    Step(#[from] TaskError),
}

impl From<sqlx::Error> for RetentionError {
    fn from(e: sqlx::Error) -> Self {
        RetentionError::Store(e.into())
    }
}

impl From<std::io::Error> for RetentionError {
    fn from(e: std::io::Error) -> Self {
        RetentionError::Store(e.into())
    }
}

impl From<RetentionError> for TaskError {
    fn from(e: RetentionError) -> Self {
        match e {
            RetentionError::Step(e) => e,
            RetentionError::Store(e) => TaskError::failed(e),
        }
    }
}

/// A build that data retention deletes.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ExpiredBuild {
    /// The build's id.
    pub id: i64,
    /// Its project.
    pub project_id: i64,
    /// Its version.
    pub version: String,
}

/// The builds of `project` that expired at `now` under a retention of
/// `days`: created before then and not kept.
fn expired_in(project: i64, days: i64, now: DateTime<Utc>) -> Sql {
    let cutoff = now - TimeDelta::days(days);
    let mut sql = Sql::new("SELECT id, project_id, version FROM builds WHERE NOT keep_data AND project_id = ");
    sql.bind(project).push(" AND created_at < ").bind(cutoff);
    sql
}

impl Store {
    /// Every build that data retention deletes at `now`, oldest first per
    /// project.
    pub async fn expired_builds(&self, now: DateTime<Utc>) -> Result<Vec<ExpiredBuild>, StoreError> {
        let projects: Vec<(i64, i64)> = self
            .fetch_all(&Sql::new(
                "SELECT id, data_retention_days FROM projects WHERE data_retention_days > 0 ORDER BY id",
            ))
            .await?;
        let mut expired = Vec::new();
        for (project, days) in projects {
            let mut sql = expired_in(project, days, now);
            sql.push(" ORDER BY created_at, id");
            expired.extend(self.fetch_all::<ExpiredBuild>(&sql).await?);
        }
        Ok(expired)
    }

    /// Build `id` if data retention deletes it at `now`.
    pub async fn expired_build(&self, id: i64, now: DateTime<Utc>) -> Result<Option<ExpiredBuild>, StoreError> {
        let mut project = Sql::new(
            "SELECT p.id, p.data_retention_days FROM projects p JOIN builds b ON b.project_id = p.id \
             WHERE p.data_retention_days > 0 AND b.id = ",
        );
        project.bind(id);
        let Some((project, days)) = self.fetch_optional::<(i64, i64)>(&project).await? else { return Ok(None) };
        let mut sql = expired_in(project, days, now);
        sql.push(" AND id = ").bind(id);
        self.fetch_optional(&sql).await
    }
}

/// What [`cleanup_now`] did, or would do.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// The builds deleted (or to delete), with what went with each.
    pub builds: Vec<(ExpiredBuild, Deletion)>,
    /// The blob sweep.
    pub blobs: SweepReport,
}

/// Runs a whole retention pass at once, outside the queue (`squadron admin
/// cleanup`): deletes the expired builds, one after the other, in the same
/// short transactions as the tasks, then sweeps the blobs. With `dry_run`,
/// only finds what it would delete.
pub async fn cleanup_now(cx: &DataRetention, dry_run: bool) -> Result<CleanupReport, RetentionError> {
    let mut report = CleanupReport::default();
    for expired in cx.store.expired_builds(Utc::now()).await? {
        let deletion = if dry_run {
            build::count(&cx.store, expired.id).await?
        } else {
            build::delete(&cx.store, expired.id, cx.options.batch_rows, Deletion::default(), &mut build::Steps::Direct)
                .await?
        };
        report.builds.push((expired, deletion));
    }
    report.blobs = blobs::sweep_all(cx, dry_run).await?;
    Ok(report)
}
