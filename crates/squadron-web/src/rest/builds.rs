//! `/api/builds/` and `/api/projects/<id>/builds/`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use squadron_store::sql::{Assignments, Sql, Value as SqlValue};

use super::filter::{field, relation, FilterSet, Filters, Kind, Lookup, EXACT_IN, ORDERED};
use super::page::{fetch, keyed_by_id, Paging};
use super::projects::{visible_project, PROJECT_FILTERS};
use super::{field_error, not_implemented, time, Input, Rest};
use crate::error::ApiError;
use crate::AppState;

/// SQUAD's `BuildFilter`.
pub(crate) static BUILD_FILTERS: FilterSet = FilterSet {
    fields: &[
        field("version", "{p}version", Kind::Text, &[Lookup::Exact, Lookup::In, Lookup::StartsWith]),
        field("id", "{p}id", Kind::Int, &[Lookup::Exact, Lookup::In, Lookup::Lt, Lookup::Lte, Lookup::Gt, Lookup::Gte]),
        field("created_at", "{p}created_at", Kind::Time, ORDERED),
        field("is_release", "{p}is_release", Kind::Bool, EXACT_IN),
    ],
    relations: &[relation("project", "{p}project_id", "projects", &PROJECT_FILTERS)],
    unsupported: &["status"],
};

/// Whether a build is finished, as its status last computed says (see
/// `squadron-status`; a build without a status is not).
const FINISHED: &str = "COALESCE((SELECT s.finished FROM build_status s WHERE s.build_id = b.id), FALSE)";

/// A build as the API shows it.
#[derive(sqlx::FromRow)]
pub(crate) struct BuildRow {
    id: i64,
    project_id: i64,
    pub version: String,
    created_at: DateTime<Utc>,
    datetime: DateTime<Utc>,
    patch_source_id: Option<i64>,
    patch_baseline_id: Option<i64>,
    patch_id: Option<String>,
    patch_url: Option<String>,
    patch_notified: bool,
    keep_data: bool,
    is_release: bool,
    release_label: Option<String>,
    finished: bool,
}

keyed_by_id!(BuildRow);

/// `SELECT` of [`BuildRow`]s, from builds `b`.
pub(crate) fn select() -> String {
    format!(
        "SELECT b.id, b.project_id, b.version, b.created_at, b.datetime, b.patch_source_id, b.patch_baseline_id, \
         b.patch_id, b.patch_url, b.patch_notified, b.keep_data, b.is_release, b.release_label, {FINISHED} AS finished \
         FROM builds b"
    )
}

/// A build as SQUAD's `BuildSerializer` shows it.
pub(crate) fn render(rest: &Rest, b: &BuildRow) -> Value {
    let link = |what: &str| json!(rest.api(&format!("builds/{}/{what}/", b.id)));
    let mut m = Map::new();
    m.insert("url".into(), json!(rest.api(&format!("builds/{}/", b.id))));
    m.insert("id".into(), json!(b.id));
    m.insert("testruns".into(), link("testruns"));
    m.insert("testjobs".into(), link("testjobs"));
    m.insert("status".into(), link("status"));
    m.insert("metadata".into(), link("metadata"));
    m.insert("finished".into(), json!(b.finished));
    m.insert("version".into(), json!(b.version));
    m.insert("created_at".into(), time(&b.created_at));
    m.insert("datetime".into(), time(&b.datetime));
    m.insert("patch_id".into(), json!(b.patch_id));
    m.insert("patch_url".into(), json!(b.patch_url));
    m.insert("patch_notified".into(), json!(b.patch_notified));
    m.insert("keep_data".into(), json!(b.keep_data));
    m.insert("is_release".into(), json!(b.is_release));
    m.insert("release_label".into(), json!(b.release_label));
    m.insert("project".into(), json!(rest.api(&format!("projects/{}/", b.project_id))));
    m.insert("patch_source".into(), json!(b.patch_source_id.map(|id| rest.api(&format!("patchsources/{id}/")))));
    m.insert("patch_baseline".into(), json!(b.patch_baseline_id.map(|id| rest.api(&format!("builds/{id}/")))));
    rest.trim(m)
}

const PAGING: Paging = Paging::LimitOffset {
    default: "b.datetime DESC",
    fields: &[("id", "b.id"), ("version", "b.version"), ("created_at", "b.created_at"), ("datetime", "b.datetime")],
    search: &["b.version"],
};

