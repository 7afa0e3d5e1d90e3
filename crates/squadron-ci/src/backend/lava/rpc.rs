//! LAVA's XML-RPC API (`https://lava.example.com/RPC2`, HTTP basic
//! authentication with the user name and token).

use async_trait::async_trait;
use reqwest::Url;
use serde_json::Value as Json;

use super::results::{parse_date, yaml_value, JobDetails};
use super::xmlrpc::{self, Fault, Value};
use super::{malformed, Api, Http};
use crate::backend::BackendError;

/// Results per call of `results.get_testsuite_results_yaml` (SQUAD's).
const RESULTS_PAGE: usize = 500;
/// Jobs per call of `scheduler.jobs.list` (LAVA's maximum).
const JOBS_PAGE: i64 = 100;
/// How far back a lookup searches: the newest jobs of the lab.
const LOOKUP_PAGES: i64 = 10;

/// An XML-RPC endpoint.
pub(super) struct Rpc {
    http: Http,
    endpoint: Url,
    username: String,
    token: String,
}

impl Rpc {
    pub(super) fn new(http: Http, endpoint: Url, username: &str, token: &str) -> Rpc {
        Rpc { http, endpoint, username: username.to_string(), token: token.to_string() }
    }

    /// Calls `method`; a fault is an error (5xx-like codes and 408 are
    /// temporary).
    async fn call(&self, method: &str, params: &[Value], what: &str) -> Result<Value, BackendError> {
        self.call_or_fault(method, params, what).await?.map_err(|fault| fault_error(&fault, what))
    }

    /// Calls `method`: its value or its fault.
    async fn call_or_fault(
        &self,
        method: &str,
        params: &[Value],
        what: &str,
    ) -> Result<Result<Value, Fault>, BackendError> {
        let request = self
            .http
            .client
            .post(self.endpoint.clone())
            .basic_auth(&self.username, Some(&self.token))
            .header("Content-Type", "text/xml")
            .body(xmlrpc::encode_call(method, params));
        let response = self.http.send(request, what).await?;
        let body = self.http.body(response, what).await?;
        xmlrpc::decode_response(&body).map_err(|e| malformed(what, e, &body))
    }

    /// Calls a method that returns YAML text, parsed.
    async fn call_yaml(&self, method: &str, params: &[Value], what: &str) -> Result<Json, BackendError> {
        let answer = self.call(method, params, what).await?;
        let Some(text) = answer.as_str() else {
            return Err(malformed(what, "not a string", format!("{answer:?}").as_bytes()));
        };
        yaml_value(text).map_err(|e| malformed(what, format!("not valid YAML: {e}"), text.as_bytes()))
    }

    /// `…/scheduler/job/<id>/log_file/plain` next to the endpoint.
    fn log_url(&self, job_id: &str) -> Url {
        let mut url = self.endpoint.clone();
        let path = url.path();
        let prefix = path[..path.find("RPC2").unwrap_or(path.len())].trim_end_matches('/').to_string();
        url.set_path(&format!("{prefix}/scheduler/job/{job_id}/log_file/plain"));
        url.set_query(None);
        url.query_pairs_mut().append_pair("user", &self.username).append_pair("token", &self.token);
        url
    }
}

fn fault_error(fault: &Fault, what: &str) -> BackendError {
    let message = format!("LAVA refused {what}: {fault}");
    if fault.code / 100 == 5 || fault.code == 408 {
        BackendError::Temporary(message)
    } else {
        BackendError::Permanent(message)
    }
}

fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::Int(i) => Some(i.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// `1234` or `1234.1` as numbers, to order job ids.
fn id_order(id: &str) -> (i64, i64) {
    let (job, node) = id.split_once('.').unwrap_or((id, "0"));
    (job.parse().unwrap_or(i64::MAX), node.parse().unwrap_or(0))
}

#[async_trait]
impl Api for Rpc {
    async fn submit(&self, definition: &str) -> Result<Vec<String>, BackendError> {
        let what = "the job submission";
        match self.call("scheduler.submit_job", &[Value::String(definition.into())], what).await? {
            Value::Array(ids) => ids
                .iter()
                .map(|id| id_text(id).ok_or_else(|| malformed(what, "a job id is not a number", b"")))
                .collect(),
            other => id_text(&other)
                .map(|id| vec![id])
                .ok_or_else(|| malformed(what, "not a job id", format!("{other:?}").as_bytes())),
        }
    }

    async fn lookup(&self, key: &str, job_name: Option<&str>) -> Result<Vec<String>, BackendError> {
        let what = "the list of jobs";
        let mut found: Vec<String> = Vec::new();
        for page in 0..LOOKUP_PAGES {
            let params = [
                Value::String(String::new()),
                Value::String(String::new()),
                Value::Int(page * JOBS_PAGE),
                Value::Int(JOBS_PAGE),
            ];
            let Value::Array(jobs) = self.call("scheduler.jobs.list", &params, what).await? else {
                return Err(malformed(what, "not a list", b""));
            };
            let mut matched = false;
            for job in &jobs {
                let Some(id) = job.get("id").and_then(id_text) else {
                    return Err(malformed(what, "a job without an id", format!("{job:?}").as_bytes()));
                };
                let submitter = job.get("submitter").and_then(Value::as_str);
                if !self.username.is_empty() && submitter.is_some_and(|s| s != self.username) {
                    continue;
                }
                let description = job.get("description").and_then(Value::as_str).unwrap_or("");
                if let Some(name) = job_name {
                    if !description.is_empty() && !name.starts_with(description) {
                        continue;
                    }
                }
                let what = format!("the definition of job {id}");
                let definition = self.call("scheduler.jobs.definition", &[Value::String(id.clone())], &what).await?;
                if definition.as_str().is_some_and(|d| d.contains(key)) {
                    found.push(id);
                    matched = true;
                }
            }
            // The jobs of one submission are created together: past them,
            // stop.
            if (!found.is_empty() && !matched) || (jobs.len() as i64) < JOBS_PAGE {
                break;
            }
        }
        found.sort_by_key(|id| id_order(id));
        Ok(found)
    }

    async fn details(&self, job_id: &str) -> Result<JobDetails, BackendError> {
        let what = format!("the details of job {job_id}");
        let answer = self.call("scheduler.job_details", &[Value::String(job_id.into())], &what).await?;
        let text = |name: &str| match answer.get(name) {
            Some(Value::String(s)) | Some(Value::DateTime(s)) => Some(s.clone()),
            _ => None,
        };
        let (Some(status), Some(definition)) = (text("status"), text("definition")) else {
            return Err(malformed(&what, "no status or definition", format!("{answer:?}").as_bytes()));
        };
        Ok(JobDetails {
            state: status.clone(),
            status,
            definition,
            started_at: text("start_time").as_deref().and_then(parse_date),
            ended_at: text("end_time").as_deref().and_then(parse_date),
            raw: answer.to_json(),
        })
    }

    async fn results(&self, job_id: &str) -> Result<Vec<Json>, BackendError> {
        let what = format!("the test suites of job {job_id}");
        let suites =
            self.call_yaml("results.get_testjob_suites_list_yaml", &[Value::String(job_id.into())], &what).await?;
        let Json::Array(suites) = suites else {
            return Err(malformed(&what, "not a list", suites.to_string().as_bytes()));
        };
        let mut results = Vec::new();
        for suite in suites {
            let Some(name) = suite.get("name").and_then(Json::as_str) else {
                return Err(malformed(&what, "a suite without a name", suite.to_string().as_bytes()));
            };
            let what = format!("the results of suite {name} of job {job_id}");
            let mut offset = 0;
            loop {
                let params = [
                    Value::String(job_id.into()),
                    Value::String(name.into()),
                    Value::Int(RESULTS_PAGE as i64),
                    Value::Int(offset),
                ];
                let page = match self.call_yaml("results.get_testsuite_results_yaml", &params, &what).await? {
                    Json::Array(page) => page,
                    Json::Null => Vec::new(),
                    other => return Err(malformed(&what, "not a list", other.to_string().as_bytes())),
                };
                let full = page.len() == RESULTS_PAGE;
                results.extend(page);
                if !full {
                    break;
                }
                offset += RESULTS_PAGE as i64;
            }
        }
        Ok(results)
    }

    async fn log(&self, job_id: &str) -> Vec<u8> {
        let what = format!("the log of job {job_id}");
        let fetched = async {
            let response = self.http.send(self.http.client.get(self.log_url(job_id)), &what).await?;
            self.http.body(response, &what).await
        };
        fetched.await.unwrap_or_else(|e| {
            tracing::warn!(job_id, error = %e, "the LAVA log is not available");
            Vec::new()
        })
    }

    async fn cancel(&self, job_id: &str) -> Result<bool, BackendError> {
        let what = format!("the cancellation of job {job_id}");
        match self.call("scheduler.cancel_job", &[Value::String(job_id.into())], &what).await {
            Ok(_) => Ok(true),
            Err(BackendError::Temporary(e)) => Err(BackendError::Temporary(e)),
            Err(e) => {
                tracing::warn!(job_id, error = %e, "LAVA did not cancel the job");
                Ok(false)
            }
        }
    }

    async fn definition(&self, job_id: &str) -> Result<Option<String>, BackendError> {
        let what = format!("the definition of job {job_id}");
        match self.call_or_fault("scheduler.jobs.definition", &[Value::String(job_id.into())], &what).await? {
            Ok(Value::String(definition)) => Ok(Some(definition)),
            Ok(other) => Err(malformed(&what, "not a string", format!("{other:?}").as_bytes())),
            Err(fault) if fault.code == 404 => Ok(None),
            Err(fault) => Err(fault_error(&fault, &what)),
        }
    }

    async fn event_socket(&self) -> Result<Option<String>, BackendError> {
        let what = "the lab's event socket";
        match self.call_or_fault("scheduler.get_publisher_event_socket", &[], what).await? {
            Ok(Value::String(socket)) if !socket.is_empty() => Ok(Some(socket)),
            Ok(_) => Ok(None),
            // No such method (-32601, as LAVA's dispatcher says it).
            Err(fault) if fault.code == -32601 => Ok(None),
            Err(fault) => Err(fault_error(&fault, what)),
        }
    }
}
