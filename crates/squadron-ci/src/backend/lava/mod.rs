//! `lava`: LAVA v2 labs, over the REST API v0.2 or XML-RPC (SQUAD's
//! `squad/ci/backend/lava.py`).
//!
//! A backend URL whose path contains `RPC2` is an XML-RPC endpoint
//! (`https://lava.example.com/RPC2`, HTTP basic authentication with the
//! backend's user name and token); any other URL is the REST API's root
//! (`https://lava.example.com/api/v0.2/`, `Authorization: Token <token>`).
//! See `docs/ci.md` for the settings and what differs from SQUAD.

mod definition;
mod events;
pub mod log;
mod rest;
pub mod results;
mod rpc;
pub mod xmlrpc;
mod zmtp;

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde_json::{Map, Value};

use super::{Backend, BackendError, BackendRecord, Fetched, LabEvent};
use crate::jobs::TestJob;
use results::{JobDetails, ParseSettings};

/// The metadata key of a job definition that carries squadron's
/// submission key (see [`Backend::lookup`]).
pub const SUBMISSION_KEY: &str = "squadron.submission";

/// How long a call to LAVA may take unless the backend's `TIMEOUT` setting
/// says otherwise (SQUAD's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The calls squadron makes to a LAVA lab, over one API.
#[async_trait]
trait Api: Send + Sync {
    /// Submits a definition; the new job ids (several for multinode).
    async fn submit(&self, definition: &str) -> Result<Vec<String>, BackendError>;
    /// The ids of the jobs whose definition contains `key`.
    async fn lookup(&self, key: &str, job_name: Option<&str>) -> Result<Vec<String>, BackendError>;
    /// The job's state, status, dates and definition.
    async fn details(&self, job_id: &str) -> Result<JobDetails, BackendError>;
    /// Every test case of the job, in LAVA's results-export shape.
    async fn results(&self, job_id: &str) -> Result<Vec<Value>, BackendError>;
    /// The whole job log; empty when LAVA does not give it.
    async fn log(&self, job_id: &str) -> Vec<u8>;
    /// Asks LAVA to cancel the job; whether it accepted.
    async fn cancel(&self, job_id: &str) -> Result<bool, BackendError>;
    /// The job's definition (the multinode definition of a multinode job).
    async fn definition(&self, job_id: &str) -> Result<Option<String>, BackendError>;
    /// The address of the lab's ZeroMQ event socket (`EVENT_SOCKET`, such
    /// as `tcp://*:5500`), if it gives one.
    async fn event_socket(&self) -> Result<Option<String>, BackendError>;
}

/// An HTTP client with the backend's timeout, mapping failures to
/// [`BackendError`]s.
struct Http {
    client: reqwest::Client,
    timeout: Duration,
}

impl Http {
    /// Sends a request; transport failures and error statuses become
    /// errors naming `what` was asked.
    async fn send(&self, request: RequestBuilder, what: &str) -> Result<Response, BackendError> {
        let response = request.timeout(self.timeout).send().await.map_err(|e| self.transport_error(e, what))?;
        self.check(response, what).await
    }

    /// The response if its status is a success, else the error it means.
    async fn check(&self, response: Response, what: &str) -> Result<Response, BackendError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(status_error(status, what, &body))
    }

    /// The whole body of a response.
    async fn body(&self, response: Response, what: &str) -> Result<Vec<u8>, BackendError> {
        Ok(response.bytes().await.map_err(|e| self.transport_error(e, what))?.to_vec())
    }

    fn transport_error(&self, error: reqwest::Error, what: &str) -> BackendError {
        // Never the URL: it may carry the token (the XML-RPC log URL does).
        let error = error.without_url();
        if error.is_timeout() {
            BackendError::Temporary(format!("LAVA did not answer {what} within {:?}", self.timeout))
        } else if error.is_builder() {
            BackendError::Permanent(format!("cannot ask LAVA {what}: {error}"))
        } else {
            let mut message = format!("cannot reach LAVA for {what}: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            BackendError::Temporary(message)
        }
    }
}

/// An error status: 5xx, 408 and 429 are worth retrying, any other is not.
fn status_error(status: StatusCode, what: &str, body: &[u8]) -> BackendError {
    let message = format!("LAVA answered {what} with {status}: {}", snippet(body));
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS {
        BackendError::Temporary(message)
    } else {
        BackendError::Permanent(message)
    }
}

/// The start of a body, for an error message.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// A lab answer that is not what was expected: permanent, naming what.
fn malformed(what: &str, problem: impl std::fmt::Display, body: &[u8]) -> BackendError {
    BackendError::Permanent(format!("LAVA's answer to {what} is malformed ({problem}): {}", snippet(body)))
}

/// A LAVA lab.
pub struct LavaLab {
    api: Box<dyn Api>,
    /// `<scheme>://<host>`, for job pages.
    web_root: String,
    /// `backend_settings`, parsed.
    settings: Map<String, Value>,
    /// The lab's job events.
    events: events::Events,
}

