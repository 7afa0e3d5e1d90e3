//! The blob sweep: removing blob files that no row refers to any more.
//!
//! Blob files are written before the rows that refer to them: an upload
//! streams every file of a submission to the blob store first, then creates
//! the (hidden) test run and its attachments, which refer to the keys from
//! then on. So a blob without a row may be one being uploaded. The sweep
//! therefore removes a file only when
//!
//! - no row refers to its key (every column of [`REFERENCES`], in hidden
//!   runs too), and
//! - the file has not been written for the grace period
//!   ([`RetentionOptions::blob_grace`](super::RetentionOptions)), longer
//!   than any upload takes between writing a blob and creating its row.
//!   The file's own modification time is the mark: writing content that is
//!   already stored replaces the file with a fresh one, so a blob an upload
//!   wrote again is young whatever its first writing. The last look at the
//!   time is taken after the file was moved aside, so an upload storing the
//!   same content meanwhile is never lost (see
//!   [`BlobStore::remove_unless_written_since`]).
//!
//! Rows are deleted first (by the build deletions), their files by a later
//! sweep. A pass walks the store one shard (first two hex digits of the
//! key, 256 in all) at a time and, within a shard, one directory at a time,
//! so it never holds more than a directory's keys; the queue task
//! checkpoints after each shard. A pass also puts back or forgets the blobs
//! a removal cut short left aside, and removes the partial files of
//! writers that died.

use std::collections::HashSet;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{DataRetention, RetentionError};
use crate::blob::StoredBlob;
use crate::sql::{Sql, Value};
use crate::Store;

/// Every column holding blob keys, as `(table, column)`. A new one must be
/// added here, or the sweep removes the files it refers to.
pub const REFERENCES: [(&str, &str); 5] = [
    ("testruns", "tests_file"),
    ("testruns", "metrics_file"),
    ("testruns", "log_file"),
    ("attachments", "blob"),
    ("testjobs", "results_blob"),
];

/// Shards of the blob store: the first byte of the key.
pub const SHARDS: u16 = 256;

/// Keys looked up per query.
const LOOKUP_KEYS: usize = 200;

/// What a sweep pass did (or, dry, would do) so far: its checkpoint.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    /// The next shard to sweep (all done at [`SHARDS`]).
    pub next_shard: u16,
    /// Blob files looked at.
    pub examined: u64,
    /// Of those, written within the grace period (kept without a look at
    /// the rows).
    pub young: u64,
    /// Of those, referred to by a row (kept).
    pub referenced: u64,
    /// Removed (or to remove).
    pub removed: u64,
    /// Their bytes.
    pub removed_bytes: u64,
    /// Partial files of dead writers removed.
    pub partials: u64,
}

/// Starts a pass: settles the blobs a cut-short removal left aside (put
/// back if a row refers to them, else forgotten) and removes partial files
/// older than `cutoff`.
pub(crate) async fn begin_pass(
    cx: &DataRetention,
    cutoff: SystemTime,
    report: &mut SweepReport,
) -> Result<(), RetentionError> {
    let aside = cx.blobs.set_aside()?;
    let referenced = referenced(&cx.store, &aside).await?;
    for key in &aside {
        if referenced.contains(key) {
            cx.blobs.put_back(key)?;
        } else {
            cx.blobs.discard_set_aside(key)?;
        }
    }
    report.partials += cx.blobs.remove_abandoned_partials(cutoff)? as u64;
    Ok(())
}

/// Sweeps shard `report.next_shard` and moves the report on to the next.
pub(crate) async fn sweep_shard(
    cx: &DataRetention,
    cutoff: SystemTime,
    dry_run: bool,
    report: &mut SweepReport,
) -> Result<(), RetentionError> {
    let shard = u8::try_from(report.next_shard).expect("a shard left to sweep");
    for directory in cx.blobs.shard(shard)? {
        let (old, young): (Vec<StoredBlob>, Vec<StoredBlob>) =
            directory?.into_iter().partition(|blob| blob.modified < cutoff);
        report.examined += (old.len() + young.len()) as u64;
        report.young += young.len() as u64;
        for chunk in old.chunks(LOOKUP_KEYS) {
            let keys: Vec<String> = chunk.iter().map(|b| b.key.clone()).collect();
            let referenced = referenced(&cx.store, &keys).await?;
            for blob in chunk {
                if referenced.contains(&blob.key) {
                    report.referenced += 1;
                } else if dry_run || cx.blobs.remove_unless_written_since(&blob.key, cutoff)? {
                    report.removed += 1;
                    report.removed_bytes += blob.length;
                }
            }
        }
    }
    report.next_shard += 1;
    Ok(())
}

/// A whole pass at once (`squadron admin cleanup`).
pub(crate) async fn sweep_all(cx: &DataRetention, dry_run: bool) -> Result<SweepReport, RetentionError> {
    let cutoff = cutoff(cx);
    let mut report = SweepReport::default();
    if !dry_run {
        begin_pass(cx, cutoff, &mut report).await?;
    }
    while report.next_shard < SHARDS {
        sweep_shard(cx, cutoff, dry_run, &mut report).await?;
    }
    Ok(report)
}

/// Files last written before this may be removed.
pub(crate) fn cutoff(cx: &DataRetention) -> SystemTime {
    SystemTime::now() - cx.options.blob_grace
}

/// The keys among `keys` that some row refers to.
async fn referenced(store: &Store, keys: &[String]) -> Result<HashSet<String>, RetentionError> {
    let mut found = HashSet::new();
    for chunk in keys.chunks(LOOKUP_KEYS) {
        let mut sql = Sql::default();
        for (i, (table, column)) in REFERENCES.iter().enumerate() {
            if i > 0 {
                sql.push(" UNION ");
            }
            sql.push(&format!("SELECT {column} FROM {table} WHERE {column} IN "))
                .bind_list(chunk.iter().map(|k| Value::from(k.as_str())));
        }
        found.extend(store.fetch_all::<(String,)>(&sql).await?.into_iter().map(|(key,)| key));
    }
    Ok(found)
}
