//! The `metadata` field: a JSON object stored verbatim, some of whose keys
//! fill the test run's own columns.

use std::sync::LazyLock;

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone, Utc};
use regex::Regex;
use serde_json::{Map, Value};

use super::InputError;
use crate::settings::truthy;

/// Metadata keys that fill test run columns. When no `metadata` field is
/// submitted, these are read from plain form fields of the same names.
pub const SPECIAL_METADATA_FIELDS: [&str; 6] =
    ["build_url", "datetime", "job_id", "job_status", "job_url", "resubmit_url"];

/// The longest `job_id` accepted (SQUAD's column size).
const MAX_JOB_ID_LEN: usize = 128;

/// A test run's metadata, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunMetadata {
    /// The metadata document as submitted (stored and served verbatim).
    pub text: Option<String>,
    /// `job_id`, as a string; `None` when absent or empty (the caller
    /// generates one).
    pub job_id: Option<String>,
    /// `job_status`.
    pub job_status: Option<String>,
    /// `job_url`.
    pub job_url: Option<String>,
    /// `build_url`.
    pub build_url: Option<String>,
    /// `resubmit_url`.
    pub resubmit_url: Option<String>,
    /// `datetime`: when the run happened.
    pub datetime: Option<DateTime<Utc>>,
    /// `suite_versions`: suite slug → version.
    pub suite_versions: Vec<(String, String)>,
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Validates a `metadata` document. Empty text means no metadata.
pub fn parse_metadata(text: &str) -> Result<RunMetadata, InputError> {
    if text.is_empty() {
        return Ok(RunMetadata::default());
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| InputError::Json { field: "metadata", message: e.to_string() })?;
    let Value::Object(map) = value else {
        return Err(InputError::NotAnObject { field: "metadata", found: describe(&value) });
    };
    let mut meta = RunMetadata { text: Some(text.to_string()), ..RunMetadata::default() };
    if let Some(job_id) = map.get("job_id") {
        meta.job_id = validate_job_id(job_id)?;
    }
    let get = |key: &str| map.get(key).filter(|v| truthy(v)).map(as_text);
    meta.job_status = get("job_status");
    meta.job_url = get("job_url");
    meta.build_url = get("build_url");
    meta.resubmit_url = get("resubmit_url");
    if let Some(dt) = map.get("datetime").filter(|v| truthy(v)) {
        meta.datetime = Some(parse_datetime_value(dt)?);
    }
    meta.suite_versions = suite_versions(&map);
    Ok(meta)
}

fn describe(v: &Value) -> String {
    match v {
        Value::Array(_) => "a list".into(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

fn validate_job_id(v: &Value) -> Result<Option<String>, InputError> {
    let id = match v {
        Value::String(s) if s.contains('/') => {
            return Err(InputError::Metadata(format!("job_id {s:?} cannot contain the \"/\" character")))
        }
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        other => {
            return Err(InputError::Metadata(format!(
                "job_id should be an integer or a string, not {}",
                describe(other)
            )))
        }
    };
    if id.chars().count() > MAX_JOB_ID_LEN {
        return Err(InputError::Metadata(format!("job_id is longer than {MAX_JOB_ID_LEN} characters")));
    }
    Ok(truthy(v).then_some(id))
}

fn suite_versions(map: &Map<String, Value>) -> Vec<(String, String)> {
    match map.get("suite_versions") {
        Some(Value::Object(versions)) => {
            versions.iter().filter(|(_, v)| truthy(v)).map(|(suite, v)| (suite.clone(), as_text(v))).collect()
        }
        _ => Vec::new(),
    }
}

fn parse_datetime_value(v: &Value) -> Result<DateTime<Utc>, InputError> {
    let invalid = || {
        InputError::Metadata(format!(
            "datetime {} is not a valid date and time; use ISO 8601, e.g. 2024-01-31T12:00:00Z",
            v
        ))
    };
    match v {
        Value::String(s) => parse_datetime(s).ok_or_else(invalid),
        _ => Err(invalid()),
    }
}

/// Parses a date and time the way Django's `DateTimeField` does: ISO 8601
/// with `T` or a space, optional seconds and fraction, an optional `Z` or
/// `±HH[:MM]` offset (none means UTC), or a date alone (midnight UTC).
pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    static RE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:[.,](\d{1,6})\d{0,6})?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)?)?$",
        )
        .expect("valid regex")
    });
    let c = RE.captures(s.trim())?;
    let num = |i: usize| c.get(i).map_or(Some(0), |m| m.as_str().parse::<u32>().ok());
    let date = NaiveDate::from_ymd_opt(c[1].parse().ok()?, num(2)?, num(3)?)?;
    let micros = match c.get(7) {
        Some(m) => format!("{:0<6}", m.as_str()).parse::<u32>().ok()?,
        None => 0,
    };
    let naive = date.and_hms_micro_opt(num(4)?, num(5)?, num(6)?, micros)?;
    let offset_seconds = match c.get(8).map(|m| m.as_str()) {
        None | Some("Z") => 0,
        Some(tz) => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            let digits: String = tz[1..].chars().filter(char::is_ascii_digit).collect();
            let hours: i32 = digits[..2].parse().ok()?;
            let minutes: i32 = if digits.len() > 2 { digits[2..].parse().ok()? } else { 0 };
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let offset = FixedOffset::east_opt(offset_seconds)?;
    Some(offset.from_local_datetime(&naive).single()?.with_timezone(&Utc))
}

