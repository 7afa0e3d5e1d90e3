//! Build callbacks: sent once a build is finished, at least once per event
//! generation, every attempt of one event with the same idempotency key.
//!
//! Each callback is one step: record the attempt (committed before the
//! request goes out), send, then mark the callback sent in a fenced
//! transaction. A worker killed between sending and marking leaves the
//! callback unsent, and the next attempt sends it again with the same key,
//! which is what lets the receiver drop the duplicate.

use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use squadron_queue::{Job, Outcome, Task, TaskError};
use squadron_store::sql::Sql;
use squadron_store::Store;

/// How long a callback's request may take.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times a callback is tried before it is given up (marked sent
/// with the last error, as SQUAD records failures).
pub(crate) const CALLBACK_ATTEMPTS: i32 = 8;

/// The most of a response body recorded.
const RECORDED_BODY: usize = 64 * 1024;

/// The key every attempt of one callback for one event carries, as the
/// `Idempotency-Key` header.
pub fn idempotency_key(build_id: i64, generation: i64, callback_id: i64) -> String {
    format!("squadron-build-{build_id}-on_build_finished-{generation}-callback-{callback_id}")
}

/// What a callback task needs.
pub struct Delivering {
    /// The store.
    pub store: Store,
    /// The HTTP client (with its timeouts).
    pub http: reqwest::Client,
}

impl Delivering {
    /// With a client whose requests time out after 30 s.
    pub fn new(store: Store) -> Delivering {
        let http = reqwest::Client::builder().timeout(CALLBACK_TIMEOUT).build().expect("an HTTP client");
        Delivering { store, http }
    }
}

/// Sends the unsent `on_build_finished` callbacks of a build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendBuildCallbacks {
    /// The build.
    pub build_id: i64,
    /// The build's event generation this sends for.
    pub generation: i64,
}

#[derive(sqlx::FromRow)]
struct CallbackRow {
    id: i64,
    url: String,
    method: String,
    headers: Option<String>,
    payload: Option<String>,
    payload_is_json: bool,
    record_response: bool,
}

/// What came back.
struct Response {
    code: Option<i64>,
    body: String,
    error: Option<String>,
}

impl Task for SendBuildCallbacks {
    const KIND: &'static str = "send_build_callbacks";
    const QUEUE: &'static str = "core_notification";
    const MAX_ATTEMPTS: i32 = CALLBACK_ATTEMPTS;
    type Context = Delivering;

    async fn run(&self, cx: &Delivering, job: &mut Job) -> Result<Outcome, TaskError> {
        let mut sql = Sql::new(
            "SELECT id, url, method, headers, payload, payload_is_json, record_response FROM callbacks \
             WHERE NOT is_sent AND event = 'on_build_finished' AND build_id = ",
        );
        sql.bind(self.build_id).push(" ORDER BY id");
        let callbacks: Vec<CallbackRow> = cx.store.fetch_all(&sql).await.map_err(TaskError::failed)?;
        let mut failed = None;
        for callback in callbacks {
            job.check_stop()?;
            let key = idempotency_key(self.build_id, self.generation, callback.id);
            let attempt = record_attempt(&cx.store, callback.id, &key).await?;
            let response = send(&cx.http, &callback, &key).await;
            let retry = response.error.is_some() || response.code.is_some_and(|c| c >= 500);
            let give_up = job.attempt() >= CALLBACK_ATTEMPTS;
            let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
            let mut outcome = Sql::new("UPDATE callback_deliveries SET response_code = ");
            outcome.bind_optional(response.code).push(", error = ").bind_optional(response.error.clone());
            outcome.push(" WHERE id = ").bind(attempt);
            tx.execute(&outcome).await.map_err(TaskError::failed)?;
            if !retry || give_up {
                let recorded = response.error.clone().unwrap_or(response.body);
                let kept = (callback.record_response || response.error.is_some()).then_some(recorded);
                let mut sent = Sql::new("UPDATE callbacks SET is_sent = TRUE, response_code = ");
                sent.bind_optional(response.code).push(", response_content = ").bind_optional(kept);
                sent.push(" WHERE id = ").bind(callback.id);
                tx.execute(&sent).await.map_err(TaskError::failed)?;
            } else {
                failed = Some(response.error.unwrap_or_else(|| format!("HTTP {}", response.code.unwrap_or(0))));
            }
            job.commit_step(tx, &callback.id).await?;
        }
        match failed {
            Some(error) => Err(TaskError::failed(format!("a callback failed and will be tried again: {error}"))),
            None => Ok(Outcome::Done),
        }
    }
}

/// Records an attempt before it is made; returns its id.
async fn record_attempt(store: &Store, callback_id: i64, key: &str) -> Result<i64, TaskError> {
    let mut tx = store.begin_write().await.map_err(TaskError::failed)?;
    let mut sql = Sql::new("INSERT INTO callback_deliveries (callback_id, idempotency_key, attempted_at) VALUES (");
    sql.bind(callback_id).push(", ").bind(key).push(", ").bind(Utc::now()).push(") RETURNING id");
    let id = tx.fetch_integer(&sql).await.map_err(TaskError::failed)?;
    tx.commit().await.map_err(TaskError::failed)?;
    Ok(id)
}

/// Sends one callback as SQUAD does: its method, its headers, its payload
/// as JSON or as form fields; plus the idempotency key.
async fn send(http: &reqwest::Client, callback: &CallbackRow, key: &str) -> Response {
    let method =
        reqwest::Method::from_bytes(callback.method.to_uppercase().as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut request = http.request(method, &callback.url).header("Idempotency-Key", key);
    let headers: serde_json::Map<String, serde_json::Value> =
        callback.headers.as_deref().and_then(|h| serde_json::from_str(h).ok()).unwrap_or_default();
    for (name, value) in &headers {
        let value = value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
        request = request.header(name.as_str(), value);
    }
    if let Some(payload) = &callback.payload {
        request = if callback.payload_is_json {
            request.header("Content-Type", "application/json").body(payload.clone())
        } else {
            let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_str(payload).unwrap_or_default();
            let form: Vec<(String, String)> = fields
                .into_iter()
                .map(|(k, v)| (k, v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                .collect();
            request.form(&form)
        };
    }
    match request.send().await {
        Ok(response) => {
            let code = i64::from(response.status().as_u16());
            let mut body = response.text().await.unwrap_or_default();
            if body.len() > RECORDED_BODY {
                let end = (0..=RECORDED_BODY).rev().find(|&i| body.is_char_boundary(i)).unwrap_or(0);
                body.truncate(end);
            }
            Response { code: Some(code), body, error: None }
        }
        Err(e) => Response { code: None, body: String::new(), error: Some(e.to_string()) },
    }
}
