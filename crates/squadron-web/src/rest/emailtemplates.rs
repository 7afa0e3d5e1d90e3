//! `/api/emailtemplates/`: custom notification templates (SQUAD's
//! EmailTemplate: Jinja2 subject, text and HTML), read by anyone, written
//! by superusers. A template that does not parse is refused with the part
//! and line at fault.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use squadron_status::notify::EmailTemplate;
use squadron_status::StatusError;
use squadron_store::sql::{Assignments, Sql};

use super::filter::{field, FilterSet, Filters, Kind, EXACT_IN, TEXT};
use super::page::{fetch, keyed_by_id, Paging};
use super::{field_error, json, not_found, unique_field, Input, Rest};
use crate::error::ApiError;
use crate::AppState;

/// SQUAD's filters: `name`.
static TEMPLATE_FILTERS: FilterSet = FilterSet {
    fields: &[field("name", "{p}name", Kind::Text, TEXT), field("id", "{p}id", Kind::Int, EXACT_IN)],
    relations: &[],
    unsupported: &[],
};

#[derive(sqlx::FromRow)]
struct TemplateRow {
    id: i64,
    name: String,
    subject: Option<String>,
    plain_text: String,
    html: Option<String>,
}

keyed_by_id!(TemplateRow);

const SELECT: &str = "SELECT t.id, t.name, t.subject, t.plain_text, t.html FROM email_templates t";

fn render(rest: &Rest, t: &TemplateRow) -> Value {
    let mut m = Map::new();
    m.insert("url".into(), json!(rest.api(&format!("emailtemplates/{}/", t.id))));
    m.insert("id".into(), json!(t.id));
    m.insert("name".into(), json!(t.name));
    m.insert("subject".into(), json!(t.subject));
    m.insert("plain_text".into(), json!(t.plain_text));
    m.insert("html".into(), json!(t.html));
    rest.trim(m)
}

async fn list(rest: Rest) -> Result<Json<Value>, ApiError> {
    let mut conditions = Sql::new(" WHERE TRUE");
    Filters { engine: rest.state.store.engine_name() }.apply(&TEMPLATE_FILTERS, "t.", &rest.params, &mut conditions)?;
    let paging = Paging::LimitOffset { default: "t.id", fields: &[("name", "t.name"), ("id", "t.id")], search: &[] };
    let page = fetch::<TemplateRow>(&rest, SELECT, conditions, "t.id", &paging).await?;
    Ok(Json(page.into_json(|t| render(&rest, t))))
}

async fn one(rest: &Rest, id: i64) -> Result<TemplateRow, ApiError> {
    let mut sql = Sql::new(SELECT);
    sql.push(" WHERE t.id = ").bind(id);
    rest.state.store.fetch_optional(&sql).await?.ok_or_else(not_found)
}

async fn detail(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    Ok(Json(render(&rest, &one(&rest, id).await?)))
}

/// The fields `input` sets, checked against what the template will be
/// (`current` for a partial update).
fn assignments(input: &Input, current: Option<&TemplateRow>) -> Result<Assignments, ApiError> {
    let name = input.text("name")?;
    let plain_text = input.text("plain_text")?;
    let subject = if input.has("subject") { input.text("subject")? } else { current.and_then(|c| c.subject.clone()) };
    let html = if input.has("html") { input.text("html")? } else { current.and_then(|c| c.html.clone()) };
    let final_name = name.clone().or_else(|| current.map(|c| c.name.clone())).unwrap_or_default();
    if final_name.trim().is_empty() {
        return Err(field_error("name", "This field is required."));
    }
    let final_text = plain_text.clone().or_else(|| current.map(|c| c.plain_text.clone()));
    let Some(final_text) = final_text.filter(|t| !t.trim().is_empty()) else {
        return Err(field_error("plain_text", "This field is required."));
    };
    if subject.as_deref().is_some_and(|s| s.contains('\n')) {
        return Err(field_error("subject", "the subject template must be one line"));
    }
    EmailTemplate::validate(subject.as_deref(), &final_text, html.as_deref()).map_err(|e| match e {
        StatusError::Template(message) => ApiError::bad_request(format!("invalid template: {message}")),
        other => ApiError::internal(&other),
    })?;
    let mut set: Assignments = vec![("subject", subject.map(Into::into)), ("html", html.map(Into::into))];
    if let Some(name) = name {
        set.push(("name", Some(name.into())));
    }
    if let Some(text) = plain_text {
        set.push(("plain_text", Some(text.into())));
    }
    Ok(set)
}

async fn create(
    rest: Rest,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    rest.require_superuser()?;
    let input = Input::read(&state, &headers, body).await?;
    let set = assignments(&input, None)?;
    let id = state
        .store
        .insert_row("email_templates", &set)
        .await
        .map_err(unique_field("name", "email template with this name already exists."))?;
    Ok(json(StatusCode::CREATED, render(&rest, &one(&rest, id).await?)))
}

async fn update(
    rest: Rest,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    rest.require_superuser()?;
    let current = one(&rest, id).await?;
    let input = Input::read(&state, &headers, body).await?;
    let set = assignments(&input, Some(&current))?;
    state
        .store
        .update_row("email_templates", id, &set)
        .await
        .map_err(unique_field("name", "email template with this name already exists."))?;
    Ok(Json(render(&rest, &one(&rest, id).await?)))
}

async fn delete(rest: Rest, Path(id): Path<i64>) -> Result<StatusCode, ApiError> {
    rest.require_superuser()?;
    one(&rest, id).await?;
    rest.state.store.delete_row("email_templates", id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/emailtemplates/", get(list).post(create))
        .route("/api/emailtemplates/{id}/", get(detail).patch(update).put(update).delete(delete))
}
