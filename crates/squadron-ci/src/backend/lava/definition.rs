//! Job definitions: the submission key squadron embeds in them.
//!
//! The key goes into the definition's `metadata:` mapping as
//! `squadron.submission: <key>`, so LAVA keeps it with the job and a search
//! of the jobs' definitions finds it. The line is inserted as text so the
//! definition keeps its comments and layout; the result is checked by
//! parsing it, and only if the text does not lend itself to that (a flow
//! mapping, a JSON definition, several documents) is the definition
//! re-written from its parsed form, which loses its comments.

use serde_json::{Map, Value};

use super::results::yaml_value;
use super::SUBMISSION_KEY;
use crate::backend::BackendError;

/// The definition with `key` in its metadata.
pub fn with_submission_key(text: &str, key: &str) -> Result<String, BackendError> {
    let invalid = |e: String| BackendError::Permanent(format!("the job definition is not valid YAML: {e}"));
    let mut expected = match yaml_value(text).map_err(invalid)? {
        Value::Object(map) => map,
        other => {
            return Err(BackendError::Permanent(format!(
                "the job definition must be a YAML mapping, not {}",
                kind(&other)
            )))
        }
    };
    match expected.entry("metadata").or_insert(Value::Null) {
        metadata @ Value::Null => *metadata = Value::Object(Map::new()),
        Value::Object(_) => {}
        other => {
            return Err(BackendError::Permanent(format!(
                "the job definition's metadata must be a mapping, not {}",
                kind(other)
            )))
        }
    }
    if let Some(Value::Object(metadata)) = expected.get_mut("metadata") {
        metadata.insert(SUBMISSION_KEY.into(), Value::from(key));
    }
    let expected = Value::Object(expected);
    let inserted = insert_line(text, key);
    if yaml_value(&inserted).is_ok_and(|v| v == expected) {
        return Ok(inserted);
    }
    tracing::warn!("the job definition's layout needs rewriting to add the submission key; its comments are lost");
    serde_norway::to_string(&expected)
        .map_err(|e| BackendError::Permanent(format!("cannot write the job definition with its submission key: {e}")))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// `text` with a `squadron.submission` line under its top-level
/// `metadata:` (indented like the next line), or a new `metadata:` block
/// at its end.
fn insert_line(text: &str, key: &str) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let is_metadata = |line: &str| {
        line.strip_prefix("metadata:").is_some_and(|rest| rest.trim().is_empty() || rest.trim_start().starts_with('#'))
    };
    if let Some(at) = lines.iter().position(|l| is_metadata(l)) {
        let indent = lines[at + 1..]
            .iter()
            .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|l| l.len() - l.trim_start_matches(' ').len())
            .filter(|&n| n > 0)
            .unwrap_or(2);
        let mut out = String::with_capacity(text.len() + 80);
        for line in &lines[..=at] {
            out.push_str(line);
        }
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("{}{SUBMISSION_KEY}: {key}\n", " ".repeat(indent)));
        for line in &lines[at + 1..] {
            out.push_str(line);
        }
        return out;
    }
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("metadata:\n  {SUBMISSION_KEY}: {key}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0b7c6c43-7d5c-4f7e-9c4f-0d6c1f0b2a11";

    #[test]
    fn inserted_under_existing_metadata_keeping_comments() {
        let text = "# a comment\njob_name: x\nmetadata:\n    # why\n    build: 1\nvisibility: public\n";
        let out = with_submission_key(text, KEY).unwrap();
        assert_eq!(
            out,
            format!("# a comment\njob_name: x\nmetadata:\n    squadron.submission: {KEY}\n    # why\n    build: 1\nvisibility: public\n")
        );
    }

    #[test]
    fn a_metadata_block_is_added_when_missing() {
        let out = with_submission_key("job_name: x\n# end", KEY).unwrap();
        assert_eq!(out, format!("job_name: x\n# end\nmetadata:\n  squadron.submission: {KEY}\n"));
        let out = with_submission_key("job_name: x\nmetadata:\n", KEY).unwrap();
        assert_eq!(out, format!("job_name: x\nmetadata:\n  squadron.submission: {KEY}\n"));
    }

    #[test]
    fn odd_layouts_are_rewritten() {
        let out = with_submission_key("{\"job_name\": \"x\", \"metadata\": {\"a\": \"b\"}}", KEY).unwrap();
        let parsed = yaml_value(&out).unwrap();
        assert_eq!(parsed["metadata"]["a"], "b");
        assert_eq!(parsed["metadata"][SUBMISSION_KEY], KEY);
        assert_eq!(parsed["job_name"], "x");
    }

    #[test]
    fn bad_definitions_are_permanent_errors() {
        assert!(
            matches!(with_submission_key("- a\n- b\n", KEY), Err(BackendError::Permanent(m)) if m.contains("mapping"))
        );
        assert!(
            matches!(with_submission_key("a: [", KEY), Err(BackendError::Permanent(m)) if m.contains("not valid YAML"))
        );
        assert!(
            matches!(with_submission_key("metadata: 3\n", KEY), Err(BackendError::Permanent(m)) if m.contains("metadata"))
        );
    }
}
