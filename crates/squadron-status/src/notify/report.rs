//! What a build's notification is made of: the build, its counts, its
//! baseline and changes, its failures, the project's known issues, the
//! metric thresholds it exceeds; gathered from the store, bounded in size.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use squadron_core::known_issues::KnownIssueMatcher;
use squadron_core::names::join_name;
use squadron_store::sql::Sql;
use squadron_store::Store;

use crate::compare::{metric_regressions_and_fixes, regressions_and_fixes, Changes, Pairing};
use crate::StatusError;

/// The most failures, metrics and exceeded thresholds a report lists: past
/// them an email is unreadable (and over SQUAD's 1 MB limit anyway), and a
/// report never holds a whole huge build in memory.
pub const LISTED: usize = 10_000;

/// Where notifications point their readers, and what they are signed with.
#[derive(Debug, Clone)]
pub struct Site {
    /// The site's name (SQUAD's `SQUAD_SITE_NAME`).
    pub name: String,
    /// The absolute URL of the web interface, without a trailing slash
    /// (SQUAD's `SQUAD_BASE_URL`).
    pub base_url: String,
}

impl Site {
    /// The page of build `version` of `project` (`group/project`).
    pub fn build_url(&self, project: &str, version: &str) -> String {
        format!("{}/{project}/build/{version}/", self.base_url)
    }
}

/// A project, as the templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectInfo {
    /// Its id.
    pub id: i64,
    /// Its slug.
    pub slug: String,
    /// Its name (its slug when it has none).
    pub name: String,
    /// `group/project`: what `{{ project }}` shows, as in SQUAD.
    pub full_name: String,
    /// Its group's slug.
    pub group: String,
}

/// A build, as the templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct BuildInfo {
    /// Its id.
    pub id: i64,
    /// Its version.
    pub version: String,
    /// When it happened.
    pub datetime: DateTime<Utc>,
    /// Its page.
    pub url: String,
}

/// A failing test.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// `suite/test`.
    pub full_name: String,
    /// Its suite.
    pub suite: String,
    /// Its short name.
    pub name: String,
}

/// An active known issue of one of the project's environments.
#[derive(Debug, Clone, Serialize)]
pub struct KnownIssueInfo {
    /// Its title.
    pub title: String,
    /// Its test name pattern.
    pub test_name: String,
    /// Where it is tracked.
    pub url: Option<String>,
    /// Whether it is intermittent.
    pub intermittent: bool,
    /// The slugs of its environments in this project.
    pub environments: Vec<String>,
}

/// A metric result of the build.
#[derive(Debug, Clone, Serialize)]
pub struct MetricInfo {
    /// Its environment's slug.
    pub environment: String,
    /// `suite/metric`.
    pub name: String,
    /// Its value.
    pub result: f64,
    /// Its unit.
    pub unit: Option<String>,
}

/// A metric beyond a threshold with a value.
#[derive(Debug, Clone, Serialize)]
pub struct Exceeded {
    /// The environment.
    pub environment: String,
    /// The metric's full name.
    pub name: String,
    /// Its result.
    pub result: f64,
    /// The threshold's name pattern.
    pub threshold_name: String,
    /// The threshold's value.
    pub threshold: f64,
    /// Whether higher is better (then the result is below the value).
    pub is_higher_better: bool,
}

/// Test counts and failures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Every test.
    pub tests_total: i64,
    /// Passed.
    pub tests_pass: i64,
    /// Failed (without a known issue).
    pub tests_fail: i64,
    /// Failed with a known issue.
    pub tests_xfail: i64,
    /// Skipped.
    pub tests_skip: i64,
    /// Failures by environment slug (at most [`LISTED`] in all).
    pub failures: BTreeMap<String, Vec<Failure>>,
    /// How many failures there are in all.
    pub failures_total: usize,
}

