//! SQUAD's delayed reports: a build's report rendered once for one set of
//! parameters and kept for its retention days. Asking again with the same
//! parameters finds the same report (unless forced); the request that
//! creates one enqueues [`PrepareReport`] in the same transaction, and the
//! transaction that stores the rendering enqueues its email and callback.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use squadron_queue::{NewTask, Queue, StepTx};
use squadron_store::sql::Sql;
use squadron_store::{Store, WriteTx};

use super::delayed_tasks::{PrepareReport, SendReportCallback, SendReportEmail};
use super::render::{render, EmailTemplate, TemplateChoice};
use super::report::{Report, Site};
use crate::StatusError;

/// The formats a report is asked in.
pub const REPORT_FORMATS: &[&str] = &["text/plain", "text/html"];

/// The longest a report is kept, in days (SQUAD's validator).
pub const MAX_RETENTION_DAYS: i64 = 30;

/// What a report is asked for with: asking again with the same parameters
/// finds the same report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRequest {
    /// The build.
    pub build_id: i64,
    /// The build to compare with; `None`: the build's own baseline.
    pub baseline_id: Option<i64>,
    /// The EmailTemplate; `None`: the default templates.
    pub template_id: Option<i64>,
    /// One of [`REPORT_FORMATS`].
    pub output_format: String,
    /// Who to email the report to.
    pub email_recipient: Option<String>,
    /// Where to POST the report.
    pub callback: Option<String>,
    /// The callback's `Authorization` and `Auth-Token` headers.
    pub callback_token: Option<String>,
    /// How many days the report is kept (at most [`MAX_RETENTION_DAYS`]).
    pub data_retention_days: i64,
}

impl ReportRequest {
    /// The report asked for with these parameters, made if there is none
    /// (a new one every time when `force`); and whether it was made now.
    pub async fn get_or_create(&self, store: &Store, queue: &Queue, force: bool) -> Result<(i64, bool), StatusError> {
        let mut tx = store.begin_write().await?;
        if !force {
            let mut find = Sql::new("SELECT id FROM delayed_reports WHERE build_id = ");
            find.bind(self.build_id);
            find.push(" AND COALESCE(baseline_id, 0) = ").bind(self.baseline_id.unwrap_or(0));
            find.push(" AND COALESCE(template_id, 0) = ").bind(self.template_id.unwrap_or(0));
            find.push(" AND output_format = ").bind(self.output_format.as_str());
            for (column, value) in [
                ("email_recipient", &self.email_recipient),
                ("callback", &self.callback),
                ("callback_token", &self.callback_token),
            ] {
                find.push(&format!(" AND COALESCE({column}, '') = ")).bind(value.as_deref().unwrap_or(""));
            }
            find.push(" AND data_retention_days = ").bind(self.data_retention_days);
            find.push(" ORDER BY id DESC LIMIT 1");
            if let Some((id,)) = tx.fetch_all::<(i64,)>(&find).await?.into_iter().next() {
                return Ok((id, false));
            }
        }
        let mut insert = Sql::new(
            "INSERT INTO delayed_reports (build_id, baseline_id, template_id, output_format, email_recipient, \
             callback, callback_token, data_retention_days, created_at) VALUES (",
        );
        insert.bind(self.build_id).push(", ").bind_optional(self.baseline_id);
        insert.push(", ").bind_optional(self.template_id).push(", ").bind(self.output_format.as_str());
        insert.push(", ").bind_optional(self.email_recipient.clone());
        insert.push(", ").bind_optional(self.callback.clone());
        insert.push(", ").bind_optional(self.callback_token.clone());
        insert.push(", ").bind(self.data_retention_days).push(", ").bind(Utc::now()).push(") RETURNING id");
        let id = tx.fetch_integer(&insert).await?;
        queue.enqueue(tx.conn(), &PrepareReport::task(id)).await?;
        tx.commit().await?;
        Ok((id, true))
    }
}

/// A stored report (SQUAD's DelayedReport).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DelayedReport {
    /// Its id.
    pub id: i64,
    /// The build.
    pub build_id: i64,
    /// The build compared with, if asked.
    pub baseline_id: Option<i64>,
    /// One of [`REPORT_FORMATS`].
    pub output_format: String,
    /// The EmailTemplate; `None`: the default templates.
    pub template_id: Option<i64>,
    /// Who it is emailed to.
    pub email_recipient: Option<String>,
    /// Whether that email was sent.
    pub email_recipient_notified: bool,
    /// Where it is POSTed.
    pub callback: Option<String>,
    /// The callback's token.
    pub callback_token: Option<String>,
    /// Whether the callback was sent.
    pub callback_notified: bool,
    /// How many days it is kept.
    pub data_retention_days: i64,
    /// The rendered subject.
    pub output_subject: Option<String>,
    /// The rendered text.
    pub output_text: Option<String>,
    /// The rendered HTML.
    pub output_html: Option<String>,
    /// Why it could not be rendered (a JSON object).
    pub error_message: Option<String>,
    /// 200 rendered, 400 template error, 404 build without a status;
    /// `None` while waiting to be rendered.
    pub status_code: Option<i64>,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
}

