//! A hidden run being ingested: created in one short transaction, filled in
//! batches, published in one short transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::TryStreamExt;
use sqlx::QueryBuilder;
use squadron_core::known_issues::KnownIssueMatcher;
use squadron_core::results::TestStatus;
use squadron_core::submission::RunMetadata;
use squadron_core::summary::{RunStatus, StatusRow};
use uuid::Uuid;

use super::batch::{parse_measurements, Job, Named, Prepared, RunIds, Written};
use super::discard::discard_run;
use super::{IngestError, Submission};

use crate::db::WriteTx;
use crate::{Store, StoreError};

/// How often a writer renews its hidden run's heartbeat.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// A hidden run with the same `job_id` whose heartbeat is older than this
/// is an earlier attempt whose writer died; a retry removes it.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// How many times creating a run is retried when the build or environment
/// it found was removed meanwhile (by a concurrent discard).
const BEGIN_RETRIES: usize = 3;

/// Who may write a run's rows.
#[derive(Clone)]
pub(crate) enum Writer {
    /// The owner of a hidden run being ingested.
    Hidden(String),
    /// A visible run reopened to add post-processing output.
    Visible,
}

/// A run being written: a hidden run being ingested, or a visible run
/// reopened to add post-processing output.
pub(crate) struct HiddenRun<'s> {
    pub(crate) store: &'s Store,
    pub(crate) id: i64,
    owner: Writer,
    project_id: i64,
    build_id: i64,
    environment_id: i64,
    /// Suites this run uses, by slug; each has a status row for the run.
    suites: HashMap<String, i64>,
    status: RunStatus<i64>,
    /// Tests and metrics written.
    written: i64,
    /// Set when a name came twice across batches: the counts in `status`
    /// are then recomputed from the stored rows at publication.
    recount: bool,
    known_issues: Arc<KnownIssueMatcher>,
    last_heartbeat: Instant,
    /// A recount made ahead of publication, with the rows it covers.
    counted: Option<(RowStamp, RunStatus<i64>)>,
}

/// The newest test and metric ids of a run (0 without any): the rows a
/// count covers.
type RowStamp = (i64, i64);

const ROW_STAMP: &str = "SELECT COALESCE((SELECT MAX(id) FROM tests WHERE test_run_id = $1), 0), \
     COALESCE((SELECT MAX(id) FROM metrics WHERE test_run_id = $1), 0)";
const COUNT_TESTS: &str = "SELECT suite_id, result, has_known_issues, COUNT(*) FROM tests \
     WHERE test_run_id = $1 AND id <= $2 GROUP BY suite_id, result, has_known_issues";
const METRICS_UP_TO: &str = "SELECT suite_id, measurements FROM metrics WHERE test_run_id = $1 AND id <= $2";

/// The status of run `$id` from its rows up to `$stamp`, read on
/// connection `$c` (either engine's): `Result<RunStatus<i64>, StoreError>`.
macro_rules! count_rows {
    ($c:ident, $id:expr, $stamp:expr) => {
        async {
            let mut status = RunStatus::default();
            let counts: Vec<(i64, Option<bool>, Option<bool>, i64)> =
                sqlx::query_as(COUNT_TESTS).bind($id).bind($stamp.0).fetch_all(&mut *$c).await?;
            for (suite, result, known, n) in counts {
                status.add_tests(suite, TestStatus::of(result, known.unwrap_or(false)), n);
            }
            let mut rows = sqlx::query_as::<_, (i64, String)>(METRICS_UP_TO).bind($id).bind($stamp.1).fetch(&mut *$c);
            while let Some((suite, measurements)) = rows.try_next().await? {
                status.add_metric(suite, &parse_measurements(&measurements));
            }
            Ok::<_, StoreError>(status)
        }
        .await
    };
}

