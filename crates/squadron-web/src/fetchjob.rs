//! `POST /api/fetchjob/<group>/<project>/<version>/<environment>/<backend>`:
//! a lab pushing a job's state (SQUAD's "receiving callbacks"). No
//! authentication: the lab proves itself by its payload's signature, which
//! `squadron_ci::callback` checks before anything is stored.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use squadron_ci::backend::tuxsuite::callback::SIGNATURE_HEADER;
use squadron_ci::callback::{receive, Callback, CallbackError};

use crate::error::ApiError;
use crate::AppState;

/// Stores the pushed state on its job (created if new) and enqueues the
/// job's fetch; answers 201 with the job's id, 400 when the call is not
/// acceptable (nothing is stored then).
pub(crate) async fn fetch_job(
    State(state): State<AppState>,
    Path((group, project, version, environment, backend)): Path<(String, String, String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, String), ApiError> {
    let signature = match headers.get(SIGNATURE_HEADER).map(|v| v.to_str()) {
        Some(Ok(value)) => Some(value),
        Some(Err(_)) => return Err(ApiError::bad_request(format!("the {SIGNATURE_HEADER} header is not text"))),
        None => None,
    };
    let call = Callback {
        group: &group,
        project: &project,
        version: &version,
        environment: &environment,
        backend: &backend,
        signature,
        body: &body,
    };
    match receive(&state.store, &state.queue, &call).await {
        Ok(id) => Ok((StatusCode::CREATED, id.to_string())),
        Err(CallbackError::Invalid(message)) => Err(ApiError::bad_request(message)),
        Err(CallbackError::Ci(e)) => Err(ApiError::internal(&e)),
    }
}
