//! Builds, environments, patch sources and build callbacks.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use squadron_core::callbacks::CallbackSpec;

use crate::sql::{fetch_id_in, Assignments, Sql};
use crate::{Store, StoreError, WriteTx};

/// A build: one version of a project.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Build {
    /// Primary key.
    pub id: i64,
    /// The project.
    pub project_id: i64,
    /// Version, unique in the project.
    pub version: String,
    /// When the build was created.
    pub created_at: DateTime<Utc>,
    /// When it happened: the earliest of its creation and its runs' datetimes.
    pub datetime: DateTime<Utc>,
    /// Where the patch under test comes from.
    pub patch_source_id: Option<i64>,
    /// The build the patch applies to.
    pub patch_baseline_id: Option<i64>,
    /// The patch's id in its source.
    pub patch_id: Option<String>,
    /// The patch's URL.
    pub patch_url: Option<String>,
    /// Whether the patch source was told the build finished.
    pub patch_notified: bool,
    /// Whether retention cleanup keeps this build.
    pub keep_data: bool,
    /// Whether this build is a release.
    pub is_release: bool,
    /// The release's label.
    pub release_label: Option<String>,
}

pub(crate) const BUILD_COLUMNS: &str = "id, project_id, version, created_at, datetime, patch_source_id, \
    patch_baseline_id, patch_id, patch_url, patch_notified, keep_data, is_release, release_label";

/// A task made from a build id, enqueued in the transaction that changes
/// the build: a published run's status update, a new patch build's report
/// to its patch source.
#[derive(Clone)]
pub struct BuildTask {
    /// Routes the task.
    pub queue: squadron_queue::Queue,
    /// Makes the task for a build id.
    pub task: std::sync::Arc<dyn Fn(i64) -> squadron_queue::NewTask + Send + Sync>,
}

impl BuildTask {
    /// Enqueues the task for `build_id` in `tx`.
    pub async fn enqueue(&self, tx: &mut crate::WriteTx, build_id: i64) -> Result<(), StoreError> {
        use squadron_queue::StepTx;
        self.queue.enqueue(tx.conn(), &(self.task)(build_id)).await?;
        Ok(())
    }
}

/// The patch fields `/api/createbuild` sets on a new build.
#[derive(Clone, Default)]
pub struct PatchFields<'a> {
    /// Name of a patch source.
    pub source: Option<&'a str>,
    /// Version of a build of the same project.
    pub baseline: Option<&'a str>,
    /// The patch's id in its source.
    pub id: Option<&'a str>,
    /// Enqueued when the build is created with a patch source and id: the
    /// report that it is being tested.
    pub on_created: Option<&'a BuildTask>,
}

/// Attaches a callback to a build in `tx`; false when the build already
/// has a callback to that URL for that event (nothing is written then).
pub async fn insert_callback(tx: &mut WriteTx, build_id: i64, cb: &CallbackSpec) -> Result<bool, StoreError> {
    let mut sql = Sql::new(
        "INSERT INTO callbacks (build_id, url, method, event, headers, payload, payload_is_json, record_response) \
         VALUES (",
    );
    sql.bind(build_id).push(", ").bind(cb.url.as_str()).push(", ").bind(cb.method.as_str());
    sql.push(", ").bind(cb.event.as_str()).push(", ").bind_optional(cb.headers.clone());
    sql.push(", ").bind_optional(cb.payload.clone()).push(", ").bind(cb.payload_is_json);
    sql.push(", ").bind(cb.record_response).push(") ON CONFLICT (build_id, url, event) DO NOTHING");
    Ok(tx.execute(&sql).await? == 1)
}

/// Finds or creates, in `tx`, build `version` and environment
/// `environment` of a project; returns their ids.
pub async fn build_and_environment_in(
    tx: &mut WriteTx,
    project_id: i64,
    version: &str,
    environment: &str,
) -> Result<(i64, i64), StoreError> {
    let mut build = Sql::new("INSERT INTO builds (project_id, version, created_at, datetime) VALUES (");
    let now = Utc::now();
    build.bind(project_id).push(", ").bind(version).push(", ").bind(now).push(", ").bind(now);
    build.push(") ON CONFLICT (project_id, version) DO NOTHING");
    tx.execute(&build).await?;
    let mut env = Sql::new("INSERT INTO environments (project_id, slug) VALUES (");
    env.bind(project_id).push(", ").bind(environment).push(") ON CONFLICT (project_id, slug) DO NOTHING");
    tx.execute(&env).await?;
    let mut ids = Sql::new("SELECT b.id, e.id FROM builds b, environments e WHERE b.project_id = ");
    ids.bind(project_id).push(" AND b.version = ").bind(version);
    ids.push(" AND e.project_id = ").bind(project_id).push(" AND e.slug = ").bind(environment);
    tx.fetch_optional::<(i64, i64)>(&ids).await?.ok_or_else(|| StoreError::NotFound(format!("build {version:?}")))
}

impl Store {
    /// Finds a build of a project by version.
    pub async fn build_by_version(&self, project_id: i64, version: &str) -> Result<Option<Build>, StoreError> {
        let sql = format!("SELECT {BUILD_COLUMNS} FROM builds WHERE project_id = $1 AND version = $2");
        Ok(with_reader!(self, pool => sqlx::query_as(&sql).bind(project_id).bind(version).fetch_optional(pool).await)?)
    }

