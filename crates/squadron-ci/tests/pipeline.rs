//! The test-job pipeline end to end in one process, on both engines, with
//! the fake lab: submit → fetch → postprocess (plugins in steps) → finish →
//! build status; crash recovery of a submission; the fan-in of plugins
//! finishing at the same moment.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use squadron_ci::backend::fake::FakeLab;
use squadron_ci::jobs::{self, NewJob};
use squadron_ci::{Backends, Ci, Listener};
use squadron_plugins::{Plugin, PluginError, PluginInput, Plugins, StepOutput};
use squadron_queue::Queue;
use squadron_store::both_engines;
use squadron_store::testing::TestDb;

mod common;

use common::{registry, QUEUES};

fn ci(db: &TestDb, plugins: Plugins) -> Arc<Ci> {
    common::pipeline(db, plugins, Backends::new(db.scratch.dir.path()))
}

/// A fake backend polled every second; returns its id.
async fn fake_backend(db: &TestDb) -> i64 {
    db.execute("INSERT INTO backends (name, url, implementation_type, poll_interval) VALUES ('lab', 'x', 'fake', 1)")
        .await;
    db.scalar("SELECT id FROM backends WHERE name = 'lab'").await
}

/// Creates build `version` and a job with `definition` to be submitted;
/// returns the job's id.
async fn submit_job(db: &TestDb, project: i64, backend: i64, version: &str, definition: &str) -> i64 {
    db.execute(&format!(
        "INSERT INTO builds (project_id, version, created_at, datetime) VALUES ({project}, '{version}', \
         '2026-11-28T10:00:00Z', '2026-11-28T10:00:00Z')"
    ))
    .await;
    let build = db.scalar(&format!("SELECT id FROM builds WHERE version = '{version}'")).await;
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

fn lab(db: &TestDb) -> FakeLab {
    FakeLab::new(db.scratch.dir.path().join(squadron_ci::backend::fake::LAB_LOG))
}

const DEFINITION: &str = "tests: 20\nfailures: 2\nsuites: 3\nseed: 4\nruntime: 0s\nlog_lines: 5\n";

/// A plugin that waits for its twin at a barrier, so both finish together.
struct Twin {
    name: &'static str,
    barrier: Arc<Barrier>,
}

impl Plugin for Twin {
    fn name(&self) -> &'static str {
        self.name
    }
    fn applies_to(&self, _: &dyn PluginInput) -> bool {
        true
    }
    fn step(&self, _: &dyn PluginInput, _: Option<&serde_json::Value>) -> Result<StepOutput, PluginError> {
        self.barrier.wait();
        Ok(StepOutput::default())
    }
}

