//! LAVA's REST API v0.2 (`Authorization: Token <token>`).

use async_trait::async_trait;
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use super::results::{parse_date, JobDetails};
use super::{malformed, Api, Http};
use crate::backend::BackendError;

/// Jobs per page of a jobs search.
const PAGE: &str = "100";

/// A REST API v0.2 root (`https://lava.example.com/api/v0.2/`).
pub(super) struct Rest {
    http: Http,
    root: Url,
    authorization: String,
}

impl Rest {
    pub(super) fn new(http: Http, mut root: Url, token: &str) -> Rest {
        if !root.path().ends_with('/') {
            let path = format!("{}/", root.path());
            root.set_path(&path);
        }
        root.set_query(None);
        Rest { http, root, authorization: format!("Token {token}") }
    }

    fn url(&self, path: &str) -> Result<Url, BackendError> {
        self.root.join(path).map_err(|e| BackendError::Permanent(format!("cannot make a LAVA URL of {path:?}: {e}")))
    }

    /// GETs `url` as JSON.
    async fn get_json(&self, url: Url, what: &str) -> Result<Value, BackendError> {
        let request = self.http.client.get(url).header("Authorization", &self.authorization);
        let response = self.http.send(request, what).await?;
        let body = self.http.body(response, what).await?;
        serde_json::from_slice(&body).map_err(|e| malformed(what, format!("not JSON: {e}"), &body))
    }

    /// Every item of a paginated list, following `next`, page by page.
    async fn each_page(
        &self,
        mut url: Url,
        what: &str,
        mut each: impl FnMut(Vec<Value>) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        loop {
            let mut page = self.get_json(url, what).await?;
            let next = page.get("next").and_then(Value::as_str).filter(|n| !n.is_empty()).map(str::to_string);
            let Some(Value::Array(items)) = page.get_mut("results").map(Value::take) else {
                return Err(malformed(what, "no list of results", page.to_string().as_bytes()));
            };
            each(items)?;
            match next {
                Some(next) => {
                    url =
                        Url::parse(&next).map_err(|e| malformed(what, format!("bad next page {next:?}: {e}"), b""))?;
                }
                None => return Ok(()),
            }
        }
    }

    /// The jobs whose `field` contains `key`: (id, multinode or not).
    async fn search(&self, field: &str, key: &str) -> Result<Vec<(i64, bool)>, BackendError> {
        let mut url = self.url("jobs/")?;
        url.query_pairs_mut().append_pair(&format!("{field}__contains"), key).append_pair("limit", PAGE);
        let what = "the search for a submitted job";
        let mut found = Vec::new();
        self.each_page(url, what, |jobs| {
            for job in jobs {
                let id =
                    job.get("id").and_then(Value::as_i64).ok_or_else(|| malformed(what, "a job without an id", b""))?;
                let multinode = job.get("multinode_definition").and_then(Value::as_str).is_some_and(|d| !d.is_empty());
                found.push((id, multinode));
            }
            Ok(())
        })
        .await?;
        Ok(found)
    }
}

/// A REST test case in the results-export shape SQUAD reads: the suite's
/// name in `suite`, and LAVA's `start_log_line`/`end_log_line` as
/// `log_start_line`/`log_end_line`.
fn export_shape(test: Value, suite: &str) -> Value {
    let Value::Object(mut test) = test else {
        return test;
    };
    test.insert("suite".into(), Value::from(suite));
    for (rest, export) in [("start_log_line", "log_start_line"), ("end_log_line", "log_end_line")] {
        if let Some(value) = test.remove(rest) {
            let value = if value.is_null() { Value::from("") } else { value };
            test.entry(export).or_insert(value);
        }
    }
    Value::Object(test)
}

fn text_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[async_trait]
impl Api for Rest {
    async fn submit(&self, definition: &str) -> Result<Vec<String>, BackendError> {
        let what = "the job submission";
        let request = self
            .http
            .client
            .post(self.url("jobs/")?)
            .header("Authorization", &self.authorization)
            .form(&[("definition", definition)]);
        let response = self.http.send(request, what).await?;
        let body = self.http.body(response, what).await?;
        let answer: Value =
            serde_json::from_slice(&body).map_err(|e| malformed(what, format!("not JSON: {e}"), &body))?;
        match answer.get("job_ids") {
            Some(Value::Array(ids)) => ids
                .iter()
                .map(|id| text_of(Some(id)).ok_or_else(|| malformed(what, "a job id is not a number", &body)))
                .collect(),
            _ => Err(malformed(what, "no job_ids", &body)),
        }
    }

