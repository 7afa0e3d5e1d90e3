//! A hidden run being ingested: created in one short transaction, filled in
//! batches, published in one short transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::TryStreamExt;
use sqlx::{QueryBuilder, Row};
use squadron_core::known_issues::KnownIssueMatcher;
use squadron_core::names::join_name;
use squadron_core::results::TestStatus;
use squadron_core::submission::{RunMetadata, SubmittedMetric, SubmittedTest};
use squadron_core::summary::{RunStatus, StatusRow};
use uuid::Uuid;

use super::discard::discard_run;
use super::names::{intern_missing, revalidate, values_placeholders, NameKind};
use super::{IngestError, Submission};
use crate::db::{EngineTx, WriteTx};
use crate::{Store, StoreError};

/// How often a writer renews its hidden run's heartbeat.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// A hidden run with the same `job_id` whose heartbeat is older than this
/// is an earlier attempt whose writer died; a retry removes it.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// How many times creating a run is retried when the build or environment
/// it found was removed meanwhile (by a concurrent discard).
const BEGIN_RETRIES: usize = 3;

pub(crate) struct HiddenRun<'s> {
    pub(crate) store: &'s Store,
    pub(crate) id: i64,
    owner: String,
    project_id: i64,
    build_id: i64,
    environment_id: i64,
    /// Suites this run uses, by slug; each has a status row for the run.
    suites: HashMap<String, i64>,
    status: RunStatus<i64>,
    /// Set when a name came twice across batches: the counts in `status`
    /// are then recomputed from the stored rows at publication.
    recount: bool,
    known_issues: Arc<KnownIssueMatcher>,
    last_heartbeat: Instant,
}

/// A submitted item with a suite and a name.
pub(crate) trait Named: Send + Sync + 'static {
    /// The kind its name is interned as.
    const KIND: NameKind;
    /// `(suite, name)`.
    fn key(&self) -> (&str, &str);
    /// Writes a prepared batch of such items into the run.
    fn write(
        run: &mut HiddenRun<'_>,
        batch: Prepared<Self>,
    ) -> impl std::future::Future<Output = Result<(), IngestError>> + Send
    where
        Self: Sized;
}

impl Named for SubmittedTest {
    const KIND: NameKind = NameKind::Test;
    fn key(&self) -> (&str, &str) {
        (&self.suite, &self.name)
    }
    fn write(
        run: &mut HiddenRun<'_>,
        batch: Prepared<Self>,
    ) -> impl std::future::Future<Output = Result<(), IngestError>> + Send {
        run.write_tests(batch)
    }
}

