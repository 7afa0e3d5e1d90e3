//! The lava backend against a fake LAVA server, over both APIs: SQUAD's
//! expected results for its own test payloads, real jobs of a LAVA
//! database dump, submission with lookup after a crash, multinode, and
//! what bad answers become.

mod common;

use std::time::Duration;

use common::fake_lava::{fixtures, Answer, Failure, FakeJob, FakeLava};
use serde_json::{json, Value};
use squadron_ci::backend::lava::{xmlrpc, LavaLab};
use squadron_ci::backend::{Backend, BackendError, BackendRecord, Backends, Fetched, JobResults};
use squadron_ci::TestJob;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Api {
    Rest,
    Rpc,
}

const BOTH: [Api; 2] = [Api::Rest, Api::Rpc];

/// SQUAD's backend settings in `test_lava.py`'s `setUp`.
const SETUP_SETTINGS: &str = "CI_LAVA_HANDLE_BOOT: true\nCI_LAVA_INFRA_ERROR_MESSAGES:\n  - Connection closed\n  - auto-login-action timed out after [0-9]+ seconds\n  - adb device [A-Za-z0-9]+ lost!\n";

fn record(url: &str, settings: &str) -> BackendRecord {
    BackendRecord {
        id: 1,
        name: "lava".into(),
        url: url.into(),
        username: "squadron".into(),
        token: "secret-token".into(),
        implementation_type: "lava".into(),
        backend_settings: Some(settings.into()),
        poll_interval: 60,
        max_fetch_attempts: 3,
        poll_enabled: true,
        listen_enabled: false,
    }
}

fn lab(fake: &FakeLava, api: Api, settings: &str) -> LavaLab {
    let url = match api {
        Api::Rest => fake.rest_url(),
        Api::Rpc => fake.rpc_url(),
    };
    LavaLab::new(&record(&url, settings), reqwest::Client::new()).expect("the lab opens")
}

fn test_job(definition: Option<&str>, job_id: Option<&str>, project_settings: &str) -> TestJob {
    TestJob {
        id: 1,
        backend_id: 1,
        definition: definition.map(str::to_string),
        name: None,
        target_id: 1,
        target_build_id: Some(1),
        environment: "qemu".into(),
        created_at: chrono::Utc::now(),
        submitted_at: None,
        fetched_at: None,
        started_at: None,
        ended_at: None,
        last_fetch_attempt: None,
        submitted: job_id.is_some(),
        fetched: false,
        fetch_attempts: 0,
        failure: None,
        can_resubmit: false,
        resubmitted_count: 0,
        parent_job_id: None,
        job_id: job_id.map(str::to_string),
        job_status: None,
        testrun_id: None,
        submission_key: None,
        results_input: None,
        project_settings: project_settings.into(),
    }
}

fn payloads() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("inline-api-payloads.json")).unwrap()).unwrap()
}

fn expectations() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("inline-api-payloads.expected.json")).unwrap())
        .unwrap()
}

/// The expectation of SQUAD's test `name`.
fn expected(name: &str) -> Value {
    expectations()["cases"].as_array().unwrap().iter().find(|c| c["test"] == name).unwrap()["expect"].clone()
}

/// A job of the fake lab made of SQUAD's payloads `details` and `results`.
fn seed(fake: &FakeLava, details: &str, results: &str, log: &[u8]) -> String {
    let payloads = payloads();
    let d = &payloads["job_details"][details];
    let status = d["status"].as_str().unwrap();
    let id = fake.add_job(FakeJob {
        definition: d["definition"].as_str().unwrap().into(),
        submitter: "someone".into(),
        status: if status == "Running" { "Complete".into() } else { status.into() },
        polls_left: if status == "Running" { 1000 } else { 0 },
        start_time: d["start_time"].as_str().map(str::to_string),
        end_time: d["end_time"].as_str().map(str::to_string),
        results: payloads["results"][results].as_array().unwrap().clone(),
        log: log.to_vec(),
        ..FakeJob::default()
    });
    id.to_string()
}

fn example_log() -> Vec<u8> {
    std::fs::read(fixtures().join("example-lava-log.yaml")).unwrap()
}

/// Fetches SQUAD's payloads over `api` with these settings.
async fn fetch_case(api: Api, details: &str, results: &str, backend: &str, project: &str) -> (Fetched, String) {
    let fake = FakeLava::start().await;
    let id = seed(&fake, details, results, &example_log());
    let lab = lab(&fake, api, backend);
    let fetched = lab.fetch(&test_job(None, Some(&id), project)).await.expect("the fetch works");
    (fetched, lab.job_url(&test_job(None, Some(&id), "")).unwrap())
}

