//! Comparing two builds: `/api/projects/<id>/compare_builds/` (two builds of
//! the project) and `/api/builds/<id>/compare/?target=` (this build as the
//! baseline, the target from any project the caller may see, environments
//! paired by slug). Both answer SQUAD's
//! `{"regressions": {env: {suite: [test]}}, "fixes": {…}}`, of tests, or with
//! `?by=metrics` of metrics that a threshold without a value classifies.

use axum::extract::Path;
use axum::Json;
use serde_json::{json, Value};
use squadron_status::{metric_regressions_and_fixes, regressions_and_fixes, Pairing};
use squadron_store::sql::Sql;

use super::builds::check_visible;
use super::projects::visible_project;
use super::{not_found, Rest};
use crate::error::ApiError;

/// A build's project and whether its status says it is finished.
async fn build_state(rest: &Rest, id: i64) -> Result<Option<(i64, bool)>, ApiError> {
    let mut sql = Sql::new(
        "SELECT b.project_id, COALESCE(s.finished, FALSE) FROM builds b \
         LEFT JOIN build_status s ON s.build_id = b.id WHERE b.id = ",
    );
    sql.bind(id);
    Ok(rest.state.store.fetch_optional(&sql).await?)
}

/// A build id parameter: present and an integer.
fn build_id(rest: &Rest, name: &str, missing: &str) -> Result<i64, ApiError> {
    let raw = rest.param(name).filter(|v| !v.is_empty()).ok_or_else(|| ApiError::bad_request(missing))?;
    raw.parse().map_err(|_| ApiError::bad_request("builds IDs must be integer"))
}

/// Whether `?by=metrics` (tests by default).
fn by_metrics(rest: &Rest) -> Result<bool, ApiError> {
    match rest.param("by").unwrap_or("tests") {
        "tests" => Ok(false),
        "metrics" => Ok(true),
        other => Err(ApiError::bad_request(format!("by: {other:?} is not tests or metrics"))),
    }
}

/// Compares `baseline` with `target`; unfinished builds are refused unless
/// `?force`.
async fn compare(
    rest: &Rest,
    baseline: (i64, bool),
    target: (i64, bool),
    pairing: Pairing,
) -> Result<Json<Value>, ApiError> {
    if (!baseline.1 || !target.1) && rest.param("force").is_none() {
        return Err(ApiError::bad_request("Cannot report regressions/fixes on a non-finished builds"));
    }
    let store = &rest.state.store;
    let changes = if by_metrics(rest)? {
        metric_regressions_and_fixes(store, baseline.0, target.0, pairing).await
    } else {
        regressions_and_fixes(store, baseline.0, target.0, pairing).await
    }
    .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(json!({"regressions": changes.regressions_by_suite, "fixes": changes.fixes_by_suite})))
}

/// `GET|POST /api/projects/<id>/compare_builds/?baseline=&to_compare=`.
pub(crate) async fn compare_builds(rest: Rest, Path(project): Path<i64>) -> Result<Json<Value>, ApiError> {
    visible_project(&rest, project).await?;
    let missing = "Invalid args provided. 'baseline' and 'to_compare' build ids must NOT be empty";
    let (baseline, target) = (build_id(&rest, "baseline", missing)?, build_id(&rest, "to_compare", missing)?);
    by_metrics(&rest)?;
    let of_project = |state: Option<(i64, bool)>| state.filter(|(p, _)| *p == project).ok_or_else(not_found);
    let baseline_state = of_project(build_state(&rest, baseline).await?)?;
    let target_state = of_project(build_state(&rest, target).await?)?;
    compare(&rest, (baseline, baseline_state.1), (target, target_state.1), Pairing::SameEnvironment).await
}

/// `GET /api/builds/<id>/compare/?target=`: this build is the baseline.
pub(crate) async fn compare_build(rest: Rest, Path(baseline): Path<i64>) -> Result<Json<Value>, ApiError> {
    check_visible(&rest, baseline).await?;
    let target = build_id(&rest, "target", "Invalid args provided. 'target' build id must NOT be empty")?;
    check_visible(&rest, target).await?;
    by_metrics(&rest)?;
    let (baseline_project, baseline_finished) = build_state(&rest, baseline).await?.ok_or_else(not_found)?;
    let (target_project, target_finished) = build_state(&rest, target).await?.ok_or_else(not_found)?;
    let pairing = if baseline_project == target_project { Pairing::SameEnvironment } else { Pairing::SameSlug };
    compare(&rest, (baseline, baseline_finished), (target, target_finished), pairing).await
}
