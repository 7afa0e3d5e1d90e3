//! Reporting a patch build back to where the patch came from (SQUAD's
//! `github` and `gerrit` PatchSource plugins): "being tested" when the
//! build is created with a patch source and id, the verdict once its
//! notification is sent. Each report is a queue task, recorded before it
//! is sent, retried with backoff on errors, and carries an idempotency key.

mod gerrit;
mod github;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use squadron_core::settings::parse_settings;
use squadron_queue::{Job, NewTask, Outcome, Queue, Task, TaskError};
use squadron_store::builds::BuildTask;
use squadron_store::sql::Sql;
use squadron_store::Store;

use crate::notify::Site;

/// How long a report's request may take.
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times a report is tried.
const REPORT_ATTEMPTS: i32 = 8;

/// What the patch source tasks need.
pub struct Patching {
    /// The store.
    pub store: Store,
    /// The HTTP client.
    pub http: reqwest::Client,
    /// Where build pages are.
    pub site: Site,
    /// The `ssh` program Gerrit's SSH reports run.
    pub ssh: PathBuf,
}

impl Patching {
    /// With a client whose requests time out after 30 s and the `ssh` on
    /// the PATH.
    pub fn new(store: Store, site: Site) -> Patching {
        let http = reqwest::Client::builder().timeout(REPORT_TIMEOUT).build().expect("an HTTP client");
        Patching { store, http, site, ssh: PathBuf::from("ssh") }
    }
}

/// Reports a patch build's progress to its patch source.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotifyPatchSource {
    /// The build.
    pub build_id: i64,
    /// The verdict (otherwise: the build is being tested).
    pub finished: bool,
}

impl NotifyPatchSource {
    /// The task, unique per build and stage.
    pub fn task(build_id: i64, finished: bool) -> NewTask {
        let stage = if finished { "finished" } else { "created" };
        NewTask::of(&NotifyPatchSource { build_id, finished }).unique(format!("patch:{build_id}:{stage}"))
    }
}

/// What `/api/createbuild` enqueues with a new patch build.
pub fn on_created(queue: Queue) -> BuildTask {
    BuildTask { queue, task: Arc::new(|build_id| NotifyPatchSource::task(build_id, false)) }
}

/// A patch build and its source.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct PatchBuild {
    pub version: String,
    pub patch_id: String,
    pub patch_url: Option<String>,
    pub group_slug: String,
    pub project_slug: String,
    pub project_settings: String,
    pub baseline_version: Option<String>,
    pub url: String,
    pub username: String,
    pub password: Option<String>,
    pub token: Option<String>,
    pub implementation: String,
    pub tests_fail: Option<i64>,
}

impl PatchBuild {
    /// The build's page.
    pub fn build_url(&self, site: &Site) -> String {
        site.build_url(&format!("{}/{}", self.group_slug, self.project_slug), &self.version)
    }

    /// The baseline's page.
    pub fn baseline_url(&self, site: &Site) -> Option<String> {
        let project = format!("{}/{}", self.group_slug, self.project_slug);
        self.baseline_version.as_ref().map(|v| site.build_url(&project, v))
    }

    /// A project setting (`project_settings` YAML).
    pub fn setting(&self, key: &str) -> Option<serde_json::Value> {
        parse_settings(&self.project_settings).ok()?.remove(key)
    }
}

/// What a report request needs: the client, the key, where the build is.
pub(crate) struct Report<'a> {
    pub cx: &'a Patching,
    pub build: &'a PatchBuild,
    pub finished: bool,
    pub key: String,
}

/// Why a report was not delivered.
#[derive(Debug)]
pub(crate) enum ReportError {
    /// Worth trying again (network, 5xx).
    Transient(String),
    /// Never going to work (a malformed patch id, a 4xx).
    Permanent(String),
}

impl Task for NotifyPatchSource {
    const KIND: &'static str = "notify_patch_source";
    const QUEUE: &'static str = "core_notification";
    const MAX_ATTEMPTS: i32 = REPORT_ATTEMPTS;
    type Context = Patching;

