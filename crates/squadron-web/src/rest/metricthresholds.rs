//! `/api/metricthresholds/`: read by whoever may see the project; written
//! by admins of its group. A write makes the project's builds not yet
//! notified recompute their status (their metric regressions and fixes
//! depend on the thresholds).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use squadron_queue::{NewTask, StepTx};
use squadron_status::UpdateBuildStatus;
use squadron_store::sql::{row_update, Assignments, Sql, Value as SqlValue};

use super::environments::{may_write, ENVIRONMENT_FILTERS};
use super::filter::{field, relation, FilterSet, Filters, Kind, EXACT_IN, TEXT};
use super::page::{fetch, keyed_by_id, Paging};
use super::projects::PROJECT_FILTERS;
use super::{field_error, json, Input, Rest};
use crate::error::ApiError;
use crate::AppState;

/// SQUAD's `MetricThresholdFilter`.
static THRESHOLD_FILTERS: FilterSet = FilterSet {
    fields: &[field("name", "{p}name", Kind::Text, TEXT), field("id", "{p}id", Kind::Int, EXACT_IN)],
    relations: &[
        relation("project", "{p}project_id", "projects", &PROJECT_FILTERS),
        relation("environment", "{p}environment_id", "environments", &ENVIRONMENT_FILTERS),
    ],
    unsupported: &[],
};

/// Builds of the project whose status is recomputed after a write.
const RECOMPUTED_BUILDS: i64 = 100;

#[derive(sqlx::FromRow)]
struct ThresholdRow {
    id: i64,
    project_id: i64,
    environment_id: Option<i64>,
    name: String,
    value: Option<f64>,
    is_higher_better: bool,
}

keyed_by_id!(ThresholdRow);

const SELECT: &str =
    "SELECT t.id, t.project_id, t.environment_id, t.name, t.value, t.is_higher_better FROM metric_thresholds t";

fn render(rest: &Rest, t: &ThresholdRow) -> Value {
    let mut m = Map::new();
    m.insert("url".into(), json!(rest.api(&format!("metricthresholds/{}/", t.id))));
    m.insert("id".into(), json!(t.id));
    m.insert("project".into(), json!(rest.api(&format!("projects/{}/", t.project_id))));
    m.insert("environment".into(), json!(t.environment_id.map(|e| rest.api(&format!("environments/{e}/")))));
    m.insert("name".into(), json!(t.name));
    m.insert("value".into(), json!(t.value));
    m.insert("is_higher_better".into(), json!(t.is_higher_better));
    rest.trim(m)
}

async fn list(rest: Rest) -> Result<Json<Value>, ApiError> {
    let mut conditions = Sql::new(" WHERE TRUE");
    rest.visible(&mut conditions, "t.project_id");
    Filters { engine: rest.state.store.engine_name() }.apply(
        &THRESHOLD_FILTERS,
        "t.",
        &rest.params,
        &mut conditions,
    )?;
    let paging = Paging::LimitOffset { default: "t.id", fields: &[("id", "t.id"), ("name", "t.name")], search: &[] };
    let page = fetch::<ThresholdRow>(&rest, SELECT, conditions, "t.id", &paging).await?;
    Ok(Json(page.into_json(|t| render(&rest, t))))
}

async fn one(rest: &Rest, id: i64) -> Result<ThresholdRow, ApiError> {
    rest.fetch_visible(SELECT, "t.id", id, "t.project_id").await
}

async fn detail(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    Ok(Json(render(&rest, &one(&rest, id).await?)))
}

/// Runs `statement` and enqueues the status recomputation of the project's
/// builds not yet notified, in one transaction.
async fn write_and_recompute(rest: &Rest, project: i64, statement: &Sql) -> Result<(), ApiError> {
    let mut tx = rest.state.store.begin_write().await?;
    tx.execute(statement).await.map_err(|e| {
        if e.is_unique_violation() {
            field_error("name", "a threshold with this name exists for this project and environment")
        } else {
            e.into()
        }
    })?;
    let mut builds = Sql::new(
        "SELECT b.id FROM builds b JOIN build_status s ON s.build_id = b.id WHERE NOT s.notified AND b.project_id = ",
    );
    builds.bind(project).push(" ORDER BY b.datetime DESC LIMIT ").bind(RECOMPUTED_BUILDS);
    let builds: Vec<(i64,)> = tx.fetch_all(&builds).await?;
    let tasks: Vec<NewTask> = builds.into_iter().map(|(id,)| UpdateBuildStatus::rebaseline(id)).collect();
    rest.state.queue.enqueue_many(tx.conn(), &tasks).await.map_err(|e| ApiError::internal(&e))?;
    tx.commit().await?;
    Ok(())
}

/// Checks that `environment` (if any) belongs to `project`.
async fn check_environment(rest: &Rest, project: i64, environment: Option<i64>) -> Result<(), ApiError> {
    if let Some(environment) = environment {
        let mut sql = Sql::new("SELECT COUNT(*) FROM environments WHERE id = ");
        sql.bind(environment).push(" AND project_id = ").bind(project);
        if rest.state.store.fetch_count(&sql).await? == 0 {
            return Err(field_error("environment", "not an environment of the project"));
        }
    }
    Ok(())
}