impl<'s> HiddenRun<'s> {
    /// Creates the hidden run (and its build and environment if needed) in
    /// one short transaction.
    pub(crate) async fn begin(
        store: &'s Store,
        s: &Submission,
        owner: Option<&str>,
    ) -> Result<HiddenRun<'s>, IngestError> {
        let mut attempt = 0;
        loop {
            match Self::try_begin(store, s, owner).await {
                // A concurrent discard removed the build or environment we found.
                Err(IngestError::Store(e)) if e.is_foreign_key_violation() && attempt < BEGIN_RETRIES => attempt += 1,
                other => return other,
            }
        }
    }

    async fn try_begin(store: &'s Store, s: &Submission, named: Option<&str>) -> Result<HiddenRun<'s>, IngestError> {
        let owner = named.map_or_else(|| Uuid::new_v4().to_string(), str::to_string);
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
            // Earlier attempts: with the same job_id and a stale heartbeat,
            // or by the same named owner (a retried task), however recent.
            let abandoned: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM testruns WHERE NOT visible AND ((build_id = $1 AND job_id = $2 AND ingest_heartbeat_at < $3) \
                 OR ingest_owner = $4)",
            ).bind(build_id).bind(&job_id).bind(now - ABANDONED_AFTER).bind(named).fetch_all(&mut *c).await?;
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
        Ok(HiddenRun {
            store,
            id,
            owner: Writer::Hidden(owner),
            project_id: s.project_id,
            build_id,
            environment_id,
            suites: HashMap::new(),
            status: RunStatus::default(),
            recount: false,
            written: 0,
            known_issues: Arc::new(Self::load_known_issues(store, environment_id).await?),
            last_heartbeat: Instant::now(),
            counted: None,
        })
    }

    /// Reopens the visible run `id` to add rows to it; its status rows are
    /// recounted when it is published again.
    pub(crate) async fn reopen(store: &'s Store, id: i64) -> Result<HiddenRun<'s>, IngestError> {
        let found: Option<(i64, i64, i64)> = with_reader!(store, pool => sqlx::query_as(
            "SELECT r.build_id, r.environment_id, b.project_id FROM testruns r JOIN builds b ON b.id = r.build_id \
             WHERE r.id = $1 AND r.visible",
        ).bind(id).fetch_optional(pool).await)?;
        let (build_id, environment_id, project_id) = found.ok_or(IngestError::Swept)?;
        Ok(HiddenRun {
            store,
            id,
            owner: Writer::Visible,
            project_id,
            build_id,
            environment_id,
            suites: HashMap::new(),
            status: RunStatus::default(),
            recount: true,
            written: 0,
            known_issues: Arc::new(Self::load_known_issues(store, environment_id).await?),
            last_heartbeat: Instant::now(),
            counted: None,
        })
    }

    /// Adds issues filed since the run was opened, as `(id, test_name)`.
    pub(crate) fn add_known_issues(&mut self, issues: &[(i64, String)]) {
        let matcher = Arc::make_mut(&mut self.known_issues);
        for (id, pattern) in issues {
            matcher.add(*id, pattern);
        }
    }

    /// The active known issues of an environment.
    async fn load_known_issues(store: &Store, environment_id: i64) -> Result<KnownIssueMatcher, StoreError> {
        let issues: Vec<(i64, String)> = with_reader!(store, pool => sqlx::query_as(
            "SELECT ki.id, ki.test_name FROM known_issues ki \
             JOIN known_issue_environments e ON e.known_issue_id = ki.id \
             WHERE e.environment_id = $1 AND ki.active ORDER BY ki.id",
        ).bind(environment_id).fetch_all(pool).await)?;
        Ok(KnownIssueMatcher::new(issues.iter().map(|(id, p)| (*id, p.as_str()))))
    }

    /// Makes sure each suite of `slugs` exists in the project and has this
    /// run's status row; returns their ids, aligned with `slugs`.
    pub(crate) async fn ensure_suites(&mut self, tx: &mut WriteTx, slugs: &[&str]) -> Result<Vec<i64>, StoreError> {
        let claim = self.suites_of(slugs.iter().copied());
        if !claim.new.is_empty() {
            let found = claim_suites(tx, self.project_id, self.id, &claim.new).await?;
            self.suites.extend(found);
        }
        Ok(slugs.iter().map(|s| self.suites[*s]).collect())
    }

    /// The suites of `slugs`: their ids where the run has them already, and
    /// the slugs new to the run, to be claimed in the write transaction.
    fn suites_of<'a>(&self, slugs: impl Iterator<Item = &'a str>) -> SuiteClaim {
        let mut new = Vec::new();
        let ids = slugs
            .map(|slug| {
                let id = self.suites.get(slug).copied();
                if id.is_none() {
                    new.push(slug.to_string());
                }
                id
            })
            .collect();
        new.sort_unstable();
        new.dedup();
        SuiteClaim { ids, new }
    }

    /// A job writing `batch` into this run; it claims the batch's suites new
    /// to the run in its own transaction.
    pub(crate) fn job<T: Named>(&self, batch: Prepared<T>) -> Job<T> {
        let suites = self.suites_of(batch.keys().into_iter().map(|(suite, _)| suite));
        Job { store: self.store.clone(), run: self.ids(), owner: self.owner.clone(), suites, batch }
    }

    /// Counts a written batch, and renews the run's heartbeat when due.
    pub(crate) async fn absorb(&mut self, written: Written) -> Result<(), StoreError> {
        self.suites.extend(written.claimed_suites);
        self.written += written.rows;
        self.status.merge(written.status);
        self.recount |= written.repeated;
        if matches!(self.owner, Writer::Hidden(_)) && self.last_heartbeat.elapsed() >= HEARTBEAT_EVERY {
            let mut tx = self.store.begin_write().await?;
            with_tx!(tx, c => sqlx::query("UPDATE testruns SET ingest_heartbeat_at = $2 WHERE id = $1")
                .bind(self.id).bind(Utc::now()).execute(&mut *c).await.map(|r| r.rows_affected()))?;
            tx.commit().await?;
            self.last_heartbeat = Instant::now();
        }
        Ok(())
    }

    /// Whether this is a hidden run being ingested (not a reopened one).
    pub(crate) fn is_hidden(&self) -> bool {
        matches!(self.owner, Writer::Hidden(_))
    }

    /// How many tests and metrics were written so far.
    pub(crate) fn written(&self) -> i64 {
        self.written
    }

    /// The known issues of the run's environment (shared with the batches
    /// being prepared).
    pub(crate) fn known_issues(&self) -> Arc<KnownIssueMatcher> {
        self.known_issues.clone()
    }

    pub(crate) fn ids(&self) -> RunIds {
        RunIds { project: self.project_id, test_run: self.id, build: self.build_id, environment: self.environment_id }
    }

    /// Counts the stored rows of a run that must be recounted, on a read
    /// connection and outside any write transaction: recounting tens of
    /// millions of tests takes seconds, and in the publishing transaction
    /// it would hold SQLite's only writer (and the workers' lease renewals)
    /// that long. The count covers the rows up to the run's newest ids,
    /// which [`HiddenRun::publish_in`] checks again under its lock.
    pub(crate) async fn count_ahead(&mut self) -> Result<(), StoreError> {
        if !self.recount {
            return Ok(());
        }
        let id = self.id;
        let counted = with_reader!(self.store, pool => {
            let mut c = pool.acquire().await?;
            let stamp: RowStamp = sqlx::query_as(ROW_STAMP).bind(id).fetch_one(&mut *c).await?;
            count_rows!(c, id, stamp).map(|status| (stamp, status))
        })?;
        self.counted = Some(counted);
        Ok(())
    }

    /// The run's status from its stored rows, in `tx`: the count made
    /// ahead if no row was added since, else a count made now.
    async fn recount_status(&mut self, tx: &mut WriteTx) -> Result<RunStatus<i64>, StoreError> {
        let id = self.id;
        let now: RowStamp = with_tx!(tx, c => sqlx::query_as(ROW_STAMP).bind(id).fetch_one(&mut *c).await)?;
        if let Some((stamp, status)) = self.counted.take() {
            if stamp == now {
                return Ok(status);
            }
        }
        with_tx!(tx, c => count_rows!(c, id, now))
    }

    /// Writes the status rows and makes the run visible, in one short
    /// transaction; returns the run's id.
    pub(crate) async fn publish(
        &mut self,
        metadata: &RunMetadata,
        on_publish: Option<&crate::builds::BuildTask>,
        postprocess: Option<&crate::postprocess::RunPostprocess>,
    ) -> Result<i64, IngestError> {
        self.count_ahead().await?;
        let mut tx = self.store.begin_write().await?;
        self.publish_in(&mut tx, metadata).await?;
        if let Some(hook) = on_publish {
            hook.enqueue(&mut tx, self.build_id).await?;
        }
        if let Some(plugins) = postprocess {
            plugins.hold_all(&mut tx, self.id).await?;
        }
        tx.commit().await?;
        Ok(self.id)
    }

    /// Writes the status rows and makes the run visible in the caller's
    /// `tx`, which commits it. A reopened run is locked first and recounted
    /// inside `tx` (from the count made ahead when no row was added since),
    /// so that plugins finishing together each see the other's rows.
    pub(crate) async fn publish_in(&mut self, tx: &mut WriteTx, metadata: &RunMetadata) -> Result<(), IngestError> {
        if matches!(self.owner, Writer::Visible) {
            with_tx!(tx, c => sqlx::query("UPDATE testruns SET visible = visible WHERE id = $1")
                .bind(self.id).execute(&mut *c).await.map(|_| ()))?;
        }
        let status = if self.recount { self.recount_status(tx).await? } else { std::mem::take(&mut self.status) };
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
        if matches!(self.owner, Writer::Visible) {
            // The suite versions recorded when the run was first published.
            let kept: Vec<(i64, i64)> = with_tx!(tx, c => sqlx::query_as(
                "SELECT suite_id, suite_version_id FROM statuses WHERE test_run_id = $1 AND suite_version_id IS NOT NULL",
            ).bind(self.id).fetch_all(&mut *c).await)?;
            versions.extend(kept);
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
            let (condition, owner) = match &self.owner {
                Writer::Hidden(owner) => ("ingest_owner = $2", owner.as_str()),
                Writer::Visible => ("visible AND $2 = ''", ""),
            };
            let flipped = sqlx::query(&format!(
                "UPDATE testruns SET visible = TRUE, data_processed = TRUE, status_recorded = TRUE, \
                 ingest_owner = NULL, ingest_heartbeat_at = NULL WHERE id = $1 AND {condition}",
            )).bind(self.id).bind(owner).execute(&mut *c).await;
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
        // The build's runs changed: a status computed before is stale.
        with_tx!(tx, c => sqlx::query("UPDATE builds SET status_version = status_version + 1 WHERE id = $1")
            .bind(self.build_id).execute(&mut *c).await.map(|_| ()))?;
        Ok(())
    }
}