    /// Creates a build with its patch fields, or finds the existing one
    /// (whose fields are left alone), and attaches the callback if one is
    /// given. Returns the build and whether it was created.
    pub async fn create_build(
        &self,
        project_id: i64,
        version: &str,
        patch: PatchFields<'_>,
        callback: Option<&CallbackSpec>,
    ) -> Result<(Build, bool), StoreError> {
        let mut tx = self.begin_write().await?;
        let patch_source_id: Option<i64> = match patch.source {
            Some(name) => Some(
                with_tx!(tx, c => sqlx::query_scalar("SELECT id FROM patch_sources WHERE name = $1")
                    .bind(name).fetch_optional(&mut *c).await)?
                .ok_or_else(|| StoreError::NotFound(format!("patch source {name:?}")))?,
            ),
            None => None,
        };
        let patch_baseline_id: Option<i64> = match patch.baseline {
            Some(baseline) => Some(
                with_tx!(tx, c => sqlx::query_scalar("SELECT id FROM builds WHERE project_id = $1 AND version = $2")
                    .bind(project_id).bind(baseline).fetch_optional(&mut *c).await)?
                .ok_or_else(|| StoreError::NotFound(format!("patch baseline {baseline:?}")))?,
            ),
            None => None,
        };
        let now = Utc::now();
        let insert = format!(
            "INSERT INTO builds (project_id, version, created_at, datetime, patch_source_id, patch_baseline_id, patch_id) \
             VALUES ($1, $2, $3, $3, $4, $5, $6) ON CONFLICT (project_id, version) DO NOTHING RETURNING {BUILD_COLUMNS}"
        );
        let select = format!("SELECT {BUILD_COLUMNS} FROM builds WHERE project_id = $1 AND version = $2");
        let (build, created): (Build, bool) = with_tx!(tx, c => {
            let inserted: Option<Build> = sqlx::query_as(&insert)
                .bind(project_id).bind(version).bind(now).bind(patch_source_id).bind(patch_baseline_id).bind(patch.id)
                .fetch_optional(&mut *c).await?;
            match inserted {
                Some(build) => (build, true),
                None => (sqlx::query_as(&select).bind(project_id).bind(version).fetch_one(&mut *c).await?, false),
            }
        });
        if created && patch_source_id.is_some() && patch.id.is_some() {
            if let Some(hook) = patch.on_created {
                hook.enqueue(&mut tx, build.id).await?;
            }
        }
        if let Some(cb) = callback {
            if !insert_callback(&mut tx, build.id, cb).await? {
                return Err(StoreError::AlreadyExists(format!(
                    "a callback to {} on {} for build {version:?}",
                    cb.url, cb.event
                )));
            }
        }
        tx.commit().await?;
        Ok((build, created))
    }

    /// Creates an environment in a project with the given fields (`slug`
    /// among them); returns its id.
    pub async fn create_environment(&self, project_id: i64, set: &Assignments) -> Result<i64, StoreError> {
        let mut sql = Sql::new("INSERT INTO environments (project_id");
        for (column, _) in set {
            sql.push(", ").push(column);
        }
        sql.push(") VALUES (").bind(project_id);
        for (_, value) in set {
            match value {
                Some(v) => sql.push(", ").bind(v.clone()),
                None => sql.push(", NULL"),
            };
        }
        sql.push(") RETURNING id");
        let mut tx = self.begin_write().await?;
        let id = fetch_id_in(&mut tx, &sql).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Sets fields of an environment.
    pub async fn update_environment(&self, id: i64, set: &Assignments) -> Result<(), StoreError> {
        self.update_row("environments", id, set).await
    }

    /// Sets fields of a build.
    pub async fn update_build(&self, id: i64, set: &Assignments) -> Result<(), StoreError> {
        self.update_row("builds", id, set).await
    }

    /// Creates a patch source (used by tests and administration).
    pub async fn create_patch_source(&self, name: &str, url: &str, implementation: &str) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let id = with_tx!(tx, c => sqlx::query_scalar(
            "INSERT INTO patch_sources (name, url, implementation) VALUES ($1, $2, $3) RETURNING id",
        ).bind(name).bind(url).bind(implementation).fetch_one(&mut *c).await)?;
        tx.commit().await?;
        Ok(id)
    }

    /// The metadata of each visible run of a build, by run id (a run whose
    /// metadata is not a JSON object has none).
    pub async fn runs_metadata(&self, build_id: i64) -> Result<Vec<(i64, Map<String, Value>)>, StoreError> {
        let mut sql = Sql::new("SELECT id, metadata_file FROM testruns WHERE visible AND build_id = ");
        sql.bind(build_id).push(" ORDER BY id");
        let rows: Vec<(i64, Option<String>)> = self.fetch_all(&sql).await?;
        Ok(rows
            .into_iter()
            .map(|(id, text)| (id, text.as_deref().and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default()))
            .collect())
    }

    /// A build's metadata as SQUAD merges it: the union of its runs'
    /// metadata; a key with several distinct values gets the list of them,
    /// sorted as Python sorts their text.
    pub async fn build_metadata(&self, build_id: i64) -> Result<Map<String, Value>, StoreError> {
        let mut merged: Map<String, Value> = Map::new();
        for (_, metadata) in self.runs_metadata(build_id).await? {
            for (key, value) in metadata {
                let entry = merged.entry(key).or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(values) = entry {
                    if !values.contains(&value) {
                        values.push(value);
                    }
                }
            }
        }
        for value in merged.values_mut() {
            if let Value::Array(values) = value {
                if values.len() == 1 {
                    *value = values.pop().unwrap_or(Value::Null);
                } else {
                    values.sort_by_key(python_str);
                }
            }
        }
        Ok(merged)
    }
}

/// The text Python's `str` gives a JSON value, to sort values like SQUAD.
fn python_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
