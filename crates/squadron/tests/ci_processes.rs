//! The CI pipeline with its workers killed for real (PostgreSQL, 2 s
//! leases): jobs over many builds on the fake lab, each build with a
//! callback, run by three workers that are SIGKILLed or SIGTERMed at random
//! every 0.5–2 s and restarted. At the end every job is final and was
//! submitted once, has exactly one test run with the tests its definition
//! asks for (and its plugin's), no task failed, every build finished and
//! its callback arrived with one idempotency key; and the content equals a
//! run of the same scenario without kills. `scripts/ci-soak` runs a bigger
//! form (`SQUADRON_SOAK_CI_BUILDS`, `SQUADRON_SOAK_CI_JOBS_PER_BUILD`).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use squadron_ci::backend::fake::{FakeLab, LAB_LOG};
use squadron_ci::jobs::{self, NewJob};
use squadron_queue::Queue;
use squadron_store::sql::Sql;
use squadron_store::testing::TestDb;

mod common;
#[path = "../../squadron-ci/tests/common/fake_lava.rs"]
mod fake_lava;

use common::{signal, soak, terminate, wait_exit, Lcg, Workers};
use fake_lava::FakeLava;

/// The lab the jobs run in.
enum Lab {
    /// The built-in fake lab (its log in the data directory).
    Fake,
    /// A fake LAVA server in this process, reached over REST.
    Lava(FakeLava),
}

impl Lab {
    /// The backend row's values: `(url, implementation_type)`.
    fn backend(&self) -> (String, &'static str) {
        match self {
            Lab::Fake => ("x".into(), "fake"),
            Lab::Lava(lava) => (lava.rest_url(), "lava"),
        }
    }

    /// The definition of job `j` of build `b` for this lab.
    fn definition(&self, b: i64, j: i64) -> String {
        match self {
            Lab::Fake => definition(b, j),
            Lab::Lava(_) => format!(
                "job_name: crash-{b}-{j}\ndevice_type: qemu\npriority: medium\nvisibility: public\n\
                 metadata:\n  build: v{b}\nsquadron_fake:\n  tests: {}\n  failures: {}\n",
                5 + (b + j) % 10,
                j % 2
            ),
        }
    }

    /// Asserts the lab received exactly one submission per job, and each
    /// job kept the lab job made from its submission.
    async fn assert_one_submission_per_job(&self, db: &TestDb, data: &std::path::Path, jobs: i64) {
        let ours: Vec<(String, String)> =
            db.store.fetch_all(&Sql::new("SELECT submission_key, job_id FROM testjobs")).await.unwrap();
        let lab_jobs: BTreeMap<String, String> = match self {
            Lab::Fake => {
                let lab = FakeLab::new(data.join(LAB_LOG));
                let submits: Vec<_> = lab.calls().unwrap().into_iter().filter(|c| c.call == "submit").collect();
                assert_eq!(submits.len() as i64, jobs, "one submission per job");
                submits.into_iter().map(|c| (c.key.unwrap_or_default(), c.job_id)).collect()
            }
            Lab::Lava(lava) => {
                assert_eq!(lava.submissions() as i64, jobs, "one submission per job");
                let lava_jobs = lava.jobs();
                ours.iter()
                    .filter_map(|(key, _)| {
                        let found = lava_jobs.iter().find(|j| j.definition.contains(key.as_str()))?;
                        Some((key.clone(), found.id.to_string()))
                    })
                    .collect()
            }
        };
        for (key, job_id) in &ours {
            assert_eq!(lab_jobs.get(key), Some(job_id), "the job kept the lab's job for its key");
        }
    }
}

/// Tests each job's plugin adds (`test-steps`: 2 steps of 2 tests).
const PLUGIN_TESTS: i64 = 4;

/// The callbacks a receiver saw: (callback id, idempotency key).
type Received = Arc<Mutex<Vec<(i64, String)>>>;

