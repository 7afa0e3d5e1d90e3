//! The notification tasks: the build email once a build is finished (or
//! its notification timeout fired, or its preview was approved), and the
//! timeout itself. Both are durable queue tasks: a delay is a scheduled
//! task or a snooze, never a timer held in a worker's memory.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use squadron_core::settings::parse_settings;
use squadron_queue::{Job, NewTask, Outcome, Queue, RunAt, StepTx, Task, TaskError};
use squadron_store::sql::Sql;
use squadron_store::{Store, WriteTx};

use super::delivery::{deliver, Delivery, MAIL_ATTEMPTS};
use super::mailer::Mailer;
use super::render::{render, render_failed_jobs, FailedJob, Rendered, TemplateChoice};
use super::report::Report;
use crate::patches::NotifyPatchSource;
use crate::tasks::UpdateBuildStatus;
use crate::StatusError;

/// The event of a build being finished.
pub const FINISHED: &str = "on_build_finished";
/// The event of a build's notification timeout firing before it was
/// notified.
pub const TIMEOUT: &str = "notification_timeout";
/// The event of a moderated build's notification being approved.
pub const APPROVED: &str = "approved";

/// What the notification tasks need.
pub struct Notifying {
    /// The store.
    pub store: Store,
    /// Routes the tasks they enqueue.
    pub queue: Queue,
    /// Sends the emails.
    pub mailer: Mailer,
}

/// Sends a build's notification emails for one event of one generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotifyBuild {
    /// The build.
    pub build_id: i64,
    /// [`FINISHED`], [`TIMEOUT`] or [`APPROVED`].
    pub event: String,
    /// The build's event generation.
    pub generation: i64,
}

impl NotifyBuild {
    /// The task. Finished and timeout notifications of a build share a
    /// unique key, so they never run side by side: whichever runs second
    /// finds the build notified. Approvals have their own.
    pub fn task(build_id: i64, event: &str, generation: i64) -> NewTask {
        let task = NotifyBuild { build_id, event: event.to_string(), generation };
        let key = if event == APPROVED {
            format!("notify:{build_id}:{event}:{generation}")
        } else {
            format!("notify:{build_id}")
        };
        NewTask::of(&task).unique(key)
    }
}

#[derive(sqlx::FromRow)]
struct State {
    datetime: DateTime<Utc>,
    wait_before_notification: Option<i64>,
    moderate_notifications: bool,
    project_settings: String,
    notified: bool,
    approved: bool,
}

/// One email of an event.
struct Email {
    kind: &'static str,
    rendered: Rendered,
    recipients: Vec<String>,
}

impl Task for NotifyBuild {
    const KIND: &'static str = "notify_build";
    const QUEUE: &'static str = "core_notification";
    const MAX_ATTEMPTS: i32 = MAIL_ATTEMPTS;
    type Context = Notifying;

    async fn run(&self, cx: &Notifying, job: &mut Job) -> Result<Outcome, TaskError> {
        let mut sql = Sql::new(
            "SELECT b.datetime, p.wait_before_notification, p.moderate_notifications, p.project_settings, \
                    s.notified, s.approved \
             FROM builds b JOIN projects p ON p.id = b.project_id JOIN build_status s ON s.build_id = b.id \
             WHERE b.id = ",
        );
        sql.bind(self.build_id);
        let Some(state) = cx.store.fetch_optional::<State>(&sql).await.map_err(TaskError::failed)? else {
            return Ok(Outcome::Done);
        };
        if self.event == FINISHED {
            if let Some(wait) = state.wait_before_notification.filter(|w| *w > 0) {
                let due = state.datetime + chrono::Duration::seconds(wait);
                if let Ok(remaining) = (due - Utc::now()).to_std() {
                    return Ok(Outcome::Snooze(remaining));
                }
            }
        }
        if state.notified && self.event != APPROVED {
            return Ok(Outcome::Done);
        }
        let emails = self.emails(cx, &state).await.map_err(|e| match e {
            // A template that does not render will not render next time.
            StatusError::Template(_) | StatusError::NoSuchTemplate(_) => TaskError::permanent(e),
            other => TaskError::failed(other),
        })?;
        for email in &emails {
            job.check_stop()?;
            let delivery =
                Delivery { build_id: self.build_id, event: &self.event, generation: self.generation, kind: email.kind };
            if let Some(tx) = deliver(&cx.store, &cx.mailer, &delivery, &email.rendered, &email.recipients).await? {
                job.commit_step(tx, &email.kind).await?;
            }
        }
        let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
        let mut done = Sql::new("UPDATE build_status SET notified = TRUE WHERE build_id = ");
        done.bind(self.build_id);
        tx.execute(&done).await.map_err(TaskError::failed)?;
        if self.event == FINISHED {
            // As SQUAD: once a finished build is notified, its patch source
            // hears the verdict, once.
            let mut patch = Sql::new(
                "UPDATE builds SET patch_notified = TRUE \
                 WHERE NOT patch_notified AND patch_source_id IS NOT NULL AND patch_id IS NOT NULL AND id = ",
            );
            patch.bind(self.build_id);
            if tx.execute(&patch).await.map_err(TaskError::failed)? == 1 {
                cx.queue.enqueue(tx.conn(), &NotifyPatchSource::task(self.build_id, true)).await?;
            }
        }
        job.commit_last_step(tx).await
    }
}

