//! Notification workers killed for real: every finished build's callbacks
//! and email are delivered at least once, every delivery of one event with
//! the same idempotency key (or Message-ID); and a crash right after a send
//! repeats exactly that send, nothing else.

use std::collections::BTreeMap;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use squadron_queue::Queue;
use squadron_status::{idempotency_key, update_build_status};
use squadron_store::sql::Sql;
use squadron_store::testing::TestDb;

mod common;
#[allow(dead_code)]
#[path = "../../squadron-status/tests/common/smtp.rs"]
mod smtp;

use common::{signal, terminate, Lcg, Workers};
use smtp::SmtpSink;

/// Creates `count` builds of a new project whose subscriber is
/// dev@example.com; returns their ids.
async fn builds(db: &TestDb, count: i64) -> Vec<i64> {
    let project = db.public_project().await;
    db.store.subscribe(project, "dev@example.com").await.unwrap();
    db.execute(&format!("INSERT INTO environments (project_id, slug) VALUES ({project}, 'x86')")).await;
    for v in 0..count {
        db.execute(&format!("INSERT INTO builds (project_id, version, created_at, datetime) VALUES ({project}, 'v{v}', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')")).await;
    }
    let rows: Vec<(i64,)> = db.store.fetch_all(&Sql::new("SELECT id FROM builds ORDER BY id")).await.unwrap();
    rows.into_iter().map(|(id,)| id).collect()
}

/// A run arrives and the build is finished: its event, its callbacks task
/// and its email task commit with the status.
async fn finish(db: &TestDb, build: i64) {
    db.execute(&format!(
        "INSERT INTO testruns (build_id, environment_id, created_at, datetime, visible) \
         SELECT {build}, e.id, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', TRUE FROM environments e LIMIT 1"
    ))
    .await;
    db.execute(&format!("UPDATE builds SET status_version = status_version + 1 WHERE id = {build}")).await;
    update_build_status(&db.store, &Queue::default(), build).await.unwrap();
}

/// Notification workers sending to `sink`, each running `concurrency`
/// tasks at once.
fn mail_workers(db: &TestDb, sink: &SmtpSink, concurrency: u16) -> (Workers, Vec<String>) {
    let mut workers = Workers::new(db);
    workers.queue = "core_notification";
    let (concurrency, port) = (concurrency.to_string(), sink.port.to_string());
    let args = ["--concurrency", &concurrency, "--smtp-host", "127.0.0.1", "--smtp-port", &port];
    (workers, args.map(str::to_string).to_vec())
}

