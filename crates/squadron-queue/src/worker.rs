//! The worker runtime: claim loops per queue, handlers, batched
//! completions, heartbeats on a thread of their own, the rescuer, wake-ups,
//! and graceful shutdown.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, SqliteConnection};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::db::{Conn, QueueDb, Wake};
use crate::enqueue::{notify_queues, Queue};
use crate::job::Job;
use crate::lease::{self, Claimed, Released, Setback};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::task::{Outcome, TaskError};
use crate::QueueError;

/// Lease and polling periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a claim holds a task without a heartbeat.
    pub lease: Duration,
    /// How often a worker renews its leases.
    pub heartbeat: Duration,
    /// How often a worker looks for expired leases of any worker.
    pub rescue: Duration,
    /// How often an idle claim loop looks for work without being woken.
    pub poll: Duration,
}

impl Timing {
    /// A lease of `lease`, renewed every third of it and rescued as often,
    /// polling every `poll`.
    pub fn new(lease: Duration, poll: Duration) -> Timing {
        Timing { lease, heartbeat: lease / 3, rescue: lease / 3, poll }
    }

    /// The defaults for `db`: a 30 s lease; SQLite polls every 250 ms
    /// (other processes cannot wake it), PostgreSQL every second as a
    /// fallback behind `LISTEN/NOTIFY`.
    pub fn default_for(db: &QueueDb) -> Timing {
        let poll = match db {
            QueueDb::Sqlite { .. } => Duration::from_millis(250),
            QueueDb::Postgres(_) => Duration::from_secs(1),
        };
        Timing::new(Duration::from_secs(30), poll)
    }
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Names this worker's leases (unique per process).
    pub owner: String,
    /// The queues to serve, each with how many of its tasks may run at once.
    pub queues: Vec<(String, usize)>,
    /// Lease and polling periods.
    pub timing: Timing,
    /// Waits between attempts of a failing task.
    pub backoff: Backoff,
    /// How long a graceful shutdown waits for handlers to reach a step
    /// boundary before it hands their tasks back anyway.
    pub shutdown_timeout: Duration,
    /// The most tasks one claim statement takes.
    pub claim_batch: usize,
}

impl WorkerConfig {
    /// A configuration with the defaults for `db`, serving `queues`.
    pub fn new(db: &QueueDb, queues: Vec<(String, usize)>) -> WorkerConfig {
        WorkerConfig {
            owner: default_owner(),
            queues,
            timing: Timing::default_for(db),
            backoff: Backoff::default(),
            shutdown_timeout: Duration::from_secs(20),
            claim_batch: 1000,
        }
    }
}

/// `host:pid:random`: names a worker process's leases.
pub fn default_owner() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    let mut random = [0u8; 3];
    getrandom::fill(&mut random).expect("the operating system provides randomness");
    format!("{host}:{}:{:02x}{:02x}{:02x}", std::process::id(), random[0], random[1], random[2])
}

/// Tells a running worker to stop: the first call of [`Shutdown::signal`]
/// starts a graceful shutdown, the second makes it immediate. Cheap to
/// clone.
#[derive(Clone, Default)]
pub struct Shutdown {
    graceful: CancellationToken,
    immediate: CancellationToken,
}

impl Shutdown {
    /// A handle not yet signalled.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Escalates: graceful first, then immediate.
    pub fn signal(&self) {
        if self.graceful.is_cancelled() {
            self.immediate.cancel();
        } else {
            self.graceful.cancel();
        }
    }

    /// Whether a shutdown began.
    pub fn is_signalled(&self) -> bool {
        self.graceful.is_cancelled()
    }

    /// Resolves when a shutdown begins.
    pub async fn signalled(&self) {
        self.graceful.cancelled().await
    }
}

/// What a worker did before it stopped.
#[derive(Debug, Default)]
pub struct WorkerReport {
    /// Tasks it completed.
    pub completed: u64,
    /// Tasks it handed back to the queue on shutdown.
    pub released: Vec<Released>,
    /// Whether every handler stopped within the shutdown timeout.
    pub drained: bool,
}

/// Runs tasks of the registered kinds from the configured queues until
/// told to stop.
pub struct Worker {
    db: QueueDb,
    queue: Queue,
    registry: Registry,
    config: WorkerConfig,
    metrics: Metrics,
}

/// A handler running in this process.
struct Running {
    token: i64,
    lost: CancellationToken,
    abort: AbortHandle,
}

/// A completion waiting for the next batch.
struct Completion {
    id: i64,
    token: i64,
}

/// One wake per served queue.
struct Wakes(HashMap<String, Wake>);

