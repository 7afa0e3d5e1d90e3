//! Build status on both engines: totals, finished reasons, baseline,
//! regressions and fixes by SQUAD's rules, the compare-and-set write, and
//! the tasks that repair a lost update.

use std::time::Duration;

use squadron_queue::{Metrics, Queue, Registry, Shutdown, Worker, WorkerConfig};
use squadron_status::{
    compute, idempotency_key, on_publish, on_submit, write_if_current, Delivering, ReapplyKnownIssues,
    ReconcileBuildStatus, SendBuildCallbacks, StatusContext, UpdateBuildStatus,
};
use squadron_store::both_engines;
use squadron_store::ingest::IngestOptions;
use squadron_store::testing::TestDb;

mod common;
use common::{submit, submit_with, updated};

/// Runs the status tasks in a worker until `condition` (a count) is 1.
async fn run_status_tasks_until(db: &TestDb, condition: &str) {
    let mut registry = Registry::new();
    let cx = std::sync::Arc::new(StatusContext { store: db.store.clone(), queue: Queue::default() });
    registry.register::<UpdateBuildStatus>(cx.clone());
    registry.register::<ReconcileBuildStatus>(cx.clone());
    registry.register::<ReapplyKnownIssues>(cx);
    db.run_tasks_until(registry, &["core_postprocess", "core_quick"], condition).await;
}

fn names(map: &std::collections::BTreeMap<String, Vec<String>>, env: &str) -> Vec<String> {
    map.get(env).cloned().unwrap_or_default()
}