async fn finished(api: Api, details: &str, results: &str, backend: &str, project: &str) -> JobResults {
    match fetch_case(api, details, results, backend, project).await.0 {
        Fetched::Finished(results) => *results,
        Fetched::Running { status } => panic!("{api:?}: still running ({status:?})"),
    }
}

fn test_names(r: &JobResults) -> Vec<&str> {
    r.tests.iter().map(|t| t.name.as_str()).collect()
}

fn metric(r: &JobResults, name: &str) -> Option<f64> {
    r.metrics.iter().find(|m| m.name == name).map(|m| m.values[0])
}

fn short_names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    names.map(|n| n.rsplit('/').next().unwrap()).collect()
}

#[tokio::test]
async fn dates_statuses_and_running_jobs() {
    for api in BOTH {
        let basics = finished(api, "JOB_DETAILS", "TEST_RESULTS", SETUP_SETTINGS, "").await;
        assert_eq!(json!(basics.status), expected("test_fetch_basics")["status"]);
        // XML-RPC's dateTime has no fraction of a second.
        assert_eq!(basics.started_at.unwrap().format("%FT%T").to_string(), "2020-11-13T10:23:41");
        assert!(basics.ended_at.is_some());
        let invalid = finished(api, "JOB_DETAILS_INVALID_DATES", "TEST_RESULTS", SETUP_SETTINGS, "").await;
        assert_eq!((invalid.started_at, invalid.ended_at), (None, None), "{api:?}");
        let missing = finished(api, "JOB_DETAILS_START_DATE", "TEST_RESULTS", SETUP_SETTINGS, "").await;
        assert!(missing.started_at.is_some() && missing.ended_at.is_none(), "{api:?}");
        let (running, _) = fetch_case(api, "JOB_DETAILS_RUNNING", "TEST_RESULTS", SETUP_SETTINGS, "").await;
        assert!(matches!(running, Fetched::Running { status: Some(ref s) } if s == "Running"), "{api:?}: {running:?}");
    }
}

#[tokio::test]
async fn metadata_and_suite_versions() {
    for api in BOTH {
        let r = finished(api, "JOB_DETAILS", "TEST_RESULTS", SETUP_SETTINGS, "").await;
        assert_eq!(Value::Object(r.metadata), expected("test_parse_results_metadata")["metadata"]);
        let r = finished(api, "JOB_DETAILS_NO_METADATA", "TEST_RESULTS", SETUP_SETTINGS, "").await;
        assert_eq!(Value::Object(r.metadata), expected("test_parse_results_empty_metadata")["metadata"]);
        let r = finished(api, "JOB_DETAILS_WITH_SUITE_VERSIONS", "TEST_RESULTS_WITH_SUITE_VERSIONS", "", "").await;
        assert_eq!(
            r.metadata["suite_versions"],
            expected("test_parse_results_metadata_with_suite_versions")["metadata.suite_versions"]
        );
    }
}

#[tokio::test]
async fn tests_metrics_and_test_logs() {
    let want = expected("test_parse_results");
    for api in BOTH {
        for results in ["TEST_RESULTS", "TEST_RESULTS_REST"] {
            let (fetched, url) = fetch_case(api, "JOB_DETAILS", results, SETUP_SETTINGS, "").await;
            let Fetched::Finished(r) = fetched else { panic!("finished") };
            assert_eq!(json!(r.tests.len()), want["tests_count"], "{api:?} {results}");
            assert_eq!(json!(r.metrics.len()), want["metrics_count"]);
            assert_eq!(
                metric(&r, "DefinitionFoo/case_foo"),
                want["metrics"]["DefinitionFoo/case_foo"]["value"].as_f64()
            );
            assert_eq!(
                r.metrics.iter().find(|m| m.name == "DefinitionFoo/case_foo").unwrap().unit.as_deref(),
                Some("bottles")
            );
            assert_eq!(json!(r.name), want["testjob.name"]);
            assert_eq!(test_names(&r), ["boot-job_foo/device_foo", "DefinitionFoo/case_bar"]);
            let with_log: Vec<&str> = r.tests.iter().filter(|t| t.log.is_some()).map(|t| t.name.as_str()).collect();
            assert_eq!(json!(with_log), want["tests_with_log"]);
            // The link, then log lines 4 to 5, each with SQUAD's extra newline.
            let log = r.tests[1].log.as_deref().unwrap();
            let example = String::from_utf8(example_log()).unwrap();
            let lines: Vec<&str> = example.lines().collect();
            assert_eq!(
                log,
                format!("Testcase log: <a href='{url}#L4'>{url}#L4</a>\n{}\n\n{}\n\n", lines[3], lines[4]),
                "{api:?} {results}"
            );
            assert_eq!(r.log.as_deref(), Some(&b"target message ...\nfeedback message ...\n"[..]));
            assert!(r.completed && !r.resubmit && r.failure.is_none());
            let raw: Value = serde_json::from_slice(&r.raw).unwrap();
            assert_eq!(raw["results"].as_array().unwrap().len(), 5, "the raw blob keeps every result");
        }
    }
}

