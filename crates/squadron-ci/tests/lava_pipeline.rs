//! LAVA through the pipeline, on both engines, against the fake LAVA
//! server: a job is submitted once and its results stored; a lab answering
//! 500s is retried at the next poll and recorded as attempts, then fetched;
//! an HTML page instead of results ends the job with a clear failure and
//! stores nothing.

mod common;

use common::fake_lava::{Answer, Failure, FakeLava};
use common::{registry, QUEUES};
use squadron_ci::jobs::{self, NewJob};
use squadron_ci::Backends;
use squadron_plugins::Plugins;
use squadron_queue::Queue;
use squadron_store::both_engines;
use squadron_store::testing::TestDb;

const DEFINITION: &str =
    "job_name: pipeline\ndevice_type: qemu\nvisibility: public\nsquadron_fake:\n  tests: 4\n  failures: 1\n";

/// A LAVA backend at `lava` (polled every second) and a submitted job;
/// returns the job's id.
async fn submitted_job(db: &TestDb, lava: &FakeLava) -> i64 {
    let project = db.public_project().await;
    db.execute(&format!(
        "INSERT INTO backends (name, url, username, token, implementation_type, poll_interval, max_fetch_attempts) \
         VALUES ('lava', '{}', 'squadron', 'secret', 'lava', 1, 3)",
        lava.rest_url()
    ))
    .await;
    let backend = db.scalar("SELECT id FROM backends").await;
    db.execute(&format!(
        "INSERT INTO builds (project_id, version, created_at, datetime) VALUES ({project}, 'v1', \
         '2026-11-28T10:00:00Z', '2026-11-28T10:00:00Z')"
    ))
    .await;
    let build = db.scalar("SELECT id FROM builds").await;
    let mut tx = db.store.begin_write().await.unwrap();
    let job = NewJob {
        backend_id: backend,
        project_id: project,
        build_id: build,
        environment: "qemu",
        definition: Some(DEFINITION),
        job_id: None,
        parent_job_id: None,
        resubmitted_count: 0,
    };
    let id = jobs::submit_new(&mut tx, &Queue::default(), &job).await.unwrap();
    tx.commit().await.unwrap();
    id
}

async fn run_until(db: &TestDb, condition: &str) {
    let ci = common::pipeline(db, Plugins::new(), Backends::new(db.scratch.dir.path()));
    db.run_tasks_until(registry(db, ci), &QUEUES, condition).await;
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
}