/// Everything a build's notification says.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The project.
    pub project: ProjectInfo,
    /// The build.
    pub build: BuildInfo,
    /// The baseline it is compared with.
    pub previous_build: Option<BuildInfo>,
    /// Counts and failures.
    pub summary: Summary,
    /// Changes against the baseline (empty without one).
    pub changes: Changes,
    /// Metric changes against the baseline.
    pub metric_changes: Changes,
    /// The build's merged metadata.
    pub metadata: Map<String, Value>,
    /// The metadata the project marks important (all of it when it marks
    /// none, as SQUAD).
    pub important_metadata: Map<String, Value>,
    /// The project's active known issues.
    pub known_issues: Vec<KnownIssueInfo>,
    /// Metrics beyond a threshold.
    pub thresholds: Vec<Exceeded>,
    /// The build's metrics (at most [`LISTED`]).
    pub metrics: Vec<MetricInfo>,
    /// Whether the project sends HTML as well as text.
    #[serde(skip)]
    pub html_mail: bool,
    /// The project's own template, if it has one.
    #[serde(skip)]
    pub project_template_id: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct Head {
    project_id: i64,
    project_slug: String,
    project_name: Option<String>,
    group_slug: String,
    html_mail: bool,
    important_metadata_keys: Option<String>,
    custom_email_template_id: Option<i64>,
    version: String,
    datetime: DateTime<Utc>,
    tests_pass: i64,
    tests_fail: i64,
    tests_xfail: i64,
    tests_skip: i64,
    baseline_id: Option<i64>,
}

impl Report {
    /// Gathers the report of `build_id` against its status's baseline, or
    /// against `baseline` when given. A build without a status has none.
    pub async fn gather(
        store: &Store,
        site: &Site,
        build_id: i64,
        baseline: Option<i64>,
    ) -> Result<Report, StatusError> {
        let mut sql = Sql::new(
            "SELECT p.id AS project_id, p.slug AS project_slug, p.name AS project_name, g.slug AS group_slug, \
                    p.html_mail, p.important_metadata_keys, p.custom_email_template_id, b.version, b.datetime, \
                    s.tests_pass, s.tests_fail, s.tests_xfail, s.tests_skip, s.baseline_id \
             FROM builds b JOIN build_status s ON s.build_id = b.id JOIN projects p ON p.id = b.project_id \
             JOIN groups g ON g.id = p.group_id WHERE b.id = ",
        );
        sql.bind(build_id);
        let head: Head = store.fetch_optional(&sql).await?.ok_or(StatusError::NoSuchBuild(build_id))?;
        let project = ProjectInfo {
            id: head.project_id,
            full_name: format!("{}/{}", head.group_slug, head.project_slug),
            name: head.project_name.filter(|n| !n.is_empty()).unwrap_or_else(|| head.project_slug.clone()),
            slug: head.project_slug,
            group: head.group_slug,
        };
        let build = BuildInfo {
            id: build_id,
            url: site.build_url(&project.full_name, &head.version),
            version: head.version,
            datetime: head.datetime,
        };
        let baseline_id = baseline.or(head.baseline_id);
        let previous_build = match baseline_id {
            Some(id) => build_info(store, site, id).await?,
            None => None,
        };
        let (changes, metric_changes) = match &previous_build {
            Some(b) => (
                regressions_and_fixes(store, b.id, build_id, Pairing::SameEnvironment).await?,
                metric_regressions_and_fixes(store, b.id, build_id, Pairing::SameEnvironment).await?,
            ),
            None => (Changes::default(), Changes::default()),
        };
        let (failures, failures_total) = failures(store, build_id).await?;
        let summary = Summary {
            tests_total: head.tests_pass + head.tests_fail + head.tests_xfail + head.tests_skip,
            tests_pass: head.tests_pass,
            tests_fail: head.tests_fail,
            tests_xfail: head.tests_xfail,
            tests_skip: head.tests_skip,
            failures,
            failures_total,
        };
        let metadata = store.build_metadata(build_id).await?;
        let important_metadata = important(&metadata, head.important_metadata_keys.as_deref());
        let (metrics, thresholds) = metrics_and_thresholds(store, build_id, head.project_id).await?;
        Ok(Report {
            known_issues: known_issues(store, head.project_id).await?,
            project,
            build,
            previous_build,
            summary,
            changes,
            metric_changes,
            metadata,
            important_metadata,
            thresholds,
            metrics,
            html_mail: head.html_mail,
            project_template_id: head.custom_email_template_id,
        })
    }
}

