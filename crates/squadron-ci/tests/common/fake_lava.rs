//! A fake LAVA server: REST API v0.2 under `/api/v0.2/` and XML-RPC at
//! `/RPC2`, on 127.0.0.1, for the lava backend's tests (and, through
//! `examples/fake_lava.rs`, as a process of its own).
//!
//! Like a real LAVA it never de-duplicates submissions. Every request is
//! recorded (method, path with query, `Authorization` header, body). A
//! submitted job is `Running` for a configurable number of detail requests,
//! then finished with results that come either from fixture files or are
//! made up from a `squadron_fake` block of its definition:
//!
//! ```yaml
//! squadron_fake:
//!   tests: 5              # test cases in suite 1_fake, each with one log line
//!   failures: 1           # the first ones fail
//!   measurements: 2       # metric-N cases with a measurement
//!   status: Incomplete    # the final health (Complete by default)
//!   error_type: Infrastructure   # makes lava/job fail with this
//!   error_msg: Connection closed
//!   results: db-dump-jobs/job-2.results.yaml   # or: fixture results…
//!   log: example-lava-log.yaml                 # …and log, under tests/fixtures/lava
//!   tradefed: tradefed/squad-integration/tradefed-output-20220608105250.tar.xz
//!   tradefed_failures:    # with the made-up results: a tradefed run's
//!   - arm64-v8a.Module/Case.test   # failed cases and its results archive
//! ```
//!
//! The `tradefed` archive (under `testdata/`) is served at
//! `/artifacts/<path>` and referred to by a `test-attachment` result of
//! suite `2_cts-lkft`, as test-definitions' tradefed runs upload it.
//!
//! A multinode definition (`protocols: lava-multinode: roles: {r: {count: n}}`)
//! makes one job per node, with ids `<first>.<n>`.
// Each test binary (and the example) uses a part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Map, Value};
use squadron_ci::backend::lava::xmlrpc::{self, Fault, Value as Rpc};

/// The fixtures directory.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lava")
}

/// The repository's shared test data.
fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, …
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The body, as text.
    pub body: String,
    /// The XML-RPC method, for calls to `/RPC2`.
    pub rpc_method: Option<String>,
}

impl Recorded {
    /// Whether this request submitted a job (either API).
    pub fn is_submission(&self) -> bool {
        (self.method == "POST" && self.path == "/api/v0.2/jobs/")
            || self.rpc_method.as_deref() == Some("scheduler.submit_job")
    }
}

/// A canned answer for the requests whose description contains `when`
/// (`"<METHOD> <path> <rpc method>"`); an empty `when` matches every request.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What to match.
    pub when: String,
    /// What to do.
    pub answer: Answer,
}

/// A canned answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// This status, content type and body.
    Body(u16, &'static str, String),
    /// Never answer.
    Hang,
}

/// A job of the fake lab.
#[derive(Debug, Clone, Default)]
pub struct FakeJob {
    /// Its id (set by the server).
    pub id: u64,
    /// `<first>.<n>` for a multinode node.
    pub sub_id: Option<String>,
    /// The definition (`definition` and `original_definition`).
    pub definition: String,
    /// The whole multinode submission, or empty.
    pub multinode_definition: String,
    /// Who submitted it.
    pub submitter: String,
    /// The final status: `Complete`, `Incomplete` or `Canceled`.
    pub status: String,
    /// Detail requests left before it is over.
    pub polls_left: u32,
    /// `start_time` and `end_time` as sent (ISO 8601, or anything).
    pub start_time: Option<String>,
    /// See `start_time`.
    pub end_time: Option<String>,
    /// Test cases in LAVA's results-export shape (with `suite`).
    pub results: Vec<Value>,
    /// The job log.
    pub log: Vec<u8>,
    /// Whether it was canceled.
    pub canceled: bool,
}

impl FakeJob {
    fn display_id(&self) -> String {
        self.sub_id.clone().unwrap_or_else(|| self.id.to_string())
    }

