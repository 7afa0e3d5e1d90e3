//! `/api/projects/`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use squadron_core::names::is_valid_slug;
use squadron_core::settings::parse_settings;
use squadron_status::notify::is_email;
use squadron_store::projects::NewProject;
use squadron_store::sql::{Assignments, Sql, Value as SqlValue};

use super::filter::{field, relation, Field, FilterSet, Filters, Kind, Lookup, EXACT_IN, ORDERED, TEXT};
use super::groups::GROUP_FILTERS;
use super::page::{fetch, keyed_by_id, Paging};
use super::suites::{render_name, NameRow, NAME_SELECT};
use super::{field_error, json, not_implemented, time, Input, Rest};
use crate::error::ApiError;
use crate::AppState;

/// SQUAD's `ProjectFilter`.
pub(crate) static PROJECT_FILTERS: FilterSet = FilterSet {
    fields: &[
        field("name", "{p}name", Kind::Text, TEXT),
        field("slug", "{p}slug", Kind::Text, TEXT),
        field("datetime", "{p}datetime", Kind::Time, ORDERED),
        field("id", "{p}id", Kind::Int, EXACT_IN),
        Field {
            name: "full_name",
            column: "((SELECT fg.slug FROM groups fg WHERE fg.id = {p}group_id) || '/' || {p}slug)",
            kind: Kind::Text,
            lookups: &[Lookup::StartsWith],
            default: Lookup::StartsWith,
        },
    ],
    relations: &[relation("group", "{p}group_id", "groups", &GROUP_FILTERS)],
    unsupported: &["filters"],
};

#[derive(sqlx::FromRow)]
pub(crate) struct ProjectRow {
    pub id: i64,
    pub group_id: i64,
    pub group_slug: String,
    pub slug: String,
    name: Option<String>,
    pub is_public: bool,
    html_mail: bool,
    moderate_notifications: bool,
    description: Option<String>,
    important_metadata_keys: Option<String>,
    datetime: DateTime<Utc>,
    enabled_plugins_list: Option<String>,
    wait_before_notification: Option<i64>,
    notification_timeout: Option<i64>,
    data_retention_days: i64,
    is_archived: bool,
    force_finishing_builds_on_timeout: bool,
    build_confidence_count: i64,
    build_confidence_threshold: i64,
    custom_email_template_id: Option<i64>,
}

keyed_by_id!(ProjectRow);

const SELECT: &str = "SELECT p.id, p.group_id, g.slug AS group_slug, p.slug, p.name, p.is_public, p.html_mail, \
    p.moderate_notifications, p.description, p.important_metadata_keys, p.datetime, p.enabled_plugins_list, \
    p.wait_before_notification, p.notification_timeout, p.data_retention_days, p.is_archived, \
    p.force_finishing_builds_on_timeout, p.build_confidence_count, p.build_confidence_threshold, \
    p.custom_email_template_id FROM projects p JOIN groups g ON g.id = p.group_id";

fn render(rest: &Rest, p: &ProjectRow) -> Value {
    let plugins: Value = match &p.enabled_plugins_list {
        None => Value::Null,
        Some(list) => list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>().into(),
    };
    let mut m = Map::new();
    m.insert("url".into(), json!(rest.api(&format!("projects/{}/", p.id))));
    m.insert("id".into(), json!(p.id));
    m.insert("full_name".into(), json!(format!("{}/{}", p.group_slug, p.slug)));
    m.insert("enabled_plugins_list".into(), plugins);
    m.insert("group".into(), json!(rest.api(&format!("groups/{}/", p.group_id))));
    m.insert("slug".into(), json!(p.slug));
    m.insert("name".into(), json!(p.name));
    m.insert("is_public".into(), json!(p.is_public));
    m.insert("html_mail".into(), json!(p.html_mail));
    m.insert("moderate_notifications".into(), json!(p.moderate_notifications));
    let template = p.custom_email_template_id.map(|t| rest.api(&format!("emailtemplates/{t}/")));
    m.insert("custom_email_template".into(), json!(template));
    m.insert("description".into(), json!(p.description));
    m.insert("important_metadata_keys".into(), json!(p.important_metadata_keys));
    m.insert("datetime".into(), time(&p.datetime));
    m.insert("wait_before_notification".into(), json!(p.wait_before_notification));
    m.insert("notification_timeout".into(), json!(p.notification_timeout));
    m.insert("data_retention_days".into(), json!(p.data_retention_days));
    m.insert("is_archived".into(), json!(p.is_archived));
    m.insert("force_finishing_builds_on_timeout".into(), json!(p.force_finishing_builds_on_timeout));
    m.insert("build_confidence_count".into(), json!(p.build_confidence_count));
    m.insert("build_confidence_threshold".into(), json!(p.build_confidence_threshold));
    rest.trim(m)
}