    async fn lookup(&self, key: &str, _job_name: Option<&str>) -> Result<Vec<String>, BackendError> {
        let mut found = self.search("original_definition", key).await?;
        if found.is_empty() {
            found = self.search("multinode_definition", key).await?;
        }
        found.sort_unstable();
        found.dedup();
        if found.len() > 1 && found.iter().any(|(_, multinode)| *multinode) {
            // REST does not show multinode sub-ids; LAVA makes them from the
            // first job's id and the node's position, in creation order.
            let first = found[0].0;
            return Ok((0..found.len()).map(|n| format!("{first}.{n}")).collect());
        }
        Ok(found.into_iter().map(|(id, _)| id.to_string()).collect())
    }

    async fn details(&self, job_id: &str) -> Result<JobDetails, BackendError> {
        let what = format!("the details of job {job_id}");
        let raw = self.get_json(self.url(&format!("jobs/{job_id}/"))?, &what).await?;
        let field = |name: &str| raw.get(name).and_then(Value::as_str).map(str::to_string);
        let (Some(state), Some(definition)) = (field("state"), field("definition")) else {
            return Err(malformed(&what, "no state or definition", raw.to_string().as_bytes()));
        };
        Ok(JobDetails {
            state,
            status: field("health").unwrap_or_default(),
            definition,
            started_at: field("start_time").as_deref().and_then(parse_date),
            ended_at: field("end_time").as_deref().and_then(parse_date),
            raw,
        })
    }

    async fn results(&self, job_id: &str) -> Result<Vec<Value>, BackendError> {
        let what = format!("the test suites of job {job_id}");
        let mut suites: Vec<(String, String)> = Vec::new();
        self.each_page(self.url(&format!("jobs/{job_id}/suites/"))?, &what, |page| {
            for suite in page {
                let (Some(id), Some(name)) = (text_of(suite.get("id")), text_of(suite.get("name"))) else {
                    return Err(malformed(&what, "a suite without id or name", suite.to_string().as_bytes()));
                };
                suites.push((id, name));
            }
            Ok(())
        })
        .await?;
        let mut tests = Vec::new();
        for (suite_id, name) in suites {
            let what = format!("the tests of suite {name} of job {job_id}");
            let url = self.url(&format!("jobs/{job_id}/suites/{suite_id}/tests/"))?;
            self.each_page(url, &what, |page| {
                tests.extend(page.into_iter().map(|t| export_shape(t, &name)));
                Ok(())
            })
            .await?;
        }
        Ok(tests)
    }

    async fn log(&self, job_id: &str) -> Vec<u8> {
        let what = format!("the log of job {job_id}");
        let fetched = async {
            let request = self.http.client.get(self.url(&format!("jobs/{job_id}/logs/"))?);
            let response = self.http.send(request.header("Authorization", &self.authorization), &what).await?;
            self.http.body(response, &what).await
        };
        fetched.await.unwrap_or_else(|e| {
            tracing::warn!(job_id, error = %e, "the LAVA log is not available");
            Vec::new()
        })
    }

    async fn cancel(&self, job_id: &str) -> Result<bool, BackendError> {
        let what = format!("the cancellation of job {job_id}");
        let request = self
            .http
            .client
            .request(Method::POST, self.url(&format!("jobs/{job_id}/cancel/"))?)
            .header("Authorization", &self.authorization)
            .timeout(self.http.timeout);
        let response = request.send().await.map_err(|e| self.http.transport_error(e, &what))?;
        Ok(response.status() == StatusCode::OK)
    }

    async fn definition(&self, job_id: &str) -> Result<Option<String>, BackendError> {
        let what = format!("the definition of job {job_id}");
        let request = self
            .http
            .client
            .get(self.url(&format!("jobs/{job_id}/definition/"))?)
            .header("Authorization", &self.authorization)
            .timeout(self.http.timeout);
        let response = request.send().await.map_err(|e| self.http.transport_error(e, &what))?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = self.http.check(response, &what).await?;
        let body = self.http.body(response, &what).await?;
        match serde_json::from_slice(&body) {
            Ok(Value::String(definition)) => Ok(Some(definition)),
            Ok(_) => Err(malformed(&what, "not a string", &body)),
            Err(e) => Err(malformed(&what, format!("not JSON: {e}"), &body)),
        }
    }

    async fn event_socket(&self) -> Result<Option<String>, BackendError> {
        let what = "the lab's configuration";
        let request =
            self.http.client.get(self.url("system/master_config/")?).header("Authorization", &self.authorization);
        let response =
            request.timeout(self.http.timeout).send().await.map_err(|e| self.http.transport_error(e, what))?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = self.http.check(response, what).await?;
        let body = self.http.body(response, what).await?;
        let config: Value =
            serde_json::from_slice(&body).map_err(|e| malformed(what, format!("not JSON: {e}"), &body))?;
        Ok(config.get("EVENT_SOCKET").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string))
    }
}
