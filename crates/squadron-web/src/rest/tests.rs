//! `/api/tests/` and `/api/metrics/`, and the tests and metrics of a build,
//! a run or a suite.

use std::collections::HashMap;

use axum::extract::Path;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use squadron_core::names::join_name;
use squadron_core::results::TestStatus;
use squadron_store::ingest::parse_measurements;
use squadron_store::sql::{Sql, Value as SqlValue};

use super::builds::{check_visible, BUILD_FILTERS};
use super::environments::ENVIRONMENT_FILTERS;
use super::filter::{field, relation, Field, FilterSet, Filters, Kind, Lookup, Relation, EXACT_IN};
use super::knownissues::KNOWN_ISSUE_FILTERS;
use super::page::{fetch, keyed_by_id, Paging};
use super::suites::{check_suite, SUITE_FILTERS, SUITE_METADATA_FILTERS};
use super::testruns::{check_run, TESTRUN_FILTERS};
use super::{not_found, not_implemented, raw, JsonObject, Rest};
use crate::error::ApiError;
use crate::AppState;

/// SQUAD's legacy `name` filter: the short name contains the value.
const NAME: Field = Field {
    name: "name",
    column: "(SELECT nm.name FROM suite_metadata nm WHERE nm.id = {p}metadata_id)",
    kind: Kind::Text,
    lookups: &[Lookup::IContains],
    default: Lookup::IContains,
};

/// SQUAD's `TestFilter`.
pub(crate) static TEST_FILTERS: FilterSet = FilterSet {
    fields: &[
        NAME,
        field("result", "{p}result", Kind::Bool, &[Lookup::Exact, Lookup::In, Lookup::IsNull]),
        field("suite_id", "{p}suite_id", Kind::Int, EXACT_IN),
        field("environment_id", "{p}environment_id", Kind::Int, EXACT_IN),
        field("metadata_id", "{p}metadata_id", Kind::Int, EXACT_IN),
        field("build_id", "{p}build_id", Kind::Int, &[Lookup::Exact, Lookup::In, Lookup::Gt, Lookup::Lt]),
        field("has_known_issues", "{p}has_known_issues", Kind::Bool, EXACT_IN),
    ],
    relations: &[
        relation("test_run", "{p}test_run_id", "testruns", &TESTRUN_FILTERS),
        relation("suite", "{p}suite_id", "suites", &SUITE_FILTERS),
        Relation {
            name: "known_issues",
            column: "{p}id",
            table: "known_issues",
            set: &KNOWN_ISSUE_FILTERS,
            through: Some("SELECT test_id FROM test_known_issues WHERE known_issue_id"),
        },
        relation("build", "{p}build_id", "builds", &BUILD_FILTERS),
        relation("environment", "{p}environment_id", "environments", &ENVIRONMENT_FILTERS),
        relation("metadata", "{p}metadata_id", "suite_metadata", &SUITE_METADATA_FILTERS),
    ],
    unsupported: &[],
};

/// SQUAD's `MetricFilter`.
pub(crate) static METRIC_FILTERS: FilterSet = FilterSet {
    fields: &[
        NAME,
        field("result", "{p}result", Kind::Float, EXACT_IN),
        field("is_outlier", "{p}is_outlier", Kind::Bool, EXACT_IN),
        field("unit", "{p}unit", Kind::Text, EXACT_IN),
    ],
    relations: &[
        relation("test_run", "{p}test_run_id", "testruns", &TESTRUN_FILTERS),
        relation("suite", "{p}suite_id", "suites", &SUITE_FILTERS),
        relation("build", "{p}build_id", "builds", &BUILD_FILTERS),
        relation("environment", "{p}environment_id", "environments", &ENVIRONMENT_FILTERS),
        relation("metadata", "{p}metadata_id", "suite_metadata", &SUITE_METADATA_FILTERS),
    ],
    unsupported: &[],
};

/// Every test or metric query joins its name.
const JOINS: &str = "JOIN suite_metadata m ON m.id = t.metadata_id";

