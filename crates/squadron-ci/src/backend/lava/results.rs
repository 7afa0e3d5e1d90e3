//! A finished LAVA job's details and results made into SQUAD's tests,
//! metrics and metadata, exactly as SQUAD's LAVA backend does
//! (`__parse_results__`), quirks included.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use regex::Regex;
use serde_json::{Map, Value};
use squadron_core::settings::truthy;

use super::log::{self, LineRange};
use super::SUBMISSION_KEY;
use crate::backend::python::py_str;
use crate::backend::{BackendError, JobResults, LabMetric, LabTest};
use squadron_plugins::LabArtifact;

/// The statuses of a finished job.
pub const FINISHED: [&str; 4] = ["Complete", "Incomplete", "Canceled", "Finished"];

/// The settings that change how results are read: the backend's
/// `backend_settings` overlaid by the project's settings.
#[derive(Debug, Default)]
pub struct ParseSettings {
    /// `CI_LAVA_HANDLE_SUITE`: keep LAVA's own `lava` suite.
    pub handle_suite: bool,
    /// `CI_LAVA_HANDLE_BOOT`: make `login-action` a boot test and metric.
    pub handle_boot: bool,
    /// `CI_LAVA_CLONE_MEASUREMENTS`: a measured case is a test too.
    pub clone_measurements: bool,
    /// `CI_LAVA_WORK_AROUND_INFRA_ERRORS`: keep an infrastructure-failed
    /// job's results.
    pub work_around_infra_errors: bool,
    /// `CI_LAVA_INFRA_ERROR_MESSAGES`: error messages (case-insensitive
    /// regular expressions) that ask for an automatic resubmission.
    pub infra_error_messages: Vec<Regex>,
}

/// Whether a setting is set, by Python's truthiness.
fn truthy_setting(settings: &Map<String, Value>, key: &str) -> bool {
    settings.get(key).is_some_and(truthy)
}

impl ParseSettings {
    /// Reads the settings; regular expressions that do not compile are
    /// ignored (SQUAD logs and skips them too).
    pub fn from_map(settings: &Map<String, Value>) -> ParseSettings {
        let patterns: Vec<&str> = match settings.get("CI_LAVA_INFRA_ERROR_MESSAGES") {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(one)) => vec![one.as_str()],
            _ => Vec::new(),
        };
        let infra_error_messages = patterns
            .into_iter()
            .filter_map(|p| match regex::RegexBuilder::new(p).case_insensitive(true).build() {
                Ok(re) => Some(re),
                Err(e) => {
                    tracing::debug!(pattern = p, error = %e, "not a valid regular expression; ignored");
                    None
                }
            })
            .collect();
        ParseSettings {
            handle_suite: truthy_setting(settings, "CI_LAVA_HANDLE_SUITE"),
            handle_boot: truthy_setting(settings, "CI_LAVA_HANDLE_BOOT"),
            clone_measurements: truthy_setting(settings, "CI_LAVA_CLONE_MEASUREMENTS"),
            work_around_infra_errors: truthy_setting(settings, "CI_LAVA_WORK_AROUND_INFRA_ERRORS"),
            infra_error_messages,
        }
    }
}

/// What the lab says about a job, from either API.
#[derive(Debug, Clone)]
pub struct JobDetails {
    /// The job's state: XML-RPC's `status`, REST's `state`; the job is over
    /// when it is one of [`FINISHED`].
    pub state: String,
    /// The final status: XML-RPC's `status`, REST's `health`.
    pub status: String,
    /// The job's definition as LAVA keeps it.
    pub definition: String,
    /// `start_time`, if it is a date.
    pub started_at: Option<DateTime<Utc>>,
    /// `end_time`, if it is a date.
    pub ended_at: Option<DateTime<Utc>>,
    /// The answer as received, for the raw blob.
    pub raw: Value,
}

impl JobDetails {
    /// Whether the job is over.
    pub fn finished(&self) -> bool {
        FINISHED.contains(&self.state.as_str())
    }
}

/// A date as LAVA sends it: ISO 8601 (REST, and some XML-RPC servers) or
/// XML-RPC's `20201113T10:23:41`; anything else is no date (SQUAD's
/// `isoparse` failing).
pub fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(date) = DateTime::parse_from_rfc3339(text) {
        return Some(date.with_timezone(&Utc));
    }
    ["%Y%m%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc())
        .or_else(|| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%:z").ok().map(|d| d.with_timezone(&Utc)))
}

/// A YAML text as JSON.
pub fn yaml_value(text: &str) -> Result<Value, String> {
    serde_norway::from_str::<Value>(text).map_err(|e| e.to_string())
}

/// An integer the way Python's `int()` reads a LAVA log line number
/// (`None` for no number; `Err` for text that is not one).
fn line_number(value: Option<&Value>) -> Result<Option<i64>, ()> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| ()),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(()),
        Some(Value::Bool(b)) => Ok(Some(i64::from(*b))),
        Some(_) => Err(()),
    }
}

