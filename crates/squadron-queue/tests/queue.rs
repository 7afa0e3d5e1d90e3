//! The queue's behaviour on both engines, with workers in this process.
//! (Killed and stopped worker processes are tested by the binary's tests.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use squadron_queue::admin;
use squadron_queue::testing::TestQueueDb;
use squadron_queue::{
    both_engines, with_conn, Backoff, Enqueued, Job, Metrics, NewTask, Outcome, Periodic, Queue, QueueDb, Registry,
    Routes, RunAt, Scheduler, Shutdown, StepTx, Task, TaskError, Timing, Worker, WorkerConfig, WorkerReport,
};
use tokio::task::JoinHandle;

/// What the test kinds saw, shared with the test.
#[derive(Default)]
struct Probe {
    /// Steps started (committed or not).
    executions: AtomicUsize,
    /// Handlers running now, and the most at once.
    running: AtomicUsize,
    most_running: AtomicUsize,
    /// Task ids in the order their handlers started.
    started: Mutex<Vec<i64>>,
    /// When (µs since the epoch) each handler started, by task id.
    started_at: Mutex<BTreeMap<i64, i64>>,
    /// Runs of a task id, by attempt.
    runs: AtomicI64,
}

impl Probe {
    fn enter(&self, job: &Job) {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_running.fetch_max(now, Ordering::SeqCst);
        self.started.lock().unwrap().push(job.id());
        self.started_at.lock().unwrap().insert(job.id(), chrono::Utc::now().timestamp_micros());
        self.runs.fetch_add(1, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Writes one row per step into `steps`, checkpointing after each; the
/// step at `fail_at` fails on the first attempt only.
#[derive(Serialize, Deserialize)]
struct Steps {
    steps: i32,
    step_ms: u64,
    fail_at: Option<i32>,
}

impl Task for Steps {
    const KIND: &'static str = "test_steps";
    const QUEUE: &'static str = "core_quick";
    type Context = Probe;

    async fn run(&self, probe: &Probe, job: &mut Job) -> Result<Outcome, TaskError> {
        probe.enter(job);
        let result = self.steps(probe, job).await;
        probe.leave();
        result
    }
}

impl Steps {
    async fn steps(&self, probe: &Probe, job: &mut Job) -> Result<Outcome, TaskError> {
        let mut next: i32 = job.checkpoint()?.unwrap_or(0);
        while next < self.steps {
            probe.executions.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(self.step_ms)).await;
            if self.fail_at == Some(next) && job.attempt() == 1 {
                return Err(TaskError::failed(format!("planned failure at step {next}")));
            }
            let mut tx = job.begin().await?;
            let (id, attempt) = (job.id(), job.attempt());
            with_conn!(tx.conn(), c => {
                sqlx::query("INSERT INTO steps (task_id, step, attempt) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(next)
                    .bind(attempt)
                    .execute(c)
                    .await?;
            });
            next += 1;
            if next == self.steps {
                return job.commit_last_step(tx).await;
            }
            job.commit_step(tx, &next).await?;
        }
        Ok(Outcome::Done)
    }
}

/// Does nothing but note that it ran; fails `fail` times first, snoozes
/// `snooze_ms` once if asked, or waits for a stop if `hold`.
#[derive(Serialize, Deserialize, Default)]
struct Probed {
    fail: i32,
    permanent: bool,
    snooze_ms: Option<u64>,
    hold_ms: u64,
    wait_for_stop: bool,
}

impl Task for Probed {
    const KIND: &'static str = "test_probed";
    const QUEUE: &'static str = "core_notification";
    const MAX_ATTEMPTS: i32 = 3;
    type Context = Probe;

    async fn run(&self, probe: &Probe, job: &mut Job) -> Result<Outcome, TaskError> {
        probe.enter(job);
        if self.hold_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.hold_ms)).await;
        }
        if self.wait_for_stop {
            job.stop_requested().await;
        }
        probe.leave();
        if self.wait_for_stop {
            return Err(job.check_stop().expect_err("stopped"));
        }
        if job.attempt() <= self.fail {
            return Err(if self.permanent {
                TaskError::permanent("bad arguments")
            } else {
                TaskError::failed("flaky")
            });
        }
        if let Some(ms) = self.snooze_ms {
            if job.checkpoint::<bool>()?.is_none() {
                let tx = job.begin().await?;
                job.commit_step(tx, &true).await?;
                return Ok(Outcome::Snooze(Duration::from_millis(ms)));
            }
        }
        Ok(Outcome::Done)
    }
}

