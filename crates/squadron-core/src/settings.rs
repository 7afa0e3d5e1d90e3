//! Project and group settings: YAML mappings, as SQUAD stores them.

use serde_json::{Map, Value};

/// Parses a settings text into a mapping. Empty text is an empty mapping;
/// anything but a YAML mapping is an error.
pub fn parse_settings(text: &str) -> Result<Map<String, Value>, String> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_norway::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err("settings must be a mapping (key: value)".into()),
        Err(e) => Err(format!("settings are not valid YAML: {e}")),
    }
}

/// Python's truthiness of a value, which SQUAD applies to settings and
/// special keys (`""`, `0`, `[]`, `{}` and null are false).
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_mappings_only() {
        let s = parse_settings("CALLBACK_HEADERS:\n  X-Token: abc\nN: 3\n").unwrap();
        assert_eq!(s["CALLBACK_HEADERS"]["X-Token"], "abc");
        assert_eq!(s["N"], 3);
        assert!(parse_settings("").unwrap().is_empty());
        assert!(parse_settings("{}").unwrap().is_empty());
        assert!(parse_settings("- a\n- b").is_err());
        assert!(parse_settings("a: [").is_err());
    }
}
