//! Worker processes killed, stopped and terminated for real: nothing is
//! lost, run twice into the output, or left stuck. Short leases (2 s) keep
//! this quick; `scripts/queue-soak` runs longer versions.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use squadron_queue::crash_test::{CrashTestSteps, CREATE_STEP_ROWS_TABLE};
use squadron_queue::{NewTask, Queue, StepTx};
use squadron_store::testing::TestDb;

mod common;
use common::{signal, soak, terminate, wait_exit, Lcg, Start, Workers};

async fn enqueue_steps(db: &TestDb, count: usize, steps: i32, step_ms: u64) {
    db.execute(CREATE_STEP_ROWS_TABLE).await;
    let tasks: Vec<NewTask> = (0..count).map(|_| NewTask::of(&CrashTestSteps { steps, step_ms })).collect();
    let queue_db = db.store.queue_db();
    let mut tx = queue_db.begin().await.unwrap();
    Queue::default().enqueue_many(tx.conn(), &tasks).await.unwrap();
    tx.commit().await.unwrap();
}

async fn count_in(db: &TestDb, state: &str) -> i64 {
    db.scalar(&format!("SELECT COUNT(*) FROM tasks WHERE state = '{state}'")).await
}

/// Waits until every task is completed, failing after `within`.
async fn wait_all_completed(db: &TestDb, total: i64, within: Duration, workers: &Workers) {
    let deadline = Instant::now() + within;
    while count_in(db, "completed").await < total {
        assert!(
            Instant::now() < deadline,
            "not every task completed in time: {} of {total}\n{}",
            count_in(db, "completed").await,
            workers.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The output: exactly one committed row per (task, step), each with the
/// value the step computes, and every task done.
async fn assert_exactly_once(db: &TestDb, tasks: i64, steps: i64) {
    let duplicated = db
        .scalar("SELECT COUNT(*) FROM (SELECT task_id, step FROM crash_test_steps GROUP BY task_id, step HAVING COUNT(*) > 1) d")
        .await;
    assert_eq!(duplicated, 0, "no step committed twice");
    let rows = db.scalar("SELECT COUNT(*) FROM crash_test_steps").await;
    assert_eq!(rows, tasks * steps, "one committed row per step");
    let wrong = db.scalar("SELECT COUNT(*) FROM crash_test_steps WHERE value <> task_id * 1000003 + step * 7919").await;
    assert_eq!(wrong, 0, "every value as computed");
    assert_eq!(count_in(db, "completed").await, tasks);
    assert_eq!(count_in(db, "failed").await, 0, "no task failed");
    let left = db.scalar("SELECT COUNT(*) FROM tasks WHERE state NOT IN ('completed')").await;
    assert_eq!(left, 0, "nothing left running or waiting");
}

/// 2,000 checkpointed tasks on `workers` worker processes, one SIGKILLed
/// and another SIGTERMed every 0.3–1.5 s (both restarted).
async fn survive_kills(db: TestDb, processes: usize) {
    let tasks = soak("TASKS", 2000) as usize;
    let chaos_for = Duration::from_secs(soak("CHAOS_SECONDS", 12));
    const STEPS: i32 = 3;
    enqueue_steps(&db, tasks, STEPS, 15).await;
    let mut workers = Workers::new(&db);
    let args = ["--concurrency", "8", "--shutdown-timeout", "10s"];
    let mut running: Vec<Child> = (0..processes).map(|_| workers.spawn(&args)).collect();
    let mut stopping: Vec<Child> = Vec::new();
    let mut random = Lcg(u64::from(std::process::id()));
    let (mut kills, mut terms) = (0, 0);
    let chaos_until = Instant::now() + chaos_for;
    while Instant::now() < chaos_until && count_in(&db, "completed").await < tasks as i64 {
        tokio::time::sleep(Duration::from_millis(300 + random.below(1200))).await;
        let victim = random.below(processes as u64) as usize;
        let mut killed = std::mem::replace(&mut running[victim], workers.spawn(&args));
        signal(&killed, "KILL");
        killed.wait().unwrap();
        kills += 1;
        let other = (victim + 1 + random.below(processes as u64 - 1) as usize) % processes;
        let terminated = std::mem::replace(&mut running[other], workers.spawn(&args));
        signal(&terminated, "TERM");
        stopping.push(terminated);
        terms += 1;
    }
    wait_all_completed(&db, tasks as i64, Duration::from_secs(60 + tasks as u64 / 100), &workers).await;
    for child in &mut stopping {
        let status = wait_exit(child, Duration::from_secs(15));
        assert!(status.is_some_and(|s| s.success()), "SIGTERMed workers exit 0: {status:?}\n{}", workers.logs());
    }
    for child in &mut running {
        terminate(child, Duration::from_secs(15), &workers);
    }
    assert_exactly_once(&db, tasks as i64, i64::from(STEPS)).await;
    let executions = workers.starts().len() as i64;
    let rows = db.scalar("SELECT COUNT(*) FROM crash_test_steps").await;
    let rescues = db.scalar("SELECT COALESCE(SUM(rescues), 0) FROM tasks").await;
    let releases = db.scalar("SELECT COALESCE(SUM(releases), 0) FROM tasks").await;
    eprintln!(
        "{} workers, {kills} SIGKILLs and {terms} SIGTERMs: {executions} step executions for {rows} committed rows; \
         {rescues} rescues, {releases} releases",
        processes
    );
    assert!(kills >= 3, "the chaos ran: {kills} kills");
    assert!(executions > rows, "work was interrupted and redone: {executions} executions, {rows} rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_on_postgresql_survive_sigkill_and_sigterm() {
    survive_kills(TestDb::postgres().await, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_sqlite_survive_sigkill_and_sigterm() {
    survive_kills(TestDb::sqlite().await, 2).await;
}

/// Waits until a step start matching `matches` is logged.
async fn wait_start(workers: &Workers, within: Duration, what: &str, matches: impl Fn(&Start) -> bool) -> Start {
    let deadline = Instant::now() + within;
    loop {
        if let Some(start) = workers.starts().into_iter().find(|s| matches(s)) {
            return start;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", workers.logs());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A free TCP port on the loopback interface.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The value of a counter in a Prometheus text page.
fn counter(page: &str, name: &str) -> f64 {
    page.lines().find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_past_its_lease_has_its_commit_rejected() {
    let db = TestDb::postgres().await;
    enqueue_steps(&db, 1, 3, 1500).await;
    let mut workers = Workers::new(&db);
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut first = workers.spawn(&["--concurrency", "1", "--metrics-bind", &bind]);
    // The step has started computing: freeze the worker there.
    wait_start(&workers, Duration::from_secs(20), "the first worker's step", |s| s.pid == first.id()).await;
    signal(&first, "STOP");
    let mut second = workers.spawn(&["--concurrency", "1"]);
    let taken =
        wait_start(&workers, Duration::from_secs(20), "the second worker taking the task", |s| s.pid == second.id())
            .await;
    assert_eq!(taken.step, 0, "the frozen worker never committed a step");
    signal(&first, "CONT");
    // The first worker finishes computing and tries to commit: rejected.
    let metrics = format!("http://{bind}/metrics");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        if counter(&page, "squadron_queue_fenced_commits_rejected_total") >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the stale commit was not rejected\n{page}\n{}", workers.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_all_completed(&db, 1, Duration::from_secs(30), &workers).await;
    terminate(&mut first, Duration::from_secs(15), &workers);
    terminate(&mut second, Duration::from_secs(15), &workers);
    assert_exactly_once(&db, 1, 3).await;
    let stale =
        db.scalar(&format!("SELECT COUNT(*) FROM crash_test_steps WHERE worker LIKE '%:{}:%'", first.id())).await;
    assert_eq!(stale, 0, "nothing the stale worker computed was committed");
}

/// One task of 100 steps of 50 ms (more in the soak); SIGTERM around step
/// 20; a second worker finishes it from the checkpoint. Prints the
/// measured times.
async fn hand_over_on_sigterm(db: TestDb) {
    let steps = soak("HANDOVER_STEPS", 100) as i32;
    enqueue_steps(&db, 1, steps, 50).await;
    let mut workers = Workers::new(&db);
    let mut first = workers.spawn(&["--concurrency", "1"]);
    wait_start(&workers, Duration::from_secs(30), "step 20", |s| s.step == 20).await;
    let sent = Instant::now();
    signal(&first, "TERM");
    let status = wait_exit(&mut first, Duration::from_secs(20));
    let exit_after = sent.elapsed();
    assert!(status.is_some_and(|s| s.success()), "exits 0 before its shutdown timeout: {status:?}\n{}", workers.logs());
    let last_committed = db.scalar("SELECT CAST(COALESCE(MAX(step), -1) AS BIGINT) FROM crash_test_steps").await;
    let mut second = workers.spawn(&["--concurrency", "1"]);
    let resumed = wait_start(&workers, Duration::from_secs(10), "the second worker", |s| s.pid == second.id()).await;
    let handover_after = sent.elapsed();
    assert_eq!(i64::from(resumed.step), last_committed + 1, "the second worker resumes from the checkpoint");
    let run_for = Duration::from_millis(50 * steps as u64) * 2 + Duration::from_secs(30);
    wait_all_completed(&db, 1, run_for, &workers).await;
    terminate(&mut second, Duration::from_secs(15), &workers);
    assert_exactly_once(&db, 1, i64::from(steps)).await;
    let releases = db.scalar("SELECT CAST(releases AS BIGINT) FROM tasks").await;
    assert_eq!(releases, 1, "handed back once");
    let attempts = db.scalar("SELECT CAST(attempt AS BIGINT) FROM tasks").await;
    assert_eq!(attempts, 1, "the hand-back charged no attempt");
    eprintln!(
        "{}: SIGTERM at step 20; the worker exited after {:.0} ms (last committed step {last_committed}); \
         the next worker resumed at step {} {:.0} ms after the SIGTERM",
        db.store.engine_name(),
        exit_after.as_secs_f64() * 1000.0,
        resumed.step,
        handover_after.as_secs_f64() * 1000.0,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_a_long_task_over_on_postgresql() {
    hand_over_on_sigterm(TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_a_long_task_over_on_sqlite() {
    hand_over_on_sigterm(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scheduler_processes_enqueue_each_period_once() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let logs: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("scheduler-{i}.log"))).collect();
    let spawn = |log: &Path| {
        Command::new(env!("CARGO_BIN_EXE_squadron"))
            .args(["--database", &db.url, "scheduler"])
            .env("RUST_LOG", "info")
            .stderr(File::create(log).unwrap())
            .spawn()
            .unwrap()
    };
    let mut schedulers: Vec<Child> = logs.iter().map(|log| spawn(log)).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while db.scalar("SELECT COUNT(*) FROM periodic_runs").await < 2 {
        assert!(Instant::now() < deadline, "the schedulers enqueued nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give the slower scheduler time to try the same periods.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for child in &mut schedulers {
        signal(child, "TERM");
        let status = wait_exit(child, Duration::from_secs(10));
        assert!(status.is_some_and(|s| s.success()), "a scheduler exits 0 on SIGTERM: {status:?}");
    }
    let enqueued_by: Vec<usize> = logs
        .iter()
        .map(|log| std::fs::read_to_string(log).unwrap().matches("periodic task enqueued").count())
        .collect();
    let periods = db.scalar("SELECT COUNT(*) FROM periodic_runs").await;
    let schedules = db.scalar("SELECT COUNT(DISTINCT schedule) FROM periodic_runs").await;
    assert_eq!(schedules, 7, "every schedule ran");
    assert_eq!(
        enqueued_by.iter().sum::<usize>() as i64,
        periods,
        "each period enqueued by one scheduler only (by scheduler: {enqueued_by:?})"
    );
    let orphans = db.scalar("SELECT COUNT(*) FROM periodic_runs WHERE task_id NOT IN (SELECT id FROM tasks)").await;
    assert_eq!(orphans, 0, "every period names its task");
}
