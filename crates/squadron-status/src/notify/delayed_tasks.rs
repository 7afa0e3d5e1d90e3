//! The tasks of delayed reports: rendering one (`core_reporting`), its
//! email and its callback (`core_notification`, each sent at least once
//! and marked notified in a fenced step), and the removal of reports past
//! their retention days (`core_quick`).

use chrono::Utc;
use serde::{Deserialize, Serialize};
use squadron_queue::{Job, NewTask, Outcome, Task, TaskError};
use squadron_store::sql::Sql;
use squadron_store::{Store, WriteTx};
use tracing::info;

use super::delayed::{prepare, store_prepared, DelayedReport};
use super::delivery::{deliver, Delivery, MAIL_ATTEMPTS};
use super::render::Rendered;
use super::tasks::Notifying;
use crate::callbacks::{Delivering, CALLBACK_ATTEMPTS};

/// Renders a report, then enqueues its email and callback with the
/// rendering (SQUAD's `prepare_report`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepareReport {
    /// The report.
    pub report_id: i64,
}

impl PrepareReport {
    /// The task (one waiting per report).
    pub fn task(report_id: i64) -> NewTask {
        NewTask::of(&PrepareReport { report_id }).unique(format!("prepare_report:{report_id}"))
    }
}

impl Task for PrepareReport {
    const KIND: &'static str = "prepare_report";
    const QUEUE: &'static str = "core_reporting";
    type Context = Notifying;

    async fn run(&self, cx: &Notifying, job: &mut Job) -> Result<Outcome, TaskError> {
        let prepared = prepare(&cx.store, cx.mailer.site(), self.report_id).await.map_err(TaskError::failed)?;
        let Some(prepared) = prepared else { return Ok(Outcome::Done) };
        let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
        store_prepared(&mut tx, &cx.queue, &prepared).await.map_err(TaskError::failed)?;
        job.commit_last_step(tx).await
    }
}

/// The report, if it is still kept, rendered, and not `notified` yet.
async fn pending(
    store: &Store,
    report_id: i64,
    notified: fn(&DelayedReport) -> bool,
) -> Result<Option<DelayedReport>, TaskError> {
    let report = DelayedReport::load(store, report_id).await.map_err(TaskError::failed)?;
    Ok(report.filter(|r| r.is_ready() && !notified(r)))
}

/// Marks a report notified through `column`, committed as the task's last
/// (fenced) step with `tx`'s other writes.
async fn mark_notified(mut tx: WriteTx, job: &mut Job, report_id: i64, column: &str) -> Result<Outcome, TaskError> {
    let mut done = Sql::new(&format!("UPDATE delayed_reports SET {column} = TRUE WHERE id = "));
    done.bind(report_id);
    tx.execute(&done).await.map_err(TaskError::failed)?;
    job.commit_last_step(tx).await
}

/// Emails a rendered report to its recipient (SQUAD's
/// `notify_delayed_report_email`): subject `Custom report <id>`, the text
/// and, when rendered, the HTML.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendReportEmail {
    /// The report.
    pub report_id: i64,
}

impl Task for SendReportEmail {
    const KIND: &'static str = "send_report_email";
    const QUEUE: &'static str = "core_notification";
    const MAX_ATTEMPTS: i32 = MAIL_ATTEMPTS;
    type Context = Notifying;

    async fn run(&self, cx: &Notifying, job: &mut Job) -> Result<Outcome, TaskError> {
        let Some(report) = pending(&cx.store, self.report_id, |r| r.email_recipient_notified).await? else {
            return Ok(Outcome::Done);
        };
        let Some(recipient) = report.email_recipient.clone() else { return Ok(Outcome::Done) };
        let email = Rendered {
            subject: format!("Custom report {}", report.id),
            text: report.output_text.unwrap_or_default(),
            html: report.output_html,
        }
        .bounded(cx.mailer.site(), report.build_id);
        let delivery = Delivery { build_id: report.build_id, event: "report", generation: report.id, kind: "email" };
        let tx = match deliver(&cx.store, &cx.mailer, &delivery, &email, &[recipient]).await? {
            Some(tx) => tx,
            None => cx.store.begin_write().await.map_err(TaskError::failed)?,
        };
        mark_notified(tx, job, report.id, "email_recipient_notified").await
    }
}

