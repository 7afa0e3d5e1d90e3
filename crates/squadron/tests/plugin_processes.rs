//! The `tradefed` plugin with its worker killed for real (2 s leases): a
//! directly submitted run whose `test_result.xml` takes about ten steps is
//! post-processed by a `squadron worker` process that is SIGKILLed (or
//! SIGTERMed) after a random number of committed steps, at a random moment
//! of the next one; a second worker finishes the task. The run's tests
//! (suite, name, result, log), metrics and status rows, and the build's
//! status, equal those of an uninterrupted run; the build is finished and
//! no `pending_postprocess` row is left.

use std::fmt::Write as _;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use squadron_ci::PostprocessRun;
use squadron_plugins::tradefed::BATCH_TESTS;
use squadron_queue::Queue;
use squadron_store::ingest::{IngestOptions, Submission};
use squadron_store::postprocess::RunPostprocess;
use squadron_store::sql::Sql;
use squadron_store::testing::TestDb;

mod common;

use common::{signal, terminate, wait_exit, Lcg, Workers};

/// Steps of the plugin's task: one to find the report, then one per batch
/// of tests.
const BATCHES: usize = 6;

/// A tradefed report of `BATCHES` full batches and a partial one: two ABIs
/// of a few modules, every 97th test failing with a stack trace, every
/// 211th an `ASSUMPTION_FAILURE`, every 101st `IGNORED`, and one module not
/// done.
fn report() -> String {
    let tests = BATCH_TESTS * BATCHES + BATCH_TESTS / 2;
    let (modules, cases) = (6, 50);
    let per_case = tests.div_ceil(modules * cases);
    let mut xml = String::from(
        "<?xml version='1.0' encoding='UTF-8' standalone='no' ?>\n<Result start=\"1\" end=\"2\" \
         suite_name=\"CTS\" suite_version=\"14_r3\" report_version=\"5.0\">\n  <Build build_abis_64=\"arm64-v8a\" />\n  \
         <Summary pass=\"0\" failed=\"0\" modules_done=\"5\" modules_total=\"6\" />\n",
    );
    let mut n = 0;
    for m in 0..modules {
        let abi = if m % 2 == 0 { "arm64-v8a" } else { "armeabi-v7a" };
        let done = if m == 3 { "false" } else { "true" };
        writeln!(xml, "  <Module name=\"CtsModule{}\" abi=\"{abi}\" runtime=\"1\" done=\"{done}\">", m / 2).unwrap();
        for c in 0..cases {
            writeln!(xml, "    <TestCase name=\"android.cts.Case{c}Tests\">").unwrap();
            for t in 0..per_case {
                if n == tests {
                    break;
                }
                n += 1;
                let name = format!("test{t}Does{}", n % 7);
                if n % 97 == 0 || n % 211 == 0 {
                    let result = if n % 97 == 0 { "fail" } else { "ASSUMPTION_FAILURE" };
                    writeln!(
                        xml,
                        "      <Test result=\"{result}\" name=\"{name}\">\n        <Failure message=\"failed &amp; gone\">\
                         <StackTrace>java.lang.AssertionError: expected {n}\n\tat android.cts.Case{c}Tests.{name}(Case.java:{t})\
                         </StackTrace></Failure>\n      </Test>"
                    )
                    .unwrap();
                } else {
                    let result = if n % 101 == 0 { "IGNORED" } else { "pass" };
                    writeln!(xml, "      <Test result=\"{result}\" name=\"{name}\" />").unwrap();
                }
            }
            xml.push_str("    </TestCase>\n");
        }
        xml.push_str("  </Module>\n");
    }
    xml.push_str("</Result>\n");
    assert_eq!(n, tests, "the report holds every test");
    xml
}

/// How the first worker is interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupt {
    None,
    Kill,
    Term,
}

/// Submits a run with the report to a project with the `tradefed` plugin,
/// as `/api/submit` does; returns the run's id.
async fn submit(db: &TestDb, report: &str) -> i64 {
    let project = db.public_project().await;
    db.execute(&format!("UPDATE projects SET enabled_plugins_list = 'tradefed' WHERE id = {project}")).await;
    let blob = db.blobs.put(report.as_bytes()).await.unwrap();
    let queue = Queue::default();
    let submission = Submission {
        project_id: project,
        build_version: "v1".into(),
        environment_slug: "android".into(),
        metadata: Default::default(),
        tests_file: None,
        metrics_file: None,
        log_file: None,
        attachments: vec![("test_result.xml".into(), blob)],
        completed: true,
    };
    let options = IngestOptions {
        on_publish: Some(squadron_status::on_publish(queue.clone())),
        postprocess: Some(RunPostprocess {
            queue,
            plugins: vec!["tradefed".into()],
            task: Arc::new(|run, plugin| PostprocessRun::task(run, plugin, None)),
        }),
        ..Default::default()
    };
    db.store.ingest(&db.blobs, &submission, options).await.unwrap()
}