impl Named for SubmittedMetric {
    const KIND: NameKind = NameKind::Metric;
    fn key(&self) -> (&str, &str) {
        (&self.suite, &self.name)
    }
    fn write(
        run: &mut HiddenRun<'_>,
        batch: Prepared<Self>,
    ) -> impl std::future::Future<Output = Result<(), IngestError>> + Send {
        run.write_metrics(batch)
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
        let ids = store.lookup_names(T::KIND, &keys).await?;
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
fn dedupe<T>(batch: Vec<T>, key: impl Fn(&T) -> (&str, &str)) -> Vec<T> {
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

impl<'s> HiddenRun<'s> {
    /// Creates the hidden run (and its build and environment if needed) in
    /// one short transaction.
    pub(crate) async fn begin(store: &'s Store, s: &Submission) -> Result<HiddenRun<'s>, IngestError> {
        let mut attempt = 0;
        loop {
            match Self::try_begin(store, s).await {
                // A concurrent discard removed the build or environment we found.
                Err(IngestError::Store(e)) if e.is_foreign_key_violation() && attempt < BEGIN_RETRIES => attempt += 1,
                other => return other,
            }
        }
    }

    async fn try_begin(store: &'s Store, s: &Submission) -> Result<HiddenRun<'s>, IngestError> {
        let owner = Uuid::new_v4().to_string();
        let job_id = s.metadata.job_id.clone().unwrap_or_else(|| Uuid::new_v4().to_string());
        let now = Utc::now();
        let m = &s.metadata;
        let mut tx = store.begin_write().await?;
        let (id, build_id, environment_id, abandoned) = with_tx!(tx, c => {
            let build: Option<i64> = sqlx::query_scalar(
                "INSERT INTO builds (project_id, version, created_at, datetime) VALUES ($1, $2, $3, $3) \
                 ON CONFLICT (project_id, version) DO NOTHING RETURNING id",
            ).bind(s.project_id).bind(&s.build_version).bind(now).fetch_optional(&mut *c).await?;
            let (build_id, created_build) = match build {
                Some(id) => (id, true),
                None => (sqlx::query_scalar("SELECT id FROM builds WHERE project_id = $1 AND version = $2")
                    .bind(s.project_id).bind(&s.build_version).fetch_one(&mut *c).await?, false),
            };
            let env: Option<i64> = sqlx::query_scalar(
                "INSERT INTO environments (project_id, slug) VALUES ($1, $2) \
                 ON CONFLICT (project_id, slug) DO NOTHING RETURNING id",
            ).bind(s.project_id).bind(&s.environment_slug).fetch_optional(&mut *c).await?;
            let (environment_id, created_environment) = match env {
                Some(id) => (id, true),
                None => (sqlx::query_scalar("SELECT id FROM environments WHERE project_id = $1 AND slug = $2")
                    .bind(s.project_id).bind(&s.environment_slug).fetch_one(&mut *c).await?, false),
            };
            let duplicate: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM testruns WHERE build_id = $1 AND job_id = $2 AND visible",
            ).bind(build_id).bind(&job_id).fetch_optional(&mut *c).await?;
            if duplicate.is_some() {
                return Err(IngestError::DuplicateJobId(job_id));
            }
            let abandoned: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM testruns WHERE build_id = $1 AND job_id = $2 AND NOT visible AND ingest_heartbeat_at < $3",
            ).bind(build_id).bind(&job_id).bind(now - ABANDONED_AFTER).fetch_all(&mut *c).await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO testruns (build_id, environment_id, created_at, datetime, metadata_file, tests_file, \
                 metrics_file, log_file, completed, build_url, job_id, job_status, job_url, resubmit_url, \
                 visible, ingest_owner, ingest_heartbeat_at, ingest_created_build, ingest_created_environment) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, FALSE, $15, $3, $16, $17) RETURNING id",
            )
            .bind(build_id).bind(environment_id).bind(now).bind(m.datetime.unwrap_or(now)).bind(&m.text)
            .bind(s.tests_file.as_ref().map(|b| &b.key)).bind(s.metrics_file.as_ref().map(|b| &b.key))
            .bind(s.log_file.as_ref().map(|b| &b.key)).bind(s.completed).bind(&m.build_url).bind(&job_id)
            .bind(&m.job_status).bind(&m.job_url).bind(&m.resubmit_url).bind(&owner)
            .bind(created_build).bind(created_environment)
            .fetch_one(&mut *c).await?;
            for (filename, blob) in &s.attachments {
                sqlx::query("INSERT INTO attachments (test_run_id, filename, length, blob) VALUES ($1, $2, $3, $4)")
                    .bind(id).bind(filename).bind(blob.length as i64).bind(&blob.key)
                    .execute(&mut *c).await?;
            }
            (id, build_id, environment_id, abandoned)
        });
        tx.commit().await?;
        for earlier in abandoned {
            discard_run(store, earlier).await?;
        }
        let issues: Vec<(i64, String)> = with_reader!(store, pool => sqlx::query_as(
            "SELECT ki.id, ki.test_name FROM known_issues ki \
             JOIN known_issue_environments e ON e.known_issue_id = ki.id \
             WHERE e.environment_id = $1 AND ki.active ORDER BY ki.id",
        ).bind(environment_id).fetch_all(pool).await)?;
        Ok(HiddenRun {
            store,
            id,
            owner,
            project_id: s.project_id,
            build_id,
            environment_id,
            suites: HashMap::new(),
            status: RunStatus::default(),
            recount: false,
            known_issues: Arc::new(KnownIssueMatcher::new(issues.iter().map(|(id, p)| (*id, p.as_str())))),
            last_heartbeat: Instant::now(),
        })
    }

    /// Makes sure each suite of `slugs` exists in the project and has this
    /// run's status row; returns their ids, aligned with `slugs`. Suites new
    /// to the run are resolved together, in a few statements per batch.
    pub(crate) async fn ensure_suites(&mut self, tx: &mut WriteTx, slugs: &[&str]) -> Result<Vec<i64>, StoreError> {
        let mut new: Vec<&str> = slugs.iter().copied().filter(|s| !self.suites.contains_key(*s)).collect();
        new.sort_unstable();
        new.dedup();
        if !new.is_empty() {
            let (project, run) = (self.project_id, self.id);
            let found: Vec<(i64, String)> = with_tx!(tx, c => {
                let mut qb = QueryBuilder::new("SELECT id, slug FROM suites WHERE project_id = ");
                qb.push_bind(project).push(" AND slug IN (");
                let mut list = qb.separated(", ");
                for slug in &new {
                    list.push_bind(*slug);
                }
                list.push_unseparated(")");
                let mut found: Vec<(i64, String)> = qb.build_query_as().fetch_all(&mut *c).await?;
                let missing: Vec<&str> = new.iter().copied().filter(|n| !found.iter().any(|(_, s)| s == n)).collect();
                if !missing.is_empty() {
                    let mut qb = QueryBuilder::new("INSERT INTO suite_metadata (kind, suite, name) ");
                    qb.push_values(&missing, |mut b, slug| {
                        b.push("'suite'").push_bind(*slug).push("'-'");
                    });
                    qb.push(" ON CONFLICT DO NOTHING");
                    qb.build().execute(&mut *c).await?;
                    let mut qb = QueryBuilder::new("SELECT id, suite FROM suite_metadata WHERE kind = 'suite' AND name = '-' AND suite IN (");
                    let mut list = qb.separated(", ");
                    for slug in &missing {
                        list.push_bind(*slug);
                    }
                    list.push_unseparated(")");
                    let names: Vec<(i64, String)> = qb.build_query_as().fetch_all(&mut *c).await?;
                    let mut qb = QueryBuilder::new("INSERT INTO suites (project_id, slug, metadata_id) ");
                    qb.push_values(&names, |mut b, (metadata, slug)| {
                        b.push_bind(project).push_bind(slug.as_str()).push_bind(*metadata);
                    });
                    qb.push(" ON CONFLICT DO NOTHING");
                    qb.build().execute(&mut *c).await?;
                    let mut qb = QueryBuilder::new("SELECT id, slug FROM suites WHERE project_id = ");
                    qb.push_bind(project).push(" AND slug IN (");
                    let mut list = qb.separated(", ");
                    for slug in &missing {
                        list.push_bind(*slug);
                    }
                    list.push_unseparated(")");
                    found.extend(qb.build_query_as::<(i64, String)>().fetch_all(&mut *c).await?);
                }
                let mut qb = QueryBuilder::new("INSERT INTO statuses (test_run_id, suite_id) ");
                qb.push_values(&found, |mut b, (suite, _)| {
                    b.push_bind(run).push_bind(*suite);
                });
                qb.push(" ON CONFLICT DO NOTHING");
                qb.build().execute(&mut *c).await?;
                found
            });
            if found.len() != new.len() {
                return Err(StoreError::Invalid(format!("could not create the suites of {new:?}")));
            }
            self.suites.extend(found.into_iter().map(|(id, slug)| (slug, id)));
        }
        Ok(slugs.iter().map(|s| self.suites[*s]).collect())
    }

    async fn heartbeat_if_due(&mut self, tx: &mut WriteTx) -> Result<(), StoreError> {
        if self.last_heartbeat.elapsed() >= HEARTBEAT_EVERY {
            with_tx!(tx, c => sqlx::query("UPDATE testruns SET ingest_heartbeat_at = $2 WHERE id = $1")
                .bind(self.id).bind(Utc::now()).execute(&mut *c).await.map(|r| r.rows_affected()))?;
            self.last_heartbeat = Instant::now();
        }
        Ok(())
    }

    /// Writes one prepared batch of tests in one transaction.
    pub(crate) async fn write_tests(&mut self, batch: Prepared<SubmittedTest>) -> Result<(), IngestError> {
        let Prepared { items, ids: mut metadata, epoch, issues } = batch;
        let keys: Vec<(&str, &str)> = items.iter().map(Named::key).collect();
        let has_issue = |i: usize| issues.get(i).is_some_and(|v| !v.is_empty());
        let mut tx = self.store.begin_write().await?;
        let slugs: Vec<&str> = keys.iter().map(|k| k.0).collect();
        let suite_ids = self.ensure_suites(&mut tx, &slugs).await?;
        revalidate(&mut tx, epoch, NameKind::Test, &keys, &mut metadata).await?;
        intern_missing(&mut tx, NameKind::Test, &keys, &mut metadata).await?;
        let rows: Vec<TestRow> = items
            .iter()
            .enumerate()
            .map(|(i, t)| TestRow {
                suite_id: suite_ids[i],
                metadata_id: metadata[i].expect("interned"),
                result: t.result,
                has_known_issues: has_issue(i),
                log: t.log.as_deref(),
            })
            .collect();
        let want_ids = !issues.is_empty();
        let ids = insert_tests(&mut tx, self.ids(), &rows, Conflict::Ignore, want_ids).await?;
        if ids.inserted < rows.len() {
            // A name repeated from an earlier batch: the last value wins.
            insert_tests(&mut tx, self.ids(), &rows, Conflict::Update, false).await?;
            self.recount = true;
        }
        if want_ids {
            link_known_issues(&mut tx, &ids.by_metadata, &rows, &issues).await?;
        }
        self.heartbeat_if_due(&mut tx).await?;
        tx.commit().await?;
        for row in &rows {
            self.status.add_test(row.suite_id, TestStatus::of(row.result, row.has_known_issues));
        }
        Ok(())
    }

    /// Writes one prepared batch of metrics in one transaction.
    pub(crate) async fn write_metrics(&mut self, batch: Prepared<SubmittedMetric>) -> Result<(), IngestError> {
        let Prepared { items, ids: mut metadata, epoch, .. } = batch;
        let keys: Vec<(&str, &str)> = items.iter().map(Named::key).collect();
        let mut tx = self.store.begin_write().await?;
        let slugs: Vec<&str> = keys.iter().map(|k| k.0).collect();
        let suite_ids = self.ensure_suites(&mut tx, &slugs).await?;
        revalidate(&mut tx, epoch, NameKind::Metric, &keys, &mut metadata).await?;
        intern_missing(&mut tx, NameKind::Metric, &keys, &mut metadata).await?;
        let rows: Vec<MetricRow> = items
            .iter()
            .enumerate()
            .map(|(i, m)| MetricRow {
                suite_id: suite_ids[i],
                metadata_id: metadata[i].expect("interned"),
                result: m.result,
                measurements: format_measurements(&m.measurements),
                unit: m.unit.as_deref(),
            })
            .collect();
        if insert_metrics(&mut tx, self.ids(), &rows, Conflict::Ignore).await? < rows.len() {
            insert_metrics(&mut tx, self.ids(), &rows, Conflict::Update).await?;
            self.recount = true;
        }
        self.heartbeat_if_due(&mut tx).await?;
        tx.commit().await?;
        for (row, metric) in rows.iter().zip(items.iter()) {
            self.status.add_metric(row.suite_id, &metric.measurements);
        }
        Ok(())
    }

    /// The known issues of the run's environment (shared with the batches
    /// being prepared).
    pub(crate) fn known_issues(&self) -> Arc<KnownIssueMatcher> {
        self.known_issues.clone()
    }

    pub(crate) fn ids(&self) -> RunIds {
        RunIds { test_run: self.id, build: self.build_id, environment: self.environment_id }
    }

    /// Recomputes the status rows from the stored tests and metrics.
    async fn recount_status(&self) -> Result<RunStatus<i64>, StoreError> {
        let mut status = RunStatus::default();
        let counts: Vec<(i64, Option<bool>, Option<bool>, i64)> = with_reader!(self.store, pool => sqlx::query_as(
            "SELECT suite_id, result, has_known_issues, COUNT(*) FROM tests WHERE test_run_id = $1 \
             GROUP BY suite_id, result, has_known_issues",
        ).bind(self.id).fetch_all(pool).await)?;
        for (suite, result, known, n) in counts {
            status.add_tests(suite, TestStatus::of(result, known.unwrap_or(false)), n);
        }
        with_reader!(self.store, pool => {
            let mut rows = sqlx::query_as::<_, (i64, String)>("SELECT suite_id, measurements FROM metrics WHERE test_run_id = $1")
                .bind(self.id).fetch(pool);
            while let Some((suite, measurements)) = rows.try_next().await? {
                status.add_metric(suite, &parse_measurements(&measurements));
            }
        });
        Ok(status)
    }

    /// Writes the status rows and makes the run visible, in one short
    /// transaction; returns the run's id.
    pub(crate) async fn publish(&mut self, metadata: &RunMetadata) -> Result<i64, IngestError> {
        let status = if self.recount { self.recount_status().await? } else { std::mem::take(&mut self.status) };
        let mut tx = self.store.begin_write().await?;
        let mut versions: HashMap<i64, i64> = HashMap::new();
        for (slug, version) in &metadata.suite_versions {
            let Some(&suite_id) = self.suites.get(slug.as_str()) else {
                continue;
            };
            let id: i64 = with_tx!(tx, c => {
                sqlx::query("INSERT INTO suite_versions (suite_id, version, first_seen) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(suite_id).bind(version).bind(Utc::now()).execute(&mut *c).await?;
                sqlx::query_scalar("SELECT id FROM suite_versions WHERE suite_id = $1 AND version = $2")
                    .bind(suite_id).bind(version).fetch_one(&mut *c).await?
            });
            versions.insert(suite_id, id);
        }
        let mut rows: Vec<(Option<i64>, StatusRow)> = status.suites.into_iter().map(|(s, r)| (Some(s), r)).collect();
        rows.sort_by_key(|(s, _)| *s);
        rows.push((None, status.total));
        let published = with_tx!(tx, c => {
            sqlx::query("DELETE FROM statuses WHERE test_run_id = $1").bind(self.id).execute(&mut *c).await?;
            for chunk in rows.chunks(1000) {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO statuses (test_run_id, suite_id, suite_version_id, tests_pass, tests_fail, \
                     tests_xfail, tests_skip, metrics_summary, has_metrics) ",
                );
                qb.push_values(chunk, |mut b, (suite, row)| {
                    b.push_bind(self.id)
                        .push_bind(*suite)
                        .push_bind(suite.and_then(|s| versions.get(&s).copied()))
                        .push_bind(row.tests.pass)
                        .push_bind(row.tests.fail)
                        .push_bind(row.tests.xfail)
                        .push_bind(row.tests.skip)
                        .push_bind(row.metrics_summary.value())
                        .push_bind(row.has_metrics);
                });
                qb.build().execute(&mut *c).await?;
            }
            let flipped = sqlx::query(
                "UPDATE testruns SET visible = TRUE, data_processed = TRUE, status_recorded = TRUE, \
                 ingest_owner = NULL, ingest_heartbeat_at = NULL WHERE id = $1 AND ingest_owner = $2",
            ).bind(self.id).bind(&self.owner).execute(&mut *c).await;
            match flipped {
                Ok(done) if done.rows_affected() == 0 => Err(IngestError::Swept),
                Ok(_) => {
                    sqlx::query("UPDATE builds SET datetime = r.datetime FROM testruns r \
                                 WHERE r.id = $1 AND builds.id = r.build_id AND builds.datetime > r.datetime")
                        .bind(self.id).execute(&mut *c).await?;
                    Ok(())
                }
                Err(e) => {
                    let e = StoreError::from(e);
                    if e.is_unique_violation() {
                        let job_id: Option<String> = sqlx::query_scalar("SELECT job_id FROM testruns WHERE id = $1")
                            .bind(self.id).fetch_one(&mut *c).await.ok().flatten();
                        Err(IngestError::DuplicateJobId(job_id.unwrap_or_default()))
                    } else {
                        Err(e.into())
                    }
                }
            }
        });
        published?;
        tx.commit().await?;
        Ok(self.id)
    }
}

/// Formats measurements as SQUAD stores them: comma-separated.
fn format_measurements(values: &[f64]) -> String {
    values.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(",")
}

/// Parses stored measurements back.
pub fn parse_measurements(text: &str) -> Vec<f64> {
    text.split(',').filter_map(|v| v.trim().parse().ok()).collect()
}

#[derive(Clone, Copy)]
pub(crate) struct RunIds {
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

struct MetricRow<'a> {
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
    let tail = on_conflict(conflict, "result, has_known_issues, log")
        + if want_ids { " RETURNING id, metadata_id" } else { "" };
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
            let sql = format!("{head} $1, $2, $3, s, m, r, k, l FROM UNNEST($4::bigint[], $5::bigint[], $6::bool[], $7::bool[], $8::text[]) AS v(s, m, r, k, l){tail}");
            let q = sqlx::query(&sql)
                .bind(run.test_run)
                .bind(run.build)
                .bind(run.environment)
                .bind(rows.iter().map(|r| r.suite_id).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.metadata_id).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.result).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.has_known_issues).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.log).collect::<Vec<_>>());
            if want_ids {
                let found: Vec<(i64, i64)> =
                    q.fetch_all(&mut **c).await?.iter().map(|r| (r.get(0), r.get(1))).collect();
                let n = found.len() as u64;
                (found, n)
            } else {
                (Vec::new(), q.execute(&mut **c).await?.rows_affected())
            }
        }
    };
    Ok(Inserted { inserted: inserted as usize, by_metadata: returned.into_iter().map(|(id, m)| (m, id)).collect() })
}