/// Appends ` AND` the test or metric belongs to a visible (published) run
/// of a project the caller may see: one semi-join on the set of such runs,
/// not a lookup of run and build per row.
fn visible_runs(rest: &Rest, sql: &mut Sql) {
    let mut runs = Sql::new(
        " AND t.test_run_id IN (SELECT r.id FROM testruns r JOIN builds b ON b.id = r.build_id WHERE r.visible",
    );
    rest.visible(&mut runs, "b.project_id");
    sql.append(&runs).push(")");
}

/// A test with its suite and short name.
#[derive(sqlx::FromRow)]
pub(crate) struct TestRow {
    pub id: i64,
    pub test_run_id: i64,
    pub suite_id: i64,
    pub metadata_id: i64,
    pub build_id: i64,
    pub environment_id: i64,
    pub result: Option<bool>,
    pub has_known_issues: Option<bool>,
    pub log: Option<String>,
    pub suite: String,
    pub name: String,
}

keyed_by_id!(TestRow);

/// `SELECT` of [`TestRow`]s: tests `t` joined with their names `m`.
pub(crate) fn test_select() -> String {
    format!(
        "SELECT t.id, t.test_run_id, t.suite_id, t.metadata_id, t.build_id, t.environment_id, t.result, \
         t.has_known_issues, t.log, m.suite, m.name FROM tests t {JOINS}"
    )
}

/// The relations shared by tests and metrics, less the keys in `without`.
pub(crate) fn relations(
    o: &mut JsonObject,
    without: &[&str],
    build: i64,
    environment: i64,
    run: i64,
    suite: i64,
    metadata: i64,
) {
    for (key, collection, id) in [
        ("build", "builds", build),
        ("environment", "environments", environment),
        ("test_run", "testruns", run),
        ("suite", "suites", suite),
        ("metadata", "suitemetadata", metadata),
    ] {
        if !without.contains(&key) {
            o.link(key, collection, id, "");
        }
    }
}

/// A test's status as shown: its own, or the one resolved among the
/// build's duplicates of it in its environment, with the share of them
/// that have it (`confidence`).
#[derive(Clone, Copy)]
pub(crate) struct Shown {
    pub status: TestStatus,
    pub confidence: Option<f64>,
}

impl Shown {
    /// The test's own status.
    pub fn own(t: &TestRow) -> Shown {
        Shown { status: TestStatus::of(t.result, t.has_known_issues.unwrap_or(false)), confidence: None }
    }
}

/// A test as SQUAD's `TestSerializer` shows it, less the keys in `without`
/// (relations, or `known_issues`).
pub(crate) fn render_test(
    rest: &Rest,
    t: &TestRow,
    shown: Shown,
    issues: &HashMap<i64, Vec<i64>>,
    without: &[&str],
    out: &mut Vec<u8>,
) {
    let mut o = JsonObject::new(out, rest);
    o.link("url", "tests", t.id, "")
        .value("id", t.id)
        .value("name", join_name(&t.suite, &t.name))
        .value("short_name", &t.name)
        .value("status", shown.status.as_str());
    relations(&mut o, without, t.build_id, t.environment_id, t.test_run_id, t.suite_id, t.metadata_id);
    o.value("result", t.result).value("log", &t.log).value("has_known_issues", t.has_known_issues);
    if !without.contains(&"known_issues") {
        let links: Vec<String> =
            issues.get(&t.id).into_iter().flatten().map(|id| rest.api(&format!("knownissues/{id}/"))).collect();
        o.value("known_issues", links);
    }
    if let Some(confidence) = shown.confidence {
        o.value("confidence", confidence);
    }
    o.end();
}

#[derive(sqlx::FromRow)]
struct Link {
    test_id: i64,
    known_issue_id: i64,
}

