//! `/api/builds/<id>/email/`: the build's notification email, rendered on
//! demand (`?output=text/plain|text/html`, `?template=<id>|default`,
//! `?baseline=<build id>`). It is what a notification too big to send
//! links to. Unlike SQUAD, nothing is cached: rendering reads the database
//! each time, so `force` and `keep` change nothing.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use squadron_status::notify::{render, Report, Site, TemplateChoice};
use squadron_status::StatusError;

use super::builds::check_visible;
use super::{not_found, Rest};
use crate::error::ApiError;

/// A query parameter that must be a build or template id.
fn id_param(rest: &Rest, name: &str) -> Result<Option<i64>, ApiError> {
    match rest.param(name) {
        None => Ok(None),
        Some(text) => {
            text.parse().map(Some).map_err(|_| ApiError::bad_request(format!("{name}: {text:?} is not an id")))
        }
    }
}

/// `GET /api/builds/<id>/email/`.
pub(crate) async fn email(rest: Rest, Path(id): Path<i64>) -> Result<Response, ApiError> {
    check_visible(&rest, id).await?;
    let output = rest.param("output").unwrap_or("text/plain").to_string();
    if output != "text/plain" && output != "text/html" {
        return Err(ApiError::bad_request(format!("output: {output:?} is neither text/plain nor text/html")));
    }
    let choice = match rest.param("template") {
        None => TemplateChoice::Project,
        Some("default") => TemplateChoice::Default,
        Some(_) => TemplateChoice::Custom(id_param(&rest, "template")?.unwrap_or_default()),
    };
    let baseline = id_param(&rest, "baseline")?;
    if let Some(baseline) = baseline {
        check_visible(&rest, baseline).await?;
    }
    let site = Site { name: rest.state.config.site_name.clone(), base_url: rest.base.clone() };
    let store = &rest.state.store;
    let rendered = async {
        let report = Report::gather(store, &site, id, baseline).await?;
        render(store, &site, &report, choice).await
    }
    .await
    .map_err(|e| match e {
        StatusError::NoSuchBuild(_) => not_found(),
        StatusError::NoSuchTemplate(t) => ApiError::bad_request(format!("template: no email template {t}")),
        StatusError::Template(message) => ApiError::bad_request(format!("template error in {message}")),
        other => ApiError::internal(&other),
    })?;
    let body = match (output.as_str(), rendered.html) {
        ("text/html", Some(html)) => html,
        _ => rendered.text,
    };
    Ok(([(header::CONTENT_TYPE, format!("{output}; charset=utf-8"))], body).into_response())
}
