//! A build's report, as SQUAD makes it: `/api/builds/<id>/report/` asks
//! for one (rendered, emailed and POSTed by workers) and answers 202 with
//! its URL; `/api/builds/<id>/email/` answers with the rendering itself.
//! Both find the report already made with the same parameters (`output`,
//! `template`, `baseline`, `email_recipient`, `callback`,
//! `callback_token`, `keep`), unless `force` asks for a new one; `/email/`
//! renders a report nobody rendered yet at once.

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use squadron_status::notify::{
    is_email, prepare_now, DelayedReport, ReportRequest, Site, MAX_RETENTION_DAYS, REPORT_FORMATS,
};
use squadron_store::sql::Sql;

use super::{field_error, json, not_found, Input, Rest};
use crate::error::ApiError;

/// The query parameters, as the fields of a request (the last of a
/// repeated one wins).
fn query_input(rest: &Rest) -> Input {
    let fields: Map<String, Value> = rest.params.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    Input(fields)
}

/// A text field, `None` when absent or empty.
fn optional_text(input: &Input, name: &str) -> Result<Option<String>, ApiError> {
    Ok(input.text(name)?.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()))
}

/// The report asked for on build `id`, and whether a new one is forced.
/// The build (and a baseline) must be one the caller may see.
async fn report_request(rest: &Rest, id: i64, input: &Input) -> Result<(ReportRequest, bool), ApiError> {
    let (project_template,): (Option<i64>,) = rest
        .fetch_visible(
            "SELECT p.custom_email_template_id FROM builds b JOIN projects p ON p.id = b.project_id",
            "b.id",
            id,
            "b.project_id",
        )
        .await?;
    let output_format = optional_text(input, "output")?.unwrap_or_else(|| "text/plain".to_string());
    if !REPORT_FORMATS.contains(&output_format.as_str()) {
        return Err(field_error("output", &format!("{output_format:?} is neither text/plain nor text/html")));
    }
    let template_id = match optional_text(input, "template")?.as_deref() {
        None => project_template,
        Some("default") => None,
        Some(_) => Some(template(rest, input).await?),
    };
    let baseline_id = match input.integer("baseline")? {
        Some(baseline) => Some(baseline_build(rest, baseline).await?),
        None => None,
    };
    let email_recipient = optional_text(input, "email_recipient")?;
    if email_recipient.as_deref().is_some_and(|e| !is_email(e)) {
        return Err(field_error("email_recipient", "Enter a valid email address."));
    }
    let callback = optional_text(input, "callback")?;
    if let Some(url) = &callback {
        let scheme = url.parse::<Uri>().ok().and_then(|u| u.scheme_str().map(str::to_string));
        if !matches!(scheme.as_deref(), Some("http" | "https")) {
            return Err(field_error("callback", "Enter a valid URL."));
        }
    }
    let data_retention_days = input.integer("keep")?.unwrap_or(1);
    if !(0..=MAX_RETENTION_DAYS).contains(&data_retention_days) {
        return Err(field_error("keep", &format!("Ensure this value is between 0 and {MAX_RETENTION_DAYS} (days).")));
    }
    let force = rest.flag("force")? || input.boolean("force")?.unwrap_or(false);
    let request = ReportRequest {
        build_id: id,
        baseline_id,
        template_id,
        output_format,
        email_recipient,
        callback,
        callback_token: optional_text(input, "callback_token")?,
        data_retention_days,
    };
    Ok((request, force))
}

/// The `template` field: the id of an existing email template.
async fn template(rest: &Rest, input: &Input) -> Result<i64, ApiError> {
    let id = input.integer("template")?.unwrap_or_default();
    let mut sql = Sql::new("SELECT COUNT(*) FROM email_templates WHERE id = ");
    sql.bind(id);
    if rest.state.store.fetch_count(&sql).await? == 0 {
        return Err(field_error("template", &format!("no email template {id}")));
    }
    Ok(id)
}

/// The `baseline` field: a build the caller may see, with a status.
async fn baseline_build(rest: &Rest, id: i64) -> Result<i64, ApiError> {
    let (_, status): (i64, Option<i64>) = rest
        .fetch_visible(
            "SELECT b.id, s.build_id FROM builds b LEFT JOIN build_status s ON s.build_id = b.id",
            "b.id",
            id,
            "b.project_id",
        )
        .await
        .map_err(|_| field_error("baseline", &format!("Baseline build {id} does not exist")))?;
    if status.is_none() {
        return Err(field_error("baseline", &format!("Build {id} has no status")));
    }
    Ok(id)
}

/// The report asked for, found or made.
async fn get_or_create(rest: &Rest, id: i64, input: &Input) -> Result<i64, ApiError> {
    let (request, force) = report_request(rest, id, input).await?;
    // Unlike SQUAD, an anonymous caller may not make the server send email
    // or requests to an address of their choosing.
    if (request.email_recipient.is_some() || request.callback.is_some()) && rest.user.is_none() {
        return Err(ApiError::unauthorized("Authentication is needed to have a report emailed or called back."));
    }
    let (report, _) =
        request.get_or_create(&rest.state.store, &rest.state.queue, force).await.map_err(|e| ApiError::internal(&e))?;
    Ok(report)
}

/// `GET|POST /api/builds/<id>/report/` (anyone who may see the build):
/// parameters in the query (GET) or the body (POST); answers 202
/// `{"message": "OK", "url": <the report>}`.
pub(crate) async fn report(
    rest: Rest,
    method: Method,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let input =
        if method == Method::POST { Input::read(&rest.state, &headers, body).await? } else { query_input(&rest) };
    let report = get_or_create(&rest, id, &input).await?;
    Ok(json(StatusCode::ACCEPTED, json!({ "message": "OK", "url": rest.api(&format!("reports/{report}/")) })))
}

/// `GET /api/builds/<id>/email/`: the report's text, or its HTML when
/// `output=text/html` and there is some; a report that could not be
/// rendered answers with its status and error.
pub(crate) async fn email(rest: Rest, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let report = get_or_create(&rest, id, &query_input(&rest)).await?;
    let site = Site { name: rest.state.config.site_name.clone(), base_url: rest.base.clone() };
    let store = &rest.state.store;
    prepare_now(store, &rest.state.queue, &site, report).await.map_err(|e| ApiError::internal(&e))?;
    let report = DelayedReport::load(store, report).await.map_err(|e| ApiError::internal(&e))?.ok_or_else(not_found)?;
    if !report.is_ready() {
        let status = report.status_code.and_then(|c| u16::try_from(c).ok());
        let status = status.and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let error = report.error_message.as_deref().and_then(|e| serde_json::from_str(e).ok());
        return Ok(json(status, error.unwrap_or(Value::Null)));
    }
    let body = match (report.output_format.as_str(), report.output_html) {
        ("text/html", Some(html)) => html,
        _ => report.output_text.unwrap_or_default(),
    };
    let content_type = format!("{}; charset=utf-8", report.output_format);
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}