    fn finished(&self) -> bool {
        self.canceled || self.polls_left == 0
    }

    fn health(&self) -> &str {
        if self.canceled {
            "Canceled"
        } else if self.finished() {
            &self.status
        } else {
            "Unknown"
        }
    }

    fn job_name(&self) -> Option<String> {
        serde_norway::from_str::<Value>(&self.definition).ok()?.get("job_name")?.as_str().map(str::to_string)
    }

    /// Suites in order of first appearance.
    fn suites(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for result in &self.results {
            let suite = result.get("suite").and_then(Value::as_str).unwrap_or("").to_string();
            if !names.contains(&suite) {
                names.push(suite);
            }
        }
        names
    }
}

/// The server's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Detail requests a new job answers `Running` to.
    pub polls_before_complete: u32,
    /// Items per page of REST lists that ask for no limit.
    pub page_size: usize,
    /// Canned answers.
    pub failures: Vec<Failure>,
    /// `EVENT_SOCKET`, as `system/master_config/` and
    /// `scheduler.get_publisher_event_socket` give it; `None`: neither
    /// exists (404, an unknown method).
    pub event_socket: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            polls_before_complete: 1,
            page_size: 3,
            failures: Vec::new(),
            event_socket: Some("tcp://*:5500".into()),
        }
    }
}

#[derive(Default)]
struct Shared {
    jobs: Mutex<Vec<FakeJob>>,
    requests: Mutex<Vec<Recorded>>,
    config: Mutex<Config>,
    addr: Mutex<Option<SocketAddr>>,
}

/// A running fake LAVA server.
pub struct FakeLava {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeLava {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeLava {
    /// Starts a server on 127.0.0.1 on a free port.
    pub async fn start() -> FakeLava {
        FakeLava::start_on("127.0.0.1:0").await
    }

    /// Starts a server on `addr`.
    pub async fn start_on(addr: &str) -> FakeLava {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("the fake LAVA binds");
        let addr = listener.local_addr().expect("a bound address");
        let shared = Arc::new(Shared::default());
        *shared.addr.lock().unwrap() = Some(addr);
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the fake LAVA serves");
        });
        FakeLava { addr, shared, task }
    }

    /// The REST API root.
    pub fn rest_url(&self) -> String {
        format!("http://{}/api/v0.2/", self.addr)
    }

    /// The XML-RPC endpoint.
    pub fn rpc_url(&self) -> String {
        format!("http://{}/RPC2", self.addr)
    }