async fn list(rest: Rest) -> Result<Json<Value>, ApiError> {
    if rest.param("filters").is_some() {
        return Err(ApiError::bad_request("filter filters: complex filter expressions are not supported yet"));
    }
    let mut conditions = Sql::new(" WHERE TRUE");
    rest.visible(&mut conditions, "p.id");
    Filters { engine: rest.state.store.engine_name() }.apply(&PROJECT_FILTERS, "p.", &rest.params, &mut conditions)?;
    let paging = Paging::LimitOffset { default: "g.slug, p.slug", fields: &[], search: &[] };
    let page = fetch::<ProjectRow>(&rest, SELECT, conditions, "p.id", &paging).await?;
    Ok(Json(page.into_json(|p| render(&rest, p))))
}

/// A project the caller may see.
pub(crate) async fn visible_project(rest: &Rest, id: i64) -> Result<ProjectRow, ApiError> {
    rest.fetch_visible(SELECT, "p.id", id, "p.id").await
}

async fn detail(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    Ok(Json(render(&rest, &visible_project(&rest, id).await?)))
}

/// The project fields a write may set, checked.
fn assignments(input: &Input) -> Result<Assignments, ApiError> {
    let mut set: Assignments = Vec::new();
    let text = |name: &'static str, set: &mut Assignments| -> Result<(), ApiError> {
        if input.has(name) {
            set.push((name, input.text(name)?.map(SqlValue::from)));
        }
        Ok(())
    };
    for name in ["name", "description", "important_metadata_keys"] {
        text(name, &mut set)?;
    }
    for name in ["is_public", "html_mail", "moderate_notifications", "is_archived", "force_finishing_builds_on_timeout"]
    {
        if let Some(v) = input.boolean(name)? {
            set.push((name, Some(v.into())));
        }
    }
    for name in ["wait_before_notification", "notification_timeout"] {
        if input.has(name) {
            set.push((name, input.integer(name)?.map(SqlValue::from)));
        }
    }
    for name in ["data_retention_days", "build_confidence_count", "build_confidence_threshold"] {
        if let Some(v) = input.integer(name)? {
            if v < 0 {
                return Err(field_error(name, "Ensure this value is greater than or equal to 0."));
            }
            set.push((name, Some(v.into())));
        }
    }
    if let Some(plugins) = input.list("enabled_plugins_list")? {
        set.push(("enabled_plugins_list", Some(plugins.join(",").into())));
    }
    if let Some(settings) = input.text("project_settings")? {
        parse_settings(&settings).map_err(|e| field_error("project_settings", &e))?;
        set.push(("project_settings", Some(settings.into())));
    }
    if input.has("custom_email_template") {
        let template = input.link("custom_email_template", "emailtemplates")?;
        set.push(("custom_email_template_id", template.map(SqlValue::from)));
    }
    Ok(set)
}

/// `POST /api/projects/`: admins of the project's group.
async fn create(
    rest: Rest,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let input = Input::read(&state, &headers, body).await?;
    let group = input.link("group", "groups")?.ok_or_else(|| field_error("group", "This field is required."))?;
    let slug = input.text("slug")?.ok_or_else(|| field_error("slug", "This field is required."))?;
    if !is_valid_slug(&slug) {
        return Err(field_error("slug", &format!("{slug:?} is not a valid slug (letters, digits, '_', '.', '-')")));
    }
    rest.require_admin(group).await?;
    let set = assignments(&input)?;
    let new = NewProject { group_id: group, slug: &slug, name: None, is_public: true, enabled_plugins_list: None };
    let project = state.store.create_project_with(new, &set).await?;
    Ok(json(StatusCode::CREATED, render(&rest, &visible_project(&rest, project.id).await?)))
}

