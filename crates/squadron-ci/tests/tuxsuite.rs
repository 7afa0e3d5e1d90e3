//! The `tuxsuite` backend against a fake TuxSuite replaying the payloads of
//! SQUAD 1.98's own tests (`tests/fixtures/tuxsuite/`): every case gives
//! SQUAD's status, tests, metrics, metadata, logs, name, failure and
//! environment; then the failures a real lab adds (bad pages, 5xx, slow
//! answers).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::fake_tuxsuite::{FakeTuxSuite, Reply};
use common::{backend_record, test_job};
use serde_json::{json, Value};
use squadron_ci::backend::tuxsuite::{HttpPolicy, TuxSuite};
use squadron_ci::{Backend, BackendError, Fetched, JobResults};

const TUXSUITE_URL: &str = "http://testing.tuxsuite.com";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/tuxsuite/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The recorded cases, with the storage's `https` URLs made `http` (the
/// fake is a plain HTTP proxy).
fn cases() -> Value {
    serde_json::from_str(
        &fixture("inline-api-cases.json").replace("https://storage.example.com", "http://storage.example.com"),
    )
    .unwrap()
}

fn policy() -> HttpPolicy {
    HttpPolicy {
        retries: 2,
        backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        timeout: Duration::from_secs(5),
    }
}

fn tuxsuite(fake: &FakeTuxSuite, settings: &Value, policy: HttpPolicy) -> TuxSuite {
    let record = backend_record("tuxsuite", TUXSUITE_URL, Some(&settings.to_string()));
    TuxSuite::new(&record, fake.client(), policy).unwrap()
}

/// The fake's reply for one of SQUAD's mocked GETs.
fn reply(get: &Value) -> Reply {
    let code = get["status_code"].as_u64().unwrap_or(200) as u16;
    if let Some(body) = get.get("json") {
        if let Some(file) = body.as_str().and_then(|s| s.strip_prefix("@file:")) {
            return Reply::Json(serde_json::from_str(&fixture(file)).unwrap(), code);
        }
        return Reply::Json(body.clone(), code);
    }
    if let Some(text) = get["text"].as_str() {
        return Reply::Text(text.into(), code, "text/plain");
    }
    assert!(get.get("exc").is_none(), "exceptions are replayed by their own tests");
    Reply::Status(code)
}

/// Serves the GETs of `block` only.
fn serve_block(fake: &FakeTuxSuite, case: &Value, block: u64) {
    fake.clear();
    for get in case["mocked_get"].as_array().unwrap() {
        if get["mock_block"] == block {
            fake.serve(get["url"].as_str().unwrap(), reply(get));
        }
    }
}

fn blocks(case: &Value) -> u64 {
    case["mocked_get"].as_array().unwrap().iter().map(|g| g["mock_block"].as_u64().unwrap()).max().unwrap()
}

async fn fetch(backend: &TuxSuite, job_id: &str, input: Option<String>) -> Result<Fetched, BackendError> {
    backend.fetch(&test_job(job_id, "", input)).await
}

fn finished(fetched: Result<Fetched, BackendError>, case: &str) -> JobResults {
    match fetched {
        Ok(Fetched::Finished(results)) => *results,
        other => panic!("{case}: expected results, got {other:?}"),
    }
}

/// SQUAD's expected results: `None` is a skip.
fn expected_tests(value: &Value) -> BTreeMap<String, String> {
    value.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("skip").to_string())).collect()
}

/// The quoted argument of an assertion `self.assertEqual('<x>', <what>)`.
fn quoted(assertion: &str, what: &str) -> Option<String> {
    let rest = assertion.strip_prefix("self.assertEqual(")?.strip_suffix(&format!(", {what})"))?;
    let quote = rest.chars().next()?;
    Some(rest.strip_prefix(quote)?.strip_suffix(quote)?.to_string())
}

