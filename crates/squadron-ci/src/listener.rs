//! `squadron listener`: follows the event streams of the labs whose
//! backend has `listen_enabled`, and makes a job's fetch due the moment the
//! lab says the job is over, so results arrive in seconds rather than at
//! the next poll. Polling stays the safety net: a missed event only delays
//! a job until its next poll.
//!
//! Every minute the set of followed backends is reconciled with the
//! database (as SQUAD's listener manager does): new or changed backends are
//! (re)started, removed or disabled ones stopped. A stream that ends or
//! fails is reconnected with an exponential backoff (1 s to 1 min).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::Duration;

use squadron_queue::{Queue, Shutdown, StepTx};
use squadron_store::sql::Sql;
use squadron_store::Store;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::backend::{BackendError, BackendRecord, Backends, LabEvent};
use crate::{CiError, FetchJob};

/// The longest wait before reconnecting to a lab.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Follows the labs' events.
#[derive(Clone)]
pub struct Listener {
    /// The database.
    pub store: Store,
    /// Routes the fetches.
    pub queue: Queue,
    /// Opens the labs.
    pub backends: Backends,
    /// How often the followed backends are reconciled with the database.
    pub reconcile_every: Duration,
}

impl Listener {
    /// Runs until `shutdown` is signalled.
    pub async fn run(&self, shutdown: Shutdown) -> Result<(), CiError> {
        let mut following: HashMap<i64, (String, JoinHandle<()>)> = HashMap::new();
        loop {
            let wanted: Vec<BackendRecord> =
                self.store.fetch_all(&Sql::new("SELECT * FROM backends WHERE listen_enabled ORDER BY id")).await?;
            following.retain(|id, (fingerprint, handle)| {
                let keep =
                    wanted.iter().any(|r| r.id == *id && format!("{r:?}") == *fingerprint) && !handle.is_finished();
                if !keep {
                    handle.abort();
                }
                keep
            });
            for record in wanted {
                if let Entry::Vacant(slot) = following.entry(record.id) {
                    info!(backend = %record.name, "following the lab's events");
                    let fingerprint = format!("{record:?}");
                    let listener = self.clone();
                    slot.insert((fingerprint, tokio::spawn(async move { listener.follow(record).await })));
                }
            }
            tokio::select! {
                _ = shutdown.signalled() => break,
                _ = tokio::time::sleep(self.reconcile_every) => {}
            }
        }
        for (_, handle) in following.into_values() {
            handle.abort();
        }
        Ok(())
    }

    /// Follows one lab, reconnecting after failures; returns if the lab
    /// has no event stream.
    async fn follow(&self, record: BackendRecord) {
        let backend = match self.backends.open(&record) {
            Ok(backend) => backend,
            Err(e) => return warn!(backend = %record.name, error = %e, "cannot follow the lab"),
        };
        let mut backoff = Duration::from_secs(1);
        loop {
            let (sender, mut events) = mpsc::channel(1024);
            let listening = backend.listen(sender);
            tokio::pin!(listening);
            let ended = loop {
                tokio::select! {
                    ended = &mut listening => break ended,
                    Some(event) = events.recv() => {
                        match self.apply(record.id, &event).await {
                            Ok(()) => backoff = Duration::from_secs(1),
                            Err(e) => warn!(backend = %record.name, job = %event.job_id, error = %e, "cannot record a lab event"),
                        }
                    }
                }
            };
            while let Ok(event) = events.try_recv() {
                if let Err(e) = self.apply(record.id, &event).await {
                    warn!(backend = %record.name, job = %event.job_id, error = %e, "cannot record a lab event");
                }
            }
            match ended {
                Err(BackendError::NotSupported { .. }) => {
                    return info!(backend = %record.name, "the lab has no event stream; its jobs are polled");
                }
                Err(e) => {
                    warn!(backend = %record.name, error = %e, retry_in = ?backoff, "the lab's event stream failed")
                }
                Ok(()) => info!(backend = %record.name, retry_in = ?backoff, "the lab's event stream ended"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Records an event: the job's status, and its fetch due now when the
    /// job is over, in one transaction.
    pub async fn apply(&self, backend: i64, event: &LabEvent) -> Result<(), CiError> {
        let mut tx = self.store.begin_write().await?;
        let mut sql = Sql::new("UPDATE testjobs SET job_status = COALESCE(");
        sql.bind_optional(event.status.as_deref()).push(", job_status) WHERE backend_id = ").bind(backend);
        sql.push(" AND job_id = ").bind(event.job_id.as_str()).push(" AND submitted AND NOT fetched RETURNING id");
        let jobs: Vec<(i64,)> = tx.fetch_all(&sql).await?;
        if event.finished {
            for (id,) in &jobs {
                self.queue.enqueue(tx.conn(), &FetchJob::task(*id).advancing()).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