    /// Changes the settings.
    pub fn configure(&self, change: impl FnOnce(&mut Config)) {
        change(&mut self.shared.config.lock().unwrap());
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many submissions it received.
    pub fn submissions(&self) -> usize {
        self.requests().iter().filter(|r| r.is_submission()).count()
    }

    /// Every job.
    pub fn jobs(&self) -> Vec<FakeJob> {
        self.shared.jobs.lock().unwrap().clone()
    }

    /// Adds a job as if someone had submitted it; returns its id.
    pub fn add_job(&self, mut job: FakeJob) -> u64 {
        let mut jobs = self.shared.jobs.lock().unwrap();
        job.id = next_id(&jobs);
        jobs.push(job);
        jobs.last().unwrap().id
    }
}

fn next_id(jobs: &[FakeJob]) -> u64 {
    jobs.iter().map(|j| j.id).max().unwrap_or(1000) + 1
}

/// `application/x-www-form-urlencoded` text as pairs.
pub fn form_pairs(text: &str) -> Vec<(String, String)> {
    fn decode(part: &str) -> String {
        let bytes = part.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn json_response(status: StatusCode, value: Value) -> Response {
    (status, [("content-type", "application/json")], value.to_string()).into_response()
}

fn rpc_response(answer: Result<Rpc, Fault>) -> Response {
    let body = match answer {
        Ok(value) => xmlrpc::encode_response(&value),
        Err(fault) => xmlrpc::encode_fault(&fault),
    };
    (StatusCode::OK, [("content-type", "text/xml")], body).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let body_text = String::from_utf8_lossy(&body).into_owned();
    let call = if path.starts_with("/RPC2") { xmlrpc::decode_call(&body).ok() } else { None };
    let recorded = Recorded {
        method: method.to_string(),
        path: if query.is_empty() { path.clone() } else { format!("{path}?{query}") },
        authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string),
        body: body_text.clone(),
        rpc_method: call.as_ref().map(|(m, _)| m.clone()),
    };
    let description =
        format!("{} {} {}", recorded.method, recorded.path, recorded.rpc_method.clone().unwrap_or_default());
    let authorized = recorded.authorization.is_some();
    shared.requests.lock().unwrap().push(recorded);
    let failure = shared.config.lock().unwrap().failures.iter().find(|f| description.contains(&f.when)).cloned();
    if let Some(failure) = failure {
        match failure.answer {
            Answer::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return StatusCode::GATEWAY_TIMEOUT.into_response();
            }
            Answer::Body(status, content_type, body) => {
                return (StatusCode::from_u16(status).unwrap(), [("content-type", content_type)], body).into_response();
            }
        }
    }
    let base = format!("http://{}", shared.addr.lock().unwrap().unwrap());
    if let Some(rest) = path.strip_prefix("/api/v0.2/") {
        if !authorized {
            return json_response(
                StatusCode::UNAUTHORIZED,
                json!({"detail": "Authentication credentials were not provided."}),
            );
        }
        return rest_api(&shared, &base, &method, rest, &query, &body_text);
    }
    if path.starts_with("/RPC2") && method == Method::POST {
        if !authorized {
            return (StatusCode::UNAUTHORIZED, "authentication required").into_response();
        }
        return match call {
            Some((name, params)) => rpc_response(rpc_api(&shared, &name, &params)),
            None => rpc_response(Err(Fault { code: 400, message: "not an XML-RPC call".into() })),
        };
    }
    if let Some(file) = path.strip_prefix("/artifacts/").filter(|f| !f.contains("..")) {
        return match std::fs::read(testdata().join(file)) {
            Ok(content) => (StatusCode::OK, [("content-type", "application/x-xz")], content).into_response(),
            Err(_) => StatusCode::NOT_FOUND.into_response(),
        };
    }
    if let Some(id) = path.strip_prefix("/scheduler/job/").and_then(|p| p.strip_suffix("/log_file/plain")) {
        let pairs = form_pairs(&query);
        if !pairs.iter().any(|(k, v)| k == "token" && !v.is_empty()) {
            return (StatusCode::FORBIDDEN, "no token").into_response();
        }
        let jobs = shared.jobs.lock().unwrap();
        return match find(&jobs, id) {
            Some(job) => (StatusCode::OK, [("content-type", "text/plain")], job.log.clone()).into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        };
    }
    (StatusCode::NOT_FOUND, [("content-type", "text/html")], "<html><body>Not found</body></html>").into_response()
}

fn find<'a>(jobs: &'a [FakeJob], id: &str) -> Option<&'a FakeJob> {
    jobs.iter().find(|j| j.id.to_string() == id || j.sub_id.as_deref() == Some(id))
}

fn find_mut<'a>(jobs: &'a mut [FakeJob], id: &str) -> Option<&'a mut FakeJob> {
    jobs.iter_mut().find(|j| j.id.to_string() == id || j.sub_id.as_deref() == Some(id))
}