/// SQUAD's check that a project-wide threshold and an environment's one do
/// not say the same thing twice: same name, value and direction, one for
/// the whole project and one for an environment (`except` is the
/// threshold being changed).
async fn check_collision(
    rest: &Rest,
    project: i64,
    environment: Option<i64>,
    name: &str,
    value: Option<f64>,
    higher: bool,
    except: Option<i64>,
) -> Result<(), ApiError> {
    let mut sql = Sql::new(
        "SELECT e.slug FROM metric_thresholds t LEFT JOIN environments e ON e.id = t.environment_id \
         WHERE t.project_id = ",
    );
    sql.bind(project).push(" AND t.name = ").bind(name).push(" AND t.is_higher_better = ").bind(higher);
    match value {
        Some(v) => sql.push(" AND t.value = ").bind(v),
        None => sql.push(" AND t.value IS NULL"),
    };
    sql.push(if environment.is_some() { " AND t.environment_id IS NULL" } else { " AND t.environment_id IS NOT NULL" });
    sql.push(" AND t.id <> ").bind(except.unwrap_or(0)).push(" LIMIT 1");
    match rest.state.store.fetch_optional::<(Option<String>,)>(&sql).await? {
        None => Ok(()),
        Some((Some(slug),)) => Err(ApiError::bad_request(format!(
            "Found a threshold for environment '{slug}' with the exact same attributes"
        ))),
        Some((None,)) => Err(ApiError::bad_request("Found a threshold that already applies to the whole project")),
    }
}

/// The optional `value` field: a number, or empty/null for none.
fn threshold_value(input: &Input) -> Result<Option<f64>, ApiError> {
    match input.text("value")? {
        Some(v) if !v.trim().is_empty() => {
            v.trim().parse::<f64>().map(Some).map_err(|_| field_error("value", "A valid number is required."))
        }
        _ => Ok(None),
    }
}

/// `POST`: creates the threshold, or updates the one with the same
/// project, environment and name (SQUAD's `update_or_create`).
async fn create(
    rest: Rest,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let input = Input::read(&state, &headers, body).await?;
    let project =
        input.link("project", "projects")?.ok_or_else(|| field_error("project", "This field is required."))?;
    let name =
        input.text("name")?.filter(|n| !n.is_empty()).ok_or_else(|| field_error("name", "This field is required."))?;
    may_write(&rest, project).await?;
    let environment = input.link("environment", "environments")?;
    check_environment(&rest, project, environment).await?;
    let value = threshold_value(&input)?;
    let higher = input.boolean("is_higher_better")?.unwrap_or(false);
    check_collision(&rest, project, environment, &name, value, higher, None).await?;
    let mut sql = Sql::new("UPDATE metric_thresholds SET value = ");
    sql.bind_optional(value).push(", is_higher_better = ").bind(higher).push(" WHERE project_id = ").bind(project);
    sql.push(" AND COALESCE(environment_id, 0) = ")
        .bind(environment.unwrap_or(0))
        .push(" AND name = ")
        .bind(name.as_str());
    let mut find = Sql::new("SELECT id FROM metric_thresholds WHERE project_id = ");
    find.bind(project).push(" AND COALESCE(environment_id, 0) = ").bind(environment.unwrap_or(0));
    find.push(" AND name = ").bind(name.as_str());
    if rest.state.store.fetch_optional::<(i64,)>(&find).await?.is_none() {
        sql = Sql::new(
            "INSERT INTO metric_thresholds (project_id, environment_id, name, value, is_higher_better) VALUES (",
        );
        sql.bind(project).push(", ").bind_optional(environment).push(", ").bind(name.as_str()).push(", ");
        sql.bind_optional(value).push(", ").bind(higher).push(")");
    }
    write_and_recompute(&rest, project, &sql).await?;
    let (id,): (i64,) = rest.state.store.fetch_optional(&find).await?.ok_or_else(super::not_found)?;
    Ok(json(StatusCode::CREATED, render(&rest, &one(&rest, id).await?)))
}

/// `PATCH`/`PUT`: name, value and direction.
async fn update(
    rest: Rest,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let threshold = one(&rest, id).await?;
    may_write(&rest, threshold.project_id).await?;
    let input = Input::read(&state, &headers, body).await?;
    let mut set: Assignments = Vec::new();
    let name = input.text("name")?.unwrap_or_else(|| threshold.name.clone());
    let value = if input.has("value") { threshold_value(&input)? } else { threshold.value };
    let higher = input.boolean("is_higher_better")?.unwrap_or(threshold.is_higher_better);
    let (project, environment) = (threshold.project_id, threshold.environment_id);
    check_collision(&rest, project, environment, &name, value, higher, Some(id)).await?;
    set.push(("name", Some(name.into())));
    set.push(("value", value.map(SqlValue::from)));
    set.push(("is_higher_better", Some(higher.into())));
    write_and_recompute(&rest, project, &row_update("metric_thresholds", id, &set)).await?;
    Ok(Json(render(&rest, &one(&rest, id).await?)))
}

async fn delete(rest: Rest, Path(id): Path<i64>) -> Result<StatusCode, ApiError> {
    let threshold = one(&rest, id).await?;
    may_write(&rest, threshold.project_id).await?;
    let mut sql = Sql::new("DELETE FROM metric_thresholds WHERE id = ");
    sql.bind(id);
    write_and_recompute(&rest, threshold.project_id, &sql).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/metricthresholds/", get(list).post(create))
        .route("/api/metricthresholds/{id}/", get(detail).patch(update).put(update).delete(delete))
}
