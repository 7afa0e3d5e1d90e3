//! Patch builds reported to their patch source on both engines: GitHub
//! commit statuses and Gerrit reviews (REST and SSH) against local fakes.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use squadron_queue::{Queue, Registry};
use squadron_status::notify::{MailSettings, Mailer, NotifyBuild, Notifying, Site};
use squadron_status::patches::{on_created, NotifyPatchSource, Patching};
use squadron_store::both_engines;
use squadron_store::builds::PatchFields;
use squadron_store::testing::TestDb;

mod common;
use common::{submit, updated};

/// A request the fake received: method and path, authorization, body.
type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A fake GitHub and Gerrit on loopback; returns its base URL.
async fn fake_forge(seen: Seen) -> String {
    let record =
        move |method: axum::http::Method, uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
                let body = serde_json::from_str(&body).unwrap_or(Value::Null);
                seen.lock().unwrap().push((format!("{method} {}", uri.path()), auth, body));
                if uri.path().starts_with("/a/changes/") && method == axum::http::Method::GET {
                    return ")]}'\n{\"project\": \"kernel/common\"}".to_string();
                }
                "{}".to_string()
            }
        };
    let app = axum::Router::new().fallback(record);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn site() -> Site {
    Site { name: "Test SQUAD".into(), base_url: "https://squad.example.com".into() }
}

/// Runs the notification and patch tasks until `condition` is at least 1.
async fn run_until(db: &TestDb, ssh: &std::path::Path, condition: &str) {
    let mut registry = Registry::new();
    let settings =
        MailSettings { smtp_host: "127.0.0.1".into(), smtp_port: 9, from: "noreply@example.com".into(), site: site() };
    let mailer = Mailer::new(settings).unwrap();
    registry.register::<NotifyBuild>(Arc::new(Notifying { store: db.store.clone(), queue: Queue::default(), mailer }));
    let mut patching = Patching::new(db.store.clone(), site());
    patching.ssh = ssh.to_path_buf();
    registry.register::<NotifyPatchSource>(Arc::new(patching));
    db.run_tasks_until(registry, &["core_notification"], condition).await;
}

/// Creates a patch build `version` from `source` with `patch_id`, as
/// `/api/createbuild` does.
async fn patch_build(db: &TestDb, project: i64, version: &str, source: &str, patch_id: &str) -> i64 {
    let hook = on_created(Queue::default());
    let patch =
        PatchFields { source: Some(source), baseline: Some("base"), id: Some(patch_id), on_created: Some(&hook) };
    let (build, created) = db.store.create_build(project, version, patch, None).await.unwrap();
    assert!(created);
    build.id
}

fn delivered(stage: &str, build: i64) -> String {
    format!("SELECT COUNT(*) FROM patch_deliveries WHERE error IS NULL AND stage = '{stage}' AND build_id = {build}")
}