/// A definition's jobs: one, or one per multinode node.
fn submit(shared: &Shared, definition: &str, submitter: &str) -> Result<Vec<String>, String> {
    let parsed: Value = serde_norway::from_str(definition).map_err(|e| format!("job submission failed: {e}."))?;
    if !parsed.is_object() {
        return Err("job submission failed: not a mapping.".into());
    }
    let nodes: u64 = match parsed.pointer("/protocols/lava-multinode/roles") {
        Some(Value::Object(roles)) => roles.values().map(|r| r.get("count").and_then(Value::as_u64).unwrap_or(1)).sum(),
        _ => 0,
    };
    let base = format!("http://{}", shared.addr.lock().unwrap().unwrap());
    let (results, log, status) = made_up_results(&parsed, &base)?;
    let polls = shared.config.lock().unwrap().polls_before_complete;
    let mut jobs = shared.jobs.lock().unwrap();
    let first = next_id(&jobs);
    let template = FakeJob {
        definition: definition.to_string(),
        submitter: submitter.to_string(),
        status,
        polls_left: polls,
        start_time: Some("2024-05-01T10:00:00.000000Z".into()),
        end_time: Some("2024-05-01T10:05:00.000000Z".into()),
        results,
        log,
        ..FakeJob::default()
    };
    if nodes == 0 {
        jobs.push(FakeJob { id: first, ..template });
        return Ok(vec![first.to_string()]);
    }
    let mut ids = Vec::new();
    for node in 0..nodes {
        let sub_id = format!("{first}.{node}");
        jobs.push(FakeJob {
            id: first + node,
            sub_id: Some(sub_id.clone()),
            multinode_definition: definition.to_string(),
            ..template.clone()
        });
        ids.push(sub_id);
    }
    Ok(ids)
}

fn log_line(level: &str, msg: &str) -> String {
    format!("- {{\"dt\": \"2024-05-01T10:00:00.000000\", \"lvl\": \"{level}\", \"msg\": \"{msg}\"}}\n")
}

/// The results, log and final status a definition asks for.
fn made_up_results(definition: &Value, base: &str) -> Result<(Vec<Value>, Vec<u8>, String), String> {
    let empty = Value::Object(Map::new());
    let fake = definition.get("squadron_fake").unwrap_or(&empty);
    let number = |name: &str, default: u64| fake.get(name).and_then(Value::as_u64).unwrap_or(default);
    let text = |name: &str| fake.get(name).and_then(Value::as_str).map(str::to_string);
    let status = text("status").unwrap_or_else(|| "Complete".into());
    if let Some(file) = text("results") {
        let read = std::fs::read_to_string(fixtures().join(&file)).map_err(|e| format!("{file}: {e}"))?;
        let results: Vec<Value> = serde_norway::from_str::<Option<Vec<Value>>>(&read)
            .map_err(|e| format!("{file}: {e}"))?
            .unwrap_or_default();
        let log = match text("log") {
            Some(log) => std::fs::read(fixtures().join(&log)).map_err(|e| format!("{log}: {e}"))?,
            None => Vec::new(),
        };
        return Ok((results, log, status));
    }
    let mut log = log_line("info", "lava-dispatcher, installed at version: 2024.05");
    let mut line = 1;
    let mut results = Vec::new();
    for n in 0..number("tests", 3) {
        log.push_str(&log_line("target", &format!("test-{n} output")));
        line += 1;
        let result = if n < number("failures", 0) { "fail" } else { "pass" };
        results.push(json!({
            "id": (results.len() + 1).to_string(), "job": "0", "suite": "1_fake", "name": format!("test-{n}"),
            "result": result, "measurement": "None", "unit": "", "level": "", "url": "",
            "logged": "2024-05-01 10:01:00+00:00",
            "log_start_line": line.to_string(), "log_end_line": line.to_string(),
            "metadata": {"case": format!("test-{n}"), "definition": "1_fake", "result": result},
        }));
    }
    for n in 0..number("measurements", 0) {
        results.push(json!({
            "suite": "1_fake", "name": format!("metric-{n}"), "result": "pass",
            "measurement": format!("{}.5000000000", n + 1), "unit": "seconds",
            "log_start_line": "", "log_end_line": "",
            "metadata": {"case": format!("metric-{n}"), "definition": "1_fake", "result": "pass"},
        }));
    }
    let cases = fake.get("tradefed_failures").and_then(Value::as_array).cloned().unwrap_or_default();
    for case in cases.iter().filter_map(Value::as_str) {
        results.push(json!({
            "suite": "2_cts-lkft", "name": case, "result": "fail", "measurement": "None", "unit": "",
            "metadata": {"case": case, "definition": "2_cts-lkft", "result": "fail"},
        }));
    }
    if let Some(archive) = text("tradefed") {
        let reference = match archive.starts_with("http") {
            true => archive.to_string(),
            false => format!("{base}/artifacts/{archive}"),
        };
        results.push(json!({
            "suite": "2_cts-lkft", "name": "test-attachment", "result": "pass", "measurement": "None", "unit": "",
            "metadata": {"case": "test-attachment", "definition": "2_cts-lkft", "result": "pass",
                         "reference": reference},
        }));
    }
    log.push_str(&log_line("feedback", "the end"));
    let job = match text("error_type") {
        Some(error_type) => json!({
            "suite": "lava", "name": "job", "result": "fail", "measurement": "None", "unit": "",
            "log_start_line": "", "log_end_line": "",
            "metadata": {"case": "job", "definition": "lava", "error_type": error_type,
                         "error_msg": text("error_msg").unwrap_or_default(), "result": "fail"},
        }),
        None => json!({
            "suite": "lava", "name": "job", "result": "pass", "measurement": "None", "unit": "",
            "log_start_line": "", "log_end_line": "",
            "metadata": {"case": "job", "definition": "lava", "result": "pass"},
        }),
    };
    results.push(job);
    Ok((results, log.into_bytes(), status))
}