/// Short periods so that tests run fast.
fn fast_timing() -> Timing {
    Timing::new(Duration::from_secs(2), Duration::from_millis(50))
}

fn registry(probe: &Arc<Probe>) -> Registry {
    let mut registry = Registry::new();
    registry.register::<Steps>(probe.clone()).register::<Probed>(probe.clone());
    registry
}

fn config(db: &QueueDb, queues: &[(&str, usize)]) -> WorkerConfig {
    let mut config = WorkerConfig::new(db, queues.iter().map(|(q, n)| (q.to_string(), *n)).collect());
    config.timing = fast_timing();
    config.backoff = Backoff { base: Duration::from_millis(20), max: Duration::from_millis(100) };
    config.shutdown_timeout = Duration::from_secs(5);
    config
}

struct Running {
    shutdown: Shutdown,
    handle: JoinHandle<WorkerReport>,
    metrics: Metrics,
}

impl Running {
    async fn stop(self) -> WorkerReport {
        self.shutdown.signal();
        self.handle.await.expect("worker task")
    }
}

fn spawn_worker(db: &QueueDb, probe: &Arc<Probe>, config: WorkerConfig) -> Running {
    let shutdown = Shutdown::new();
    let metrics = Metrics::default();
    let worker = Worker::new(db.clone(), Queue::default(), registry(probe), config, metrics.clone());
    let stop = shutdown.clone();
    let handle = tokio::spawn(async move { worker.run(stop).await.expect("worker runs") });
    Running { shutdown, handle, metrics }
}

async fn enqueue(db: &QueueDb, tasks: &[NewTask]) -> u64 {
    let mut tx = db.begin().await.expect("begin");
    let n = Queue::default().enqueue_many(tx.conn(), tasks).await.expect("enqueue");
    tx.commit().await.expect("commit");
    n
}

async fn enqueue_one(db: &QueueDb, task: &NewTask) -> Enqueued {
    let mut tx = db.begin().await.expect("begin");
    let done = Queue::default().enqueue(tx.conn(), task).await.expect("enqueue");
    tx.commit().await.expect("commit");
    done
}

async fn setup(t: &TestQueueDb) {
    t.execute("CREATE TABLE steps (task_id BIGINT NOT NULL, step INTEGER NOT NULL, attempt INTEGER NOT NULL)").await;
}

