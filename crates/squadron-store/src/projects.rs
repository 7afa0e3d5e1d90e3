//! Projects: a group's unit of results, with settings and plugins.

use chrono::{DateTime, Utc};
use squadron_core::names::is_valid_slug;

use crate::sql::{execute_in, row_update, Assignments};
use crate::{Store, StoreError};

/// A project, with SQUAD's fields.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Project {
    /// Primary key.
    pub id: i64,
    /// The owning group.
    pub group_id: i64,
    /// Slug, unique in the group.
    pub slug: String,
    /// Display name.
    pub name: Option<String>,
    /// Whether anyone may see it.
    pub is_public: bool,
    /// Whether notification e-mails have an HTML part.
    pub html_mail: bool,
    /// Whether notifications wait for approval.
    pub moderate_notifications: bool,
    /// Free text.
    pub description: Option<String>,
    /// Newline-separated metadata keys shown in build headers.
    pub important_metadata_keys: Option<String>,
    /// Last activity.
    pub datetime: DateTime<Utc>,
    /// Comma-separated plugin names, verbatim as given.
    pub enabled_plugins_list: Option<String>,
    /// Seconds to wait before notifying about a finished build.
    pub wait_before_notification: Option<i64>,
    /// Seconds after which to notify even if a build is unfinished.
    pub notification_timeout: Option<i64>,
    /// Days to keep builds (0: forever).
    pub data_retention_days: i64,
    /// YAML settings text.
    pub project_settings: String,
    /// Whether the project is archived.
    pub is_archived: bool,
    /// Whether a notification timeout marks builds finished.
    pub force_finishing_builds_on_timeout: bool,
    /// How many builds back the failure confidence looks.
    pub build_confidence_count: i64,
    /// Confidence threshold, in percent.
    pub build_confidence_threshold: i64,
}

pub(crate) const PROJECT_COLUMNS: &str = "id, group_id, slug, name, is_public, html_mail, moderate_notifications, \
    description, important_metadata_keys, datetime, enabled_plugins_list, wait_before_notification, \
    notification_timeout, data_retention_days, project_settings, is_archived, \
    force_finishing_builds_on_timeout, build_confidence_count, build_confidence_threshold";

impl Project {
    /// `group/slug`, given the group's slug.
    pub fn full_name(&self, group_slug: &str) -> String {
        format!("{group_slug}/{}", self.slug)
    }

    /// The enabled plugin names, in order, as SQUAD's list field shows them.
    pub fn enabled_plugins(&self) -> Vec<&str> {
        self.enabled_plugins_list
            .as_deref()
            .map(|list| list.split(',').map(str::trim).filter(|p| !p.is_empty()).collect())
            .unwrap_or_default()
    }
}

/// What is needed to create a project.
#[derive(Debug, Clone, Default)]
pub struct NewProject<'a> {
    /// The owning group.
    pub group_id: i64,
    /// Slug, unique in the group.
    pub slug: &'a str,
    /// Display name.
    pub name: Option<&'a str>,
    /// Whether anyone may see it.
    pub is_public: bool,
    /// Comma-separated plugin names, stored verbatim.
    pub enabled_plugins_list: Option<&'a str>,
}

impl Store {
    /// Creates a project.
    pub async fn create_project(&self, new: NewProject<'_>) -> Result<Project, StoreError> {
        self.create_project_with(new, &Vec::new()).await
    }

    /// Creates a project and sets more of its fields, in one transaction.
    pub async fn create_project_with(&self, new: NewProject<'_>, set: &Assignments) -> Result<Project, StoreError> {
        if !is_valid_slug(new.slug) {
            return Err(StoreError::Invalid(format!(
                "invalid project slug {:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit",
                new.slug
            )));
        }
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "INSERT INTO projects (group_id, slug, name, is_public, enabled_plugins_list, datetime) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {PROJECT_COLUMNS}"
        );
        let project: Result<Project, sqlx::Error> = with_tx!(tx, c => sqlx::query_as(&sql)
            .bind(new.group_id).bind(new.slug).bind(new.name).bind(new.is_public)
            .bind(new.enabled_plugins_list).bind(Utc::now())
            .fetch_one(&mut *c).await);
        let mut project = project.map_err(StoreError::from).map_err(|e| {
            if e.is_unique_violation() {
                StoreError::AlreadyExists(format!("project {:?}", new.slug))
            } else {
                e
            }
        })?;
        if !set.is_empty() {
            execute_in(&mut tx, &row_update("projects", project.id, set)).await?;
            let select = format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1");
            project = with_tx!(tx, c => sqlx::query_as(&select).bind(project.id).fetch_one(&mut *c).await)?;
        }
        tx.commit().await?;
        Ok(project)
    }

    /// Sets fields of a project.
    pub async fn update_project(&self, id: i64, set: &Assignments) -> Result<(), StoreError> {
        self.update_row("projects", id, set).await
    }

    /// Finds a project of a group by slug.
    pub async fn project_by_slug(&self, group_id: i64, slug: &str) -> Result<Option<Project>, StoreError> {
        let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE group_id = $1 AND slug = $2");
        Ok(with_reader!(self, pool => sqlx::query_as(&sql).bind(group_id).bind(slug).fetch_optional(pool).await)?)
    }
}