both_engines! {
    async fn a_fake_job_ends_in_a_finished_build_with_its_results(db: TestDb) {
        let project = db.public_project().await;
        let backend = fake_backend(&db).await;
        let job = submit_job(&db, project, backend, "v1", DEFINITION).await;
        let cx = ci(&db, Plugins::builtin());
        db.run_tasks_until(registry(&db, cx), &QUEUES, "SELECT COUNT(*) FROM build_status WHERE finished").await;

        let status = db.text(&format!("SELECT job_status FROM testjobs WHERE id = {job}")).await;
        assert_eq!(status, "Complete");
        assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM testjobs WHERE id = {job} AND fetched AND submitted AND results_blob IS NOT NULL AND failure IS NULL")).await, 1);
        let run = db.scalar(&format!("SELECT testrun_id FROM testjobs WHERE id = {job}")).await;
        assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM tests WHERE test_run_id = {run}")).await, 20);
        assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM tests WHERE test_run_id = {run} AND NOT result")).await, 2);
        assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM metrics WHERE test_run_id = {run}")).await, 3);
        assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM testruns WHERE id = {run} AND visible AND completed AND log_file IS NOT NULL")).await, 1);
        let job_id = db.text(&format!("SELECT job_id FROM testjobs WHERE id = {job}")).await;
        assert_eq!(db.text(&format!("SELECT job_id FROM testruns WHERE id = {run}")).await, job_id, "the run carries the lab's job id");
        assert_eq!(db.scalar("SELECT tests_fail FROM build_status").await, 2);
        assert_eq!(db.scalar("SELECT tests_pass FROM build_status").await, 18);
        let submits = lab(&db).calls().unwrap().into_iter().filter(|c| c.call == "submit").count();
        assert_eq!(submits, 1, "the lab saw one submission");
    }

    async fn plugins_run_in_steps_and_the_job_finishes_after_them(db: TestDb) {
        let project = db.public_project().await;
        db.execute(&format!(
            "UPDATE projects SET enabled_plugins_list = 'test-steps, unknown-plugin', \
             project_settings = 'TEST_PLUGIN_STEPS: 3' WHERE id = {project}"
        )).await;
        let backend = fake_backend(&db).await;
        let job = submit_job(&db, project, backend, "v1", DEFINITION).await;
        let cx = ci(&db, Plugins::builtin());
        db.run_tasks_until(registry(&db, cx), &QUEUES, "SELECT COUNT(*) FROM build_status WHERE finished").await;

        assert_eq!(db.text(&format!("SELECT job_status FROM testjobs WHERE id = {job}")).await, "Complete");
        let run = db.scalar(&format!("SELECT testrun_id FROM testjobs WHERE id = {job}")).await;
        assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM tests WHERE test_run_id = {run}")).await, 26, "20 from the lab, 2 per step");
        assert_eq!(db.scalar("SELECT COUNT(*) FROM pending_postprocess").await, 0);
        assert_eq!(db.scalar(&format!("SELECT tests_pass FROM statuses WHERE test_run_id = {run} AND suite_id IS NULL")).await, 24, "the run's totals include the plugin's tests");
        assert_eq!(db.scalar("SELECT tests_pass FROM build_status").await, 24);
        assert_eq!(db.scalar("SELECT COUNT(*) FROM tasks WHERE kind = 'ci_finish' AND state = 'completed'").await, 1);
    }

    async fn a_submission_retried_after_a_crash_adopts_the_job_the_lab_already_has(db: TestDb) {
        let project = db.public_project().await;
        let backend = fake_backend(&db).await;
        let job = submit_job(&db, project, backend, "v1", DEFINITION).await;
        // The first attempt recorded its key and reached the lab, then died
        // before committing what the lab answered.
        let testjob = jobs::load(&db.store, job).await.unwrap().unwrap().0;
        let lab = lab(&db);
        use squadron_ci::Backend;
        let ids = lab.submit(&testjob, "key-1").await.unwrap();
        db.execute(&format!("UPDATE testjobs SET submission_key = 'key-1' WHERE id = {job}")).await;
        db.execute(r#"UPDATE tasks SET checkpoint = '{"key":"key-1"}' WHERE kind = 'ci_submit'"#).await;

        let cx = ci(&db, Plugins::builtin());
        db.run_tasks_until(registry(&db, cx), &QUEUES, "SELECT COUNT(*) FROM build_status WHERE finished").await;
        assert_eq!(db.text(&format!("SELECT job_id FROM testjobs WHERE id = {job}")).await, ids[0]);
        let submits = lab.calls().unwrap().into_iter().filter(|c| c.call == "submit").count();
        assert_eq!(submits, 1, "the retry looked the job up instead of submitting it again");
    }

    async fn plugins_finishing_at_the_same_moment_finish_their_job_once(db: TestDb) {
        let project = db.public_project().await;
        db.execute(&format!("UPDATE projects SET enabled_plugins_list = 'left,right' WHERE id = {project}")).await;
        let backend = fake_backend(&db).await;
        for round in 0..3 {
            let barrier = Arc::new(Barrier::new(2));
            let mut plugins = Plugins::new();
            plugins.register(Arc::new(Twin { name: "left", barrier: barrier.clone() }));
            plugins.register(Arc::new(Twin { name: "right", barrier }));
            let version = format!("v{round}");
            let job = submit_job(&db, project, backend, &version, DEFINITION).await;
            let cx = ci(&db, plugins);
            let finished = format!(
                "SELECT COUNT(*) FROM build_status s JOIN builds b ON b.id = s.build_id \
                 WHERE s.finished AND b.version = '{version}'"
            );
            db.run_tasks_until(registry(&db, cx), &QUEUES, &finished).await;
            assert_eq!(db.text(&format!("SELECT job_status FROM testjobs WHERE id = {job}")).await, "Complete");
            let finishes = db.scalar(&format!(
                "SELECT COUNT(*) FROM tasks WHERE kind = 'ci_finish' AND args LIKE '%\"testjob_id\":{job}}}%'"
            )).await;
            assert_eq!(finishes, 1, "exactly one of the two plugins fanned in");
        }
    }

    async fn the_listener_fetches_a_job_as_soon_as_the_lab_says_it_is_over(db: TestDb) {
        let project = db.public_project().await;
        let backend = fake_backend(&db).await;
        // Polled once an hour: only the event can fetch it within the test.
        db.execute("UPDATE backends SET poll_interval = 3600").await;
        let job = submit_job(&db, project, backend, "v1", "tests: 3\nruntime: 1s\n").await;
        let listener = Listener {
            store: db.store.clone(),
            queue: Queue::default(),
            backends: Backends::new(db.scratch.dir.path()),
            reconcile_every: Duration::from_secs(60),
        };
        let shutdown = squadron_queue::Shutdown::new();
        let listening = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { listener.run(shutdown).await }
        });
        let cx = ci(&db, Plugins::builtin());
        let fetched = format!("SELECT COUNT(*) FROM testjobs WHERE id = {job} AND job_status = 'Complete'");
        db.run_tasks_until(registry(&db, cx), &QUEUES, &fetched).await;
        shutdown.signal();
        listening.await.unwrap().unwrap();
        let fetches = lab(&db).calls().unwrap().into_iter().filter(|c| c.call == "fetch").count();
        assert_eq!(fetches, 1, "fetched once, when the lab said the job was over");
    }

    async fn a_job_cancelled_before_submission_never_reaches_the_lab(db: TestDb) {
        let project = db.public_project().await;
        let backend = fake_backend(&db).await;
        let job = submit_job(&db, project, backend, "v1", DEFINITION).await;
        assert!(jobs::cancel(&db.store, &Queue::default(), job).await.unwrap());
        assert!(!jobs::cancel(&db.store, &Queue::default(), job).await.unwrap(), "already cancelled");
        let cx = ci(&db, Plugins::builtin());
        db.run_tasks_until(registry(&db, cx), &QUEUES, "SELECT COUNT(*) FROM build_status WHERE finished").await;
        assert_eq!(db.text(&format!("SELECT job_status FROM testjobs WHERE id = {job}")).await, "Canceled");
        assert!(lab(&db).calls().unwrap().is_empty());
    }

    async fn an_incomplete_job_keeps_no_results_and_resubmits_as_a_child(db: TestDb) {
        let project = db.public_project().await;
        let backend = fake_backend(&db).await;
        let job = submit_job(&db, project, backend, "v1", "tests: 5\nstatus: Incomplete\n").await;
        let cx = ci(&db, Plugins::builtin());
        db.run_tasks_until(registry(&db, cx.clone()), &QUEUES, "SELECT COUNT(*) FROM build_status WHERE finished").await;
        assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM testjobs WHERE id = {job} AND can_resubmit AND job_status = 'Incomplete'")).await, 1);
        assert_eq!(db.scalar("SELECT COUNT(*) FROM tests").await, 0, "an incomplete job's tests are dropped");

        let child = match jobs::resubmit(&db.store, &Queue::default(), job, false).await.unwrap() {
            jobs::Resubmitted::Job(child) => child,
            other => panic!("not resubmitted: {other:?}"),
        };
        assert_eq!(jobs::resubmit(&db.store, &Queue::default(), job, false).await.unwrap(), jobs::Resubmitted::NotAllowed);
        assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM testjobs WHERE id = {child} AND parent_job_id = {job} AND resubmitted_count = 1")).await, 1);
        db.run_tasks_until(registry(&db, cx), &QUEUES, &format!("SELECT COUNT(*) FROM testjobs WHERE id = {child} AND fetched")).await;
        let submits = lab(&db).calls().unwrap().into_iter().filter(|c| c.call == "submit").count();
        assert_eq!(submits, 2);
    }
}
