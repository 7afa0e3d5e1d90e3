//! `/api/tasks/`: the task queue, for superusers. Lists tasks (filtered by
//! `state` and `queue`), shows one, and retries or cancels one
//! (`POST /api/tasks/<id>/retry/`, `POST /api/tasks/<id>/cancel/`).

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::DateTime;
use serde_json::{json, Value};
use squadron_queue::admin::{self, TaskInfo, STATES};
use squadron_queue::QueueError;

use super::{time, Rest};
use crate::error::ApiError;
use crate::AppState;

/// SQUAD's page size, as the other lists.
const PAGE_SIZE: i64 = 50;

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::NoSuchTask(_) => ApiError::not_found("Not found."),
            QueueError::WrongState { .. } | QueueError::UniqueKeyTaken(_) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            other => ApiError::internal(&other),
        }
    }
}

/// A time the queue stores (µs since the epoch) as DRF writes times.
fn micros(value: Option<i64>) -> Value {
    value.and_then(DateTime::from_timestamp_micros).map_or(Value::Null, |t| time(&t))
}

fn render(rest: &Rest, t: &TaskInfo) -> Value {
    let args: Value = serde_json::from_str(&t.args).unwrap_or_else(|_| Value::String(t.args.clone()));
    let checkpoint: Option<Value> = t.checkpoint.as_deref().and_then(|c| serde_json::from_str(c).ok());
    json!({
        "url": rest.api(&format!("tasks/{}/", t.id)),
        "id": t.id,
        "kind": t.kind,
        "queue": t.queue,
        "state": t.state,
        "args": args,
        "priority": t.priority,
        "run_at": micros(Some(t.run_at)),
        "created_at": micros(Some(t.created_at)),
        "attempt": t.attempt,
        "max_attempts": t.max_attempts,
        "unique_key": t.unique_key,
        "rerun": t.rerun,
        "checkpoint": checkpoint,
        "lease_owner": t.lease_owner,
        "lease_expires_at": micros(t.lease_expires_at),
        "claimed_at": micros(t.claimed_at),
        "finished_at": micros(t.finished_at),
        "rescues": t.rescues,
        "releases": t.releases,
        "last_error": t.last_error,
    })
}

fn number(rest: &Rest, name: &str, default: i64) -> Result<i64, ApiError> {
    match rest.param(name) {
        None => Ok(default),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::bad_request(format!("{name}: {raw:?} is not a number"))),
    }
}

async fn list(rest: Rest) -> Result<Json<Value>, ApiError> {
    rest.require_superuser()?;
    let state = rest.param("state");
    if let Some(state) = state.filter(|s| !STATES.contains(s)) {
        return Err(ApiError::bad_request(format!("state: {state:?} is not one of {}", STATES.join(", "))));
    }
    let queue = rest.param("queue");
    let limit = number(&rest, "limit", PAGE_SIZE)?.clamp(1, 1000);
    let offset = number(&rest, "offset", 0)?;
    let db = rest.state.store.queue_db();
    let count = admin::count(&db, state, queue).await?;
    let tasks = admin::list(&db, state, queue, limit, offset).await?;
    let page = |offset: i64| {
        let mut params: Vec<(String, String)> =
            rest.params.iter().filter(|(k, _)| k != "limit" && k != "offset").cloned().collect();
        params.push(("limit".into(), limit.to_string()));
        params.push(("offset".into(), offset.to_string()));
        rest.self_url(&params)
    };
    let next = (offset + limit < count).then(|| page(offset + limit));
    let previous = (offset > 0).then(|| page((offset - limit).max(0)));
    let results: Vec<Value> = tasks.iter().map(|t| render(&rest, t)).collect();
    Ok(Json(json!({"count": count, "next": next, "previous": previous, "results": results})))
}

async fn detail(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    rest.require_superuser()?;
    let task = admin::task(&rest.state.store.queue_db(), id).await?;
    Ok(Json(render(&rest, &task)))
}

async fn retry(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    rest.require_superuser()?;
    let task = admin::retry(&rest.state.store.queue_db(), id).await?;
    Ok(Json(render(&rest, &task)))
}

async fn cancel(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    rest.require_superuser()?;
    let task = admin::cancel(&rest.state.store.queue_db(), id).await?;
    Ok(Json(render(&rest, &task)))
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/tasks/", get(list))
        .route("/api/tasks/{id}/", get(detail))
        .route("/api/tasks/{id}/retry/", post(retry))
        .route("/api/tasks/{id}/cancel/", post(cancel))
}
