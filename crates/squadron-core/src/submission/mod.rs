//! The formats of SQUAD's submission API (`POST /api/submit/…`): the
//! `tests`, `metrics` and `metadata` fields.
//!
//! Tests and metrics are parsed from a reader, one entry at a time, and
//! handed to a sink, so a file of a million tests is never held in memory.

mod metadata;
mod metrics;
mod nonfinite;
mod tests;

use std::fmt;

pub use metadata::{metadata_from_form_fields, parse_datetime, parse_metadata, RunMetadata, SPECIAL_METADATA_FIELDS};
pub use metrics::{parse_metrics, SubmittedMetric};
pub use tests::{parse_tests, SubmittedTest};

/// What is wrong with a submitted field. The message names the field and,
/// where there is one, the offending test, metric or value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    /// The field is not well-formed JSON.
    #[error("{field} is not valid JSON: {message}")]
    Json {
        /// `tests`, `metrics` or `metadata`.
        field: &'static str,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The field is JSON but not an object.
    #[error("{field} must be a JSON object ({{}}), not {found}")]
    NotAnObject {
        /// `tests`, `metrics` or `metadata`.
        field: &'static str,
        /// What was found instead.
        found: String,
    },
    /// A test's value is neither a result string nor an object.
    #[error(
        "tests: the result of test {name:?} must be a string or an object with \"result\" and \"log\", not {found}"
    )]
    InvalidTestValue {
        /// The full test name.
        name: String,
        /// What was found instead.
        found: String,
    },
    /// A metric's value is not a number or a list of numbers.
    #[error("metrics: value {found} of metric {name:?} is not valid; only numbers or lists of numbers are accepted")]
    InvalidMetricValue {
        /// The full metric name.
        name: String,
        /// The offending value.
        found: String,
    },
    /// A metadata value is invalid.
    #[error("metadata: {0}")]
    Metadata(String),
    /// The sink asked to stop.
    #[error("parsing was stopped by its consumer")]
    Aborted,
}

/// Describes a JSON value's kind for error messages.
pub(crate) struct Unexpected<'a>(pub serde::de::Unexpected<'a>);

impl fmt::Display for Unexpected<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use serde::de::Unexpected as U;
        match self.0 {
            U::Bool(b) => write!(f, "{b}"),
            U::Unsigned(n) => write!(f, "{n}"),
            U::Signed(n) => write!(f, "{n}"),
            U::Float(x) => write!(f, "{x}"),
            U::Str(s) => write!(f, "{s:?}"),
            U::Unit | U::Option => write!(f, "null"),
            U::Seq => write!(f, "a list"),
            U::Map => write!(f, "an object"),
            other => write!(f, "{other}"),
        }
    }
}

/// Runs a streaming top-level-object parse and turns serde's error into an
/// [`InputError`], preferring the precise error a visitor recorded.
pub(crate) fn finish_parse<T>(
    field: &'static str,
    outcome: Result<T, serde_json::Error>,
    recorded: Option<InputError>,
) -> Result<T, InputError> {
    if let Some(err) = recorded {
        return Err(err);
    }
    outcome.map_err(|e| InputError::Json { field, message: e.to_string() })
}
