//! One batch of tests or metrics: prepared outside any write transaction
//! (repeated names folded, names looked up, known issues matched), then
//! written by a self-contained job in one short transaction. Jobs own
//! their data, so on PostgreSQL several can be in flight at once.

use std::collections::HashMap;
use std::future::Future;

use sqlx::{QueryBuilder, Row};
use squadron_core::known_issues::KnownIssueMatcher;
use squadron_core::names::join_name;
use squadron_core::results::TestStatus;
use squadron_core::submission::{SubmittedMetric, SubmittedTest};
use squadron_core::summary::RunStatus;

use super::names::{intern_missing, revalidate, values_placeholders, NameKind};
use super::plain_insert;
use super::run::{claim_suites, SuiteClaim, Writer};
use super::IngestError;
use crate::db::{EngineTx, WriteTx};
use crate::{Store, StoreError};

/// A submitted item with a suite and a name.
pub(crate) trait Named: Send + Sync + Sized + 'static {
    /// The kind its name is interned as.
    const KIND: NameKind;
    /// `(suite, name)`.
    fn key(&self) -> (&str, &str);
    /// Writes a batch of such items.
    fn write(job: Job<Self>) -> impl Future<Output = Result<Written, IngestError>> + Send + 'static;
}

impl Named for SubmittedTest {
    const KIND: NameKind = NameKind::Test;
    fn key(&self) -> (&str, &str) {
        (&self.suite, &self.name)
    }
    fn write(job: Job<Self>) -> impl Future<Output = Result<Written, IngestError>> + Send + 'static {
        write_tests(job)
    }
}

impl Named for SubmittedMetric {
    const KIND: NameKind = NameKind::Metric;
    fn key(&self) -> (&str, &str) {
        (&self.suite, &self.name)
    }
    fn write(job: Job<Self>) -> impl Future<Output = Result<Written, IngestError>> + Send + 'static {
        write_metrics(job)
    }
}

/// A batch made ready outside any write transaction: repeated names
/// folded, interned names looked up, known issues matched. Preparing the
/// next batch overlaps with writing the previous one.
pub(crate) struct Prepared<T> {
    items: Vec<T>,
    ids: Vec<Option<i64>>,
    /// The name epoch the ids were looked up at.
    epoch: i64,
    /// Known issues matching each item (tests only; empty when none can match).
    issues: Vec<Vec<i64>>,
}

impl<T: Named> Prepared<T> {
    /// Prepares a parsed batch.
    pub(crate) async fn new(
        store: &Store,
        known_issues: &KnownIssueMatcher,
        batch: Vec<T>,
    ) -> Result<Self, StoreError> {
        let items = dedupe(batch, T::key);
        let keys: Vec<(&str, &str)> = items.iter().map(T::key).collect();
        let epoch = store.name_epoch().await?;
        let ids = store.resolve_names(epoch, T::KIND, &keys).await?;
        let issues = if T::KIND == NameKind::Test && !known_issues.is_empty() {
            keys.iter().map(|(suite, name)| known_issues.matches(&join_name(suite, name))).collect()
        } else {
            Vec::new()
        };
        Ok(Prepared { items, ids, epoch, issues })
    }
}

/// Keeps the first position and the last value of each key, like a JSON
/// object read by Python's `json` module.
pub(crate) fn dedupe<T>(batch: Vec<T>, key: impl Fn(&T) -> (&str, &str)) -> Vec<T> {
    let keep: Vec<usize> = {
        let mut last: HashMap<(&str, &str), usize> = HashMap::with_capacity(batch.len());
        for (i, item) in batch.iter().enumerate() {
            last.insert(key(item), i);
        }
        if last.len() == batch.len() {
            return batch;
        }
        batch.iter().filter_map(|item| last.remove(&key(item))).collect()
    };
    let mut slots: Vec<Option<T>> = batch.into_iter().map(Some).collect();
    keep.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// A prepared batch with everything its write needs.
pub(crate) struct Job<T> {
    pub(crate) store: Store,
    pub(crate) run: RunIds,
    /// Who writes the run; the write fails if it no longer may.
    pub(crate) owner: Writer,
    /// The suites of the items.
    pub(crate) suites: SuiteClaim,
    pub(crate) batch: Prepared<T>,
}

/// What a written batch adds to its run.
pub(crate) struct Written {
    /// The batch's share of the run's status rows.
    pub(crate) status: RunStatus<i64>,
    /// Rows written.
    pub(crate) rows: i64,
    /// Whether some name was already in the run (from an earlier batch):
    /// the last value was kept, and the run's counts must be recomputed.
    pub(crate) repeated: bool,
    /// Suites the batch claimed for the run, by slug.
    pub(crate) claimed_suites: Vec<(String, i64)>,
}

impl<T: Named> Prepared<T> {
    /// A hash of each item's `(suite, name)`.
    pub(crate) fn key_hashes(&self) -> impl Iterator<Item = u64> + '_ {
        self.items.iter().map(|item| {
            let mut hasher = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&item.key(), &mut hasher);
            std::hash::Hasher::finish(&hasher)
        })
    }

    /// `(suite, name)` of each item.
    pub(crate) fn keys(&self) -> Vec<(&str, &str)> {
        self.items.iter().map(T::key).collect()
    }
}

