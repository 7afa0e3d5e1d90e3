//! Computing a build's status from a read snapshot.

use chrono::{DateTime, Utc};
use serde::Serialize;
use squadron_core::summary::{Geomean, TestCounts};
use squadron_store::sql::Sql;
use squadron_store::Store;

use crate::compare::{metric_regressions_and_fixes, regressions_and_fixes, Changes, Pairing};
use crate::StatusError;

/// Run counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Runs {
    /// Every visible run.
    pub total: i64,
    /// Runs marked completed.
    pub completed: i64,
    /// Runs marked incomplete.
    pub incomplete: i64,
}

/// The geometric mean of metric results, and whether there were any.
#[derive(Debug, Clone, Copy, Default)]
struct Metrics {
    mean: Geomean,
    any: bool,
}

impl Metrics {
    fn add(&mut self, value: f64) {
        self.mean.add(value);
        self.any = true;
    }

    fn merge(&mut self, other: &Metrics) {
        self.mean.merge(&other.mean);
        self.any |= other.any;
    }
}

/// One environment's share of a build (SQUAD's BuildSummary).
#[derive(Debug, Clone, PartialEq)]
pub struct EnvironmentSummary {
    /// The environment.
    pub environment_id: i64,
    /// Its slug.
    pub slug: String,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// Test counts.
    pub counts: TestCounts,
    /// Run counts.
    pub runs: Runs,
    /// Geometric mean of its positive metric results.
    pub metrics_summary: f64,
    /// Whether it has metrics.
    pub has_metrics: bool,
}

/// A build's status as computed from one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildStatus {
    /// The build.
    pub build_id: i64,
    /// Its project.
    pub project_id: i64,
    /// The `builds.status_version` the snapshot saw.
    pub version: i64,
    /// Test counts over every visible run.
    pub counts: TestCounts,
    /// Run counts.
    pub runs: Runs,
    /// Geometric mean of every positive metric result of the build.
    pub metrics_summary: f64,
    /// Whether the build has metrics.
    pub has_metrics: bool,
    /// Whether the build is finished.
    pub finished: bool,
    /// Why it is not (empty when finished).
    pub reasons: Vec<String>,
    /// The build it is compared with.
    pub baseline_id: Option<i64>,
    /// Regressions and fixes against the baseline, once finished.
    pub changes: Option<Changes>,
    /// Metric regressions and fixes against the baseline, once finished.
    pub metric_changes: Option<Changes>,
    /// Per environment, by slug.
    pub environments: Vec<EnvironmentSummary>,
}

#[derive(sqlx::FromRow)]
struct BuildRow {
    project_id: i64,
    datetime: DateTime<Utc>,
    status_version: i64,
    notified: Option<bool>,
    baseline_id: Option<i64>,
    /// The notification timeout fired and the project then counts the
    /// build as finished.
    forced: bool,
}

#[derive(sqlx::FromRow)]
struct EnvironmentRow {
    environment_id: i64,
    slug: String,
    name: Option<String>,
    tests_pass: i64,
    tests_fail: i64,
    tests_xfail: i64,
    tests_skip: i64,
    runs: i64,
    completed: i64,
}

/// Metric results read per page, so a build with millions of them is
/// never held whole.
const METRICS_PAGE: i64 = 10_000;