async fn build_info(store: &Store, site: &Site, id: i64) -> Result<Option<BuildInfo>, StatusError> {
    let mut sql = Sql::new(
        "SELECT b.version, b.datetime, g.slug, p.slug, p.id FROM builds b JOIN projects p ON p.id = b.project_id \
         JOIN groups g ON g.id = p.group_id WHERE b.id = ",
    );
    sql.bind(id);
    let row: Option<(String, DateTime<Utc>, String, String, i64)> = store.fetch_optional(&sql).await?;
    Ok(row.map(|(version, datetime, group, slug, project_id)| {
        let project =
            ProjectInfo { id: project_id, full_name: format!("{group}/{slug}"), name: slug.clone(), slug, group };
        BuildInfo { id, url: site.build_url(&project.full_name, &version), version, datetime }
    }))
}

/// The build's failures without a known issue, by environment; at most
/// [`LISTED`] of them, and how many there are.
async fn failures(store: &Store, build_id: i64) -> Result<(BTreeMap<String, Vec<Failure>>, usize), StatusError> {
    let mut sql = Sql::new(
        "SELECT e.slug, m.suite, m.name FROM testruns r JOIN tests t ON t.test_run_id = r.id \
         JOIN environments e ON e.id = r.environment_id JOIN suite_metadata m ON m.id = t.metadata_id \
         WHERE r.visible AND t.result = FALSE AND NOT COALESCE(t.has_known_issues, FALSE) AND r.build_id = ",
    );
    sql.bind(build_id).push(&format!(" ORDER BY e.slug, m.suite, m.name LIMIT {LISTED}"));
    let rows: Vec<(String, String, String)> = store.fetch_all(&sql).await?;
    let total = if rows.len() < LISTED {
        rows.len()
    } else {
        let mut count = Sql::new(
            "SELECT COUNT(*) FROM testruns r JOIN tests t ON t.test_run_id = r.id \
             WHERE r.visible AND t.result = FALSE AND NOT COALESCE(t.has_known_issues, FALSE) AND r.build_id = ",
        );
        count.bind(build_id);
        store.fetch_count(&count).await? as usize
    };
    let mut by_environment: BTreeMap<String, Vec<Failure>> = BTreeMap::new();
    for (environment, suite, name) in rows {
        by_environment.entry(environment).or_default().push(Failure {
            full_name: join_name(&suite, &name),
            suite,
            name,
        });
    }
    Ok((by_environment, total))
}

/// The metadata whose keys the project lists (one per line), or all of it.
fn important(metadata: &Map<String, Value>, keys: Option<&str>) -> Map<String, Value> {
    let wanted: Vec<&str> = keys.unwrap_or("").lines().map(str::trim).filter(|k| !k.is_empty()).collect();
    if wanted.is_empty() {
        return metadata.clone();
    }
    wanted.iter().filter_map(|k| metadata.get(*k).map(|v| (k.to_string(), v.clone()))).collect()
}