/// Checks, in `tx`, that `owner` still owns the hidden run: a run being
/// removed has lost its owner, and no batch may land in it any more. On
/// PostgreSQL the run is share-locked until `tx` ends, so the removal
/// waits for batches already being written.
async fn check_owner(tx: &mut WriteTx, run: i64, owner: &Writer) -> Result<(), IngestError> {
    let (condition, owner) = match owner {
        Writer::Hidden(owner) => ("ingest_owner = $2", owner.as_str()),
        Writer::Visible => ("visible AND $2 = ''", ""),
    };
    let owned: Option<i64> = match &mut tx.tx {
        EngineTx::Sqlite(c) => {
            sqlx::query_scalar(&format!("SELECT id FROM testruns WHERE id = $1 AND {condition}"))
                .bind(run)
                .bind(owner)
                .fetch_optional(&mut **c)
                .await?
        }
        EngineTx::Postgres(c) => {
            sqlx::query_scalar(&format!("SELECT id FROM testruns WHERE id = $1 AND {condition} FOR SHARE"))
                .bind(run)
                .bind(owner)
                .fetch_optional(&mut **c)
                .await?
        }
    };
    owned.map(|_| ()).ok_or(IngestError::Swept)
}

/// Names whose ids a write transaction read or made, for the name cache
/// once it commits (an id interned in a transaction rolled back may be
/// given to another name later).
struct Learned {
    /// The name epoch the ids are valid at.
    epoch: i64,
    /// Positions of the names in the batch.
    positions: Vec<usize>,
}

impl Learned {
    /// Puts the learned ids into the name cache; call after the commit.
    fn remember<T: Named>(self, job: &Job<T>) {
        let Prepared { items, ids, .. } = &job.batch;
        let keys: Vec<(&str, &str)> = self.positions.iter().map(|&i| items[i].key()).collect();
        let learned: Vec<Option<i64>> = self.positions.iter().map(|&i| ids[i]).collect();
        job.store.name_cache().put(self.epoch, T::KIND, &keys, &learned);
    }
}

/// What a job's transaction adds to its batch before writing it.
struct Opened {
    tx: WriteTx,
    /// The suite of each item.
    suite_ids: Vec<i64>,
    claimed_suites: Vec<(String, i64)>,
    learned: Learned,
}

/// Opens the write transaction of a job: ownership checked, suites new to
/// the run claimed, names made valid and interned.
async fn begin_job<T: Named>(job: &mut Job<T>) -> Result<Opened, IngestError> {
    let mut tx = job.store.begin_write().await?;
    check_owner(&mut tx, job.run.test_run, &job.owner).await?;
    let claimed_suites = if job.suites.new.is_empty() {
        Vec::new()
    } else {
        claim_suites(&mut tx, job.run.project, job.run.test_run, &job.suites.new).await?
    };
    let claimed: HashMap<&str, i64> = claimed_suites.iter().map(|(slug, id)| (slug.as_str(), *id)).collect();
    let suite_ids = (job.suites.ids.iter().zip(&job.batch.items))
        .map(|(id, item)| id.or_else(|| claimed.get(item.key().0).copied()).expect("claimed"))
        .collect();
    let Prepared { items, ids, epoch, .. } = &mut job.batch;
    let keys: Vec<(&str, &str)> = items.iter().map(T::key).collect();
    let valid_at = revalidate(&mut tx, *epoch, T::KIND, &keys, ids).await?;
    // Names looked up again under a new epoch are all worth caching;
    // otherwise only those interned now.
    let positions = (0..ids.len()).filter(|&i| valid_at != *epoch || ids[i].is_none()).collect();
    intern_missing(&mut tx, T::KIND, &keys, ids).await?;
    Ok(Opened { tx, suite_ids, claimed_suites, learned: Learned { epoch: valid_at, positions } })
}

