//! The `squadron` binary, run as a user would: admin commands, migrations,
//! and `serve` answering a submission and stopping on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use squadron_store::testing::TestDb;

fn squadron(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_squadron"))
        .args(args)
        .current_dir(dir)
        .env_remove("SQUADRON_DATABASE_URL")
        .env_remove("SQUADRON_DATA_DIR")
        .output()
        .expect("run squadron")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = squadron(dir, args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = squadron(dir, args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn admin_commands_on_the_embedded_database() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["admin", "user", "create", "ci", "--email", "ci@example.com"]);
    ok(d, &["admin", "user", "create", "root", "--superuser"]);
    ok(d, &["admin", "group", "create", "lkft", "--name", "LKFT"]);
    ok(d, &["admin", "group", "add-member", "lkft", "ci", "--role", "submitter"]);
    ok(
        d,
        &[
            "admin",
            "project",
            "create",
            "lkft/linux",
            "--name",
            "Linux",
            "--private",
            "--plugins",
            "linux-log-parser,tradefed",
        ],
    );
    assert!(d.join("squadron-data/squadron.db").exists(), "the embedded database lives in ./squadron-data");
    let out = squadron(d, &["admin", "recompute-status", "lkft/linux"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("recomputed the status of 0 build(s) of lkft/linux"));
    assert!(fails(d, &["admin", "recompute-status", "lkft/nope"]).contains("no project"));

    let token = ok(d, &["admin", "token", "create", "ci"]);
    assert_eq!(token.trim().len(), 40, "the key alone: {token:?}");
    assert_eq!(token.lines().count(), 1);
    assert_eq!(ok(d, &["admin", "token", "create", "ci"]), token, "an existing key is printed again");
    let rotated = ok(d, &["admin", "token", "create", "ci", "--rotate"]);
    assert_ne!(rotated, token);

    assert!(fails(d, &["admin", "user", "create", "ci"]).contains("already exists"));
    assert!(fails(d, &["admin", "group", "add-member", "lkft", "ci", "--role", "owner"]).contains("owner"));
    assert!(fails(d, &["admin", "group", "add-member", "nope", "ci", "--role", "member"]).contains("nope"));
    assert!(fails(d, &["admin", "token", "create", "nobody"]).contains("nobody"));
    assert!(fails(d, &["admin", "project", "create", "linux"]).contains("GROUP/SLUG"));
    assert!(fails(d, &["admin", "project", "create", "lkft/bad slug"]).contains("bad slug"));
    assert!(fails(d, &["admin", "group", "create", "--", "-x"]).contains("\"-x\""));
}

#[tokio::test]
async fn admin_backend_commands() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let settings = d.join("lava.yaml");
    std::fs::write(&settings, "CI_LAVA_INFRA_ERROR_MESSAGES: [timeout]\n").unwrap();
    let settings = settings.to_str().unwrap();
    let backend =
        |args: &[&str]| squadron(d, &[&["--database", db.url.as_str(), "admin", "backend"][..], args].concat());
    let ok = |args: &[&str]| {
        let out = backend(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let fails = |args: &[&str]| {
        let out = backend(args);
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    };
    let created = backend(&[
        "create",
        "lkft-lava",
        "--type",
        "lava",
        "--url",
        "https://lava.example.com/RPC2/",
        "--username",
        "bot",
        "--token",
        "t0ken",
        "--settings",
        settings,
        "--poll-interval",
        "30s",
        "--max-fetch-attempts",
        "5",
        "--no-listen",
    ]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    ok(&["create", "demo", "--type", "fake", "--url", "https://fake.example.com/", "--no-poll"]);
    assert_eq!(
        db.text("SELECT name || ' ' || poll_interval || ' ' || max_fetch_attempts || ' ' || token || ' ' || backend_settings FROM backends WHERE name = 'lkft-lava'").await,
        "lkft-lava 30 5 t0ken CI_LAVA_INFRA_ERROR_MESSAGES: [timeout]\n"
    );
    assert_eq!(db.scalar("SELECT COUNT(*) FROM backends WHERE name = 'demo' AND poll_interval = 3600 AND NOT poll_enabled AND listen_enabled").await, 1);
    let listed = ok(&["list"]);
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        [
            "demo\tfake\thttps://fake.example.com/\tpoll every 1h\t3 fetch attempts\tlisten",
            "lkft-lava\tlava\thttps://lava.example.com/RPC2/\tpoll every 30s\t5 fetch attempts\tpoll",
        ]
    );
    assert!(!listed.contains("t0ken"), "tokens are not shown");

    let create = |name: &'static str, extra: &'static [&'static str]| {
        let mut args = vec!["create", name, "--type", "fake", "--url", "https://x.example.com/"];
        args.extend_from_slice(extra);
        fails(&args)
    };
    assert!(create("demo", &[]).contains("backend \"demo\" already exists"));
    assert!(create("x", &["--settings", "/nonexistent.yaml"]).contains("cannot read the settings file"));
    std::fs::write(d.join("list.yaml"), "- a\n").unwrap();
    let bad_settings = d.join("list.yaml");
    assert!(fails(&[
        "create",
        "x",
        "--type",
        "fake",
        "--url",
        "https://x/",
        "--settings",
        bad_settings.to_str().unwrap()
    ])
    .contains("mapping"));
    assert!(create("x", &["--poll-interval", "soon"]).contains("--poll-interval"));
    assert!(create("x", &["--poll-interval", "0s"]).contains("at least a second"));
    assert!(fails(&["create", "x", "--type", "jenkins", "--url", "https://x/"]).contains("jenkins"));
    assert!(fails(&["create", "x", "--type", "fake", "--url", "lab"]).contains("--url"));
    assert_eq!(db.scalar("SELECT COUNT(*) FROM backends").await, 2, "nothing created by the failures");

    // A backend with test jobs is kept.
    let project = db.public_project().await;
    db.execute(&format!("INSERT INTO testjobs (backend_id, target_id, environment, created_at) SELECT id, {project}, 'x86', NOW() FROM backends WHERE name = 'demo'")).await;
    assert!(fails(&["delete", "demo"]).contains("has test jobs"));
    ok(&["delete", "lkft-lava"]);
    assert!(fails(&["delete", "lkft-lava"]).contains("no backend \"lkft-lava\""));
    assert_eq!(db.scalar("SELECT COUNT(*) FROM backends").await, 1);
}

#[test]
fn explicit_databases_are_migrated_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = format!("sqlite://{}", d.join("explicit.db").display());
    let err = fails(d, &["--database", &url, "admin", "group", "create", "g"]);
    assert!(err.contains("cannot open the database"), "{err}");
    assert!(!d.join("explicit.db").exists(), "a refused database is not created");

    let first = ok(d, &["--database", &url, "migrate"]);
    assert!(first.starts_with("applied ") && !first.starts_with("applied 0 "), "{first}");
    ok(d, &["--database", &url, "admin", "group", "create", "g"]);
    assert!(ok(d, &["--database", &url, "migrate"]).contains("applied 0 migration"));

    let other = format!("sqlite://{}", d.join("other.db").display());
    ok(d, &["--database", &other, "migrate"]);
    ok(d, &["--database", &other, "--migrate", "admin", "group", "create", "g"]);
    // SQUADRON_DATABASE_URL works as --database does.
    let out = Command::new(env!("CARGO_BIN_EXE_squadron"))
        .args(["admin", "group", "create", "h"])
        .current_dir(d)
        .env("SQUADRON_DATABASE_URL", &other)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!d.join("squadron-data").exists(), "the embedded database was not touched");
}

/// Starts `squadron serve` on a free port; returns the process and its URL.
fn start_serve(dir: &Path, extra: &[&str]) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_squadron"))
        .args(extra)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .current_dir(dir)
        .env_remove("SQUADRON_DATABASE_URL")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("serve logs where it listens").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

fn stop(mut child: std::process::Child) {
    let started = Instant::now();
    send_signal(child.id(), "TERM");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "serve exits 0 on SIGTERM: {status:?}");
}

