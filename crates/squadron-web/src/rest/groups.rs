//! `/api/groups/`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use squadron_store::sql::Sql;

use super::filter::{field, FilterSet, Filters, Kind, EXACT_IN, TEXT};
use super::page::{fetch, keyed_by_id, Paging};
use super::{json, not_found, not_implemented, Input, Rest};
use crate::error::ApiError;
use crate::AppState;

/// SQUAD's `GroupFilter`.
pub(crate) static GROUP_FILTERS: FilterSet = FilterSet {
    fields: &[
        field("name", "{p}name", Kind::Text, TEXT),
        field("slug", "{p}slug", Kind::Text, TEXT),
        field("id", "{p}id", Kind::Int, EXACT_IN),
    ],
    relations: &[],
    unsupported: &["filters"],
};

#[derive(sqlx::FromRow)]
struct GroupRow {
    id: i64,
    slug: String,
    name: Option<String>,
    description: Option<String>,
    settings: Option<String>,
}

keyed_by_id!(GroupRow);

const SELECT: &str = "SELECT g.id, g.slug, g.name, g.description, g.settings FROM groups g";

fn render(rest: &Rest, g: &GroupRow) -> Value {
    let mut m = Map::new();
    m.insert("url".into(), json!(rest.api(&format!("groups/{}/", g.id))));
    m.insert("id".into(), json!(g.id));
    m.insert("slug".into(), json!(g.slug));
    m.insert("name".into(), json!(g.name));
    m.insert("description".into(), json!(g.description));
    m.insert("settings".into(), json!(g.settings));
    rest.trim(m)
}

/// Groups the caller may see: those with a visible project, and those the
/// caller belongs to (all, for a superuser).
fn visible(rest: &Rest, sql: &mut Sql) {
    match &rest.user {
        Some(user) if user.is_superuser => {}
        Some(user) => {
            sql.push(" AND (g.id IN (SELECT group_id FROM group_members WHERE user_id = ")
                .bind(user.id)
                .push(") OR g.id IN (SELECT group_id FROM projects WHERE is_public))");
        }
        None => {
            sql.push(" AND g.id IN (SELECT group_id FROM projects WHERE is_public)");
        }
    }
}

async fn list(rest: Rest) -> Result<Json<Value>, ApiError> {
    if rest.param("filters").is_some() {
        return Err(ApiError::bad_request("filter filters: complex filter expressions are not supported yet"));
    }
    let mut conditions = Sql::new(" WHERE TRUE");
    visible(&rest, &mut conditions);
    Filters { engine: rest.state.store.engine_name() }.apply(&GROUP_FILTERS, "g.", &rest.params, &mut conditions)?;
    let paging = Paging::LimitOffset { default: "g.slug", fields: &[], search: &[] };
    let page = fetch::<GroupRow>(&rest, SELECT, conditions, "g.id", &paging).await?;
    Ok(Json(page.into_json(|g| render(&rest, g))))
}

async fn one(rest: &Rest, id: i64) -> Result<GroupRow, ApiError> {
    let mut sql = Sql::new(SELECT);
    sql.push(" WHERE g.id = ").bind(id);
    visible(rest, &mut sql);
    rest.state.store.fetch_optional(&sql).await?.ok_or_else(not_found)
}

async fn detail(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let group = one(&rest, id).await?;
    Ok(Json(render(&rest, &group)))
}

/// `POST /api/groups/`: superusers only.
async fn create(
    rest: Rest,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    match &rest.user {
        Some(user) if user.is_superuser => {}
        Some(_) => return Err(ApiError::forbidden("You do not have permission to perform this action.")),
        None => return Err(ApiError::unauthorized("Authentication credentials were not provided.")),
    }
    let input = Input::read(&state, &headers, body).await?;
    let slug = input.text("slug")?.ok_or_else(|| super::field_error("slug", "This field is required."))?;
    let group = state.store.create_group(&slug, input.text("name")?.as_deref()).await?;
    if let Some(description) = input.text("description")? {
        state.store.update_group(group.id, None, Some(&description)).await?;
    }
    let created = one(&rest, group.id).await?;
    Ok(json(StatusCode::CREATED, render(&rest, &created)))
}

/// `PATCH`/`PUT /api/groups/<id>/`: the group's admins.
async fn update(
    rest: Rest,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let group = one(&rest, id).await?;
    rest.require_admin(group.id).await?;
    let input = Input::read(&state, &headers, body).await?;
    if input.has("slug") && input.text("slug")?.as_deref() != Some(group.slug.as_str()) {
        return Err(super::field_error("slug", "a group's slug cannot be changed"));
    }
    state.store.update_group(group.id, input.text("name")?.as_deref(), input.text("description")?.as_deref()).await?;
    Ok(Json(render(&rest, &one(&rest, id).await?)))
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/api/groups/", get(list).post(create)).route(
        "/api/groups/{id}/",
        get(detail).patch(update).put(update).delete(async || not_implemented("deleting a group")),
    )
}
