//! Plugins on directly submitted runs, on both engines: the submit answers
//! once the run is stored; the project's plugins run as queued tasks, and
//! the build is not finished until they are done; a plugin's failure is
//! recorded in the run's metadata, and the build still finishes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Api;
use serde_json::Value;
use squadron_ci::{Backends, Ci, PostprocessRun};
use squadron_plugins::Plugins;
use squadron_queue::{Queue, Registry};
use squadron_status::{StatusContext, UpdateBuildStatus};
use squadron_store::both_engines;
#[allow(unused_imports)]
use squadron_store::testing::TestDb;

const PANIC_LOG: &str = "[    0.000000] Booting Linux\n\
[    1.234567] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n\
[    1.234568] CPU: 0 PID: 1 Comm: swapper/0 Not tainted 6.1.0 #1\n";

async fn run_plugins_until(db: &TestDb, condition: &str) {
    let ci = Arc::new(Ci {
        store: db.store.clone(),
        blobs: db.blobs.clone(),
        queue: Queue::default(),
        backends: Backends::new(db.scratch.dir.path()),
        plugins: Plugins::builtin(),
        base_url: String::new(),
        submit_retry_delay: Duration::from_secs(1),
    });
    let mut registry = Registry::new();
    registry.register::<PostprocessRun>(ci);
    registry
        .register::<UpdateBuildStatus>(Arc::new(StatusContext { store: db.store.clone(), queue: Queue::default() }));
    db.run_tasks_until(registry, &["ci_fetch_postprocess", "core_postprocess"], condition).await;
}

async fn build_status(api: &Api, build: i64) -> Value {
    api.call(reqwest::Method::GET, &format!("/api/builds/{build}/status/"), None).await.1
}

