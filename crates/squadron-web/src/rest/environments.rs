//! `/api/environments/`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use squadron_core::names::is_valid_slug;
use squadron_store::sql::{Assignments, Sql, Value as SqlValue};

use super::filter::{field, relation, FilterSet, Filters, Kind, EXACT_IN, TEXT};
use super::page::{fetch, keyed_by_id, Paging};
use super::projects::{visible_project, PROJECT_FILTERS};
use super::{field_error, json, not_implemented, Input, Rest};
use crate::error::ApiError;
use crate::AppState;

/// SQUAD's `EnvironmentFilter`.
pub(crate) static ENVIRONMENT_FILTERS: FilterSet = FilterSet {
    fields: &[
        field("name", "{p}name", Kind::Text, TEXT),
        field("slug", "{p}slug", Kind::Text, TEXT),
        field("id", "{p}id", Kind::Int, EXACT_IN),
    ],
    relations: &[relation("project", "{p}project_id", "projects", &PROJECT_FILTERS)],
    unsupported: &[],
};

/// An environment as the API shows it.
#[derive(sqlx::FromRow)]
pub(crate) struct EnvironmentRow {
    pub id: i64,
    project_id: i64,
    slug: String,
    name: Option<String>,
    expected_test_runs: Option<i64>,
    description: Option<String>,
}

keyed_by_id!(EnvironmentRow);

/// `SELECT` of [`EnvironmentRow`]s, from environments `e`.
pub(crate) const SELECT: &str =
    "SELECT e.id, e.project_id, e.slug, e.name, e.expected_test_runs, e.description FROM environments e";

/// An environment as SQUAD's `EnvironmentSerializer` shows it.
pub(crate) fn render(rest: &Rest, e: &EnvironmentRow) -> Value {
    let mut m = Map::new();
    m.insert("url".into(), json!(rest.api(&format!("environments/{}/", e.id))));
    m.insert("id".into(), json!(e.id));
    m.insert("project".into(), json!(rest.api(&format!("projects/{}/", e.project_id))));
    m.insert("slug".into(), json!(e.slug));
    m.insert("name".into(), json!(e.name));
    m.insert("expected_test_runs".into(), json!(e.expected_test_runs));
    m.insert("description".into(), json!(e.description));
    rest.trim(m)
}

async fn list(rest: Rest) -> Result<Json<Value>, ApiError> {
    let mut conditions = Sql::new(" WHERE TRUE");
    rest.visible(&mut conditions, "e.project_id");
    Filters { engine: rest.state.store.engine_name() }.apply(
        &ENVIRONMENT_FILTERS,
        "e.",
        &rest.params,
        &mut conditions,
    )?;
    let paging = Paging::LimitOffset {
        default: "e.id",
        fields: &[("id", "e.id"), ("slug", "e.slug"), ("name", "e.name")],
        search: &["e.slug", "e.name"],
    };
    let page = fetch::<EnvironmentRow>(&rest, SELECT, conditions, "e.id", &paging).await?;
    Ok(Json(page.into_json(|e| render(&rest, e))))
}

async fn one(rest: &Rest, id: i64) -> Result<EnvironmentRow, ApiError> {
    rest.fetch_visible(SELECT, "e.id", id, "e.project_id").await
}

async fn detail(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    Ok(Json(render(&rest, &one(&rest, id).await?)))
}

fn assignments(input: &Input) -> Result<Assignments, ApiError> {
    let mut set: Assignments = Vec::new();
    for name in ["name", "description"] {
        if input.has(name) {
            set.push((name, input.text(name)?.map(SqlValue::from)));
        }
    }
    if input.has("expected_test_runs") {
        set.push(("expected_test_runs", input.integer("expected_test_runs")?.map(SqlValue::from)));
    }
    if let Some(slug) = input.text("slug")? {
        if !is_valid_slug(&slug) {
            return Err(field_error("slug", &format!("{slug:?} is not a valid slug (letters, digits, '_', '.', '-')")));
        }
        set.push(("slug", Some(slug.into())));
    }
    Ok(set)
}

/// Checks that the caller administers the project's group.
pub(crate) async fn may_write(rest: &Rest, project: i64) -> Result<(), ApiError> {
    let project = visible_project(rest, project).await?;
    rest.require_admin(project.group_id).await
}

fn unique_slug(e: squadron_store::StoreError) -> ApiError {
    if e.is_unique_violation() {
        field_error("slug", "an environment with this slug already exists in the project")
    } else {
        e.into()
    }
}

/// `POST /api/environments/`: admins of the project's group.
async fn create(
    rest: Rest,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let input = Input::read(&state, &headers, body).await?;
    let project =
        input.link("project", "projects")?.ok_or_else(|| field_error("project", "This field is required."))?;
    if !input.has("slug") {
        return Err(field_error("slug", "This field is required."));
    }
    may_write(&rest, project).await?;
    let id = state.store.create_environment(project, &assignments(&input)?).await.map_err(unique_slug)?;
    Ok(json(StatusCode::CREATED, render(&rest, &one(&rest, id).await?)))
}

/// `PATCH`/`PUT /api/environments/<id>/`.
async fn update(
    rest: Rest,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let environment = one(&rest, id).await?;
    may_write(&rest, environment.project_id).await?;
    let input = Input::read(&state, &headers, body).await?;
    if input.link("project", "projects")?.is_some_and(|p| p != environment.project_id) {
        return Err(field_error("project", "an environment cannot be moved to another project"));
    }
    state.store.update_environment(id, &assignments(&input)?).await.map_err(unique_slug)?;
    Ok(Json(render(&rest, &one(&rest, id).await?)))
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/api/environments/", get(list).post(create)).route(
        "/api/environments/{id}/",
        get(detail).patch(update).put(update).delete(|| async { not_implemented("deleting an environment") }),
    )
}