/// Emails received, by Message-ID.
fn by_message_id(sink: &SmtpSink) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for message in sink.messages() {
        *ids.entry(message["headers"]["Message-ID"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    ids
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.scalar(sql).await
}

/// Builds finish while the notification workers are SIGKILLed at random:
/// every callback and every email is delivered at least once, every
/// delivery of one callback carries its key and every copy of one email
/// its Message-ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_survive_killed_notification_workers() {
    const BUILDS: i64 = 150;
    let db = TestDb::postgres().await;
    let sink = SmtpSink::start();
    let received: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
    let record = received.clone();
    let app = axum::Router::new().route(
        "/hook/{callback}",
        axum::routing::post(
            move |axum::extract::Path(callback): axum::extract::Path<i64>, headers: axum::http::HeaderMap| {
                let record = record.clone();
                async move {
                    // Slow enough for kills to land while requests are in flight.
                    tokio::time::sleep(Duration::from_millis(60)).await;
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

    let builds = builds(&db, BUILDS).await;
    for &build in &builds {
        for _ in 0..2 {
            let id = db.scalar(&format!("INSERT INTO callbacks (build_id, url, event) VALUES ({build}, 'x-' || {build} || '-' || (SELECT COUNT(*) FROM callbacks), 'on_build_finished') RETURNING id")).await;
            db.execute(&format!("UPDATE callbacks SET url = '{base}/hook/{id}' WHERE id = {id}")).await;
        }
    }
    let (mut workers, args) = mail_workers(&db, &sink, 4);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut running: Vec<Child> = (0..2).map(|_| workers.spawn(&args)).collect();
    let mut random = Lcg(u64::from(std::process::id()) ^ 0x5eed);
    let mut kills = 0;
    let mut next_kill = Instant::now() + Duration::from_millis(300 + random.below(700));
    let mut finished = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    let done =
        "SELECT (SELECT COUNT(*) FROM callbacks WHERE is_sent) + (SELECT COUNT(*) FROM build_status WHERE notified)";
    while count(&db, done).await < 3 * BUILDS {
        assert!(Instant::now() < deadline, "not every notification was sent\n{}", workers.logs());
        if let Some(&build) = builds.get(finished) {
            finish(&db, build).await;
            finished += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if Instant::now() >= next_kill && count(&db, done).await < 3 * BUILDS {
            let victim = random.below(2) as usize;
            let mut killed = std::mem::replace(&mut running[victim], workers.spawn(&args));
            signal(&killed, "KILL");
            killed.wait().unwrap();
            kills += 1;
            next_kill = Instant::now() + Duration::from_millis(300 + random.below(700));
        }
    }
    for child in &mut running {
        terminate(child, Duration::from_secs(15), &workers);
    }

    let received = received.lock().unwrap().clone();
    let callbacks: Vec<(i64, i64)> = db.store.fetch_all(&Sql::new("SELECT id, build_id FROM callbacks")).await.unwrap();
    let mut repeated_callbacks = 0;
    for (callback, build) in &callbacks {
        let keys: Vec<&String> = received.iter().filter(|(c, _)| c == callback).map(|(_, k)| k).collect();
        assert!(!keys.is_empty(), "callback {callback} was never delivered");
        let expected = idempotency_key(*build, 0, *callback);
        assert!(keys.iter().all(|k| **k == expected), "callback {callback}: keys {keys:?}, expected {expected}");
        repeated_callbacks += keys.len() - 1;
    }
    let emails = by_message_id(&sink);
    for &build in &builds {
        let id = format!("<squadron.build-{build}.on_build_finished.0.build@localhost>");
        assert!(emails.contains_key(&id), "build {build}'s email ({id}) never arrived");
    }
    assert_eq!(emails.len() as i64, BUILDS, "one Message-ID per build, whatever the attempts: {emails:?}");
    let repeated_emails: usize = emails.values().map(|n| n - 1).sum();
    assert_eq!(db.scalar("SELECT COUNT(*) FROM build_events").await, BUILDS, "one event per build");
    assert!(kills >= 2, "the chaos ran: {kills} kills");
    eprintln!(
        "{BUILDS} builds, {kills} SIGKILLs: {} callback deliveries ({repeated_callbacks} repeated), {} emails ({repeated_emails} repeated), every repeat with its key",
        received.len(),
        sink.messages().len(),
    );
}

/// Workers abort right after sending an email with probability `p`
/// (the test-only crash hook): the emails received twice are exactly the
/// logged aborts. One task at a time per worker, so an abort interrupts
/// no other send.
async fn crash_window(p: f64, builds_count: i64) {
    let db = TestDb::postgres().await;
    let sink = SmtpSink::start();
    let builds = builds(&db, builds_count).await;
    let (mut workers, args) = mail_workers(&db, &sink, 1);
    let crash_log = workers.dir.path().join("aborts.log");
    workers.env = vec![
        ("SQUADRON_CRASH_AFTER_SEND".into(), p.to_string()),
        ("SQUADRON_CRASH_LOG".into(), crash_log.display().to_string()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut running: Vec<Child> = (0..2).map(|_| workers.spawn(&args)).collect();
    for &build in &builds {
        finish(&db, build).await;
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut restarts = 0;
    while count(&db, "SELECT COUNT(*) FROM build_status WHERE notified").await < builds_count {
        assert!(Instant::now() < deadline, "not every build was notified\n{}", workers.logs());
        for child in &mut running {
            if child.try_wait().unwrap().is_some() {
                *child = workers.spawn(&args);
                restarts += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for child in &mut running {
        terminate(child, Duration::from_secs(15), &workers);
    }
    let aborts: Vec<String> =
        std::fs::read_to_string(&crash_log).unwrap_or_default().lines().map(str::to_string).collect();
    let emails = by_message_id(&sink);
    assert_eq!(emails.len() as i64, builds_count, "every build's email arrived");
    let duplicates: usize = emails.values().map(|n| n - 1).sum();
    assert_eq!(duplicates, aborts.len(), "raw duplicates = logged aborts ({restarts} restarts): {emails:?}");
    for id in &aborts {
        assert!(emails[id] >= 2, "{id} aborted after its send, so it was sent again");
    }
    if p == 0.0 {
        assert_eq!(duplicates, 0);
    } else {
        assert!(!aborts.is_empty(), "the hook fired");
    }
    eprintln!("p = {p}: {builds_count} emails, {} aborts, {duplicates} duplicates", aborts.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_right_after_a_send_repeats_only_that_send() {
    crash_window(0.25, 24).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_crashes_no_email_is_sent_twice() {
    crash_window(0.0, 24).await;
}