fn send_signal(pid: u32, signal: &str) {
    assert!(Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().unwrap().success());
}

async fn submit_once(dir: &Path, url: &str, db_args: &[&str]) {
    let mut args: Vec<&str> = db_args.to_vec();
    for command in [
        vec!["admin", "user", "create", "ci"],
        vec!["admin", "group", "create", "g"],
        vec!["admin", "group", "add-member", "g", "ci", "--role", "submitter"],
        vec!["admin", "project", "create", "g/p"],
    ] {
        args.truncate(db_args.len());
        args.extend(command);
        ok(dir, &args);
    }
    args.truncate(db_args.len());
    args.extend(["admin", "token", "create", "ci"]);
    let token = ok(dir, &args).trim().to_string();
    let resp = reqwest::Client::new()
        .post(format!("{url}/api/submit/g/p/1.0/qemu"))
        .header("Authorization", format!("token {token}"))
        .form(&[("tests", r#"{"boot/login": "pass"}"#), ("metadata", r#"{"job_id": "7"}"#)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let id: i64 = resp.text().await.unwrap().parse().unwrap();
    assert!(id > 0);
}

#[tokio::test]
async fn serve_on_the_embedded_database() {
    let dir = tempfile::tempdir().unwrap();
    let (child, url) = start_serve(dir.path(), &[]);
    submit_once(dir.path(), &url, &[]).await;
    stop(child);
}

#[tokio::test]
async fn serve_on_postgresql() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let (child, url) = start_serve(dir.path(), &["--database", &db.url]);
    submit_once(dir.path(), &url, &["--database", &db.url]).await;
    stop(child);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM tests").await, 1);
}