impl DelayedReport {
    /// Selects every column, the table aliased `r`.
    pub const SELECT: &'static str = "SELECT r.id, r.build_id, r.baseline_id, r.output_format, r.template_id, \
         r.email_recipient, r.email_recipient_notified, r.callback, r.callback_token, r.callback_notified, \
         r.data_retention_days, r.output_subject, r.output_text, r.output_html, r.error_message, r.status_code, \
         r.created_at FROM delayed_reports r";

    /// The report with this id, if it is still kept.
    pub async fn load(store: &Store, id: i64) -> Result<Option<DelayedReport>, StatusError> {
        let mut sql = Sql::new(Self::SELECT);
        sql.push(" WHERE r.id = ").bind(id);
        Ok(store.fetch_optional(&sql).await?)
    }

    /// Whether it was rendered.
    pub fn is_ready(&self) -> bool {
        self.status_code == Some(200)
    }
}

/// The outcome of rendering a report.
#[derive(Debug)]
pub(crate) struct Prepared {
    id: i64,
    status_code: i64,
    subject: Option<String>,
    text: Option<String>,
    html: Option<String>,
    error: Option<Value>,
    /// A report that can never be rendered is not kept (SQUAD's 404).
    keep_days: Option<i64>,
    email: bool,
    callback: bool,
}

impl Prepared {
    fn failed(row: &DelayedReport, status_code: i64, error: Value) -> Prepared {
        Prepared {
            id: row.id,
            status_code,
            subject: None,
            text: None,
            html: None,
            error: Some(error),
            keep_days: None,
            email: false,
            callback: false,
        }
    }
}

/// Renders report `id` (outside any transaction) unless it is rendered
/// already or gone: with its template and baseline, in HTML as well when
/// the project sends HTML or HTML is asked for. A template that does not
/// render is a 400 naming the part and line; a build without a status a
/// 404, not kept.
pub(crate) async fn prepare(store: &Store, site: &Site, id: i64) -> Result<Option<Prepared>, StatusError> {
    let Some(row) = DelayedReport::load(store, id).await? else { return Ok(None) };
    if row.status_code.is_some() {
        return Ok(None);
    }
    let mut report = match Report::gather(store, site, row.build_id, row.baseline_id).await {
        Ok(report) => report,
        Err(StatusError::NoSuchBuild(build)) => {
            let message = format!("Requested build status {build} doesn't exist");
            let mut prepared = Prepared::failed(&row, 404, json!({ "message": message }));
            prepared.keep_days = Some(0);
            return Ok(Some(prepared));
        }
        Err(e) => return Err(e),
    };
    report.html_mail |= row.output_format == "text/html";
    let choice = row.template_id.map_or(TemplateChoice::Default, TemplateChoice::Custom);
    match render(store, site, &report, choice).await {
        Ok(rendered) => Ok(Some(Prepared {
            id,
            status_code: 200,
            subject: Some(rendered.subject),
            text: Some(rendered.text),
            html: rendered.html,
            error: None,
            keep_days: None,
            email: row.email_recipient.is_some(),
            callback: row.callback.is_some(),
        })),
        Err(e @ (StatusError::Template(_) | StatusError::NoSuchTemplate(_))) => {
            let mut error = json!({ "message": e.to_string() });
            if let Some(template) = row.template_id {
                if let Ok(template) = EmailTemplate::load(store, template).await {
                    error["txt"] = json!(template.plain_text);
                    error["html"] = json!(template.html);
                }
            }
            Ok(Some(Prepared::failed(&row, 400, error)))
        }
        Err(e) => Err(e),
    }
}

/// Stores a rendering in `tx` unless another one was stored meanwhile;
/// a rendered report's email and callback are enqueued with it.
pub(crate) async fn store_prepared(tx: &mut WriteTx, queue: &Queue, prepared: &Prepared) -> Result<(), StatusError> {
    let mut sql = Sql::new("UPDATE delayed_reports SET status_code = ");
    sql.bind(prepared.status_code);
    sql.push(", output_subject = ").bind_optional(prepared.subject.clone());
    sql.push(", output_text = ").bind_optional(prepared.text.clone());
    sql.push(", output_html = ").bind_optional(prepared.html.clone());
    sql.push(", error_message = ").bind_optional(prepared.error.as_ref().map(Value::to_string));
    sql.push(", data_retention_days = COALESCE(").bind_optional(prepared.keep_days);
    sql.push(", data_retention_days) WHERE status_code IS NULL AND id = ").bind(prepared.id);
    if tx.execute(&sql).await? == 0 {
        return Ok(());
    }
    let id = prepared.id;
    if prepared.email {
        let task = NewTask::of(&SendReportEmail { report_id: id }).unique(format!("report_email:{id}"));
        queue.enqueue(tx.conn(), &task).await?;
    }
    if prepared.callback {
        let task = NewTask::of(&SendReportCallback { report_id: id }).unique(format!("report_callback:{id}"));
        queue.enqueue(tx.conn(), &task).await?;
    }
    Ok(())
}

/// Renders report `id` now, if no one did yet, as `/api/builds/<id>/email/`
/// answers with it at once.
pub async fn prepare_now(store: &Store, queue: &Queue, site: &Site, id: i64) -> Result<(), StatusError> {
    if let Some(prepared) = prepare(store, site, id).await? {
        let mut tx = store.begin_write().await?;
        store_prepared(&mut tx, queue, &prepared).await?;
        tx.commit().await?;
    }
    Ok(())
}