/// `PATCH`/`PUT /api/projects/<id>/`: admins of the project's group.
async fn update(
    rest: Rest,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let project = visible_project(&rest, id).await?;
    rest.require_admin(project.group_id).await?;
    let input = Input::read(&state, &headers, body).await?;
    if input.link("group", "groups")?.is_some_and(|g| g != project.group_id) {
        return Err(field_error("group", "a project cannot be moved to another group"));
    }
    let mut set = assignments(&input)?;
    if let Some(slug) = input.text("slug")? {
        if !is_valid_slug(&slug) {
            return Err(field_error("slug", &format!("{slug:?} is not a valid slug (letters, digits, '_', '.', '-')")));
        }
        set.push(("slug", Some(slug.into())));
    }
    state.store.update_project(id, &set).await.map_err(|e| {
        if e.is_unique_violation() {
            field_error("slug", "a project with this slug already exists in the group")
        } else {
            e.into()
        }
    })?;
    Ok(Json(render(&rest, &visible_project(&rest, id).await?)))
}

async fn basic_settings(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let p = visible_project(&rest, id).await?;
    Ok(Json(
        json!({"build_confidence_count": p.build_confidence_count, "build_confidence_threshold": p.build_confidence_threshold}),
    ))
}

/// `/api/projects/<id>/suites/` and `/tests/`: names of the project's suites
/// or tests (`?suite_name=` for one suite's tests).
async fn names(rest: &Rest, id: i64, kind: &str) -> Result<Json<Value>, ApiError> {
    visible_project(rest, id).await?;
    let mut conditions = Sql::new(" WHERE m.kind = ");
    conditions.bind(kind.to_string());
    match rest.param("suite_name").filter(|_| kind == "test") {
        Some(suite) => {
            conditions.push(" AND m.suite = ").bind(suite.to_string());
        }
        None => {
            conditions.push(" AND m.suite IN (SELECT slug FROM suites WHERE project_id = ").bind(id).push(")");
        }
    }
    let paging = Paging::LimitOffset { default: "m.id", fields: &[], search: &[] };
    let page = fetch::<NameRow>(rest, NAME_SELECT, conditions, "m.id", &paging).await?;
    Ok(Json(page.into_json(|m| render_name(rest, m))))
}

async fn suites(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    names(&rest, id, "suite").await
}

async fn tests(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    names(&rest, id, "test").await
}

/// The address a subscription request names, checked.
fn subscriber(input: &Input) -> Result<String, ApiError> {
    let email = input.text("email")?.ok_or_else(|| ApiError::bad_request("'email' field is mandatory."))?;
    if !is_email(&email) {
        return Err(ApiError::bad_request("Invalid 'email' field value."));
    }
    Ok(email)
}

/// `POST /api/projects/<id>/subscribe/`: subscribes an address (as its
/// user, if one has it) to the project's build notifications; admins of
/// the project's group.
async fn subscribe(
    rest: Rest,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let project = visible_project(&rest, id).await?;
    rest.require_admin(project.group_id).await?;
    let email = subscriber(&Input::read(&state, &headers, body).await?)?;
    state.store.subscribe(id, &email).await?;
    Ok(json(StatusCode::CREATED, json!({ "email": email })))
}

/// `POST /api/projects/<id>/unsubscribe/`: removes the address's
/// subscriptions, direct or through its user.
async fn unsubscribe(
    rest: Rest,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let project = visible_project(&rest, id).await?;
    rest.require_admin(project.group_id).await?;
    let email = subscriber(&Input::read(&state, &headers, body).await?)?;
    state.store.unsubscribe(id, &email).await?;
    Ok(Json(json!({ "email": email })))
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/projects/", get(list).post(create))
        .route(
            "/api/projects/{id}/",
            get(detail).patch(update).put(update).delete(|| async { not_implemented("deleting a project") }),
        )
        .route("/api/projects/{id}/basic_settings/", get(basic_settings))
        .route("/api/projects/{id}/suites/", get(suites))
        .route("/api/projects/{id}/tests/", get(tests))
        .route("/api/projects/{id}/builds/", get(super::builds::project_builds))
        .route("/api/projects/{id}/test_results/", get(super::test_results::test_results))
        .route(
            "/api/projects/{id}/compare_builds/",
            get(super::compare::compare_builds).post(super::compare::compare_builds),
        )
        .route("/api/projects/{id}/subscribe/", post(subscribe))
        .route("/api/projects/{id}/unsubscribe/", post(unsubscribe))
}