async fn known_issues(store: &Store, project_id: i64) -> Result<Vec<KnownIssueInfo>, StatusError> {
    let mut sql = Sql::new(
        "SELECT k.id, k.title, k.test_name, k.url, k.intermittent, e.slug FROM known_issues k \
         JOIN known_issue_environments ke ON ke.known_issue_id = k.id JOIN environments e ON e.id = ke.environment_id \
         WHERE k.active AND e.project_id = ",
    );
    sql.bind(project_id).push(&format!(" ORDER BY k.id, e.slug LIMIT {LISTED}"));
    let rows: Vec<(i64, String, String, Option<String>, bool, String)> = store.fetch_all(&sql).await?;
    let mut issues: Vec<(i64, KnownIssueInfo)> = Vec::new();
    for (id, title, test_name, url, intermittent, environment) in rows {
        match issues.last_mut() {
            Some((last, issue)) if *last == id => issue.environments.push(environment),
            _ => issues
                .push((id, KnownIssueInfo { title, test_name, url, intermittent, environments: vec![environment] })),
        }
    }
    Ok(issues.into_iter().map(|(_, issue)| issue).collect())
}

/// Metric results read per page.
const METRICS_PAGE: i64 = 5_000;

/// The build's metrics (at most [`LISTED`]) and those beyond a threshold
/// with a value: below it when higher is better, above it otherwise, for a
/// threshold of the metric's environment or of every environment (SQUAD's
/// `get_exceeded_thresholds`). Reads each run's metrics a page at a time.
async fn metrics_and_thresholds(
    store: &Store,
    build_id: i64,
    project_id: i64,
) -> Result<(Vec<MetricInfo>, Vec<Exceeded>), StatusError> {
    let mut sql = Sql::new(
        "SELECT environment_id, name, value, is_higher_better FROM metric_thresholds \
         WHERE value IS NOT NULL AND project_id = ",
    );
    sql.bind(project_id).push(" ORDER BY id");
    let thresholds: Vec<(Option<i64>, String, f64, bool)> = store.fetch_all(&sql).await?;
    let matcher = KnownIssueMatcher::whole_names(thresholds.iter().enumerate().map(|(i, t)| (i as i64, t.1.as_str())));
    let mut runs = Sql::new(
        "SELECT r.id, r.environment_id, e.slug FROM testruns r JOIN environments e ON e.id = r.environment_id \
         WHERE r.visible AND r.build_id = ",
    );
    runs.bind(build_id).push(" ORDER BY e.slug, r.id");
    let runs: Vec<(i64, i64, String)> = store.fetch_all(&runs).await?;
    let (mut metrics, mut exceeded) = (Vec::new(), Vec::new());
    for (run, environment_id, environment) in runs {
        let mut after = 0;
        loop {
            let mut page = Sql::new(
                "SELECT m.metadata_id, s.suite, s.name, m.result, m.unit FROM metrics m \
                 JOIN suite_metadata s ON s.id = m.metadata_id WHERE m.test_run_id = ",
            );
            page.bind(run)
                .push(" AND m.metadata_id > ")
                .bind(after)
                .push(&format!(" ORDER BY m.metadata_id LIMIT {METRICS_PAGE}"));
            let rows: Vec<(i64, String, String, f64, Option<String>)> = store.fetch_all(&page).await?;
            let full = rows.len() as i64 == METRICS_PAGE;
            for (metadata, suite, name, result, unit) in rows {
                after = metadata;
                let name = join_name(&suite, &name);
                for i in matcher.matches(&name) {
                    let (env, pattern, value, higher) = &thresholds[i as usize];
                    let beyond = if *higher { result < *value } else { result > *value };
                    if beyond && env.is_none_or(|e| e == environment_id) && exceeded.len() < LISTED {
                        exceeded.push(Exceeded {
                            environment: environment.clone(),
                            name: name.clone(),
                            result,
                            threshold_name: pattern.clone(),
                            threshold: *value,
                            is_higher_better: *higher,
                        });
                    }
                }
                if metrics.len() < LISTED {
                    metrics.push(MetricInfo { environment: environment.clone(), name, result, unit });
                }
            }
            if !full {
                break;
            }
        }
    }
    Ok((metrics, exceeded))
}
