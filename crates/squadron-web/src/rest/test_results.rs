//! `/api/projects/<id>/test_results/?test_name=<suite>/<test>`: one test
//! across a project's builds, newest first, limit/offset paginated but
//! answered as a bare list (as SQUAD does): per build, every environment of
//! the project with the test's result there. A test a build has several
//! times in an environment shows the status most of them have (SQUAD's
//! test confidence) and the share that have it.

use std::collections::HashMap;

use axum::extract::Path;
use axum::Json;
use serde_json::{json, Value};
use squadron_core::names::parse_name;
use squadron_core::results::{resolve_duplicates, TestStatus};
use squadron_store::sql::{Sql, Value as SqlValue};

use super::builds::{self, BuildRow};
use super::environments::{self, EnvironmentRow};
use super::page::{fetch, Keyed, Paging};
use super::projects::{visible_project, ProjectRow};
use super::tests::{render_test, test_select, Shown, TestRow};
use super::Rest;
use crate::error::ApiError;

/// What SQUAD's `TestSerializer` gives for no test: the writable fields
/// with their initial values.
fn no_test() -> Value {
    json!({
        "short_name": "",
        "build": null,
        "environment": null,
        "test_run": null,
        "suite": null,
        "metadata": null,
        "result": null,
        "log": "",
        "has_known_issues": null,
        "known_issues": [],
    })
}

/// Percent-encodes a URL path segment as Django's `reverse` does (RFC 3986
/// sub-delimiters, `:` and `@` stay as they are).
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The test, or its duplicates resolved, as JSON: the test with the
/// highest id stands for them all.
fn render(rest: &Rest, duplicates: &[&TestRow]) -> Option<Value> {
    let last = duplicates.iter().max_by_key(|t| t.id)?;
    let shown = if duplicates.len() == 1 {
        Shown::own(last)
    } else {
        let statuses: Vec<TestStatus> = duplicates.iter().map(|t| Shown::own(t).status).collect();
        let (status, score) = resolve_duplicates(&statuses)?;
        Shown { status, confidence: Some(score) }
    };
    let mut out = Vec::new();
    render_test(rest, last, shown, &HashMap::new(), &["known_issues"], &mut out);
    Some(serde_json::from_slice(&out).expect("a rendered test is JSON"))
}

/// The UI page of a test's history in a build, as SQUAD links it.
fn test_url_path(project: &ProjectRow, version: &str, t: &TestRow) -> String {
    format!(
        "/{}/{}/build/{}/testrun/{}/suite/{}/test/{}/history/",
        path_segment(&project.group_slug),
        path_segment(&project.slug),
        path_segment(version),
        t.test_run_id,
        path_segment(&t.suite.replace('/', "$")),
        path_segment(&t.name),
    )
}

/// `GET /api/projects/<id>/test_results/?test_name=`.
pub(crate) async fn test_results(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let project = visible_project(&rest, id).await?;
    let full_name = rest
        .param("test_name")
        .ok_or_else(|| ApiError::bad_request("\"test_name\" parameter is mandatory. Ex: suitename/testname"))?;
    let (suite, name) = parse_name(full_name);
    let mut sql = Sql::new("SELECT id FROM suite_metadata WHERE kind = 'test' AND suite = ");
    sql.bind(suite).push(" AND name = ").bind(name);
    let (metadata,): (i64,) = rest
        .state
        .store
        .fetch_optional(&sql)
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("There is no test named \"{suite}/{name}\"")))?;
    let mut sql = Sql::new("SELECT COUNT(*) FROM suites WHERE project_id = ");
    sql.bind(id).push(" AND slug = ").bind(suite);
    if rest.state.store.fetch_count(&sql).await? == 0 {
        return Ok(Json(json!([])));
    }

    let mut conditions = Sql::new(" WHERE b.project_id = ");
    conditions.bind(id);
    let paging = Paging::LimitOffset { default: "b.datetime DESC", fields: &[], search: &[] };
    let page = fetch::<BuildRow>(&rest, &builds::select(), conditions, "b.id", &paging).await?;
    let mut sql = Sql::new(environments::SELECT);
    sql.push(" WHERE e.project_id = ").bind(id).push(" ORDER BY e.name IS NULL, e.name, e.slug");
    let environments: Vec<EnvironmentRow> = rest.state.store.fetch_all(&sql).await?;

    let mut tests: Vec<TestRow> = Vec::new();
    if !page.rows.is_empty() {
        let mut sql = Sql::new(&test_select());
        sql.push(" WHERE t.metadata_id = ").bind(metadata);
        sql.push(" AND t.test_run_id IN (SELECT r.id FROM testruns r WHERE r.visible AND r.build_id IN ");
        sql.bind_list(page.rows.iter().map(|b| SqlValue::Int(b.key()))).push(")");
        tests = rest.state.store.fetch_all(&sql).await?;
    }
    let mut by_build_environment: HashMap<(i64, i64), Vec<&TestRow>> = HashMap::new();
    for t in &tests {
        by_build_environment.entry((t.build_id, t.environment_id)).or_default().push(t);
    }

    let results: Vec<Value> = page
        .rows
        .iter()
        .map(|b| {
            let environments: Vec<Value> = environments
                .iter()
                .map(|e| {
                    let found = by_build_environment.get(&(b.key(), e.id)).map(Vec::as_slice).unwrap_or(&[]);
                    let mut entry = json!({
                        "test": render(&rest, found).unwrap_or_else(no_test),
                        "environment": environments::render(&rest, e),
                    });
                    if let Some(last) = found.iter().max_by_key(|t| t.id) {
                        entry["test_url_path"] = json!(test_url_path(&project, &b.version, last));
                    }
                    entry
                })
                .collect();
            json!({
                "build": builds::render(&rest, b),
                "build_url_path": format!(
                    "/{}/{}/build/{}/",
                    path_segment(&project.group_slug),
                    path_segment(&project.slug),
                    path_segment(&b.version)
                ),
                "environments": environments,
            })
        })
        .collect();
    Ok(Json(Value::Array(results)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded_as_django_does() {
        assert_eq!(path_segment("ltp$fs"), "ltp$fs");
        assert_eq!(path_segment("a b/c[1]"), "a%20b%2Fc%5B1%5D");
        assert_eq!(path_segment("v1.0-rc:2@x"), "v1.0-rc:2@x");
    }
}