/// The known issues of `tests`, by test.
async fn known_issues(rest: &Rest, tests: &[TestRow]) -> Result<HashMap<i64, Vec<i64>>, ApiError> {
    let mut by_test: HashMap<i64, Vec<i64>> = HashMap::new();
    if !tests.iter().any(|t| t.has_known_issues == Some(true)) {
        return Ok(by_test);
    }
    let mut sql = Sql::new("SELECT test_id, known_issue_id FROM test_known_issues WHERE test_id IN ");
    sql.bind_list(tests.iter().map(|t| SqlValue::Int(t.id))).push(" ORDER BY known_issue_id");
    let links: Vec<Link> = rest.state.store.fetch_all(&sql).await?;
    for link in links {
        by_test.entry(link.test_id).or_default().push(link.known_issue_id);
    }
    Ok(by_test)
}

/// Lists tests: `conditions` (after `WHERE`), request filters when
/// `filtered`, ordered by id.
async fn list_tests(
    rest: &Rest,
    mut conditions: Sql,
    filtered: bool,
    descending: bool,
    without: &[&str],
) -> Result<Response, ApiError> {
    if filtered {
        Filters { engine: rest.state.store.engine_name() }.apply(&TEST_FILTERS, "t.", &rest.params, &mut conditions)?;
    }
    let page = fetch::<TestRow>(rest, &test_select(), conditions, "t.id", &Paging::Cursor { descending }).await?;
    let issues = known_issues(rest, &page.rows).await?;
    Ok(page.into_body(|t, out| render_test(rest, t, Shown::own(t), &issues, without, out)))
}

async fn tests(rest: Rest) -> Result<Response, ApiError> {
    let mut conditions = Sql::new(" WHERE TRUE");
    visible_runs(&rest, &mut conditions);
    list_tests(&rest, conditions, true, true, &[]).await
}

async fn test_detail(rest: Rest, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let mut sql = Sql::new(&test_select());
    sql.push(" WHERE t.id = ").bind(id);
    visible_runs(&rest, &mut sql);
    let test: TestRow = rest.state.store.fetch_optional(&sql).await?.ok_or_else(not_found)?;
    let issues = known_issues(&rest, std::slice::from_ref(&test)).await?;
    let mut out = Vec::new();
    render_test(&rest, &test, Shown::own(&test), &issues, &[], &mut out);
    Ok(raw("application/json", out))
}

/// `/api/builds/<id>/tests/`.
pub(crate) async fn build_tests(rest: Rest, Path(id): Path<i64>) -> Result<Response, ApiError> {
    check_visible(&rest, id).await?;
    let mut conditions = Sql::new(" WHERE t.build_id = ");
    conditions.bind(id);
    visible_runs(&rest, &mut conditions);
    list_tests(&rest, conditions, true, true, &[]).await
}

/// `/api/testruns/<id>/tests/`: oldest first, without the run's link.
pub(crate) async fn run_tests(rest: Rest, Path(id): Path<i64>) -> Result<Response, ApiError> {
    check_run(&rest, id).await?;
    let mut conditions = Sql::new(" WHERE t.test_run_id = ");
    conditions.bind(id);
    list_tests(&rest, conditions, false, false, &["test_run"]).await
}

/// `/api/suites/<id>/tests/`: oldest first, without the suite's link.
pub(crate) async fn suite_tests(rest: Rest, Path(id): Path<i64>) -> Result<Response, ApiError> {
    check_suite(&rest, id).await?;
    let mut conditions = Sql::new(" WHERE t.suite_id = ");
    conditions.bind(id);
    visible_runs(&rest, &mut conditions);
    list_tests(&rest, conditions, false, false, &["suite"]).await
}

#[derive(sqlx::FromRow)]
struct MetricRow {
    id: i64,
    test_run_id: i64,
    suite_id: i64,
    metadata_id: i64,
    build_id: i64,
    environment_id: i64,
    result: f64,
    measurements: String,
    unit: Option<String>,
    is_outlier: bool,
    suite: String,
    name: String,
}

keyed_by_id!(MetricRow);

