//! LAVA through the pipeline, on both engines, against the fake LAVA
//! server: a job is submitted once and its results stored; a lab answering
//! 500s is retried at the next poll and recorded as attempts, then fetched;
//! an HTML page instead of results ends the job with a clear failure and
//! stores nothing; a tradefed job has the failed tests the lab reported
//! decorated with the stack traces of the results archive its results point
//! to (or, when the project asks, every test of the report recorded).

mod common;

use common::fake_lava::{Answer, Failure, FakeLava};
use common::{registry, QUEUES};
use squadron_ci::jobs::{self, NewJob};
use squadron_ci::Backends;
use squadron_plugins::tradefed::archive::Member;
use squadron_plugins::tradefed::companions::attachment_of;
use squadron_plugins::Plugins;
use squadron_queue::Queue;
use squadron_store::both_engines;
use squadron_store::testing::TestDb;

const DEFINITION: &str =
    "job_name: pipeline\ndevice_type: qemu\nvisibility: public\nsquadron_fake:\n  tests: 4\n  failures: 1\n";

/// A tradefed job: its failed case and results archive.
const TRADEFED_DEFINITION: &str = "job_name: cts\ndevice_type: hikey\nvisibility: public\nactions:\n- test:\n    \
    definitions:\n    - name: cts-lkft\n      path: automated/android/noninteractive-tradefed/tradefed.yaml\n      \
    params: {RESULTS_FORMAT: aggregated}\nsquadron_fake:\n  tests: 2\n  tradefed: ARCHIVE\n  tradefed_failures:\n  - \
    arm64-v8a.CtsDeqpTestCases/dEQP-GLES2.functional.shaders.indexing.tmp_array.vec3_const_write_dynamic_read_vertex\n";

/// A LAVA backend at `lava` (polled every second) and a submitted job;
/// returns the job's id.
async fn submitted_job(db: &TestDb, lava: &FakeLava) -> i64 {
    submitted_job_of(db, lava, DEFINITION).await
}

/// The same with a definition of one's own.
async fn submitted_job_of(db: &TestDb, lava: &FakeLava, definition: &str) -> i64 {
    let project = db.public_project().await;
    db.execute(&format!(
        "INSERT INTO backends (name, url, username, token, implementation_type, poll_interval, max_fetch_attempts) \
         VALUES ('lava', '{}', 'squadron', 'secret', 'lava', 1, 3)",
        lava.rest_url()
    ))
    .await;
    db.execute(&format!(
        "INSERT INTO builds (project_id, version, created_at, datetime) VALUES ({project}, 'v1', \
         '2026-11-28T10:00:00Z', '2026-11-28T10:00:00Z')"
    ))
    .await;
    another_job(db, definition).await
}

/// Another job of the same backend and build.
async fn another_job(db: &TestDb, definition: &str) -> i64 {
    let (project, build, backend) = (
        db.scalar("SELECT id FROM projects").await,
        db.scalar("SELECT id FROM builds").await,
        db.scalar("SELECT id FROM backends").await,
    );
    let mut tx = db.store.begin_write().await.unwrap();
    let job = NewJob {
        backend_id: backend,
        project_id: project,
        build_id: build,
        environment: "qemu",
        definition: Some(definition),
        job_id: None,
        parent_job_id: None,
        resubmitted_count: 0,
    };
    let id = jobs::submit_new(&mut tx, &Queue::default(), &job).await.unwrap();
    tx.commit().await.unwrap();
    id
}

async fn run_until(db: &TestDb, condition: &str) {
    let ci = common::pipeline(db, Plugins::builtin(), Backends::new(db.scratch.dir.path()));
    db.run_tasks_until(registry(db, ci), &QUEUES, condition).await;
}

/// The tests of run `run` as `suite/name`, result and log.
async fn tests_of(db: &TestDb, run: i64, like: &str) -> Vec<(String, Option<bool>, Option<String>)> {
    let sql = format!(
        "SELECT m.suite || '/' || m.name, t.result, t.log FROM tests t JOIN suite_metadata m ON m.id = t.metadata_id \
         WHERE t.test_run_id = {run} AND m.suite LIKE '{like}' ORDER BY m.suite, m.name"
    );
    db.store.fetch_all(&squadron_store::sql::Sql::new(&sql)).await.unwrap()
}