impl Wakes {
    fn wake(&self, queue: &str) {
        if let Some(w) = self.0.get(queue) {
            w.wake();
        }
    }

    fn wake_all(&self) {
        self.0.values().for_each(Wake::wake);
    }
}

/// What every part of a running worker shares.
struct Shared {
    db: QueueDb,
    queue: Queue,
    registry: Registry,
    config: WorkerConfig,
    metrics: Metrics,
    wakes: Wakes,
    kinds: BTreeMap<String, Vec<String>>,
    running: Mutex<HashMap<i64, Running>>,
    handlers: TaskTracker,
    stopping: CancellationToken,
    completions: mpsc::UnboundedSender<Completion>,
    completed: AtomicU64,
    released: Mutex<Vec<Released>>,
}

impl Worker {
    /// A worker for `db` running `registry`'s kinds, routed by `queue`.
    pub fn new(db: QueueDb, queue: Queue, registry: Registry, config: WorkerConfig, metrics: Metrics) -> Worker {
        Worker { db, queue, registry, config, metrics }
    }

    /// Runs until `shutdown` is signalled, then stops claiming, lets
    /// handlers reach their next step boundary (at most the shutdown
    /// timeout, or until a second signal), hands back every task it still
    /// holds, and returns.
    pub async fn run(self, shutdown: Shutdown) -> Result<WorkerReport, QueueError> {
        let Worker { db, queue, registry, config, metrics } = self;
        let kinds: BTreeMap<String, Vec<String>> =
            config.queues.iter().map(|(name, _)| (name.clone(), registry.kinds_on(queue.routes(), name))).collect();
        let wakes = Wakes(config.queues.iter().map(|(name, _)| (name.clone(), Wake::default())).collect());
        let (completions, completion_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            db,
            queue,
            registry,
            config,
            metrics,
            wakes,
            kinds,
            running: Mutex::new(HashMap::new()),
            handlers: TaskTracker::new(),
            stopping: shutdown.graceful.child_token(),
            completions,
            completed: AtomicU64::new(0),
            released: Mutex::new(Vec::new()),
        });
        tracing::info!(
            owner = %shared.config.owner,
            queues = ?shared.config.queues,
            engine = shared.db.engine_name(),
            "worker started"
        );

        // Dropping this future (the process ending without a shutdown)
        // stops the heartbeat thread too, so the leases expire as they
        // would if the process died.
        let background = CancellationToken::new();
        let _stop_background = background.clone().drop_guard();
        let completer_stop = CancellationToken::new();
        let completer = tokio::spawn(complete_batches(shared.clone(), completion_rx, completer_stop.clone()));
        let heartbeat = spawn_heartbeat(shared.clone(), background.clone());
        let mut services = JoinSet::new();
        services.spawn(rescue_expired(shared.clone(), background.clone()));
        services.spawn(forward_wakes(shared.clone(), background.clone()));
        let mut loops = JoinSet::new();
        for (name, concurrency) in shared.config.queues.clone() {
            loops.spawn(claim_loop(shared.clone(), name, concurrency));
        }

        shutdown.graceful.cancelled().await;
        let stopping = Instant::now();
        tracing::info!(
            running = shared.handlers.len(),
            "shutting down: no new claims; handlers stop at their next step"
        );
        while loops.join_next().await.is_some() {}
        shared.handlers.close();
        let drained = tokio::select! {
            _ = shared.handlers.wait() => true,
            _ = tokio::time::sleep(shared.config.shutdown_timeout) => false,
            _ = shutdown.immediate.cancelled() => false,
        };
        if !drained {
            let running: Vec<AbortHandle> =
                shared.running.lock().expect("running set").values().map(|r| r.abort.clone()).collect();
            tracing::warn!(handlers = running.len(), "stopping handlers mid-step");
            running.iter().for_each(AbortHandle::abort);
            shared.handlers.wait().await;
        }
        // Every completion is written before the leases that remain are
        // handed back, so that no finished task is released.
        completer_stop.cancel();
        let _ = completer.await;
        match lease::release_owner(&shared.db, &shared.config.owner).await {
            Ok(leftover) => leftover.into_iter().for_each(|task| record_release(&shared, task)),
            Err(e) => {
                tracing::error!(error = %e, "could not hand back the remaining leases; they will expire and be rescued")
            }
        }
        background.cancel();
        while services.join_next().await.is_some() {}
        let _ = tokio::task::spawn_blocking(move || heartbeat.join()).await;
        let released = std::mem::take(&mut *shared.released.lock().expect("released list"));
        let completed = shared.completed.load(Ordering::Relaxed);
        tracing::info!(
            released = released.len(),
            completed,
            took_ms = stopping.elapsed().as_millis() as u64,
            "worker stopped"
        );
        Ok(WorkerReport { completed, released, drained })
    }
}