async fn insert_metrics(
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

#[cfg(all(test, feature = "testing"))]
mod race_tests {
    use super::*;
    use crate::projects::NewProject;
    #[allow(unused_imports)]
    use crate::testing::TestDb;

    fn submission(project_id: i64, build: &str) -> Submission {
        Submission {
            project_id,
            build_version: build.into(),
            environment_slug: "env".into(),
            metadata: RunMetadata::default(),
            tests_file: None,
            metrics_file: None,
            log_file: None,
            attachments: Vec::new(),
            completed: true,
        }
    }

    fn tests(names: &[&str]) -> Vec<SubmittedTest> {
        names
            .iter()
            .map(|n| SubmittedTest { suite: "s".into(), name: n.to_string(), result: Some(true), log: None })
            .collect()
    }

    crate::both_engines! {
        async fn names_deleted_between_lookup_and_write_are_looked_up_again(db: TestDb) {
            let s = &db.store;
            let group = s.create_group("g", None).await.unwrap();
            let project = s.create_project(NewProject { group_id: group.id, slug: "p", is_public: true, ..Default::default() }).await.unwrap();
            // Run X interns the names, then is being rejected...
            let mut x = HiddenRun::begin(s, &submission(project.id, "x")).await.unwrap();
            let batch = Prepared::new(s, &x.known_issues(), tests(&["a", "b"])).await.unwrap();
            x.write_tests(batch).await.unwrap();
            // ...while run Y has looked the same names up.
            let mut y = HiddenRun::begin(s, &submission(project.id, "y")).await.unwrap();
            let prepared = Prepared::new(s, &y.known_issues(), tests(&["a", "b", "c"])).await.unwrap();
            assert!(prepared.ids[0].is_some() && prepared.ids[1].is_some());
            // X's removal deletes the names nothing else refers to yet.
            crate::ingest::discard::discard_run(s, x.id).await.unwrap();
            assert_eq!(db.scalar("SELECT COUNT(*) FROM suite_metadata WHERE kind = 'test'").await, 0);
            y.write_tests(prepared).await.unwrap();
            let dangling = db.scalar("SELECT COUNT(*) FROM tests t WHERE NOT EXISTS (SELECT 1 FROM suite_metadata m WHERE m.id = t.metadata_id)").await;
            assert_eq!(dangling, 0, "every test refers to an existing name");
            assert_eq!(db.scalar("SELECT COUNT(*) FROM tests").await, 3);
        }
    }
}
