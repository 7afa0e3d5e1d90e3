//! `/api/patchsources/`: where patch builds come from and are reported to
//! (`github`, `gerrit`); read by anyone, written by superusers. Credentials
//! (`username`, `password`, `token`) are write-only, as in SQUAD.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use squadron_store::sql::{Assignments, Sql, Value as SqlValue};

use super::filter::{field, FilterSet, Filters, Kind, EXACT_IN, TEXT};
use super::page::{fetch, keyed_by_id, Paging};
use super::{field_error, json, not_found, unique_field, Input, Rest};
use crate::error::ApiError;
use crate::AppState;

/// The implementations squadron reports to.
const IMPLEMENTATIONS: [&str; 2] = ["github", "gerrit"];

/// SQUAD's filters: `implementation`, `url`, `name`.
static SOURCE_FILTERS: FilterSet = FilterSet {
    fields: &[
        field("name", "{p}name", Kind::Text, TEXT),
        field("url", "{p}url", Kind::Text, TEXT),
        field("implementation", "{p}implementation", Kind::Text, TEXT),
        field("id", "{p}id", Kind::Int, EXACT_IN),
    ],
    relations: &[],
    unsupported: &[],
};

#[derive(sqlx::FromRow)]
struct SourceRow {
    id: i64,
    name: String,
    url: String,
    implementation: String,
}

keyed_by_id!(SourceRow);

const SELECT: &str = "SELECT s.id, s.name, s.url, s.implementation FROM patch_sources s";

fn render(rest: &Rest, s: &SourceRow) -> Value {
    let mut m = Map::new();
    // As in SQUAD, `url` is the source's own URL, not a link here.
    m.insert("id".into(), json!(s.id));
    m.insert("name".into(), json!(s.name));
    m.insert("url".into(), json!(s.url));
    m.insert("implementation".into(), json!(s.implementation));
    rest.trim(m)
}

async fn list(rest: Rest) -> Result<Json<Value>, ApiError> {
    let mut conditions = Sql::new(" WHERE TRUE");
    Filters { engine: rest.state.store.engine_name() }.apply(&SOURCE_FILTERS, "s.", &rest.params, &mut conditions)?;
    let paging = Paging::LimitOffset { default: "s.id", fields: &[], search: &[] };
    let page = fetch::<SourceRow>(&rest, SELECT, conditions, "s.id", &paging).await?;
    Ok(Json(page.into_json(|s| render(&rest, s))))
}

async fn one(rest: &Rest, id: i64) -> Result<SourceRow, ApiError> {
    let mut sql = Sql::new(SELECT);
    sql.push(" WHERE s.id = ").bind(id);
    rest.state.store.fetch_optional(&sql).await?.ok_or_else(not_found)
}

async fn detail(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    Ok(Json(render(&rest, &one(&rest, id).await?)))
}

/// The fields `input` sets, checked; `creating` requires name, url and
/// implementation.
fn assignments(input: &Input, creating: bool) -> Result<Assignments, ApiError> {
    let mut set: Assignments = Vec::new();
    for name in ["name", "url", "implementation"] {
        match input.text(name)?.filter(|v| !v.trim().is_empty()) {
            Some(value) => set.push((name, Some(value.into()))),
            None if creating => return Err(field_error(name, "This field is required.")),
            None => {}
        }
    }
    for (name, value) in &set {
        let Some(SqlValue::Text(text)) = value else { continue };
        if *name == "url" && !["http://", "https://", "ftp://", "ssh://"].iter().any(|s| text.starts_with(s)) {
            return Err(field_error("url", "Enter a valid URL (http, https, ftp or ssh)."));
        }
        if *name == "implementation" && !IMPLEMENTATIONS.contains(&text.as_str()) {
            return Err(field_error("implementation", &format!("{text:?} is not one of {IMPLEMENTATIONS:?}")));
        }
    }
    // SQUAD's serializer calls the password `_password`.
    for (name, aliases) in
        [("username", &["username"][..]), ("password", &["password", "_password"]), ("token", &["token"])]
    {
        for alias in aliases {
            if input.has(alias) {
                let value = input.text(alias)?.unwrap_or_default();
                set.push((name, Some(value.into())));
            }
        }
    }
    Ok(set)
}

async fn create(
    rest: Rest,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    rest.require_superuser()?;
    let set = assignments(&Input::read(&state, &headers, body).await?, true)?;
    let id = state
        .store
        .insert_row("patch_sources", &set)
        .await
        .map_err(unique_field("name", "patch source with this name already exists."))?;
    Ok(json(StatusCode::CREATED, render(&rest, &one(&rest, id).await?)))
}

async fn update(
    rest: Rest,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    rest.require_superuser()?;
    one(&rest, id).await?;
    let set = assignments(&Input::read(&state, &headers, body).await?, false)?;
    state
        .store
        .update_row("patch_sources", id, &set)
        .await
        .map_err(unique_field("name", "patch source with this name already exists."))?;
    Ok(Json(render(&rest, &one(&rest, id).await?)))
}

async fn delete(rest: Rest, Path(id): Path<i64>) -> Result<StatusCode, ApiError> {
    rest.require_superuser()?;
    one(&rest, id).await?;
    rest.state.store.delete_row("patch_sources", id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/patchsources/", get(list).post(create))
        .route("/api/patchsources/{id}/", get(detail).patch(update).put(update).delete(delete))
}