both_engines! {

async fn github_gets_a_pending_then_a_final_commit_status(db: TestDb) {
    let seen: Seen = Arc::default();
    let forge = fake_forge(seen.clone()).await;
    let p = db.public_project().await;
    submit(&db, p, "base", "x86", "2026-01-01T00:00:00Z", r#"{"s/a": "pass"}"#, "").await;
    db.execute(&format!("INSERT INTO patch_sources (name, url, token, implementation) VALUES ('gh', '{forge}/', 's3cret', 'github')")).await;
    let b = patch_build(&db, p, "v1", "gh", "linaro/squad:abc123").await;
    run_until(&db, std::path::Path::new("ssh"), &delivered("created", b)).await;
    let (request, auth, body) = seen.lock().unwrap()[0].clone();
    assert_eq!((request.as_str(), auth.as_str()), ("POST /repos/linaro/squad/statuses/abc123", "token s3cret"));
    assert_eq!(body, json!({"state": "pending", "target_url": "https://squad.example.com/g/p/build/v1/",
        "description": "This build is being tested", "context": "continuous-integration/squad"}));
    assert_eq!(db.text(&format!("SELECT patch_url FROM builds WHERE id = {b}")).await, format!("{forge}/repos/linaro/squad/commits/abc123"));

    submit(&db, p, "v1", "x86", "2026-01-02T00:00:00Z", r#"{"s/a": "fail"}"#, "").await;
    assert!(updated(&db, b).await.finished);
    run_until(&db, std::path::Path::new("ssh"), &delivered("finished", b)).await;
    let (request, _, body) = seen.lock().unwrap()[1].clone();
    assert_eq!(request, "POST /repos/linaro/squad/statuses/abc123");
    assert_eq!((body["state"].as_str(), body["description"].as_str()), (Some("failure"), Some("Some tests failed")));
    assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM builds WHERE patch_notified AND id = {b}")).await, 1);
    assert_eq!(seen.lock().unwrap().len(), 2, "each stage reported once");
}

async fn gerrit_gets_reviews_over_rest_with_the_projects_labels(db: TestDb) {
    let seen: Seen = Arc::default();
    let forge = fake_forge(seen.clone()).await;
    let p = db.public_project().await;
    db.execute(&format!("UPDATE projects SET project_settings = 'plugins: {{gerrit: {{build_finished: {{success: {{Verified: 1}}}}}}}}' WHERE id = {p}")).await;
    submit(&db, p, "base", "x86", "2026-01-01T00:00:00Z", r#"{"s/a": "pass"}"#, "").await;
    db.execute(&format!("INSERT INTO patch_sources (name, url, username, password, implementation) VALUES ('review', '{forge}', 'bot', 'pw', 'gerrit')")).await;
    let b = patch_build(&db, p, "v1", "review", "4321,7").await;
    submit(&db, p, "v1", "x86", "2026-01-02T00:00:00Z", r#"{"s/a": "pass"}"#, "").await;
    updated(&db, b).await;
    run_until(&db, std::path::Path::new("ssh"), &delivered("finished", b)).await;
    run_until(&db, std::path::Path::new("ssh"), &delivered("created", b)).await;
    let seen = seen.lock().unwrap().clone();
    let basic = "Basic Ym90OnB3"; // bot:pw
    let reviews: Vec<&(String, String, Value)> = seen.iter().filter(|r| r.0.starts_with("POST")).collect();
    assert_eq!(reviews.len(), 2, "{seen:?}");
    assert!(reviews.iter().all(|r| r.0 == "POST /a/changes/4321/revisions/7/review" && r.1 == basic), "{seen:?}");
    let created = reviews.iter().find(|r| r.2["message"].as_str().unwrap().starts_with("Build created")).unwrap();
    assert_eq!(created.2["message"], "Build created: v1 (https://squad.example.com/g/p/build/v1/)\nBaseline: base (https://squad.example.com/g/p/build/base/)");
    let finished = reviews.iter().find(|r| r.2["message"].as_str().unwrap().starts_with("Build finished")).unwrap();
    assert!(finished.2["message"].as_str().unwrap().ends_with("\nAll tests passed"), "{finished:?}");
    assert_eq!(finished.2["labels"], json!({"Verified": 1}), "the project's success labels");
    assert_eq!(db.text(&format!("SELECT patch_url FROM builds WHERE id = {b}")).await, format!("{forge}/c/kernel/common/+/4321/7"));
}

async fn gerrit_over_ssh_runs_gerrit_review(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ssh.log");
    let ssh = dir.path().join("ssh");
    std::fs::write(&ssh, format!("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\" >> {}; done\necho --- >> {}\n", log.display(), log.display())).unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&ssh).status().unwrap();
    let p = db.public_project().await;
    submit(&db, p, "base", "x86", "2026-01-01T00:00:00Z", r#"{"s/a": "pass"}"#, "").await;
    db.execute("INSERT INTO patch_sources (name, url, username, implementation) VALUES ('review', 'ssh://review.example.com', 'bot', 'gerrit')").await;
    let b = patch_build(&db, p, "v1", "review", "4321/7").await;
    submit(&db, p, "v1", "x86", "2026-01-02T00:00:00Z", r#"{"s/a": "fail"}"#, "").await;
    updated(&db, b).await;
    run_until(&db, &ssh, &delivered("finished", b)).await;
    run_until(&db, &ssh, &delivered("created", b)).await;
    let calls = std::fs::read_to_string(&log).unwrap();
    let finished = calls.split("---\n").find(|c| c.contains("Build finished")).expect("a finished review");
    let args: Vec<&str> = finished.lines().collect();
    assert_eq!(&args[..8], ["-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "LogLevel=ERROR", "-p", "29418"]);
    assert_eq!(args[8], "bot@review.example.com");
    assert!(args[9].starts_with("gerrit review -m \"Build finished: v1 (https://squad.example.com/g/p/build/v1/)"), "{finished}");
    assert!(args[10..].join("\n").ends_with("Some tests failed (1)\" 4321,7 --label code-review=-1"), "{finished}");
}

}
