//! SQUAD's REST API (`/api/groups/`, `/api/builds/`, …): DRF's JSON shapes
//! with hyperlinked relations, its two pagination envelopes, `?fields=`,
//! django-rest-framework-filters' filters, and visibility by project on
//! every list.

mod annotations;
mod backends;
mod build_reports;
mod build_status;
mod builds;
mod callbacks;
mod compare;
mod context;
mod emailtemplates;
mod environments;
mod failures;
mod filter;
mod groups;
mod knownissues;
mod metricthresholds;
mod page;
mod patchsources;
mod projects;
mod reports;
mod root;
mod suites;
mod tasks;
mod test_results;
mod testjobs;
mod testjobs_summary;
mod testruns;
mod tests;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::form::{read_form, Keep, Limits};
use crate::AppState;
pub(crate) use context::{form_urlencoded, Rest};

/// Every REST route.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .merge(root::routes())
        .merge(groups::routes())
        .merge(projects::routes())
        .merge(builds::routes())
        .merge(testruns::routes())
        .merge(tests::routes())
        .merge(suites::routes())
        .merge(environments::routes())
        .merge(knownissues::routes())
        .merge(metricthresholds::routes())
        .merge(emailtemplates::routes())
        .merge(patchsources::routes())
        .merge(annotations::routes())
        .merge(reports::routes())
        .merge(tasks::routes())
        .merge(testjobs::routes())
        .merge(backends::routes())
}

/// A point in time as DRF writes it: ISO 8601 in UTC with `Z`, and
/// microseconds only when there are some.
pub(crate) fn time(t: &DateTime<Utc>) -> Value {
    let micros = t.timestamp_subsec_micros();
    let text = if micros == 0 {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        format!("{}.{micros:06}Z", t.format("%Y-%m-%dT%H:%M:%S"))
    };
    Value::String(text)
}

/// A JSON answer with a status.
pub(crate) fn json(status: StatusCode, value: Value) -> Response {
    (status, axum::Json(value)).into_response()
}

/// A plain answer with a content type (the files of a test run). Browsers
/// are told not to guess another type: the files come from labs and
/// submitters, and a log guessed to be HTML would run on this origin.
pub(crate) fn raw(content_type: &str, body: impl Into<Body>) -> Response {
    let content_type = header::HeaderValue::from_str(content_type)
        .unwrap_or(header::HeaderValue::from_static("application/octet-stream"));
    let nosniff = header::HeaderValue::from_static("nosniff");
    ([(header::CONTENT_TYPE, content_type), (header::X_CONTENT_TYPE_OPTIONS, nosniff)], body.into()).into_response()
}

/// Writes one JSON object straight into a buffer, key by key, leaving out
/// keys `?fields=` does not ask for. Used by the lists that can be millions
/// of rows long (tests, metrics), where building a `serde_json::Value` per
/// row costs more than the query.
pub(crate) struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    rest: &'a Rest,
    first: bool,
}

impl<'a> JsonObject<'a> {
    /// Starts an object.
    pub fn new(out: &'a mut Vec<u8>, rest: &'a Rest) -> Self {
        out.push(b'{');
        JsonObject { out, rest, first: true }
    }

    /// Writes `"key":` if the key is wanted; tells whether it is.
    fn key(&mut self, key: &str) -> bool {
        if !self.rest.wants(key) {
            return false;
        }
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.string(key);
        self.out.push(b':');
        true
    }

    fn string(&mut self, s: &str) {
        serde_json::to_writer(&mut *self.out, s).expect("writing to memory");
    }

    /// A value that serialises itself (numbers, booleans, options).
    pub fn value<T: serde::Serialize>(&mut self, key: &str, value: T) -> &mut Self {
        if self.key(key) {
            serde_json::to_writer(&mut *self.out, &value).expect("writing to memory");
        }
        self
    }

    /// An API link: `<base>/api/<collection>/<id>/<tail>`.
    pub fn link(&mut self, key: &str, collection: &str, id: i64, tail: &str) -> &mut Self {
        if self.key(key) {
            use std::io::Write;
            self.out.push(b'"');
            self.out.extend_from_slice(self.rest.escaped_base.as_bytes());
            write!(self.out, "/api/{collection}/{id}/{tail}\"").expect("writing to memory");
        }
        self
    }

    /// Ends the object.
    pub fn end(self) {
        self.out.push(b'}');
    }
}

/// 404 with DRF's message.
pub(crate) fn not_found() -> ApiError {
    ApiError::not_found("Not found.")
}

/// Turns a unique violation into DRF's 400 on `field`; other errors pass.
pub(crate) fn unique_field(
    field: &'static str,
    message: &'static str,
) -> impl Fn(squadron_store::StoreError) -> ApiError {
    move |e| if e.is_unique_violation() { field_error(field, message) } else { e.into() }
}

/// An endpoint SQUAD has that squadron does not answer yet.
pub(crate) fn not_implemented(what: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_IMPLEMENTED, format!("{what} is not implemented yet"))
}

/// The fields of a write request: a JSON object, or a form (repeated form
/// fields become lists).
pub(crate) struct Input(pub Map<String, Value>);

/// The largest write request accepted.
const INPUT_LIMIT: usize = 10 * 1024 * 1024;

