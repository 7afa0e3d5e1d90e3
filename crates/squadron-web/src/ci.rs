//! SQUAD's native CI endpoints: `/api/submitjob`, `/api/watchjob`,
//! `/api/resubmit`, `/api/forceresubmit`, and squadron's `/api/cancel`.
//!
//! A request either commits the job together with the task that acts on it
//! (its submission or first fetch) or leaves no row behind: nothing is
//! created before every check passed.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use squadron_ci::jobs::{self, NewJob, Resubmitted};
use squadron_ci::{Backend, BackendError, BackendRecord};
use squadron_store::builds::build_and_environment_in;
use squadron_store::sql::Sql;

use crate::auth::{caller_in, native_project, native_user, ProjectAccess};
use crate::error::ApiError;
use crate::form::{read_form, Form, Keep};
use crate::native::check_slug;
use crate::rest::form_urlencoded;
use crate::AppState;

/// The native CI routes.
pub(crate) fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for (path, handler) in [
        ("/api/submitjob/{group}/{project}/{version}/{environment}", post(submit_job)),
        ("/api/watchjob/{group}/{project}/{version}/{environment}", post(watch_job)),
        ("/api/resubmit/{id}", post(resubmit)),
        ("/api/forceresubmit/{id}", post(force_resubmit)),
        ("/api/cancel/{id}", post(cancel)),
    ] {
        router = router.route(path, handler.clone()).route(&format!("{path}/"), handler);
    }
    router
}

/// The project of a job-submitting endpoint, for a caller who may submit
/// test jobs to it (SQUAD's `auth_privileged`).
async fn privileged(
    state: &AppState,
    headers: &HeaderMap,
    group: &str,
    project: &str,
) -> Result<ProjectAccess, ApiError> {
    let access = native_project(state, headers, group, project).await?;
    if !access.caller.can_submit_testjobs() {
        return Err(ApiError::forbidden("User needs permission to submit test jobs."));
    }
    Ok(access)
}

/// Reads the CI fields of a form (`definition` may be a file upload).
async fn read_job_form(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Form, ApiError> {
    let keep = |name: &str| match name {
        "backend" | "definition" | "testjob_id" => Keep::Text,
        _ => Keep::Skip,
    };
    read_form(&state.blobs, headers, body, state.limits(), &keep).await
}

/// The backend the form names, and its implementation.
async fn named_backend(state: &AppState, form: &Form) -> Result<(BackendRecord, Arc<dyn Backend>), ApiError> {
    let name = form.text("backend").ok_or_else(|| ApiError::bad_request("backend field is required"))?;
    let mut sql = Sql::new("SELECT * FROM backends WHERE name = ");
    sql.bind(name);
    let record: BackendRecord = state
        .store
        .fetch_optional(&sql)
        .await?
        .ok_or_else(|| ApiError::bad_request("requested backend does not exist"))?;
    let lab = state
        .backends
        .open(&record)
        .map_err(|e| ApiError::bad_request(format!("requested backend cannot be used: {e}")))?;
    Ok((record, lab))
}

/// `POST /api/submitjob/<group>/<project>/<version>/<environment>`:
/// creates a test job (and its build and environment if needed) and
/// enqueues its submission; answers 201 with the job's id.
async fn submit_job(
    State(state): State<AppState>,
    Path((group, project, version, environment)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, String), ApiError> {
    check_slug("build version", &version)?;
    check_slug("environment slug", &environment)?;
    let access = privileged(&state, &headers, &group, &project).await?;
    let form = read_job_form(&state, &headers, body).await?;
    let (backend, lab) = named_backend(&state, &form).await?;
    let mut disabled = Sql::new("SELECT expected_test_runs FROM environments WHERE project_id = ");
    disabled.bind(access.project.id).push(" AND slug = ").bind(environment.as_str());
    if let Some((Some(-1),)) = state.store.fetch_optional::<(Option<i64>,)>(&disabled).await? {
        return Err(ApiError::bad_request(format!(
            "environment '{environment}' is disabled and squad will not accept new submissions to it"
        )));
    }
    let definition = form.text("definition").ok_or_else(|| ApiError::bad_request("test job definition is required"))?;
    lab.check_definition(definition)
        .map_err(|e| ApiError::bad_request(format!("test job definition is not valid: {e}")))?;
    let mut tx = state.store.begin_write().await?;
    let (build_id, _) = build_and_environment_in(&mut tx, access.project.id, &version, &environment).await?;
    let job = NewJob {
        backend_id: backend.id,
        project_id: access.project.id,
        build_id,
        environment: &environment,
        definition: Some(definition),
        job_id: None,
        parent_job_id: None,
        resubmitted_count: 0,
    };
    let id = jobs::submit_new(&mut tx, &state.queue, &job).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, id.to_string()))
}