/// A measurement as a number (Python's `float()`), `None` for no
/// measurement (`None`, the text `None`, or missing).
fn measurement(result: &Map<String, Value>) -> Result<Option<f64>, String> {
    match result.get("measurement") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "None" => Ok(None),
        Some(Value::String(s)) => {
            s.trim().parse().map(Some).map_err(|_| format!("the measurement {s:?} is not a number"))
        }
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(format!("the measurement {other} is not a number")),
    }
}

/// A result's unit: `unit`, else `units` (REST API v0.2 of some LAVA
/// versions), else `items`.
fn unit(result: &Map<String, Value>) -> Option<String> {
    let value = result.get("unit").or_else(|| result.get("units"));
    match value {
        None => Some("items".into()),
        Some(Value::Null) => None,
        Some(v) => Some(py_str(v)),
    }
}

/// Insertion-ordered entries where a later entry of the same name replaces
/// the earlier one in place (a Python dict's `update`).
struct Ordered<T> {
    items: Vec<T>,
    index: HashMap<String, usize>,
}

impl<T> Ordered<T> {
    fn new() -> Self {
        Ordered { items: Vec::new(), index: HashMap::new() }
    }

    /// Sets `name`; returns its position.
    fn set(&mut self, name: String, item: T) -> usize {
        match self.index.get(&name) {
            Some(&i) => {
                self.items[i] = item;
                i
            }
            None => {
                self.items.push(item);
                self.index.insert(name, self.items.len() - 1);
                self.items.len() - 1
            }
        }
    }
}

/// A result's `metadata`: a mapping, or YAML text of one (XML-RPC).
fn metadata_of(result: &Map<String, Value>) -> Value {
    match result.get("metadata") {
        Some(Value::String(text)) => yaml_value(text).unwrap_or_else(|_| Value::String(text.clone())),
        Some(other) => other.clone(),
        None => Value::Null,
    }
}