/// Computes the status of `build_id` from what is committed now, holding
/// no transaction.
pub async fn compute(store: &Store, build_id: i64) -> Result<BuildStatus, StatusError> {
    let mut sql = Sql::new(
        "SELECT b.project_id, b.datetime, b.status_version, s.notified, s.baseline_id, \
                (COALESCE(s.notified_on_timeout, FALSE) AND p.force_finishing_builds_on_timeout) AS forced \
         FROM builds b JOIN projects p ON p.id = b.project_id LEFT JOIN build_status s ON s.build_id = b.id \
         WHERE b.id = ",
    );
    sql.bind(build_id);
    let build: BuildRow = store.fetch_optional(&sql).await?.ok_or(StatusError::NoSuchBuild(build_id))?;

    let environments = environments(store, build_id).await?;
    let mut counts = TestCounts::default();
    let mut runs = Runs::default();
    let mut metrics = Metrics::default();
    let mut summaries = Vec::with_capacity(environments.len());
    for (row, env_metrics) in environments {
        let env_counts =
            TestCounts { pass: row.tests_pass, fail: row.tests_fail, xfail: row.tests_xfail, skip: row.tests_skip };
        let env_runs = Runs { total: row.runs, completed: row.completed, incomplete: row.runs - row.completed };
        counts.merge(&env_counts);
        runs.total += env_runs.total;
        runs.completed += env_runs.completed;
        runs.incomplete += env_runs.incomplete;
        metrics.merge(&env_metrics);
        summaries.push(EnvironmentSummary {
            environment_id: row.environment_id,
            slug: row.slug,
            name: row.name,
            counts: env_counts,
            runs: env_runs,
            metrics_summary: env_metrics.mean.value(),
            has_metrics: env_metrics.any,
        });
    }

    let reasons = unfinished_reasons(store, build_id, build.project_id, runs.total).await?;
    // A build forced finished by its notification timeout keeps the
    // reasons it would not be otherwise, for the record.
    let finished = reasons.is_empty() || build.forced;
    let baseline_id = if build.notified == Some(true) {
        build.baseline_id
    } else {
        baseline(store, build_id, build.project_id, build.datetime).await?
    };
    let (changes, metric_changes) = match (finished, baseline_id) {
        (true, Some(baseline)) => (
            Some(regressions_and_fixes(store, baseline, build_id, Pairing::SameEnvironment).await?),
            Some(metric_regressions_and_fixes(store, baseline, build_id, Pairing::SameEnvironment).await?),
        ),
        _ => (None, None),
    };
    Ok(BuildStatus {
        build_id,
        project_id: build.project_id,
        version: build.status_version,
        counts,
        runs,
        metrics_summary: metrics.mean.value(),
        has_metrics: metrics.any,
        finished,
        reasons,
        baseline_id,
        changes,
        metric_changes,
        environments: summaries,
    })
}

/// Counts per environment of the build's visible runs, with their
/// metrics' geometric means.
async fn environments(store: &Store, build_id: i64) -> Result<Vec<(EnvironmentRow, Metrics)>, StatusError> {
    let mut sql = Sql::new(
        "SELECT r.environment_id, e.slug, e.name, \
                CAST(COALESCE(SUM(s.tests_pass), 0) AS BIGINT) AS tests_pass, \
                CAST(COALESCE(SUM(s.tests_fail), 0) AS BIGINT) AS tests_fail, \
                CAST(COALESCE(SUM(s.tests_xfail), 0) AS BIGINT) AS tests_xfail, \
                CAST(COALESCE(SUM(s.tests_skip), 0) AS BIGINT) AS tests_skip, \
                COUNT(*) AS runs, \
                CAST(COALESCE(SUM(CASE WHEN r.completed THEN 1 ELSE 0 END), 0) AS BIGINT) AS completed \
         FROM testruns r JOIN environments e ON e.id = r.environment_id \
         LEFT JOIN statuses s ON s.test_run_id = r.id AND s.suite_id IS NULL \
         WHERE r.visible AND r.build_id = ",
    );
    sql.bind(build_id).push(" GROUP BY r.environment_id, e.slug, e.name ORDER BY e.slug");
    let rows: Vec<EnvironmentRow> = store.fetch_all(&sql).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let metrics = environment_metrics(store, build_id, row.environment_id).await?;
        out.push((row, metrics));
    }
    Ok(out)
}

/// The geometric mean of an environment's metric results in the build,
/// read a page at a time.
async fn environment_metrics(store: &Store, build_id: i64, environment_id: i64) -> Result<Metrics, StatusError> {
    let mut mean = Metrics::default();
    let mut after: (i64, i64) = (0, 0);
    loop {
        let mut sql = Sql::new(
            "SELECT m.test_run_id, m.metadata_id, m.result FROM metrics m \
             JOIN testruns r ON r.id = m.test_run_id WHERE r.visible AND r.build_id = ",
        );
        sql.bind(build_id)
            .push(" AND r.environment_id = ")
            .bind(environment_id)
            .push(" AND (m.test_run_id > ")
            .bind(after.0)
            .push(" OR (m.test_run_id = ")
            .bind(after.0)
            .push(" AND m.metadata_id > ")
            .bind(after.1)
            .push(&format!(")) ORDER BY m.test_run_id, m.metadata_id LIMIT {METRICS_PAGE}"));
        let page: Vec<(i64, i64, f64)> = store.fetch_all(&sql).await?;
        for (_, _, value) in &page {
            mean.add(*value);
        }
        match page.last() {
            Some(&(run, metadata, _)) if page.len() as i64 == METRICS_PAGE => after = (run, metadata),
            _ => return Ok(mean),
        }
    }
}

