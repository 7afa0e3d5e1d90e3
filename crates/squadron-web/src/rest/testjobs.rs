//! `/api/testjobs/` (with SQUAD's actions: `definition/`, `resubmit/`,
//! `force_resubmit/`, `cancel/`, `fetch/`, `resubmitted_jobs/`),
//! `/api/builds/<id>/testjobs/` and `/api/builds/<id>/cancel/`.
//!
//! Jobs are seen by those who may see their project; the actions need the
//! privileged role in the project's group.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::Path;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use squadron_ci::jobs::{self, show_definition, Resubmitted};
use squadron_ci::{Backend, BackendRecord, TestJob};
use squadron_store::sql::{Sql, Value as SqlValue};

use super::backends::BACKEND_FILTERS;
use super::builds::{check_visible, BUILD_FILTERS};
use super::filter::{field, relation, FilterSet, Filters, Kind, Lookup, EXACT_IN, TEXT};
use super::page::{fetch, id_cursor, Keyed, Paging};
use super::projects::PROJECT_FILTERS;
use super::testruns::TESTRUN_FILTERS;
use super::{not_implemented, raw, time, Rest};
use crate::error::ApiError;
use crate::AppState;

/// Lookups of SQUAD's time filters on test jobs.
const TIMES: &[Lookup] = &[Lookup::Exact, Lookup::In, Lookup::Lt, Lookup::Gt, Lookup::Lte, Lookup::Gte];

/// SQUAD's `TestJobFilter`.
static TESTJOB_FILTERS: FilterSet = FilterSet {
    fields: &[
        field("name", "{p}name", Kind::Text, TEXT),
        field("environment", "{p}environment", Kind::Text, TEXT),
        field("submitted", "{p}submitted", Kind::Bool, EXACT_IN),
        field("fetched", "{p}fetched", Kind::Bool, EXACT_IN),
        field("fetch_attempts", "{p}fetch_attempts", Kind::Int, EXACT_IN),
        field("last_fetch_attempt", "{p}last_fetch_attempt", Kind::Time, TIMES),
        field("created_at", "{p}created_at", Kind::Time, TIMES),
        field("failure", "{p}failure", Kind::Text, TEXT),
        field("can_resubmit", "{p}can_resubmit", Kind::Bool, EXACT_IN),
        field("resubmitted_count", "{p}resubmitted_count", Kind::Int, EXACT_IN),
        field("job_status", "{p}job_status", Kind::Text, TEXT),
        field("job_id", "{p}job_id", Kind::Text, TEXT),
        field("id", "{p}id", Kind::Int, EXACT_IN),
    ],
    relations: &[
        relation("testrun", "{p}testrun_id", "testruns", &TESTRUN_FILTERS),
        relation("target_build", "{p}target_build_id", "builds", &BUILD_FILTERS),
        relation("target", "{p}target_id", "projects", &PROJECT_FILTERS),
        relation("backend", "{p}backend_id", "backends", &BACKEND_FILTERS),
    ],
    unsupported: &[],
};

/// A job as listed: everything but its definition and pushed results
/// (SQUAD defers the definition too), and how many plugins are still
/// post-processing its results (SQUAD's `subtasks_count`).
#[derive(sqlx::FromRow)]
struct JobRow {
    #[sqlx(flatten)]
    job: TestJob,
    subtasks_count: i64,
}

impl Keyed for JobRow {
    fn key(&self) -> i64 {
        self.job.id
    }
}

const SELECT: &str = "SELECT j.id, j.backend_id, CAST(NULL AS TEXT) AS definition, j.name, j.target_id, \
    j.target_build_id, j.environment, j.created_at, j.submitted_at, j.fetched_at, j.started_at, j.ended_at, \
    j.last_fetch_attempt, j.submitted, j.fetched, j.fetch_attempts, j.failure, j.can_resubmit, j.resubmitted_count, \
    j.parent_job_id, j.job_id, j.job_status, j.testrun_id, j.submission_key, CAST(NULL AS TEXT) AS results_input, \
    p.project_settings, (SELECT COUNT(*) FROM pending_postprocess pp WHERE pp.testrun_id = j.testrun_id) \
    AS subtasks_count FROM testjobs j JOIN projects p ON p.id = j.target_id";