/// Counts a details request: a job is over after its polls.
fn poll(shared: &Shared, id: &str) -> Option<FakeJob> {
    let mut jobs = shared.jobs.lock().unwrap();
    let job = find_mut(&mut jobs, id)?;
    let seen = job.clone();
    job.polls_left = job.polls_left.saturating_sub(1);
    Some(seen)
}

/// One page of `items` and the URL of the next.
fn page(base: &str, path: &str, query: &str, items: Vec<Value>, default_limit: usize) -> Value {
    let pairs = form_pairs(query);
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.parse::<usize>().ok());
    let limit = get("limit").unwrap_or(default_limit).max(1);
    let offset = get("offset").unwrap_or(0);
    let count = items.len();
    let next = (offset + limit < count).then(|| {
        let kept: Vec<String> =
            pairs.iter().filter(|(k, _)| k != "limit" && k != "offset").map(|(k, v)| format!("{k}={v}")).collect();
        let mut q = kept.join("&");
        if !q.is_empty() {
            q.push('&');
        }
        format!("{base}{path}?{q}limit={limit}&offset={}", offset + limit)
    });
    json!({
        "count": count,
        "next": next,
        "previous": null,
        "results": items.into_iter().skip(offset).take(limit).collect::<Vec<_>>(),
    })
}

fn rest_job(job: &FakeJob) -> Value {
    json!({
        "id": job.id,
        "submitter": job.submitter,
        "description": job.job_name(),
        "state": if job.finished() { "Finished" } else { "Running" },
        "health": job.health(),
        "definition": job.definition,
        "original_definition": job.definition,
        "multinode_definition": job.multinode_definition,
        "start_time": job.start_time,
        "end_time": job.end_time,
    })
}