fn metric_select() -> String {
    format!(
        "SELECT t.id, t.test_run_id, t.suite_id, t.metadata_id, t.build_id, t.environment_id, t.result, \
         t.measurements, t.unit, t.is_outlier, m.suite, m.name FROM metrics t {JOINS}"
    )
}

/// A metric as SQUAD's `MetricSerializer` shows it, less `without`.
fn render_metric(rest: &Rest, x: &MetricRow, without: &[&str], out: &mut Vec<u8>) {
    let mut o = JsonObject::new(out, rest);
    o.link("url", "metrics", x.id, "");
    if !without.contains(&"id") {
        o.value("id", x.id);
    }
    o.value("name", join_name(&x.suite, &x.name))
        .value("short_name", &x.name)
        .value("measurement_list", parse_measurements(&x.measurements));
    relations(&mut o, without, x.build_id, x.environment_id, x.test_run_id, x.suite_id, x.metadata_id);
    o.value("result", x.result).value("unit", &x.unit).value("is_outlier", x.is_outlier);
    o.end();
}

async fn list_metrics(
    rest: &Rest,
    mut conditions: Sql,
    filtered: bool,
    without: &[&str],
) -> Result<Response, ApiError> {
    if filtered {
        Filters { engine: rest.state.store.engine_name() }.apply(
            &METRIC_FILTERS,
            "t.",
            &rest.params,
            &mut conditions,
        )?;
    }
    let page =
        fetch::<MetricRow>(rest, &metric_select(), conditions, "t.id", &Paging::Cursor { descending: false }).await?;
    Ok(page.into_body(|x, out| render_metric(rest, x, without, out)))
}

async fn metrics(rest: Rest) -> Result<Response, ApiError> {
    let mut conditions = Sql::new(" WHERE TRUE");
    visible_runs(&rest, &mut conditions);
    list_metrics(&rest, conditions, true, &[]).await
}

async fn metric_detail(rest: Rest, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let mut sql = Sql::new(&metric_select());
    sql.push(" WHERE t.id = ").bind(id);
    visible_runs(&rest, &mut sql);
    let metric: MetricRow = rest.state.store.fetch_optional(&sql).await?.ok_or_else(not_found)?;
    let mut out = Vec::new();
    render_metric(&rest, &metric, &[], &mut out);
    Ok(raw("application/json", out))
}

/// `/api/builds/<id>/metrics/`.
pub(crate) async fn build_metrics(rest: Rest, Path(id): Path<i64>) -> Result<Response, ApiError> {
    check_visible(&rest, id).await?;
    let mut conditions = Sql::new(" WHERE t.build_id = ");
    conditions.bind(id);
    visible_runs(&rest, &mut conditions);
    list_metrics(&rest, conditions, true, &[]).await
}

/// `/api/testruns/<id>/metrics/`: as SQUAD, without the run, id and suite.
pub(crate) async fn run_metrics(rest: Rest, Path(id): Path<i64>) -> Result<Response, ApiError> {
    check_run(&rest, id).await?;
    let mut conditions = Sql::new(" WHERE t.test_run_id = ");
    conditions.bind(id);
    list_metrics(&rest, conditions, false, &["test_run", "id", "suite"]).await
}

pub(crate) fn routes() -> Router<AppState> {
    let pending = |what: &'static str| move || async move { not_implemented(what) };
    Router::new()
        .route("/api/tests/", get(tests).post(pending("creating tests through REST (use /api/submit)")))
        .route(
            "/api/tests/{id}/",
            get(test_detail)
                .patch(pending("changing tests"))
                .put(pending("changing tests"))
                .delete(pending("deleting tests")),
        )
        .route("/api/metrics/", get(metrics).post(pending("creating metrics through REST (use /api/submit)")))
        .route(
            "/api/metrics/{id}/",
            get(metric_detail)
                .patch(pending("changing metrics"))
                .put(pending("changing metrics"))
                .delete(pending("deleting metrics")),
        )
}