/// Writes a batch of tests in one transaction.
async fn write_tests(mut job: Job<SubmittedTest>) -> Result<Written, IngestError> {
    let Opened { mut tx, suite_ids, claimed_suites, learned } = begin_job(&mut job).await?;
    let Job { run, batch, .. } = &job;
    let has_issue = |i: usize| batch.issues.get(i).is_some_and(|v| !v.is_empty());
    let rows: Vec<TestRow> = batch
        .items
        .iter()
        .enumerate()
        .map(|(i, t)| TestRow {
            suite_id: suite_ids[i],
            metadata_id: batch.ids[i].expect("interned"),
            result: t.result,
            has_known_issues: has_issue(i),
            log: t.log.as_deref(),
        })
        .collect();
    let want_ids = !batch.issues.is_empty();
    let inserted = insert_tests(&mut tx, *run, &rows, Conflict::Ignore, want_ids).await?;
    let repeated = inserted.inserted < rows.len();
    if repeated {
        // A name from an earlier batch of the run: the last value wins.
        insert_tests(&mut tx, *run, &rows, Conflict::Update, false).await?;
    }
    if want_ids {
        link_known_issues(&mut tx, &inserted.by_metadata, &rows, &batch.issues).await?;
    }
    tx.commit().await?;
    learned.remember(&job);
    let mut status = RunStatus::default();
    for row in &rows {
        status.add_test(row.suite_id, TestStatus::of(row.result, row.has_known_issues));
    }
    Ok(Written { status, repeated, rows: rows.len() as i64, claimed_suites })
}

/// Writes a batch of metrics in one transaction.
async fn write_metrics(mut job: Job<SubmittedMetric>) -> Result<Written, IngestError> {
    let Opened { mut tx, suite_ids, claimed_suites, learned } = begin_job(&mut job).await?;
    let Job { run, batch, .. } = &job;
    let rows: Vec<MetricRow> = batch
        .items
        .iter()
        .enumerate()
        .map(|(i, m)| MetricRow {
            suite_id: suite_ids[i],
            metadata_id: batch.ids[i].expect("interned"),
            result: m.result,
            measurements: format_measurements(&m.measurements),
            unit: m.unit.as_deref(),
        })
        .collect();
    let repeated = insert_metrics(&mut tx, *run, &rows, Conflict::Ignore).await? < rows.len();
    if repeated {
        insert_metrics(&mut tx, *run, &rows, Conflict::Update).await?;
    }
    tx.commit().await?;
    learned.remember(&job);
    let mut status = RunStatus::default();
    for (row, metric) in rows.iter().zip(&batch.items) {
        status.add_metric(row.suite_id, &metric.measurements);
    }
    Ok(Written { status, repeated, rows: rows.len() as i64, claimed_suites })
}

/// Formats measurements as SQUAD stores them: comma-separated.
pub(crate) fn format_measurements(values: &[f64]) -> String {
    values.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(",")
}

/// Parses stored measurements back.
pub fn parse_measurements(text: &str) -> Vec<f64> {
    text.split(',').filter_map(|v| v.trim().parse().ok()).collect()
}

#[derive(Clone, Copy)]
pub(crate) struct RunIds {
    pub(crate) project: i64,
    pub(crate) test_run: i64,
    pub(crate) build: i64,
    pub(crate) environment: i64,
}

pub(crate) struct TestRow<'a> {
    pub(crate) suite_id: i64,
    pub(crate) metadata_id: i64,
    pub(crate) result: Option<bool>,
    pub(crate) has_known_issues: bool,
    pub(crate) log: Option<&'a str>,
}

