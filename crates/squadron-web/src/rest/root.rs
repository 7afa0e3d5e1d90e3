//! `/api/` (the list of collections) and `/api/schema/`.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value};

use super::Rest;
use crate::AppState;

/// The collections of the API, as SQUAD's router lists them.
const COLLECTIONS: &[&str] = &[
    "groups",
    "projects",
    "builds",
    "testjobs",
    "testruns",
    "tests",
    "metrics",
    "suites",
    "environments",
    "backends",
    "emailtemplates",
    "knownissues",
    "patchsources",
    "suitemetadata",
    "annotations",
    "metricthresholds",
    "reports",
    "statuses",
];

/// The nested endpoints, written as the patterns older squad-client
/// versions look for in the schema (`api/builds/<id>/status`).
const NESTED: &[&str] = &[
    "api/projects/<id>/builds",
    "api/projects/<id>/suites",
    "api/projects/<id>/tests",
    "api/projects/<id>/test_results",
    "api/projects/<id>/basic_settings",
    "api/projects/<id>/subscribe",
    "api/projects/<id>/unsubscribe",
    "api/projects/<id>/compare_builds",
    "api/builds/<id>/metadata",
    "api/builds/<id>/metadata_by_testrun",
    "api/builds/<id>/status",
    "api/builds/<id>/testruns",
    "api/builds/<id>/testjobs",
    "api/builds/<id>/testjobs_summary",
    "api/builds/<id>/cancel",
    "api/builds/<id>/tests",
    "api/builds/<id>/failures_with_confidence",
    "api/builds/<id>/metrics",
    "api/builds/<id>/email",
    "api/builds/<id>/report",
    "api/builds/<id>/callbacks",
    "api/builds/<id>/compare",
    "api/testruns/<id>/tests_file",
    "api/testruns/<id>/metrics_file",
    "api/testruns/<id>/metadata_file",
    "api/testruns/<id>/log_file",
    "api/testruns/<id>/tests",
    "api/testruns/<id>/metrics",
    "api/testruns/<id>/status",
    "api/testruns/<id>/attachments",
    "api/suites/<id>/tests",
    "api/testjobs/<id>/definition",
    "api/testjobs/<id>/resubmit",
    "api/testjobs/<id>/force_resubmit",
    "api/testjobs/<id>/cancel",
    "api/testjobs/<id>/fetch",
    "api/testjobs/<id>/resubmitted_jobs",
];

async fn root(rest: Rest) -> Json<Value> {
    let links: Map<String, Value> =
        COLLECTIONS.iter().map(|c| (c.to_string(), Value::String(rest.api(&format!("{c}/"))))).collect();
    Json(Value::Object(links))
}

async fn schema(rest: Rest) -> Json<Value> {
    let collections: Map<String, Value> = COLLECTIONS
        .iter()
        .map(|c| (c.to_string(), serde_json::json!({"list": format!("/api/{c}/"), "read": format!("/api/{c}/<id>/")})))
        .collect();
    Json(serde_json::json!({
        "title": "SQUAD API",
        "url": rest.api(""),
        "collections": collections,
        "endpoints": NESTED,
    }))
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/api/", get(root)).route("/api/schema/", get(schema)).route("/api/schema", get(schema))
}