/// Claims tasks of one queue while it has free slots, and starts them.
async fn claim_loop(shared: Arc<Shared>, queue: String, concurrency: usize) {
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let kinds = shared.kinds.get(&queue).cloned().unwrap_or_default();
    if kinds.is_empty() {
        tracing::warn!(queue, "no registered kind runs on this queue; not claiming from it");
        return;
    }
    let mut woken = shared.wakes.0[&queue].subscribe();
    loop {
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = shared.stopping.cancelled() => return,
        };
        let mut permits = vec![first];
        while permits.len() < shared.config.claim_batch {
            match slots.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        if shared.stopping.is_cancelled() {
            return;
        }
        woken.borrow_and_update();
        let started = Instant::now();
        let wanted = permits.len();
        let claimed =
            lease::claim(&shared.db, &queue, &kinds, &shared.config.owner, shared.config.timing.lease, wanted).await;
        shared.metrics.claimed(&queue, started.elapsed());
        let got = match claimed {
            Ok(tasks) => {
                let got = tasks.len();
                for task in tasks {
                    start(&shared, task, permits.pop().expect("one permit per claimed task"));
                }
                got
            }
            Err(e) => {
                tracing::warn!(queue, error = %e, "claim failed; retrying after the poll interval");
                0
            }
        };
        drop(permits);
        if got < wanted {
            wait_for_work(&shared, &mut woken).await;
        }
    }
}

/// Waits until woken, the poll interval passes, or the worker stops.
async fn wait_for_work(shared: &Shared, woken: &mut watch::Receiver<u64>) {
    tokio::select! {
        _ = woken.changed() => {}
        _ = tokio::time::sleep(shared.config.timing.poll) => {}
        _ = shared.stopping.cancelled() => {}
    }
}

/// Starts a claimed task's handler.
fn start(shared: &Arc<Shared>, task: Claimed, permit: OwnedSemaphorePermit) {
    let lost = CancellationToken::new();
    let (id, token) = (task.id, task.lease_token);
    // The running set's lock is held while spawning so that the handler
    // cannot finish (and remove itself) before it is recorded.
    let mut running = shared.running.lock().expect("running set");
    let handle = shared.handlers.spawn(execute(shared.clone(), task, lost.clone(), permit));
    running.insert(id, Running { token, lost, abort: handle.abort_handle() });
}

/// Runs one task's handler and records how it ended.
async fn execute(shared: Arc<Shared>, task: Claimed, lost: CancellationToken, permit: OwnedSemaphorePermit) {
    let started = Instant::now();
    let (id, token, attempt, max_attempts) = (task.id, task.lease_token, task.attempt, task.max_attempts);
    let (kind, args) = (task.kind.clone(), task.args.clone());
    let mut job = Job::new(
        task,
        shared.db.clone(),
        shared.queue.clone(),
        shared.config.timing,
        shared.metrics.clone(),
        shared.stopping.clone(),
        lost,
    );
    let result = if shared.stopping.is_cancelled() {
        Err(TaskError::Interrupted)
    } else {
        AssertUnwindSafe(shared.registry.run(&kind, &args, &mut job))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(TaskError::Failed(format!("handler panicked: {}", panic_message(&panic)))))
    };
    let outcome = match result {
        Ok(Outcome::Done) => {
            if !job.completed() {
                // The completer writes it with others in one statement.
                let _ = shared.completions.send(Completion { id, token });
            } else {
                shared.completed.fetch_add(1, Ordering::Relaxed);
            }
            "completed"
        }
        Ok(Outcome::Snooze(delay)) => {
            set_back(&shared, id, token, &kind, Setback::Snooze { delay }).await;
            "snoozed"
        }
        Err(TaskError::Interrupted) => {
            match lease::release(&shared.db, id, token).await {
                Ok(Some(task)) => record_release(&shared, task),
                Ok(None) => {}
                Err(e) => tracing::warn!(task = id, error = %e, "could not hand the task back; its lease will expire"),
            }
            "released"
        }
        Err(TaskError::Fenced) => "fenced",
        Err(TaskError::Failed(error)) if attempt < max_attempts => {
            let backoff = shared.config.backoff.delay(attempt);
            tracing::info!(
                task = id,
                kind,
                attempt,
                error,
                retry_in_ms = backoff.as_millis() as u64,
                "task failed; will retry"
            );
            set_back(&shared, id, token, &kind, Setback::Retry { error, backoff }).await;
            "retried"
        }
        Err(TaskError::Failed(error) | TaskError::Permanent(error)) => {
            tracing::warn!(task = id, kind, attempt, error, "task failed for good");
            set_back(&shared, id, token, &kind, Setback::Fail { error }).await;
            "failed"
        }
    };
    shared.metrics.ran(&kind, outcome, started.elapsed());
    shared.running.lock().expect("running set").remove(&id);
    drop(permit);
}

