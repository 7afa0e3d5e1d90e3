//! SQUAD's native endpoints: `/api/submit`, `/api/createbuild`, `/api/version`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use squadron_ci::PostprocessRun;
use squadron_core::callbacks::{callback_from_form, project_callback_headers};
use squadron_core::names::is_valid_slug;
use squadron_core::submission::{metadata_from_form_fields, parse_metadata, SPECIAL_METADATA_FIELDS};
use squadron_queue::Queue;
use squadron_status::{on_submit, update_build_status, Updated};
use squadron_store::builds::PatchFields;
use squadron_store::ingest::{IngestError, IngestOptions, Submission};
use squadron_store::postprocess::RunPostprocess;
use squadron_store::sql::Sql;
use squadron_store::Store;
use squadron_store::StoreError;

use crate::auth::native_project;
use crate::error::ApiError;
use crate::form::{read_form, Keep, Limits};
use crate::AppState;

/// The largest text field (metadata, callback fields), as Django's
/// `DATA_UPLOAD_MAX_MEMORY_SIZE`.
const TEXT_FIELD_LIMIT: usize = 10 * 1024 * 1024;

/// squadron's own version (in the `X-Squadron-Version` header of
/// `/api/version/`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The SQUAD version whose API squadron implements, which `/api/version/`
/// answers: clients such as squad-client compare it with SQUAD versions.
pub const SQUAD_API_VERSION: &str = "1.98";

pub(crate) fn check_slug(what: &str, value: &str) -> Result<(), ApiError> {
    if is_valid_slug(value) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid {what} {value:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )))
    }
}

impl AppState {
    pub(crate) fn limits(&self) -> Limits {
        Limits { body: self.config.max_upload_bytes, text: TEXT_FIELD_LIMIT }
    }
}

/// Which submission fields are kept, and how.
fn submit_field(name: &str) -> Keep {
    match name {
        "tests" | "metrics" | "attachment" => Keep::Blob,
        "log" => Keep::BlobWithoutNul,
        "metadata" => Keep::Text,
        other if SPECIAL_METADATA_FIELDS.contains(&other) => Keep::Text,
        _ => Keep::Skip,
    }
}

/// `POST /api/submit/<group>/<project>/<build>/<environment>`: stores a
/// test run; answers 201 with its id.
pub(crate) async fn submit(
    State(state): State<AppState>,
    Path((group, project, build, environment)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, String), ApiError> {
    check_slug("build version", &build)?;
    check_slug("environment slug", &environment)?;
    let access = native_project(&state, &headers, &group, &project).await?;
    if !access.caller.can_submit_results() {
        return Err(ApiError::forbidden("User needs permission to submit results."));
    }
    let form = read_form(&state.blobs, &headers, body, state.limits(), &submit_field).await?;
    let metadata_text = match form.text("metadata") {
        Some(text) => Some(text.to_string()),
        None => metadata_from_form_fields(|key| form.text(key)),
    };
    let metadata =
        parse_metadata(metadata_text.as_deref().unwrap_or("")).map_err(|e| ApiError::bad_request(e.to_string()))?;
    // Attachments are keyed by file name: the last one of a name wins.
    let attachments: BTreeMap<&str, _> = form.files("attachment").collect();
    let submission = Submission {
        project_id: access.project.id,
        build_version: build,
        environment_slug: environment,
        metadata,
        tests_file: form.blob("tests").cloned(),
        metrics_file: form.blob("metrics").cloned(),
        log_file: form.blob("log").cloned(),
        attachments: attachments.into_iter().map(|(name, blob)| (name.to_string(), blob.clone())).collect(),
        completed: true,
    };
    // The ingestion runs in a task of its own: once the upload is complete,
    // a client that goes away does not interrupt it halfway.
    // The build's status is updated here, so that the answer comes once it
    // reflects the run, as SQUAD's clients expect. The run's publish also
    // enqueues that update, due after a grace period, to repair a status a
    // dying process left stale, and its plugins' tasks (the build is not
    // finished until they are done).
    let (store, blobs, queue) = (state.store.clone(), state.blobs.clone(), state.queue.clone());
    let plugins: Vec<String> =
        state.plugins.enabled(access.project.enabled_plugins()).iter().map(|p| p.name().to_string()).collect();
    let postprocess = (!plugins.is_empty()).then(|| RunPostprocess {
        queue: queue.clone(),
        plugins,
        task: Arc::new(|run, plugin| PostprocessRun::task(run, plugin, None)),
    });
    let options = IngestOptions { on_publish: Some(on_submit(queue.clone())), postprocess, ..Default::default() };
    let ingested = tokio::spawn(async move {
        let run = store.ingest(&blobs, &submission, options).await?;
        update_status_of_run(&store, &queue, run).await;
        Ok::<i64, IngestError>(run)
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    match ingested {
        Ok(id) => Ok((StatusCode::CREATED, id.to_string())),
        Err(e @ (IngestError::Input(_) | IngestError::DuplicateJobId(_))) => Err(ApiError::bad_request(e.to_string())),
        Err(IngestError::Swept) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, IngestError::Swept.to_string())),
        Err(IngestError::Store(e)) => Err(e.into()),
    }
}

/// Updates the status of the build of run `run`. A failure is only
/// logged: the update enqueued with the run repairs it.
async fn update_status_of_run(store: &Store, queue: &Queue, run: i64) {
    let mut sql = Sql::new("SELECT build_id FROM testruns WHERE id = ");
    sql.bind(run);
    let build = match store.fetch_optional::<(i64,)>(&sql).await {
        Ok(Some((build,))) => build,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(testrun = run, error = %e, "cannot find the build of a new run; its status task will update it");
            return;
        }
    };
    match update_build_status(store, queue, build).await {
        Ok(Updated::Written(_)) => {}
        Ok(Updated::Stale) => {
            tracing::info!(build, "build changed while its status was computed; its task will update it")
        }
        Err(e) => tracing::warn!(build, error = %e, "build status update failed; its task will retry"),
    }
}

/// `POST /api/createbuild/<group>/<project>/<version>`: creates a build
/// (with patch fields) or finds it, and attaches a callback; answers 201.
pub(crate) async fn create_build(
    State(state): State<AppState>,
    Path((group, project, version)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    check_slug("build version", &version)?;
    let access = native_project(&state, &headers, &group, &project).await?;
    if !access.caller.can_submit_results() {
        return Err(ApiError::forbidden("User needs permission to submit results."));
    }
    let form = read_form(&state.blobs, &headers, body, state.limits(), &|_| Keep::Text).await?;
    let project_headers = project_callback_headers(&access.project.project_settings);
    let callback = callback_from_form(|k| form.text(k), &project_headers).map_err(ApiError::bad_request)?;
    let given = |name: &str| form.text(name).filter(|v| !v.is_empty());
    let on_created = squadron_status::patches::on_created(state.queue.clone());
    let patch = PatchFields {
        source: given("patch_source"),
        baseline: given("patch_baseline"),
        id: given("patch_id"),
        on_created: Some(&on_created),
    };
    match state.store.create_build(access.project.id, &version, patch, callback.as_ref()).await {
        Ok(_) => Ok(StatusCode::CREATED),
        Err(StoreError::NotFound(what)) => Err(ApiError::bad_request(format!("unknown {what}"))),
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/version/`.
pub(crate) async fn version() -> ([(&'static str, &'static str); 1], &'static str) {
    ([("x-squadron-version", VERSION)], SQUAD_API_VERSION)
}
