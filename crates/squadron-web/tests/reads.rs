//! Reading results across builds: test job summaries, failures with
//! confidence, a test's results across builds, metric chart data; and
//! build annotations and callbacks. Over real HTTP, on both engines.

mod common;

use common::Api;
use reqwest::Method;
use serde_json::{json, Value};
use squadron_store::both_engines;
#[allow(unused_imports)]
use squadron_store::testing::TestDb;

impl Api {
    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call(Method::GET, path, token).await
    }

    async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// Submits a run (job `job` of the environment) of `tests` and
    /// `metrics`; returns its id.
    async fn run(&self, project: &str, build: &str, env: &str, job: &str, tests: &str, metrics: &str) -> i64 {
        let job = format!("{env}-{job}");
        let (status, body) = self
            .post_form(
                &format!("/api/submit/g/{project}/{build}/{env}"),
                Some(&self.admin),
                &[("tests", tests), ("metrics", metrics), ("job_id", &job)],
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body.parse().unwrap()
    }

    async fn build(&self, project: &str, version: &str) -> i64 {
        self.db
            .scalar(&format!(
                "SELECT b.id FROM builds b JOIN projects p ON p.id = b.project_id \
                 WHERE p.slug = '{project}' AND b.version = '{version}'"
            ))
            .await
    }
}

