//! `/api/knownissues/`: read by anyone who may see one of their
//! environments' projects (or anyone, for issues tied to none); created,
//! changed and deleted by superusers and by admins of every environment's
//! group. Unlike SQUAD, a change is also re-applied to the tests already
//! stored (by a queue task), and their builds' statuses recomputed.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use squadron_queue::StepTx;
use squadron_status::ReapplyKnownIssues;
use squadron_store::sql::{row_update, Assignments, Sql, Value as SqlValue};
use squadron_store::WriteTx;

use super::environments::ENVIRONMENT_FILTERS;
use super::filter::{field, FilterSet, Filters, Kind, Relation, EXACT_IN, TEXT};
use super::page::{fetch, keyed_by_id, Paging};
use super::{field_error, json, not_found, Input, Rest};
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

keyed_by_id!(IssueRow);

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

/// An issue the caller may see.
async fn detail_row(rest: &Rest, id: i64) -> Result<IssueRow, ApiError> {
    let mut sql = Sql::new(SELECT);
    sql.push(" WHERE k.id = ").bind(id);
    visible(rest, &mut sql);
    rest.state.store.fetch_optional(&sql).await?.ok_or_else(not_found)
}

async fn detail(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let issue = detail_row(&rest, id).await?;
    let envs = environments(&rest, std::slice::from_ref(&issue)).await?;
    Ok(Json(render(&rest, &issue, &envs)))
}

/// Checks that the caller may change known issues of `environments`:
/// superusers always; otherwise an admin of each one's group.
async fn may_change(rest: &Rest, environments: &[i64]) -> Result<(), ApiError> {
    match &rest.user {
        None => return Err(ApiError::unauthorized("Authentication credentials were not provided.")),
        Some(user) if user.is_superuser => return Ok(()),
        Some(_) if environments.is_empty() => {
            return Err(ApiError::forbidden("You do not have permission to perform this action."))
        }
        Some(_) => {}
    }
    for &environment in environments {
        let mut sql =
            Sql::new("SELECT p.group_id FROM environments e JOIN projects p ON p.id = e.project_id WHERE e.id = ");
        sql.bind(environment);
        let (group,): (i64,) = rest
            .state
            .store
            .fetch_optional(&sql)
            .await?
            .ok_or_else(|| field_error("environments", "Invalid hyperlink - Object does not exist."))?;
        rest.require_admin(group).await?;
    }
    Ok(())
}

/// The environments an issue is tied to now.
async fn current_environments(rest: &Rest, id: i64) -> Result<Vec<i64>, ApiError> {
    let mut sql = Sql::new("SELECT environment_id FROM known_issue_environments WHERE known_issue_id = ");
    sql.bind(id).push(" ORDER BY environment_id");
    let rows: Vec<(i64,)> = rest.state.store.fetch_all(&sql).await?;
    Ok(rows.into_iter().map(|(e,)| e).collect())
}

/// Writes the issue's fields given in `input` (all of them on create) and,
/// if given, replaces its environments; returns its id.
///
/// The same transaction enqueues the re-application of the known issues of
/// `affected` environments to their stored tests.
async fn write(
    rest: &Rest,
    id: Option<i64>,
    input: &Input,
    environments: Option<&[i64]>,
    affected: Vec<i64>,
) -> Result<i64, ApiError> {
    let mut tx = rest.state.store.begin_write().await?;
    let id = match id {
        None => {
            let mut sql =
                Sql::new("INSERT INTO known_issues (title, test_name, url, notes, active, intermittent) VALUES (");
            let required = |name: &str| -> Result<String, ApiError> {
                input.text(name)?.filter(|t| !t.is_empty()).ok_or_else(|| field_error(name, "This field is required."))
            };
            sql.bind(required("title")?).push(", ").bind(required("test_name")?).push(", ");
            for name in ["url", "notes"] {
                sql.bind_optional(input.text(name)?).push(", ");
            }
            sql.bind(input.boolean("active")?.unwrap_or(true))
                .push(", ")
                .bind(input.boolean("intermittent")?.unwrap_or(false))
                .push(") RETURNING id");
            tx.fetch_integer(&sql).await?
        }
        Some(id) => {
            let mut set: Assignments = Vec::new();
            for name in ["title", "test_name", "url", "notes"] {
                if let Some(t) = input.text(name)? {
                    set.push((name, Some(t.into())));
                }
            }
            for name in ["active", "intermittent"] {
                if let Some(b) = input.boolean(name)? {
                    set.push((name, Some(b.into())));
                }
            }
            if !set.is_empty() {
                tx.execute(&row_update("known_issues", id, &set)).await?;
            }
            id
        }
    };
    if let Some(environments) = environments {
        let mut clear = Sql::new("DELETE FROM known_issue_environments WHERE known_issue_id = ");
        clear.bind(id);
        tx.execute(&clear).await?;
        for &environment in environments {
            let mut link = Sql::new("INSERT INTO known_issue_environments (known_issue_id, environment_id) VALUES (");
            link.bind(id).push(", ").bind(environment).push(") ON CONFLICT DO NOTHING");
            tx.execute(&link).await?;
        }
    }
    reapply(rest, &mut tx, affected).await?;
    tx.commit().await?;
    Ok(id)
}

/// Enqueues, in `tx`, the re-application of the known issues of
/// `environments` to their stored tests.
async fn reapply(rest: &Rest, tx: &mut WriteTx, mut environments: Vec<i64>) -> Result<(), ApiError> {
    environments.sort_unstable();
    environments.dedup();
    if !environments.is_empty() {
        let task = ReapplyKnownIssues::task(environments);
        rest.state.queue.enqueue(tx.conn(), &task).await.map_err(|e| ApiError::internal(&e))?;
    }
    Ok(())
}

async fn create(
    rest: Rest,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let input = Input::read(&state, &headers, body).await?;
    let environments = input.links("environments", "environments")?.unwrap_or_default();
    may_change(&rest, &environments).await?;
    let id = write(&rest, None, &input, Some(&environments), environments.clone()).await?;
    let (status, body) = (StatusCode::CREATED, detail(rest, Path(id)).await?.0);
    Ok(json(status, body))
}

async fn update(
    rest: Rest,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    detail_row(&rest, id).await?;
    let current = current_environments(&rest, id).await?;
    may_change(&rest, &current).await?;
    let input = Input::read(&state, &headers, body).await?;
    let environments = input.links("environments", "environments")?;
    if let Some(new) = &environments {
        may_change(&rest, new).await?;
    }
    let mut affected = current;
    affected.extend(environments.iter().flatten());
    write(&rest, Some(id), &input, environments.as_deref(), affected).await?;
    detail(rest, Path(id)).await
}

async fn delete(rest: Rest, Path(id): Path<i64>) -> Result<StatusCode, ApiError> {
    detail_row(&rest, id).await?;
    let current = current_environments(&rest, id).await?;
    may_change(&rest, &current).await?;
    let mut tx = rest.state.store.begin_write().await?;
    let mut sql = Sql::new("DELETE FROM known_issues WHERE id = ");
    sql.bind(id);
    tx.execute(&sql).await?;
    reapply(&rest, &mut tx, current).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/knownissues/", get(list).post(create))
        .route("/api/knownissues/{id}/", get(detail).patch(update).put(update).delete(delete))
}
