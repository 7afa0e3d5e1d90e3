//! `/api/builds/<id>/status/`: the build's status (SQUAD's ProjectStatus),
//! with SQUAD's fields, plus `finished_reasons` (why it is not finished).

use std::collections::BTreeMap;

use axum::extract::Path;
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use squadron_status::update_build_status;
use squadron_store::sql::Sql;

use super::builds::check_visible;
use super::{time, Rest};
use crate::error::ApiError;

#[derive(sqlx::FromRow)]
struct StatusRow {
    created_at: DateTime<Utc>,
    last_updated: DateTime<Utc>,
    finished: bool,
    finished_reasons: String,
    notified: bool,
    notified_on_timeout: Option<bool>,
    approved: bool,
    tests_pass: i64,
    tests_fail: i64,
    tests_xfail: i64,
    tests_skip: i64,
    test_runs_total: i64,
    test_runs_completed: i64,
    test_runs_incomplete: i64,
    metrics_summary: f64,
    has_metrics: bool,
    baseline_id: Option<i64>,
    regressions: Option<String>,
    fixes: Option<String>,
    metric_regressions: Option<String>,
    metric_fixes: Option<String>,
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    slug: String,
    name: Option<String>,
    tests_pass: i64,
    tests_fail: i64,
    tests_xfail: i64,
    tests_skip: i64,
    test_runs_total: i64,
}

/// SQUAD's percentage: of every test, 0 when there is none of the kind.
fn percent(n: i64, total: i64) -> f64 {
    if n > 0 {
        100.0 * n as f64 / total as f64
    } else {
        0.0
    }
}

async fn read(rest: &Rest, id: i64) -> Result<Option<StatusRow>, ApiError> {
    let mut sql = Sql::new(
        "SELECT created_at, last_updated, finished, finished_reasons, notified, notified_on_timeout, approved, \
         tests_pass, tests_fail, tests_xfail, tests_skip, test_runs_total, test_runs_completed, test_runs_incomplete, \
         metrics_summary, has_metrics, baseline_id, regressions, fixes, metric_regressions, metric_fixes \
         FROM build_status WHERE build_id = ",
    );
    sql.bind(id);
    Ok(rest.state.store.fetch_optional(&sql).await?)
}

/// `{env: [names]}` stored as JSON text.
fn parse(text: &Option<String>) -> BTreeMap<String, Vec<String>> {
    text.as_deref().and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default()
}

pub(crate) async fn status(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    check_visible(&rest, id).await?;
    let row = match read(&rest, id).await? {
        Some(row) => row,
        None => {
            // A build whose status was never computed (created empty, say).
            update_build_status(&rest.state.store, &rest.state.queue, id).await.map_err(|e| ApiError::internal(&e))?;
            read(&rest, id).await?.ok_or_else(super::not_found)?
        }
    };
    let mut sql = Sql::new(
        "SELECT e.slug, e.name, s.tests_pass, s.tests_fail, s.tests_xfail, s.tests_skip, s.test_runs_total \
         FROM build_summaries s JOIN environments e ON e.id = s.environment_id WHERE s.build_id = ",
    );
    sql.bind(id).push(" ORDER BY e.slug");
    let summaries: Vec<SummaryRow> = rest.state.store.fetch_all(&sql).await?;
    let lists = [
        ("regressions", parse(&row.regressions)),
        ("fixes", parse(&row.fixes)),
        ("metric_regressions", parse(&row.metric_regressions)),
        ("metric_fixes", parse(&row.metric_fixes)),
    ];
    let mut details = Map::new();
    for s in &summaries {
        let mut d = Map::new();
        d.insert("testruns".into(), json!(s.test_runs_total));
        d.insert("tests_total".into(), json!(s.tests_pass + s.tests_fail + s.tests_xfail + s.tests_skip));
        d.insert("tests_pass".into(), json!(s.tests_pass));
        d.insert("tests_fail".into(), json!(s.tests_fail));
        d.insert("tests_xfail".into(), json!(s.tests_xfail));
        d.insert("tests_skip".into(), json!(s.tests_skip));
        // SQUAD looks these up by name in lists keyed by slug, and so
        // loses them when the two differ; they are looked up by slug here.
        for (key, by_env) in &lists {
            if let Some(names) = by_env.get(&s.slug) {
                d.insert((*key).into(), json!(names));
            }
        }
        details.insert(s.name.clone().unwrap_or_else(|| "null".into()), Value::Object(d));
    }
    let total = row.tests_pass + row.tests_fail + row.tests_xfail + row.tests_skip;
    let reasons: Value = serde_json::from_str(&row.finished_reasons).unwrap_or_else(|_| json!([]));
    let mut m = Map::new();
    m.insert("last_updated".into(), time(&row.last_updated));
    m.insert("finished".into(), json!(row.finished));
    m.insert("finished_reasons".into(), reasons);
    m.insert("notified".into(), json!(row.notified));
    m.insert("notified_on_timeout".into(), json!(row.notified_on_timeout));
    m.insert("approved".into(), json!(row.approved));
    m.insert("tests_pass".into(), json!(row.tests_pass));
    m.insert("tests_fail".into(), json!(row.tests_fail));
    m.insert("tests_skip".into(), json!(row.tests_skip));
    m.insert("tests_xfail".into(), json!(row.tests_xfail));
    m.insert("tests_total".into(), json!(total));
    m.insert("pass_percentage".into(), json!(percent(row.tests_pass, total)));
    m.insert("fail_percentage".into(), json!(percent(row.tests_fail + row.tests_xfail, total)));
    m.insert("skip_percentage".into(), json!(percent(row.tests_skip, total)));
    m.insert("test_runs_total".into(), json!(row.test_runs_total));
    m.insert("test_runs_completed".into(), json!(row.test_runs_completed));
    m.insert("test_runs_incomplete".into(), json!(row.test_runs_incomplete));
    m.insert("has_metrics".into(), json!(row.has_metrics));
    m.insert("has_tests".into(), json!(total > 0));
    m.insert("metrics_summary".into(), json!(row.metrics_summary));
    m.insert("build".into(), json!(rest.api(&format!("builds/{id}/"))));
    m.insert("baseline".into(), json!(row.baseline_id.map(|b| rest.api(&format!("builds/{b}/")))));
    m.insert("created_at".into(), time(&row.created_at));
    // SQUAD gives these four as JSON-encoded strings.
    m.insert("regressions".into(), json!(row.regressions));
    m.insert("fixes".into(), json!(row.fixes));
    m.insert("metric_regressions".into(), json!(row.metric_regressions));
    m.insert("metric_fixes".into(), json!(row.metric_fixes));
    m.insert("details".into(), Value::Object(details));
    Ok(Json(rest.trim(m)))
}