/// Records a setback; on a database error the lease expires and the
/// rescuer makes the task runnable again, so nothing is lost.
async fn set_back(shared: &Shared, id: i64, token: i64, kind: &str, setback: Setback) {
    match lease::set_back(&shared.db, id, token, &setback).await {
        Ok(Some(finished)) if finished.runs_again => {
            shared.wakes.wake(&finished.queue);
            notify_queues(&shared.db, [finished.queue.as_str()]).await;
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(task = id, kind, error = %e, "could not record the task's outcome; its lease will expire")
        }
    }
}

fn record_release(shared: &Shared, task: Released) {
    tracing::info!(
        task = task.id,
        kind = task.kind,
        queue = task.queue,
        state = task.state,
        checkpointed = task.checkpointed,
        "handed the task back"
    );
    shared.metrics.released(&task.queue);
    shared.released.lock().expect("released list").push(task);
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

/// Completions waiting at once, written in one statement.
const COMPLETION_BATCH: usize = 1000;

/// Writes completions in batches until stopped, then writes what is left.
async fn complete_batches(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Completion>, stop: CancellationToken) {
    let mut batch = Vec::with_capacity(COMPLETION_BATCH);
    loop {
        let first = tokio::select! {
            biased;
            next = rx.recv() => next,
            _ = stop.cancelled() => None,
        };
        let Some(first) = first else {
            // Stopping: no handler runs any more; write what is queued.
            while let Ok(c) = rx.try_recv() {
                batch.push(c);
                if batch.len() == COMPLETION_BATCH {
                    write_completions(&shared, &mut batch).await;
                }
            }
            write_completions(&shared, &mut batch).await;
            return;
        };
        batch.push(first);
        while batch.len() < COMPLETION_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        write_completions(&shared, &mut batch).await;
    }
}

/// Writes one batch of completions, retrying a failed write a few times;
/// if it keeps failing, the leases expire and the tasks run again (their
/// handlers tolerate replay), so nothing is lost.
async fn write_completions(shared: &Shared, batch: &mut Vec<Completion>) {
    if batch.is_empty() {
        return;
    }
    let pairs: Vec<(i64, i64)> = batch.iter().map(|c| (c.id, c.token)).collect();
    batch.clear();
    for attempt in 0..3u32 {
        match lease::complete_many(&shared.db, &pairs).await {
            Ok(finished) => {
                shared.completed.fetch_add(finished.len() as u64, Ordering::Relaxed);
                let again: HashSet<&str> = finished.iter().filter(|f| f.runs_again).map(|f| f.queue.as_str()).collect();
                for queue in &again {
                    shared.wakes.wake(queue);
                }
                notify_queues(&shared.db, again).await;
                return;
            }
            Err(e) => {
                tracing::warn!(tasks = pairs.len(), error = %e, "could not write completions");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
        }
    }
}

/// Runs the heartbeat on a thread and a connection of its own, so that
/// neither busy async threads nor a busy pool can delay it.
fn spawn_heartbeat(shared: Arc<Shared>, stop: CancellationToken) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("squadron-heartbeat".to_string())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the heartbeat thread");
            runtime.block_on(heartbeat(shared, stop));
        })
        .expect("spawn the heartbeat thread")
}