#[tokio::test]
async fn settings_decide_lava_suite_boot_and_clones() {
    for api in BOTH {
        let want = expected("test_parse_results_clone_measurements");
        let r = finished(
            api,
            "JOB_DETAILS",
            "TEST_RESULTS",
            "CI_LAVA_CLONE_MEASUREMENTS: true\nCI_LAVA_HANDLE_BOOT: true\n",
            "",
        )
        .await;
        assert_eq!(
            (json!(r.tests.len()), json!(r.metrics.len())),
            (want["tests_count"].clone(), want["metrics_count"].clone())
        );
        assert_eq!(metric(&r, "DefinitionFoo/case_foo"), want["metrics"]["DefinitionFoo/case_foo"]["value"].as_f64());

        let want = expected("test_parse_results_ignore_lava_suite_backend_settings");
        for (backend, project) in [("CI_LAVA_HANDLE_SUITE: true", ""), ("", "CI_LAVA_HANDLE_SUITE: true")] {
            let r = finished(api, "JOB_DETAILS", "TEST_RESULTS", backend, project).await;
            assert_eq!(json!(r.tests.len()), want["stored_tests"], "{api:?} {backend} {project}");
            assert_eq!(json!(r.metrics.len()), want["stored_metrics"]);
            assert!(!short_names(test_names(&r).into_iter()).contains(&"device_foo"));
            assert_eq!(r.tests.iter().find(|t| t.name == "lava/validate").unwrap().result, "pass");
            assert_eq!(metric(&r, "lava/auto-login-action"), want["metric auto-login-action"].as_f64());
            assert_eq!(metric(&r, "lava/power-off"), want["metric power-off"].as_f64());
            assert_eq!(metric(&r, "DefinitionFoo/case_foo"), want["metric case_foo"].as_f64());
        }

        let want = expected("test_parse_results_ignore_lava_suite_empty_project_settings");
        let r = finished(api, "JOB_DETAILS", "TEST_RESULTS", SETUP_SETTINGS, "").await;
        assert_eq!(
            (json!(r.tests.len()), json!(r.metrics.len())),
            (want["stored_tests"].clone(), want["stored_metrics"].clone())
        );
        let tests = short_names(test_names(&r).into_iter());
        assert!(tests.contains(&"device_foo") && !tests.contains(&"validate"));
        assert_eq!(metric(&r, "boot-job_foo/time-device_foo"), want["metric time-device_foo"].as_f64());
        assert_eq!(metric(&r, "DefinitionFoo/case_foo"), want["metric case_foo"].as_f64());
        let metrics = short_names(r.metrics.iter().map(|m| m.name.as_str()));
        assert!(!metrics.contains(&"power-off") && !metrics.contains(&"auto-login-action"));

        let want = expected("test_parse_results_ignore_lava_suite_project_settings_overwrites_backend");
        let r =
            finished(api, "JOB_DETAILS", "TEST_RESULTS", "CI_LAVA_HANDLE_SUITE: true", "CI_LAVA_HANDLE_SUITE: false")
                .await;
        assert_eq!(
            (json!(r.tests.len()), json!(r.metrics.len())),
            (want["stored_tests"].clone(), want["stored_metrics"].clone())
        );
        assert_eq!(metric(&r, "DefinitionFoo/case_foo"), want["metric case_foo"].as_f64());

        let want = expected("test_parse_results_ignore_lava_boot");
        let r = finished(api, "JOB_DETAILS", "TEST_RESULTS", "", "").await;
        assert_eq!(
            (json!(r.tests.len()), json!(r.metrics.len())),
            (want["stored_tests"].clone(), want["stored_metrics"].clone())
        );
        assert_eq!(test_names(&r), ["DefinitionFoo/case_bar"]);

        let want = expected("test_parse_results_handle_lava_suite_and_ignore_lava_boot");
        let r =
            finished(api, "JOB_DETAILS", "TEST_RESULTS", "CI_LAVA_HANDLE_SUITE: true\nCI_LAVA_HANDLE_BOOT: false", "")
                .await;
        assert_eq!(
            (json!(r.tests.len()), json!(r.metrics.len())),
            (want["stored_tests"].clone(), want["stored_metrics"].clone())
        );
        assert_eq!(metric(&r, "lava/auto-login-action"), want["metric auto-login-action"].as_f64());
        assert!(metric(&r, "boot-job_foo/time-device_foo").is_none());
    }
}

