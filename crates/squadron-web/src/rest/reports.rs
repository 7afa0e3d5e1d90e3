//! `/api/reports/`: the delayed reports (SQUAD's DelayedReportViewSet),
//! read-only, only those of builds the caller may see. The callback's
//! token is never shown.

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use squadron_status::notify::DelayedReport;
use squadron_store::sql::Sql;

use super::builds::BUILD_FILTERS;
use super::filter::{field, relation, FilterSet, Filters, Kind, Lookup, EXACT, EXACT_IN, TEXT};
use super::page::{fetch, keyed_by_id, Paging};
use super::{time, Rest};
use crate::error::ApiError;
use crate::AppState;

/// SQUAD's DelayedReportFilter.
static REPORT_FILTERS: FilterSet = FilterSet {
    fields: &[
        field("output_format", "{p}output_format", Kind::Text, TEXT),
        field("id", "{p}id", Kind::Int, EXACT_IN),
        field("template", "{p}template_id", Kind::Int, EXACT_IN),
        field("email_recipient", "{p}email_recipient", Kind::Text, TEXT),
        field("email_recipient_notified", "{p}email_recipient_notified", Kind::Bool, EXACT),
        field("callback", "{p}callback", Kind::Text, TEXT),
        field("callback_notified", "{p}callback_notified", Kind::Bool, EXACT),
        field("data_retention_days", "{p}data_retention_days", Kind::Int, EXACT_IN),
        field("output_text", "{p}output_text", Kind::Text, TEXT),
        field("output_html", "{p}output_html", Kind::Text, TEXT),
        field("error_message", "{p}error_message", Kind::Text, TEXT),
        field("status_code", "{p}status_code", Kind::Int, EXACT_IN),
        field("created_at", "{p}created_at", Kind::Time, &[Lookup::Exact, Lookup::Gt, Lookup::Lt]),
    ],
    relations: &[
        relation("build", "{p}build_id", "builds", &BUILD_FILTERS),
        relation("baseline", "{p}baseline_id", "builds", &BUILD_FILTERS),
    ],
    unsupported: &[],
};

keyed_by_id!(DelayedReport);

/// The reports with their builds (`b`), for visibility.
fn select() -> String {
    format!("{} JOIN builds b ON b.id = r.build_id", DelayedReport::SELECT)
}

/// A report as SQUAD's DelayedReportSerializer shows it: the baseline is
/// a link to its build's status.
fn render(rest: &Rest, r: &DelayedReport) -> Value {
    let link = |path: String| json!(rest.api(&path));
    let mut m = Map::new();
    m.insert("url".into(), link(format!("reports/{}/", r.id)));
    m.insert("id".into(), json!(r.id));
    m.insert("baseline".into(), r.baseline_id.map_or(Value::Null, |b| link(format!("builds/{b}/status/"))));
    m.insert("output_format".into(), json!(r.output_format));
    m.insert("email_recipient".into(), json!(r.email_recipient));
    m.insert("email_recipient_notified".into(), json!(r.email_recipient_notified));
    m.insert("callback".into(), json!(r.callback));
    m.insert("callback_notified".into(), json!(r.callback_notified));
    m.insert("data_retention_days".into(), json!(r.data_retention_days));
    m.insert("output_subject".into(), json!(r.output_subject));
    m.insert("output_text".into(), json!(r.output_text));
    m.insert("output_html".into(), json!(r.output_html));
    m.insert("error_message".into(), json!(r.error_message));
    m.insert("status_code".into(), json!(r.status_code));
    m.insert("created_at".into(), time(&r.created_at));
    m.insert("build".into(), link(format!("builds/{}/", r.build_id)));
    m.insert("template".into(), r.template_id.map_or(Value::Null, |t| link(format!("emailtemplates/{t}/"))));
    rest.trim(m)
}

async fn list(rest: Rest) -> Result<Json<Value>, ApiError> {
    let mut conditions = Sql::new(" WHERE TRUE");
    rest.visible(&mut conditions, "b.project_id");
    Filters { engine: rest.state.store.engine_name() }.apply(&REPORT_FILTERS, "r.", &rest.params, &mut conditions)?;
    let paging =
        Paging::LimitOffset { default: "r.id", fields: &[("id", "r.id"), ("created_at", "r.created_at")], search: &[] };
    let page = fetch::<DelayedReport>(&rest, &select(), conditions, "r.id", &paging).await?;
    Ok(Json(page.into_json(|r| render(&rest, r))))
}

async fn detail(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let report: DelayedReport = rest.fetch_visible(&select(), "r.id", id, "b.project_id").await?;
    Ok(Json(render(&rest, &report)))
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/api/reports/", get(list)).route("/api/reports/{id}/", get(detail))
}