async fn list_where(rest: &Rest, mut conditions: Sql) -> Result<Json<Value>, ApiError> {
    rest.visible(&mut conditions, "b.project_id");
    Filters { engine: rest.state.store.engine_name() }.apply(&BUILD_FILTERS, "b.", &rest.params, &mut conditions)?;
    let page = fetch::<BuildRow>(rest, &select(), conditions, "b.id", &PAGING).await?;
    Ok(Json(page.into_json(|b| render(rest, b))))
}

async fn list(rest: Rest) -> Result<Json<Value>, ApiError> {
    list_where(&rest, Sql::new(" WHERE TRUE")).await
}

/// `/api/projects/<id>/builds/`.
pub(crate) async fn project_builds(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    visible_project(&rest, id).await?;
    let mut conditions = Sql::new(" WHERE b.project_id = ");
    conditions.bind(id);
    list_where(&rest, conditions).await
}

/// A build the caller may see.
async fn one(rest: &Rest, id: i64) -> Result<BuildRow, ApiError> {
    rest.fetch_visible(&select(), "b.id", id, "b.project_id").await
}

/// Checks that the build exists and the caller may see it.
pub(crate) async fn check_visible(rest: &Rest, id: i64) -> Result<(), ApiError> {
    let _: (i64,) = rest.fetch_visible("SELECT b.id FROM builds b", "b.id", id, "b.project_id").await?;
    Ok(())
}

async fn detail(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    Ok(Json(render(&rest, &one(&rest, id).await?)))
}

/// `PATCH`/`PUT /api/builds/<id>/`: release marking and data keeping, by
/// the project group's admins.
async fn update(
    rest: Rest,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let build = one(&rest, id).await?;
    let project = visible_project(&rest, build.project_id).await?;
    rest.require_admin(project.group_id).await?;
    let input = Input::read(&state, &headers, body).await?;
    if input.text("version")?.is_some_and(|v| v != build.version) {
        return Err(field_error("version", "a build's version cannot be changed"));
    }
    let mut set: Assignments = Vec::new();
    for name in ["is_release", "keep_data"] {
        if let Some(v) = input.boolean(name)? {
            set.push((name, Some(v.into())));
        }
    }
    if input.has("release_label") {
        set.push(("release_label", input.text("release_label")?.map(SqlValue::from)));
    }
    state.store.update_build(id, &set).await?;
    Ok(Json(render(&rest, &one(&rest, id).await?)))
}

/// `/api/builds/<id>/metadata/`: the union of the runs' metadata; a key with
/// several distinct values gets the sorted list of them.
async fn metadata(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    check_visible(&rest, id).await?;
    Ok(Json(Value::Object(rest.state.store.build_metadata(id).await?)))
}

/// `/api/builds/<id>/metadata_by_testrun/`.
async fn metadata_by_testrun(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    check_visible(&rest, id).await?;
    let by_run: Map<String, Value> = rest
        .state
        .store
        .runs_metadata(id)
        .await?
        .into_iter()
        .map(|(run, metadata)| (run.to_string(), Value::Object(metadata)))
        .collect();
    Ok(Json(Value::Object(by_run)))
}

pub(crate) fn routes() -> Router<AppState> {
    let pending = |what: &'static str| move || async move { not_implemented(what) };
    Router::new()
        .route("/api/builds/", get(list))
        .route("/api/builds/{id}/", get(detail).patch(update).put(update).delete(pending("deleting a build")))
        .route("/api/builds/{id}/metadata/", get(metadata))
        .route("/api/builds/{id}/metadata_by_testrun/", get(metadata_by_testrun))
        .route("/api/builds/{id}/testruns/", get(super::testruns::build_testruns))
        .route("/api/builds/{id}/tests/", get(super::tests::build_tests))
        .route("/api/builds/{id}/metrics/", get(super::tests::build_metrics))
        .route("/api/builds/{id}/status/", get(super::build_status::status))
        .route("/api/builds/{id}/testjobs/", get(super::testjobs::build_testjobs))
        .route("/api/builds/{id}/testjobs_summary/", get(super::testjobs_summary::summary))
        .route("/api/builds/{id}/failures_with_confidence/", get(super::failures::failures_with_confidence))
        .route("/api/builds/{id}/cancel/", post(super::testjobs::cancel_build))
        .route("/api/builds/{id}/email/", get(super::build_reports::email))
        .route("/api/builds/{id}/report/", get(super::build_reports::report).post(super::build_reports::report))
        .route("/api/builds/{id}/callbacks/", get(super::callbacks::list).post(super::callbacks::create))
        .route("/api/builds/{id}/compare/", get(super::compare::compare_build))
}
