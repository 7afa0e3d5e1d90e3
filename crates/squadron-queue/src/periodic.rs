//! Periodic tasks: cron schedules whose every period enqueues one task,
//! however many schedulers run.
//!
//! A scheduler that sees a period start inserts `(schedule, period_start)`
//! into `periodic_runs` and enqueues the period's task in the same
//! transaction. The primary key lets exactly one scheduler win each period;
//! the others' inserts change nothing and they enqueue nothing. Only the
//! latest period is looked at: a scheduler that was down for three periods
//! runs the task once when it comes back, not three times.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tracing::{info, warn};

use crate::db::{QueueDb, QueueTx, StepTx};
use crate::enqueue::Queue;
use crate::task::NewTask;
use crate::worker::Shutdown;
use crate::{with_conn, QueueError};

/// How long a scheduler sleeps at most between two looks at its schedules.
const LONGEST_SLEEP: Duration = Duration::from_secs(30);

/// How long a scheduler waits after the database failed before it tries
/// again.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);

/// A task enqueued once per period of a cron schedule.
#[derive(Debug, Clone)]
pub struct Periodic {
    name: String,
    schedule: cron::Schedule,
    task: NewTask,
}

impl Periodic {
    /// A schedule named `name` (unique among schedules: it keys the
    /// periods already run) enqueuing `task`. `cron` is a crontab line
    /// (`minute hour day month weekday`) or the same with seconds first
    /// (six or seven fields). Each period's task has the unique key
    /// `periodic:<name>` unless it has one, so periods do not pile up while
    /// no worker runs them.
    pub fn new(name: impl Into<String>, cron: &str, task: NewTask) -> Result<Periodic, QueueError> {
        let name = name.into();
        let fields = cron.split_whitespace().count();
        let expression = if fields == 5 { format!("0 {cron}") } else { cron.to_string() };
        let schedule = cron::Schedule::from_str(&expression)
            .map_err(|e| QueueError::BadSchedule { name: name.clone(), reason: e.to_string() })?;
        let task = if task.unique_key.is_none() { task.unique(format!("periodic:{name}")) } else { task };
        Ok(Periodic { name, schedule, task })
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The start of the latest period at or before `now`.
    fn period_start(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(&(now + TimeDelta::milliseconds(1))).next_back()
    }

    /// When the next period starts after `now`.
    fn next_start(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(&now).next()
    }
}

/// A period some scheduler enqueued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The schedule.
    pub schedule: String,
    /// When its period started.
    pub period_start: DateTime<Utc>,
    /// The task enqueued for it.
    pub task_id: i64,
}

/// Enqueues the tasks of periodic schedules as their periods start.
pub struct Scheduler {
    db: QueueDb,
    queue: Queue,
    schedules: Vec<Periodic>,
}

impl Scheduler {
    /// A scheduler for `schedules`, enqueuing through `queue`.
    pub fn new(db: QueueDb, queue: Queue, schedules: Vec<Periodic>) -> Scheduler {
        Scheduler { db, queue, schedules }
    }

    /// Enqueues the current period of every schedule that no scheduler has
    /// enqueued yet; returns what this call enqueued.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<Vec<Fired>, QueueError> {
        let mut fired = Vec::new();
        for periodic in &self.schedules {
            let Some(start) = periodic.period_start(now) else { continue };
            let mut tx = self.db.begin().await?;
            if let Some(task_id) = self.claim_period(&mut tx, periodic, start).await? {
                tx.commit().await?;
                fired.push(Fired { schedule: periodic.name.clone(), period_start: start, task_id });
            }
        }
        Ok(fired)
    }

    /// Inserts the period's row and enqueues its task, or returns `None`
    /// when another scheduler already did.
    async fn claim_period(
        &self,
        tx: &mut QueueTx,
        periodic: &Periodic,
        start: DateTime<Utc>,
    ) -> Result<Option<i64>, QueueError> {
        let start_us = start.timestamp_micros();
        let claimed = with_conn!(tx.conn(), c => sqlx::query(
            "INSERT INTO periodic_runs (schedule, period_start, task_id) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
        )
        .bind(&periodic.name)
        .bind(start_us)
        .execute(&mut *c)
        .await?
        .rows_affected());
        if claimed == 0 {
            return Ok(None);
        }
        let task_id = self.queue.enqueue(tx.conn(), &periodic.task).await?.id();
        with_conn!(tx.conn(), c => sqlx::query(
            "UPDATE periodic_runs SET task_id = $3 WHERE schedule = $1 AND period_start = $2",
        )
        .bind(&periodic.name)
        .bind(start_us)
        .bind(task_id)
        .execute(&mut *c)
        .await
        .map(|_| ()))?;
        Ok(Some(task_id))
    }

    /// How long to sleep after `now` before a period may start.
    fn sleep_after(&self, now: DateTime<Utc>) -> Duration {
        self.schedules
            .iter()
            .filter_map(|p| p.next_start(now))
            .map(|next| (next - now).to_std().unwrap_or_default())
            .min()
            .unwrap_or(LONGEST_SLEEP)
            .min(LONGEST_SLEEP)
    }

    /// Ticks as periods start until `shutdown` is signalled. A database
    /// failure is logged and retried: the scheduler outlives outages.
    pub async fn run(self, shutdown: Shutdown) {
        while !shutdown.is_signalled() {
            let sleep = match self.tick(Utc::now()).await {
                Ok(fired) => {
                    for f in fired {
                        info!(schedule = %f.schedule, period = %f.period_start, task = f.task_id, "periodic task enqueued");
                    }
                    self.sleep_after(Utc::now())
                }
                Err(e) => {
                    warn!(error = %e, "periodic scheduling failed; trying again");
                    RETRY_AFTER_ERROR
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.signalled() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn task() -> NewTask {
        NewTask {
            kind: "k".into(),
            default_queue: "q".into(),
            args: "{}".into(),
            priority: 0,
            run_at: crate::RunAt::Now,
            unique_key: None,
            max_attempts: 3,
            advance: false,
        }
    }

    #[test]
    fn crontab_lines_and_periods() {
        let every_5 = Periodic::new("sweep", "*/5 * * * *", task()).unwrap();
        assert_eq!(every_5.period_start(at("2026-01-01T10:07:30Z")), Some(at("2026-01-01T10:05:00Z")));
        assert_eq!(every_5.period_start(at("2026-01-01T10:05:00Z")), Some(at("2026-01-01T10:05:00Z")));
        assert_eq!(every_5.next_start(at("2026-01-01T10:05:00Z")), Some(at("2026-01-01T10:10:00Z")));
        assert_eq!(every_5.task.unique_key.as_deref(), Some("periodic:sweep"));
        let every_second = Periodic::new("s", "* * * * * *", task()).unwrap();
        assert_eq!(every_second.period_start(at("2026-01-01T10:05:01.5Z")), Some(at("2026-01-01T10:05:01Z")));
        let err = Periodic::new("bad", "every day", task()).unwrap_err();
        assert!(err.to_string().contains("bad"), "{err}");
    }
}
