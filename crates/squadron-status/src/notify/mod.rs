//! Email notifications (SQUAD's `core/notification.py`): who gets a
//! build's email (subscriptions and their strategies, admin subscriptions,
//! moderation), what it says (the default templates or a project's
//! EmailTemplate), and the tasks that send it at least once per event, with
//! a Message-ID that is the same on every attempt; and SQUAD's delayed
//! reports, a build's report rendered on request and emailed or POSTed.

mod delayed;
mod delayed_tasks;
mod delivery;
mod mailer;
mod render;
mod report;
mod tasks;

pub use delayed::{prepare_now, DelayedReport, ReportRequest, MAX_RETENTION_DAYS, REPORT_FORMATS};
pub use delayed_tasks::{PrepareReport, RemoveDelayedReports, SendReportCallback, SendReportEmail};
pub use mailer::{is_email, MailSettings, Mailer};
pub use render::{render, EmailTemplate, Rendered, TemplateChoice, LARGEST_BODY};
pub use report::{Report, Site, LISTED};
pub use tasks::{approve_build, NotificationTimeout, NotifyBuild, Notifying, APPROVED, FINISHED, TIMEOUT};
pub(crate) use tasks::{arm_timeout, record_event};