/// Steps of the task committed so far: its checkpoint is the plugin's
/// cursor, whose counts say how many tests were read.
async fn committed_steps(db: &TestDb) -> usize {
    let checkpoint: Vec<(Option<String>,)> =
        db.store.fetch_all(&Sql::new("SELECT checkpoint FROM tasks WHERE kind = 'ci_postprocess'")).await.unwrap();
    let Some((Some(checkpoint),)) = checkpoint.into_iter().next() else { return 0 };
    let cursor: serde_json::Value = serde_json::from_str(&checkpoint).unwrap();
    let read = cursor["next"]["Read"]["parse"]["counts"]["tests"].as_u64().unwrap_or(0) as usize;
    1 + read.div_ceil(BATCH_TESTS)
}

/// What a scenario ended with.
struct Ended {
    dump: String,
    /// The step the first worker was interrupted in (0 for none).
    interrupted_at: usize,
    elapsed: Duration,
}

/// Runs the plugin on a fresh database of `engine`, interrupting the first
/// worker as `interrupt` says, after a number of committed steps drawn
/// from `random`.
async fn scenario(engine: &str, interrupt: Interrupt, report: &str, random: &mut Lcg) -> Ended {
    let db = if engine == "sqlite" { TestDb::sqlite().await } else { TestDb::postgres().await };
    let run = submit(&db, report).await;
    let data_dir = db.scratch.dir.path().to_str().unwrap().to_string();
    let mut workers = Workers::new(&db);
    workers.queue = "ci_fetch_postprocess,core_postprocess";
    let args = ["--data-dir", &data_dir, "--concurrency", "1", "--shutdown-timeout", "20s"];
    let started = Instant::now();
    let mut first = workers.spawn(&args);
    let mut interrupted_at = 0;
    let mut rest: Vec<Child> = Vec::new();
    if interrupt != Interrupt::None {
        // After 1..BATCHES committed steps (the next one a full batch), at
        // a random moment into the next, well before it ends.
        let after = 1 + random.below(BATCHES as u64 - 1) as usize;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = (Instant::now(), 0);
        let mut step_time = Duration::from_millis(100);
        loop {
            let steps = committed_steps(&db).await;
            if steps != last.1 {
                if last.1 > 0 {
                    step_time = last.0.elapsed() / (steps - last.1) as u32;
                }
                last = (Instant::now(), steps);
            }
            if steps >= after {
                break;
            }
            assert!(Instant::now() < deadline, "the worker did not commit {after} steps\n{}", workers.logs());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(step_time.mul_f64(random.below(70) as f64 / 100.0)).await;
        interrupted_at = committed_steps(&db).await + 1;
        match interrupt {
            Interrupt::Kill => {
                signal(&first, "KILL");
                assert!(wait_exit(&mut first, Duration::from_secs(10)).is_some(), "a SIGKILLed worker exits");
            }
            _ => {
                terminate(&mut first, Duration::from_secs(20), &workers);
            }
        }
        rest.push(std::mem::replace(&mut first, workers.spawn(&args)));
    }
    let done = format!(
        "SELECT CAST(CASE WHEN (SELECT COUNT(*) FROM pending_postprocess) = 0 \
         AND (SELECT COUNT(*) FROM build_status s JOIN testruns r ON r.build_id = s.build_id \
              WHERE r.id = {run} AND s.finished) = 1 \
         AND (SELECT COUNT(*) FROM tasks WHERE state IN ('available', 'scheduled', 'running', 'retryable') \
              AND queue IN ('ci_fetch_postprocess', 'core_postprocess')) = 0 \
         THEN 1 ELSE 0 END AS BIGINT)"
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    while db.scalar(&done).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the run was not post-processed; tasks: {}\n{}",
            db.text("SELECT COALESCE(STRING_AGG(kind || ' ' || state || ' ' || COALESCE(last_error, ''), ', '), '') FROM tasks")
                .await,
            workers.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    terminate(&mut first, Duration::from_secs(20), &workers);
    drop(rest);

    assert_eq!(db.scalar("SELECT COUNT(*) FROM tasks WHERE state = 'failed'").await, 0, "no task failed");
    assert_eq!(db.scalar("SELECT COUNT(*) FROM pending_postprocess").await, 0, "no pending post-processing");
    let (rescues, releases) = (
        db.scalar("SELECT CAST(rescues AS BIGINT) FROM tasks WHERE kind = 'ci_postprocess'").await,
        db.scalar("SELECT CAST(releases AS BIGINT) FROM tasks WHERE kind = 'ci_postprocess'").await,
    );
    match interrupt {
        Interrupt::None => assert_eq!((rescues, releases), (0, 0), "an uninterrupted task"),
        Interrupt::Kill => assert_eq!(rescues, 1, "the killed worker's task was taken over"),
        Interrupt::Term => assert_eq!(releases, 1, "the SIGTERMed worker handed the task back"),
    }
    Ended { dump: dump(&db, run).await, interrupted_at, elapsed }
}

/// A test: suite, name, result, known issues, log.
type TestRow = (String, String, Option<bool>, Option<bool>, Option<String>);
/// A metric: suite, name, result, measurements.
type MetricRow = (String, String, f64, String);
/// A status row: suite, pass, fail, xfail, skip, has_metrics.
type StatusRow = (Option<String>, i64, i64, i64, i64, bool);

/// The run's content over natural keys, and its build's status.
async fn dump(db: &TestDb, run: i64) -> String {
    let mut out = String::new();
    let mut tests = Sql::new(
        "SELECT s.slug, m.name, t.result, t.has_known_issues, t.log FROM tests t JOIN suites s ON s.id = t.suite_id \
         JOIN suite_metadata m ON m.id = t.metadata_id WHERE t.test_run_id = ",
    );
    tests.bind(run).push(" ORDER BY s.slug, m.name");
    let tests: Vec<TestRow> = db.store.fetch_all(&tests).await.unwrap();
    assert!(tests.len() > BATCH_TESTS * BATCHES, "every test is stored: {}", tests.len());
    for row in tests {
        writeln!(out, "test {row:?}").unwrap();
    }
    let mut metrics = Sql::new(
        "SELECT s.slug, m.name, t.result, t.measurements FROM metrics t JOIN suites s ON s.id = t.suite_id \
         JOIN suite_metadata m ON m.id = t.metadata_id WHERE t.test_run_id = ",
    );
    metrics.bind(run).push(" ORDER BY s.slug, m.name");
    let metrics: Vec<MetricRow> = db.store.fetch_all(&metrics).await.unwrap();
    assert!(!metrics.is_empty(), "the report's counts are metrics");
    for row in metrics {
        writeln!(out, "metric {row:?}").unwrap();
    }
    let mut statuses = Sql::new(
        "SELECT s.slug, st.tests_pass, st.tests_fail, st.tests_xfail, st.tests_skip, st.has_metrics FROM statuses st \
         LEFT JOIN suites s ON s.id = st.suite_id WHERE st.test_run_id = ",
    );
    statuses.bind(run).push(" ORDER BY s.slug");
    let statuses: Vec<StatusRow> = db.store.fetch_all(&statuses).await.unwrap();
    for row in statuses {
        writeln!(out, "status {row:?}").unwrap();
    }
    let builds: Vec<(bool, i64, i64, i64, i64)> = db
        .store
        .fetch_all(&Sql::new("SELECT finished, tests_pass, tests_fail, tests_xfail, tests_skip FROM build_status"))
        .await
        .unwrap();
    assert_eq!(builds.len(), 1, "one build status");
    assert!(builds[0].0, "the build is finished");
    writeln!(out, "build {:?}", builds[0]).unwrap();
    out
}

/// One scenario at a time: each runs its own worker processes.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An uninterrupted run, one whose worker is SIGKILLed and one whose
/// worker is SIGTERMed end with the same rows.
async fn interrupted_runs_end_as_a_calm_one(engine: &str) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let report = report();
    let seed = u64::from(std::process::id()) ^ 0x7ade;
    let mut random = Lcg(seed);
    let calm = scenario(engine, Interrupt::None, &report, &mut random).await;
    for interrupt in [Interrupt::Kill, Interrupt::Term] {
        let ended = scenario(engine, interrupt, &report, &mut random).await;
        if ended.dump != calm.dump {
            let diff: Vec<(&str, &str)> =
                ended.dump.lines().zip(calm.dump.lines()).filter(|(a, b)| a != b).take(5).collect();
            panic!(
                "{engine}: {interrupt:?} in step {} (seed {seed}): the rows differ from an uninterrupted run's \
                 ({} and {} lines): {diff:#?}",
                ended.interrupted_at,
                ended.dump.lines().count(),
                calm.dump.lines().count()
            );
        }
        eprintln!(
            "{engine}: {interrupt:?} in step {} of {}: same rows ({} lines) in {:.1?}, uninterrupted in {:.1?}",
            ended.interrupted_at,
            BATCHES + 2,
            ended.dump.lines().count(),
            ended.elapsed,
            calm.elapsed
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tradefed_on_sqlite_survives_sigkill_and_sigterm() {
    interrupted_runs_end_as_a_calm_one("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tradefed_on_postgresql_survives_sigkill_and_sigterm() {
    interrupted_runs_end_as_a_calm_one("postgres").await;
}