/// Builds the metadata document from plain form fields when no `metadata`
/// field was submitted: SQUAD reads the special keys from the form then.
/// Returns `None` when none of them was given.
pub fn metadata_from_form_fields<'a>(lookup: impl Fn(&str) -> Option<&'a str>) -> Option<String> {
    let mut map = Map::new();
    for key in SPECIAL_METADATA_FIELDS {
        if let Some(value) = lookup(key) {
            map.insert(key.to_string(), Value::String(value.to_string()));
        }
    }
    (!map.is_empty()).then(|| Value::Object(map).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_fields() {
        let m = parse_metadata(
            r#"{"job_id": 999, "job_status": "Complete", "job_url": "http://x/1", "datetime": "2016-09-01T00:00:00+00:00", "suite_versions": {"ltp": "2024", "x": ""}, "other": [1]}"#,
        )
        .unwrap();
        assert_eq!(m.job_id.as_deref(), Some("999"));
        assert_eq!(m.job_status.as_deref(), Some("Complete"));
        assert_eq!(m.job_url.as_deref(), Some("http://x/1"));
        assert_eq!(m.datetime.unwrap().to_rfc3339(), "2016-09-01T00:00:00+00:00");
        assert_eq!(m.suite_versions, vec![("ltp".to_string(), "2024".to_string())]);
        assert!(m.text.unwrap().contains("\"other\""));
    }

    #[test]
    fn falsy_job_id_means_generate_one() {
        assert_eq!(parse_metadata(r#"{"job_id": ""}"#).unwrap().job_id, None);
        assert_eq!(parse_metadata(r#"{"job_id": 0}"#).unwrap().job_id, None);
        assert_eq!(parse_metadata("").unwrap(), RunMetadata::default());
    }

    #[test]
    fn bad_metadata_is_named() {
        let msg = |s: &str| parse_metadata(s).unwrap_err().to_string();
        assert!(msg("{").starts_with("metadata is not valid JSON"));
        assert!(msg("[1]").contains("metadata must be a JSON object"));
        assert!(msg(r#"{"job_id": "a/b"}"#).contains("cannot contain"));
        assert!(msg(r#"{"job_id": 1.5}"#).contains("job_id should be an integer or a string"));
        assert!(msg(r#"{"job_id": null}"#).contains("job_id should be"));
        assert!(msg(r#"{"job_id": true}"#).contains("job_id should be"));
        assert!(msg(r#"{"datetime": "yesterday"}"#).contains("datetime \"yesterday\""));
        assert!(msg(r#"{"datetime": 5}"#).contains("datetime 5"));
        let long = format!(r#"{{"job_id": "{}"}}"#, "x".repeat(129));
        assert!(msg(&long).contains("longer than 128"));
    }

    #[test]
    fn datetimes_as_django_reads_them() {
        let p = |s: &str| parse_datetime(s).map(|d| d.to_rfc3339());
        assert_eq!(p("2016-09-01T00:00:00+00:00").unwrap(), "2016-09-01T00:00:00+00:00");
        assert_eq!(p("2016-09-01 10:30").unwrap(), "2016-09-01T10:30:00+00:00");
        assert_eq!(p("2016-09-01T10:30:05Z").unwrap(), "2016-09-01T10:30:05+00:00");
        assert_eq!(p("2016-09-01T10:30:05.5+02:00").unwrap(), "2016-09-01T08:30:05.500+00:00");
        assert_eq!(p("2016-09-01T10:30:05-0130").unwrap(), "2016-09-01T12:00:05+00:00");
        assert_eq!(p("2016-09-01").unwrap(), "2016-09-01T00:00:00+00:00");
        assert_eq!(p("2016-13-01"), None);
        assert_eq!(p("01/09/2016"), None);
    }

    #[test]
    fn form_fields_become_metadata() {
        let fields = [("job_id", "12"), ("unrelated", "x")];
        let lookup = |k: &str| fields.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        assert_eq!(metadata_from_form_fields(lookup).unwrap(), r#"{"job_id":"12"}"#);
        assert_eq!(metadata_from_form_fields(|_| None), None);
    }
}