/// Each job's page in its lab (SQUAD's `external_url`), by job id. A
/// backend squadron cannot open gives none.
async fn external_urls(rest: &Rest, rows: &[JobRow]) -> Result<HashMap<i64, String>, ApiError> {
    let backend_ids: BTreeSet<i64> = rows.iter().filter(|r| r.job.job_id.is_some()).map(|r| r.job.backend_id).collect();
    if backend_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut sql = Sql::new("SELECT * FROM backends WHERE id IN ");
    sql.bind_list(backend_ids.into_iter().map(SqlValue::Int));
    let records: Vec<BackendRecord> = rest.state.store.fetch_all(&sql).await?;
    let labs: HashMap<i64, Arc<dyn Backend>> =
        records.iter().filter_map(|r| Some((r.id, rest.state.backends.open(r).ok()?))).collect();
    Ok(rows.iter().filter_map(|r| Some((r.job.id, labs.get(&r.job.backend_id)?.job_url(&r.job)?))).collect())
}

/// A job as SQUAD's `TestJobSerializer` shows it.
fn render(rest: &Rest, row: &JobRow, external_urls: &HashMap<i64, String>) -> Value {
    let j = &row.job;
    let link = |collection: &str, id: Option<i64>| json!(id.map(|id| rest.api(&format!("{collection}/{id}/"))));
    let when = |t: &Option<chrono::DateTime<chrono::Utc>>| t.as_ref().map_or(Value::Null, time);
    let mut m = Map::new();
    m.insert("url".into(), json!(rest.api(&format!("testjobs/{}/", j.id))));
    m.insert("id".into(), json!(j.id));
    m.insert("external_url".into(), json!(external_urls.get(&j.id)));
    m.insert("definition".into(), json!(rest.api(&format!("testjobs/{}/definition/", j.id))));
    m.insert("name".into(), json!(j.name));
    m.insert("environment".into(), json!(j.environment));
    m.insert("created_at".into(), time(&j.created_at));
    m.insert("submitted_at".into(), when(&j.submitted_at));
    m.insert("fetched_at".into(), when(&j.fetched_at));
    m.insert("started_at".into(), when(&j.started_at));
    m.insert("ended_at".into(), when(&j.ended_at));
    m.insert("submitted".into(), json!(j.submitted));
    m.insert("fetched".into(), json!(j.fetched));
    m.insert("fetch_attempts".into(), json!(j.fetch_attempts));
    m.insert("last_fetch_attempt".into(), when(&j.last_fetch_attempt));
    m.insert("failure".into(), json!(j.failure));
    m.insert("can_resubmit".into(), json!(j.can_resubmit));
    m.insert("resubmitted_count".into(), json!(j.resubmitted_count));
    m.insert("subtasks_count".into(), json!(row.subtasks_count));
    m.insert("job_id".into(), json!(j.job_id));
    m.insert("job_status".into(), json!(j.job_status));
    m.insert("backend".into(), link("backends", Some(j.backend_id)));
    m.insert("testrun".into(), link("testruns", j.testrun_id));
    m.insert("target".into(), link("projects", Some(j.target_id)));
    m.insert("target_build".into(), link("builds", j.target_build_id));
    m.insert("parent_job".into(), link("testjobs", j.parent_job_id));
    rest.trim(m)
}

async fn list_where(rest: &Rest, mut conditions: Sql, paging: &Paging) -> Result<Json<Value>, ApiError> {
    rest.visible(&mut conditions, "j.target_id");
    Filters { engine: rest.state.store.engine_name() }.apply(&TESTJOB_FILTERS, "j.", &rest.params, &mut conditions)?;
    let page = fetch::<JobRow>(rest, SELECT, conditions, "j.id", paging).await?;
    let urls = external_urls(rest, &page.rows).await?;
    Ok(Json(page.into_json(|r| render(rest, r, &urls))))
}

async fn list(rest: Rest) -> Result<Json<Value>, ApiError> {
    list_where(&rest, Sql::new(" WHERE TRUE"), &id_cursor(&rest, "test jobs")?).await
}

/// `/api/builds/<id>/testjobs/`: newest first, limit/offset.
pub(crate) async fn build_testjobs(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    check_visible(&rest, id).await?;
    let mut conditions = Sql::new(" WHERE j.target_build_id = ");
    conditions.bind(id);
    list_where(&rest, conditions, &Paging::LimitOffset { default: "j.id DESC", fields: &[], search: &[] }).await
}

/// `/api/testjobs/<id>/resubmitted_jobs/`: the jobs resubmitting this one.
async fn resubmitted_jobs(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    one(&rest, id).await?;
    let mut conditions = Sql::new(" WHERE j.parent_job_id = ");
    conditions.bind(id);
    list_where(&rest, conditions, &id_cursor(&rest, "test jobs")?).await
}

/// A job the caller may see.
async fn one(rest: &Rest, id: i64) -> Result<JobRow, ApiError> {
    rest.fetch_visible(SELECT, "j.id", id, "j.target_id").await
}