both_engines! {
    async fn the_log_parser_runs_on_a_submitted_log_before_the_build_finishes(db: TestDb) {
        let api = Api::new(db).await;
        // squad-client's plugin name: an alias of linux_log_parser.
        api.db.execute("UPDATE projects SET enabled_plugins_list = 'linux-log-parser, no-such-plugin' WHERE slug = 'p'").await;
        let (status, run) = api
            .post_multipart("/api/submit/g/p/v1/x86", Some(&api.admin), &[("tests", r#"{"boot/ok": "pass"}"#)], &[("log", "boot.log", PANIC_LOG.as_bytes())])
            .await;
        assert_eq!(status, 201, "{run}");
        let build = api.db.scalar(&format!("SELECT build_id FROM testruns WHERE id = {run}")).await;
        let before = build_status(&api, build).await;
        assert_eq!(before["finished"], false, "{before}");
        assert_eq!(api.db.scalar("SELECT COUNT(*) FROM pending_postprocess").await, 1);

        run_plugins_until(&api.db, "SELECT COUNT(*) FROM build_status WHERE finished").await;
        let names: Vec<(String,)> = api.db.store.fetch_all(&squadron_store::sql::Sql::new(
            "SELECT s.slug || '/' || m.name FROM tests t JOIN suites s ON s.id = t.suite_id \
             JOIN suite_metadata m ON m.id = t.metadata_id WHERE NOT t.result ORDER BY 1",
        )).await.unwrap();
        assert!(!names.is_empty());
        assert!(names.iter().all(|(n,)| n.starts_with("log-parser-boot/panic-")), "{names:?}");
        let after = build_status(&api, build).await;
        assert_eq!(after["finished"], true, "{after}");
        assert_eq!(after["tests_fail"], names.len() as i64, "{after}");
        assert_eq!(after["tests_pass"], 1, "{after}");
        assert_eq!(api.db.scalar("SELECT COUNT(*) FROM pending_postprocess").await, 0);
    }

    async fn tradefed_records_every_test_of_an_attached_results_archive(db: TestDb) {
        let api = Api::new(db).await;
        api.db.execute("UPDATE projects SET enabled_plugins_list = 'tradefed' WHERE slug = 'p'").await;
        let archive = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/tradefed/squad-linaro-plugins/test_output.tar.xz")).unwrap();
        let (status, run) = api
            .post_multipart("/api/submit/g/p/v1/x86", Some(&api.admin), &[], &[("attachment", "test_output.tar.xz", &archive)])
            .await;
        assert_eq!(status, 201, "{run}");
        let build = api.db.scalar(&format!("SELECT build_id FROM testruns WHERE id = {run}")).await;
        run_plugins_until(&api.db, "SELECT COUNT(*) FROM build_status WHERE finished").await;
        assert_eq!(api.db.scalar(&format!("SELECT COUNT(*) FROM tests WHERE test_run_id = {run}")).await, 515);
        assert_eq!(api.db.scalar(&format!("SELECT COUNT(*) FROM metrics WHERE test_run_id = {run}")).await, 7);
        let after = build_status(&api, build).await;
        assert_eq!(after["tests_pass"], 515, "{after}");
        let suites = api.db.scalar("SELECT COUNT(*) FROM suites WHERE slug LIKE 'cts/arm64-v8a.%'").await;
        assert_eq!(suites, 2);
    }

    async fn a_run_without_a_log_is_left_alone_by_the_log_parser(db: TestDb) {
        let api = Api::new(db).await;
        api.db.execute("UPDATE projects SET enabled_plugins_list = 'linux_log_parser' WHERE slug = 'p'").await;
        let build = api.submit_tests("p", "v1", r#"{"a": "pass"}"#).await;
        run_plugins_until(&api.db, "SELECT COUNT(*) FROM build_status WHERE finished").await;
        assert_eq!(api.db.scalar("SELECT COUNT(*) FROM tests").await, 1);
        assert_eq!(build_status(&api, build).await["finished"], true);
    }

    async fn bad_tradefed_input_is_a_failure_recorded_on_the_run(db: TestDb) {
        let api = Api::new(db).await;
        api.db.execute("UPDATE projects SET enabled_plugins_list = 'tradefed' WHERE slug = 'p'").await;
        let testdata = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/tradefed/");
        let archive = std::fs::read(format!("{testdata}squad-linaro-plugins/test_output.tar.xz")).unwrap();
        let report = std::fs::read(format!("{testdata}inline/test_result-with-failures.xml")).unwrap();
        let utf16: Vec<u8> = [0xFF, 0xFE].into_iter()
            .chain(String::from_utf8_lossy(&report).encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let cases: [(&str, &[u8], &str); 3] = [
            // Cut inside the report (the rest of the archive is other files).
            ("results.tar.xz", &archive[..1000], "results.tar.xz"),
            ("test_result.xml", &report[..report.len() / 2], "test_result.xml"),
            ("test_result.xml", &utf16, "UTF-16"),
        ];
        for (version, (file, content, expected)) in cases.into_iter().enumerate() {
            let url = format!("/api/submit/g/p/v{version}/x86");
            let (status, run) = api
                .post_multipart(&url, Some(&api.admin), &[("tests", r#"{"a": "pass"}"#), ("metadata", r#"{"job_id": "7"}"#)], &[("attachment", file, content)])
                .await;
            assert_eq!(status, 201, "{run}");
            let build = api.db.scalar(&format!("SELECT build_id FROM testruns WHERE id = {run}")).await;
            run_plugins_until(&api.db, &format!("SELECT COUNT(*) FROM build_status WHERE finished AND build_id = {build}")).await;
            let written = api.db.scalar(&format!("SELECT COUNT(*) FROM tests WHERE test_run_id = {run}")).await;
            let (_, metadata) = api.call(reqwest::Method::GET, &format!("/api/testruns/{run}/metadata_file/"), None).await;
            let failure = metadata["tradefed_failure"].as_str().unwrap_or_else(|| panic!("{file}: {metadata}"));
            assert!(failure.contains(expected), "{failure}");
            assert_eq!(metadata["job_id"], "7", "the submitted metadata is kept");
            // What was written before the failure came with a checkpoint:
            // a truncated report keeps its complete batches (none here).
            assert_eq!(written, 1, "{file}: nothing partial");
        }
        assert_eq!(api.db.scalar("SELECT COUNT(*) FROM pending_postprocess").await, 0);
    }
}