/// `POST /api/watchjob/<group>/<project>/<version>/<environment>[?delay_fetch]`:
/// follows a job someone else submitted to a lab (`testjob_id`, the lab's
/// id); its first fetch is enqueued with it unless `delay_fetch` is given.
/// Answers 201 with the job's id.
async fn watch_job(
    State(state): State<AppState>,
    Path((group, project, version, environment)): Path<(String, String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, String), ApiError> {
    check_slug("build version", &version)?;
    check_slug("environment slug", &environment)?;
    let access = privileged(&state, &headers, &group, &project).await?;
    let form = read_job_form(&state, &headers, body).await?;
    let (backend, lab) = named_backend(&state, &form).await?;
    let job_id = form.text("testjob_id").ok_or_else(|| ApiError::bad_request("testjob_id is required"))?;
    lab.check_job_id(job_id).map_err(|e| ApiError::bad_request(format!("testjob_id {job_id:?} is not valid: {e}")))?;
    let definition = match lab.job_definition(job_id).await {
        Ok(Some(definition)) if definition.trim().is_empty() => {
            return Err(ApiError::bad_request(format!("No job definition found for job {job_id}")))
        }
        Ok(definition) => definition,
        Err(BackendError::NotSupported { .. }) => None,
        Err(e) => return Err(ApiError::bad_request(format!("cannot get the definition of job {job_id}: {e}"))),
    };
    let fetch_now = !query.as_deref().map(form_urlencoded).unwrap_or_default().iter().any(|(k, _)| k == "delay_fetch");
    let mut tx = state.store.begin_write().await?;
    let (build_id, _) = build_and_environment_in(&mut tx, access.project.id, &version, &environment).await?;
    let job = NewJob {
        backend_id: backend.id,
        project_id: access.project.id,
        build_id,
        environment: &environment,
        definition: definition.as_deref(),
        job_id: Some(job_id),
        parent_job_id: None,
        resubmitted_count: 0,
    };
    let id = jobs::watch_new(&mut tx, &state.queue, &job, fetch_now).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, id.to_string()))
}

/// Checks that the caller may manage job `id` (SQUAD's resubmit endpoints:
/// 404 for an unknown job, 401 unless the caller may submit test jobs to
/// its project).
async fn authorize_job(state: &AppState, headers: &HeaderMap, id: i64) -> Result<(), ApiError> {
    let mut sql = Sql::new("SELECT p.group_id FROM testjobs j JOIN projects p ON p.id = j.target_id WHERE j.id = ");
    sql.bind(id);
    let (group_id,): (i64,) = state
        .store
        .fetch_optional(&sql)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("test job {id} not found")))?;
    let user = native_user(state, headers).await?;
    if !caller_in(state, user.as_ref(), group_id).await?.can_submit_testjobs() {
        return Err(ApiError::unauthorized("User needs permission to submit test jobs."));
    }
    Ok(())
}

async fn resubmit_job(state: &AppState, headers: &HeaderMap, id: i64, force: bool) -> Result<StatusCode, ApiError> {
    authorize_job(state, headers, id).await?;
    match jobs::resubmit(&state.store, &state.queue, id, force).await? {
        Resubmitted::Job(_) => Ok(StatusCode::CREATED),
        Resubmitted::NotAllowed => Err(ApiError::forbidden(format!("test job {id} cannot be resubmitted"))),
    }
}

/// `POST /api/resubmit/<id>`: resubmits a job that may be (`can_resubmit`);
/// 201, or 403 when it may not.
async fn resubmit(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    resubmit_job(&state, &headers, id, false).await
}

/// `POST /api/forceresubmit/<id>`: resubmits a job whatever its state; 201.
async fn force_resubmit(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    resubmit_job(&state, &headers, id, true).await
}

/// `POST /api/cancel/<id>`: cancels a job (at once if its lab does not have
/// it yet, else by asking the lab); 200, or 403 when the job is over.
async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize_job(&state, &headers, id).await?;
    if jobs::cancel(&state.store, &state.queue, id).await? {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::forbidden(format!("test job {id} cannot be canceled: it is over")))
    }
}