async fn detail(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let row = one(&rest, id).await?;
    let urls = external_urls(&rest, std::slice::from_ref(&row)).await?;
    Ok(Json(render(&rest, &row, &urls)))
}

/// `/api/testjobs/<id>/definition/`: the definition as text, its
/// `secrets` masked.
async fn definition(rest: Rest, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let (text,): (Option<String>,) =
        rest.fetch_visible("SELECT j.definition FROM testjobs j", "j.id", id, "j.target_id").await?;
    Ok(raw("text/plain", show_definition(text.as_deref().unwrap_or("")).into_owned()))
}

/// A job the caller may see and manage; 404, 401 or 403 otherwise.
async fn manageable(rest: &Rest, id: i64) -> Result<JobRow, ApiError> {
    let row = one(rest, id).await?;
    let mut sql = Sql::new("SELECT group_id FROM projects WHERE id = ");
    sql.bind(row.job.target_id);
    let (group_id,): (i64,) = rest.state.store.fetch_optional(&sql).await?.ok_or_else(super::not_found)?;
    rest.require_privileged(group_id).await?;
    Ok(row)
}

/// `resubmit/` and `force_resubmit/`: always 200, with SQUAD's message and
/// the new job's URL (the job's own when nothing was resubmitted).
async fn resubmit_as(rest: &Rest, id: i64, force: bool) -> Result<Json<Value>, ApiError> {
    manageable(rest, id).await?;
    let (message, job) = match jobs::resubmit(&rest.state.store, &rest.state.queue, id, force).await? {
        Resubmitted::Job(new) => ("OK", new),
        Resubmitted::NotAllowed => ("Error resubmitting job.", id),
    };
    Ok(Json(json!({"message": message, "url": rest.api(&format!("testjobs/{job}/"))})))
}

async fn resubmit(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    resubmit_as(&rest, id, false).await
}

async fn force_resubmit(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    resubmit_as(&rest, id, true).await
}

/// `cancel/`: `{"job_id", "status"}` as they are after the request.
async fn cancel(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    manageable(&rest, id).await?;
    jobs::cancel(&rest.state.store, &rest.state.queue, id).await?;
    let job = one(&rest, id).await?.job;
    Ok(Json(json!({"job_id": job.job_id, "status": job.job_status})))
}

/// `fetch/`: fetches a job without results again now (the way out for a
/// job whose fetches were given up).
async fn fetch_again(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let row = manageable(&rest, id).await?;
    if !jobs::refetch(&rest.state.store, &rest.state.queue, id).await? {
        return Err(ApiError::bad_request(format!(
            "test job {id} cannot be fetched: it is not submitted yet, or it has its results already"
        )));
    }
    Ok(Json(json!({"job_id": row.job.job_id, "status": "Queued for fetching"})))
}

/// `/api/builds/<id>/cancel/`: cancels every job of the build that is not
/// over; `{"status": "canceling N jobs", "count": N}`.
pub(crate) async fn cancel_build(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let (group_id,): (i64,) = rest
        .fetch_visible(
            "SELECT p.group_id FROM builds b JOIN projects p ON p.id = b.project_id",
            "b.id",
            id,
            "b.project_id",
        )
        .await?;
    rest.require_privileged(group_id).await?;
    let mut sql = Sql::new("SELECT id FROM testjobs WHERE NOT fetched AND target_build_id = ");
    sql.bind(id).push(" ORDER BY id");
    let pending: Vec<(i64,)> = rest.state.store.fetch_all(&sql).await?;
    let mut count = 0;
    for (job,) in pending {
        if jobs::cancel(&rest.state.store, &rest.state.queue, job).await? {
            count += 1;
        }
    }
    Ok(Json(json!({"status": format!("canceling {count} jobs"), "count": count})))
}

pub(crate) fn routes() -> Router<AppState> {
    let pending = |what: &'static str| move || async move { not_implemented(what) };
    Router::new()
        .route("/api/testjobs/", get(list).post(pending("creating test jobs through REST (use /api/submitjob)")))
        .route(
            "/api/testjobs/{id}/",
            get(detail)
                .patch(pending("changing test jobs"))
                .put(pending("changing test jobs"))
                .delete(pending("deleting test jobs")),
        )
        .route("/api/testjobs/{id}/definition/", get(definition))
        .route("/api/testjobs/{id}/resubmit/", post(resubmit))
        .route("/api/testjobs/{id}/force_resubmit/", post(force_resubmit))
        .route("/api/testjobs/{id}/cancel/", post(cancel))
        .route("/api/testjobs/{id}/fetch/", post(fetch_again))
        .route("/api/testjobs/{id}/resubmitted_jobs/", get(resubmitted_jobs))
}
