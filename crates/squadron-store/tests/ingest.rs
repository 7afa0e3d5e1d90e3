//! Ingestion of submitted runs into hidden runs: on both engines.

use std::time::Duration;

use squadron_core::submission::{parse_metadata, InputError, SubmittedTest};
use squadron_store::both_engines;
use squadron_store::ingest::{IngestError, IngestOptions, Submission};
use squadron_store::testing::TestDb;

async fn submission(db: &TestDb, project: i64, build: &str, tests: &str, metrics: &str, metadata: &str) -> Submission {
    let blob = |text: String| async move {
        if text.is_empty() {
            None
        } else {
            Some(db.blobs.put(text.as_bytes()).await.unwrap())
        }
    };
    Submission {
        project_id: project,
        build_version: build.into(),
        environment_slug: "x86".into(),
        metadata: parse_metadata(metadata).unwrap(),
        tests_file: blob(tests.to_string()).await,
        metrics_file: blob(metrics.to_string()).await,
        log_file: blob("the log".to_string()).await,
        attachments: vec![("screenshot.png".into(), db.blobs.put(b"PNG").await.unwrap())],
        completed: true,
    }
}

fn small_batches() -> IngestOptions {
    IngestOptions { batch_rows: 2, ..Default::default() }
}

/// `{"t0": "pass", …}` with `n` tests spread over `suites` suites.
fn many_tests(n: usize, suites: usize) -> String {
    let body: Vec<String> = (0..n).map(|i| format!("\"suite{}/test{i}\": \"pass\"", i % suites)).collect();
    format!("{{{}}}", body.join(","))
}