both_engines! {
    async fn test_jobs_summarised_by_status(db: TestDb) {
        let api = Api::new(db).await;
        api.run("p", "v1", "x86", "1", r#"{"a": "pass"}"#, "{}").await;
        api.run("private", "v1", "x86", "1", r#"{"a": "pass"}"#, "{}").await;
        let build = api.build("p", "v1").await;
        let project = api.db.scalar("SELECT id FROM projects WHERE slug = 'p'").await;
        api.db.execute("INSERT INTO backends (name, url, implementation_type) VALUES ('lava', 'https://lava.example/', 'lava')").await;
        for (env, status) in [("x86", Some("Complete")), ("x86", Some("Complete")), ("x86", Some("Incomplete")), ("arm", Some("Complete")), ("arm", None)] {
            let status = status.map_or("NULL".to_string(), |s| format!("'{s}'"));
            api.db.execute(&format!(
                "INSERT INTO testjobs (backend_id, target_id, target_build_id, environment, created_at, job_status) \
                 VALUES (1, {project}, {build}, '{env}', '2024-01-01T00:00:00Z', {status})"
            )).await;
        }
        let summary = api.ok(&format!("/api/builds/{build}/testjobs_summary/")).await;
        assert_eq!(summary["results"], json!({"null": 1, "Complete": 3, "Incomplete": 1}));
        let per_env = api.ok(&format!("/api/builds/{build}/testjobs_summary/?per_environment=1")).await;
        assert_eq!(per_env, json!({"results": {"arm": {"null": 1, "Complete": 1}, "x86": {"Complete": 2, "Incomplete": 1}}}));
        let other = api.build("p", "v1").await + 100;
        assert_eq!(api.get(&format!("/api/builds/{other}/testjobs_summary/"), None).await.0, 404);
        let private = api.build("private", "v1").await;
        assert_eq!(api.get(&format!("/api/builds/{private}/testjobs_summary/"), None).await.0, 404, "a private build is hidden");
        let (status, body) = api.get(&format!("/api/builds/{private}/testjobs_summary/"), Some(&api.member)).await;
        assert_eq!((status, body), (200, json!({"results": {}})));
    }

    async fn failures_with_confidence_look_back_over_earlier_builds(db: TestDb) {
        let api = Api::new(db).await;
        // s/a: pass, fail, pass (twice in v3), then fails in v5; v4 has no x86 run.
        api.run("p", "v1", "x86", "1", r#"{"s/a": "pass", "s/b": "fail"}"#, "{}").await;
        api.run("p", "v2", "x86", "1", r#"{"s/a": "fail", "s/b": "fail"}"#, "{}").await;
        api.run("p", "v3", "x86", "1", r#"{"s/a": "pass"}"#, "{}").await;
        api.run("p", "v3", "x86", "2", r#"{"s/a": "pass"}"#, "{}").await;
        api.run("p", "v4", "arm", "1", r#"{"s/a": "pass"}"#, "{}").await;
        let run = api.run("p", "v5", "x86", "1", r#"{"s/a": "fail", "s/b": "fail", "s/c": "pass", "s/d": "fail", "s/e": "skip"}"#, "{}").await;
        api.run("p", "v5", "arm", "1", r#"{"s/a": "fail"}"#, "{}").await;
        // s/d is a known issue: an xfail, not a failure.
        api.db.execute(&format!(
            "UPDATE tests SET has_known_issues = TRUE WHERE test_run_id = {run} AND metadata_id = \
             (SELECT id FROM suite_metadata WHERE kind = 'test' AND suite = 's' AND name = 'd')"
        )).await;
        let v5 = api.build("p", "v5").await;
        let page = api.ok(&format!("/api/builds/{v5}/failures_with_confidence/")).await;
        assert_eq!((page["count"].as_i64(), page["next"].clone()), (Some(3), Value::Null), "{page}");
        let results = page["results"].as_array().unwrap();
        let summary: Vec<(String, String, Value)> = results.iter().map(|r| {
            let env = r["environment"].as_str().unwrap().to_string();
            (r["name"].as_str().unwrap().to_string(), env, r["confidence"].clone())
        }).collect();
        let x86 = api.url(&format!("/api/environments/{}/", api.db.scalar("SELECT id FROM environments WHERE slug = 'x86'").await));
        let arm = api.url(&format!("/api/environments/{}/", api.db.scalar("SELECT id FROM environments WHERE slug = 'arm'").await));
        assert_eq!(summary, vec![
            ("s/a".to_string(), x86.clone(), json!({"count": 4, "passes": 3, "score": 75.0})),
            ("s/b".to_string(), x86.clone(), json!({"count": 2, "passes": 0, "score": 0.0})),
            ("s/a".to_string(), arm.clone(), json!({"count": 1, "passes": 1, "score": 100.0})),
        ]);
        let first = &results[0];
        assert_eq!(first["short_name"], "a");
        for absent in ["url", "status", "result", "known_issues", "has_known_issues"] {
            assert!(first.get(absent).is_none(), "{absent} is left out: {first}");
        }
        assert_eq!(first["build"], api.url(&format!("/api/builds/{v5}/")));
        assert_eq!(first["test_run"], api.url(&format!("/api/testruns/{run}/")));

        // Only the project's last build_confidence_count builds count.
        api.db.execute("UPDATE projects SET build_confidence_count = 2 WHERE slug = 'p'").await;
        let page = api.ok(&format!("/api/builds/{v5}/failures_with_confidence/?limit=1")).await;
        assert_eq!(page["results"][0]["confidence"], json!({"count": 2, "passes": 2, "score": 100.0}), "v3 and v4 only");
        assert_eq!(page["count"], 3);
        assert!(page["next"].as_str().unwrap().contains("offset=1"), "{page}");
        // Releases only: v2 is the only release among the earlier builds.
        api.db.execute("UPDATE builds SET is_release = TRUE WHERE version = 'v2'").await;
        let page = api.ok(&format!("/api/builds/{v5}/failures_with_confidence/?releases_only=true&limit=1")).await;
        assert_eq!(page["results"][0]["confidence"], json!({"count": 1, "passes": 0, "score": 0.0}));
        // No history at all: a score of 0.
        let v1 = api.build("p", "v1").await;
        let page = api.ok(&format!("/api/builds/{v1}/failures_with_confidence/")).await;
        assert_eq!(page["results"][0]["confidence"], json!({"count": 0, "passes": 0, "score": 0}));

        let (status, body) = api.get(&format!("/api/builds/{v5}/failures_with_confidence/?releases_only=maybe"), None).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["detail"].as_str().unwrap().contains("releases_only"), "{body}");
        let private = { api.run("private", "v1", "x86", "1", r#"{"a": "fail"}"#, "{}").await; api.build("private", "v1").await };
        assert_eq!(api.get(&format!("/api/builds/{private}/failures_with_confidence/"), None).await.0, 404);
        let (status, body) = api.get(&format!("/api/builds/{private}/failures_with_confidence/"), Some(&api.member)).await;
        assert_eq!((status, body["count"].as_i64()), (200, Some(1)));
    }

    async fn a_test_across_builds_with_duplicates_resolved(db: TestDb) {
        let api = Api::new(db).await;
        api.run("p", "v1", "x86", "1", r#"{"s/a": "pass"}"#, "{}").await;
        api.run("p", "v1", "arm", "1", r#"{"s/b": "pass"}"#, "{}").await;
        for (env, job, result) in [("x86", "1", "fail"), ("x86", "2", "pass"), ("x86", "3", "fail"), ("arm", "1", "pass"), ("arm", "2", "fail")] {
            api.run("p", "v2", env, job, &format!(r#"{{"s/a": "{result}"}}"#), "{}").await;
        }
        let project = api.db.scalar("SELECT id FROM projects WHERE slug = 'p'").await;
        let (v1, v2) = (api.build("p", "v1").await, api.build("p", "v2").await);
        let results = api.ok(&format!("/api/projects/{project}/test_results/?test_name=s/a")).await;
        let builds = results.as_array().expect("a bare list, as SQUAD answers");
        assert_eq!(builds.len(), 2);
        assert_eq!(builds[0]["build"]["id"].as_i64(), Some(v2), "newest first");
        assert_eq!(builds[0]["build"]["version"], "v2");
        assert_eq!(builds[0]["build_url_path"], "/g/p/build/v2/");
        let envs = builds[0]["environments"].as_array().unwrap();
        let slugs: Vec<&str> = envs.iter().map(|e| e["environment"]["slug"].as_str().unwrap()).collect();
        assert_eq!(slugs, ["arm", "x86"], "environments by name, then slug");
        // Two of three x86 runs failed: fail, with 2/3 confidence.
        let x86 = &envs[1]["test"];
        assert_eq!((x86["status"].as_str(), x86["confidence"].as_f64()), (Some("fail"), Some(2.0 / 3.0 * 100.0)), "{x86}");
        assert!(x86.get("known_issues").is_none());
        assert_eq!(x86["name"], "s/a");
        // One pass and one failure on arm: a tie goes to fail.
        let arm = &envs[0]["test"];
        assert_eq!((arm["status"].as_str(), arm["confidence"].as_f64()), (Some("fail"), Some(50.0)), "{arm}");
        let last_arm_run = api.db.scalar(&format!("SELECT MAX(id) FROM testruns WHERE build_id = {v2} AND environment_id = (SELECT id FROM environments WHERE slug = 'arm')")).await;
        assert_eq!(envs[0]["test_url_path"], format!("/g/p/build/v2/testrun/{last_arm_run}/suite/s/test/a/history/"));
        // v1: one x86 result (no confidence), and no test on arm.
        let envs = builds[1]["environments"].as_array().unwrap();
        assert_eq!(builds[1]["build"]["id"].as_i64(), Some(v1));
        assert_eq!((envs[1]["test"]["status"].as_str(), envs[1]["test"].get("confidence")), (Some("pass"), None));
        assert_eq!(envs[0]["test"], json!({"short_name": "", "build": null, "environment": null, "test_run": null, "suite": null,
            "metadata": null, "result": null, "log": "", "has_known_issues": null, "known_issues": []}));
        assert!(envs[0].get("test_url_path").is_none());

        let one = api.ok(&format!("/api/projects/{project}/test_results/?test_name=s/a&limit=1&offset=1")).await;
        assert_eq!(one.as_array().unwrap().len(), 1);
        assert_eq!(one[0]["build"]["version"], "v1");
        for query in ["", "?test_name=s/nope", "?test_name=nope"] {
            let (status, body) = api.get(&format!("/api/projects/{project}/test_results/{query}"), None).await;
            assert_eq!(status, 400, "{query}: {body}");
        }
        let private = api.db.scalar("SELECT id FROM projects WHERE slug = 'private'").await;
        assert_eq!(api.get(&format!("/api/projects/{private}/test_results/?test_name=s/a"), None).await.0, 404);
        // A test known elsewhere but not in this project's suites: nothing.
        let (status, body) = api.get(&format!("/api/projects/{private}/test_results/?test_name=s/a"), Some(&api.admin)).await;
        assert_eq!((status, body), (200, json!([])));
    }

    async fn metric_chart_data_as_json_and_csv(db: TestDb) {
        let api = Api::new(db).await;
        api.run("p", "v1", "x86", "1", r#"{"t/a": "pass", "t/b": "pass", "t/c": "fail"}"#, r#"{"bench/speed": [1, 2, 3], "bench/size": 10}"#).await;
        api.run("p", "v2", "x86", "1", r#"{"t/a": "pass"}"#, r#"{"bench/speed": [4, 6]}"#).await;
        api.run("p", "v2", "arm", "1", r#"{"t/a": "fail"}"#, r#"{"bench/speed": 5}"#).await;
        let (v1, v2) = (api.build("p", "v1").await, api.build("p", "v2").await);
        let epoch = |id: i64| {
            let api = &api;
            async move {
                let build = api.ok(&format!("/api/builds/{id}/")).await;
                chrono::DateTime::parse_from_rfc3339(build["datetime"].as_str().unwrap()).unwrap().timestamp()
            }
        };
        let (e1, e2) = (epoch(v1).await, epoch(v2).await);
        let (status, _) = api.call_json(Method::POST, "/api/annotations/", Some(&api.admin), json!({"build": api.url(&format!("/api/builds/{v2}/")), "description": "new compiler"})).await;
        assert_eq!(status, 201);
        let speed_id = |build: i64| format!("SELECT x.id FROM metrics x JOIN environments e ON e.id = x.environment_id WHERE x.build_id = {build} AND e.slug = 'x86' AND x.metadata_id = (SELECT id FROM suite_metadata WHERE name = 'speed')");
        let (m1, m2) = (api.db.scalar(&speed_id(v1)).await, api.db.scalar(&speed_id(v2)).await);

        let data = api.ok("/api/data/g/p/?metric=bench/speed&metric=:tests:&environment=x86").await;
        assert_eq!(data, json!({
            "bench/speed": {"x86": [
                [e1, 2.0, "v1", "", m1, "False", 1.0, 3.0],
                [e2, 5.0, "v2", "new compiler", m2, "False", 4.0, 6.0],
            ]},
            ":tests:": {"x86": [[e1, 66, "v1", ""], [e2, 100, "v2", "new compiler"]]},
        }));
        // No metric asked: :tests: and every metric of the project.
        let all = api.ok("/api/data/g/p/?environment=arm").await;
        let keys: Vec<&String> = all.as_object().unwrap().keys().collect();
        assert_eq!(keys, [":tests:", "bench/size", "bench/speed"]);
        assert_eq!(all[":tests:"]["arm"], json!([[e2, 0, "v2", "new compiler"]]));
        assert_eq!(all["bench/size"]["arm"], json!([]));
        let summary = api.ok("/api/data/g/p/?metric=:summary:&environment=x86&environment=arm").await;
        let x86 = summary[":summary:"]["x86"].as_array().unwrap();
        assert_eq!(x86.len(), 2, "{summary}");
        assert_eq!((x86[1][0].as_i64(), x86[1][2].as_str(), x86[1][3].as_str()), (Some(e2), Some("v2"), Some("new compiler")));
        assert!(x86[1][1].as_f64().unwrap() > 0.0, "the build's metrics summary: {summary}");
        let dynamic = api.ok("/api/data/g/p/?metric=:dynamic_summary:&metric=bench/speed&environment=arm").await;
        let mean = dynamic[":dynamic_summary:"]["arm"][0][1].as_f64().unwrap();
        assert!((mean - 5.0).abs() < 1e-9, "the geometric mean of one 5: {dynamic}");
        // Dates bound the runs' creation.
        assert_eq!(api.ok("/api/data/g/p/?metric=bench/speed&environment=x86&date_end=01-01-2000").await["bench/speed"]["x86"], json!([]));

        let (status, content_type, csv) = api.get_text("/api/data/g/p/?metric=bench/speed&environment=x86&format=csv").await;
        assert_eq!((status, content_type.as_str()), (200, "text/csv; charset=utf-8"));
        assert_eq!(csv, format!("\"bench/speed\",\"x86\",\"{e1}\",\"2.0\",\"v1\",\"\",\"{m1}\",\"False\",\"1.0\",\"3.0\"\n\
            \"bench/speed\",\"x86\",\"{e2}\",\"5.0\",\"v2\",\"new compiler\",\"{m2}\",\"False\",\"4.0\",\"6.0\""));

        for (query, status) in [("format=xml", 400), ("date_start=2024-01-01", 400), ("date_end=13-45-2024", 400)] {
            let (code, body) = api.get(&format!("/api/data/g/p/?{query}"), None).await;
            assert_eq!(code, status, "{query}: {body}");
        }
        assert_eq!(api.get("/api/data/g/private/?metric=:tests:", None).await.0, 401);
        assert_eq!(api.get("/api/data/g/private/?metric=:tests:", Some(&api.member)).await.0, 200);
        assert_eq!(api.get("/api/data/g/nope/", None).await.0, 404);
    }

    async fn annotations_are_written_by_group_admins(db: TestDb) {
        let api = Api::new(db).await;
        api.run("p", "v1", "x86", "1", r#"{"a": "pass"}"#, "{}").await;
        api.run("private", "v1", "x86", "1", r#"{"a": "pass"}"#, "{}").await;
        let (build, private) = (api.build("p", "v1").await, api.build("private", "v1").await);
        let link = api.url(&format!("/api/builds/{build}/"));
        let body = json!({"build": link, "description": "bisected"});
        assert_eq!(api.call_json(Method::POST, "/api/annotations/", None, body.clone()).await.0, 401);
        assert_eq!(api.call_json(Method::POST, "/api/annotations/", Some(&api.submitter), body.clone()).await.0, 403);
        let (status, created) = api.call_json(Method::POST, "/api/annotations/", Some(&api.admin), body.clone()).await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_i64().unwrap();
        assert_eq!(created, json!({"url": api.url(&format!("/api/annotations/{id}/")), "id": id, "description": "bisected", "build": link}));
        let (status, again) = api.call_json(Method::POST, "/api/annotations/", Some(&api.admin), body).await;
        assert_eq!(status, 400, "one annotation per build: {again}");
        assert!(again["detail"].as_str().unwrap().contains("build"), "{again}");
        let long = json!({"build": api.url(&format!("/api/builds/{private}/")), "description": "x".repeat(1025)});
        assert_eq!(api.call_json(Method::POST, "/api/annotations/", Some(&api.admin), long).await.0, 400);
        let (status, _) = api.call_json(Method::POST, "/api/annotations/", Some(&api.admin), json!({"build": api.url(&format!("/api/builds/{private}/"))})).await;
        assert_eq!(status, 201, "a description is optional");

        // Anonymous callers see the public project's annotation only.
        assert_eq!(api.ok("/api/annotations/").await["count"], 1);
        assert_eq!(api.get("/api/annotations/", Some(&api.member)).await.1["count"], 2);
        assert_eq!(api.ok(&format!("/api/annotations/?build={build}")).await["results"][0]["id"].as_i64(), Some(id));
        assert_eq!(api.ok("/api/annotations/?description=nope").await["count"], 0);
        let (status, patched) = api.call_json(Method::PATCH, &format!("/api/annotations/{id}/"), Some(&api.admin), json!({"description": "reverted"})).await;
        assert_eq!((status, patched["description"].as_str()), (200, Some("reverted")));
        assert_eq!(api.call_json(Method::DELETE, &format!("/api/annotations/{id}/"), Some(&api.member), json!({})).await.0, 403);
        assert_eq!(api.call_json(Method::DELETE, &format!("/api/annotations/{id}/"), Some(&api.admin), json!({})).await.0, 204);
        assert_eq!(api.get(&format!("/api/annotations/{id}/"), None).await.0, 404);
    }

    async fn build_callbacks_listed_and_attached_by_submitters(db: TestDb) {
        let api = Api::new(db).await;
        api.run("p", "v1", "x86", "1", r#"{"a": "pass"}"#, "{}").await;
        api.run("private", "v1", "x86", "1", r#"{"a": "pass"}"#, "{}").await;
        let (build, private) = (api.build("p", "v1").await, api.build("private", "v1").await);
        let path = format!("/api/builds/{build}/callbacks/");
        let (status, listed) = api.get(&path, None).await;
        assert_eq!((status, listed), (202, json!({"results": []})), "SQUAD lists callbacks with a 202");
        let fields = [
            ("callback_url", "https://ci.example.com/hook"),
            ("callback_method", "post"),
            ("callback_headers", r#"{"Authorization": "secret"}"#),
            ("callback_payload", r#"{"build": "v1"}"#),
            ("callback_record_response", "true"),
        ];
        assert_eq!(api.post_form(&path, None, &fields).await.0, 401);
        assert_eq!(api.post_form(&path, Some(&api.member), &fields).await.0, 403);
        let sends = "SELECT COUNT(*) FROM tasks WHERE kind = 'send_build_callbacks'";
        let before = api.db.scalar(sends).await;
        let (status, body) = api.post_form(&path, Some(&api.submitter), &fields).await;
        assert_eq!((status, serde_json::from_str::<Value>(&body).unwrap()), (202, json!({"message": "OK"})));
        assert_eq!(api.db.scalar(sends).await, before + 1, "the build is already finished: the new callback is sent now");
        let (status, listed) = api.get(&path, None).await;
        assert_eq!(status, 202);
        let id = listed["results"][0]["id"].as_i64().unwrap();
        assert_eq!(listed, json!({"results": [{
            "url": "https://ci.example.com/hook", "id": id, "method": "post", "event": "on_build_finished",
            "payload": r#"{"build": "v1"}"#, "payload_is_json": true, "is_sent": false, "record_response": true,
            "response_code": null, "response_content": null,
        }]}), "headers are never shown");

        for (fields, message) in [
            (vec![("callback_url", "https://ci.example.com/hook")], "already has a callback"),
            (vec![("callback_method", "post")], "url is required."),
            (vec![("callback_url", "https://x.example/"), ("callback_method", "put")], "callback_method"),
            (vec![("callback_url", "not a url")], "callback_url"),
        ] {
            let (status, body) = api.post_form(&path, Some(&api.submitter), &fields).await;
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(status, 400, "{body}");
            assert!(body["message"].as_str().unwrap().contains(message), "{message}: {body}");
        }
        // JSON bodies work too.
        let (status, body) = api.call_json(Method::POST, &path, Some(&api.admin), json!({"callback_url": "https://other.example/", "callback_method": "get"})).await;
        assert_eq!((status, body), (202, json!({"message": "OK"})));
        assert_eq!(api.get(&path, None).await.1["results"].as_array().unwrap().len(), 2);
        assert_eq!(api.get(&format!("/api/builds/{private}/callbacks/"), None).await.0, 404);
        assert_eq!(api.post_form(&format!("/api/builds/{private}/callbacks/"), None, &fields).await.0, 404);
    }
}