#[tokio::test]
async fn infrastructure_errors_and_resubmission() {
    for api in BOTH {
        let want = expected("test_parse_results_ignore_infra_errors");
        let r = finished(
            api,
            "JOB_DETAILS_INCOMPLETE",
            "TEST_RESULTS_WITH_JOB_INFRA_ERROR",
            "CI_LAVA_WORK_AROUND_INFRA_ERRORS: true",
            "",
        )
        .await;
        assert_eq!(json!(r.completed), want["testrun.completed"]);
        assert_eq!(
            (json!(r.tests.len()), json!(r.metrics.len())),
            (want["stored_tests"].clone(), want["stored_metrics"].clone())
        );
        assert_eq!(r.status, "Incomplete");
        assert_eq!(r.failure.as_deref(), Some("{'error_type': 'Infrastructure', 'error_msg': 'foo-bar'}"));

        let want = expected("test_parse_results_dont_ignore_infra_errors");
        let r = finished(
            api,
            "JOB_DETAILS_INCOMPLETE",
            "TEST_RESULTS_WITH_JOB_INFRA_ERROR",
            "CI_LAVA_WORK_AROUND_INFRA_ERRORS: false",
            "",
        )
        .await;
        assert_eq!(json!(r.completed), want["testrun.completed"], "the pipeline stores no tests of an incomplete job");

        let r = finished(api, "JOB_DETAILS", "TEST_RESULTS_INFRA_FAILURE", SETUP_SETTINGS, "").await;
        assert_eq!(json!(r.completed), expected("test_completed")["completed"]);
        assert!(!r.resubmit, "foo-bar matches no message");

        let want = expected("test_incomplete_string_results_metadata");
        let r = finished(api, "JOB_DETAILS", "TEST_RESULTS_INFRA_FAILURE_STR", SETUP_SETTINGS, "").await;
        assert_eq!(json!(r.completed), want["completed"]);
        assert_eq!(json!(r.failure), want["testjob.failure"]);

        let want = expected("test_incomplete_string_results_metadata_null_error_msg");
        let r = finished(
            api,
            "JOB_DETAILS",
            "TEST_RESULTS_INFRA_FAILURE_STR_NO_MESSAGE",
            SETUP_SETTINGS,
            "CI_LAVA_INFRA_ERROR_MESSAGES: not-really-important",
        )
        .await;
        assert_eq!((json!(r.completed), json!(r.resubmit)), (want["completed"].clone(), want["resubmitted"].clone()));

        let r = finished(api, "JOB_DETAILS_CANCELED", "TEST_RESULTS", SETUP_SETTINGS, "").await;
        assert_eq!(json!(r.completed), expected("test_canceled")["completed"]);
        assert_eq!(r.status, "Canceled");
        assert!(r.tests.is_empty() && r.metrics.is_empty(), "a canceled job's results are discarded");

        for (case, results) in [
            ("test_automated_resubmit", "TEST_RESULTS_INFRA_FAILURE_RESUBMIT"),
            ("test_automated_resubmit2", "TEST_RESULTS_INFRA_FAILURE_RESUBMIT2"),
            ("test_automated_resubmit3", "TEST_RESULTS_INFRA_FAILURE_RESUBMIT3"),
            ("test_automated_resubmit4", "TEST_RESULTS_INFRA_FAILURE_RESUBMIT4"),
        ] {
            let r = finished(api, "JOB_DETAILS", results, SETUP_SETTINGS, "").await;
            assert_eq!(json!(r.resubmit), expected(case)["resubmitted"], "{api:?} {case}");
        }
        let r = finished(
            api,
            "JOB_DETAILS",
            "TEST_RESULTS_INFRA_FAILURE_CUSTOM",
            SETUP_SETTINGS,
            "CI_LAVA_INFRA_ERROR_MESSAGES:\n  - Testing, testing... 123\n",
        )
        .await;
        assert_eq!(json!(r.resubmit), expected("test_automated_resubmit_with_project_settings")["resubmitted"]);
        let r = finished(api, "JOB_DETAILS", "TEST_RESULTS_INFRA_FAILURE_CUSTOM", SETUP_SETTINGS, "").await;
        assert!(!r.resubmit, "only the project's messages make it resubmit");
    }
}

