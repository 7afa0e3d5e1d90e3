//! Email notifications on both engines, delivered to a real SMTP server on
//! loopback: recipients by strategy, subject, bodies and headers, custom
//! templates, moderation, the 1 MB limit, waiting, timeouts, and builds
//! held back by pending post-processing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use squadron_queue::{Job, NewTask, Outcome, Queue, Registry, Task, TaskError};
use squadron_status::notify::{approve_build, MailSettings, Mailer, NotificationTimeout, NotifyBuild, Notifying, Site};
use squadron_status::{postprocess, reset_build_events, StatusContext, UpdateBuildStatus};
use squadron_store::both_engines;
use squadron_store::testing::TestDb;
use squadron_store::Store;

mod common;
use common::smtp::SmtpSink;
use common::{submit, updated};

fn mail(sink: &SmtpSink) -> MailSettings {
    MailSettings {
        smtp_host: "127.0.0.1".into(),
        smtp_port: sink.port,
        from: "noreply@squad.example.com".into(),
        site: Site { name: "Test SQUAD".into(), base_url: "https://squad.example.com".into() },
    }
}

/// A test-only plugin: two checkpointed steps, then the last one releases
/// its hold on the build.
#[derive(Debug, Serialize, Deserialize)]
struct FakePlugin {
    testrun_id: i64,
}

impl Task for FakePlugin {
    const KIND: &'static str = "test_fake_plugin";
    const QUEUE: &'static str = "core_postprocess";
    type Context = Store;

    async fn run(&self, store: &Store, job: &mut Job) -> Result<Outcome, TaskError> {
        if job.checkpoint::<u32>()?.is_none() {
            let tx = store.begin_write().await.map_err(TaskError::failed)?;
            job.commit_step(tx, &1u32).await?;
        }
        let mut tx = store.begin_write().await.map_err(TaskError::failed)?;
        postprocess::release(&mut tx, &Queue::default(), self.testrun_id, "fake").await.map_err(TaskError::failed)?;
        job.commit_last_step(tx).await
    }
}

/// Runs the status, notification and fake plugin tasks until `condition`
/// (a count) is at least 1.
async fn run_until(db: &TestDb, sink: &SmtpSink, condition: &str) {
    let mut registry = Registry::new();
    let status = Arc::new(StatusContext { store: db.store.clone(), queue: Queue::default() });
    registry.register::<UpdateBuildStatus>(status);
    let mailer = Mailer::new(mail(sink)).unwrap();
    let notifying = Arc::new(Notifying { store: db.store.clone(), queue: Queue::default(), mailer });
    registry.register::<NotifyBuild>(notifying.clone());
    registry.register::<NotificationTimeout>(notifying);
    registry.register::<FakePlugin>(Arc::new(db.store.clone()));
    db.run_tasks_until(registry, &["core_postprocess", "core_notification"], condition).await;
}

fn notified(build: i64) -> String {
    format!("SELECT COUNT(*) FROM build_status WHERE notified AND build_id = {build}")
}

fn recipients(message: &Value) -> Vec<String> {
    let mut to: Vec<String> =
        message["rcpt_tos"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
    to.sort();
    to
}

fn header<'a>(message: &'a Value, name: &str) -> &'a str {
    message["headers"][name].as_str().unwrap_or_else(|| panic!("no {name} header in {message}"))
}