    async fn run(&self, cx: &Patching, job: &mut Job) -> Result<Outcome, TaskError> {
        let mut sql = Sql::new(
            "SELECT b.version, b.patch_id, b.patch_url, g.slug AS group_slug, p.slug AS project_slug, \
                    p.project_settings, pb.version AS baseline_version, ps.url, ps.username, ps.password, ps.token, \
                    ps.implementation, s.tests_fail \
             FROM builds b JOIN projects p ON p.id = b.project_id JOIN groups g ON g.id = p.group_id \
             JOIN patch_sources ps ON ps.id = b.patch_source_id LEFT JOIN builds pb ON pb.id = b.patch_baseline_id \
             LEFT JOIN build_status s ON s.build_id = b.id WHERE b.patch_id IS NOT NULL AND b.id = ",
        );
        sql.bind(self.build_id);
        let Some(build) = cx.store.fetch_optional::<PatchBuild>(&sql).await.map_err(TaskError::failed)? else {
            return Ok(Outcome::Done);
        };
        let stage = if self.finished { "finished" } else { "created" };
        let key = format!("squadron-build-{}-patch-{stage}", self.build_id);
        let report = Report { cx, build: &build, finished: self.finished, key: key.clone() };
        let patch_url = if build.patch_url.is_none() && !self.finished {
            match build.implementation.as_str() {
                "github" => github::patch_url(&report).ok(),
                "gerrit" => gerrit::patch_url(&report).await,
                _ => None,
            }
        } else {
            None
        };
        let attempt = record_attempt(&cx.store, self.build_id, stage, &key).await?;
        let result = match build.implementation.as_str() {
            "github" => github::report(&report).await,
            "gerrit" => gerrit::report(&report).await,
            other => {
                tracing::warn!(build = self.build_id, implementation = other, "no such patch source implementation");
                Err(ReportError::Permanent(format!("no patch source implementation {other:?}")))
            }
        };
        let error = match &result {
            Ok(()) => None,
            Err(ReportError::Transient(e) | ReportError::Permanent(e)) => Some(e.clone()),
        };
        let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
        let mut outcome = Sql::new("UPDATE patch_deliveries SET error = ");
        outcome.bind_optional(error).push(" WHERE id = ").bind(attempt);
        tx.execute(&outcome).await.map_err(TaskError::failed)?;
        if let Some(url) = patch_url {
            let mut set = Sql::new("UPDATE builds SET patch_url = ");
            set.bind(url).push(" WHERE id = ").bind(self.build_id);
            tx.execute(&set).await.map_err(TaskError::failed)?;
        }
        match result {
            Ok(()) => job.commit_last_step(tx).await,
            Err(ReportError::Permanent(e)) => {
                job.commit_step(tx, &stage).await?;
                Err(TaskError::permanent(e))
            }
            Err(ReportError::Transient(e)) => {
                job.commit_step(tx, &stage).await?;
                Err(TaskError::failed(e))
            }
        }
    }
}

/// Records an attempt before it is made; returns its id.
async fn record_attempt(store: &Store, build_id: i64, stage: &str, key: &str) -> Result<i64, TaskError> {
    let mut tx = store.begin_write().await.map_err(TaskError::failed)?;
    let mut sql = Sql::new("INSERT INTO patch_deliveries (build_id, stage, idempotency_key, attempted_at) VALUES (");
    sql.bind(build_id).push(", ").bind(stage).push(", ").bind(key).push(", ").bind(Utc::now());
    sql.push(") RETURNING id");
    let id = tx.fetch_integer(&sql).await.map_err(TaskError::failed)?;
    tx.commit().await.map_err(TaskError::failed)?;
    Ok(id)
}

/// Maps an HTTP answer to a delivery result: 2xx delivered, 5xx and 429
/// worth another try, other codes refused for good.
pub(crate) async fn answered(response: Result<reqwest::Response, reqwest::Error>) -> Result<(), ReportError> {
    let response = response.map_err(|e| ReportError::Transient(e.to_string()))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    let message = format!("HTTP {status}: {}", body.chars().take(500).collect::<String>());
    if status.is_server_error() || status.as_u16() == 429 {
        Err(ReportError::Transient(message))
    } else {
        Err(ReportError::Permanent(message))
    }
}
