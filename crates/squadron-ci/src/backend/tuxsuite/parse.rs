//! What a finished TuxSuite job gives, exactly as SQUAD 1.98's
//! `parse_build_results`, `parse_oebuild_results` and `parse_test_results`
//! (the deviations are named where they happen).

use std::collections::HashMap;

use serde_json::{Map, Value};
use squadron_core::settings::truthy;

use super::http::{join, Answer, Http};
use super::{build_name, JobId, JobKind};
use crate::backend::python::{py_repr, py_str};
use crate::backend::{BackendError, JobResults, LabMetric, LabTest};

/// The lab as one fetch sees it: its client and the token to send.
pub(super) struct Lab<'a> {
    /// The client.
    pub http: &'a Http,
    /// `TUXSUITE_TOKEN`, sent as `Authorization` on every GET.
    pub token: Option<&'a str>,
    /// The API root.
    pub api: &'a str,
}

/// The job being fetched.
pub(super) struct Job<'a> {
    /// Its id.
    pub id: &'a JobId,
    /// Its URL.
    pub url: &'a str,
    /// The backend's settings overlaid by the project's.
    pub settings: &'a Map<String, Value>,
}

/// Files attached to a build's test run.
const BUILD_ATTACHMENTS: [&str; 3] = ["config", "tuxmake_reproducer.sh", "tux_plan.yaml"];
/// Files attached to a test's test run.
const TEST_ATTACHMENTS: [&str; 2] = ["reproducer", "tux_plan.yaml"];

/// Python's `int()` of a JSON value, `None` where it would raise.
fn py_int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f.trunc() as i64)),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

/// The bounds of Python's `items[start:end]` over `len` items.
fn py_slice(len: usize, start: i64, end: i64) -> std::ops::Range<usize> {
    let len = len as i64;
    let clamp = |i: i64| if i < 0 { (i + len).max(0) } else { i.min(len) } as usize;
    let (start, end) = (clamp(start), clamp(end));
    start..end.max(start)
}

/// Which of the lab's fields the setting `name` makes metadata.
fn metadata_keys(settings: &Map<String, Value>, name: &str) -> Result<Vec<String>, BackendError> {
    match settings.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(keys)) => Ok(keys.iter().map(py_str).collect()),
        Some(other) => Err(BackendError::Permanent(format!("the setting {name} must be a list of keys, not {other}"))),
    }
}

fn pick(results: &Map<String, Value>, keys: &[String]) -> Map<String, Value> {
    keys.iter().map(|k| (k.clone(), results.get(k).cloned().unwrap_or(Value::Null))).collect()
}

fn require(results: &Map<String, Value>, keys: &[&str]) -> Result<(), BackendError> {
    let missing: Vec<&str> = keys.iter().copied().filter(|k| !results.contains_key(*k)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(BackendError::Permanent(format!(
        "{} are required and missing from {}",
        missing.join(", "),
        Value::Object(results.clone())
    )))
}

fn string_field<'a>(results: &'a Map<String, Value>, key: &str) -> Result<&'a str, BackendError> {
    results.get(key).and_then(Value::as_str).ok_or_else(|| {
        BackendError::Permanent(format!("{key} should be a string in TuxSuite's answer, not {:?}", results.get(key)))
    })
}

/// SQUAD's generated name of a build (`generate_test_name`).
fn generated_name(build: &Map<String, Value>) -> Result<String, BackendError> {
    let toolchain = build.get("toolchain").map(py_str);
    let kconfigs: Option<Vec<String>> =
        build.get("kconfig").and_then(Value::as_array).map(|k| k.iter().map(py_str).collect());
    match (toolchain, kconfigs) {
        (Some(toolchain), Some(kconfigs)) if !kconfigs.is_empty() => Ok(build_name(&toolchain, &kconfigs)),
        _ => Err(BackendError::Permanent(format!(
            "a build needs a toolchain and a list of kconfigs to be named: {}",
            Value::Object(build.clone())
        ))),
    }
}

fn metric(name: String, value: &Value) -> Result<LabMetric, BackendError> {
    let number = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    let number = number.ok_or_else(|| BackendError::Permanent(format!("metric {name} is not a number: {value}")))?;
    Ok(LabMetric { name, values: vec![number], unit: None })
}

/// Tests by name, a later one of the same name replacing the earlier in
/// its place (a Python dict).
#[derive(Default)]
struct Tests {
    list: Vec<LabTest>,
    index: HashMap<String, usize>,
}