fn text(message: &Value) -> &str {
    message["text"].as_str().unwrap()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

both_engines! {

async fn subscribers_get_what_their_strategy_wants(db: TestDb) {
    let sink = SmtpSink::start();
    let p = db.public_project().await;
    db.execute(&format!("UPDATE projects SET project_settings = 'CI_LAVA_JOB_ERROR_STATUS: Incomplete' WHERE id = {p}")).await;
    db.store.create_user("dev", "dev@example.com", false).await.unwrap();
    for email in ["all@example.com", "change@example.com", "regression@example.com", "error@example.com", "dev@example.com"] {
        assert!(db.store.subscribe(p, email).await.unwrap());
    }
    assert!(!db.store.subscribe(p, "all@example.com").await.unwrap(), "subscribing twice changes nothing");
    assert_eq!(db.scalar("SELECT COUNT(*) FROM subscriptions WHERE user_id IS NOT NULL").await, 1, "the user's address subscribes the user");
    for strategy in ["change", "regression", "error"] {
        db.execute(&format!("UPDATE subscriptions SET notification_strategy = '{strategy}' WHERE email = '{strategy}@example.com'")).await;
    }

    let v1 = submit(&db, p, "v1", "x86", "2026-01-01T00:00:00Z", r#"{"s/a": "pass", "s/b": "pass"}"#, "").await;
    assert!(updated(&db, v1).await.finished);
    run_until(&db, &sink, &notified(v1)).await;
    let first = sink.wait_for(1).await;
    assert_eq!(recipients(&first[0]), ["all@example.com", "dev@example.com"], "no baseline: only 'all'");

    let v2 = submit(&db, p, "v2", "x86", "2026-01-02T00:00:00Z", r#"{"s/a": "fail", "s/b": "pass", "s/c": "skip"}"#, "").await;
    db.execute("INSERT INTO backends (name, url, implementation_type) VALUES ('lava', 'https://lava.example.com/', 'lava')").await;
    db.execute(&format!("INSERT INTO testjobs (backend_id, target_id, target_build_id, environment, created_at, submitted, fetched, job_status) \
        SELECT id, {p}, {v2}, 'x86', '2026-01-02T00:00:00Z', TRUE, TRUE, 'Incomplete' FROM backends")).await;
    assert!(updated(&db, v2).await.finished);
    run_until(&db, &sink, &notified(v2)).await;
    let messages = sink.wait_for(2).await;
    let m = &messages[1];
    assert_eq!(
        recipients(m),
        ["all@example.com", "change@example.com", "dev@example.com", "error@example.com", "regression@example.com"]
    );
    assert_eq!(header(m, "Subject"), "g/p: 3 tests, 1 failed, 1 passed, 1 skipped (build v2)");
    assert_eq!(header(m, "From"), "Test SQUAD <noreply@squad.example.com>");
    assert_eq!(header(m, "Message-ID"), format!("<squadron.build-{v2}.on_build_finished.0.build@squad.example.com>"));
    assert_eq!(header(m, "Precedence"), "bulk");
    assert_eq!(header(m, "Auto-Submitted"), "auto-generated");
    assert_eq!(header(m, "X-Auto-Response-Suppress"), "All");
    let body = text(m);
    assert!(body.contains("Regressions (compared to build v1)\n----"), "{body:?}");
    assert!(body.contains("x86:\n  * s/a\n"), "{body}");
    assert!(body.contains("Details: https://squad.example.com/g/p/build/v2/"), "{body}");
    assert!(m["html"].as_str().unwrap().contains("<li>s/a</li>"), "HTML alternative: {m}");
    assert_eq!(db.scalar(&format!("SELECT attempts FROM notification_deliveries WHERE build_id = {v2}")).await, 1);

    // The same results again: no change, so only 'all'.
    let v3 = submit(&db, p, "v3", "x86", "2026-01-03T00:00:00Z", r#"{"s/a": "fail", "s/b": "pass", "s/c": "skip"}"#, "").await;
    assert!(updated(&db, v3).await.finished);
    run_until(&db, &sink, &notified(v3)).await;
    let messages = sink.wait_for(3).await;
    assert_eq!(recipients(&messages[2]), ["all@example.com", "dev@example.com"]);
    assert_eq!(messages.len(), 3, "one email per finished build");
    assert_eq!(db.store.unsubscribe(p, "dev@example.com").await.unwrap(), 1, "unsubscribing by the user's address");
}

async fn moderated_notifications_preview_to_admins_until_approved(db: TestDb) {
    let sink = SmtpSink::start();
    let p = db.public_project().await;
    db.execute(&format!("UPDATE projects SET moderate_notifications = TRUE WHERE id = {p}")).await;
    db.store.admin_subscribe(p, "admin@example.com").await.unwrap();
    db.store.subscribe(p, "dev@example.com").await.unwrap();
    let v1 = submit(&db, p, "v1", "x86", "2026-01-01T00:00:00Z", r#"{"s/a": "pass"}"#, "").await;
    db.execute("INSERT INTO backends (name, url, implementation_type) VALUES ('lava', 'https://lava.example.com/', 'lava')").await;
    db.execute(&format!("INSERT INTO testjobs (backend_id, target_id, target_build_id, environment, created_at, submitted, fetched, job_id, failure) \
        SELECT id, {p}, {v1}, 'x86', '2026-01-01T00:00:00Z', TRUE, TRUE, '77', 'Infrastructure error' FROM backends")).await;
    assert!(updated(&db, v1).await.finished);
    run_until(&db, &sink, &notified(v1)).await;
    let messages = sink.wait_for(2).await;
    assert_eq!(header(&messages[0], "Subject"), "v1: FAILED TEST JOBS (1) -- g/p");
    assert_eq!(recipients(&messages[0]), ["admin@example.com"]);
    assert!(text(&messages[0]).contains("Job: 77\n") && text(&messages[0]).contains("Failure: Infrastructure error"), "{}", text(&messages[0]));
    assert_eq!(header(&messages[1], "Subject"), "[PREVIEW] g/p: 1 tests, 0 failed, 1 passed, 0 skipped (build v1)");
    assert_eq!(recipients(&messages[1]), ["admin@example.com"], "the preview goes to the admins only");
    assert!(text(&messages[1]).contains("ATTENTION: This notification is a preview"), "{}", text(&messages[1]));

    assert!(approve_build(&db.store, &Queue::default(), v1).await.unwrap());
    assert!(!approve_build(&db.store, &Queue::default(), v1).await.unwrap(), "approved once");
    run_until(&db, &sink, "SELECT COUNT(*) FROM notification_deliveries WHERE event = 'approved' AND sent_at IS NOT NULL").await;
    let messages = sink.wait_for(3).await;
    assert_eq!(messages.len(), 3, "the failed-jobs email is not sent again");
    assert_eq!(recipients(&messages[2]), ["dev@example.com"]);
    assert_eq!(header(&messages[2], "Subject"), "g/p: 1 tests, 0 failed, 1 passed, 0 skipped (build v1)");
}

async fn custom_templates_render_with_squads_context_and_big_bodies_become_a_link(db: TestDb) {
    let sink = SmtpSink::start();
    let p = db.public_project().await;
    db.store.subscribe(p, "dev@example.com").await.unwrap();
    let template = db.scalar("INSERT INTO email_templates (name, subject, plain_text, html) VALUES ('short', \
        '{{ project }} {{ build }}: {{ tests_fail }}/{{ tests_total }} failed, {{ regressions }} regression(s)', \
        '{% for env, tests in regressions|items %}{{ env }}: {{ tests|join(\",\") }}{% endfor %}; since {{ previous_build.version }}; \
{{ important_metadata.kernel }}; {{ summary.failures[\"arm\"][0].full_name }}; {{ settings.BASE_URL }}', NULL) RETURNING id").await;
    db.execute(&format!("UPDATE projects SET custom_email_template_id = {template}, important_metadata_keys = 'kernel' WHERE id = {p}")).await;
    let v1 = submit(&db, p, "v1", "arm", "2026-01-01T00:00:00Z", r#"{"s/a": "pass", "s/b": "pass"}"#, "").await;
    updated(&db, v1).await;
    run_until(&db, &sink, &notified(v1)).await;
    db.execute(&format!("UPDATE testruns SET metadata_file = '{{\"kernel\": \"6.1\", \"other\": \"x\"}}' WHERE build_id = {v1}")).await;
    let v2 = submit(&db, p, "v2", "arm", "2026-01-02T00:00:00Z", r#"{"s/a": "fail", "s/b": "pass"}"#, "").await;
    db.execute(&format!("UPDATE testruns SET metadata_file = '{{\"kernel\": \"6.2\", \"other\": \"y\"}}' WHERE build_id = {v2}")).await;
    updated(&db, v2).await;
    run_until(&db, &sink, &notified(v2)).await;
    let messages = sink.wait_for(2).await;
    assert_eq!(header(&messages[1], "Subject"), "g/p v2: 1/2 failed, 1 regression(s)");
    assert_eq!(text(&messages[1]).trim_end(), "arm: s/a; since v1; 6.2; s/a; https://squad.example.com");
    assert!(messages[1]["html"].is_null(), "a template without HTML sends text only");

    // Over 1 MB: a link to the report instead.
    db.execute(&format!("UPDATE email_templates SET plain_text = '{{% for i in range(1000) %}}{{% for j in range(120) %}}0123456789{{% endfor %}}{{% endfor %}}' WHERE id = {template}")).await;
    let v3 = submit(&db, p, "v3", "arm", "2026-01-03T00:00:00Z", r#"{"s/a": "fail", "s/b": "pass"}"#, "").await;
    updated(&db, v3).await;
    run_until(&db, &sink, &notified(v3)).await;
    let messages = sink.wait_for(3).await;
    assert_eq!(
        text(&messages[2]).trim_end(),
        format!("The email got too big (> 1MB), please visit https://squad.example.com/api/builds/{v3}/email/?keep=7")
    );
}

async fn waits_and_timeouts_are_scheduled_tasks(db: TestDb) {
    let sink = SmtpSink::start();
    let p = db.public_project().await;
    db.store.subscribe(p, "dev@example.com").await.unwrap();

    // wait_before_notification: the finished build's email waits until
    // that long after the build's datetime (a snoozed task, not a timer).
    db.execute(&format!("UPDATE projects SET wait_before_notification = 2 WHERE id = {p}")).await;
    let started = Instant::now();
    let v1 = submit(&db, p, "v1", "x86", &now(), r#"{"s/a": "pass"}"#, "").await;
    assert!(updated(&db, v1).await.finished);
    run_until(&db, &sink, "SELECT COUNT(*) FROM tasks WHERE kind = 'notify_build' AND state = 'scheduled'").await;
    assert!(sink.messages().is_empty(), "nothing sent before the wait is over");
    run_until(&db, &sink, &notified(v1)).await;
    assert!(started.elapsed() >= Duration::from_secs(1), "sent after the wait: {:?}", started.elapsed());
    assert_eq!(sink.wait_for(1).await.len(), 1);

    // notification_timeout: a build that never finishes is notified anyway.
    db.execute(&format!("UPDATE projects SET wait_before_notification = NULL, notification_timeout = 1 WHERE id = {p}")).await;
    db.execute(&format!("UPDATE environments SET expected_test_runs = 2 WHERE project_id = {p}")).await;
    let v2 = submit(&db, p, "v2", "x86", "2026-01-02T00:00:00Z", r#"{"s/a": "fail"}"#, "").await;
    let status = updated(&db, v2).await;
    assert!(!status.finished && status.reasons == ["2 test runs expected for x86, but only 1 received so far"], "{:?}", status.reasons);
    assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM build_status WHERE notified_on_timeout = FALSE AND build_id = {v2}")).await, 1, "timer armed");
    run_until(&db, &sink, &notified(v2)).await;
    let messages = sink.wait_for(2).await;
    assert_eq!(header(&messages[1], "Message-ID"), format!("<squadron.build-{v2}.notification_timeout.0.build@squad.example.com>"));
    assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM build_status WHERE notified_on_timeout AND NOT finished AND build_id = {v2}")).await, 1);

    // With force_finishing_builds_on_timeout, the build counts as finished
    // from then on (and its callbacks' event is recorded), still notified once.
    db.execute(&format!("UPDATE projects SET force_finishing_builds_on_timeout = TRUE WHERE id = {p}")).await;
    let v3 = submit(&db, p, "v3", "x86", "2026-01-03T00:00:00Z", r#"{"s/a": "fail"}"#, "").await;
    updated(&db, v3).await;
    run_until(&db, &sink, &format!("SELECT COUNT(*) FROM build_status WHERE finished AND notified AND build_id = {v3}")).await;
    assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM build_events WHERE build_id = {v3}")).await, 2, "timeout and finished");
    assert_eq!(db.text(&format!("SELECT finished_reasons FROM build_status WHERE build_id = {v3}")).await,
        r#"["2 test runs expected for x86, but only 1 received so far"]"#, "the reasons stay on record");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.messages().len(), 3, "the forced finish sends no second email");
}

async fn pending_post_processing_holds_the_notification(db: TestDb) {
    let sink = SmtpSink::start();
    let p = db.public_project().await;
    db.store.subscribe(p, "dev@example.com").await.unwrap();
    let b = submit(&db, p, "v1", "x86", "2026-01-01T00:00:00Z", r#"{"s/a": "pass"}"#, "").await;
    let run = db.scalar(&format!("SELECT id FROM testruns WHERE build_id = {b}")).await;
    let mut tx = db.store.begin_write().await.unwrap();
    postprocess::hold(&mut tx, &Queue::default(), run, "fake", &NewTask::of(&FakePlugin { testrun_id: run })).await.unwrap();
    tx.commit().await.unwrap();
    let status = updated(&db, b).await;
    assert!(!status.finished);
    assert_eq!(status.reasons, ["1 test run(s) still being post-processed"]);
    run_until(&db, &sink, &notified(b)).await;
    assert_eq!(db.scalar("SELECT COUNT(*) FROM pending_postprocess").await, 0);
    assert_eq!(recipients(&sink.wait_for(1).await[0]), ["dev@example.com"]);
}

async fn a_reset_notifies_the_build_again_under_a_new_generation(db: TestDb) {
    let sink = SmtpSink::start();
    let p = db.public_project().await;
    db.store.subscribe(p, "dev@example.com").await.unwrap();
    let b = submit(&db, p, "v1", "x86", "2026-01-01T00:00:00Z", r#"{"s/a": "pass"}"#, "").await;
    db.execute(&format!("INSERT INTO callbacks (build_id, url, is_sent) VALUES ({b}, 'http://127.0.0.1:9/hook', TRUE)")).await;
    updated(&db, b).await;
    run_until(&db, &sink, &notified(b)).await;
    let mut tx = db.store.begin_write().await.unwrap();
    reset_build_events(&mut tx, &Queue::default(), b).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM build_status WHERE NOT notified AND NOT finished AND build_id = {b}")).await, 1);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM callbacks WHERE is_sent").await, 0, "callbacks re-armed");
    run_until(&db, &sink, &notified(b)).await;
    let messages = sink.wait_for(2).await;
    let ids: Vec<&str> = messages.iter().map(|m| header(m, "Message-ID")).collect();
    assert_eq!(ids, [
        format!("<squadron.build-{b}.on_build_finished.0.build@squad.example.com>"),
        format!("<squadron.build-{b}.on_build_finished.1.build@squad.example.com>"),
    ]);
    assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM build_events WHERE build_id = {b}")).await, 2, "one event per generation");
}

}
