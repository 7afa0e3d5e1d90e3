//! Data retention on both engines: expired builds deleted with every row
//! under them in bounded transactions, their placeholders, and the blob
//! sweep's grace period.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{TimeDelta, Utc};
use squadron_core::submission::parse_metadata;
use squadron_queue::{Metrics, NewTask, Queue, Registry, Shutdown, StepTx, Worker, WorkerConfig};
use squadron_store::blob::Blob;
use squadron_store::both_engines;
use squadron_store::ingest::{IngestOptions, Submission};
use squadron_store::retention::{
    CleanupBuild, CleanupOldBuilds, DataRetention, Deletion, RetentionOptions, SweepBlobs, SweepReport,
};
use squadron_store::sql::Sql;
use squadron_store::testing::TestDb;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Stores a run of `tests` in build `version` of `project`, with a log and
/// an attachment whose contents are `tag`-specific; returns the build's id
/// and the run's blobs.
async fn submit(db: &TestDb, project: i64, version: &str, job: &str, tests: &str, tag: &str) -> (i64, Vec<Blob>) {
    let blobs = vec![
        db.blobs.put(tests.as_bytes()).await.unwrap(),
        db.blobs.put(format!("{{\"m/{tag}\": 1}}").as_bytes()).await.unwrap(),
        db.blobs.put(format!("log of {tag}").as_bytes()).await.unwrap(),
        db.blobs.put(format!("attachment of {tag}").as_bytes()).await.unwrap(),
    ];
    let submission = Submission {
        project_id: project,
        build_version: version.into(),
        environment_slug: "x86".into(),
        metadata: parse_metadata(&format!(r#"{{"job_id": "{job}"}}"#)).unwrap(),
        tests_file: Some(blobs[0].clone()),
        metrics_file: Some(blobs[1].clone()),
        log_file: Some(blobs[2].clone()),
        attachments: vec![("file.txt".into(), blobs[3].clone())],
        completed: true,
    };
    let run = db.store.ingest(&db.blobs, &submission, IngestOptions::default()).await.unwrap();
    let build = db.scalar(&format!("SELECT build_id FROM testruns WHERE id = {run}")).await;
    (build, blobs)
}

/// Makes build `id` created `days` days ago.
async fn age_build(db: &TestDb, id: i64, days: i64) {
    let mut sql = Sql::new("UPDATE builds SET created_at = ");
    sql.bind(Utc::now() - TimeDelta::days(days)).push(" WHERE id = ").bind(id);
    db.store.execute(&sql).await.unwrap();
}

/// Makes blob files last written `ago`.
fn age_blobs<'a>(db: &TestDb, blobs: impl IntoIterator<Item = &'a Blob>, ago: Duration) {
    for blob in blobs {
        let file = std::fs::File::options().write(true).open(db.blobs.path(&blob.key)).unwrap();
        file.set_modified(SystemTime::now() - ago).unwrap();
    }
}

fn exists(db: &TestDb, blob: &Blob) -> bool {
    db.blobs.path(&blob.key).exists()
}

/// Enqueues `tasks` and runs the retention tasks in a worker until every
/// task is completed.
async fn run_tasks(db: &TestDb, options: RetentionOptions, tasks: &[NewTask]) {
    let queue_db = db.store.queue_db();
    let mut tx = db.store.begin_write().await.unwrap();
    Queue::default().enqueue_many(tx.conn(), tasks).await.unwrap();
    tx.commit().await.unwrap();
    let mut registry = Registry::new();
    let cx =
        Arc::new(DataRetention { store: db.store.clone(), blobs: db.blobs.clone(), queue: Queue::default(), options });
    registry.register::<CleanupOldBuilds>(cx.clone());
    registry.register::<CleanupBuild>(cx.clone());
    registry.register::<SweepBlobs>(cx);
    let queues = vec![("core_quick".to_string(), 2), ("core_reporting".to_string(), 1)];
    let config = WorkerConfig::new(&queue_db, queues);
    let worker = Worker::new(queue_db, Queue::default(), registry, config, Metrics::default());
    let shutdown = Shutdown::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.scalar("SELECT COUNT(*) FROM tasks WHERE state <> 'completed'").await > 0 {
        let failed = db.scalar("SELECT COUNT(*) FROM tasks WHERE state IN ('failed', 'retryable')").await;
        assert_eq!(
            failed,
            0,
            "a retention task failed: {}",
            db.text("SELECT COALESCE(MAX(last_error), '') FROM tasks").await
        );
        assert!(Instant::now() < deadline, "timed out waiting for the retention tasks");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.signal();
    running.await.unwrap().unwrap();
}

/// The checkpoint of the last task of `kind`.
async fn checkpoint<T: serde::de::DeserializeOwned>(db: &TestDb, kind: &str) -> T {
    let text = db.text(&format!("SELECT checkpoint FROM tasks WHERE kind = '{kind}' ORDER BY id DESC LIMIT 1")).await;
    serde_json::from_str(&text).unwrap()
}

/// Rows of the tables under a build that belong to no build, run or test
/// any more, by table.
async fn orphans(db: &TestDb) -> Vec<(&'static str, i64)> {
    let checks = [
        ("tests", "SELECT COUNT(*) FROM tests WHERE test_run_id NOT IN (SELECT id FROM testruns) OR build_id NOT IN (SELECT id FROM builds)"),
        ("metrics", "SELECT COUNT(*) FROM metrics WHERE test_run_id NOT IN (SELECT id FROM testruns) OR build_id NOT IN (SELECT id FROM builds)"),
        ("test_known_issues", "SELECT COUNT(*) FROM test_known_issues WHERE test_id NOT IN (SELECT id FROM tests)"),
        ("statuses", "SELECT COUNT(*) FROM statuses WHERE test_run_id NOT IN (SELECT id FROM testruns)"),
        ("attachments", "SELECT COUNT(*) FROM attachments WHERE test_run_id NOT IN (SELECT id FROM testruns)"),
        ("testruns", "SELECT COUNT(*) FROM testruns WHERE build_id NOT IN (SELECT id FROM builds)"),
    ];
    let mut found = Vec::new();
    for (table, sql) in checks {
        found.push((table, db.scalar(sql).await));
    }
    found
}

both_engines! {

async fn expired_builds_go_with_every_row_and_leave_a_placeholder(db: TestDb) {
    let p = db.public_project().await;
    db.execute(&format!("UPDATE projects SET data_retention_days = 1 WHERE id = {p}")).await;
    let (old, old_blobs) = submit(&db, p, "old", "1", r#"{"s/a": "pass", "s/b": "fail"}"#, "old").await;
    let (old_again, old_again_blobs) = submit(&db, p, "old", "2", r#"{"s/a": "fail", "s/c": "pass"}"#, "old-2").await;
    assert_eq!(old, old_again);
    let (kept, kept_blobs) = submit(&db, p, "kept", "1", r#"{"s/a": "pass"}"#, "kept").await;
    let (new, new_blobs) = submit(&db, p, "new", "1", r#"{"s/a": "pass"}"#, "new").await;
    for build in [old, kept] {
        age_build(&db, build, 3).await;
    }
    db.execute(&format!("UPDATE builds SET keep_data = TRUE WHERE id = {kept}")).await;
    // A project without retention keeps its old builds.
    let other = db.store.create_project(squadron_store::projects::NewProject {
        group_id: db.scalar("SELECT id FROM groups").await, slug: "other", is_public: true, ..Default::default()
    }).await.unwrap().id;
    let (other_old, _) = submit(&db, other, "old", "1", r#"{"s/a": "pass"}"#, "other").await;
    age_build(&db, other_old, 30).await;

    // Rows hanging off the old build and its runs.
    db.execute("INSERT INTO known_issues (title, test_name, active) VALUES ('flaky', 's/a', TRUE)").await;
    db.execute(&format!("INSERT INTO test_known_issues (test_id, known_issue_id) SELECT id, (SELECT id FROM known_issues) FROM tests WHERE build_id = {old}")).await;
    db.execute(&format!("INSERT INTO callbacks (build_id, url) VALUES ({old}, 'http://example.com/')")).await;
    db.execute(&format!("INSERT INTO annotations (build_id, description) VALUES ({old}, 'note')")).await;
    db.execute(&format!("INSERT INTO build_events (build_id, event, generation, created_at) VALUES ({old}, 'finished', 0, '2024-01-01T00:00:00Z')")).await;
    db.execute("INSERT INTO backends (name, url, implementation_type) VALUES ('lava', 'https://lava.example/', 'lava')").await;
    db.execute(&format!("INSERT INTO testjobs (backend_id, target_id, target_build_id, environment, created_at, testrun_id) \
        SELECT 1, {p}, {old}, 'x86', '2024-01-01T00:00:00Z', MIN(id) FROM testruns WHERE build_id = {old}")).await;
    db.execute(&format!("INSERT INTO pending_postprocess (testrun_id, plugin, build_id, created_at) \
        SELECT MIN(id), 'tradefed', {old}, '2024-01-01T00:00:00Z' FROM testruns WHERE build_id = {old}")).await;
    db.execute(&format!("INSERT INTO build_status (build_id, computed_version, created_at, last_updated) VALUES ({old}, 0, '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z')")).await;
    db.execute(&format!("INSERT INTO build_summaries (build_id, environment_id) SELECT {old}, id FROM environments WHERE project_id = {p}")).await;
    db.execute(&format!("UPDATE builds SET patch_baseline_id = {old} WHERE id = {new}")).await;

    // Blobs: every file of the runs written two days ago; one orphan as old,
    // and one just written by an upload that has not stored its run yet.
    let orphan = db.blobs.put(b"left by a rejected upload").await.unwrap();
    let in_flight = db.blobs.put(b"an upload in flight").await.unwrap();
    age_blobs(&db, old_blobs.iter().chain(&old_again_blobs).chain(&kept_blobs).chain(&new_blobs).chain([&orphan]), 2 * DAY);
    let before: Vec<i64> = vec![
        db.scalar("SELECT COUNT(*) FROM tests").await,
        db.scalar(&format!("SELECT COUNT(*) FROM tests WHERE build_id = {old}")).await,
    ];
    assert_eq!(before[1], 4);

    let options = RetentionOptions { batch_rows: 3, blob_grace: DAY };
    // A deletion asked for a kept build does nothing.
    run_tasks(&db, options.clone(), &[CleanupBuild::task(kept), NewTask::of(&CleanupOldBuilds {})]).await;
    assert_eq!(db.scalar("SELECT COUNT(*) FROM tasks WHERE kind = 'cleanup_build'").await, 2, "one deletion per expired build, and the one asked for");

    let builds = |id: i64| format!("SELECT COUNT(*) FROM builds WHERE id = {id}");
    assert_eq!(db.scalar(&builds(old)).await, 0, "the expired build is gone");
    for id in [kept, new, other_old] {
        assert_eq!(db.scalar(&builds(id)).await, 1, "build {id} is kept");
    }
    assert_eq!(db.scalar("SELECT COUNT(*) FROM tests").await, before[0] - before[1]);
    for table in ["build_status", "build_summaries", "build_events", "callbacks", "testjobs", "pending_postprocess", "annotations"] {
        let column = if table == "testjobs" { "target_build_id" } else { "build_id" };
        assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM {table} WHERE {column} = {old}")).await, 0, "{table} of the deleted build");
    }
    assert_eq!(db.scalar("SELECT COUNT(*) FROM test_known_issues").await, 0);
    assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM builds WHERE id = {new} AND patch_baseline_id IS NULL")).await, 1);
    for (table, n) in orphans(&db).await {
        assert_eq!(n, 0, "orphan rows in {table}");
    }
    assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM build_placeholders WHERE project_id = {p} AND version = 'old'")).await, 1);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM build_placeholders").await, 1);
    let deletion: Deletion = checkpoint(&db, "cleanup_build").await;
    assert_eq!((deletion.tests, deletion.metrics, deletion.runs), (4, 2, 2));

    // The blob files go with a later sweep; referenced and young ones stay.
    assert!(old_blobs.iter().all(|b| exists(&db, b)), "rows go first, files later");
    run_tasks(&db, options, &[NewTask::of(&SweepBlobs {})]).await;
    for blob in old_blobs.iter().chain(&old_again_blobs).chain([&orphan]) {
        assert!(!exists(&db, blob), "an old blob no row refers to is removed");
    }
    for blob in kept_blobs.iter().chain(&new_blobs).chain([&in_flight]) {
        assert!(exists(&db, blob), "a referenced or young blob stays");
    }
    let report: SweepReport = checkpoint(&db, "sweep_blobs").await;
    // Removed: the two old runs' four files each and the orphan. Young: the
    // upload in flight and the other project's files (never aged) but its
    // tests file, the same content as the kept and new builds'. Referenced:
    // the kept and new builds' seven distinct files.
    assert_eq!((report.removed, report.young, report.referenced), (9, 4, 7), "{report:?}");
}

async fn a_version_deleted_again_updates_its_placeholder(db: TestDb) {
    let p = db.public_project().await;
    db.execute(&format!("UPDATE projects SET data_retention_days = 1 WHERE id = {p}")).await;
    let options = RetentionOptions { batch_rows: 100, blob_grace: DAY };
    for round in 0..2 {
        let (build, _) = submit(&db, p, "v1", "1", r#"{"s/a": "pass"}"#, &format!("round {round}")).await;
        age_build(&db, build, 2).await;
        run_tasks(&db, options.clone(), &[NewTask::of(&CleanupOldBuilds {})]).await;
        assert_eq!(db.scalar("SELECT COUNT(*) FROM builds").await, 0, "round {round}");
    }
    assert_eq!(db.scalar("SELECT COUNT(*) FROM build_placeholders WHERE version = 'v1'").await, 1);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM tasks WHERE kind = 'cleanup_build' AND state = 'completed'").await, 2);
}

async fn a_large_build_is_deleted_in_bounded_transactions(db: TestDb) {
    let p = db.public_project().await;
    db.execute(&format!("UPDATE projects SET data_retention_days = 1 WHERE id = {p}")).await;
    let tests: Vec<String> = (0..25_000).map(|i| format!("\"suite{}/test{i}\": \"pass\"", i % 7)).collect();
    let (build, _) = submit(&db, p, "big", "1", &format!("{{{}}}", tests.join(",")), "big").await;
    age_build(&db, build, 2).await;
    run_tasks(&db, RetentionOptions { batch_rows: 10_000, blob_grace: DAY }, &[CleanupBuild::task(build)]).await;
    let deletion: Deletion = checkpoint(&db, "cleanup_build").await;
    assert_eq!((deletion.tests, deletion.metrics, deletion.runs), (25_000, 1, 1));
    // 10,000 + 10,000 + 5,000 tests, the metric, the run; then the build.
    assert_eq!(deletion.transactions, 5);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM tests").await, 0);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM builds").await, 0);
}

}