impl NotifyBuild {
    /// The emails this event sends: the admins' failed-jobs email (not on
    /// approval), then the build email to the subscribers, or its preview
    /// to the admins while the project moderates and the build is not
    /// approved.
    async fn emails(&self, cx: &Notifying, state: &State) -> Result<Vec<Email>, StatusError> {
        // Most projects have no subscribers: then there is nothing to
        // gather or render.
        let mut anyone = Sql::new(
            "SELECT (SELECT COUNT(*) FROM subscriptions s WHERE s.project_id = b.project_id) \
                  + (SELECT COUNT(*) FROM admin_subscriptions a WHERE a.project_id = b.project_id) \
             FROM builds b WHERE b.id = ",
        );
        anyone.bind(self.build_id);
        if cx.store.fetch_count(&anyone).await? == 0 {
            return Ok(Vec::new());
        }
        let site = cx.mailer.site();
        let report = Report::gather(&cx.store, site, self.build_id, None).await?;
        let admins = admin_recipients(&cx.store, report.project.id).await?;
        let mut emails = Vec::new();
        if self.event != APPROVED && !admins.is_empty() {
            let jobs = failed_jobs(&cx.store, self.build_id).await?;
            if !jobs.is_empty() {
                let rendered = render_failed_jobs(&report, site, &jobs)?.bounded(site, self.build_id);
                emails.push(Email { kind: "failed_jobs", rendered, recipients: admins.clone() });
            }
        }
        let rendered = render(&cx.store, site, &report, TemplateChoice::Project).await?;
        if state.moderate_notifications && !state.approved {
            let rendered = rendered.preview(&report, site)?.bounded(site, self.build_id);
            emails.push(Email { kind: "preview", rendered, recipients: admins });
        } else {
            let recipients = recipients(&cx.store, &report, &state.project_settings, self.build_id).await?;
            let rendered = rendered.bounded(site, self.build_id);
            emails.push(Email { kind: "build", rendered, recipients });
        }
        emails.retain(|e| !e.recipients.is_empty());
        Ok(emails)
    }
}

/// The admin subscribers' addresses.
async fn admin_recipients(store: &Store, project_id: i64) -> Result<Vec<String>, StatusError> {
    let mut sql = Sql::new("SELECT email FROM admin_subscriptions WHERE project_id = ");
    sql.bind(project_id).push(" ORDER BY id");
    let rows: Vec<(String,)> = store.fetch_all(&sql).await?;
    Ok(rows.into_iter().map(|(e,)| e).filter(|e| !e.trim().is_empty()).collect())
}

/// The build's fetched CI jobs that failed.
async fn failed_jobs(store: &Store, build_id: i64) -> Result<Vec<FailedJob>, StatusError> {
    let mut sql = Sql::new(
        "SELECT job_id, name, environment, job_status, failure FROM testjobs \
         WHERE fetched AND failure IS NOT NULL AND target_build_id = ",
    );
    sql.bind(build_id).push(" ORDER BY id");
    Ok(store.fetch_all(&sql).await?)
}

/// The subscribers whose strategy wants this build (SQUAD's rules):
/// `all`; `change` if there is a baseline and a regression or fix;
/// `regression` if there is a baseline and a regression; `error` if one of
/// the build's CI jobs ended with the project's `CI_LAVA_JOB_ERROR_STATUS`.
/// A user's subscription goes to their current address.
async fn recipients(
    store: &Store,
    report: &Report,
    project_settings: &str,
    build_id: i64,
) -> Result<Vec<String>, StatusError> {
    let mut sql = Sql::new(
        "SELECT s.notification_strategy, COALESCE(s.email, u.email) FROM subscriptions s \
         LEFT JOIN users u ON u.id = s.user_id WHERE s.project_id = ",
    );
    sql.bind(report.project.id).push(" ORDER BY s.id");
    let subscriptions: Vec<(String, Option<String>)> = store.fetch_all(&sql).await?;
    let has_baseline = report.previous_build.is_some();
    let regressions = report.changes.regressions.values().any(|v| !v.is_empty());
    let fixes = report.changes.fixes.values().any(|v| !v.is_empty());
    let mut errored = None;
    let mut out: Vec<String> = Vec::new();
    for (strategy, email) in subscriptions {
        let wanted = match strategy.as_str() {
            "change" => has_baseline && (regressions || fixes),
            "regression" => has_baseline && regressions,
            "error" => {
                if errored.is_none() {
                    errored = Some(has_errored_job(store, project_settings, build_id).await?);
                }
                errored == Some(true)
            }
            _ => true,
        };
        match email.filter(|e| !e.trim().is_empty()) {
            Some(email) if wanted && !out.contains(&email) => out.push(email),
            _ => {}
        }
    }
    Ok(out)
}

