//! Labs calling in (`/api/fetchjob/<group>/<project>/<version>/<env>/<backend>`,
//! SQUAD's "receiving callbacks"): the lab pushes a job's state, which is
//! stored on the job (created if need be) for its next fetch.
//!
//! Only TuxSuite calls in, so the checks and the reading of the payload
//! are TuxSuite's ([`crate::backend::tuxsuite::callback`]); a backend of
//! another type refuses callbacks. Everything is checked before anything
//! is written, and the job, its payload and its fetch commit together.

use squadron_core::names::is_valid_slug;
use squadron_queue::{Queue, RunAt};
use squadron_store::sql::Sql;
use squadron_store::{Store, WriteTx};

use crate::backend::tuxsuite::callback::{parse_payload, verify, PUBLIC_KEY_SETTING};
use crate::jobs::{self, NewJob};
use crate::CiError;

/// A lab's call.
#[derive(Debug, Clone, Copy)]
pub struct Callback<'a> {
    /// The group's slug.
    pub group: &'a str,
    /// The project's slug.
    pub project: &'a str,
    /// The build's version (created if new).
    pub version: &'a str,
    /// The environment, unless the payload names one.
    pub environment: &'a str,
    /// The backend's name.
    pub backend: &'a str,
    /// The signature header, if present.
    pub signature: Option<&'a str>,
    /// The raw body.
    pub body: &'a [u8],
}

/// Why a call was refused.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The call is not acceptable (SQUAD answers 400); nothing was stored.
    #[error("{0}")]
    Invalid(String),
    /// squadron failed.
    #[error(transparent)]
    Ci(#[from] CiError),
}

impl From<squadron_store::StoreError> for CallbackError {
    fn from(e: squadron_store::StoreError) -> Self {
        CallbackError::Ci(e.into())
    }
}

/// Checks and stores a lab's call; returns the id of the job it is about,
/// whose fetch is enqueued.
pub async fn receive(store: &Store, queue: &Queue, call: &Callback<'_>) -> Result<i64, CallbackError> {
    let invalid = |message: String| Err(CallbackError::Invalid(message));
    let mut sql = Sql::new("SELECT id, implementation_type FROM backends WHERE name = ");
    sql.bind(call.backend);
    let Some((backend_id, implementation)) = store.fetch_optional::<(i64, String)>(&sql).await? else {
        return invalid("requested backend does not exist".into());
    };
    if implementation != "tuxsuite" {
        return invalid("requested backend does not support callbacks".into());
    }
    let mut sql =
        Sql::new("SELECT p.id, p.project_settings FROM projects p JOIN groups g ON g.id = p.group_id WHERE g.slug = ");
    sql.bind(call.group).push(" AND p.slug = ").bind(call.project);
    let Some((project_id, settings)) = store.fetch_optional::<(i64, String)>(&sql).await? else {
        return invalid("group/project does not exist".into());
    };
    let settings = squadron_core::settings::parse_settings(&settings).unwrap_or_default();
    let public_key = settings.get(PUBLIC_KEY_SETTING).and_then(|v| v.as_str());
    if let Err(e) = verify(call.signature, public_key, call.body) {
        return invalid(format!("request is not valid for this backend: {e}"));
    }
    if !is_valid_slug(call.version) {
        return invalid(format!("invalid build version {:?}", call.version));
    }
    let payload = match parse_payload(call.body) {
        Ok(payload) => payload,
        Err(e) => return invalid(format!("malformed callback payload: {e}")),
    };
    let environment = payload.environment.as_deref().unwrap_or(call.environment);
    if !is_valid_slug(environment) {
        return invalid(format!("invalid environment slug {environment:?}"));
    }
    let job_id = payload.job_id.to_string();
    let mut tx = store.begin_write().await?;
    let build_id = build(&mut tx, project_id, call.version).await?;
    let mut find = Sql::new("SELECT id FROM testjobs WHERE target_build_id = ");
    find.bind(build_id).push(" AND environment = ").bind(environment);
    find.push(" AND job_id = ").bind(job_id.as_str()).push(" ORDER BY id LIMIT 1");
    let id = match tx.fetch_optional::<(i64,)>(&find).await? {
        Some((id,)) => id,
        None => {
            let new = NewJob {
                backend_id,
                project_id,
                build_id,
                environment,
                definition: None,
                job_id: Some(&job_id),
                parent_job_id: None,
                resubmitted_count: 0,
            };
            let id = jobs::insert(&mut tx, &new).await?;
            // One more pending job: the build is not finished any more.
            jobs::build_changed(&mut tx, queue, id).await?;
            id
        }
    };
    let mut store_input = Sql::new("UPDATE testjobs SET results_input = ");
    store_input.bind(payload.input).push(" WHERE id = ").bind(id);
    tx.execute(&store_input).await?;
    jobs::request_fetch(&mut tx, queue, id, RunAt::Now).await?;
    tx.commit().await?;
    tracing::info!(testjob = id, job_id, "lab callback received");
    Ok(id)
}

/// The id of `project`'s build `version`, created if new. The upsert
/// also locks the build's row until the transaction ends, so concurrent
/// callbacks for one build do not both create the same job.
async fn build(tx: &mut WriteTx, project: i64, version: &str) -> Result<i64, CallbackError> {
    let now = chrono::Utc::now();
    let mut sql = Sql::new("INSERT INTO builds (project_id, version, created_at, datetime) VALUES (");
    sql.bind(project).push(", ").bind(version).push(", ").bind(now).push(", ").bind(now);
    sql.push(") ON CONFLICT (project_id, version) DO UPDATE SET version = excluded.version RETURNING id");
    Ok(tx.fetch_integer(&sql).await?)
}