pub(crate) struct MetricRow<'a> {
    suite_id: i64,
    metadata_id: i64,
    result: f64,
    measurements: String,
    unit: Option<&'a str>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conflict {
    /// Leave an existing row with the same name alone.
    Ignore,
    /// Overwrite an existing row with the same name.
    Update,
}

/// What an insert of tests did.
pub(crate) struct Inserted {
    inserted: usize,
    /// Ids of the inserted rows by metadata id, when asked for.
    by_metadata: HashMap<i64, i64>,
}

fn on_conflict(conflict: Conflict, columns: &str) -> String {
    match conflict {
        Conflict::Ignore => " ON CONFLICT DO NOTHING".to_string(),
        Conflict::Update => {
            let sets: Vec<String> = columns.split(", ").map(|c| format!("{c} = excluded.{c}")).collect();
            format!(" ON CONFLICT (test_run_id, metadata_id) DO UPDATE SET {}", sets.join(", "))
        }
    }
}

pub(crate) async fn insert_tests(
    tx: &mut WriteTx,
    run: RunIds,
    rows: &[TestRow<'_>],
    conflict: Conflict,
    want_ids: bool,
) -> Result<Inserted, StoreError> {
    let head = "INSERT INTO tests (test_run_id, build_id, environment_id, suite_id, metadata_id, result, has_known_issues, log) SELECT";
    let returning = if want_ids { " RETURNING id, metadata_id" } else { "" };
    let tail = on_conflict(conflict, "result, has_known_issues, log") + returning;
    let (returned, inserted): (Vec<(i64, i64)>, u64) = match &mut tx.tx {
        EngineTx::Sqlite(c) => {
            let sql = format!(
                "{head} ?, ?, ?, column1, column2, column3, column4, column5 FROM (VALUES {}) WHERE true{tail}",
                values_placeholders(5, rows.len())
            );
            let mut q = sqlx::query(&sql).bind(run.test_run).bind(run.build).bind(run.environment);
            for r in rows {
                q = q.bind(r.suite_id).bind(r.metadata_id).bind(r.result).bind(r.has_known_issues).bind(r.log);
            }
            if want_ids {
                let found: Vec<(i64, i64)> =
                    q.fetch_all(&mut **c).await?.iter().map(|r| (r.get(0), r.get(1))).collect();
                let n = found.len() as u64;
                (found, n)
            } else {
                (Vec::new(), q.execute(&mut **c).await?.rows_affected())
            }
        }
        EngineTx::Postgres(c) => {
            let select = format!("{head} $1, $2, $3, s, m, r, k, l FROM UNNEST($4::bigint[], $5::bigint[], $6::bool[], $7::bool[], $8::text[]) AS v(s, m, r, k, l)");
            let columns = TestColumns::of(run, rows);
            let with_clause = format!("{select}{tail}");
            if conflict == Conflict::Ignore {
                let plain = format!("{select}{returning}");
                plain_insert::begin(c).await?;
                let outcome = columns.insert(c, &plain, want_ids).await;
                match plain_insert::settle(c, outcome).await? {
                    Some(done) => done,
                    None => columns.insert(c, &with_clause, want_ids).await?,
                }
            } else {
                columns.insert(c, &with_clause, want_ids).await?
            }
        }
    };
    Ok(Inserted { inserted: inserted as usize, by_metadata: returned.into_iter().map(|(id, m)| (m, id)).collect() })
}

/// Test rows as PostgreSQL's `UNNEST` takes them, one array per column.
struct TestColumns<'a> {
    run: RunIds,
    suites: Vec<i64>,
    names: Vec<i64>,
    results: Vec<Option<bool>>,
    known: Vec<bool>,
    logs: Vec<Option<&'a str>>,
}