/// The suites of a batch: ids aligned with its items (`None` for a suite
/// new to the run), and the slugs new to the run, sorted.
pub(crate) struct SuiteClaim {
    pub(crate) ids: Vec<Option<i64>>,
    pub(crate) new: Vec<String>,
}

/// Makes sure each suite of `slugs` (sorted, so that concurrent writers
/// lock them in the same order) exists in `project` and has a status row
/// for `run`, in `tx`; returns `(slug, id)` of each.
pub(crate) async fn claim_suites(
    tx: &mut WriteTx,
    project: i64,
    run: i64,
    slugs: &[String],
) -> Result<Vec<(String, i64)>, StoreError> {
    let found: Vec<(i64, String)> = with_tx!(tx, c => {
        let mut qb = QueryBuilder::new("SELECT id, slug FROM suites WHERE project_id = ");
        qb.push_bind(project).push(" AND slug IN (");
        let mut list = qb.separated(", ");
        for slug in slugs {
            list.push_bind(slug.as_str());
        }
        list.push_unseparated(")");
        let mut found: Vec<(i64, String)> = qb.build_query_as().fetch_all(&mut *c).await?;
        let missing: Vec<&str> =
            slugs.iter().map(String::as_str).filter(|n| !found.iter().any(|(_, s)| s == n)).collect();
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
    if found.len() != slugs.len() {
        return Err(StoreError::Invalid(format!("could not create the suites of {slugs:?}")));
    }
    Ok(found.into_iter().map(|(id, slug)| (slug, id)).collect())
}

#[cfg(all(test, feature = "testing"))]
mod race_tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::testing::TestDb;
    use squadron_core::submission::SubmittedTest;

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

    async fn write(run: &mut HiddenRun<'_>, batch: Prepared<SubmittedTest>) -> Result<(), IngestError> {
        let written = SubmittedTest::write(run.job(batch)).await?;
        Ok(run.absorb(written).await?)
    }

    /// A new hidden run of build `build`, and a batch of tests `names`
    /// prepared for it.
    async fn prepared<'s>(
        s: &'s Store,
        p: i64,
        build: &str,
        names: &[&str],
    ) -> (HiddenRun<'s>, Prepared<SubmittedTest>) {
        let run = HiddenRun::begin(s, &submission(p, build), None).await.unwrap();
        let batch = Prepared::new(s, &run.known_issues(), tests(names)).await.unwrap();
        (run, batch)
    }

    /// A new hidden run of build `build` with tests `names` written.
    async fn written<'s>(s: &'s Store, p: i64, build: &str, names: &[&str]) -> HiddenRun<'s> {
        let (mut run, batch) = prepared(s, p, build, names).await;
        write(&mut run, batch).await.unwrap();
        run
    }

    crate::both_engines! {
        async fn names_deleted_between_lookup_and_write_are_looked_up_again(db: TestDb) {
            let s = &db.store;
            let p = db.public_project().await;
            // Run X interns the names, then is being rejected...
            let x = written(s, p, "x", &["a", "b"]).await;
            // ...while run Y has looked the same names up.
            let (mut y, batch) = prepared(s, p, "y", &["a", "b", "c"]).await;
            // X's removal deletes the names nothing else refers to yet.
            crate::ingest::discard::discard_run(s, x.id).await.unwrap();
            assert_eq!(db.scalar("SELECT COUNT(*) FROM suite_metadata WHERE kind = 'test'").await, 0);
            write(&mut y, batch).await.unwrap();
            let dangling = db.scalar("SELECT COUNT(*) FROM tests t WHERE NOT EXISTS (SELECT 1 FROM suite_metadata m WHERE m.id = t.metadata_id)").await;
            assert_eq!(dangling, 0, "every test refers to an existing name");
            assert_eq!(db.scalar("SELECT COUNT(*) FROM tests").await, 3);
        }

        async fn names_cached_before_a_removal_are_not_reused(db: TestDb) {
            let s = &db.store;
            let p = db.public_project().await;
            let x = written(s, p, "x", &["a", "b"]).await;
            crate::ingest::discard::discard_run(s, x.id).await.unwrap();
            // The names X interned (and the process cached) are gone: a run
            // prepared after the removal interns them again.
            written(s, p, "z", &["a", "b"]).await;
            let named = db.scalar("SELECT COUNT(*) FROM tests t JOIN suite_metadata m ON m.id = t.metadata_id AND m.kind = 'test' AND m.suite = 's'").await;
            assert_eq!(named, 2, "both tests refer to their names");
        }

        async fn names_interned_by_another_writer_meanwhile_are_shared(db: TestDb) {
            let s = &db.store;
            let p = db.public_project().await;
            // X looks up names none of which exist yet...
            let (mut x, batch) = prepared(s, p, "x", &["a", "b", "c", "d"]).await;
            // ...while Y interns two of them.
            let y = written(s, p, "y", &["b", "d"]).await;
            write(&mut x, batch).await.unwrap();
            assert_eq!(db.scalar("SELECT COUNT(*) FROM suite_metadata WHERE kind = 'test'").await, 4);
            let rows: Vec<(i64, String)> = s
                .fetch_all(&crate::sql::Sql::new(
                    "SELECT t.test_run_id, m.name FROM tests t JOIN suite_metadata m ON m.id = t.metadata_id \
                     ORDER BY t.test_run_id, m.name",
                ))
                .await
                .unwrap();
            let named = |run: i64| -> Vec<&str> { rows.iter().filter(|r| r.0 == run).map(|r| r.1.as_str()).collect() };
            assert_eq!(named(x.id), ["a", "b", "c", "d"]);
            assert_eq!(named(y.id), ["b", "d"]);
        }

        async fn no_batch_lands_in_a_run_being_removed(db: TestDb) {
            let s = &db.store;
            let p = db.public_project().await;
            let before = db.table_counts().await;
            let (run, batch) = prepared(s, p, "x", &["a", "b"]).await;
            let job = run.job(batch);
            crate::ingest::discard::discard_run(s, run.id).await.unwrap();
            let outcome = SubmittedTest::write(job).await;
            assert!(matches!(outcome, Err(IngestError::Swept)), "a late batch is refused");
            assert_eq!(db.table_counts().await, before);
        }
    }
}