impl Tests {
    fn insert(&mut self, name: String, result: Option<String>, log: Option<String>) {
        // SQUAD's `None` result is a skip.
        let test = LabTest { name: name.clone(), result: result.unwrap_or_else(|| "skip".into()), log };
        match self.index.get(&name) {
            Some(&i) => self.list[i] = test,
            None => {
                self.index.insert(name, self.list.len());
                self.list.push(test);
            }
        }
    }
}

/// The lines of a LAVA YAML log as SQUAD keeps them: for each line, the
/// message of a `target` line (cut at fixed columns, escapes and all) or
/// nothing.
fn log_lines(body: &[u8]) -> Vec<Option<String>> {
    let mut lines = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        // bytes.splitlines(): \n, \r\n and \r end a line.
        let end = rest.iter().position(|&b| b == b'\n' || b == b'\r').unwrap_or(rest.len());
        let line = String::from_utf8_lossy(&rest[..end]);
        let skip = match rest.get(end) {
            Some(b'\r') if rest.get(end + 1) == Some(&b'\n') => 2,
            Some(_) => 1,
            None => 0,
        };
        rest = &rest[end + skip..];
        if !line.contains("\"target\"") {
            lines.push(None);
            continue;
        }
        // `line[64:-2]`: 64 is where the message starts in TuxRun's
        // `- {"dt": "…", "lvl": "target", "msg": "…"}` lines.
        let chars: Vec<char> = line.chars().collect();
        let range = py_slice(chars.len(), 64, -2);
        lines.push(Some(chars[range].iter().collect()));
    }
    lines
}

/// A test's log: the target lines from `starttc` to `endtc` (LAVA counts
/// from 1), or `None` to drop the test, as SQUAD does when `starttc` is
/// not a number.
fn test_log(lines: &[Option<String>], data: &Map<String, Value>) -> Option<Option<String>> {
    let Some(start) = data.get("starttc") else {
        return Some(None);
    };
    let start = py_int(start)? - 1;
    let end = data.get("endtc").and_then(py_int).unwrap_or(start + 2);
    let log: Vec<String> = lines[py_slice(lines.len(), start, end)]
        .iter()
        .flatten()
        .filter(|line| !line.is_empty() && !line.starts_with("<LAVA_SIGNAL_"))
        .map(|line| line.replace('\0', ""))
        .collect();
    Some(Some(log.join("\n")))
}

/// `suite` without LAVA's `<n>_` prefix.
fn suite_name(suite: &str) -> &str {
    let digits = suite.bytes().take_while(u8::is_ascii_digit).count();
    match suite.as_bytes().get(digits) {
        Some(b'_') if digits > 0 => &suite[digits + 1..],
        _ => suite,
    }
}