async fn has_errored_job(store: &Store, project_settings: &str, build_id: i64) -> Result<bool, StatusError> {
    let settings = parse_settings(project_settings).unwrap_or_default();
    let Some(status) = settings.get("CI_LAVA_JOB_ERROR_STATUS").and_then(|v| v.as_str()).filter(|s| !s.is_empty())
    else {
        tracing::warn!(build = build_id, "CI_LAVA_JOB_ERROR_STATUS is not set: 'error' subscriptions get nothing");
        return Ok(false);
    };
    let mut sql = Sql::new("SELECT COUNT(*) FROM testjobs WHERE target_build_id = ");
    sql.bind(build_id).push(" AND job_status = ").bind(status);
    Ok(store.fetch_count(&sql).await? > 0)
}

/// Arms the build's notification timeout when its status is first
/// written, if the project has one: marks the timer armed and schedules
/// [`NotificationTimeout`], in the caller's transaction.
pub(crate) async fn arm_timeout(tx: &mut WriteTx, queue: &Queue, build_id: i64) -> Result<(), StatusError> {
    let mut timeout = Sql::new(
        "SELECT COALESCE(p.notification_timeout, 0) FROM builds b JOIN projects p ON p.id = b.project_id WHERE b.id = ",
    );
    timeout.bind(build_id);
    let seconds = tx.fetch_integer(&timeout).await?;
    if seconds <= 0 {
        return Ok(());
    }
    let mut arm = Sql::new(
        "UPDATE build_status SET notified_on_timeout = FALSE WHERE notified_on_timeout IS NULL AND build_id = ",
    );
    arm.bind(build_id);
    if tx.execute(&arm).await? == 1 {
        let due = RunAt::After(std::time::Duration::from_secs(seconds as u64));
        let task = NewTask::of(&NotificationTimeout { build_id })
            .run_at(due)
            .unique(format!("notification_timeout:{build_id}"));
        queue.enqueue(tx.conn(), &task).await?;
    }
    Ok(())
}

/// Fires a build's notification timeout: if the build was not notified
/// yet, it is notified now whatever its state, and with the project's
/// `force_finishing_builds_on_timeout` it counts as finished from then on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotificationTimeout {
    /// The build.
    pub build_id: i64,
}

impl Task for NotificationTimeout {
    const KIND: &'static str = "notification_timeout";
    const QUEUE: &'static str = "core_notification";
    type Context = Notifying;

    async fn run(&self, cx: &Notifying, job: &mut Job) -> Result<Outcome, TaskError> {
        let mut tx = cx.store.begin_write().await.map_err(TaskError::failed)?;
        let mut fire = Sql::new(
            "UPDATE build_status SET notified_on_timeout = TRUE \
             WHERE NOT notified AND NOT COALESCE(notified_on_timeout, FALSE) AND build_id = ",
        );
        fire.bind(self.build_id);
        if tx.execute(&fire).await.map_err(TaskError::failed)? == 1 {
            let generation = record_event(&mut tx, self.build_id, TIMEOUT).await.map_err(TaskError::failed)?;
            if let Some(generation) = generation {
                cx.queue.enqueue(tx.conn(), &NotifyBuild::task(self.build_id, TIMEOUT, generation)).await?;
            }
            let mut force = Sql::new(
                "SELECT COUNT(*) FROM builds b JOIN projects p ON p.id = b.project_id \
                 WHERE p.force_finishing_builds_on_timeout AND b.id = ",
            );
            force.bind(self.build_id);
            if tx.fetch_integer(&force).await.map_err(TaskError::failed)? > 0 {
                cx.queue.enqueue(tx.conn(), &UpdateBuildStatus::rebaseline(self.build_id)).await?;
            }
        }
        job.commit_last_step(tx).await
    }
}

/// Inserts the build's `event` of its current generation; the generation
/// if it was not recorded yet.
pub(crate) async fn record_event(tx: &mut WriteTx, build_id: i64, event: &str) -> Result<Option<i64>, StatusError> {
    let mut insert = Sql::new("INSERT INTO build_events (build_id, event, generation, created_at) SELECT id, ");
    insert.bind(event).push(", event_generation, ").bind(Utc::now());
    insert.push(" FROM builds WHERE id = ").bind(build_id).push(" ON CONFLICT DO NOTHING");
    if tx.execute(&insert).await? == 0 {
        return Ok(None);
    }
    let mut generation = Sql::new("SELECT event_generation FROM builds WHERE id = ");
    generation.bind(build_id);
    Ok(Some(tx.fetch_integer(&generation).await?))
}

/// Approves a moderated build's notification and enqueues the real one;
/// false if it was approved already.
pub async fn approve_build(store: &Store, queue: &Queue, build_id: i64) -> Result<bool, StatusError> {
    let mut tx = store.begin_write().await?;
    let mut approve = Sql::new("UPDATE build_status SET approved = TRUE WHERE NOT approved AND build_id = ");
    approve.bind(build_id);
    if tx.execute(&approve).await? == 0 {
        return Ok(false);
    }
    if let Some(generation) = record_event(&mut tx, build_id, APPROVED).await? {
        queue.enqueue(tx.conn(), &NotifyBuild::task(build_id, APPROVED, generation)).await?;
    }
    tx.commit().await?;
    Ok(true)
}
