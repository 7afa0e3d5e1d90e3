//! `/api/builds/<id>/callbacks/`: a build's callbacks, listed (with SQUAD's
//! 202) by whoever may see the build, and attached by its group's
//! submitters from the same `callback_*` fields `/api/createbuild` takes.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};
use squadron_core::callbacks::{callback_from_form, project_callback_headers};
use squadron_queue::{NewTask, StepTx};
use squadron_status::SendBuildCallbacks;
use squadron_store::builds::insert_callback;
use squadron_store::sql::Sql;

use super::{json, Input, Rest};
use crate::error::ApiError;
use crate::AppState;

/// The fields a callback is made from.
const FIELDS: &[&str] = &[
    "callback_url",
    "callback_method",
    "callback_event",
    "callback_headers",
    "callback_payload",
    "callback_payload_is_json",
    "callback_record_response",
];

#[derive(sqlx::FromRow)]
struct CallbackRow {
    id: i64,
    url: String,
    method: String,
    event: String,
    payload: Option<String>,
    payload_is_json: bool,
    is_sent: bool,
    record_response: bool,
    response_code: Option<i64>,
    response_content: Option<String>,
}

/// A callback as SQUAD's `CallbackSerializer` shows it: `url` is where it
/// calls, and its headers (which may hold secrets) are left out.
fn render(rest: &Rest, c: &CallbackRow) -> Value {
    let mut m = Map::new();
    m.insert("url".into(), json!(c.url));
    m.insert("id".into(), json!(c.id));
    m.insert("method".into(), json!(c.method));
    m.insert("event".into(), json!(c.event));
    m.insert("payload".into(), json!(c.payload));
    m.insert("payload_is_json".into(), json!(c.payload_is_json));
    m.insert("is_sent".into(), json!(c.is_sent));
    m.insert("record_response".into(), json!(c.record_response));
    m.insert("response_code".into(), json!(c.response_code));
    m.insert("response_content".into(), json!(c.response_content));
    rest.trim(m)
}

/// `GET`: every callback of the build, oldest first, answered with 202 as
/// SQUAD does.
pub(crate) async fn list(rest: Rest, Path(id): Path<i64>) -> Result<Response, ApiError> {
    super::builds::check_visible(&rest, id).await?;
    let mut sql = Sql::new(
        "SELECT id, url, method, event, payload, payload_is_json, is_sent, record_response, response_code, \
         response_content FROM callbacks WHERE build_id = ",
    );
    sql.bind(id).push(" ORDER BY id");
    let rows: Vec<CallbackRow> = rest.state.store.fetch_all(&sql).await?;
    let results: Vec<Value> = rows.iter().map(|c| render(&rest, c)).collect();
    Ok(json(StatusCode::ACCEPTED, json!({ "results": results })))
}

#[derive(sqlx::FromRow)]
struct BuildProject {
    group_id: i64,
    project_settings: String,
}

/// SQUAD's answer to a callback it could not attach.
fn refused(message: impl Into<String>) -> Response {
    json(StatusCode::BAD_REQUEST, json!({ "message": message.into() }))
}

/// `POST`: attaches a callback (form or JSON `callback_*` fields) and
/// answers 202 `{"message": "OK"}`, or 400 `{"message": …}`. A callback
/// attached after the build's finished event is sent right away rather
/// than never.
pub(crate) async fn create(
    rest: Rest,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let build: BuildProject = rest
        .fetch_visible(
            "SELECT p.group_id, p.project_settings FROM builds b JOIN projects p ON p.id = b.project_id",
            "b.id",
            id,
            "b.project_id",
        )
        .await?;
    rest.require_submitter(build.group_id).await?;
    let input = Input::read(&state, &headers, body).await?;
    let mut fields = HashMap::new();
    for name in FIELDS {
        if let Some(value) = input.text(name)? {
            fields.insert(*name, value);
        }
    }
    let project_headers = project_callback_headers(&build.project_settings);
    let spec = match callback_from_form(|k| fields.get(k).map(String::as_str), &project_headers) {
        Ok(Some(spec)) => spec,
        Ok(None) => return Ok(refused("url is required.")),
        Err(message) => return Ok(refused(message)),
    };
    let mut tx = state.store.begin_write().await?;
    if !insert_callback(&mut tx, id, &spec).await? {
        return Ok(refused(format!("this build already has a callback to {} on {}", spec.url, spec.event)));
    }
    let mut finished = Sql::new(
        "SELECT b.event_generation FROM builds b JOIN build_events e ON e.build_id = b.id \
         AND e.generation = b.event_generation AND e.event = ",
    );
    finished.bind(spec.event.as_str()).push(" WHERE b.id = ").bind(id);
    let generation: Option<(i64,)> = tx.fetch_all(&finished).await?.into_iter().next();
    if let Some((generation,)) = generation {
        let task = NewTask::of(&SendBuildCallbacks { build_id: id, generation })
            .unique(format!("late_build_callbacks:{id}:{generation}"));
        state.queue.enqueue(tx.conn(), &task).await.map_err(|e| ApiError::internal(&e))?;
    }
    tx.commit().await?;
    Ok(json(StatusCode::ACCEPTED, json!({ "message": "OK" })))
}