impl<'a> TestColumns<'a> {
    fn of(run: RunIds, rows: &[TestRow<'a>]) -> Self {
        TestColumns {
            run,
            suites: rows.iter().map(|r| r.suite_id).collect(),
            names: rows.iter().map(|r| r.metadata_id).collect(),
            results: rows.iter().map(|r| r.result).collect(),
            known: rows.iter().map(|r| r.has_known_issues).collect(),
            logs: rows.iter().map(|r| r.log).collect(),
        }
    }

    /// Runs `sql` on the columns; returns `(id, metadata_id)` of the rows
    /// when asked for, and how many rows were inserted.
    async fn insert(
        &self,
        c: &mut sqlx::PgConnection,
        sql: &str,
        want_ids: bool,
    ) -> Result<(Vec<(i64, i64)>, u64), sqlx::Error> {
        let q = sqlx::query(sql)
            .bind(self.run.test_run)
            .bind(self.run.build)
            .bind(self.run.environment)
            .bind(&self.suites)
            .bind(&self.names)
            .bind(&self.results)
            .bind(&self.known)
            .bind(&self.logs);
        if want_ids {
            let found: Vec<(i64, i64)> = q.fetch_all(c).await?.iter().map(|r| (r.get(0), r.get(1))).collect();
            let n = found.len() as u64;
            Ok((found, n))
        } else {
            Ok((Vec::new(), q.execute(c).await?.rows_affected()))
        }
    }
}

pub(crate) async fn insert_metrics(
    tx: &mut WriteTx,
    run: RunIds,
    rows: &[MetricRow<'_>],
    conflict: Conflict,
) -> Result<usize, StoreError> {
    let head = "INSERT INTO metrics (test_run_id, build_id, environment_id, suite_id, metadata_id, result, measurements, unit) SELECT";
    let tail = on_conflict(conflict, "result, measurements, unit");
    let done = match &mut tx.tx {
        EngineTx::Sqlite(c) => {
            let sql = format!(
                "{head} ?, ?, ?, column1, column2, column3, column4, column5 FROM (VALUES {}) WHERE true{tail}",
                values_placeholders(5, rows.len())
            );
            let mut q = sqlx::query(&sql).bind(run.test_run).bind(run.build).bind(run.environment);
            for r in rows {
                q = q.bind(r.suite_id).bind(r.metadata_id).bind(r.result).bind(&r.measurements).bind(r.unit);
            }
            q.execute(&mut **c).await?.rows_affected()
        }
        EngineTx::Postgres(c) => {
            let sql = format!("{head} $1, $2, $3, s, m, r, ms, u FROM UNNEST($4::bigint[], $5::bigint[], $6::float8[], $7::text[], $8::text[]) AS v(s, m, r, ms, u){tail}");
            sqlx::query(&sql)
                .bind(run.test_run)
                .bind(run.build)
                .bind(run.environment)
                .bind(rows.iter().map(|r| r.suite_id).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.metadata_id).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.result).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.measurements.as_str()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.unit).collect::<Vec<_>>())
                .execute(&mut **c)
                .await?
                .rows_affected()
        }
    };
    Ok(done as usize)
}

async fn link_known_issues(
    tx: &mut WriteTx,
    ids: &HashMap<i64, i64>,
    rows: &[TestRow<'_>],
    issues: &[Vec<i64>],
) -> Result<(), StoreError> {
    let links: Vec<(i64, i64)> = rows
        .iter()
        .zip(issues)
        .filter_map(|(row, found)| ids.get(&row.metadata_id).map(|test_id| (*test_id, found)))
        .flat_map(|(test_id, found)| found.iter().map(move |issue| (test_id, *issue)))
        .collect();
    for chunk in links.chunks(5000) {
        with_tx!(tx, c => {
            let mut qb = QueryBuilder::new("INSERT INTO test_known_issues (test_id, known_issue_id) ");
            qb.push_values(chunk, |mut b, (test, issue)| {
                b.push_bind(*test).push_bind(*issue);
            });
            qb.push(" ON CONFLICT DO NOTHING");
            qb.build().execute(&mut *c).await?;
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_keeps_first_position_and_last_value() {
        let batch = vec![("a", "x", 1), ("b", "y", 2), ("a", "x", 3), ("c", "z", 4)];
        let out = dedupe(batch, |t| (t.0, t.1));
        assert_eq!(out, vec![("a", "x", 3), ("b", "y", 2), ("c", "z", 4)]);
        let unique = vec![("a", "x", 1), ("a", "y", 2)];
        assert_eq!(dedupe(unique.clone(), |t| (t.0, t.1)), unique);
    }

    #[test]
    fn measurements_round_trip() {
        let values = [10.0, 1.5, 1e300, -2.25, 1e-7];
        let text = format_measurements(&values);
        assert_eq!(text, "10.0,1.5,1e300,-2.25,1e-7");
        assert_eq!(parse_measurements(&text), values);
    }
}