both_engines! {

async fn totals_follow_the_visible_runs_per_environment(db: TestDb) {
    let p = db.public_project().await;
    let b = submit(&db, p, "v1", "x86", "2026-01-01T00:00:00Z",
        r#"{"s/a": "pass", "s/b": "fail", "s/c": "skip"}"#, r#"{"m/x": 2, "m/y": 8}"#).await;
    submit(&db, p, "v1", "arm", "2026-01-01T00:00:00Z", r#"{"s/a": "pass", "s/b": "pass"}"#, r#"{"m/x": 0}"#).await;
    let status = updated(&db, b).await;
    assert_eq!((status.counts.pass, status.counts.fail, status.counts.skip), (3, 1, 1));
    assert_eq!(status.counts.total(), 5);
    assert_eq!((status.runs.total, status.runs.completed, status.runs.incomplete), (2, 2, 0));
    assert!(status.has_metrics);
    assert!((status.metrics_summary - 4.0).abs() < 1e-9, "geomean of 2 and 8; 0 left out: {}", status.metrics_summary);
    let envs: Vec<(&str, i64)> = status.environments.iter().map(|e| (e.slug.as_str(), e.counts.total())).collect();
    assert_eq!(envs, vec![("arm", 2), ("x86", 3)]);
    assert!(status.finished, "{:?}", status.reasons);
    assert_eq!(db.scalar(&format!("SELECT tests_pass FROM build_status WHERE build_id = {b}")).await, 3);
    assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM build_summaries WHERE build_id = {b}")).await, 2);
    assert_eq!(db.scalar(&format!("SELECT tests_fail FROM build_summaries s JOIN environments e ON e.id = s.environment_id WHERE e.slug = 'x86' AND s.build_id = {b}")).await, 1);

    // Counters follow the data: a run gone lowers them.
    db.execute("DELETE FROM statuses WHERE test_run_id IN (SELECT id FROM testruns WHERE environment_id IN (SELECT id FROM environments WHERE slug = 'arm'))").await;
    db.execute("DELETE FROM testruns WHERE environment_id IN (SELECT id FROM environments WHERE slug = 'arm')").await;
    db.execute(&format!("UPDATE builds SET status_version = status_version + 1 WHERE id = {b}")).await;
    let status = updated(&db, b).await;
    assert_eq!(status.counts.total(), 3);
    assert_eq!(db.scalar(&format!("SELECT tests_pass FROM build_status WHERE build_id = {b}")).await, 1);
}

async fn unfinished_builds_say_why(db: TestDb) {
    let p = db.public_project().await;
    let b = submit(&db, p, "v1", "x86", "2026-01-01T00:00:00Z", r#"{"a": "pass"}"#, "").await;
    db.execute("UPDATE environments SET expected_test_runs = 2 WHERE slug = 'x86'").await;
    db.execute(&format!("INSERT INTO environments (project_id, slug, name, expected_test_runs) VALUES ({p}, 'arm', 'Arm 64', 1)")).await;
    let status = updated(&db, b).await;
    assert!(!status.finished);
    assert_eq!(status.reasons, vec![
        "2 test runs expected for x86, but only 1 received so far".to_string(),
        "No test runs for Arm 64 received so far".to_string(),
    ]);
    db.execute("INSERT INTO backends (name, url, implementation_type) VALUES ('lava', 'https://lava.example.com/', 'lava')").await;
    db.execute(&format!("INSERT INTO testjobs (backend_id, target_id, target_build_id, environment, created_at) \
        SELECT id, {p}, {b}, 'x86', '2026-01-01T00:00:00Z' FROM backends")).await;
    let status = compute(&db.store, b).await.unwrap();
    assert_eq!(status.reasons[0], "There are unfinished CI jobs");
    let reasons: String = db.text(&format!("SELECT finished_reasons FROM build_status WHERE build_id = {b}")).await;
    assert!(reasons.contains("No test runs for Arm 64"), "{reasons}");

    let empty = db.scalar(&format!("INSERT INTO builds (project_id, version, created_at, datetime) VALUES ({p}, 'v0', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z') RETURNING id")).await;
    let status = compute(&db.store, empty).await.unwrap();
    assert_eq!(status.reasons[0], "There are no testjobs or testruns for the build");
}

async fn regressions_and_fixes_follow_squads_rules(db: TestDb) {
    let p = db.public_project().await;
    let base = submit(&db, p, "v1", "x86", "2026-01-01T00:00:00Z",
        r#"{"s/a": "pass", "s/b": "fail", "s/c": "pass", "s/d": "fail", "s/e": "skip", "s/f": "pass", "s/g": "pass"}"#, "").await;
    submit(&db, p, "v1", "x86", "2026-01-01T00:00:00Z", r#"{"s/g": "fail"}"#, "").await;
    submit(&db, p, "v1", "arm", "2026-01-01T00:00:00Z", r#"{"s/a": "pass"}"#, "").await;
    // d failed with an intermittent known issue; f fails with a known issue.
    for (title, pattern, intermittent) in [("flaky", "s/d", true), ("known", "s/f", false)] {
        db.execute(&format!("INSERT INTO known_issues (title, test_name, active, intermittent) VALUES ('{title}', '{pattern}', TRUE, {intermittent})")).await;
    }
    db.execute("INSERT INTO known_issue_environments (known_issue_id, environment_id) SELECT k.id, e.id FROM known_issues k, environments e WHERE e.slug = 'x86'").await;
    db.execute("INSERT INTO test_known_issues (test_id, known_issue_id) SELECT t.id, k.id FROM tests t JOIN suite_metadata m ON m.id = t.metadata_id, known_issues k WHERE m.name = 'd' AND k.title = 'flaky'").await;
    assert!(updated(&db, base).await.finished);

    let target = submit(&db, p, "v2", "x86", "2026-01-02T00:00:00Z",
        r#"{"s/a": "fail", "s/b": "pass", "s/c": "pass", "s/d": "pass", "s/e": "fail", "s/f": "fail", "s/g": "pass"}"#, "").await;
    submit(&db, p, "v2", "x86", "2026-01-02T00:00:00Z", r#"{"s/g": "fail"}"#, "").await;
    submit(&db, p, "v2", "riscv", "2026-01-02T00:00:00Z", r#"{"s/a": "fail"}"#, "").await;
    let status = updated(&db, target).await;
    assert_eq!(status.baseline_id, Some(base));
    let changes = status.changes.expect("finished with a baseline");
    assert_eq!(names(&changes.regressions, "x86"), vec!["s/a", "s/g"], "pass→fail; f is xfail, e was skipped");
    assert_eq!(names(&changes.fixes, "x86"), vec!["s/b", "s/g"], "fail→pass; d's failure was intermittent");
    assert!(!changes.regressions.contains_key("riscv"), "an environment new in the target has nothing to compare");
    assert!(!changes.regressions.contains_key("arm"), "nor one the target lacks");
    let stored: String = db.text(&format!("SELECT regressions FROM build_status WHERE build_id = {target}")).await;
    assert_eq!(stored, r#"{"x86":["s/a","s/g"]}"#);
}

async fn the_baseline_is_the_latest_finished_earlier_build_until_notified(db: TestDb) {
    let p = db.public_project().await;
    let v1 = submit(&db, p, "v1", "x86", "2026-01-01T00:00:00Z", r#"{"a": "pass"}"#, "").await;
    updated(&db, v1).await;
    let v3 = submit(&db, p, "v3", "x86", "2026-01-03T00:00:00Z", r#"{"a": "pass"}"#, "").await;
    assert_eq!(updated(&db, v3).await.baseline_id, Some(v1));
    // A build dated between them finishes later: v3's baseline moves to it
    // (SQUAD would keep the one found first).
    let v2 = submit(&db, p, "v2", "x86", "2026-01-02T00:00:00Z", r#"{"a": "fail"}"#, "").await;
    assert_eq!(updated(&db, v2).await.baseline_id, Some(v1));
    // v2 finishing makes v3 look at its baseline again, through a task.
    run_status_tasks_until(&db, &format!("SELECT COUNT(*) FROM build_status WHERE build_id = {v3} AND baseline_id = {v2}")).await;
    let status = updated(&db, v3).await;
    assert_eq!(status.baseline_id, Some(v2));
    assert_eq!(names(&status.changes.unwrap().fixes, "x86"), vec!["a"], "a name in the root suite stands alone");
    // Once notified, the baseline stays.
    db.execute(&format!("UPDATE build_status SET notified = TRUE WHERE build_id = {v3}")).await;
    db.execute(&format!("UPDATE build_status SET finished = FALSE WHERE build_id = {v2}")).await;
    assert_eq!(updated(&db, v3).await.baseline_id, Some(v2));
}

async fn a_status_computed_before_a_new_run_is_not_written(db: TestDb) {
    let p = db.public_project().await;
    let b = submit(&db, p, "v1", "x86", "2026-01-01T00:00:00Z", r#"{"a": "pass"}"#, "").await;
    let old = compute(&db.store, b).await.unwrap();
    submit(&db, p, "v1", "x86", "2026-01-01T00:00:00Z", r#"{"b": "pass"}"#, "").await;
    assert!(!write_if_current(&db.store, &Queue::default(), &old).await.unwrap(), "the build changed since");
    assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM build_status WHERE build_id = {b}")).await, 0);
    assert_eq!(updated(&db, b).await.counts.pass, 2);
}

async fn a_publish_enqueues_the_update_and_the_reconciler_finds_stale_builds(db: TestDb) {
    let p = db.public_project().await;
    let options = IngestOptions { on_publish: Some(on_publish(Queue::default())), ..Default::default() };
    let b = submit_with(&db, p, "v1", "x86", "2026-01-01T00:00:00Z", r#"{"a": "pass"}"#, "", options.clone()).await;
    submit_with(&db, p, "v1", "x86", "2026-01-01T00:00:00Z", r#"{"b": "fail"}"#, "", options).await;
    assert_eq!(db.scalar("SELECT COUNT(*) FROM tasks WHERE kind = 'update_build_status' AND state = 'available'").await, 1,
        "one waiting update per build");
    // A build whose status was never written (say, the process died).
    let other = submit(&db, p, "v2", "x86", "2026-01-02T00:00:00Z", r#"{"a": "pass"}"#, "").await;

    {
        let mut tx = db.store.queue_db().begin().await.unwrap();
        use squadron_queue::StepTx;
        Queue::default().enqueue(tx.conn(), &squadron_queue::NewTask::of(&ReconcileBuildStatus {})).await.unwrap();
        tx.commit().await.unwrap();
    }
    run_status_tasks_until(&db, &format!("SELECT COUNT(*) / 2 FROM build_status WHERE build_id IN ({b}, {other})")).await;
    assert_eq!(db.scalar(&format!("SELECT tests_pass + tests_fail FROM build_status WHERE build_id = {b}")).await, 2);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM builds b JOIN build_status s ON s.build_id = b.id AND s.computed_version = b.status_version").await, 2);
}

async fn a_submissions_repair_update_waits_and_holds_no_update_back(db: TestDb) {
    let p = db.public_project().await;
    let options = IngestOptions { on_publish: Some(on_submit(Queue::default())), ..Default::default() };
    let b = submit_with(&db, p, "v1", "x86", "2026-01-01T00:00:00Z", r#"{"a": "pass"}"#, "", options).await;
    let due_in_us = db.scalar("SELECT MIN(run_at) - (SELECT now_us FROM queue_clock) FROM tasks WHERE kind = 'update_build_status'").await;
    assert!(due_in_us > 50_000_000, "the repair waits out the grace period: due in {due_in_us} us");
    // An update due now (a plugin finishing, say) is a task of its own.
    {
        let mut tx = db.store.queue_db().begin().await.unwrap();
        use squadron_queue::StepTx;
        Queue::default().enqueue(tx.conn(), &UpdateBuildStatus::task(b)).await.unwrap();
        tx.commit().await.unwrap();
    }
    run_status_tasks_until(&db, &format!("SELECT COUNT(*) FROM build_status WHERE build_id = {b}")).await;
    assert_eq!(db.scalar("SELECT COUNT(*) FROM tasks WHERE kind = 'update_build_status' AND state = 'scheduled'").await, 1,
        "the repair still waits");
}

async fn finished_builds_call_back_once_with_one_key_per_event(db: TestDb) {
    use std::sync::{Arc, Mutex};
    type Hits = Arc<Mutex<Vec<(String, String, String, String)>>>;
    let hits: Hits = Arc::default();
    let record = |hits: Hits, path: &'static str| {
        move |headers: axum::http::HeaderMap, body: String| {
            let hits = hits.clone();
            async move {
                let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
                let mut hits = hits.lock().unwrap();
                hits.push((path.to_string(), header("idempotency-key"), header("x-token"), body));
                let calls = hits.iter().filter(|h| h.0 == path).count();
                if path == "/flaky" && calls == 1 {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "later")
                } else {
                    (axum::http::StatusCode::OK, "thanks")
                }
            }
        }
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(record(hits.clone(), "/hook")))
        .route("/flaky", axum::routing::post(record(hits.clone(), "/flaky")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let p = db.public_project().await;
    let b = db.scalar(&format!("INSERT INTO builds (project_id, version, created_at, datetime) VALUES ({p}, 'v1', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z') RETURNING id")).await;
    for path in ["/hook", "/flaky"] {
        db.execute(&format!("INSERT INTO callbacks (build_id, url, method, event, headers, payload, payload_is_json, record_response) \
            VALUES ({b}, '{base}{path}', 'post', 'on_build_finished', '{{\"X-Token\": \"s3\"}}', '{{\"build\": \"v1\"}}', TRUE, TRUE)")).await;
    }
    submit(&db, p, "v1", "x86", "2026-01-01T00:00:00Z", r#"{"a": "pass"}"#, "").await;
    assert!(updated(&db, b).await.finished);
    db.execute(&format!("UPDATE builds SET status_version = status_version + 1 WHERE id = {b}")).await;
    updated(&db, b).await;
    assert_eq!(db.scalar("SELECT COUNT(*) FROM build_events").await, 1, "one event per generation");
    assert_eq!(db.scalar("SELECT COUNT(*) FROM tasks WHERE kind = 'send_build_callbacks'").await, 1);

    let queue_db = db.store.queue_db();
    let mut registry = Registry::new();
    registry.register::<SendBuildCallbacks>(std::sync::Arc::new(Delivering::new(db.store.clone())));
    let mut config = WorkerConfig::new(&queue_db, vec![("core_notification".to_string(), 2)]);
    config.backoff = squadron_queue::Backoff { base: Duration::from_millis(100), max: Duration::from_millis(200) };
    let worker = Worker::new(queue_db.clone(), Queue::default(), registry, config, Metrics::default());
    let shutdown = Shutdown::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while db.scalar("SELECT COUNT(*) FROM callbacks WHERE is_sent").await < 2 {
        assert!(std::time::Instant::now() < deadline, "callbacks not sent: {:?}", hits.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.signal();
    running.await.unwrap().unwrap();

    let hits = hits.lock().unwrap().clone();
    let ids: Vec<i64> = {
        let first = db.scalar("SELECT MIN(id) FROM callbacks").await;
        vec![first, first + 1]
    };
    let of = |path: &str| hits.iter().filter(|h| h.0 == path).cloned().collect::<Vec<_>>();
    assert_eq!(of("/hook").len(), 1, "a delivered callback is not sent again");
    assert_eq!(of("/flaky").len(), 2, "a 503 is tried again");
    assert_eq!(of("/hook")[0].1, idempotency_key(b, 0, ids[0]));
    assert!(of("/flaky").iter().all(|h| h.1 == idempotency_key(b, 0, ids[1])), "every attempt has the event's key");
    assert!(hits.iter().all(|h| h.2 == "s3" && h.3 == r#"{"build": "v1"}"#), "headers and payload as given: {hits:?}");
    assert_eq!(db.text("SELECT response_content FROM callbacks ORDER BY id LIMIT 1").await, "thanks");
    assert_eq!(db.scalar("SELECT COUNT(*) FROM callback_deliveries").await, 3, "every attempt recorded");
}


async fn a_changed_known_issue_is_reapplied_to_stored_tests(db: TestDb) {
    let p = db.public_project().await;
    let b = submit(&db, p, "v1", "x86", "2026-01-01T00:00:00Z", r#"{"s/a": "fail", "s/b": "fail", "s/c": "pass"}"#, "").await;
    assert_eq!(updated(&db, b).await.counts.fail, 2);
    db.execute("INSERT INTO known_issues (title, test_name, active) VALUES ('a is known', 's/a', TRUE)").await;
    db.execute("INSERT INTO known_issue_environments (known_issue_id, environment_id) SELECT k.id, e.id FROM known_issues k, environments e").await;
    let env = db.scalar("SELECT id FROM environments").await;
    let enqueue = |db: &TestDb| {
        let queue_db = db.store.queue_db();
        async move {
            use squadron_queue::StepTx;
            let mut tx = queue_db.begin().await.unwrap();
            Queue::default().enqueue(tx.conn(), &ReapplyKnownIssues::task(vec![env])).await.unwrap();
            tx.commit().await.unwrap();
        }
    };
    enqueue(&db).await;
    run_status_tasks_until(&db, &format!("SELECT COUNT(*) FROM build_status WHERE build_id = {b} AND tests_xfail = 1 AND tests_fail = 1")).await;
    assert_eq!(db.scalar("SELECT COUNT(*) FROM test_known_issues").await, 1);
    assert_eq!(db.scalar("SELECT tests_xfail FROM statuses s JOIN suites u ON u.id = s.suite_id WHERE u.slug = 's'").await, 1);
    // Deactivated: the failure is a failure again.
    db.execute("UPDATE known_issues SET active = FALSE").await;
    enqueue(&db).await;
    run_status_tasks_until(&db, &format!("SELECT COUNT(*) FROM build_status WHERE build_id = {b} AND tests_xfail = 0 AND tests_fail = 2")).await;
    assert_eq!(db.scalar("SELECT COUNT(*) FROM test_known_issues").await, 0);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM tests WHERE has_known_issues").await, 0);
}


async fn metric_changes_follow_the_thresholds_without_a_value(db: TestDb) {
    let p = db.public_project().await;
    let base = submit(&db, p, "v1", "x86", "2026-01-01T00:00:00Z", r#"{"t": "pass"}"#,
        r#"{"bench/boot-time": 10, "bench/score": 100, "other/x": 5, "other/y": 1}"#).await;
    updated(&db, base).await;
    let env = db.scalar("SELECT id FROM environments").await;
    for (environment, name, value, higher) in [
        ("NULL".to_string(), "bench/boot-time", "NULL", false),
        (env.to_string(), "bench/sc*", "NULL", true),
        ("NULL".to_string(), "other/x", "3", true),
    ] {
        db.execute(&format!("INSERT INTO metric_thresholds (project_id, environment_id, name, value, is_higher_better) \
            VALUES ({p}, {environment}, '{name}', {value}, {higher})")).await;
    }
    let target = submit(&db, p, "v2", "x86", "2026-01-02T00:00:00Z", r#"{"t": "pass"}"#,
        r#"{"bench/boot-time": 12, "bench/score": 120, "other/x": 6, "other/y": 2}"#).await;
    let status = updated(&db, target).await;
    let metrics = status.metric_changes.expect("finished with a baseline");
    assert_eq!(names(&metrics.regressions, "x86"), vec!["bench/boot-time"], "lower is better and it grew");
    assert_eq!(names(&metrics.fixes, "x86"), vec!["bench/score"], "higher is better and it grew");
    let stored: String = db.text(&format!("SELECT metric_regressions FROM build_status WHERE build_id = {target}")).await;
    assert_eq!(stored, r#"{"x86":["bench/boot-time"]}"#, "thresholds with a value and unmatched metrics classify nothing");
}

}