/// SQUAD's reasons why a build is not finished yet: pending CI jobs, no
/// jobs and no runs, or fewer completed runs than an environment expects;
/// and squadron's own: post-processing still pending.
async fn unfinished_reasons(
    store: &Store,
    build_id: i64,
    project_id: i64,
    visible_runs: i64,
) -> Result<Vec<String>, StatusError> {
    let mut reasons = Vec::new();
    let mut jobs = Sql::new(
        "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN NOT fetched OR job_status = 'Fetching' THEN 1 ELSE 0 END), 0) \
         AS BIGINT) FROM testjobs WHERE target_build_id = ",
    );
    jobs.bind(build_id);
    let (job_count, pending): (i64, i64) = store.fetch_optional(&jobs).await?.unwrap_or((0, 0));
    if job_count > 0 {
        if pending > 0 {
            reasons.push("There are unfinished CI jobs".to_string());
        }
    } else if visible_runs == 0 {
        reasons.push("There are no testjobs or testruns for the build".to_string());
    }
    let mut postprocess = Sql::new("SELECT COUNT(*) FROM pending_postprocess WHERE build_id = ");
    postprocess.bind(build_id);
    let pending = store.fetch_count(&postprocess).await?;
    if pending > 0 {
        reasons.push(format!("{pending} test run(s) still being post-processed"));
    }
    let mut expected = Sql::new(
        "SELECT CASE WHEN e.name IS NULL OR e.name = '' THEN e.slug ELSE e.name END, e.expected_test_runs, \
                (SELECT COUNT(*) FROM testruns r WHERE r.environment_id = e.id AND r.completed AND r.visible \
                 AND r.build_id = ",
    );
    expected
        .bind(build_id)
        .push(") FROM environments e WHERE e.expected_test_runs > 0 AND e.project_id = ")
        .bind(project_id)
        .push(" ORDER BY e.id");
    let environments: Vec<(String, i64, i64)> = store.fetch_all(&expected).await?;
    for (name, expected, received) in environments {
        if received == 0 {
            reasons.push(format!("No test runs for {name} received so far"));
        } else if received < expected {
            reasons.push(format!("{expected} test runs expected for {name}, but only {received} received so far"));
        }
    }
    Ok(reasons)
}

/// The latest finished build of the project before this one (by datetime,
/// ties broken by id).
async fn baseline(
    store: &Store,
    build_id: i64,
    project_id: i64,
    datetime: DateTime<Utc>,
) -> Result<Option<i64>, StatusError> {
    let mut sql = Sql::new(
        "SELECT b.id FROM builds b JOIN build_status s ON s.build_id = b.id \
         WHERE s.finished AND b.project_id = ",
    );
    sql.bind(project_id)
        .push(" AND b.id <> ")
        .bind(build_id)
        .push(" AND (b.datetime < ")
        .bind(datetime)
        .push(" OR (b.datetime = ")
        .bind(datetime)
        .push(" AND b.id < ")
        .bind(build_id)
        .push(")) ORDER BY b.datetime DESC, b.id DESC LIMIT 1");
    let row: Option<(i64,)> = store.fetch_optional(&sql).await?;
    Ok(row.map(|(id,)| id))
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn zero_valued_metrics_still_count_as_metrics() {
        let mut only_zero = Metrics::default();
        only_zero.add(0.0);
        assert_eq!(only_zero.mean.value(), 0.0);
        assert!(only_zero.any, "a build with only zero-valued metrics still has metrics");
        let mut mean = Metrics::default();
        for v in [2.0, 8.0, 0.0, -3.0] {
            mean.add(v);
        }
        assert!((mean.mean.value() - 4.0).abs() < 1e-9);
    }
}
