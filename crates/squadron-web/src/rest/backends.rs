//! `/api/backends/`: the CI labs test jobs run in; read by anyone, written
//! by superusers. The `token` is write-only and `url` is the lab's own URL,
//! as in SQUAD. `poll_interval` is in minutes here, as SQUAD has it, and
//! stored in seconds.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use squadron_ci::backend::IMPLEMENTATION_TYPES;
use squadron_ci::BackendRecord;
use squadron_core::settings::parse_settings;
use squadron_store::sql::{Assignments, Sql, Value as SqlValue};

use super::filter::{field, FilterSet, Filters, Kind, EXACT, EXACT_IN, TEXT};
use super::page::{fetch, keyed_by_id, Paging};
use super::{field_error, json, not_found, unique_field, Input, Rest};
use crate::error::ApiError;
use crate::AppState;

/// SQUAD's `BackendFilter` (also reached as `backend__…` from test jobs),
/// with the viewset's `url`.
pub(crate) static BACKEND_FILTERS: FilterSet = FilterSet {
    fields: &[
        field("id", "{p}id", Kind::Int, EXACT_IN),
        field("name", "{p}name", Kind::Text, TEXT),
        field("implementation_type", "{p}implementation_type", Kind::Text, EXACT),
        field("url", "{p}url", Kind::Text, EXACT),
    ],
    relations: &[],
    unsupported: &[],
};

keyed_by_id!(BackendRecord);

const SELECT: &str = "SELECT b.id, b.name, b.url, b.username, b.token, b.implementation_type, b.backend_settings, \
    b.poll_interval, b.max_fetch_attempts, b.poll_enabled, b.listen_enabled FROM backends b";

/// Seconds as the API's minutes: whole when they are.
fn minutes(seconds: i64) -> Value {
    if seconds % 60 == 0 {
        json!(seconds / 60)
    } else {
        json!(seconds as f64 / 60.0)
    }
}

fn render(rest: &Rest, b: &BackendRecord) -> Value {
    let mut m = Map::new();
    m.insert("url".into(), json!(b.url));
    m.insert("id".into(), json!(b.id));
    m.insert("name".into(), json!(b.name));
    m.insert("username".into(), json!(b.username));
    m.insert("implementation_type".into(), json!(b.implementation_type));
    m.insert("backend_settings".into(), json!(b.backend_settings));
    m.insert("poll_interval".into(), minutes(b.poll_interval));
    m.insert("max_fetch_attempts".into(), json!(b.max_fetch_attempts));
    m.insert("poll_enabled".into(), json!(b.poll_enabled));
    m.insert("listen_enabled".into(), json!(b.listen_enabled));
    rest.trim(m)
}

async fn list(rest: Rest) -> Result<Json<Value>, ApiError> {
    let mut conditions = Sql::new(" WHERE TRUE");
    Filters { engine: rest.state.store.engine_name() }.apply(&BACKEND_FILTERS, "b.", &rest.params, &mut conditions)?;
    let paging = Paging::LimitOffset {
        default: "b.id",
        fields: &[
            ("id", "b.id"),
            ("implementation_type", "b.implementation_type"),
            ("name", "b.name"),
            ("url", "b.url"),
        ],
        search: &["b.implementation_type", "b.name", "b.url"],
    };
    let page = fetch::<BackendRecord>(&rest, SELECT, conditions, "b.id", &paging).await?;
    Ok(Json(page.into_json(|b| render(&rest, b))))
}

async fn one(rest: &Rest, id: i64) -> Result<BackendRecord, ApiError> {
    let mut sql = Sql::new(SELECT);
    sql.push(" WHERE b.id = ").bind(id);
    rest.state.store.fetch_optional(&sql).await?.ok_or_else(not_found)
}

async fn detail(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    Ok(Json(render(&rest, &one(&rest, id).await?)))
}

/// An integer field that must be at least `least`.
fn at_least(input: &Input, name: &str, least: i64) -> Result<Option<i64>, ApiError> {
    match input.integer(name)? {
        Some(n) if n < least => {
            Err(field_error(name, &format!("Ensure this value is greater than or equal to {least}.")))
        }
        other => Ok(other),
    }
}

/// The fields `input` sets, checked; `creating` requires name, url and
/// implementation_type.
fn assignments(input: &Input, creating: bool) -> Result<Assignments, ApiError> {
    let mut set: Assignments = Vec::new();
    for name in ["name", "url", "implementation_type"] {
        match input.text(name)?.filter(|v| !v.trim().is_empty()) {
            Some(value) => set.push((name, Some(value.into()))),
            None if creating => return Err(field_error(name, "This field is required.")),
            None => {}
        }
    }
    for (name, value) in &set {
        let Some(SqlValue::Text(text)) = value else { continue };
        if *name == "url" && !["http://", "https://"].iter().any(|s| text.starts_with(s)) {
            return Err(field_error("url", "Enter a valid URL."));
        }
        if *name == "implementation_type" && !IMPLEMENTATION_TYPES.contains(&text.as_str()) {
            return Err(field_error("implementation_type", &format!("\"{text}\" is not a valid choice.")));
        }
    }
    for name in ["username", "token"] {
        if input.has(name) {
            set.push((name, Some(input.text(name)?.unwrap_or_default().into())));
        }
    }
    if input.has("backend_settings") {
        let settings = input.text("backend_settings")?.filter(|s| !s.trim().is_empty());
        if let Some(text) = &settings {
            parse_settings(text).map_err(|e| field_error("backend_settings", &e))?;
        }
        set.push(("backend_settings", settings.map(SqlValue::from)));
    }
    if let Some(minutes) = at_least(input, "poll_interval", 1)? {
        let seconds = minutes.checked_mul(60).ok_or_else(|| field_error("poll_interval", "too large"))?;
        set.push(("poll_interval", Some(seconds.into())));
    }
    if let Some(attempts) = at_least(input, "max_fetch_attempts", 0)? {
        set.push(("max_fetch_attempts", Some(attempts.into())));
    }
    for name in ["poll_enabled", "listen_enabled"] {
        if let Some(v) = input.boolean(name)? {
            set.push((name, Some(v.into())));
        }
    }
    Ok(set)
}

const DUPLICATE: &str = "backend with this name already exists.";

async fn create(
    rest: Rest,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    rest.require_superuser()?;
    let set = assignments(&Input::read(&state, &headers, body).await?, true)?;
    let id = state.store.insert_row("backends", &set).await.map_err(unique_field("name", DUPLICATE))?;
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
    state.store.update_row("backends", id, &set).await.map_err(unique_field("name", DUPLICATE))?;
    Ok(Json(render(&rest, &one(&rest, id).await?)))
}

/// Deletes a backend without test jobs (SQUAD deletes its jobs with it;
/// squadron refuses, so that no job's results lose their lab).
async fn delete(rest: Rest, Path(id): Path<i64>) -> Result<StatusCode, ApiError> {
    rest.require_superuser()?;
    let backend = one(&rest, id).await?;
    rest.state.store.delete_row("backends", id).await.map_err(|e| {
        if e.is_foreign_key_violation() {
            ApiError::bad_request(format!("backend {:?} has test jobs; it cannot be deleted", backend.name))
        } else {
            e.into()
        }
    })?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/backends/", get(list).post(create))
        .route("/api/backends/{id}/", get(detail).patch(update).put(update).delete(delete))
}