#[tokio::test]
async fn job_names_and_definitions() {
    let fake = FakeLava::start().await;
    let lab = lab(&fake, Api::Rest, "");
    let error = lab.check_definition("bad: \"mismatch quotes\"\"").unwrap_err();
    let want = expected("test_check_job_definition");
    assert!(want.as_str().unwrap().contains("found unexpected end of stream"));
    assert!(error.contains("found unexpected end of stream"), "{error}");
    assert!(lab.check_definition("job_name: x\n").is_ok());

    let long = "a".repeat(300);
    for (definition, name) in [
        ("no name: 1\n".to_string(), None),
        // SQUAD's submit-time reading makes this "", its fetch crashes.
        ("job_name:\n".to_string(), None),
        ("job_name: job-name\n".to_string(), Some("job-name".to_string())),
        (format!("job_name: {long}\n"), Some("a".repeat(255))),
    ] {
        for api in BOTH {
            let id = fake.add_job(FakeJob {
                definition: definition.clone(),
                status: "Complete".into(),
                ..FakeJob::default()
            });
            let r = match self::lab(&fake, api, "").fetch(&test_job(None, Some(&id.to_string()), "")).await.unwrap() {
                Fetched::Finished(r) => r,
                other => panic!("{other:?}"),
            };
            assert_eq!(r.name, name, "{definition}");
        }
    }
}

#[tokio::test]
async fn the_run_log_is_the_device_output() {
    let broken = std::fs::read(fixtures().join("example-broken-log.yaml")).unwrap();
    for api in BOTH {
        for (log, want) in [(broken.clone(), ""), (Vec::new(), "")] {
            let fake = FakeLava::start().await;
            let id = seed(&fake, "JOB_DETAILS", "TEST_RESULTS", &log);
            let Fetched::Finished(r) = lab(&fake, api, "").fetch(&test_job(None, Some(&id), "")).await.unwrap() else {
                panic!("finished")
            };
            assert_eq!(r.log.as_deref(), Some(want.as_bytes()), "{api:?}");
            assert_eq!(r.tests.len(), 1, "a broken log breaks nothing else");
        }
        // A test log with a byte that is not UTF-8.
        let fake = FakeLava::start().await;
        let id = seed(&fake, "JOB_DETAILS", "TEST_RESULTS", b"- {lvl: info, msg: x}\n- {lvl: info, msg: y}\n- {lvl: info, msg: z}\na non-decodable unicode char: \xb1\n");
        let Fetched::Finished(r) = lab(&fake, api, "").fetch(&test_job(None, Some(&id), "")).await.unwrap() else {
            panic!("finished")
        };
        let log = r.tests.iter().find(|t| t.name == "DefinitionFoo/case_bar").unwrap().log.clone().unwrap();
        assert!(log.contains("a non-decodable unicode char: \u{b1}"), "{log}");
        assert_eq!(expectations()["log_fixtures"]["example-broken-log.yaml"]["expected_testrun_log"], "");
    }
}

/// A job of the LAVA database dump, as the fake lab's job.
fn dump_job(fake: &FakeLava, n: u32, status: &str) -> String {
    let dir = fixtures().join("db-dump-jobs");
    let definition = std::fs::read_to_string(dir.join(format!("job-{n}.definition.yaml"))).unwrap();
    let results: Option<Vec<Value>> =
        serde_norway::from_str(&std::fs::read_to_string(dir.join(format!("job-{n}.results.yaml"))).unwrap()).unwrap();
    fake.add_job(FakeJob {
        definition,
        status: status.into(),
        results: results.unwrap_or_default(),
        start_time: Some("2020-04-30T13:39:18.398000Z".into()),
        end_time: Some("2020-04-30T13:45:00Z".into()),
        ..FakeJob::default()
    })
    .to_string()
}

