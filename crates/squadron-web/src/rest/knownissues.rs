//! `/api/knownissues/` (reading; writes come with build status).

use std::collections::HashMap;

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use squadron_store::sql::{Sql, Value as SqlValue};

use super::environments::ENVIRONMENT_FILTERS;
use super::filter::{field, FilterSet, Filters, Kind, Relation, EXACT_IN, TEXT};
use super::page::{fetch, Keyed, Paging};
use super::{not_found, not_implemented, Rest};
use crate::error::ApiError;
use crate::AppState;

/// SQUAD's `KnownIssueFilter`.
pub(crate) static KNOWN_ISSUE_FILTERS: FilterSet = FilterSet {
    fields: &[
        field("title", "{p}title", Kind::Text, TEXT),
        field("test_name", "{p}test_name", Kind::Text, TEXT),
        field("url", "{p}url", Kind::Text, TEXT),
        field("active", "{p}active", Kind::Bool, EXACT_IN),
        field("intermittent", "{p}intermittent", Kind::Bool, EXACT_IN),
        field("id", "{p}id", Kind::Int, EXACT_IN),
    ],
    relations: &[Relation {
        name: "environment",
        column: "{p}id",
        table: "environments",
        set: &ENVIRONMENT_FILTERS,
        through: Some("SELECT known_issue_id FROM known_issue_environments WHERE environment_id"),
    }],
    unsupported: &[],
};

#[derive(sqlx::FromRow)]
struct IssueRow {
    id: i64,
    title: String,
    test_name: String,
    url: Option<String>,
    notes: Option<String>,
    active: bool,
    intermittent: bool,
}

impl Keyed for IssueRow {
    fn key(&self) -> i64 {
        self.id
    }
}

const SELECT: &str = "SELECT k.id, k.title, k.test_name, k.url, k.notes, k.active, k.intermittent FROM known_issues k";

/// Known issues of a visible project's environment, or of none (global).
fn visible(rest: &Rest, sql: &mut Sql) {
    let mut environments = Sql::new(
        " AND (NOT EXISTS (SELECT 1 FROM known_issue_environments ke WHERE ke.known_issue_id = k.id) \
         OR k.id IN (SELECT ke.known_issue_id FROM known_issue_environments ke \
         JOIN environments e ON e.id = ke.environment_id WHERE TRUE",
    );
    rest.visible(&mut environments, "e.project_id");
    sql.append(&environments).push("))");
}

#[derive(sqlx::FromRow)]
struct IssueEnvironment {
    known_issue_id: i64,
    environment_id: i64,
}

async fn environments(rest: &Rest, issues: &[IssueRow]) -> Result<HashMap<i64, Vec<i64>>, ApiError> {
    let mut by_issue: HashMap<i64, Vec<i64>> = HashMap::new();
    if issues.is_empty() {
        return Ok(by_issue);
    }
    let mut sql =
        Sql::new("SELECT known_issue_id, environment_id FROM known_issue_environments WHERE known_issue_id IN ");
    sql.bind_list(issues.iter().map(|i| SqlValue::Int(i.id))).push(" ORDER BY environment_id");
    let rows: Vec<IssueEnvironment> = rest.state.store.fetch_all(&sql).await?;
    for row in rows {
        by_issue.entry(row.known_issue_id).or_default().push(row.environment_id);
    }
    Ok(by_issue)
}

fn render(rest: &Rest, k: &IssueRow, environments: &HashMap<i64, Vec<i64>>) -> Value {
    let links: Vec<String> =
        environments.get(&k.id).into_iter().flatten().map(|id| rest.api(&format!("environments/{id}/"))).collect();
    let mut m = Map::new();
    // As in SQUAD, `url` is the issue's own URL (its tracker), not a link here.
    m.insert("url".into(), json!(k.url));
    m.insert("id".into(), json!(k.id));
    m.insert("title".into(), json!(k.title));
    m.insert("test_name".into(), json!(k.test_name));
    m.insert("notes".into(), json!(k.notes));
    m.insert("active".into(), json!(k.active));
    m.insert("intermittent".into(), json!(k.intermittent));
    m.insert("environments".into(), json!(links));
    rest.trim(m)
}

async fn list(rest: Rest) -> Result<Json<Value>, ApiError> {
    let mut conditions = Sql::new(" WHERE TRUE");
    visible(&rest, &mut conditions);
    Filters { engine: rest.state.store.engine_name() }.apply(
        &KNOWN_ISSUE_FILTERS,
        "k.",
        &rest.params,
        &mut conditions,
    )?;
    let paging = Paging::LimitOffset { default: "k.id", fields: &[], search: &[] };
    let page = fetch::<IssueRow>(&rest, SELECT, conditions, "k.id", &paging).await?;
    let envs = environments(&rest, &page.rows).await?;
    Ok(Json(page.into_json(|k| render(&rest, k, &envs))))
}

async fn detail(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let mut sql = Sql::new(SELECT);
    sql.push(" WHERE k.id = ").bind(id);
    visible(&rest, &mut sql);
    let issue: IssueRow = rest.state.store.fetch_optional(&sql).await?.ok_or_else(not_found)?;
    let envs = environments(&rest, std::slice::from_ref(&issue)).await?;
    Ok(Json(render(&rest, &issue, &envs)))
}

pub(crate) fn routes() -> Router<AppState> {
    let pending = || async { not_implemented("changing known issues") };
    Router::new()
        .route("/api/knownissues/", get(list).post(pending))
        .route("/api/knownissues/{id}/", get(detail).patch(pending).put(pending).delete(pending))
}