both_engines! {
    async fn a_lava_job_is_submitted_once_and_its_results_stored(db: TestDb) {
        let lava = FakeLava::start().await;
        let job = submitted_job(&db, &lava).await;
        run_until(&db, "SELECT COUNT(*) FROM build_status WHERE finished").await;
        assert_eq!(lava.submissions(), 1);
        assert_eq!(db.text(&format!("SELECT job_status FROM testjobs WHERE id = {job}")).await, "Complete");
        let run = db.scalar(&format!("SELECT testrun_id FROM testjobs WHERE id = {job}")).await;
        assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM tests WHERE test_run_id = {run}")).await, 4);
        assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM tests WHERE test_run_id = {run} AND NOT result")).await, 1);
        assert_eq!(db.text(&format!("SELECT name FROM testjobs WHERE id = {job}")).await, "pipeline");
    }

    async fn a_lab_answering_500s_is_retried_at_the_next_poll(db: TestDb) {
        let lava = FakeLava::start().await;
        lava.configure(|c| {
            c.failures.push(Failure { when: "GET /api/v0.2/jobs/".into(), answer: Answer::Body(500, "text/plain", "down".into()) });
        });
        let job = submitted_job(&db, &lava).await;
        run_until(&db, &format!("SELECT COUNT(*) FROM testjobs WHERE id = {job} AND fetch_attempts >= 1")).await;
        let failure = db.text(&format!("SELECT failure FROM testjobs WHERE id = {job}")).await;
        assert!(failure.contains("500"), "{failure}");
        assert_eq!(db.scalar("SELECT COUNT(*) FROM testruns").await, 0, "nothing stored");
        lava.configure(|c| c.failures.clear());
        run_until(&db, "SELECT COUNT(*) FROM build_status WHERE finished").await;
        assert_eq!(db.text(&format!("SELECT job_status FROM testjobs WHERE id = {job}")).await, "Complete");
        assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM testjobs WHERE id = {job} AND failure IS NULL")).await, 1);
        assert_eq!(lava.submissions(), 1);
    }

    async fn an_html_page_instead_of_results_ends_the_job_with_a_clear_failure(db: TestDb) {
        let lava = FakeLava::start().await;
        lava.configure(|c| {
            c.failures.push(Failure {
                when: "/suites/".into(),
                answer: Answer::Body(200, "text/html", "<html><body>Maintenance</body></html>".into()),
            });
        });
        let job = submitted_job(&db, &lava).await;
        run_until(&db, "SELECT COUNT(*) FROM build_status WHERE finished").await;
        let failure = db.text(&format!("SELECT failure FROM testjobs WHERE id = {job}")).await;
        assert!(!failure.is_empty(), "a failure is recorded");
        assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM testjobs WHERE id = {job} AND fetched AND can_resubmit")).await, 1);
        assert_eq!(db.scalar("SELECT COUNT(*) FROM testruns").await, 0, "nothing partial stored");
        assert_eq!(db.scalar("SELECT COUNT(*) FROM tests").await, 0);
    }

    async fn a_tradefed_job_gets_the_stack_traces_of_its_results_archive(db: TestDb) {
        let lava = FakeLava::start().await;
        let archive = "tradefed/squad-integration/tradefed-output-20220608105250.tar.xz";
        let job = submitted_job_of(&db, &lava, &TRADEFED_DEFINITION.replace("ARCHIVE", archive)).await;
        db.execute("UPDATE projects SET enabled_plugins_list = 'tradefed'").await;
        run_until(&db, "SELECT COUNT(*) FROM build_status WHERE finished").await;
        assert_eq!(db.text(&format!("SELECT job_status FROM testjobs WHERE id = {job}")).await, "Complete");
        let run = db.scalar(&format!("SELECT testrun_id FROM testjobs WHERE id = {job}")).await;
        let tests = tests_of(&db, run, "cts-lkft%").await;
        assert_eq!(tests.len(), 2, "the lab's tests only (the failure and test-attachment): {tests:?}");
        let (name, result, log) = &tests[1];
        assert!(name.starts_with("cts-lkft/arm64-v8a.CtsDeqpTestCases/dEQP-GLES2."), "{name}");
        assert_eq!(*result, Some(false));
        assert!(log.as_deref().unwrap_or("").starts_with("=== with config {glformat=rgba8888d24s8ms0,"), "{log:?}");
        let files: Vec<(String,)> = db
            .store
            .fetch_all(&squadron_store::sql::Sql::new(&format!(
                "SELECT filename FROM attachments WHERE test_run_id = {run} ORDER BY id"
            )))
            .await
            .unwrap();
        // The archive, then the files the plugin takes out of it (their
        // names are checked against SQUAD's in the plugin's own tests).
        let files: Vec<&str> = files.iter().map(|(f,)| f.as_str()).collect();
        let taken = [Member::TestResult, Member::Stylesheet, Member::Css, Member::Stdout, Member::Logcat];
        let expected: Vec<&str> = std::iter::once("tradefed-output-20220608105250.tar.xz")
            .chain(taken.into_iter().map(|m| attachment_of(m).0))
            .collect();
        assert_eq!(files, expected);
        // The report shows through its stylesheet where the run's
        // attachments are served.
        let report_key = db.text(&format!("SELECT blob FROM attachments WHERE test_run_id = {run} AND filename = 'test_results.xml'")).await;
        let report = std::fs::read_to_string(db.blobs.path(&report_key)).unwrap();
        let stylesheet = format!("href=\"{}/g/p/build/v1/attachments/testrun/{run}/compatibility_result.xsl\"", common::INSTANCE_URL);
        assert!(report[..300].contains(&stylesheet), "{}", &report[..300]);
        let metadata = db.text(&format!("SELECT metadata_file FROM testruns WHERE id = {run}")).await;
        let job_id = db.text(&format!("SELECT job_id FROM testjobs WHERE id = {job}")).await;
        let url = format!("{}/artifacts/{archive}", lava.rest_url().split("/api/").next().unwrap());
        let metadata: serde_json::Value = serde_json::from_str(&metadata).unwrap();
        assert_eq!(metadata[format!("tradefed_results_url_{job_id}")], url.as_str());
        assert_eq!(lava.requests().iter().filter(|r| r.path.starts_with("/artifacts/")).count(), 1, "downloaded once");

        // A job whose results point to an attachment of this instance has
        // it read from the store (nothing listens at the base URL).
        let mine = format!("{}/api/testruns/{run}/attachments/?filename=tradefed-output-20220608105250.tar.xz", common::INSTANCE_URL);
        let second = another_job(&db, &TRADEFED_DEFINITION.replace("ARCHIVE", &mine)).await;
        let processed = format!(
            "SELECT COUNT(*) FROM testjobs WHERE id = {second} AND fetched AND testrun_id IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM pending_postprocess WHERE testrun_id = testjobs.testrun_id)"
        );
        run_until(&db, &processed).await;
        let second_run = db.scalar(&format!("SELECT testrun_id FROM testjobs WHERE id = {second}")).await;
        assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM testjobs WHERE id = {second} AND failure IS NULL")).await, 1);
        let logs = tests_of(&db, second_run, "cts-lkft%").await;
        assert!(logs[1].2.as_deref().unwrap_or("").starts_with("=== with config"), "decorated from the stored archive: {logs:?}");
        let same = "SELECT COUNT(DISTINCT blob) FROM attachments WHERE filename = 'tradefed-output-20220608105250.tar.xz'";
        assert_eq!(db.scalar(same).await, 1, "the stored archive itself");

        // The first run moved to another project: read while that project
        // is public, refused while it is private.
        db.execute(
            "INSERT INTO projects (group_id, slug, name, is_public, datetime) \
             SELECT group_id, 'secret', 'secret', FALSE, datetime FROM projects WHERE slug = 'p'",
        )
        .await;
        db.execute(
            "INSERT INTO builds (project_id, version, created_at, datetime) SELECT id, 'v9', '2026-11-28T10:00:00Z', \
             '2026-11-28T10:00:00Z' FROM projects WHERE slug = 'secret'",
        )
        .await;
        db.execute(&format!("UPDATE testruns SET build_id = (SELECT id FROM builds WHERE version = 'v9') WHERE id = {run}")).await;
        for (public, refused) in [(false, true), (true, false)] {
            db.execute(&format!("UPDATE projects SET is_public = {public} WHERE slug = 'secret'")).await;
            let job = another_job(&db, &TRADEFED_DEFINITION.replace("ARCHIVE", &mine)).await;
            let processed = processed.replace(&second.to_string(), &job.to_string());
            run_until(&db, &processed).await;
            let run = db.scalar(&format!("SELECT testrun_id FROM testjobs WHERE id = {job}")).await;
            let metadata = db.text(&format!("SELECT metadata_file FROM testruns WHERE id = {run}")).await;
            assert_eq!(metadata.contains("no such attachment on this instance"), refused, "public: {public}: {metadata}");
        }
    }

    async fn a_tradefed_job_records_every_test_when_its_project_asks(db: TestDb) {
        let lava = FakeLava::start().await;
        let definition = TRADEFED_DEFINITION.replace("ARCHIVE", "tradefed/inline/test_result-with-failures.xml");
        let job = submitted_job_of(&db, &lava, &definition).await;
        db.execute(
            "UPDATE projects SET enabled_plugins_list = 'tradefed', \
             project_settings = 'PLUGINS_TRADEFED_EXTRACT_AGGREGATED: true'",
        )
        .await;
        run_until(&db, "SELECT COUNT(*) FROM build_status WHERE finished").await;
        let run = db.scalar(&format!("SELECT testrun_id FROM testjobs WHERE id = {job}")).await;
        let recorded = tests_of(&db, run, "cts-lkft/arm64-v8a.module_%").await;
        assert_eq!(recorded.len(), 11, "{recorded:?}");
        let name = "cts-lkft/arm64-v8a.module_bar/TestCaseFoo.ztestSetAndGetBrightnessConfiguration";
        assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM known_issues WHERE test_name = '{name}'")).await, 1);
        let xfail = db
            .scalar(&format!("SELECT COUNT(*) FROM tests WHERE test_run_id = {run} AND has_known_issues AND NOT result"))
            .await;
        assert_eq!(xfail, 1, "the assumption failure is an expected failure");
        let total = |column: &str| format!("SELECT {column} FROM statuses WHERE test_run_id = {run} AND suite_id IS NULL");
        assert_eq!(db.scalar(&total("tests_xfail")).await, 1);
        let failed = format!("SELECT COUNT(*) FROM tests WHERE test_run_id = {run} AND NOT result AND NOT has_known_issues");
        assert_eq!(db.scalar(&total("tests_fail")).await, db.scalar(&failed).await);
    }
}