both_engines! {
    async fn stores_tests_metrics_and_status(db: TestDb) {
        let p = db.public_project().await;
        let tests = r#"{"a": "pass", "s1/b": "fail", "s1/c": "skip", "s2/d": {"result": "fail", "log": "boom"}}"#;
        let metrics = r#"{"s1/m": [1, 4], "x": {"value": 2, "unit": "s"}}"#;
        let sub = submission(&db, p, "v1", tests, metrics, r#"{"datetime": "2020-01-02T03:04:05Z", "job_status": "Complete"}"#).await;
        let id = db.store.ingest(&db.blobs, &sub, small_batches()).await.unwrap();

        let q = |sql: &str| {
            let sql = sql.replace("RUN", &id.to_string());
            let db = &db;
            async move { db.scalar(&sql).await }
        };
        assert_eq!(q("SELECT COUNT(*) FROM testruns WHERE id = RUN AND visible AND data_processed AND status_recorded AND ingest_owner IS NULL").await, 1);
        assert_eq!(q("SELECT COUNT(*) FROM tests WHERE test_run_id = RUN").await, 4);
        assert_eq!(q("SELECT COUNT(*) FROM metrics WHERE test_run_id = RUN").await, 2);
        assert_eq!(q("SELECT COUNT(*) FROM attachments WHERE test_run_id = RUN").await, 1);
        assert_eq!(q("SELECT COUNT(*) FROM tests t JOIN suite_metadata m ON m.id = t.metadata_id WHERE m.name = 'd' AND t.log = 'boom' AND t.result = FALSE").await, 1);
        assert_eq!(q("SELECT COUNT(*) FROM tests WHERE result IS NULL").await, 1, "skip is stored as NULL");
        // Status rows: the total and one per suite ("/", "s1", "s2").
        assert_eq!(q("SELECT COUNT(*) FROM statuses WHERE test_run_id = RUN").await, 4);
        assert_eq!(q("SELECT tests_pass * 1000 + tests_fail * 100 + tests_skip * 10 + tests_xfail FROM statuses WHERE test_run_id = RUN AND suite_id IS NULL").await, 1210);
        assert_eq!(q("SELECT tests_fail * 10 + tests_skip FROM statuses s JOIN suites u ON u.id = s.suite_id WHERE u.slug = 's1'").await, 11);
        assert_eq!(q("SELECT CAST(ROUND(metrics_summary * 1000) AS BIGINT) FROM statuses s JOIN suites u ON u.id = s.suite_id WHERE u.slug = 's1'").await, 2000);
        assert_eq!(q("SELECT CAST(ROUND(metrics_summary * 1000) AS BIGINT) FROM statuses WHERE test_run_id = RUN AND suite_id IS NULL").await, 2000);
        assert_eq!(q("SELECT COUNT(*) FROM statuses s JOIN suites u ON u.id = s.suite_id WHERE u.slug = 's2' AND NOT s.has_metrics").await, 1);
        assert_eq!(q("SELECT COUNT(*) FROM metrics WHERE measurements = '1.0,4.0' AND result = 2.5").await, 1);
        // The run's datetime lowers the build's.
        assert_eq!(q("SELECT COUNT(*) FROM builds WHERE datetime < created_at").await, 1);
        // A job_id was generated.
        assert_eq!(q("SELECT COUNT(*) FROM testruns WHERE LENGTH(job_id) = 36 AND job_status = 'Complete'").await, 1);
    }

    async fn names_are_interned_once(db: TestDb) {
        let p = db.public_project().await;
        let tests = many_tests(50, 5);
        db.store.ingest(&db.blobs, &submission(&db, p, "v1", &tests, r#"{"m": 1}"#, "").await, small_batches()).await.unwrap();
        let names = db.scalar("SELECT COUNT(*) FROM suite_metadata").await;
        assert_eq!(names, 50 + 1 + 6, "50 tests, 1 metric, 5 suites and the root suite");
        db.store.ingest(&db.blobs, &submission(&db, p, "v2", &tests, r#"{"m": 1}"#, "").await, IngestOptions::default()).await.unwrap();
        assert_eq!(db.scalar("SELECT COUNT(*) FROM suite_metadata").await, names);
        assert_eq!(db.scalar("SELECT COUNT(*) FROM suites").await, 6);
        assert_eq!(db.scalar("SELECT COUNT(*) FROM tests").await, 100);
        assert_eq!(db.scalar("SELECT COUNT(DISTINCT metadata_id) FROM tests").await, 50);
    }

    async fn duplicate_job_id_is_rejected(db: TestDb) {
        let p = db.public_project().await;
        let meta = r#"{"job_id": 42}"#;
        db.store.ingest(&db.blobs, &submission(&db, p, "v1", r#"{"a": "pass"}"#, "", meta).await, small_batches()).await.unwrap();
        let before = db.table_counts().await;
        let err = db.store.ingest(&db.blobs, &submission(&db, p, "v1", r#"{"b": "pass"}"#, "", meta).await, small_batches()).await.unwrap_err();
        assert!(matches!(&err, IngestError::DuplicateJobId(id) if id == "42"), "{err}");
        assert_eq!(err.to_string(), "There is already a test run with job_id 42");
        assert_eq!(db.table_counts().await, before);
        // The same job_id in another build is fine.
        db.store.ingest(&db.blobs, &submission(&db, p, "v2", r#"{"b": "pass"}"#, "", meta).await, small_batches()).await.unwrap();
    }

    async fn bad_input_after_committed_batches_leaves_nothing(db: TestDb) {
        let p = db.public_project().await;
        // An existing build and environment must stay; new ones must go.
        db.store.ingest(&db.blobs, &submission(&db, p, "old", r#"{"keep/a": "pass"}"#, "", "").await, small_batches()).await.unwrap();
        let before = db.table_counts().await;
        let bad_tests = r#"{"new1/a": "pass", "new1/b": "pass", "new2/c": "fail", "keep/a": "pass", "new3/d": "pass", "bad": 7}"#;
        for build in ["old", "new"] {
            let sub = submission(&db, p, build, bad_tests, "", "").await;
            let err = db.store.ingest(&db.blobs, &sub, small_batches()).await.unwrap_err();
            assert!(matches!(&err, IngestError::Input(InputError::InvalidTestValue { name, .. }) if name == "bad"), "{err}");
            assert_eq!(db.table_counts().await, before, "build {build}");
        }
        let bad_metrics = r#"{"m1": 1, "m2": 2, "m3": 3, "m4": "three"}"#;
        let sub = submission(&db, p, "new", r#"{"x/y": "pass", "x/z": "pass", "x/w": "pass"}"#, bad_metrics, "").await;
        let err = db.store.ingest(&db.blobs, &sub, small_batches()).await.unwrap_err();
        assert!(matches!(&err, IngestError::Input(InputError::InvalidMetricValue { name, .. }) if name == "m4"), "{err}");
        assert_eq!(db.table_counts().await, before);
    }

    async fn killed_writer_is_swept(db: TestDb) {
        let p = db.public_project().await;
        let before = db.table_counts().await;
        let sub = submission(&db, p, "v1", &many_tests(200_000, 100), "", r#"{"job_id": "j1"}"#).await;
        let (store, blobs) = (db.store.clone(), db.blobs.clone());
        let writer = tokio::spawn(async move { store.ingest(&blobs, &sub, IngestOptions { batch_rows: 100, ..Default::default() }).await });
        while db.scalar("SELECT COUNT(*) FROM tests").await < 300 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        writer.abort();
        let _ = writer.await;
        assert_eq!(db.scalar("SELECT COUNT(*) FROM testruns WHERE NOT visible").await, 1);
        assert_eq!(db.scalar("SELECT COUNT(*) FROM testruns WHERE visible").await, 0, "nothing half-written is visible");
        assert_eq!(db.store.sweep_hidden_runs(Duration::from_secs(600)).await.unwrap(), 0, "a fresh heartbeat is left alone");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(db.store.sweep_hidden_runs(Duration::from_millis(10)).await.unwrap(), 1);
        assert_eq!(db.table_counts().await, before);
    }

    async fn retry_replaces_an_abandoned_hidden_run(db: TestDb) {
        let p = db.public_project().await;
        let sub = submission(&db, p, "v1", &many_tests(100_000, 10), "", r#"{"job_id": "j1"}"#).await;
        let (store, blobs, first) = (db.store.clone(), db.blobs.clone(), sub.clone());
        let writer = tokio::spawn(async move { store.ingest(&blobs, &first, IngestOptions { batch_rows: 100, ..Default::default() }).await });
        while db.scalar("SELECT COUNT(*) FROM tests").await < 100 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        writer.abort();
        let _ = writer.await;
        db.execute("UPDATE testruns SET ingest_heartbeat_at = '2000-01-01T00:00:00+00:00'").await;
        let small = submission(&db, p, "v1", r#"{"suite0/a": "pass"}"#, "", r#"{"job_id": "j1"}"#).await;
        let id = db.store.ingest(&db.blobs, &small, IngestOptions::default()).await.unwrap();
        assert_eq!(db.scalar("SELECT COUNT(*) FROM testruns").await, 1);
        assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM tests WHERE test_run_id = {id}")).await, 1);
        assert_eq!(db.scalar("SELECT COUNT(*) FROM tests").await, 1);
    }

    async fn known_issues_make_failures_xfail(db: TestDb) {
        let p = db.public_project().await;
        db.store.ingest(&db.blobs, &submission(&db, p, "v1", r#"{"a": "pass"}"#, "", "").await, small_batches()).await.unwrap();
        db.execute("INSERT INTO known_issues (title, test_name, active) VALUES ('flaky', 'ltp/fork*', TRUE)").await;
        db.execute("INSERT INTO known_issues (title, test_name, active) VALUES ('old', 'ltp/*', FALSE)").await;
        db.execute("INSERT INTO known_issue_environments (known_issue_id, environment_id) SELECT id, (SELECT id FROM environments) FROM known_issues").await;
        let tests = r#"{"ltp/fork01": "fail", "ltp/fork02": "pass", "ltp/clone01": "fail"}"#;
        let id = db.store.ingest(&db.blobs, &submission(&db, p, "v2", tests, "", "").await, small_batches()).await.unwrap();
        let total = db.scalar(&format!("SELECT tests_pass * 100 + tests_fail * 10 + tests_xfail FROM statuses WHERE test_run_id = {id} AND suite_id IS NULL")).await;
        assert_eq!(total, 111, "fork01 is xfail, clone01 fails, fork02 passes");
        assert_eq!(db.scalar("SELECT COUNT(*) FROM tests WHERE has_known_issues").await, 2, "any result can carry the flag");
        assert_eq!(db.scalar("SELECT COUNT(*) FROM test_known_issues").await, 2);
    }

    async fn issues_filed_while_appending_mark_later_tests(db: TestDb) {
        let p = db.public_project().await;
        let id = db.store.ingest(&db.blobs, &submission(&db, p, "v1", r#"{"a": "pass"}"#, "", "").await, small_batches()).await.unwrap();
        db.execute("INSERT INTO known_issues (title, test_name, active) VALUES ('Tradefed/cts/old', 'cts/old', FALSE)").await;
        let mut run = db.store.reopen_run(id).await.unwrap();
        let issues = [("Tradefed/cts/t1".to_string(), "cts/t1".to_string()), ("Tradefed/cts/old".to_string(), "cts/old".to_string())];
        let filed = db.store.file_known_issues(id, &issues).await.unwrap();
        assert_eq!(filed.len(), 1, "a deactivated issue is linked to the environment but marks nothing: {filed:?}");
        assert_eq!(filed[0].1, "cts/t1");
        assert_eq!(db.store.file_known_issues(id, &issues).await.unwrap(), filed, "filing again finds the same issue");
        run.add_known_issues(&filed);
        let failed = |name: &str| SubmittedTest { suite: "cts".into(), name: name.into(), result: Some(false), log: None };
        run.append(vec![failed("t1"), failed("old"), failed("t2")], Vec::new()).await.unwrap();
        let mut tx = db.store.begin_write().await.unwrap();
        run.publish_in(&mut tx).await.unwrap();
        tx.commit().await.unwrap();
        let total = db.scalar(&format!("SELECT tests_fail * 10 + tests_xfail FROM statuses WHERE test_run_id = {id} AND suite_id IS NULL")).await;
        assert_eq!(total, 21, "t1 is xfail, old and t2 fail");
        assert_eq!(db.scalar("SELECT COUNT(*) FROM known_issue_environments").await, 2);
        assert_eq!(db.scalar("SELECT COUNT(*) FROM known_issues").await, 2);
    }

    async fn step_marks_come_back_once_their_rows_are_stored(db: TestDb) {
        let p = db.public_project().await;
        let id = db.store.ingest(&db.blobs, &submission(&db, p, "v1", r#"{"a": "pass"}"#, "", "").await, small_batches()).await.unwrap();
        let mut run = db.store.reopen_run(id).await.unwrap();
        let mut writer = run.step_writer::<usize>();
        let step = |n: usize| (0..6000).map(|i| SubmittedTest { suite: format!("s{n}"), name: format!("t{i}"), result: Some(i % 2 == 0), log: None }).collect::<Vec<_>>();
        let mut marks = Vec::new();
        for n in 0..4 {
            let tests = if n == 2 { Vec::new() } else { step(n) };
            for mark in writer.push(tests, Vec::new(), n).await.unwrap() {
                let stored = db.scalar(&format!("SELECT COUNT(*) FROM tests WHERE test_run_id = {id}")).await;
                let before = (0..=mark).filter(|n| *n != 2).count() as i64 * 6000 + 1;
                assert!(stored >= before, "mark {mark} came back with {stored} rows stored");
                marks.push(mark);
            }
        }
        marks.extend(writer.finish().await.unwrap());
        assert_eq!(marks, vec![0, 1, 2, 3], "every mark, once, in order");
        let mut tx = db.store.begin_write().await.unwrap();
        run.publish_in(&mut tx).await.unwrap();
        tx.commit().await.unwrap();
        let total = db.scalar(&format!("SELECT tests_pass * 100000 + tests_fail FROM statuses WHERE test_run_id = {id} AND suite_id IS NULL")).await;
        assert_eq!(total, 9001 * 100000 + 9000);
    }

    async fn a_count_made_ahead_serves_only_while_no_row_is_added(db: TestDb) {
        let p = db.public_project().await;
        let id = db.store.ingest(&db.blobs, &submission(&db, p, "v1", r#"{"a": "pass", "b": "fail"}"#, "", "").await, small_batches()).await.unwrap();
        let total = format!("SELECT tests_pass * 100 + tests_fail * 10 + tests_skip FROM statuses WHERE test_run_id = {id} AND suite_id IS NULL");
        let test = |name: &str, result| SubmittedTest { suite: "s".into(), name: name.into(), result, log: None };

        // Counted ahead, then nothing added: the count is the status.
        let mut run = db.store.reopen_run(id).await.unwrap();
        run.append(vec![test("c", None)], Vec::new()).await.unwrap();
        run.count_ahead().await.unwrap();
        let mut tx = db.store.begin_write().await.unwrap();
        run.publish_in(&mut tx).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(db.scalar(&total).await, 111);

        // Rows added by another writer after the count: counted again.
        let mut run = db.store.reopen_run(id).await.unwrap();
        run.append(vec![test("d", Some(true))], Vec::new()).await.unwrap();
        run.count_ahead().await.unwrap();
        let mut other = db.store.reopen_run(id).await.unwrap();
        other.append(vec![test("e", Some(false))], Vec::new()).await.unwrap();
        let mut tx = db.store.begin_write().await.unwrap();
        run.publish_in(&mut tx).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(db.scalar(&total).await, 221, "e, added after the count, is counted");
    }

    async fn repeated_names_keep_the_last_value(db: TestDb) {
        let p = db.public_project().await;
        let tests = r#"{"a": "pass", "b": "pass", "c": "pass", "b": "fail", "a": {"result": "fail", "log": "last"}}"#;
        let metrics = r#"{"m": 1, "n": 2, "o": 3, "m": 5}"#;
        let id = db.store.ingest(&db.blobs, &submission(&db, p, "v1", tests, metrics, "").await, small_batches()).await.unwrap();
        assert_eq!(db.scalar("SELECT COUNT(*) FROM tests").await, 3);
        assert_eq!(db.scalar("SELECT COUNT(*) FROM tests WHERE result = FALSE").await, 2);
        assert_eq!(db.scalar("SELECT COUNT(*) FROM tests WHERE log = 'last'").await, 1);
        assert_eq!(db.scalar("SELECT COUNT(*) FROM metrics WHERE result = 5").await, 1);
        let total = db.scalar(&format!("SELECT tests_pass * 10 + tests_fail FROM statuses WHERE test_run_id = {id} AND suite_id IS NULL")).await;
        assert_eq!(total, 12);

        // Many names, all repeated later with another result, over many
        // batches (written two at a time on PostgreSQL): the last wins.
        let mut entries: Vec<String> = (0..300).map(|i| format!("\"s/t{i}\": \"pass\"")).collect();
        entries.extend((0..300).map(|i| format!("\"s/t{i}\": \"fail\"")));
        let doc = format!("{{{}}}", entries.join(","));
        let id = db.store.ingest(&db.blobs, &submission(&db, p, "v2", &doc, "", "").await, IngestOptions { batch_rows: 10, ..Default::default() }).await.unwrap();
        assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM tests WHERE test_run_id = {id} AND result = FALSE")).await, 300);
        assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM tests WHERE test_run_id = {id}")).await, 300);
    }
}
