//! `/api/annotations/`: a note on a build (one at most per build), shown on
//! metric charts (`/api/data`). Read by whoever may see the build's project
//! (SQUAD shows every annotation to anyone); written by admins of its
//! group.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use squadron_store::sql::{row_update, Assignments, Sql, Value as SqlValue};

use super::builds::BUILD_FILTERS;
use super::filter::{field, relation, FilterSet, Filters, Kind, EXACT};
use super::page::{fetch, keyed_by_id, Paging};
use super::{field_error, json, unique_field, Input, Rest};
use crate::error::ApiError;
use crate::AppState;

/// SQUAD's filters: `description` and `build`.
static ANNOTATION_FILTERS: FilterSet = FilterSet {
    fields: &[field("description", "{p}description", Kind::Text, EXACT)],
    relations: &[relation("build", "{p}build_id", "builds", &BUILD_FILTERS)],
    unsupported: &[],
};

/// The longest description (SQUAD's `max_length`).
const DESCRIPTION_LENGTH: usize = 1024;

#[derive(sqlx::FromRow)]
struct AnnotationRow {
    id: i64,
    build_id: i64,
    description: Option<String>,
}

keyed_by_id!(AnnotationRow);

const SELECT: &str = "SELECT a.id, a.build_id, a.description FROM annotations a JOIN builds b ON b.id = a.build_id";

fn render(rest: &Rest, a: &AnnotationRow) -> Value {
    let mut m = Map::new();
    m.insert("url".into(), json!(rest.api(&format!("annotations/{}/", a.id))));
    m.insert("id".into(), json!(a.id));
    m.insert("description".into(), json!(a.description));
    m.insert("build".into(), json!(rest.api(&format!("builds/{}/", a.build_id))));
    rest.trim(m)
}

async fn list(rest: Rest) -> Result<Json<Value>, ApiError> {
    let mut conditions = Sql::new(" WHERE TRUE");
    rest.visible(&mut conditions, "b.project_id");
    Filters { engine: rest.state.store.engine_name() }.apply(
        &ANNOTATION_FILTERS,
        "a.",
        &rest.params,
        &mut conditions,
    )?;
    let paging =
        Paging::LimitOffset { default: "a.id", fields: &[("id", "a.id"), ("build", "a.build_id")], search: &[] };
    let page = fetch::<AnnotationRow>(&rest, SELECT, conditions, "a.id", &paging).await?;
    Ok(Json(page.into_json(|a| render(&rest, a))))
}

async fn one(rest: &Rest, id: i64) -> Result<AnnotationRow, ApiError> {
    rest.fetch_visible(SELECT, "a.id", id, "b.project_id").await
}

async fn detail(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    Ok(Json(render(&rest, &one(&rest, id).await?)))
}

/// Checks that the caller administers the group of `build` (which it must
/// be able to see).
async fn may_annotate(rest: &Rest, build: i64) -> Result<(), ApiError> {
    let (group,): (i64,) = rest
        .fetch_visible(
            "SELECT p.group_id FROM builds b JOIN projects p ON p.id = b.project_id",
            "b.id",
            build,
            "b.project_id",
        )
        .await
        .map_err(|e| {
            if e.status == StatusCode::NOT_FOUND {
                field_error("build", "Invalid hyperlink - Object does not exist.")
            } else {
                e
            }
        })?;
    rest.require_admin(group).await
}

/// The `description` field, checked.
fn description(input: &Input) -> Result<Option<String>, ApiError> {
    let text = input.text("description")?;
    if text.as_ref().is_some_and(|t| t.chars().count() > DESCRIPTION_LENGTH) {
        return Err(field_error(
            "description",
            &format!("Ensure this field has no more than {DESCRIPTION_LENGTH} characters."),
        ));
    }
    Ok(text)
}

async fn create(
    rest: Rest,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let input = Input::read(&state, &headers, body).await?;
    let build = input.link("build", "builds")?.ok_or_else(|| field_error("build", "This field is required."))?;
    may_annotate(&rest, build).await?;
    let mut sql = Sql::new("INSERT INTO annotations (build_id, description) VALUES (");
    sql.bind(build).push(", ").bind_optional(description(&input)?).push(") RETURNING id");
    let mut tx = state.store.begin_write().await?;
    let id =
        tx.fetch_integer(&sql).await.map_err(unique_field("build", "annotation with this build already exists."))?;
    tx.commit().await?;
    Ok(json(StatusCode::CREATED, render(&rest, &one(&rest, id).await?)))
}

/// `PATCH`/`PUT`: the description, or the build (whose group the caller
/// must administer too).
async fn update(
    rest: Rest,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let annotation = one(&rest, id).await?;
    may_annotate(&rest, annotation.build_id).await?;
    let input = Input::read(&state, &headers, body).await?;
    let mut set: Assignments = Vec::new();
    if input.has("description") {
        set.push(("description", description(&input)?.map(SqlValue::from)));
    }
    if let Some(build) = input.link("build", "builds")? {
        may_annotate(&rest, build).await?;
        set.push(("build_id", Some(build.into())));
    }
    if !set.is_empty() {
        state
            .store
            .execute(&row_update("annotations", id, &set))
            .await
            .map_err(unique_field("build", "annotation with this build already exists."))?;
    }
    Ok(Json(render(&rest, &one(&rest, id).await?)))
}

async fn delete(rest: Rest, Path(id): Path<i64>) -> Result<StatusCode, ApiError> {
    let annotation = one(&rest, id).await?;
    may_annotate(&rest, annotation.build_id).await?;
    let mut sql = Sql::new("DELETE FROM annotations WHERE id = ");
    sql.bind(id);
    rest.state.store.execute(&sql).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/annotations/", get(list).post(create))
        .route("/api/annotations/{id}/", get(detail).patch(update).put(update).delete(delete))
}
