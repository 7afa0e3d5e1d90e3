//! `/api/builds/<id>/failures_with_confidence/`: the build's failing tests
//! (known issues left out), a page at a time, each with how often the same
//! test passed in the same environment over the project's previous
//! `build_confidence_count` builds (by id; `?releases_only=true` counts
//! releases only). Only the page's tests are looked up in history, through
//! the runs of those builds and the `(test_run_id, metadata_id)` index.

use std::collections::HashMap;

use axum::extract::Path;
use axum::response::Response;
use serde_json::{json, Value};
use squadron_core::names::join_name;
use squadron_store::sql::{Sql, Value as SqlValue};

use super::page::{fetch, Paging};
use super::tests::{relations, test_select, TestRow};
use super::{JsonObject, Rest};
use crate::error::ApiError;

#[derive(sqlx::FromRow)]
struct BuildRow {
    project_id: i64,
    build_confidence_count: i64,
}

/// How a test fared in earlier builds: SQUAD's `Test.Confidence`.
#[derive(sqlx::FromRow, Debug, Clone, Copy, PartialEq, Eq)]
struct History {
    metadata_id: i64,
    environment_id: i64,
    count: i64,
    passes: i64,
}

impl History {
    /// `{count, passes, score}`; the score is a percentage, `0` without
    /// history (an integer there, as SQUAD writes it).
    fn confidence(self) -> Value {
        let score = if self.count == 0 { json!(0) } else { json!(100.0 * (self.passes as f64 / self.count as f64)) };
        json!({"count": self.count, "passes": self.passes, "score": score})
    }
}

/// The histories of the page's tests, by (name, environment).
async fn histories(
    rest: &Rest,
    build_id: i64,
    build: &BuildRow,
    releases_only: bool,
    tests: &[TestRow],
) -> Result<HashMap<(i64, i64), History>, ApiError> {
    if tests.is_empty() {
        return Ok(HashMap::new());
    }
    let mut previous = Sql::new("SELECT id FROM builds WHERE project_id = ");
    previous.bind(build.project_id).push(" AND id < ").bind(build_id);
    if releases_only {
        previous.push(" AND is_release");
    }
    previous.push(" ORDER BY id DESC LIMIT ").bind(build.build_confidence_count);
    let mut sql = Sql::new(
        "SELECT h.metadata_id, h.environment_id, COUNT(*) AS count, \
         SUM(CASE WHEN h.result THEN 1 ELSE 0 END) AS passes \
         FROM testruns r JOIN tests h ON h.test_run_id = r.id WHERE r.visible AND r.build_id IN (",
    );
    sql.append(&previous).push(") AND r.environment_id IN ");
    sql.bind_list(tests.iter().map(|t| SqlValue::Int(t.environment_id)));
    sql.push(" AND h.metadata_id IN ").bind_list(tests.iter().map(|t| SqlValue::Int(t.metadata_id)));
    sql.push(" GROUP BY h.metadata_id, h.environment_id");
    let rows: Vec<History> = rest.state.store.fetch_all(&sql).await?;
    Ok(rows.into_iter().map(|h| ((h.metadata_id, h.environment_id), h)).collect())
}

/// A failure as SQUAD's `FailuresWithConfidenceSerializer` shows it: a
/// test without its link, status, result and known issues, with its
/// confidence.
fn render(rest: &Rest, t: &TestRow, history: Option<&History>, out: &mut Vec<u8>) {
    let history = history.copied().unwrap_or(History {
        metadata_id: t.metadata_id,
        environment_id: t.environment_id,
        count: 0,
        passes: 0,
    });
    let mut o = JsonObject::new(out, rest);
    o.value("id", t.id)
        .value("name", join_name(&t.suite, &t.name))
        .value("short_name", &t.name)
        .value("confidence", history.confidence());
    relations(&mut o, &[], t.build_id, t.environment_id, t.test_run_id, t.suite_id, t.metadata_id);
    o.value("log", &t.log);
    o.end();
}

/// `GET /api/builds/<id>/failures_with_confidence/`, limit/offset paginated.
pub(crate) async fn failures_with_confidence(rest: Rest, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let build: BuildRow = rest
        .fetch_visible(
            "SELECT b.project_id, p.build_confidence_count FROM builds b JOIN projects p ON p.id = b.project_id",
            "b.id",
            id,
            "b.project_id",
        )
        .await?;
    let releases_only = rest.flag("releases_only")?;
    let mut conditions = Sql::new(" WHERE t.test_run_id IN (SELECT id FROM testruns WHERE visible AND build_id = ");
    conditions.bind(id).push(") AND NOT t.result AND NOT COALESCE(t.has_known_issues, FALSE)");
    let paging = Paging::LimitOffset { default: "t.id", fields: &[], search: &[] };
    let page = fetch::<TestRow>(&rest, &test_select(), conditions, "t.id", &paging).await?;
    let histories = histories(&rest, id, &build, releases_only, &page.rows).await?;
    Ok(page.into_body(|t, out| render(&rest, t, histories.get(&(t.metadata_id, t.environment_id)), out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_scores() {
        let h = |count, passes| History { metadata_id: 1, environment_id: 1, count, passes }.confidence();
        assert_eq!(h(0, 0), json!({"count": 0, "passes": 0, "score": 0}));
        assert_eq!(h(4, 3), json!({"count": 4, "passes": 3, "score": 75.0}));
    }
}
