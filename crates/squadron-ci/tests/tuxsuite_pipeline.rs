//! TuxSuite through the pipeline, on both engines: a signed callback
//! creates the job, whose fetch task reads the pushed payload, asks the
//! fake TuxSuite for the rest and stores the run (moved environment,
//! attachments); a pushed "running" state is consumed, so the next fetch
//! asks the lab.

mod common;

use common::fake_tuxsuite::{FakeTuxSuite, Reply};
use common::{key_pair, sign};
use serde_json::{json, Value};
use squadron_ci::callback::{receive, Callback};
use squadron_ci::Backends;
use squadron_plugins::Plugins;
use squadron_queue::{Queue, Registry};
use squadron_store::both_engines;
use squadron_store::testing::TestDb;

const QUEUES: [&str; 3] = ["ci_fetch", "ci_fetch_postprocess", "core_postprocess"];

fn case(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/tuxsuite/inline-api-cases.json", env!("CARGO_MANIFEST_DIR"));
    let text =
        std::fs::read_to_string(path).unwrap().replace("https://storage.example.com", "http://storage.example.com");
    let all: Value = serde_json::from_str(&text).unwrap();
    all["cases"].as_array().unwrap().iter().find(|c| c["test"] == name).unwrap().clone()
}

/// Serves the last block of `case`'s GETs.
fn serve(fake: &FakeTuxSuite, case: &Value) {
    let gets = case["mocked_get"].as_array().unwrap();
    let last = gets.iter().map(|g| g["mock_block"].as_u64().unwrap()).max().unwrap();
    for get in gets.iter().filter(|g| g["mock_block"] == last) {
        let reply = match (&get["json"], get["text"].as_str()) {
            (Value::String(file), _) if file.starts_with("@file:") => {
                let path = format!("{}/tests/fixtures/tuxsuite/{}", env!("CARGO_MANIFEST_DIR"), &file[6..]);
                Reply::Json(serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap(), 200)
            }
            (Value::Null, Some(text)) => Reply::Text(text.into(), 200, "text/plain"),
            (Value::Null, None) => Reply::Status(get["status_code"].as_u64().unwrap() as u16),
            (body, _) => Reply::Json(body.clone(), get["status_code"].as_u64().unwrap_or(200) as u16),
        };
        fake.serve(get["url"].as_str().unwrap(), reply);
    }
}

/// Project `p` trusting a fresh key, a TuxSuite backend polled every
/// second, and the pipeline's tasks; returns the key and the registry.
async fn setup(db: &TestDb, fake: &FakeTuxSuite) -> (p256::ecdsa::SigningKey, Registry) {
    db.public_project().await;
    let (key, public) = key_pair();
    db.execute(&format!("UPDATE projects SET project_settings = 'TUXSUITE_PUBLIC_KEY: \"{public}\"' WHERE slug = 'p'"))
        .await;
    let settings =
        json!({"TEST_METADATA_KEYS": ["device"], "TEST_BUILD_METADATA_KEYS": ["build_name", "kconfig", "toolchain"]});
    db.execute(&format!(
        "INSERT INTO backends (name, url, implementation_type, backend_settings, poll_interval) \
         VALUES ('tux', 'http://testing.tuxsuite.com', 'tuxsuite', '{settings}', 1)"
    ))
    .await;
    let backends = Backends { http: fake.client(), ..Backends::new(db.scratch.dir.path()) };
    let registry = common::registry(db, common::pipeline(db, Plugins::new(), backends));
    (key, registry)
}

async fn callback(db: &TestDb, key: &p256::ecdsa::SigningKey, kind: &str, status: &Value) -> i64 {
    let body = json!({"kind": kind, "status": status}).to_string();
    let signature = sign(key, body.as_bytes());
    let call = Callback {
        group: "g",
        project: "p",
        version: "v1",
        environment: "fallback",
        backend: "tux",
        signature: Some(&signature),
        body: body.as_bytes(),
    };
    receive(&db.store, &Queue::default(), &call).await.unwrap()
}

both_engines! {
    async fn a_pushed_test_becomes_a_run(db: TestDb) {
        let fake = FakeTuxSuite::start().await;
        let (key, registry) = setup(&db, &fake).await;
        let case = case("test_fetch_test_results_change_environment_name");
        serve(&fake, &case);
        let id = callback(&db, &key, "test", &case["test_results"]).await;
        assert_eq!(db.text(&format!("SELECT environment FROM testjobs WHERE id = {id}")).await, "qemu-armv7");

        let done = format!("SELECT COUNT(*) FROM testjobs WHERE id = {id} AND fetched AND job_status = 'Complete'");
        db.run_tasks_until(registry, &QUEUES, &done).await;
        let job_url = "http://testing.tuxsuite.com/groups/tuxgroup/projects/tuxproject/tests/123";
        assert!(!fake.urls().iter().any(|u| u == job_url), "the pushed payload stood for the job's page");
        let job = |column: &str| format!("SELECT {column} FROM testjobs WHERE id = {id}");
        assert_eq!(db.text(&job("environment")).await, "new-env-name", "TuxSuite's test_name moved the job");
        assert_eq!(db.text(&job("name")).await, "ltp-smoke");
        let consumed = format!("SELECT COUNT(*) FROM testjobs WHERE id = {id} AND results_input IS NULL AND failure IS NULL");
        assert_eq!(db.scalar(&consumed).await, 1);
        let run = db.scalar(&job("testrun_id")).await;
        assert_eq!(
            db.text(&format!("SELECT e.slug FROM testruns r JOIN environments e ON e.id = r.environment_id WHERE r.id = {run}")).await,
            "new-env-name"
        );
        assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM attachments WHERE test_run_id = {run}")).await, 2);
        let metadata: Value = serde_json::from_str(&db.text(&format!("SELECT metadata_file FROM testruns WHERE id = {run}")).await).unwrap();
        assert_eq!(metadata["build_name"], "gcc-10-defconfig-1b886a5f");
        assert_eq!(metadata["device"], "qemu-armv7");
        assert_eq!(metadata["job_url"], job_url);
        assert_eq!(metadata["job_id"], "TEST:tuxgroup@tuxproject#123");
        assert!(db.scalar(&format!("SELECT COUNT(*) FROM tests WHERE test_run_id = {run}")).await >= 15);
    }

    async fn a_pushed_running_state_is_read_once(db: TestDb) {
        let fake = FakeTuxSuite::start().await;
        let (key, registry) = setup(&db, &fake).await;
        let status = json!({"project": "tuxgroup/tuxproject", "uid": "123", "state": "running", "target_arch": "x86_64"});
        let id = callback(&db, &key, "build", &status).await;
        let case = case("test_fetch_build_results");
        serve(&fake, &case);
        let done = format!("SELECT COUNT(*) FROM testjobs WHERE id = {id} AND fetched AND job_status = 'Complete'");
        db.run_tasks_until(registry, &QUEUES, &done).await;
        let job_url = "http://testing.tuxsuite.com/groups/tuxgroup/projects/tuxproject/builds/123";
        assert_eq!(fake.urls().iter().filter(|u| *u == job_url).count(), 1, "after the pushed state, the lab's page");
        let run = db.scalar(&format!("SELECT testrun_id FROM testjobs WHERE id = {id}")).await;
        let environment = format!("SELECT e.slug FROM testruns r JOIN environments e ON e.id = r.environment_id WHERE r.id = {run}");
        assert_eq!(db.text(&environment).await, "x86_64");
        assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM attachments WHERE test_run_id = {run}")).await, 3);
    }
}