impl Input {
    /// Reads a JSON or form body.
    pub async fn read(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Input, ApiError> {
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if content_type.starts_with("application/json") {
            let bytes = axum::body::to_bytes(body, INPUT_LIMIT)
                .await
                .map_err(|_| ApiError::too_large(format!("the request body is larger than {INPUT_LIMIT} bytes")))?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Input(Map::new()));
            }
            return match serde_json::from_slice(&bytes) {
                Ok(Value::Object(map)) => Ok(Input(map)),
                Ok(_) => Err(ApiError::bad_request("the request body must be a JSON object")),
                Err(e) => Err(ApiError::bad_request(format!("JSON parse error - {e}"))),
            };
        }
        let limits = Limits { body: INPUT_LIMIT as u64, text: INPUT_LIMIT };
        let form = read_form(&state.blobs, headers, body, limits, &|_| Keep::Text).await?;
        let mut map = Map::new();
        for field in form.texts {
            match map.get_mut(&field.name) {
                Some(Value::Array(values)) => values.push(Value::String(field.value)),
                Some(previous) => {
                    let first = previous.take();
                    *previous = Value::Array(vec![first, Value::String(field.value)]);
                }
                None => {
                    map.insert(field.name, Value::String(field.value));
                }
            }
        }
        Ok(Input(map))
    }

    /// Whether the field was given.
    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// A text field (`null` and absent are `None`).
    pub fn text(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Array(values)) => match values.last() {
                Some(Value::String(s)) => Ok(Some(s.clone())),
                _ => Err(field_error(name, "expected text")),
            },
            Some(other @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(other.to_string())),
            Some(_) => Err(field_error(name, "expected text")),
        }
    }

    /// A boolean field (`true`/`false`, and the spellings forms use).
    pub fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => match self.text(name)?.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("true" | "1" | "on" | "yes") => Ok(Some(true)),
                Some("false" | "0" | "off" | "no" | "") => Ok(Some(false)),
                _ => Err(field_error(name, "Must be a valid boolean.")),
            },
        }
    }

    /// An integer field; `""` and `null` are `None`.
    pub fn integer(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => {
                n.as_i64().map(Some).ok_or_else(|| field_error(name, "A valid integer is required."))
            }
            Some(_) => match self.text(name)? {
                Some(t) if t.trim().is_empty() => Ok(None),
                Some(t) => t.trim().parse().map(Some).map_err(|_| field_error(name, "A valid integer is required.")),
                None => Ok(None),
            },
        }
    }

    /// A list of texts (a JSON list, or repeated form fields).
    pub fn list(&self, name: &str) -> Result<Option<Vec<String>>, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(values)) => values
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(field_error(name, "expected a list of texts")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
            Some(_) => Err(field_error(name, "expected a list of texts")),
        }
    }

    /// A hyperlinked relation: `…/api/<collection>/<id>/`, or a bare id.
    pub fn link(&self, name: &str, collection: &str) -> Result<Option<i64>, ApiError> {
        let Some(text) = self.text(name)? else { return Ok(None) };
        parse_link(name, &text, collection).map(Some)
    }

    /// A list of hyperlinked relations (a JSON list, or repeated fields).
    pub fn links(&self, name: &str, collection: &str) -> Result<Option<Vec<i64>>, ApiError> {
        let Some(texts) = self.list(name)? else { return Ok(None) };
        texts.iter().map(|t| parse_link(name, t, collection)).collect::<Result<Vec<_>, _>>().map(Some)
    }
}

/// The id in `…/api/<collection>/<id>/` (or a bare id) given for `name`.
fn parse_link(name: &str, text: &str, collection: &str) -> Result<i64, ApiError> {
    let trimmed = text.trim().trim_end_matches('/');
    let id = match trimmed.rsplit_once('/') {
        Some((head, id)) if head.ends_with(&format!("/api/{collection}")) => id,
        Some(_) => return Err(field_error(name, &format!("Invalid hyperlink - expected …/api/{collection}/<id>/"))),
        None => trimmed,
    };
    id.parse().map_err(|_| field_error(name, "Invalid hyperlink - Object does not exist."))
}

/// A 400 naming a field, as DRF's `{"field": ["message"]}` says it.
pub(crate) fn field_error(name: &str, message: &str) -> ApiError {
    ApiError::bad_request(format!("{name}: {message}"))
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn drf_times() {
        let t = Utc.with_ymd_and_hms(2016, 9, 1, 0, 0, 0).unwrap();
        assert_eq!(time(&t), "2016-09-01T00:00:00Z");
        let t = t + chrono::Duration::microseconds(1500);
        assert_eq!(time(&t), "2016-09-01T00:00:00.001500Z");
    }

    #[test]
    fn input_fields() {
        let input = Input(serde_json::from_str(r#"{"a": "x", "b": ["p", "q"], "c": "true", "d": 5, "g": "http://h/api/groups/7/", "h": "9", "i": "http://h/api/projects/7/"}"#).unwrap());
        assert_eq!(input.text("a").unwrap().as_deref(), Some("x"));
        assert_eq!(input.list("b").unwrap(), Some(vec!["p".to_string(), "q".to_string()]));
        assert_eq!(input.list("a").unwrap(), Some(vec!["x".to_string()]));
        assert_eq!(input.boolean("c").unwrap(), Some(true));
        assert_eq!(input.integer("d").unwrap(), Some(5));
        assert_eq!(input.link("g", "groups").unwrap(), Some(7));
        assert_eq!(input.link("h", "groups").unwrap(), Some(9));
        assert!(input.link("i", "groups").is_err());
        assert!(input.boolean("a").is_err());
        assert_eq!(input.text("missing").unwrap(), None);
    }
}