/// A test case as the REST API shows it.
fn rest_test(result: &Value, suite_id: usize) -> Value {
    let mut test = result.as_object().cloned().unwrap_or_default();
    test.insert("suite".into(), json!(suite_id));
    for (export, rest) in [("log_start_line", "start_log_line"), ("log_end_line", "end_log_line")] {
        if let Some(value) = test.remove(export) {
            let number = value.as_str().and_then(|s| s.parse::<u64>().ok()).map_or(Value::Null, Value::from);
            test.insert(rest.into(), number);
        }
    }
    if test.get("measurement").and_then(Value::as_str) == Some("None") {
        test.insert("measurement".into(), Value::Null);
    }
    if let Some(metadata) = test.get("metadata").filter(|m| m.is_object()) {
        let text = serde_norway::to_string(metadata).unwrap();
        test.insert("metadata".into(), Value::from(text));
    }
    Value::Object(test)
}

fn rest_api(shared: &Shared, base: &str, method: &Method, rest: &str, query: &str, body: &str) -> Response {
    let page_size = shared.config.lock().unwrap().page_size;
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let path = format!("/api/v0.2/{rest}");
    match (method.as_str(), parts.as_slice()) {
        ("POST", ["jobs"]) => {
            let definition = form_pairs(body).into_iter().find(|(k, _)| k == "definition").map(|(_, v)| v);
            let Some(definition) = definition else {
                return json_response(StatusCode::BAD_REQUEST, json!({"definition": ["This field is required."]}));
            };
            match submit(shared, &definition, "squadron") {
                Ok(ids) => json_response(
                    StatusCode::CREATED,
                    json!({"message": "job(s) successfully submitted", "job_ids": ids.iter().map(|id| id.parse::<u64>().map_or(Value::from(id.as_str()), Value::from)).collect::<Vec<_>>()}),
                ),
                Err(message) => json_response(StatusCode::BAD_REQUEST, json!({"message": message})),
            }
        }
        ("GET", ["jobs"]) => {
            let filters = form_pairs(query);
            let jobs = shared.jobs.lock().unwrap();
            let mut matching: Vec<Value> = jobs
                .iter()
                .filter(|job| {
                    filters.iter().all(|(k, v)| match k.as_str() {
                        "original_definition__contains" | "definition__contains" => job.definition.contains(v.as_str()),
                        "multinode_definition__contains" => job.multinode_definition.contains(v.as_str()),
                        _ => true,
                    })
                })
                .map(rest_job)
                .collect();
            matching.reverse(); // LAVA orders by -id
            json_response(StatusCode::OK, page(base, &path, query, matching, page_size))
        }
        ("GET", ["jobs", id]) => match poll(shared, id) {
            Some(job) => json_response(StatusCode::OK, rest_job(&job)),
            None => json_response(StatusCode::NOT_FOUND, json!({"detail": "Not found."})),
        },
        ("GET", ["jobs", id, "suites"]) => {
            let jobs = shared.jobs.lock().unwrap();
            let Some(job) = find(&jobs, id) else {
                return json_response(StatusCode::NOT_FOUND, json!({"detail": "Not found."}));
            };
            let suites = job
                .suites()
                .into_iter()
                .enumerate()
                .map(|(n, name)| json!({"id": 100 + n, "name": name, "job": job.id, "resource_uri": ""}))
                .collect();
            json_response(StatusCode::OK, page(base, &path, query, suites, page_size))
        }
        ("GET", ["jobs", id, "suites", suite, "tests"]) => {
            let jobs = shared.jobs.lock().unwrap();
            let Some(job) = find(&jobs, id) else {
                return json_response(StatusCode::NOT_FOUND, json!({"detail": "Not found."}));
            };
            let suites = job.suites();
            let Some(n) = suite.parse::<usize>().ok().and_then(|s| s.checked_sub(100)).filter(|n| *n < suites.len())
            else {
                return json_response(StatusCode::NOT_FOUND, json!({"detail": "Not found."}));
            };
            let tests = job
                .results
                .iter()
                .filter(|r| r.get("suite").and_then(Value::as_str) == Some(suites[n].as_str()))
                .map(|r| rest_test(r, 100 + n))
                .collect();
            json_response(StatusCode::OK, page(base, &path, query, tests, page_size))
        }
        ("GET", ["jobs", id, "logs"]) => {
            let jobs = shared.jobs.lock().unwrap();
            match find(&jobs, id) {
                Some(job) => (StatusCode::OK, [("content-type", "application/yaml")], job.log.clone()).into_response(),
                None => json_response(StatusCode::NOT_FOUND, json!({"detail": "Not found."})),
            }
        }
        ("POST", ["jobs", id, "cancel"]) => {
            let mut jobs = shared.jobs.lock().unwrap();
            match find_mut(&mut jobs, id) {
                Some(job) => {
                    job.canceled = true;
                    json_response(StatusCode::OK, json!({"message": "job canceled."}))
                }
                None => json_response(StatusCode::NOT_FOUND, json!({"detail": "Not found."})),
            }
        }
        ("GET", ["jobs", id, "definition"]) => {
            let jobs = shared.jobs.lock().unwrap();
            match find(&jobs, id) {
                Some(job) if !job.multinode_definition.is_empty() => {
                    json_response(StatusCode::OK, json!(job.multinode_definition))
                }
                Some(job) => json_response(StatusCode::OK, json!(job.definition)),
                None => json_response(StatusCode::NOT_FOUND, json!({"detail": "Not found."})),
            }
        }
        ("GET", ["system", "master_config"]) => match shared.config.lock().unwrap().event_socket.clone() {
            Some(socket) => json_response(
                StatusCode::OK,
                json!({"EVENT_TOPIC": "org.lavasoftware", "EVENT_SOCKET": socket, "EVENT_NOTIFICATION": true, "LOG_SIZE_LIMIT": 10}),
            ),
            None => json_response(StatusCode::NOT_FOUND, json!({"detail": "Not found."})),
        },
        _ => json_response(StatusCode::NOT_FOUND, json!({"detail": "Not found."})),
    }
}