impl Lab<'_> {
    async fn get(&self, url: &str) -> Result<Answer, BackendError> {
        self.http.get(url, self.token).await
    }

    fn url_of(&self, id: &JobId) -> Result<String, BackendError> {
        join(self.api, &id.path())
    }

    /// The job's page. SQUAD decodes whatever comes back (a missing job's
    /// error answer then reads as "still running", forever); here a job the
    /// lab does not know is a permanent failure and another error status a
    /// temporary one.
    pub async fn job(&self, url: &str) -> Result<Value, BackendError> {
        let answer = self.get(url).await?;
        match answer.status.as_u16() {
            200..=299 => answer.json(url),
            404 | 410 => Err(BackendError::Permanent(format!("TuxSuite has no job at {url} ({})", answer.status))),
            _ => Err(BackendError::Temporary(format!("TuxSuite answered {} for {url}", answer.status))),
        }
    }

    /// A JSON document at `url`, whatever the status (as SQUAD).
    async fn json(&self, url: &str) -> Result<Value, BackendError> {
        self.get(url).await?.json(url)
    }

    /// A text at `url`, `None` unless the status is below 400 (SQUAD keeps
    /// the text of an error page as the log).
    async fn text(&self, url: &str) -> Result<Option<String>, BackendError> {
        let answer = self.get(url).await?;
        Ok(answer.ok().then(|| answer.text()))
    }

    /// The files of `names` under `base` that exist.
    async fn attachments(&self, base: &str, names: &[&str]) -> Result<Vec<(String, Vec<u8>)>, BackendError> {
        let mut files = Vec::new();
        for name in names {
            let answer = self.get(&join(base, name)?).await?;
            if answer.ok() {
                files.push((name.to_string(), answer.body));
            }
        }
        Ok(files)
    }

    /// Adds the fields of `<download_url>/metadata.json`, if it can be had.
    /// One that is not a JSON object is skipped with a warning (SQUAD's
    /// fetch fails on it).
    async fn metadata_file(&self, results: &Map<String, Value>, metadata: &mut Map<String, Value>) {
        let Some(download_url) = results.get("download_url").and_then(Value::as_str) else {
            return;
        };
        let url = format!("{download_url}/metadata.json");
        let Ok(answer) = self.get(&url).await else {
            return;
        };
        if !answer.ok() {
            return;
        }
        match answer.json(&url) {
            Ok(Value::Object(fields)) => metadata.extend(fields),
            Ok(_) => tracing::warn!(url, "ignoring a TuxSuite metadata file that is not a JSON object"),
            Err(e) => tracing::warn!(url, error = %e, "ignoring a TuxSuite metadata file"),
        }
    }

    /// A finished kernel build.
    pub async fn build(&self, job: &Job<'_>, results: Map<String, Value>) -> Result<JobResults, BackendError> {
        require(&results, &["build_status", "warnings_count", "download_url", "retry"])?;
        let name = match results.get("build_name") {
            Some(name) if truthy(name) => py_str(name),
            _ => generated_name(&results)?,
        };
        let build_status = py_str(&results["build_status"]);
        let mut metadata = pick(&results, &metadata_keys(job.settings, "BUILD_METADATA_KEYS")?);
        self.metadata_file(&results, &mut metadata).await;
        let download_url = string_field(&results, "download_url")?;
        metadata.insert("job_url".into(), job.url.into());
        metadata.insert("job_id".into(), job.id.to_string().into());
        metadata.insert("config".into(), join(&format!("{download_url}/"), "config")?.into());
        metadata.insert("build_name".into(), name.clone().into());
        let mut tests = Tests::default();
        let mut metrics = Vec::new();
        let (status, log) = if build_status == "error" {
            // TuxSuite gave up on the build.
            tests.insert(format!("build/{name}"), Some("skip".into()), None);
            ("Incomplete", None)
        } else {
            tests.insert(format!("build/{name}"), Some(build_status), None);
            metrics.push(metric(format!("build/{name}-warnings"), &results["warnings_count"])?);
            let log = self.text(&join(download_url, "build.log")?).await?;
            let duration = results
                .get("tuxmake_metadata")
                .and_then(|m| m.get("results"))
                .and_then(|m| m.get("duration"))
                .and_then(|m| m.get("build"))
                .ok_or_else(|| BackendError::Permanent("Missing duration from build results".into()))?;
            metrics.push(metric(format!("build/{name}-duration"), duration)?);
            ("Complete", log)
        };
        let attachments = self.attachments(download_url, &BUILD_ATTACHMENTS).await?;
        Ok(JobResults {
            status: status.into(),
            completed: true,
            name: Some(name),
            metadata,
            tests: tests.list,
            metrics,
            log: log.filter(|l| !l.is_empty()).map(String::into_bytes),
            raw: Value::Object(results).to_string().into_bytes(),
            attachments,
            ..JobResults::default()
        })
    }

    /// A finished OpenEmbedded (or Android) build.
    pub async fn oebuild(&self, job: &Job<'_>, results: Map<String, Value>) -> Result<JobResults, BackendError> {
        require(&results, &["download_url", "result"])?;
        let mut metadata = pick(&results, &metadata_keys(job.settings, "OEBUILD_METADATA_KEYS")?);
        metadata.insert("job_url".into(), job.url.into());
        metadata.insert("job_id".into(), job.id.to_string().into());
        if let Some(sources) = results.get("sources").filter(|s| truthy(s)) {
            metadata.insert("sources".into(), sources.clone());
        }
        let passed = results["result"].as_str() == Some("pass");
        let mut tests = Tests::default();
        tests.insert("build/build".into(), Some(if passed { "pass" } else { "fail" }.into()), None);
        let log = self.text(&join(string_field(&results, "download_url")?, "build.log")?).await?;
        Ok(JobResults {
            status: "Complete".into(),
            completed: true,
            metadata,
            tests: tests.list,
            log: log.filter(|l| !l.is_empty()).map(String::into_bytes),
            raw: Value::Object(results).to_string().into_bytes(),
            ..JobResults::default()
        })
    }

    /// A finished test; `None` while its boot result is `unknown` (TuxSuite
    /// has not settled it yet: fetched again later).
    pub async fn test(&self, job: &Job<'_>, results: Map<String, Value>) -> Result<Option<JobResults>, BackendError> {
        let mut out = JobResults {
            status: "Complete".into(),
            completed: true,
            raw: Value::Object(results.clone()).to_string().into_bytes(),
            ..JobResults::default()
        };
        let mut metadata = pick(&results, &metadata_keys(job.settings, "TEST_METADATA_KEYS")?);
        // A named test moves its job to an environment of that name.
        out.environment = results.get("test_name").filter(|n| !n.is_null()).map(py_str);
        self.metadata_file(&results, &mut metadata).await;
        metadata.insert("job_url".into(), job.url.into());
        metadata.insert("job_id".into(), job.id.to_string().into());
        let mut names: Vec<String> =
            results.get("tests").and_then(Value::as_array).map(|t| t.iter().map(py_str).collect()).unwrap_or_default();
        if let Some(boot) = names.iter().position(|n| n == "boot") {
            names.remove(boot);
        }
        out.name = Some(names.join(","));
        let empty = Map::new();
        let outcome = match results.get("results") {
            Some(Value::Object(outcome)) => outcome,
            _ => &empty,
        };
        let mut tests = Tests::default();
        let skip_boot = |tests: &mut Tests, metadata: &Map<String, Value>| {
            let build = metadata.get("build_name").filter(|n| truthy(n)).map(py_str);
            tests.insert(format!("boot/{}", build.as_deref().unwrap_or("boot")), None, None);
        };
        let finish = |mut out: JobResults, tests: Tests, metadata: Map<String, Value>| {
            out.tests = tests.list;
            out.metadata = metadata;
            Ok(Some(out))
        };
        if outcome.is_empty() {
            out.failure = Some(
                match results.get("waiting_for").and_then(Value::as_str) {
                    None => "no results",
                    Some(w) if w.contains("BUILD") => "build failed",
                    Some(_) => "sanity test failed",
                }
                .into(),
            );
            skip_boot(&mut tests, &metadata);
            return finish(out, tests, metadata);
        }
        match results.get("result").and_then(Value::as_str) {
            Some("fail") => out.failure = Some(py_repr(&Value::Object(outcome.clone()))),
            Some("error") => {
                out.failure = Some("tuxsuite infrastructure error".into());
                out.status = "Incomplete".into();
                skip_boot(&mut tests, &metadata);
                return finish(out, tests, metadata);
            }
            Some("canceled") => {
                out.failure = Some("tuxsuite job canceled".into());
                out.status = "Canceled".into();
                skip_boot(&mut tests, &metadata);
                return finish(out, tests, metadata);
            }
            _ => {}
        }
        if outcome.get("boot").and_then(Value::as_str) == Some("unknown") {
            return Ok(None);
        }
        let lines = match results.get("download_url").and_then(Value::as_str) {
            Some(download_url) => {
                let answer = self.get(&join(download_url, "lava-logs.yaml")?).await?;
                if answer.ok() {
                    log_lines(&answer.body)
                } else {
                    Vec::new()
                }
            }
            None => Vec::new(),
        };
        let log: Vec<&str> = lines.iter().flatten().map(String::as_str).filter(|l| !l.is_empty()).collect();
        out.log = (!log.is_empty()).then(|| log.join("\n").into_bytes());
        let job_dir = format!("{}/", job.url);
        out.attachments = self.attachments(&job_dir, &TEST_ATTACHMENTS).await?;
        self.set_build_name(job, &results, &mut metadata).await?;
        let build = metadata.get("build_name").filter(|n| truthy(n)).map(py_str);
        let boot = outcome.get("boot").filter(|r| !r.is_null()).map(py_str);
        tests.insert(format!("boot/{}", build.as_deref().unwrap_or("boot")), boot, None);
        let url = join(&job_dir, "results")?;
        let suites = match self.json(&url).await? {
            Value::Object(suites) => suites,
            _ => return Err(BackendError::Permanent(format!("TuxSuite's results at {url} are not a JSON object"))),
        };
        if suites.get("error").is_none_or(Value::is_null) {
            for (suite, suite_tests) in &suites {
                let Value::Object(suite_tests) = suite_tests else { continue };
                let suite = suite_name(suite);
                for (name, data) in suite_tests {
                    let Value::Object(data) = data else { continue };
                    let Some(result) = data.get("result").filter(|r| truthy(r)) else { continue };
                    let Some(log) = test_log(&lines, data) else { continue };
                    tests.insert(format!("{suite}/{name}"), Some(py_str(result)), log);
                }
            }
        }
        finish(out, tests, metadata)
    }

    /// Follows the test's `waiting_for` up to its build (through a sanity
    /// test if there is one) and adds the build's `TEST_BUILD_METADATA_KEYS`
    /// and name to `metadata`. SQUAD first looks for the build's name in a
    /// test run of the same build already fetched; a backend here never
    /// reads the database, so the lab is always asked.
    async fn set_build_name(
        &self,
        job: &Job<'_>,
        results: &Map<String, Value>,
        metadata: &mut Map<String, Value>,
    ) -> Result<(), BackendError> {
        let Some(waiting_for) = results.get("waiting_for").and_then(Value::as_str) else {
            return Ok(());
        };
        if waiting_for.starts_with("OEBUILD") {
            return Ok(());
        }
        let items: Vec<&str> = waiting_for.split('#').collect();
        let (kind, uid) = match items[..] {
            [kind, uid] => (kind, uid),
            _ => ("BUILD", items[0]),
        };
        let build_uid = if kind == "TEST" {
            let sanity = self.json(&self.url_of(&job.id.sibling(JobKind::Test, uid))?).await?;
            match sanity.get("waiting_for").and_then(Value::as_str) {
                Some(build) => build.replace("BUILD#", ""),
                None => return Ok(()),
            }
        } else {
            waiting_for.replace("BUILD#", "")
        };
        let build = match self.json(&self.url_of(&job.id.sibling(JobKind::Build, &build_uid))?).await? {
            Value::Object(build) => build,
            _ => Map::new(),
        };
        let keys = metadata_keys(job.settings, "TEST_BUILD_METADATA_KEYS")?;
        metadata.extend(pick(&build, &keys));
        let named = metadata.get("build_name").is_some_and(|n| !n.is_null() && n.as_str() != Some(""));
        if keys.iter().any(|k| k == "toolchain") && keys.iter().any(|k| k == "kconfig") && !named {
            metadata.insert("build_name".into(), generated_name(&build)?.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn python_reprs() {
        assert_eq!(
            py_repr(&json!({"boot": "fail", "ltp-smoke": "unknown"})),
            "{'boot': 'fail', 'ltp-smoke': 'unknown'}"
        );
        assert_eq!(py_repr(&json!([1, null, true, "it's", "a\"b'c\n"])), r#"[1, None, True, "it's", 'a"b\'c\n']"#);
    }

    #[test]
    fn python_slices() {
        assert_eq!(py_slice(10, 957, 958), 10..10);
        assert_eq!(py_slice(1000, 957, 958), 957..958);
        assert_eq!(py_slice(10, -1, 5), 9..9);
        assert_eq!(py_slice(10, -3, 10), 7..10);
        assert_eq!(py_slice(10, 5, 2), 5..5);
    }

    #[test]
    fn lava_logs_keep_target_messages_only() {
        let body = b"- {\"dt\": \"2025-04-09T13:15:59.421673\", \"lvl\": \"target\", \"msg\": \"line 1\"}\r\n\
- {\"dt\": \"2025-04-09T13:15:59.421673\", \"lvl\": \"info\", \"msg\": \"x\"}\n\
- {\"dt\": \"2025-04-09T13:15:59.421673\", \"lvl\": \"target\", \"msg\": \"<LAVA_SIGNAL_ENDTC x>\"}\n";
        let lines = log_lines(body);
        assert_eq!(lines, [Some("line 1".to_string()), None, Some("<LAVA_SIGNAL_ENDTC x>".to_string())]);
        let data = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(test_log(&lines, &data(json!({"starttc": 1, "endtc": "1"}))), Some(Some("line 1".into())));
        assert_eq!(test_log(&lines, &data(json!({"starttc": "1"}))), Some(Some("line 1".into())));
        assert_eq!(test_log(&lines, &data(json!({"starttc": 3, "endtc": 3}))), Some(Some(String::new())));
        assert_eq!(test_log(&lines, &data(json!({"starttc": "x"}))), None, "SQUAD drops the test");
        assert_eq!(test_log(&lines, &data(json!({}))), Some(None));
    }

    #[test]
    fn suite_prefixes_go() {
        assert_eq!(suite_name("0_ltp-smoke"), "ltp-smoke");
        assert_eq!(suite_name("12_a_b"), "a_b");
        assert_eq!(suite_name("lava"), "lava");
        assert_eq!(suite_name("_x"), "_x");
        assert_eq!(suite_name("1x_y"), "1x_y");
    }
}