/// A loopback HTTP receiver of build callbacks; returns its base URL.
async fn receiver(received: Received) -> String {
    let app = axum::Router::new().route(
        "/hook/{callback}",
        axum::routing::post(
            move |axum::extract::Path(callback): axum::extract::Path<i64>, headers: axum::http::HeaderMap| {
                let record = received.clone();
                async move {
                    let key =
                        headers.get("idempotency-key").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
                    record.lock().unwrap().push((callback, key));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// The definition of job `j` of build `b`: sizes, failures and runtimes
/// vary, and are the same in every scenario.
fn definition(b: i64, j: i64) -> String {
    format!(
        "tests: {}\nfailures: {}\nsuites: {}\nseed: {}\nruntime: {}s\nlog_lines: 20\n",
        10 + (b * 7 + j * 3) % 40,
        j % 3,
        1 + j % 4,
        b * 100 + j,
        1 + j % 2
    )
}

/// The project, its fake backend, the builds with their callbacks and the
/// jobs, all submitted (their submission tasks waiting).
async fn prepare(db: &TestDb, lab: &Lab, builds: i64, jobs_per_build: i64, receiver: &str) {
    let project = db.public_project().await;
    db.execute(&format!(
        "UPDATE projects SET enabled_plugins_list = 'test-steps', \
         project_settings = 'TEST_PLUGIN_STEPS: 2\nTEST_PLUGIN_STEP_MILLIS: 200' WHERE id = {project}"
    ))
    .await;
    let (url, kind) = lab.backend();
    db.execute(&format!(
        "INSERT INTO backends (name, url, username, token, implementation_type, poll_interval) \
         VALUES ('lab', '{url}', 'squadron', 'secret', '{kind}', 1)"
    ))
    .await;
    let backend = db.scalar("SELECT id FROM backends").await;
    for b in 0..builds {
        let build = db
            .scalar(&format!(
                "INSERT INTO builds (project_id, version, created_at, datetime) VALUES ({project}, 'v{b:03}', \
                 '2026-11-28T10:00:00Z', '2026-11-28T10:00:00Z') RETURNING id"
            ))
            .await;
        let callback = db
            .scalar(&format!(
                "INSERT INTO callbacks (build_id, url, event) VALUES ({build}, 'pending', 'on_build_finished') RETURNING id"
            ))
            .await;
        db.execute(&format!("UPDATE callbacks SET url = '{receiver}/hook/{callback}' WHERE id = {callback}")).await;
        let mut tx = db.store.begin_write().await.unwrap();
        for j in 0..jobs_per_build {
            let definition = lab.definition(b, j);
            let job = NewJob {
                backend_id: backend,
                project_id: project,
                build_id: build,
                environment: if j % 2 == 0 { "qemu-arm64" } else { "qemu-x86_64" },
                definition: Some(&definition),
                job_id: None,
                parent_job_id: None,
                resubmitted_count: 0,
            };
            jobs::submit_new(&mut tx, &Queue::default(), &job).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
}

/// What a scenario ended with.
struct Ended {
    /// The content, over natural keys only.
    dump: String,
    kills: usize,
    terms: usize,
    elapsed: Duration,
}

/// Runs the scenario with three workers; with `chaos`, one of them is
/// SIGKILLed or SIGTERMed every 0.5–2 s and replaced.
async fn scenario(lab: &Lab, builds: i64, jobs_per_build: i64, chaos: bool) -> Ended {
    let jobs = builds * jobs_per_build;
    let db = TestDb::postgres().await;
    let received: Received = Arc::default();
    let base = receiver(received.clone()).await;
    prepare(&db, lab, builds, jobs_per_build, &base).await;
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap().to_string();
    let mut workers = Workers::new(&db);
    workers.queue = "ci_quick,ci_poll,ci_fetch,ci_fetch_postprocess,core_postprocess,core_notification";
    // Up to six worker processes at once (three running, some shutting
    // down) share PostgreSQL's 100 connections with the test.
    let args = ["--data-dir", &data_dir, "--concurrency", "4", "--shutdown-timeout", "3s", "--db-max-connections", "6"];
    let started = Instant::now();
    let mut running: Vec<Child> = (0..3).map(|_| workers.spawn(&args)).collect();
    let mut dying: Vec<Child> = Vec::new();
    let mut random = Lcg(u64::from(std::process::id()) ^ 0xc1);
    let (mut kills, mut terms) = (0, 0);
    let mut next_signal = Instant::now() + Duration::from_millis(500 + random.below(1500));
    let deadline = Instant::now() + Duration::from_secs(soak("CI_DEADLINE_SECS", 150));
    let done = format!(
        "SELECT CAST(CASE WHEN (SELECT COUNT(*) FROM build_status WHERE finished) = {builds} \
         AND (SELECT COUNT(*) FROM callbacks WHERE is_sent) = {builds} \
         AND (SELECT COUNT(*) FROM tasks WHERE state IN ('available', 'scheduled', 'running', 'retryable')) = 0 \
         THEN 1 ELSE 0 END AS BIGINT)"
    );
    while db.scalar(&done).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the pipeline did not finish; tasks: {}\n{}",
            db.text(
                "SELECT COALESCE(STRING_AGG(kind || ' ' || state, ', '), '') FROM tasks WHERE state <> 'completed'"
            )
            .await,
            workers.logs()
        );
        if chaos && Instant::now() >= next_signal {
            let victim = random.below(3) as usize;
            let old = std::mem::replace(&mut running[victim], workers.spawn(&args));
            if random.below(2) == 0 {
                signal(&old, "KILL");
                kills += 1;
            } else {
                signal(&old, "TERM");
                terms += 1;
            }
            dying.push(old);
            next_signal = Instant::now() + Duration::from_millis(500 + random.below(1500));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    for child in &mut running {
        terminate(child, Duration::from_secs(15), &workers);
    }
    for mut child in dying {
        assert!(wait_exit(&mut child, Duration::from_secs(15)).is_some(), "a signalled worker exits");
    }

    // Every job is final, none Fetching, none failed.
    assert_eq!(db.scalar("SELECT COUNT(*) FROM testjobs WHERE job_status = 'Complete'").await, jobs);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM testjobs WHERE failure IS NOT NULL").await, 0);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM tasks WHERE state = 'failed'").await, 0, "no task failed");
    // One submission per job in the lab's own record.
    lab.assert_one_submission_per_job(&db, data.path(), jobs).await;
    // Exactly one test run per job, with the tests its definition asks for.
    assert_eq!(db.scalar("SELECT COUNT(*) FROM testruns WHERE visible").await, jobs);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM testruns WHERE NOT visible").await, 0, "no hidden run left");
    assert_eq!(db.scalar("SELECT COUNT(DISTINCT testrun_id) FROM testjobs").await, jobs);
    let counts: Vec<(String, i64)> = db
        .store
        .fetch_all(&Sql::new(
            "SELECT j.definition, (SELECT COUNT(*) FROM tests t WHERE t.test_run_id = j.testrun_id) FROM testjobs j",
        ))
        .await
        .unwrap();
    for (definition, count) in counts {
        let asked: i64 = definition
            .lines()
            .find_map(|l| l.trim().strip_prefix("tests: "))
            .and_then(|n| n.parse().ok())
            .expect("a test count in the definition");
        assert_eq!(count, asked + PLUGIN_TESTS, "tests of {definition:?}");
    }
    // Every build finished and its callback arrived, with one key.
    let received = received.lock().unwrap().clone();
    let keys: BTreeMap<i64, BTreeSet<String>> = received.iter().fold(BTreeMap::new(), |mut keys, (callback, key)| {
        keys.entry(*callback).or_default().insert(key.clone());
        keys
    });
    assert_eq!(keys.len() as i64, builds, "every build's callback arrived");
    assert!(keys.values().all(|k| k.len() == 1 && !k.iter().next().unwrap().is_empty()), "one key per build");
    Ended { dump: dump(&db).await, kills, terms, elapsed }
}

/// A test: build version, job definition, suite, name, result, log.
type TestRow = (String, String, String, String, Option<bool>, Option<String>);
/// A status row: build version, job definition, suite, pass, fail, skip, xfail.
type StatusRow = (String, String, Option<String>, i64, i64, i64, i64);

/// The content over natural keys: jobs by build and definition, their
/// runs' metadata (without ids and times), tests, status counters, and the
/// builds' status.
async fn dump(db: &TestDb) -> String {
    let mut out = String::new();
    let jobs: Vec<(String, String, String, String, bool, Option<String>)> = db
        .store
        .fetch_all(&Sql::new(
            "SELECT b.version, j.environment, j.definition, j.job_status, r.completed, r.metadata_file \
             FROM testjobs j JOIN builds b ON b.id = j.target_build_id JOIN testruns r ON r.id = j.testrun_id \
             ORDER BY b.version, j.definition, j.environment",
        ))
        .await
        .unwrap();
    for (version, env, definition, status, completed, metadata) in jobs {
        let mut metadata: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(metadata.as_deref().unwrap_or("{}")).unwrap();
        metadata.retain(|k, _| !matches!(k.as_str(), "job_id" | "job_url" | "datetime"));
        out.push_str(&format!("job {version} {env} {definition:?} {status} {completed} {metadata:?}\n"));
    }
    let tests: Vec<TestRow> = db
        .store
        .fetch_all(&Sql::new(
            "SELECT b.version, j.definition, s.slug, m.name, t.result, t.log FROM tests t \
             JOIN testjobs j ON j.testrun_id = t.test_run_id JOIN builds b ON b.id = j.target_build_id \
             JOIN suites s ON s.id = t.suite_id JOIN suite_metadata m ON m.id = t.metadata_id \
             ORDER BY b.version, j.definition, s.slug, m.name",
        ))
        .await
        .unwrap();
    for (version, definition, suite, name, result, log) in tests {
        out.push_str(&format!(
            "test {version} {definition:?} {suite}/{name} {result:?} {}\n",
            log.map_or(0, |l| l.len())
        ));
    }
    let statuses: Vec<StatusRow> = db
        .store
        .fetch_all(&Sql::new(
            "SELECT b.version, j.definition, s.slug, st.tests_pass, st.tests_fail, st.tests_skip, st.tests_xfail \
             FROM statuses st JOIN testjobs j ON j.testrun_id = st.test_run_id \
             JOIN builds b ON b.id = j.target_build_id LEFT JOIN suites s ON s.id = st.suite_id \
             ORDER BY b.version, j.definition, s.slug",
        ))
        .await
        .unwrap();
    for row in statuses {
        out.push_str(&format!("status {row:?}\n"));
    }
    let builds: Vec<(String, bool, i64, i64, i64)> = db
        .store
        .fetch_all(&Sql::new(
            "SELECT b.version, s.finished, s.tests_pass, s.tests_fail, s.test_runs_total FROM build_status s \
             JOIN builds b ON b.id = s.build_id ORDER BY b.version",
        ))
        .await
        .unwrap();
    for row in builds {
        out.push_str(&format!("build {row:?}\n"));
    }
    out
}

/// One scenario at a time: each runs its own worker processes.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Killed workers change nothing: the content equals a calm run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_survives_killed_workers_and_ends_as_a_calm_run() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (builds, per_build) = (soak("CI_BUILDS", 30) as i64, soak("CI_JOBS_PER_BUILD", 10) as i64);
    let chaos = scenario(&Lab::Fake, builds, per_build, true).await;
    let calm = scenario(&Lab::Fake, builds, per_build, false).await;
    assert!(chaos.kills + chaos.terms >= 3, "the chaos ran: {} kills, {} terms", chaos.kills, chaos.terms);
    if chaos.dump != calm.dump {
        let diff: Vec<(&str, &str)> =
            chaos.dump.lines().zip(calm.dump.lines()).filter(|(a, b)| a != b).take(5).collect();
        panic!("the content differs from a calm run's: {diff:#?}");
    }
    eprintln!(
        "{} jobs over {builds} builds: with {} SIGKILLs and {} SIGTERMs in {:.1?}, calm in {:.1?}; same content ({} lines)",
        builds * per_build,
        chaos.kills,
        chaos.terms,
        chaos.elapsed,
        calm.elapsed,
        chaos.dump.lines().count()
    );
}

/// The same chaos with jobs in a (fake) LAVA lab, reached over its REST
/// API: a submission retried after a kill looks the job up in the lab
/// (by the key in its definition) instead of submitting it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lava_jobs_survive_killed_workers_without_double_submissions() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let lava = FakeLava::start().await;
    lava.configure(|c| c.polls_before_complete = 1);
    let lab = Lab::Lava(lava);
    let ended = scenario(&lab, 3, 10, true).await;
    let Lab::Lava(lava) = &lab else { unreachable!() };
    eprintln!(
        "30 LAVA jobs: with {} SIGKILLs and {} SIGTERMs in {:.1?}; {} requests to the lab",
        ended.kills,
        ended.terms,
        ended.elapsed,
        lava.requests().len()
    );
}