impl LavaLab {
    /// Opens the lab of `record` with `client`.
    pub fn new(record: &BackendRecord, client: reqwest::Client) -> Result<LavaLab, BackendError> {
        let bad = |e: String| BackendError::Permanent(format!("backend {:?}: {e}", record.name));
        let url = Url::parse(&record.url).map_err(|e| bad(format!("invalid URL {:?}: {e}", record.url)))?;
        if !url.has_host() {
            return Err(bad(format!("the URL {:?} has no host", record.url)));
        }
        let settings = squadron_core::settings::parse_settings(record.backend_settings.as_deref().unwrap_or(""))
            .map_err(|e| bad(format!("backend settings: {e}")))?;
        let timeout = match settings.get("TIMEOUT") {
            None | Some(Value::Null) => DEFAULT_TIMEOUT,
            Some(value) => value
                .as_f64()
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| bad(format!("TIMEOUT must be a positive number of seconds, not {value}")))?,
        };
        let transport = events::Transport::from_setting(settings.get("EVENTS")).map_err(bad)?;
        let events = events::Events::new(&url, &record.username, &record.token, timeout, transport);
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let web_root = format!("{}://{}{port}", url.scheme(), url.host_str().unwrap_or_default());
        let http = Http { client, timeout };
        let api: Box<dyn Api> = if url.path().contains("RPC2") {
            Box::new(rpc::Rpc::new(http, url, &record.username, &record.token))
        } else {
            Box::new(rest::Rest::new(http, url, &record.token))
        };
        Ok(LavaLab { api, web_root, settings, events })
    }

    /// The backend's settings overlaid by the project's (SQUAD's
    /// `__resolve_settings__`, without its leak of one project's settings
    /// into the next job's).
    fn settings_for(&self, job: &TestJob) -> ParseSettings {
        let mut settings = self.settings.clone();
        settings.extend(job.settings());
        ParseSettings::from_map(&settings)
    }

    fn page(&self, job_id: &str) -> String {
        format!("{}/scheduler/job/{job_id}", self.web_root)
    }
}

fn job_id(job: &TestJob) -> Result<&str, BackendError> {
    job.job_id.as_deref().ok_or_else(|| BackendError::Permanent("the job has no LAVA job id".into()))
}

/// The `job_name` of a definition, as LAVA keeps it.
fn job_name(definition: &str) -> Option<String> {
    let parsed = results::yaml_value(definition).ok()?;
    parsed.get("job_name")?.as_str().map(|s| s.chars().take(255).collect())
}

#[async_trait]
impl Backend for LavaLab {
    fn kind(&self) -> &'static str {
        "lava"
    }

    fn check_definition(&self, definition: &str) -> Result<(), String> {
        serde_norway::from_str::<serde_norway::Value>(definition).map(|_| ()).map_err(|e| e.to_string())
    }

    async fn submit(&self, job: &TestJob, submission_key: &str) -> Result<Vec<String>, BackendError> {
        let text = job.definition.as_deref().unwrap_or("");
        let definition = definition::with_submission_key(text, submission_key)?;
        let ids = self.api.submit(&definition).await?;
        if ids.is_empty() {
            return Err(BackendError::Temporary("LAVA returned an empty list of job ids".into()));
        }
        Ok(ids)
    }

    async fn lookup(&self, job: &TestJob, submission_key: &str) -> Result<Option<Vec<String>>, BackendError> {
        let name = job.definition.as_deref().and_then(job_name);
        let ids = self.api.lookup(submission_key, name.as_deref()).await?;
        Ok((!ids.is_empty()).then_some(ids))
    }

    async fn fetch(&self, job: &TestJob) -> Result<Fetched, BackendError> {
        let id = job_id(job)?;
        let details = self.api.details(id).await?;
        if !details.finished() {
            return Ok(Fetched::Running { status: Some(details.state) });
        }
        let results = self.api.results(id).await?;
        let log = self.api.log(id).await;
        let mut parsed = results::parse(&details, &results, &log, &self.settings_for(job), &self.page(id))?;
        let mut raw = Map::new();
        raw.insert("details".into(), details.raw);
        raw.insert("results".into(), Value::Array(results));
        parsed.raw = serde_json::to_vec(&Value::Object(raw))
            .map_err(|e| BackendError::Permanent(format!("cannot keep LAVA's results: {e}")))?;
        Ok(Fetched::Finished(Box::new(parsed)))
    }

    async fn cancel(&self, job: &TestJob) -> Result<bool, BackendError> {
        match job.job_id.as_deref() {
            Some(id) if job.submitted => self.api.cancel(id).await,
            _ => Ok(false),
        }
    }

    fn job_url(&self, job: &TestJob) -> Option<String> {
        job.job_id.as_deref().map(|id| self.page(id))
    }

    /// Follows the lab's websocket, or its ZeroMQ event socket (see
    /// `docs/ci.md`).
    async fn listen(&self, events: tokio::sync::mpsc::Sender<LabEvent>) -> Result<(), BackendError> {
        self.events.listen(self.api.as_ref(), events).await
    }

    async fn job_definition(&self, job_id: &str) -> Result<Option<String>, BackendError> {
        self.api.definition(job_id).await
    }
}