#[tokio::test]
async fn real_jobs_of_a_lava_database() {
    for api in BOTH {
        let fake = FakeLava::start().await;
        fake.configure(|c| c.page_size = 4);
        let ids: Vec<String> = [(1, "Complete"), (2, "Complete"), (3, "Canceled"), (4, "Canceled")]
            .map(|(n, s)| dump_job(&fake, n, s))
            .into();
        let fetch = |id: &String, settings: &'static str| {
            let lab = lab(&fake, api, settings);
            let job = test_job(None, Some(id), "");
            async move {
                match lab.fetch(&job).await.unwrap() {
                    Fetched::Finished(r) => *r,
                    other => panic!("{other:?}"),
                }
            }
        };
        let health_check = fetch(&ids[0], "").await;
        assert_eq!(health_check.name.as_deref(), Some("qemu-amd64-standard-jessie"));
        assert_eq!(health_check.tests.len(), 16, "{api:?}");
        assert!(health_check.metrics.is_empty());
        assert!(health_check
            .tests
            .iter()
            .all(|t| t.name.starts_with("smoke-tests/") || t.name.starts_with("singlenode-advanced/")));
        assert_eq!(health_check.metadata["path"], "shared/health-checks/qemu.yaml");
        assert!(health_check.completed);
        let with_boot = fetch(&ids[0], "CI_LAVA_HANDLE_BOOT: true").await;
        assert_eq!(with_boot.tests.len(), 17);
        assert!(with_boot.tests.iter().any(|t| t.name == "boot-qemu-amd64-standard-jessie/qemu"));
        assert_eq!(with_boot.metrics.len(), 1);

        let ltp = fetch(&ids[1], "").await;
        assert_eq!(ltp.tests.len(), 21);
        assert!(ltp.tests.iter().any(|t| t.name == "ltp-fs_bind-tests/BindMounts"));
        assert_eq!(
            ltp.metadata["suite_versions"],
            json!({"ltp-filecaps-tests": "20200120", "ltp-fs_bind-tests": "20200120", "ltp-fs_perms_simple-tests": "20200120", "ltp-fsx-tests": "20200120"})
        );
        assert_eq!(ltp.metadata["git branch"], "linux-5.6.y");
        let lava_suite = fetch(&ids[1], "CI_LAVA_HANDLE_SUITE: true").await;
        assert!(lava_suite.metrics.len() > 5, "the lava suite's measured actions are metrics");

        for id in &ids[2..] {
            let canceled = fetch(id, "").await;
            assert_eq!(canceled.status, "Canceled");
            assert!(!canceled.completed && canceled.tests.is_empty());
        }
    }
}

const FAKE_DEFINITION: &str = "# submitted by the test\ndevice_type: qemu\njob_name: squadron-fake\nmetadata:\n  build: '42'\nsquadron_fake: {tests: 5, failures: 1, measurements: 2}\n";

#[tokio::test]
async fn submit_fetch_and_cancel() {
    for api in BOTH {
        let fake = FakeLava::start().await;
        fake.configure(|c| c.polls_before_complete = 2);
        let lab = lab(&fake, api, "");
        let mut job = test_job(Some(FAKE_DEFINITION), None, "");
        let ids = lab.submit(&job, "key-1").await.unwrap();
        assert_eq!(ids.len(), 1);
        assert_eq!(fake.submissions(), 1, "{api:?}");
        let sent = &fake.jobs()[0].definition;
        assert!(sent.starts_with("# submitted by the test\n"), "comments are kept: {sent}");
        assert!(sent.contains("metadata:\n  squadron.submission: key-1\n  build: '42'\n"), "{sent}");
        let auth = fake.requests()[0].authorization.clone().unwrap();
        match api {
            Api::Rest => assert_eq!(auth, "Token secret-token"),
            Api::Rpc => assert_eq!(auth, "Basic c3F1YWRyb246c2VjcmV0LXRva2Vu"),
        }

        job.job_id = Some(ids[0].clone());
        job.submitted = true;
        for _ in 0..2 {
            assert!(matches!(lab.fetch(&job).await.unwrap(), Fetched::Running { .. }));
        }
        let Fetched::Finished(r) = lab.fetch(&job).await.unwrap() else { panic!("finished") };
        assert_eq!(r.status, "Complete");
        assert_eq!(r.name.as_deref(), Some("squadron-fake"));
        assert_eq!(r.tests.len(), 5);
        assert_eq!(r.tests.iter().filter(|t| t.result == "fail").count(), 1);
        assert_eq!(r.metrics.len(), 2);
        assert_eq!(r.metrics[1].values, [2.5]);
        assert!(r.tests[3].log.as_deref().unwrap().contains("test-3 output"));
        assert_eq!(Value::Object(r.metadata), json!({"build": "42"}), "the submission key is not run metadata");
        let url = lab.job_url(&job).unwrap();
        assert_eq!(url, format!("http://{}/scheduler/job/{}", fake.addr, ids[0]));

        assert!(lab.cancel(&job).await.unwrap());
        let Fetched::Finished(r) = lab.fetch(&job).await.unwrap() else { panic!("finished") };
        assert_eq!(r.status, "Canceled");
        assert!(!r.completed);
        assert!(!lab.cancel(&test_job(None, None, "")).await.unwrap(), "nothing to cancel before submission");

        assert_eq!(lab.job_definition(&ids[0]).await.unwrap().as_deref(), Some(sent.as_str()));
        assert_eq!(lab.job_definition("99999").await.unwrap(), None);
        assert_eq!(fake.submissions(), 1, "{api:?}: never submitted twice");
    }
}