fn rpc_text(params: &[Rpc], n: usize) -> Result<String, Fault> {
    match params.get(n) {
        Some(Rpc::String(s)) => Ok(s.clone()),
        Some(Rpc::Int(i)) => Ok(i.to_string()),
        _ => Err(Fault { code: 400, message: format!("parameter {n} missing") }),
    }
}

fn rpc_int(params: &[Rpc], n: usize, default: i64) -> i64 {
    match params.get(n) {
        Some(Rpc::Int(i)) => *i,
        _ => default,
    }
}

fn not_found(id: &str) -> Fault {
    Fault { code: 404, message: format!("Job '{id}' was not found.") }
}

/// A date as XML-RPC's dateTime when it is one, else as sent.
fn rpc_date(text: &Option<String>) -> Rpc {
    match text {
        None => Rpc::Nil,
        Some(t) => match chrono::DateTime::parse_from_rfc3339(t) {
            Ok(d) => Rpc::DateTime(d.format("%Y%m%dT%H:%M:%S").to_string()),
            Err(_) => Rpc::String(t.clone()),
        },
    }
}

fn yaml_text(value: &Value) -> String {
    serde_norway::to_string(value).unwrap()
}

fn rpc_api(shared: &Shared, method: &str, params: &[Rpc]) -> Result<Rpc, Fault> {
    match method {
        "scheduler.submit_job" => {
            let ids =
                submit(shared, &rpc_text(params, 0)?, "squadron").map_err(|message| Fault { code: 400, message })?;
            Ok(match ids.as_slice() {
                [one] => Rpc::Int(one.parse().unwrap()),
                many => Rpc::Array(many.iter().map(|id| Rpc::String(id.clone())).collect()),
            })
        }
        "scheduler.job_details" => {
            let id = rpc_text(params, 0)?;
            let job = poll(shared, &id).ok_or_else(|| not_found(&id))?;
            let status = if job.finished() { job.health().to_string() } else { "Running".to_string() };
            Ok(Rpc::Struct(vec![
                ("id".into(), Rpc::Int(job.id as i64)),
                ("sub_id".into(), Rpc::String(job.sub_id.clone().unwrap_or_default())),
                ("status".into(), Rpc::String(status)),
                ("state".into(), Rpc::String(if job.finished() { "Finished" } else { "Running" }.into())),
                ("health".into(), Rpc::String(job.health().into())),
                ("description".into(), job.job_name().map_or(Rpc::Nil, Rpc::String)),
                ("definition".into(), Rpc::String(job.definition.clone())),
                ("multinode_definition".into(), Rpc::String(job.multinode_definition.clone())),
                ("start_time".into(), rpc_date(&job.start_time)),
                ("end_time".into(), rpc_date(&job.end_time)),
            ]))
        }
        "scheduler.cancel_job" => {
            let id = rpc_text(params, 0)?;
            let mut jobs = shared.jobs.lock().unwrap();
            let job = find_mut(&mut jobs, &id).ok_or_else(|| not_found(&id))?;
            job.canceled = true;
            Ok(Rpc::Bool(true))
        }
        "scheduler.jobs.definition" => {
            let id = rpc_text(params, 0)?;
            let jobs = shared.jobs.lock().unwrap();
            let job = find(&jobs, &id).ok_or_else(|| not_found(&id))?;
            let text = if job.multinode_definition.is_empty() { &job.definition } else { &job.multinode_definition };
            Ok(Rpc::String(text.clone()))
        }
        "scheduler.jobs.list" => {
            let start = rpc_int(params, 2, 0).max(0) as usize;
            let limit = rpc_int(params, 3, 25).clamp(0, 100) as usize;
            let jobs = shared.jobs.lock().unwrap();
            Ok(Rpc::Array(
                jobs.iter()
                    .rev()
                    .skip(start)
                    .take(limit)
                    .map(|job| {
                        Rpc::Struct(vec![
                            ("id".into(), job.sub_id.clone().map_or(Rpc::Int(job.id as i64), Rpc::String)),
                            ("description".into(), job.job_name().map_or(Rpc::Nil, Rpc::String)),
                            ("device_type".into(), Rpc::String("qemu".into())),
                            ("health".into(), Rpc::String(job.health().into())),
                            ("state".into(), Rpc::String(if job.finished() { "Finished" } else { "Running" }.into())),
                            ("submitter".into(), Rpc::String(job.submitter.clone())),
                        ])
                    })
                    .collect(),
            ))
        }
        "results.get_testjob_suites_list_yaml" => {
            let id = rpc_text(params, 0)?;
            let jobs = shared.jobs.lock().unwrap();
            let job = find(&jobs, &id).ok_or_else(|| not_found(&id))?;
            let suites: Vec<Value> =
                job.suites().into_iter().map(|name| json!({"name": name, "job": job.display_id()})).collect();
            Ok(Rpc::String(yaml_text(&Value::Array(suites))))
        }
        "results.get_testsuite_results_yaml" => {
            let id = rpc_text(params, 0)?;
            let suite = rpc_text(params, 1)?;
            let limit = rpc_int(params, 2, 500).max(0) as usize;
            let offset = rpc_int(params, 3, 0).max(0) as usize;
            let jobs = shared.jobs.lock().unwrap();
            let job = find(&jobs, &id).ok_or_else(|| not_found(&id))?;
            let page: Vec<Value> = job
                .results
                .iter()
                .filter(|r| r.get("suite").and_then(Value::as_str) == Some(suite.as_str()))
                .skip(offset)
                .take(limit)
                .cloned()
                .collect();
            Ok(Rpc::String(yaml_text(&Value::Array(page))))
        }
        "scheduler.get_publisher_event_socket" if shared.config.lock().unwrap().event_socket.is_some() => {
            Ok(Rpc::String(shared.config.lock().unwrap().event_socket.clone().unwrap_or_default()))
        }
        other => Err(Fault { code: -32601, message: format!("method \"{other}\" is not supported") }),
    }
}