/// Checks `results` against every assertion of `case`; each assertion must
/// be understood.
fn check(case: &Value, results: &JobResults, requests: usize) {
    let name = case["test"].as_str().unwrap();
    let status = &results.status;
    let tests: BTreeMap<String, String> = results.tests.iter().map(|t| (t.name.clone(), t.result.clone())).collect();
    let non_lava: BTreeMap<String, String> =
        tests.iter().filter(|(k, _)| !k.starts_with("lava/")).map(|(k, v)| (k.clone(), v.clone())).collect();
    let metrics: BTreeMap<String, Vec<f64>> =
        results.metrics.iter().map(|m| (m.name.clone(), m.values.clone())).collect();
    let log = String::from_utf8(results.log.clone().unwrap_or_default()).unwrap();
    let final_block = blocks(case);
    let text_of = |suffix: &str| {
        case["mocked_get"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["mock_block"] == final_block && g["url"].as_str().unwrap().ends_with(suffix))
            .and_then(|g| g["text"].as_str())
            .map(String::from)
    };
    for assertion in case["assertions"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()) {
        match assertion {
            "self.assertTrue(completed)" => assert!(results.completed, "{name}"),
            "self.assertEqual(None, results)" | "self.assertEqual(None, self.tuxsuite.fetch(testjob))" => {}
            "self.assertEqual(sorted(expected_metadata.items()), sorted(metadata.items()))" => {
                let expected: BTreeMap<_, _> =
                    case["expected_metadata"].as_object().unwrap().clone().into_iter().collect();
                let got: BTreeMap<_, _> = results.metadata.clone().into_iter().collect();
                assert_eq!(got, expected, "{name}: metadata");
            }
            "self.assertEqual(sorted(expected_tests.items()), sorted(tests.items()))" => {
                assert_eq!(tests, expected_tests(&case["expected_tests"]), "{name}: tests")
            }
            "self.assertEqual(sorted(expected_tests.items()), sorted(tests_results.items()))" => {
                assert_eq!(non_lava, expected_tests(&case["expected_tests"]), "{name}: tests")
            }
            "self.assertEqual({'boot/boot': None}, tests)" => {
                assert_eq!(tests, BTreeMap::from([("boot/boot".to_string(), "skip".to_string())]), "{name}")
            }
            "self.assertEqual(sorted(expected_metrics.items()), sorted(metrics.items()))" => {
                let expected: BTreeMap<String, Vec<f64>> = case["expected_metrics"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| {
                        (k.clone(), vec![v.as_str().map_or_else(|| v.as_f64().unwrap(), |s| s.parse().unwrap())])
                    })
                    .collect();
                assert_eq!(metrics, expected, "{name}: metrics");
            }
            "self.assertEqual({}, metrics)" => assert!(metrics.is_empty(), "{name}"),
            "self.assertEqual(test_logs, logs)" => {
                let expected = match &case["test_logs"] {
                    Value::String(s) => s.clone(),
                    generated => {
                        assert_eq!(generated["generated_as"], "\"\\n\".join(f\"line {i}\" for i in range(1, 1000))");
                        (1..1000).map(|i| format!("line {i}")).collect::<Vec<_>>().join("\n")
                    }
                };
                assert_eq!(log, expected, "{name}: log");
            }
            "self.assertEqual(build_logs, logs)" => {
                // The build's log, unless TuxSuite gave up on it.
                let expected = if status == "Incomplete" { String::new() } else { text_of("/build.log").unwrap() };
                assert_eq!(log, expected, "{name}: log");
            }
            "self.assertEqual('', logs)" => assert_eq!(log, "", "{name}"),
            "self.assertEqual(build_results['build_name'], testjob.name)" => {
                assert_eq!(results.name.as_deref(), case["build_results"]["build_name"].as_str(), "{name}")
            }
            "self.assertEqual(0, len(attachments))" => assert!(results.attachments.is_empty(), "{name}"),
            "self.assertEqual('line 958', tests['ltp-smoke/access01']['log'])" => {
                let test = results.tests.iter().find(|t| t.name == "ltp-smoke/access01").unwrap();
                assert_eq!(test.log.as_deref(), Some("line 958"), "{name}");
            }
            "self.assertEqual(8, fake_request.call_count)" => assert_eq!(requests, 8, "{name}"),
            other => {
                if let Some(expected) = quoted(other, "status") {
                    assert_eq!(*status, expected, "{name}: status");
                } else if let Some(expected) = quoted(other, "testjob.name") {
                    assert_eq!(results.name.as_deref(), Some(expected.as_str()), "{name}: name");
                } else if let Some(expected) = quoted(other, "testjob.failure") {
                    assert_eq!(results.failure.as_deref(), Some(expected.as_str()), "{name}: failure");
                } else if let Some(expected) = quoted(other, "testjob.environment") {
                    assert_eq!(results.environment.as_deref(), Some(expected.as_str()), "{name}: environment");
                } else {
                    panic!("{name}: assertion not understood: {other}");
                }
            }
        }
    }
    // Attachments: the files the lab had, once the job's results are read
    // (a test's only when its log is).
    let expected: &[&str] = match case["job_id"].as_str().unwrap().split(':').next().unwrap() {
        "BUILD" => &["config", "tuxmake_reproducer.sh", "tux_plan.yaml"],
        "TEST" if text_of("/lava-logs.yaml").is_some() => &["reproducer", "tux_plan.yaml"],
        _ => &[],
    };
    let expected: Vec<(String, String)> =
        expected.iter().filter_map(|n| text_of(&format!("/{n}")).map(|t| (n.to_string(), t))).collect();
    let got: Vec<(String, String)> =
        results.attachments.iter().map(|(n, c)| (n.clone(), String::from_utf8(c.clone()).unwrap())).collect();
    assert_eq!(got, expected, "{name}: attachments");
}