#[tokio::test]
async fn a_submission_is_found_again_after_a_crash() {
    for api in BOTH {
        let fake = FakeLava::start().await;
        // Other people's jobs, before and after ours.
        for n in 0..150 {
            fake.add_job(FakeJob {
                definition: format!("job_name: squadron-fake\nmetadata:\n  n: {n}\n"),
                submitter: "someone".into(),
                status: "Complete".into(),
                ..FakeJob::default()
            });
        }
        let job = test_job(Some(FAKE_DEFINITION), None, "");
        let ids = lab(&fake, api, "").submit(&job, "key-of-ours").await.unwrap();
        lab(&fake, api, "").submit(&job, "key-of-another-attempt").await.unwrap();
        for n in 0..30 {
            fake.add_job(FakeJob {
                definition: format!("job_name: other-{n}\n"),
                status: "Complete".into(),
                ..FakeJob::default()
            });
        }
        // The process died before recording the ids; a new one asks.
        let restarted = lab(&fake, api, "");
        assert_eq!(restarted.lookup(&job, "key-of-ours").await.unwrap(), Some(ids), "{api:?}");
        assert_eq!(restarted.lookup(&job, "a-key-never-sent").await.unwrap(), None);
        assert_eq!(fake.submissions(), 2);
        let searches: Vec<String> =
            fake.requests().iter().map(|r| r.path.clone()).filter(|p| p.contains("__contains")).collect();
        if api == Api::Rest {
            assert!(searches[0].contains("original_definition__contains=key-of-ours"), "{searches:?}");
        }
    }
}

#[tokio::test]
async fn multinode_jobs_have_one_id_per_node() {
    let definition = "job_name: mn\nprotocols:\n  lava-multinode:\n    roles:\n      server: {device_type: qemu, count: 1}\n      client: {device_type: qemu, count: 2}\n";
    for api in BOTH {
        let fake = FakeLava::start().await;
        fake.add_job(FakeJob { definition: "job_name: mn\n".into(), status: "Complete".into(), ..FakeJob::default() });
        let job = test_job(Some(definition), None, "");
        let ids = lab(&fake, api, "").submit(&job, "mn-key").await.unwrap();
        assert_eq!(ids, ["1002.0", "1002.1", "1002.2"], "{api:?}");
        assert_eq!(fake.submissions(), 1);
        assert_eq!(lab(&fake, api, "").lookup(&job, "mn-key").await.unwrap(), Some(ids.clone()), "{api:?}");
        let node = test_job(Some(definition), Some(&ids[2]), "");
        assert_eq!(lab(&fake, api, "").job_url(&node).unwrap(), format!("http://{}/scheduler/job/1002.2", fake.addr));
    }
}