/// The job's results as SQUAD makes them. `raw_log` is the whole LAVA log
/// (test logs are cut out of it in one pass, and it becomes the run's log).
pub fn parse(
    details: &JobDetails,
    results: &[Value],
    raw_log: &[u8],
    settings: &ParseSettings,
    job_url: &str,
) -> Result<JobResults, BackendError> {
    let definition = yaml_value(&details.definition)
        .map_err(|e| BackendError::Permanent(format!("LAVA's copy of the job definition is not valid YAML: {e}")))?;
    let name = match definition.get("job_name") {
        Some(Value::String(s)) => Some(s.chars().take(255).collect::<String>()),
        Some(Value::Null) | None => None,
        Some(other) => Some(py_str(other).chars().take(255).collect()),
    };
    let mut metadata = match definition.get("metadata") {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    };
    // Our own key is bookkeeping, not the job's metadata.
    metadata.remove(SUBMISSION_KEY);
    let suite_versions: Map<String, Value> = metadata
        .iter()
        .filter(|(k, _)| k.ends_with("__version"))
        .map(|(k, v)| (k.replace("__version", ""), v.clone()))
        .collect();
    if !suite_versions.is_empty() {
        metadata.insert("suite_versions".into(), Value::Object(suite_versions));
    }

    let mut tests: Ordered<LabTest> = Ordered::new();
    let mut metrics: Ordered<LabMetric> = Ordered::new();
    // Test position → the log lines it wants.
    let mut wanted: HashMap<usize, LineRange> = HashMap::new();
    let mut completed = true;
    let mut failure = None;
    let mut resubmit = false;
    let mut artifacts = Vec::new();

    if details.status == "Canceled" {
        // A canceled job's results are discarded.
        completed = false;
    } else {
        for (position, result) in results.iter().enumerate() {
            let Some(result) = result.as_object() else {
                return Err(BackendError::Permanent(format!("LAVA's result #{position} is not a mapping: {result}")));
            };
            let suite = result.get("suite").map(py_str).unwrap_or_default();
            let case = result.get("name").map(py_str).unwrap_or_default();
            let outcome = result.get("result").map(py_str).unwrap_or_else(|| "None".into());
            let bad = |e: String| BackendError::Permanent(format!("LAVA's result {suite}/{case}: {e}"));
            if settings.handle_suite || suite != "lava" {
                // SQUAD drops everything up to the first `_` (LAVA's `N_`
                // prefix, but also a real part of a suite named `a_b`).
                let short = suite.split_once('_').map_or(suite.as_str(), |(_, rest)| rest);
                let full = format!("{short}/{case}");
                let mut test_log = None;
                let mut range = None;
                if let Some(start) = result.get("log_start_line") {
                    let start_text = match start {
                        Value::Null => "None".to_string(),
                        other => py_str(other),
                    };
                    let url = format!("{job_url}#L{start_text}");
                    test_log = Some(format!("Testcase log: <a href='{url}'>{url}</a>\n"));
                    let end = result.get("log_end_line");
                    if !start.is_null() && end.is_some_and(|e| !e.is_null()) {
                        if let (Ok(start), Ok(end)) = (line_number(Some(start)), line_number(end)) {
                            range = LineRange::new(start, end);
                        }
                    }
                }
                match measurement(result).map_err(bad)? {
                    None => {
                        let at =
                            tests.set(full.clone(), LabTest { name: full, result: outcome.clone(), log: test_log });
                        match range {
                            Some(range) => wanted.insert(at, range),
                            None => wanted.remove(&at),
                        };
                    }
                    Some(value) => {
                        metrics.set(
                            full.clone(),
                            LabMetric { name: full.clone(), values: vec![value], unit: unit(result) },
                        );
                        if settings.clone_measurements {
                            let at =
                                tests.set(full.clone(), LabTest { name: full, result: outcome.clone(), log: None });
                            wanted.remove(&at);
                        }
                    }
                }
            } else if case.contains("login-action") && settings.handle_boot {
                // An artificial boot test per job, named after the device type.
                let boot = format!("boot-{}", name.as_deref().unwrap_or("None"));
                let device_type = definition.get("device_type").map_or_else(|| "None".into(), py_str);
                let mut test_name = format!("{boot}/{device_type}");
                if let Some(testsuite) = metadata.get("testsuite") {
                    test_name = format!("{test_name}-{}", py_str(testsuite));
                }
                let at = tests.set(test_name.clone(), LabTest { name: test_name, result: outcome.clone(), log: None });
                wanted.remove(&at);
                if let Some(value) = measurement(result).map_err(bad)? {
                    let time_name = format!("{boot}/time-{device_type}");
                    metrics
                        .set(time_name.clone(), LabMetric { name: time_name, values: vec![value], unit: unit(result) });
                }
            }

            if case == "test-attachment" {
                let metadata = metadata_of(result);
                if let Some(url) = metadata.get("reference").filter(|r| !r.is_null()) {
                    artifacts.push(LabArtifact { suite: suite.clone(), result: outcome.clone(), url: py_str(url) });
                }
            }

            if suite == "lava" && case == "job" && outcome == "fail" {
                let job_metadata = metadata_of(result);
                failure = Some(py_str(&job_metadata));
                let error_type = job_metadata.get("error_type").and_then(Value::as_str);
                if matches!(error_type, Some("Infrastructure" | "Job" | "Lava")) && !settings.work_around_infra_errors {
                    completed = false;
                }
                if matches!(error_type, Some("Infrastructure" | "Job" | "Test")) {
                    let message = job_metadata.get("error_msg").map(py_str).filter(|m| !m.is_empty());
                    if let Some(message) = message {
                        if settings.infra_error_messages.iter().any(|re| re.is_match(&message)) {
                            resubmit = true;
                        }
                    }
                }
            }
        }
    }

    let mut tests = tests.items;
    if !wanted.is_empty() {
        let mut logs: Vec<(usize, String)> =
            wanted.keys().map(|&at| (at, tests[at].log.take().unwrap_or_default())).collect();
        let mut requests: Vec<(LineRange, &mut String)> =
            logs.iter_mut().map(|(at, text)| (wanted[at], text)).collect();
        log::append_lines(raw_log, &mut requests);
        for (at, text) in logs {
            tests[at].log = Some(text);
        }
    }

    Ok(JobResults {
        status: details.status.clone(),
        completed,
        name,
        started_at: details.started_at,
        ended_at: details.ended_at,
        metadata,
        tests,
        metrics: metrics.items,
        log: Some(log::device_output(raw_log).into_bytes()),
        raw: Vec::new(),
        failure,
        resubmit,
        artifacts,
        ..JobResults::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::python::py_repr;

    #[test]
    fn python_reprs() {
        let v: Value = serde_json::from_str(r#"{"error_type": "Infrastructure", "error_msg": "it's \"bad\"", "n": 1, "f": 2.0, "x": null, "l": [true]}"#).unwrap();
        assert_eq!(
            py_repr(&v),
            r#"{'error_type': 'Infrastructure', 'error_msg': 'it\'s "bad"', 'n': 1, 'f': 2.0, 'x': None, 'l': [True]}"#
        );
        assert_eq!(py_repr(&Value::from("it's")), "\"it's\"");
    }

    #[test]
    fn dates() {
        assert!(parse_date("2020-11-13T10:23:41.265697Z").is_some());
        assert!(parse_date("20201113T10:23:41").is_some());
        assert!(parse_date("2020-04-30 13:39:18.398000+00:00").is_some());
        assert!(parse_date("abc").is_none());
    }
}