/// The cases that fetch a job (the others test SQUAD's `fetch_url`).
#[tokio::test]
async fn every_recorded_case_gives_squads_results() {
    let all = cases();
    let settings = &all["backend_settings_in_setUp"];
    let mut checked = 0;
    for case in all["cases"].as_array().unwrap() {
        let name = case["test"].as_str().unwrap();
        let Some(job_id) = case["job_id"].as_str() else {
            assert!(name.starts_with("test_fetch_url") || name == "test_fetch_authenticated_url", "{name}");
            continue;
        };
        let fake = FakeTuxSuite::start().await;
        let backend = tuxsuite(&fake, settings, policy());
        let (blocks, input) = match name {
            // A callback's payload stands for the job's page.
            "test_fetch_results_from_testjob_input" => (1, Some(case["test_results"].to_string())),
            _ => (blocks(case), None),
        };
        if blocks == 2 {
            serve_block(&fake, case, 1);
            let fetched = fetch(&backend, job_id, None).await;
            assert!(matches!(fetched, Ok(Fetched::Running { status: None })), "{name}: {fetched:?}");
        }
        serve_block(&fake, case, blocks);
        fake.forget_requests();
        if name == "test_fetch_test_results_unknown" {
            let fetched = fetch(&backend, job_id, None).await;
            assert!(matches!(fetched, Ok(Fetched::Running { status: None })), "{name}: {fetched:?}");
            checked += 1;
            continue;
        }
        if name == "test_follow_test_dependency_using_cached_testrun" {
            // SQUAD reads the build's name from the sanity test's run (13
            // requests in all); squadron's backend never reads the
            // database, so it follows the chain again (15).
            let sanity = finished(fetch(&backend, "TEST:tuxgroup@tuxproject#112233", None).await, name);
            assert_eq!(fake.seen().len(), 7, "{name}");
            let results = finished(fetch(&backend, job_id, None).await, name);
            assert_eq!(results.metadata["build_name"], sanity.metadata["build_name"]);
            assert_eq!(results.metadata["build_name"], case["build_name"]);
            assert_eq!(results.name.as_deref(), Some("ltp-smoke"));
            assert_eq!(fake.seen().len(), 15, "{name}: {:#?}", fake.urls());
            checked += 1;
            continue;
        }
        let results = finished(fetch(&backend, job_id, input.clone()).await, name);
        let job_url = backend.job_url(&test_job(job_id, "", None)).unwrap();
        if input.is_some() {
            assert!(!fake.urls().contains(&job_url), "{name}: the stored payload is used, not the job's page");
        }
        assert!(fake.seen().iter().all(|s| s.method == "GET" && s.authorization.is_none()), "{name}");
        check(case, &results, fake.seen().len());
        assert!(results.completed, "{name}");
        checked += 1;
    }
    assert_eq!(checked, 16, "every case with a job was checked");
}

/// A build whose log is at `http://tuxbuild.com/build1/build.log`, the URL
/// of SQUAD's `test_fetch_url*` cases.
fn build_page() -> Value {
    json!({
        "state": "finished", "retry": 0, "build_status": "pass", "build_name": "b", "warnings_count": 0,
        "download_url": "http://tuxbuild.com/build1/",
        "tuxmake_metadata": {"results": {"duration": {"build": 1}}},
    })
}

const BUILD_JOB: &str = "BUILD:tuxgroup@tuxproject#1";
const BUILD_URL: &str = "http://testing.tuxsuite.com/groups/tuxgroup/projects/tuxproject/builds/1";