/// The heartbeat's own connection.
enum HeartbeatConn {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

async fn heartbeat_conn(db: &QueueDb) -> Result<HeartbeatConn, sqlx::Error> {
    Ok(match db {
        QueueDb::Sqlite { writer, .. } => {
            HeartbeatConn::Sqlite(SqliteConnection::connect_with(&writer.connect_options()).await?)
        }
        QueueDb::Postgres(pool) => HeartbeatConn::Postgres(PgConnection::connect_with(&pool.connect_options()).await?),
    })
}

/// Renews every lease this worker holds, every heartbeat period, in one
/// statement. A handler whose lease is gone (rescued after a pause,
/// cancelled) is told to stop; so is every handler once renewals have
/// failed for a whole lease.
async fn heartbeat(shared: Arc<Shared>, stop: CancellationToken) {
    let timing = shared.config.timing;
    let mut conn: Option<HeartbeatConn> = None;
    let mut renewed_at = Instant::now();
    let mut suspects: HashSet<(i64, i64)> = HashSet::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(timing.heartbeat) => {}
            _ = stop.cancelled() => return,
        }
        let snapshot: Vec<(i64, i64, CancellationToken)> =
            shared.running.lock().expect("running set").iter().map(|(id, r)| (*id, r.token, r.lost.clone())).collect();
        if snapshot.is_empty() {
            renewed_at = Instant::now();
            continue;
        }
        if conn.is_none() {
            conn = heartbeat_conn(&shared.db)
                .await
                .map_err(|e| tracing::warn!(error = %e, "heartbeat connection failed"))
                .ok();
        }
        let renewed = match conn.as_mut() {
            Some(HeartbeatConn::Sqlite(c)) => lease::renew(Conn::Sqlite(c), &shared.config.owner, timing.lease).await,
            Some(HeartbeatConn::Postgres(c)) => {
                lease::renew(Conn::Postgres(c), &shared.config.owner, timing.lease).await
            }
            None => Err(QueueError::Unavailable("no heartbeat connection".to_string())),
        };
        match renewed {
            Ok(held) => {
                renewed_at = Instant::now();
                let held: HashSet<(i64, i64)> = held.into_iter().collect();
                // A handler may finish its task between the snapshot and the
                // renewal; only a lease missing from two renewals in a row
                // was lost.
                let mut missing = HashSet::new();
                for (id, token, lost) in snapshot {
                    if held.contains(&(id, token)) || lost.is_cancelled() {
                        continue;
                    }
                    if suspects.contains(&(id, token)) {
                        tracing::warn!(task = id, "lease lost (rescued or cancelled); stopping its handler");
                        lost.cancel();
                    } else {
                        missing.insert((id, token));
                    }
                }
                suspects = missing;
            }
            Err(e) => {
                conn = None;
                tracing::warn!(error = %e, "heartbeat failed");
                if renewed_at.elapsed() >= timing.lease {
                    snapshot.iter().for_each(|(_, _, lost)| lost.cancel());
                }
            }
        }
    }
}

/// Makes tasks whose lease expired (of any worker) runnable again, every
/// rescue period.
async fn rescue_expired(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(shared.config.timing.rescue) => {}
            _ = stop.cancelled() => return,
        }
        match lease::rescue(&shared.db).await {
            Ok(rescued) => {
                for task in &rescued {
                    tracing::info!(
                        task = task.id,
                        kind = task.kind,
                        queue = task.queue,
                        state = task.state,
                        "rescued a task whose lease expired"
                    );
                    shared.metrics.rescued(&task.queue);
                    shared.wakes.wake(&task.queue);
                }
                notify_queues(&shared.db, rescued.iter().map(|t| t.queue.as_str()).collect::<HashSet<_>>()).await;
            }
            Err(e) => tracing::warn!(error = %e, "rescue failed"),
        }
    }
}

/// Wakes the claim loops when work may have arrived: on SQLite when this
/// process commits new tasks, on PostgreSQL on `NOTIFY` from any process.
async fn forward_wakes(shared: Arc<Shared>, stop: CancellationToken) {
    match &shared.db {
        QueueDb::Sqlite { wake, .. } => {
            let mut inserted = wake.subscribe();
            loop {
                tokio::select! {
                    changed = inserted.changed() => if changed.is_err() { return },
                    _ = stop.cancelled() => return,
                }
                shared.wakes.wake_all();
            }
        }
        QueueDb::Postgres(pool) => loop {
            tokio::select! {
                _ = listen(&shared, pool) => {}
                _ = stop.cancelled() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.cancelled() => return,
            }
        },
    }
}

/// Follows `NOTIFY` until the connection fails.
async fn listen(shared: &Shared, pool: &sqlx::PgPool) {
    let mut listener = match PgListener::connect_with(pool).await {
        Ok(listener) => listener,
        Err(e) => return tracing::warn!(error = %e, "LISTEN connection failed; polling meanwhile"),
    };
    if let Err(e) = listener.listen(crate::enqueue::NOTIFY_CHANNEL).await {
        return tracing::warn!(error = %e, "LISTEN failed; polling meanwhile");
    }
    // Anything enqueued before LISTEN took effect is found by this sweep.
    shared.wakes.wake_all();
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => shared.wakes.wake(notification.payload()),
            // Reconnected: notifications may have been missed.
            Ok(None) => shared.wakes.wake_all(),
            Err(e) => return tracing::warn!(error = %e, "LISTEN connection lost; polling meanwhile"),
        }
    }
}