/// Waits until `condition` holds (polling), failing after `within`.
async fn wait_until<F: std::future::Future<Output = bool>>(
    within: Duration,
    what: &str,
    mut condition: impl FnMut() -> F,
) {
    let deadline = Instant::now() + within;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn state_of(t: &TestQueueDb, id: i64) -> String {
    admin::task(&t.db, id).await.expect("task").state
}

both_engines! { TestQueueDb;

async fn every_task_completes_exactly_once_under_contention(t) {
    setup(&t).await;
    let probe = Arc::new(Probe::default());
    let tasks: Vec<NewTask> =
        (0..10_000).map(|_| NewTask::of(&Steps { steps: 1, step_ms: 0, fail_at: None })).collect();
    assert_eq!(enqueue(&t.db, &tasks).await, 10_000);
    let workers: Vec<Running> = (0..8).map(|_| spawn_worker(&t.db, &probe, config(&t.db, &[("core_quick", 4)]))).collect();
    wait_until(Duration::from_secs(120), "all tasks completed", || async {
        t.scalar("SELECT COUNT(*) FROM tasks WHERE state = 'completed'").await == 10_000
    })
    .await;
    let mut completed = 0;
    for w in workers {
        completed += w.stop().await.completed;
    }
    assert_eq!(completed, 10_000);
    assert_eq!(t.scalar("SELECT COUNT(*) FROM steps").await, 10_000);
    assert_eq!(t.scalar("SELECT COUNT(DISTINCT task_id) FROM steps").await, 10_000);
    assert_eq!(t.scalar("SELECT COUNT(*) FROM tasks WHERE attempt <> 1").await, 0);
}

async fn a_rolled_back_enqueue_leaves_no_task(t) {
    let mut tx = t.db.begin().await.unwrap();
    Queue::default().enqueue(tx.conn(), &NewTask::of(&Probed::default())).await.unwrap();
    Queue::default().enqueue_many(tx.conn(), &[NewTask::of(&Probed::default()), NewTask::of(&Probed::default())]).await.unwrap();
    drop(tx);
    assert_eq!(t.scalar("SELECT COUNT(*) FROM tasks").await, 0);
}

async fn an_expired_lease_is_rescued_and_the_task_runs(t) {
    setup(&t).await;
    // What a killed worker leaves: a running task whose lease expired.
    let id = enqueue_one(&t.db, &NewTask::of(&Steps { steps: 2, step_ms: 0, fail_at: None })).await.id();
    t.execute(&format!(
        "UPDATE tasks SET state = 'running', attempt = 1, lease_token = 1, lease_owner = 'dead:1:000000', \
         lease_expires_at = 0, claimed_at = 0, checkpoint = '1' WHERE id = {id}"
    ))
    .await;
    let probe = Arc::new(Probe::default());
    let worker = spawn_worker(&t.db, &probe, config(&t.db, &[("core_quick", 2)]));
    wait_until(Duration::from_secs(10), "rescued task completed", || async { state_of(&t, id).await == "completed" }).await;
    worker.stop().await;
    let task = admin::task(&t.db, id).await.unwrap();
    assert_eq!((task.rescues, task.attempt), (1, 2));
    // It resumed from its checkpoint: only step 1 ran.
    assert_eq!(probe.executions.load(Ordering::SeqCst), 1);
    assert_eq!(t.scalar("SELECT COUNT(*) FROM steps WHERE step = 1").await, 1);
}

async fn a_failed_task_resumes_from_its_checkpoint(t) {
    setup(&t).await;
    let id = enqueue_one(&t.db, &NewTask::of(&Steps { steps: 5, step_ms: 0, fail_at: Some(3) })).await.id();
    let probe = Arc::new(Probe::default());
    let worker = spawn_worker(&t.db, &probe, config(&t.db, &[("core_quick", 1)]));
    wait_until(Duration::from_secs(10), "completed", || async { state_of(&t, id).await == "completed" }).await;
    worker.stop().await;
    // Steps 0-2 on attempt 1, then 3 (which failed) and 4 on attempt 2.
    assert_eq!(probe.executions.load(Ordering::SeqCst), 4 + 2);
    assert_eq!(t.scalar("SELECT COUNT(*) FROM steps").await, 5);
    assert_eq!(t.scalar("SELECT COUNT(DISTINCT step) FROM steps").await, 5);
    assert_eq!(t.scalar("SELECT COUNT(*) FROM steps WHERE attempt = 2").await, 2);
    let task = admin::task(&t.db, id).await.unwrap();
    assert_eq!(task.attempt, 2);
    assert_eq!(task.last_error.as_deref(), Some("planned failure at step 3"));
}

async fn retries_back_off_then_fail_for_good_and_can_be_retried_by_hand(t) {
    let probe = Arc::new(Probe::default());
    let flaky = enqueue_one(&t.db, &NewTask::of(&Probed { fail: 2, ..Default::default() })).await.id();
    let hopeless = enqueue_one(&t.db, &NewTask::of(&Probed { fail: 99, ..Default::default() })).await.id();
    let bad = enqueue_one(&t.db, &NewTask::of(&Probed { fail: 99, permanent: true, ..Default::default() })).await.id();
    let worker = spawn_worker(&t.db, &probe, config(&t.db, &[("core_notification", 4)]));
    wait_until(Duration::from_secs(10), "all finished", || async {
        state_of(&t, flaky).await == "completed" && state_of(&t, hopeless).await == "failed" && state_of(&t, bad).await == "failed"
    })
    .await;
    let (flaky_task, hopeless_task, bad_task) =
        (admin::task(&t.db, flaky).await.unwrap(), admin::task(&t.db, hopeless).await.unwrap(), admin::task(&t.db, bad).await.unwrap());
    assert_eq!(flaky_task.attempt, 3);
    assert_eq!((hopeless_task.attempt, hopeless_task.last_error.as_deref()), (3, Some("flaky")));
    assert_eq!((bad_task.attempt, bad_task.last_error.as_deref()), (1, Some("bad arguments")));
    assert!(hopeless_task.finished_at.is_some());

    // By hand: a failed task runs again with fresh attempts; a completed
    // one too; a running one cannot be retried and a missing one is named.
    let again = admin::retry(&t.db, hopeless).await.unwrap();
    assert_eq!((again.state.as_str(), again.attempt), ("available", 0));
    wait_until(Duration::from_secs(10), "failed again", || async { state_of(&t, hopeless).await == "failed" }).await;
    assert_eq!(admin::task(&t.db, hopeless).await.unwrap().attempt, 3);
    assert!(matches!(admin::retry(&t.db, 999_999).await, Err(squadron_queue::QueueError::NoSuchTask(999_999))));
    worker.stop().await;
}

async fn a_unique_key_is_a_no_op_while_waiting(t) {
    let task = NewTask::of(&Probed::default()).unique("probe:1").run_at(RunAt::After(Duration::from_secs(60)));
    let first = enqueue_one(&t.db, &task).await;
    assert!(matches!(first, Enqueued::Inserted(_)));
    assert_eq!(enqueue_one(&t.db, &task).await, Enqueued::AlreadyWaiting(first.id()));
    assert_eq!(enqueue(&t.db, &[task.clone(), task.clone()]).await, 0);
    assert_eq!(t.scalar("SELECT COUNT(*) FROM tasks").await, 1);
    // Once it is finished the key is free again.
    admin::cancel(&t.db, first.id()).await.unwrap();
    assert!(matches!(enqueue_one(&t.db, &task).await, Enqueued::Inserted(id) if id != first.id()));
}

async fn an_advancing_enqueue_makes_a_waiting_task_due_sooner(t) {
    let later = NewTask::of(&Probed::default()).unique("probe:2").run_at(RunAt::After(Duration::from_secs(600)));
    let id = enqueue_one(&t.db, &later).await.id();
    let due = format!("SELECT run_at - (SELECT now_us FROM queue_clock) FROM tasks WHERE id = {id}");
    // A plain enqueue leaves it as it is; an advancing one brings it forward,
    // never back.
    enqueue_one(&t.db, &NewTask::of(&Probed::default()).unique("probe:2")).await;
    assert!(t.scalar(&due).await > 500_000_000);
    let sooner = NewTask::of(&Probed::default()).unique("probe:2").run_at(RunAt::After(Duration::from_secs(60)));
    assert_eq!(enqueue_one(&t.db, &sooner.clone().advancing()).await, Enqueued::AlreadyWaiting(id));
    assert!((0..=60_000_000).contains(&t.scalar(&due).await));
    enqueue_one(&t.db, &later.advancing()).await;
    assert!(t.scalar(&due).await <= 60_000_000, "an advance never postpones");
    enqueue_one(&t.db, &NewTask::of(&Probed::default()).unique("probe:2").advancing()).await;
    assert!(t.scalar(&due).await <= 0, "due now");
}

async fn a_unique_key_enqueued_while_running_runs_it_once_more(t) {
    let probe = Arc::new(Probe::default());
    let task = NewTask::of(&Probed { hold_ms: 400, ..Default::default() }).unique("probe:2");
    let id = enqueue_one(&t.db, &task).await.id();
    let worker = spawn_worker(&t.db, &probe, config(&t.db, &[("core_notification", 4)]));
    wait_until(Duration::from_secs(10), "running", || async { state_of(&t, id).await == "running" }).await;
    assert_eq!(enqueue_one(&t.db, &task).await, Enqueued::RerunRequested(id));
    assert_eq!(enqueue_one(&t.db, &task).await, Enqueued::RerunRequested(id));
    wait_until(Duration::from_secs(10), "ran twice and completed", || async {
        probe.runs.load(Ordering::SeqCst) == 2 && state_of(&t, id).await == "completed"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    worker.stop().await;
    assert_eq!(probe.runs.load(Ordering::SeqCst), 2, "two requests while running mean one more run");
    assert_eq!(t.scalar("SELECT COUNT(*) FROM tasks").await, 1);
}

async fn higher_priorities_run_first(t) {
    let probe = Arc::new(Probe::default());
    let low = enqueue_one(&t.db, &NewTask::of(&Probed::default()).priority(-1)).await.id();
    let normal = enqueue_one(&t.db, &NewTask::of(&Probed::default())).await.id();
    let high = enqueue_one(&t.db, &NewTask::of(&Probed::default()).priority(5)).await.id();
    let mut config = config(&t.db, &[("core_notification", 1)]);
    config.claim_batch = 1;
    let worker = spawn_worker(&t.db, &probe, config);
    wait_until(Duration::from_secs(10), "three ran", || async { probe.started.lock().unwrap().len() == 3 }).await;
    worker.stop().await;
    assert_eq!(*probe.started.lock().unwrap(), vec![high, normal, low]);
}

async fn a_task_runs_at_its_time_not_before(t) {
    let probe = Arc::new(Probe::default());
    let worker = spawn_worker(&t.db, &probe, config(&t.db, &[("core_notification", 1)]));
    let due = chrono::Utc::now() + chrono::Duration::milliseconds(800);
    let later = enqueue_one(&t.db, &NewTask::of(&Probed::default()).run_at(RunAt::At(due))).await.id();
    let delayed = enqueue_one(&t.db, &NewTask::of(&Probed::default()).run_at(RunAt::After(Duration::from_millis(500)))).await.id();
    let delayed_enqueued_at = chrono::Utc::now().timestamp_micros();
    assert_eq!(state_of(&t, later).await, "scheduled");
    wait_until(Duration::from_secs(10), "both ran", || async { probe.started.lock().unwrap().len() == 2 }).await;
    worker.stop().await;
    let started = probe.started_at.lock().unwrap().clone();
    assert!(started[&later] >= due.timestamp_micros(), "ran before its time");
    assert!(started[&delayed] >= delayed_enqueued_at + 400_000, "ran before its delay");
    assert_eq!(*probe.started.lock().unwrap(), vec![delayed, later]);
}

async fn each_queue_runs_at_most_its_concurrency(t) {
    let probe = Arc::new(Probe::default());
    let tasks: Vec<NewTask> = (0..10).map(|_| NewTask::of(&Probed { hold_ms: 100, ..Default::default() })).collect();
    enqueue(&t.db, &tasks).await;
    let worker = spawn_worker(&t.db, &probe, config(&t.db, &[("core_notification", 2)]));
    wait_until(Duration::from_secs(10), "all completed", || async {
        t.scalar("SELECT COUNT(*) FROM tasks WHERE state = 'completed'").await == 10
    })
    .await;
    worker.stop().await;
    assert_eq!(probe.most_running.load(Ordering::SeqCst), 2);
}

async fn a_snoozed_task_runs_again_later_without_charging_an_attempt(t) {
    let probe = Arc::new(Probe::default());
    let id = enqueue_one(&t.db, &NewTask::of(&Probed { snooze_ms: Some(300), ..Default::default() })).await.id();
    let worker = spawn_worker(&t.db, &probe, config(&t.db, &[("core_notification", 1)]));
    wait_until(Duration::from_secs(10), "completed", || async { state_of(&t, id).await == "completed" }).await;
    worker.stop().await;
    let task = admin::task(&t.db, id).await.unwrap();
    assert_eq!((task.attempt, probe.runs.load(Ordering::SeqCst)), (1, 2));
    let starts: Vec<i64> = probe.started_at.lock().unwrap().values().copied().collect();
    assert_eq!(starts.len(), 1, "one task");
}

async fn shutdown_hands_back_a_checkpointed_task_which_another_worker_finishes(t) {
    setup(&t).await;
    let probe = Arc::new(Probe::default());
    let id = enqueue_one(&t.db, &NewTask::of(&Steps { steps: 40, step_ms: 25, fail_at: None })).await.id();
    let first = spawn_worker(&t.db, &probe, config(&t.db, &[("core_quick", 1)]));
    wait_until(Duration::from_secs(10), "a few steps", || async { t.scalar("SELECT COUNT(*) FROM steps").await >= 5 }).await;
    let stopping = Instant::now();
    let report = first.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(2), "took {:?}", stopping.elapsed());
    assert!(report.drained);
    assert_eq!(report.released.len(), 1);
    assert!(report.released[0].checkpointed);
    let task = admin::task(&t.db, id).await.unwrap();
    assert_eq!((task.state.as_str(), task.attempt, task.releases), ("available", 0, 1));
    let done_before = t.scalar("SELECT COUNT(*) FROM steps").await;
    assert!(done_before < 40);

    let second = spawn_worker(&t.db, &probe, config(&t.db, &[("core_quick", 1)]));
    wait_until(Duration::from_secs(20), "completed", || async { state_of(&t, id).await == "completed" }).await;
    second.stop().await;
    assert_eq!(t.scalar("SELECT COUNT(*) FROM steps").await, 40);
    assert_eq!(t.scalar("SELECT COUNT(DISTINCT step) FROM steps").await, 40);
    assert_eq!(admin::task(&t.db, id).await.unwrap().attempt, 1);
}

async fn releases_without_progress_spend_the_interrupt_budget(t) {
    let probe = Arc::new(Probe::default());
    let task = NewTask { max_attempts: 1, ..NewTask::of(&Probed { wait_for_stop: true, ..Default::default() }) };
    let id = enqueue_one(&t.db, &task).await.id();
    for round in 1..=squadron_queue::INTERRUPT_BUDGET {
        let worker = spawn_worker(&t.db, &probe, config(&t.db, &[("core_notification", 1)]));
        wait_until(Duration::from_secs(10), "started", || async { probe.runs.load(Ordering::SeqCst) == round as i64 }).await;
        let report = worker.stop().await;
        assert_eq!(report.released.len(), 1, "round {round}");
        let task = admin::task(&t.db, id).await.unwrap();
        if round < squadron_queue::INTERRUPT_BUDGET {
            assert_eq!((task.state.as_str(), task.attempt), ("available", 0), "round {round}");
        } else {
            // The fifth release without a checkpoint is charged: with one
            // attempt allowed, the task has none left.
            assert_eq!((task.state.as_str(), task.attempt, task.releases), ("failed", 1, 5));
            assert!(task.last_error.unwrap().contains("without a new checkpoint"));
        }
    }
}

async fn a_commit_after_losing_the_lease_is_rejected_and_rolled_back(t) {
    setup(&t).await;
    let probe = Arc::new(Probe::default());
    let id = enqueue_one(&t.db, &NewTask::of(&Steps { steps: 30, step_ms: 60, fail_at: None })).await.id();
    let worker = spawn_worker(&t.db, &probe, config(&t.db, &[("core_quick", 1)]));
    wait_until(Duration::from_secs(10), "a step", || async { t.scalar("SELECT COUNT(*) FROM steps").await >= 1 }).await;
    // Another claim took the task over (as after a pause past the lease).
    t.execute(&format!("UPDATE tasks SET lease_token = lease_token + 1, lease_owner = 'other:1:000000' WHERE id = {id}")).await;
    let rows_then = t.scalar("SELECT COUNT(*) FROM steps").await;
    wait_until(Duration::from_secs(10), "fenced", || async { worker.metrics.fenced_commits_rejected() >= 1 }).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // At most the step committing during the takeover landed; none after.
    assert!(t.scalar("SELECT COUNT(*) FROM steps").await <= rows_then + 1);
    let rows_after = t.scalar("SELECT COUNT(*) FROM steps").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(t.scalar("SELECT COUNT(*) FROM steps").await, rows_after);
    let report = worker.stop().await;
    assert!(report.released.is_empty(), "a lost lease is not released");
    assert_eq!(state_of(&t, id).await, "running");
}

async fn a_cancelled_task_does_not_run_and_a_running_one_stops(t) {
    setup(&t).await;
    let probe = Arc::new(Probe::default());
    let waiting = enqueue_one(&t.db, &NewTask::of(&Probed::default()).run_at(RunAt::After(Duration::from_millis(300)))).await.id();
    let long = enqueue_one(&t.db, &NewTask::of(&Steps { steps: 100, step_ms: 20, fail_at: None })).await.id();
    assert_eq!(admin::cancel(&t.db, waiting).await.unwrap().state, "cancelled");
    let worker = spawn_worker(&t.db, &probe, config(&t.db, &[("core_quick", 1), ("core_notification", 1)]));
    wait_until(Duration::from_secs(10), "a step", || async { t.scalar("SELECT COUNT(*) FROM steps").await >= 2 }).await;
    admin::cancel(&t.db, long).await.unwrap();
    wait_until(Duration::from_secs(10), "fenced", || async { worker.metrics.fenced_commits_rejected() >= 1 }).await;
    let rows = t.scalar("SELECT COUNT(*) FROM steps").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.stop().await;
    assert_eq!(t.scalar("SELECT COUNT(*) FROM steps").await, rows);
    assert_eq!(state_of(&t, long).await, "cancelled");
    assert_eq!(state_of(&t, waiting).await, "cancelled");
    assert!(matches!(admin::cancel(&t.db, long).await, Err(squadron_queue::QueueError::WrongState { .. })));
    assert_eq!(probe.runs.load(Ordering::SeqCst), 1, "the cancelled waiting task never ran");
}

async fn routes_send_a_kind_to_another_queue(t) {
    let routes = Routes::new(BTreeMap::from([("test_probed".to_string(), "elsewhere".to_string())]));
    let mut tx = t.db.begin().await.unwrap();
    Queue::new(routes).enqueue(tx.conn(), &NewTask::of(&Probed::default())).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(t.scalar("SELECT COUNT(*) FROM tasks WHERE queue = 'elsewhere'").await, 1);
    let depths = admin::depths(&t.db, &["core_quick".to_string()]).await.unwrap();
    let names: Vec<&str> = depths.iter().map(|d| d.queue.as_str()).collect();
    assert_eq!(names, vec!["core_quick", "elsewhere"]);
    assert_eq!(depths[1].count("available"), 1);
    assert_eq!(depths[0].count("available"), 0);
}


async fn two_schedulers_enqueue_each_period_once(t) {
    let every_second = || vec![Periodic::new("probe", "* * * * * *", NewTask::of(&Probed::default())).unwrap()];
    let first = Arc::new(Scheduler::new(t.db.clone(), Queue::default(), every_second()));
    let second = Arc::new(Scheduler::new(t.db.clone(), Queue::default(), every_second()));
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().to_utc();
    // Both look at the same instants at once: four looks in each of five
    // periods.
    let instants: Vec<_> = (0..20).map(|i| start + chrono::TimeDelta::milliseconds(250 * i)).collect();
    let run = |s: Arc<Scheduler>, instants: Vec<_>| {
        tokio::spawn(async move {
            let mut fired = Vec::new();
            for now in instants {
                fired.extend(s.tick(now).await.unwrap());
            }
            fired
        })
    };
    let (a, b) = (run(first, instants.clone()), run(second, instants));
    let mut fired = a.await.unwrap();
    fired.extend(b.await.unwrap());
    let mut periods: Vec<_> = fired.iter().map(|f| f.period_start).collect();
    periods.sort();
    let expected: Vec<_> = (0..5).map(|i| start + chrono::TimeDelta::seconds(i)).collect();
    assert_eq!(periods, expected, "each period enqueued by exactly one scheduler");
    assert_eq!(t.scalar("SELECT COUNT(*) FROM periodic_runs WHERE schedule = 'probe'").await, 5);
    // Periods do not pile up behind a task no worker ran yet.
    assert_eq!(t.scalar("SELECT COUNT(*) FROM tasks").await, 1);
}


async fn pruning_removes_old_finished_tasks_and_keeps_the_latest_period(t) {
    let ids: Vec<i64> = {
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(enqueue_one(&t.db, &NewTask::of(&Probed::default())).await.id());
        }
        ids
    };
    let now = t.scalar("SELECT now_us FROM queue_clock").await;
    let hour = 3_600_000_000i64;
    for (id, state, age) in [
        (ids[0], "completed", 48 * hour),
        (ids[1], "completed", hour),
        (ids[2], "failed", 48 * hour),
        (ids[3], "failed", 200 * hour),
    ] {
        t.execute(&format!("UPDATE tasks SET state = '{state}', finished_at = {} WHERE id = {id}", now - age)).await;
    }
    for period in [1, 2] {
        t.execute(&format!("INSERT INTO periodic_runs (schedule, period_start, task_id) VALUES ('s', {period}, 0)"))
            .await;
    }
    let pruned = admin::prune(&t.db, admin::Retention::default()).await.unwrap();
    assert_eq!(pruned, 2);
    let left = t.scalar(&format!("SELECT COUNT(*) FROM tasks WHERE id IN ({}, {})", ids[0], ids[3])).await;
    assert_eq!(left, 0, "a completed task older than a day and a failed one older than a week are gone");
    assert_eq!(t.scalar("SELECT COUNT(*) FROM tasks").await, 3, "recent, failed-this-week and waiting tasks stay");
    assert_eq!(t.scalar("SELECT COUNT(*) FROM periodic_runs").await, 1);
    assert_eq!(t.scalar("SELECT period_start FROM periodic_runs").await, 2, "the latest period stays");
}

}