#[tokio::test]
async fn logs_are_fetched_with_the_projects_token() {
    let all = cases();
    let case = all["cases"].as_array().unwrap().iter().find(|c| c["test"] == "test_fetch_authenticated_url").unwrap();
    let get = &case["mocked_get"][0];
    let fake = FakeTuxSuite::start().await;
    let backend = tuxsuite(&fake, &json!({}), policy());
    fake.serve(BUILD_URL, Reply::Json(build_page(), 200));
    fake.serve(get["url"].as_str().unwrap(), reply(get));
    let job = test_job(BUILD_JOB, "TUXSUITE_TOKEN: '12345'", None);
    let results = finished(backend.fetch(&job).await, "authenticated");
    assert_eq!(results.log.as_deref(), Some(b"dummy build log".as_slice()));
    let seen = fake.seen();
    assert!(seen.iter().any(|s| s.url == get["url"]));
    for request in seen {
        assert_eq!(request.authorization.as_deref(), Some("12345"), "{}", request.url);
    }
}

#[tokio::test]
async fn an_unreachable_lab_is_a_temporary_failure() {
    // SQUAD's test_fetch_url_faulty_url: a connection that times out.
    let fake = FakeTuxSuite::start().await;
    let slow = HttpPolicy { retries: 1, timeout: Duration::from_millis(200), ..policy() };
    let backend = tuxsuite(&fake, &json!({}), slow);
    fake.serve(BUILD_URL, Reply::Json(build_page(), 200));
    fake.serve(
        "http://tuxbuild.com/build1/build.log",
        Reply::Delay(Duration::from_secs(5), Box::new(Reply::Status(200))),
    );
    let started = std::time::Instant::now();
    match fetch(&backend, BUILD_JOB, None).await {
        Err(BackendError::Temporary(message)) => assert!(message.contains("build.log"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3), "timed out, not waited for");
    assert_eq!(fake.urls().iter().filter(|u| u.ends_with("build.log")).count(), 2, "tried again once");
    // Nothing listening at all.
    let gone = FakeTuxSuite::start().await;
    let record = backend_record("tuxsuite", "http://127.0.0.1:9/", None);
    let backend = TuxSuite::new(&record, reqwest::Client::new(), slow).unwrap();
    drop(gone);
    assert!(matches!(backend.fetch(&test_job(BUILD_JOB, "", None)).await, Err(BackendError::Temporary(_))));
}

#[tokio::test]
async fn malformed_answers_are_permanent_failures() {
    let page = build_page().to_string();
    for (reply, expected) in [
        (Reply::Text(page[..page.len() / 2].into(), 200, "application/json"), "not valid JSON"),
        (Reply::Text("<html><body>Bad gateway</body></html>".into(), 200, "text/html"), "an HTML page"),
        (Reply::Json(json!(["not", "an", "object"]), 200), "not a JSON object"),
        (Reply::Json(json!({"error": "not found"}), 404), "no job"),
    ] {
        let fake = FakeTuxSuite::start().await;
        let backend = tuxsuite(&fake, &json!({}), policy());
        fake.serve(BUILD_URL, reply);
        match fetch(&backend, BUILD_JOB, None).await {
            Err(BackendError::Permanent(message)) => assert!(message.contains(expected), "{message}"),
            other => panic!("{expected}: {other:?}"),
        }
    }
    // A finished build without what SQUAD requires.
    let fake = FakeTuxSuite::start().await;
    let backend = tuxsuite(&fake, &json!({}), policy());
    fake.serve(BUILD_URL, Reply::Json(json!({"state": "finished", "retry": 0}), 200));
    match fetch(&backend, BUILD_JOB, None).await {
        Err(BackendError::Permanent(message)) => {
            assert!(message.starts_with("build_status, warnings_count, download_url are required"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // And one without its duration.
    let mut page = build_page();
    page["tuxmake_metadata"] = json!({});
    fake.serve(BUILD_URL, Reply::Json(page, 200));
    fake.serve("http://tuxbuild.com/build1/build.log", Reply::Text("log".into(), 200, "text/plain"));
    match fetch(&backend, BUILD_JOB, None).await {
        Err(BackendError::Permanent(message)) => assert_eq!(message, "Missing duration from build results"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let fake = FakeTuxSuite::start().await;
    let backend = tuxsuite(&fake, &json!({}), policy());
    fake.serve("http://tuxbuild.com/build1/build.log", Reply::Text("log".into(), 200, "text/plain"));
    // Two failures, then the page: within the two retries.
    let flaky = vec![Reply::Status(500), Reply::RetryAfter(429, 0), Reply::Json(build_page(), 200)];
    fake.serve(BUILD_URL, Reply::Sequence(flaky));
    let results = finished(fetch(&backend, BUILD_JOB, None).await, "flaky");
    assert_eq!(results.status, "Complete");
    assert_eq!(fake.urls().iter().filter(|u| *u == BUILD_URL).count(), 3);
    // Failing beyond the retries: temporary.
    fake.forget_requests();
    fake.serve(BUILD_URL, Reply::Sequence(vec![Reply::Status(503), Reply::Status(502), Reply::Status(504)]));
    match fetch(&backend, BUILD_JOB, None).await {
        Err(BackendError::Temporary(message)) => {
            assert!(message.contains("504") && message.contains("after 3 tries"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.urls().len(), 3);
    // Other errors are not retried.
    fake.forget_requests();
    fake.serve(BUILD_URL, Reply::Status(403));
    assert!(matches!(fetch(&backend, BUILD_JOB, None).await, Err(BackendError::Temporary(_))));
    assert_eq!(fake.urls().len(), 1);
}

#[tokio::test]
async fn a_stored_payload_replaces_the_job_page() {
    let fake = FakeTuxSuite::start().await;
    let backend = tuxsuite(&fake, &json!({}), policy());
    fake.serve("http://tuxbuild.com/build1/build.log", Reply::Text("log".into(), 200, "text/plain"));
    let results = finished(fetch(&backend, BUILD_JOB, Some(build_page().to_string())).await, "input");
    assert_eq!(results.tests[0].name, "build/b");
    assert!(!fake.urls().contains(&BUILD_URL.to_string()));
    // A running state pushed by a callback: still running.
    let running = json!({"state": "running"}).to_string();
    assert!(matches!(fetch(&backend, BUILD_JOB, Some(running)).await, Ok(Fetched::Running { .. })));
    // A payload that does not parse is ignored: the page is asked for.
    fake.serve(BUILD_URL, Reply::Json(json!({"state": "provisioning"}), 200));
    assert!(matches!(fetch(&backend, BUILD_JOB, Some("{".into())).await, Ok(Fetched::Running { .. })));
    assert!(fake.urls().contains(&BUILD_URL.to_string()));
}

#[tokio::test]
async fn jobs_are_cancelled_but_never_submitted() {
    let fake = FakeTuxSuite::start().await;
    let backend = tuxsuite(&fake, &json!({}), policy());
    let job = test_job("TEST:tuxgroup@tuxproject#125", "TUXSUITE_TOKEN: secret", None);
    let cancel = "http://testing.tuxsuite.com/groups/tuxgroup/projects/tuxproject/tests/125/cancel";
    fake.serve(cancel, Reply::Status(200));
    assert!(backend.cancel(&job).await.unwrap());
    let seen = fake.seen();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].url.as_str(), seen[0].authorization.as_deref()),
        ("POST", cancel, None)
    );
    fake.serve(cancel, Reply::Status(400));
    assert!(!backend.cancel(&job).await.unwrap());

    assert!(!backend.can_submit());
    assert!(matches!(backend.submit(&job, "k").await, Err(BackendError::NotSupported { .. })));
    assert!(matches!(backend.lookup(&job, "k").await, Err(BackendError::NotSupported { .. })));
    assert!(backend.check_definition("anything").is_err());
    assert_eq!(backend.job_definition("TEST:tuxgroup@tuxproject#125").await.unwrap(), None);
    assert_eq!(
        backend.job_url(&job).as_deref(),
        Some("http://testing.tuxsuite.com/groups/tuxgroup/projects/tuxproject/tests/125")
    );
    assert_eq!(backend.job_url(&test_job("125", "", None)), None);
    assert!(backend.check_job_id("OEBUILD:tuxgroup@tuxproject#123").is_ok());
    assert!(backend.check_job_id("PLAN:tuxgroup@tuxproject#123").unwrap_err().contains("does not match"));
    assert!(matches!(backend.fetch(&test_job("123", "", None)).await, Err(BackendError::Permanent(_))));
}

#[tokio::test]
async fn the_backend_is_opened_by_its_implementation_type() {
    let backends = squadron_ci::Backends::new(&std::env::temp_dir());
    let record = backend_record("tuxsuite", TUXSUITE_URL, Some("BUILD_METADATA_KEYS: [git_sha]"));
    assert_eq!(backends.open(&record).unwrap().kind(), "tuxsuite");
    let record = backend_record("tuxsuite", TUXSUITE_URL, Some("- not a mapping"));
    assert!(matches!(backends.open(&record), Err(BackendError::Permanent(_))));
}
