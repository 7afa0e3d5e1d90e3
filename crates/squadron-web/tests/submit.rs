//! `POST /api/submit/…` over real HTTP, on both engines.

mod common;

use common::Api;
use squadron_store::both_engines;
#[allow(unused_imports)]
use squadron_store::testing::TestDb;
use squadron_web::WebConfig;

const SUBMIT: &str = "/api/submit/g/p/v1/x86_64";

/// A path, form fields, and what the error message must contain.
type BadCase = (&'static str, Vec<(&'static str, &'static str)>, &'static str);

both_engines! {
    async fn every_field_as_file_or_plain_value(db: TestDb) {
        let api = Api::new(db).await;
        let t = Some(api.submitter.as_str());
        // Files.
        let (status, body) = api
            .post_multipart(SUBMIT, t, &[], &[
                ("tests", "tests.json", br#"{"ltp/fork01": "pass", "ltp/fork02": {"result": "fail", "log": "oops"}, "boot": "skip"}"#),
                ("metrics", "metrics.json", br#"{"bench/speed": {"value": [1, 3], "unit": "MB/s"}}"#),
                ("metadata", "metadata.json", br#"{"job_id": "1001", "job_url": "https://lava/1001", "kernel": "6.1"}"#),
                ("log", "log.txt", b"boot\0ing\n"),
                ("attachment", "a.txt", b"first"),
                ("attachment", "b.bin", b"second"),
                ("attachment", "a.txt", b"replaced"),
                ("attachment", "/home/ci/out/c.log", b"third"),
            ])
            .await;
        assert_eq!(status, 201, "{body}");
        let run: i64 = body.parse().expect("the body is the new test run's id");
        let q = |sql: String| { let db = &api.db; async move { db.scalar(&sql).await } };
        assert_eq!(q(format!("SELECT COUNT(*) FROM tests WHERE test_run_id = {run}")).await, 3);
        assert_eq!(q(format!("SELECT COUNT(*) FROM metrics WHERE test_run_id = {run} AND unit = 'MB/s' AND result = 2")).await, 1);
        assert_eq!(q(format!("SELECT COUNT(*) FROM testruns WHERE id = {run} AND job_id = '1001' AND job_url = 'https://lava/1001'")).await, 1);
        assert_eq!(q(format!("SELECT COUNT(*) FROM attachments WHERE test_run_id = {run}")).await, 3, "the last a.txt wins");
        assert_eq!(q("SELECT CAST(SUM(length) AS BIGINT) FROM attachments".into()).await, 19);
        assert_eq!(q("SELECT COUNT(*) FROM attachments WHERE filename = 'c.log'".into()).await, 1, "directories are dropped, as Django does");
        // Attachments read back through the API and at SQUAD's page address
        // (which names the run's group, project and build).
        let (status, _, body) = api.get_text(&format!("/api/testruns/{run}/attachments/?filename=a.txt")).await;
        assert_eq!((status, body.as_str()), (200, "replaced"));
        let (status, _, body) = api.get_text(&format!("/g/p/build/v1/attachments/testrun/{run}/b.bin")).await;
        assert_eq!((status, body.as_str()), (200, "second"));
        let answer = reqwest::get(api.url(&format!("/api/testruns/{run}/log_file/"))).await.unwrap();
        assert_eq!(answer.headers()["x-content-type-options"], "nosniff", "a log is never guessed to be HTML");
        for wrong in [
            format!("/g/p/build/v2/attachments/testrun/{run}/b.bin"),
            format!("/g/private/build/v1/attachments/testrun/{run}/b.bin"),
            format!("/h/p/build/v1/attachments/testrun/{run}/b.bin"),
            format!("/g/p/build/v1/attachments/testrun/{run}/nothing.bin"),
            format!("/g/p/build/v1/attachments/testrun/{}/b.bin", run + 100),
        ] {
            assert_eq!(api.get_text(&wrong).await.0, 404, "{wrong}");
        }
        let log_key = api.db.text(&format!("SELECT log_file FROM testruns WHERE id = {run}")).await;
        assert_eq!(std::fs::read(api.db.blobs.path(&log_key)).unwrap(), b"booting\n", "NUL bytes are stripped");

        // Plain values, and the special metadata fields as form fields.
        let (status, body) = api
            .post_multipart(SUBMIT, t, &[("tests", r#"{"a": "pass"}"#), ("metrics", r#"{"m": 4}"#), ("job_id", "1002"), ("job_status", "Complete")], &[])
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(q("SELECT COUNT(*) FROM testruns WHERE job_id = '1002' AND job_status = 'Complete' AND metadata_file IS NOT NULL".into()).await, 1);

        // urlencoded, as squad-client sends results without files.
        let (status, body) = api.post_form(SUBMIT, t, &[("tests", r#"{"suite/t[a/b]": "fail"}"#), ("metadata", r#"{"job_id": 1003}"#), ("log", "a log")]).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(q("SELECT COUNT(*) FROM suite_metadata WHERE suite = 'suite' AND name = 't[a/b]'".into()).await, 1);

        // A file wins over a plain value of the same name.
        let (status, body) = api.post_multipart(SUBMIT, t, &[("tests", r#"{"plain": "pass"}"#)], &[("tests", "t.json", br#"{"file": "pass"}"#)]).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(q("SELECT COUNT(*) FROM suite_metadata WHERE name = 'file'".into()).await, 1);
        assert_eq!(q("SELECT COUNT(*) FROM suite_metadata WHERE name = 'plain'".into()).await, 0);

        // Nothing at all is a valid (empty) run, and a trailing slash is fine.
        let (status, _) = api.post_form(&format!("{SUBMIT}/"), t, &[]).await;
        assert_eq!(status, 201);
        assert_eq!(q("SELECT COUNT(*) FROM testruns WHERE visible".into()).await, 5);
        assert_eq!(q("SELECT COUNT(*) FROM builds".into()).await, 1);
        assert_eq!(q("SELECT COUNT(*) FROM environments WHERE slug = 'x86_64'".into()).await, 1);
        {
            let (status, body) = api
                .post_multipart("/api/submit/g/private/v1/env", t, &[], &[("attachment", "secret.txt", b"s")])
                .await;
            assert_eq!(status, 201, "{body}");
            let page = format!("/g/private/build/v1/attachments/testrun/{body}/secret.txt");
            let (status, _, answer) = api.get_text(&page).await;
            assert!(status == 404 || status == 401, "a private project's attachment is not served anonymously: {status} {answer}");
        }
    }

    async fn authentication_and_roles(db: TestDb) {
        let api = Api::new(db).await;
        let tests = [("tests", r#"{"a": "pass"}"#)];
        let (status, body) = api.post_form(SUBMIT, None, &tests).await;
        assert_eq!((status, Api::detail(&body).as_str()), (403, "User needs permission to submit results."));
        let (status, _) = api.post_form(SUBMIT, Some(&api.member), &tests).await;
        assert_eq!(status, 403, "members may not submit");
        let (status, _) = api.post_form(SUBMIT, Some("0000000000000000000000000000000000000000"), &tests).await;
        assert_eq!(status, 403, "a wrong token is anonymous on native endpoints");
        let (status, body) = api.post_form("/api/submit/g/private/v1/env", Some("wrong"), &tests).await;
        assert_eq!(status, 401, "a private project is hidden: {body}");
        let (status, _) = api.post_form("/api/submit/g/private/v1/env", Some(&api.member), &tests).await;
        assert_eq!(status, 403, "members see the private project but may not submit");
        let (status, _) = api.post_form("/api/submit/g/private/v1/env", Some(&api.admin), &tests).await;
        assert_eq!(status, 201, "superusers may");
        let (status, body) = api.post_form("/api/submit/nope/p/v1/env", Some(&api.submitter), &tests).await;
        assert_eq!(status, 404);
        assert!(Api::detail(&body).contains("nope"));
        let (status, body) = api.post_form("/api/submit/g/nope/v1/env", Some(&api.submitter), &tests).await;
        assert_eq!(status, 404);
        assert!(Api::detail(&body).contains("g/nope"));
        // SQUAD's Auth-Token header.
        let resp = api.http.post(api.url(SUBMIT)).header("Auth-Token", &api.submitter).form(&tests).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 201);
        assert_eq!(api.db.scalar("SELECT COUNT(*) FROM testruns").await, 2);
    }

    async fn bad_input_is_named_and_leaves_nothing(db: TestDb) {
        let api = Api::new(db).await;
        let t = Some(api.submitter.as_str());
        api.post_form(SUBMIT, t, &[("tests", r#"{"a": "pass"}"#), ("metadata", r#"{"job_id": "dup"}"#)]).await;
        let before = api.db.table_counts().await;
        let cases: Vec<BadCase> = vec![
            (SUBMIT, vec![("tests", r#"{"a": "pass""#)], "tests is not valid JSON"),
            (SUBMIT, vec![("tests", "[1]")], "tests must be a JSON object"),
            (SUBMIT, vec![("tests", r#"{"a": true}"#)], "test \"a\""),
            (SUBMIT, vec![("metrics", r#"{"m": "fast"}"#)], "metric \"m\""),
            (SUBMIT, vec![("metrics", r#"{"m": [1, "x"]}"#)], "metric \"m\""),
            (SUBMIT, vec![("metadata", "{")], "metadata is not valid JSON"),
            (SUBMIT, vec![("metadata", "[]")], "metadata must be a JSON object"),
            (SUBMIT, vec![("metadata", r#"{"job_id": "a/b"}"#)], "job_id"),
            (SUBMIT, vec![("metadata", r#"{"job_id": 1.5}"#)], "job_id"),
            (SUBMIT, vec![("metadata", r#"{"datetime": "tomorrow"}"#)], "datetime"),
            (SUBMIT, vec![("datetime", "tomorrow")], "datetime"),
            (SUBMIT, vec![("metadata", r#"{"job_id": "dup"}"#)], "There is already a test run with job_id dup"),
            ("/api/submit/g/p/v%201/x86_64", vec![], "build version \"v 1\""),
            ("/api/submit/g/p/v1/-x86", vec![], "environment slug \"-x86\""),
        ];
        for (path, fields, expected) in cases {
            for (tests_first, fields) in [(true, fields.clone()), (false, fields.iter().rev().cloned().collect())] {
                let (status, body) = api.post_form(path, t, &fields).await;
                assert_eq!(status, 400, "{fields:?} (tests first: {tests_first}): {body}");
                let detail = Api::detail(&body);
                assert!(detail.contains(expected), "{fields:?}: {detail:?} should contain {expected:?}");
            }
            assert_eq!(api.db.table_counts().await, before, "{path} {fields:?}");
        }
        let resp = api.http.post(api.url(SUBMIT)).header("Authorization", format!("Token {}", api.submitter))
            .header("Content-Type", "application/json").body("{}").send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 400);
        assert!(Api::detail(&resp.text().await.unwrap()).contains("application/json"));
        assert_eq!(api.db.table_counts().await, before);
    }

    async fn bad_input_after_the_first_committed_chunk(db: TestDb) {
        let api = Api::new(db).await;
        let before = api.db.table_counts().await;
        // 12k good tests (more than two write batches), then a bad one.
        let mut tests: Vec<String> = (0..12_000).map(|i| format!("\"s{}/t{i}\": \"pass\"", i % 7)).collect();
        tests.push("\"last\": 42".into());
        let tests = format!("{{{}}}", tests.join(","));
        let (status, body) = api.post_multipart(SUBMIT, Some(&api.submitter), &[], &[("tests", "tests.json", tests.as_bytes())]).await;
        assert_eq!(status, 400, "{body}");
        assert!(Api::detail(&body).contains("\"last\""), "{body}");
        api.db.store.sweep_hidden_runs(std::time::Duration::ZERO).await.unwrap();
        assert_eq!(api.db.table_counts().await, before);
    }

    async fn over_size_uploads_get_413(db: TestDb) {
        let api = Api::start(db, WebConfig { max_upload_bytes: 64 * 1024, ..WebConfig::default() }).await;
        let before = api.db.table_counts().await;
        let big = vec![b'x'; 100 * 1024];
        let (status, body) = api.post_multipart(SUBMIT, Some(&api.submitter), &[], &[("log", "log.txt", &big)]).await;
        assert_eq!(status, 413, "{body}");
        assert!(Api::detail(&body).contains("65536"), "{body}");
        // A body without a length that grows past the limit while streaming.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..100).map(|_| Ok(vec![b'a'; 1024])).collect();
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
        let resp = api.http.post(api.url(SUBMIT)).header("Authorization", format!("Token {}", api.submitter))
            .header("Content-Type", "application/x-www-form-urlencoded").body(body).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 413);
        assert_eq!(api.db.table_counts().await, before);
        let (status, _) = api.post_multipart(SUBMIT, Some(&api.submitter), &[("tests", r#"{"a": "pass"}"#)], &[]).await;
        assert_eq!(status, 201, "small uploads still pass");
    }
}