/// POSTs a rendered report to its callback (SQUAD's
/// `notify_delayed_report_callback`): form fields `text` and `html`,
/// headers `Authorization` and `Auth-Token` with the callback's token, and
/// an `Idempotency-Key` that is the same on every attempt. Network errors
/// and 5xx answers are tried again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendReportCallback {
    /// The report.
    pub report_id: i64,
}

impl SendReportCallback {
    /// The key every attempt carries.
    pub fn idempotency_key(report_id: i64) -> String {
        format!("squadron-report-{report_id}-callback")
    }
}

impl Task for SendReportCallback {
    const KIND: &'static str = "send_report_callback";
    const QUEUE: &'static str = "core_notification";
    const MAX_ATTEMPTS: i32 = CALLBACK_ATTEMPTS;
    type Context = Delivering;

    async fn run(&self, cx: &Delivering, job: &mut Job) -> Result<Outcome, TaskError> {
        let Some(report) = pending(&cx.store, self.report_id, |r| r.callback_notified).await? else {
            return Ok(Outcome::Done);
        };
        let Some(url) = report.callback.as_deref() else { return Ok(Outcome::Done) };
        let form: Vec<(&str, &str)> =
            [("text", report.output_text.as_deref()), ("html", report.output_html.as_deref())]
                .into_iter()
                .filter_map(|(name, value)| value.map(|v| (name, v)))
                .collect();
        let mut request = cx.http.post(url).header("Idempotency-Key", Self::idempotency_key(report.id)).form(&form);
        if let Some(token) = &report.callback_token {
            request = request.header("Authorization", token).header("Auth-Token", token);
        }
        match request.send().await {
            Err(e) => return Err(TaskError::failed(format!("report callback to {url}: {e}"))),
            Ok(response) if response.status().is_server_error() => {
                return Err(TaskError::failed(format!("report callback to {url}: HTTP {}", response.status())))
            }
            Ok(_) => {}
        }
        let tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
        mark_notified(tx, job, report.id, "callback_notified").await
    }
}

/// Reports removed per statement, so no deletion holds the writer long.
const REMOVED_PER_BATCH: i64 = 1_000;

/// Removes the reports older than their retention days (SQUAD's
/// `remove_delayed_reports`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RemoveDelayedReports {}

impl Task for RemoveDelayedReports {
    const KIND: &'static str = "remove_delayed_reports";
    const QUEUE: &'static str = "core_quick";
    type Context = Store;

    async fn run(&self, store: &Store, _job: &mut Job) -> Result<Outcome, TaskError> {
        let retentions: Vec<(i64,)> = store
            .fetch_all(&Sql::new("SELECT DISTINCT data_retention_days FROM delayed_reports"))
            .await
            .map_err(TaskError::failed)?;
        let now = Utc::now();
        let mut removed = 0;
        for (days,) in retentions {
            let cutoff = now - chrono::Duration::days(days);
            loop {
                let mut sql =
                    Sql::new("DELETE FROM delayed_reports WHERE id IN (SELECT id FROM delayed_reports WHERE ");
                sql.push("data_retention_days = ").bind(days).push(" AND created_at < ").bind(cutoff);
                sql.push(&format!(" LIMIT {REMOVED_PER_BATCH})"));
                let count = store.execute(&sql).await.map_err(TaskError::failed)?;
                removed += count;
                if (count as i64) < REMOVED_PER_BATCH {
                    break;
                }
            }
        }
        if removed > 0 {
            info!(removed, "removed delayed reports past their retention");
        }
        Ok(Outcome::Done)
    }
}
