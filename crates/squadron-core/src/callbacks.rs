//! Build callbacks (outgoing webhooks) as `/api/createbuild` receives them.

use serde_json::{Map, Value};

/// The only callback event: the build is finished.
pub const ON_BUILD_FINISHED: &str = "on_build_finished";

/// A validated callback, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackSpec {
    /// Where to call.
    pub url: String,
    /// `get` or `post`.
    pub method: String,
    /// When to call (`on_build_finished`).
    pub event: String,
    /// Headers as a JSON object text, or `None` when there are none.
    pub headers: Option<String>,
    /// The payload text, as given.
    pub payload: Option<String>,
    /// Whether the payload is sent as JSON (else as form fields).
    pub payload_is_json: bool,
    /// Whether the response is recorded.
    pub record_response: bool,
}

/// The headers a project adds to its callbacks: the `CALLBACK_HEADERS`
/// mapping of its settings (none when the settings do not parse).
pub fn project_callback_headers(project_settings: &str) -> Map<String, Value> {
    let settings = crate::settings::parse_settings(project_settings).unwrap_or_default();
    settings.get("CALLBACK_HEADERS").and_then(Value::as_object).cloned().unwrap_or_default()
}

/// Builds a callback from `callback_*` form fields, as SQUAD's
/// `create_callback`: no `callback_url` means no callback. Project headers
/// (`CALLBACK_HEADERS` setting) are merged under the request's.
pub fn callback_from_form<'a>(
    field: impl Fn(&str) -> Option<&'a str>,
    project_headers: &Map<String, Value>,
) -> Result<Option<CallbackSpec>, String> {
    let Some(url) = field("callback_url") else {
        return Ok(None);
    };
    if !is_http_url(url) {
        return Err(format!("callback_url {url:?} is not a valid http(s) URL"));
    }
    let given = |name: &str| field(name).filter(|v| !v.is_empty());
    let event = given("callback_event").unwrap_or(ON_BUILD_FINISHED);
    if event != ON_BUILD_FINISHED {
        return Err(format!("callback_event {event:?} is not valid; it should be one of [\"{ON_BUILD_FINISHED}\"]"));
    }
    let method = given("callback_method").unwrap_or("post");
    if method != "get" && method != "post" {
        return Err(format!("callback_method {method:?} is not valid; it should be one of [\"get\", \"post\"]"));
    }
    let mut headers = project_headers.clone();
    if let Some(text) = given("callback_headers") {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(h)) => headers.extend(h),
            _ => return Err(format!("callback_headers {text:?} is not a JSON object")),
        }
    }
    let payload = given("callback_payload").map(str::to_string);
    if let Some(text) = &payload {
        if serde_json::from_str::<Value>(text).is_err() {
            return Err(format!("callback_payload {text:?} is not valid JSON"));
        }
    }
    let flag = |name: &str, default: bool| given(name).map_or(default, |v| !matches!(v, "no" | "false" | "False"));
    Ok(Some(CallbackSpec {
        url: url.to_string(),
        method: method.to_string(),
        event: event.to_string(),
        headers: (!headers.is_empty()).then(|| Value::Object(headers).to_string()),
        payload,
        payload_is_json: flag("callback_payload_is_json", true),
        record_response: flag("callback_record_response", false),
    }))
}

fn is_http_url(url: &str) -> bool {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && !url.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form<'a>(fields: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |k| fields.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
    }

    #[test]
    fn no_url_no_callback() {
        assert_eq!(callback_from_form(form(&[]), &Map::new()), Ok(None));
    }

    #[test]
    fn defaults_and_merged_headers() {
        let mut project = Map::new();
        project.insert("A".into(), "project".into());
        project.insert("B".into(), "project".into());
        let fields = [
            ("callback_url", "https://ci.example.com/hook"),
            ("callback_headers", r#"{"B": "request"}"#),
            ("callback_record_response", "true"),
            ("callback_payload_is_json", "false"),
        ];
        let cb = callback_from_form(form(&fields), &project).unwrap().unwrap();
        assert_eq!(cb.method, "post");
        assert_eq!(cb.event, ON_BUILD_FINISHED);
        assert_eq!(cb.headers.as_deref(), Some(r#"{"A":"project","B":"request"}"#));
        assert!(cb.record_response && !cb.payload_is_json);
    }

    #[test]
    fn project_headers_from_settings() {
        let headers = project_callback_headers("CALLBACK_HEADERS:\n  X-Token: abc\n");
        assert_eq!(headers.get("X-Token"), Some(&Value::from("abc")));
        assert!(project_callback_headers("not: [valid").is_empty());
        assert!(project_callback_headers("").is_empty());
    }

    #[test]
    fn invalid_fields_are_named() {
        let err = |fields: &[(&str, &str)]| callback_from_form(form(fields), &Map::new()).unwrap_err();
        assert!(err(&[("callback_url", "not a url")]).contains("callback_url"));
        assert!(err(&[("callback_url", "http://x"), ("callback_method", "put")]).contains("callback_method"));
        assert!(err(&[("callback_url", "http://x"), ("callback_event", "later")]).contains("callback_event"));
        assert!(err(&[("callback_url", "http://x"), ("callback_headers", "[1]")]).contains("callback_headers"));
        assert!(err(&[("callback_url", "http://x"), ("callback_payload", "{")]).contains("callback_payload"));
    }
}
