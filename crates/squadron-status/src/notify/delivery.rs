//! Sending one email at least once: the attempt is recorded (and
//! committed) before it is sent, every attempt carries the same
//! Message-ID, and it is marked sent in a transaction the caller commits as
//! its task's step, with its own writes.

use chrono::Utc;
use squadron_queue::TaskError;
use squadron_store::sql::Sql;
use squadron_store::{Store, WriteTx};

use super::mailer::Mailer;
use super::render::Rendered;

/// How many times an email is tried before its task fails.
pub(crate) const MAIL_ATTEMPTS: i32 = 10;

/// Which email this is, as `notification_deliveries` keys it: one email
/// of one build event (the event of a delayed report is `report`, its
/// generation the report's id).
pub(crate) struct Delivery<'a> {
    /// The build.
    pub build_id: i64,
    /// The event.
    pub event: &'a str,
    /// The event's generation.
    pub generation: i64,
    /// Which of the event's emails.
    pub kind: &'a str,
}

/// Sends `email` to `recipients` unless this delivery was sent already.
/// Returns the open transaction that marks it sent, for the caller to
/// commit (fenced) as its step; `None` when it was sent before.
pub(crate) async fn deliver(
    store: &Store,
    mailer: &Mailer,
    delivery: &Delivery<'_>,
    email: &Rendered,
    recipients: &[String],
) -> Result<Option<WriteTx>, TaskError> {
    let Delivery { build_id: build, event, generation, kind } = *delivery;
    let mut sent = Sql::new("SELECT COUNT(*) FROM notification_deliveries WHERE sent_at IS NOT NULL AND build_id = ");
    sent.bind(build).push(" AND event = ").bind(event).push(" AND generation = ").bind(generation);
    sent.push(" AND kind = ").bind(kind);
    if store.fetch_count(&sent).await.map_err(TaskError::failed)? > 0 {
        return Ok(None);
    }
    let message_id = mailer.message_id(&format!("squadron.build-{build}.{event}.{generation}.{kind}"));
    let mut tx = store.begin_write().await.map_err(TaskError::failed)?;
    let mut attempt = Sql::new(
        "INSERT INTO notification_deliveries (build_id, event, generation, kind, message_id, recipients, subject, \
         attempts, last_attempt_at) VALUES (",
    );
    attempt.bind(build).push(", ").bind(event).push(", ").bind(generation).push(", ").bind(kind);
    attempt.push(", ").bind(message_id.as_str()).push(", ").bind(recipients.join(", "));
    attempt.push(", ").bind(email.subject.as_str()).push(", 1, ").bind(Utc::now());
    attempt.push(
        ") ON CONFLICT (build_id, event, generation, kind) DO UPDATE SET \
         attempts = notification_deliveries.attempts + 1, last_attempt_at = excluded.last_attempt_at",
    );
    tx.execute(&attempt).await.map_err(TaskError::failed)?;
    tx.commit().await.map_err(TaskError::failed)?;
    if let Err(e) = mailer.send(email, recipients, &message_id).await {
        let mut failed = Sql::new("UPDATE notification_deliveries SET error = ");
        failed.bind(e.to_string()).push(" WHERE message_id = ").bind(message_id.as_str());
        let mut tx = store.begin_write().await.map_err(TaskError::failed)?;
        tx.execute(&failed).await.map_err(TaskError::failed)?;
        tx.commit().await.map_err(TaskError::failed)?;
        return Err(TaskError::failed(e));
    }
    crate::crash_window::after_send(&message_id);
    let mut tx = store.begin_write().await.map_err(TaskError::failed)?;
    let mut done = Sql::new("UPDATE notification_deliveries SET error = NULL, sent_at = ");
    done.bind(Utc::now()).push(" WHERE message_id = ").bind(message_id.as_str());
    tx.execute(&done).await.map_err(TaskError::failed)?;
    Ok(Some(tx))
}