fn permanent(result: Result<impl std::fmt::Debug, BackendError>) -> String {
    match result {
        Err(BackendError::Permanent(message)) => message,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

fn temporary(result: Result<impl std::fmt::Debug, BackendError>) -> String {
    match result {
        Err(BackendError::Temporary(message)) => message,
        other => panic!("expected a temporary error, got {other:?}"),
    }
}

fn fail(fake: &FakeLava, when: &str, answer: Answer) {
    fake.configure(|c| c.failures = vec![Failure { when: when.into(), answer }]);
}

#[tokio::test]
async fn bad_answers_are_clear_errors() {
    let job = test_job(Some(FAKE_DEFINITION), None, "");
    for api in BOTH {
        let fake = FakeLava::start().await;
        let id = seed(&fake, "JOB_DETAILS", "TEST_RESULTS", b"");
        let done = test_job(None, Some(&id), "");
        let lab = lab(&fake, api, "");

        fail(&fake, "", Answer::Body(200, "text/html", "<html><body>Down for maintenance</body></html>".into()));
        let message = permanent(lab.submit(&job, "k").await);
        assert!(message.contains("malformed") && message.contains("Down for maintenance"), "{message}");
        let message = permanent(lab.fetch(&done).await);
        assert!(message.contains("details of job") && message.contains("<html>"), "{message}");

        fail(&fake, "", Answer::Body(500, "text/html", "Internal Server Error".into()));
        let message = temporary(lab.submit(&job, "k").await);
        assert!(message.contains("500"), "{message}");
        temporary(lab.fetch(&done).await);
        temporary(lab.lookup(&job, "k").await);

        fail(&fake, "", Answer::Body(502, "text/html", "Bad Gateway".into()));
        temporary(lab.fetch(&done).await);

        match api {
            Api::Rest => {
                fail(
                    &fake,
                    "POST",
                    Answer::Body(
                        400,
                        "application/json",
                        json!({"message": "Problem with submitted job data: device type qemu not found"}).to_string(),
                    ),
                );
                let message = permanent(lab.submit(&job, "k").await);
                assert!(message.contains("400") && message.contains("device type qemu not found"), "{message}");
                fail(
                    &fake,
                    "suites/",
                    Answer::Body(200, "application/json", "{\"count\": 1, \"results\": [{\"id\"".into()),
                );
                let message = permanent(lab.fetch(&done).await);
                assert!(message.contains("test suites") && message.contains("not JSON"), "{message}");
            }
            Api::Rpc => {
                let fault =
                    |code, message: &str| xmlrpc::encode_fault(&xmlrpc::Fault { code, message: message.into() });
                fail(
                    &fake,
                    "scheduler.submit_job",
                    Answer::Body(200, "text/xml", fault(400, "device type qemu not found")),
                );
                let message = permanent(lab.submit(&job, "k").await);
                assert!(message.contains("device type qemu not found"), "{message}");
                fail(&fake, "scheduler.submit_job", Answer::Body(200, "text/xml", fault(503, "maintenance")));
                temporary(lab.submit(&job, "k").await);
                let truncated =
                    xmlrpc::encode_response(&xmlrpc::Value::String("- name: case\n  result: \"pass\n".into()));
                fail(&fake, "results.get_testsuite_results_yaml", Answer::Body(200, "text/xml", truncated));
                let message = permanent(lab.fetch(&done).await);
                assert!(message.contains("results of suite") && message.contains("not valid YAML"), "{message}");
                fail(
                    &fake,
                    "scheduler.job_details",
                    Answer::Body(200, "text/xml", "<?xml version=\"1.0\"?><methodResponse><params>".into()),
                );
                let message = permanent(lab.fetch(&done).await);
                assert!(message.contains("not a valid XML-RPC document"), "{message}");
            }
        }
        assert!(
            matches!(lab.submit(&test_job(Some("job_name: [unclosed"), None, ""), "k").await, Err(BackendError::Permanent(m)) if m.contains("not valid YAML"))
        );
    }
}

#[tokio::test]
async fn timeouts_and_unreachable_labs_are_temporary() {
    for api in BOTH {
        let fake = FakeLava::start().await;
        fail(&fake, "", Answer::Hang);
        let lab = lab(&fake, api, "TIMEOUT: 0.3");
        let started = std::time::Instant::now();
        let message = temporary(lab.submit(&test_job(Some(FAKE_DEFINITION), None, ""), "k").await);
        assert!(message.contains("did not answer") && message.contains("300ms"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(5));
        temporary(lab.fetch(&test_job(None, Some("1"), "")).await);
    }
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    for url in [format!("http://127.0.0.1:{port}/api/v0.2/"), format!("http://127.0.0.1:{port}/RPC2")] {
        let lab = LavaLab::new(&record(&url, ""), reqwest::Client::new()).unwrap();
        let message = temporary(lab.fetch(&test_job(None, Some("1"), "")).await);
        assert!(message.contains("cannot reach LAVA"), "{message}");
        assert!(!message.contains("secret-token"), "{message}");
    }
}

#[tokio::test]
async fn backends_open_lava_and_check_settings() {
    let backends = Backends::new(&std::env::temp_dir());
    let opened = backends.open(&record("https://lava.example.com/RPC2", "TIMEOUT: 10")).unwrap();
    assert_eq!(opened.kind(), "lava");
    let job = test_job(None, Some("7"), "");
    assert_eq!(opened.job_url(&job).as_deref(), Some("https://lava.example.com/scheduler/job/7"));
    for (url, settings) in
        [("https://lava.example.com/RPC2", "TIMEOUT: soon"), ("not a url", ""), ("https://x/api/", "[")]
    {
        assert!(matches!(backends.open(&record(url, settings)), Err(BackendError::Permanent(_))), "{url} {settings}");
    }
}
