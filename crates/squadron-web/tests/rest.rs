//! The REST API over real HTTP, on both engines.

mod common;

use common::Api;
use serde_json::Value;
use squadron_store::both_engines;
#[allow(unused_imports)]
use squadron_store::testing::TestDb;

impl Api {
    async fn get_json(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, token).await
    }

    async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get_json(path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// Follows `next` links from `path`, collecting every result.
    async fn walk(&self, path: &str) -> Vec<Value> {
        let mut results = Vec::new();
        let mut url = Some(self.url(path));
        while let Some(u) = url {
            let body: Value = self.http.get(&u).send().await.unwrap().json().await.unwrap();
            results.extend(body["results"].as_array().unwrap().iter().cloned());
            url = body["next"].as_str().map(str::to_string);
        }
        results
    }

    async fn submit(&self, project: &str, build: &str, env: &str, tests: &str, metadata: &str) -> i64 {
        let (status, body) = self
            .post_form(
                &format!("/api/submit/g/{project}/{build}/{env}"),
                Some(&self.admin),
                &[("tests", tests), ("metadata", metadata)],
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body.parse().unwrap()
    }
}

fn ids(results: &[Value]) -> Vec<i64> {
    results.iter().map(|r| r["id"].as_i64().unwrap()).collect()
}

both_engines! {
    async fn shapes_links_and_files(db: TestDb) {
        let api = Api::new(db).await;
        let run = api.submit("p", "v1", "x86", r#"{"ltp/fork01": "pass", "ltp/fork02": {"result": "fail", "log": "boom"}, "boot": "skip"}"#, r#"{"job_id": "7", "kernel": "6.1"}"#).await;
        let base = api.base.clone();

        let groups = api.ok("/api/groups/").await;
        assert_eq!(groups["count"], 1);
        assert_eq!(groups["results"][0]["url"], format!("{base}/api/groups/1/"));

        let project = &api.ok("/api/projects/?slug=p").await["results"][0];
        assert_eq!(project["full_name"], "g/p");
        assert_eq!(project["group"], format!("{base}/api/groups/1/"));
        for key in ["enabled_plugins_list", "is_public", "datetime", "build_confidence_count", "wait_before_notification"] {
            assert!(project.get(key).is_some(), "project has {key}");
        }

        let build = &api.ok("/api/builds/").await["results"][0];
        assert_eq!(build["version"], "v1");
        assert_eq!(build["finished"], true, "a submit-only build is finished after its first run, as in SQUAD");
        assert_eq!(build["testruns"], format!("{base}/api/builds/{}/testruns/", build["id"]));
        let build_id = build["id"].as_i64().unwrap();

        let testrun = api.ok(&format!("/api/testruns/{run}/")).await;
        assert_eq!(testrun["job_id"], "7");
        assert_eq!(testrun["tests"], format!("{base}/api/testruns/{run}/tests/"));
        assert_eq!(testrun["metrics"], Value::Null, "no metrics, no metrics link");
        assert_eq!(testrun["environment"], format!("{base}/api/environments/1/"));

        let tests = api.ok(&format!("/api/testruns/{run}/tests/")).await;
        let results = tests["results"].as_array().unwrap();
        assert_eq!(results.len(), 3);
        assert_eq!(results[1]["name"], "ltp/fork02");
        assert_eq!(results[1]["short_name"], "fork02");
        assert_eq!(results[1]["status"], "fail");
        assert_eq!(results[1]["log"], "boom");
        assert!(results[1].get("test_run").is_none(), "the run's own tests leave out the run");
        assert_eq!(results[2]["status"], "skip");
        assert_eq!(results[2]["result"], Value::Null);

        let total = api.ok(&format!("/api/testruns/{run}/status/?suite__isnull=true")).await;
        let total = &total["results"].as_array().unwrap()[0];
        assert_eq!((total["tests_pass"].as_i64(), total["tests_fail"].as_i64(), total["tests_skip"].as_i64()), (Some(1), Some(1), Some(1)));
        assert_eq!(total["suite"], Value::Null);

        assert_eq!(api.ok(&format!("/api/builds/{build_id}/metadata/")).await["kernel"], "6.1");
        assert_eq!(api.ok(&format!("/api/builds/{build_id}/metadata_by_testrun/")).await[run.to_string()]["job_id"], "7");
        let tests_file = api.http.get(api.url(&format!("/api/testruns/{run}/tests_file/"))).send().await.unwrap().text().await.unwrap();
        assert!(tests_file.contains("fork02"));
        let metadata = api.http.get(api.url(&format!("/api/testruns/{run}/metadata_file/"))).send().await.unwrap().text().await.unwrap();
        assert_eq!(metadata, r#"{"job_id": "7", "kernel": "6.1"}"#);

        let trimmed = api.ok("/api/projects/?fields=id,slug").await;
        assert_eq!(trimmed["results"][0].as_object().unwrap().len(), 2);
        let trimmed = api.ok("/api/tests/?fields=id,name,status").await;
        let keys: Vec<&String> = trimmed["results"][0].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["id", "name", "status"]);
        let metric_keys = api.ok(&format!("/api/testruns/{run}/metrics/")).await;
        assert_eq!(metric_keys["results"], serde_json::json!([]));
        let (status, body) = api.get_json("/api/builds/9999/", None).await;
        assert_eq!((status, body["detail"].as_str()), (404, Some("Not found.")));
        let status = api.ok(&format!("/api/builds/{build_id}/status/")).await;
        assert_eq!((status["tests_total"].as_i64(), status["finished"].as_bool()), (Some(3), Some(true)), "{status}");
        assert_eq!(status["build"].as_str().unwrap(), api.url(&format!("/api/builds/{build_id}/")));
        assert_eq!(status["details"]["null"]["testruns"], 1, "details by environment name, as SQUAD: {status}");
    }

    async fn comparing_builds(db: TestDb) {
        let api = Api::new(db).await;
        api.submit("p", "v1", "x86", r#"{"s/a": "pass", "s/b": "fail", "c": "pass"}"#, "{}").await;
        api.submit("p", "v2", "x86", r#"{"s/a": "fail", "s/b": "pass", "c": "fail"}"#, "{}").await;
        api.submit("private", "v1", "x86", r#"{"s/a": "pass", "s/b": "pass"}"#, "{}").await;
        let id = |project: &str, version: &str| {
            let db = &api.db;
            let sql = format!("SELECT b.id FROM builds b JOIN projects p ON p.id = b.project_id WHERE p.slug = '{project}' AND b.version = '{version}'");
            async move { db.scalar(&sql).await }
        };
        let (v1, v2, other) = (id("p", "v1").await, id("p", "v2").await, id("private", "v1").await);
        let project = api.db.scalar("SELECT id FROM projects WHERE slug = 'p'").await;
        let expected = serde_json::json!({"regressions": {"x86": {"/": ["c"], "s": ["a"]}}, "fixes": {"x86": {"s": ["b"]}}});
        assert_eq!(api.ok(&format!("/api/projects/{project}/compare_builds/?baseline={v1}&to_compare={v2}")).await, expected);
        assert_eq!(api.ok(&format!("/api/builds/{v1}/compare/?target={v2}")).await, expected);
        for (query, code) in [
            (format!("baseline={v1}"), 400),
            (format!("baseline=x&to_compare={v2}"), 400),
            (format!("baseline={v1}&to_compare={other}"), 404),
            (format!("baseline={v1}&to_compare={v2}&by=size"), 400),
        ] {
            let (status, body) = api.get_json(&format!("/api/projects/{project}/compare_builds/?{query}"), None).await;
            assert_eq!(status, code, "{query}: {body}");
        }
        // An unfinished build (no runs) only with force.
        let empty = api.db.scalar(&format!("INSERT INTO builds (project_id, version, created_at, datetime) VALUES ({project}, 'v3', '2030-01-01T00:00:00Z', '2030-01-01T00:00:00Z') RETURNING id")).await;
        let (status, body) = api.get_json(&format!("/api/projects/{project}/compare_builds/?baseline={v2}&to_compare={empty}"), None).await;
        assert_eq!(status, 400, "{body}");
        let forced = api.ok(&format!("/api/projects/{project}/compare_builds/?baseline={v2}&to_compare={empty}&force=1")).await;
        assert_eq!(forced, serde_json::json!({"regressions": {}, "fixes": {}}));
        // Across projects, environments pair by slug; a private baseline
        // only for who may see it.
        let (status, _) = api.get_json(&format!("/api/builds/{other}/compare/?target={v2}"), None).await;
        assert_eq!(status, 404);
        let (status, across) = api.get_json(&format!("/api/builds/{other}/compare/?target={v2}"), Some(&api.admin)).await;
        assert_eq!(status, 200, "{across}");
        assert_eq!(across["regressions"]["x86"]["s"], serde_json::json!(["a"]), "{across}");
    }

    async fn known_issues_are_written_by_admins_and_apply_to_later_runs(db: TestDb) {
        let api = Api::new(db).await;
        api.submit("p", "v1", "x86", r#"{"s/a": "pass"}"#, "{}").await;
        let env = api.db.scalar("SELECT id FROM environments WHERE slug = 'x86'").await;
        let env_url = api.url(&format!("/api/environments/{env}/"));
        let body = serde_json::json!({"title": "flaky a", "test_name": "s/a", "active": false, "environments": [env_url]});
        let post = |token: Option<String>| {
            let mut req = api.http.post(api.url("/api/knownissues/")).json(&body);
            if let Some(t) = token {
                req = req.header("Authorization", format!("Token {t}"));
            }
            req.send()
        };
        assert_eq!(post(None).await.unwrap().status().as_u16(), 401);
        assert_eq!(post(Some(api.member.clone())).await.unwrap().status().as_u16(), 403);
        let created = post(Some(api.admin.clone())).await.unwrap();
        assert_eq!(created.status().as_u16(), 201);
        let created: Value = created.json().await.unwrap();
        assert_eq!((created["title"].as_str(), created["active"].as_bool()), (Some("flaky a"), Some(false)));
        assert_eq!(created["environments"], serde_json::json!([env_url]));
        let id = created["id"].as_i64().unwrap();
        let missing = api.http.post(api.url("/api/knownissues/")).header("Authorization", format!("Token {}", api.admin))
            .json(&serde_json::json!({"title": "no pattern"})).send().await.unwrap();
        assert_eq!(missing.status().as_u16(), 400);

        // Inactive: a later failure is a failure; active: an xfail.
        api.submit("p", "v2", "x86", r#"{"s/a": "fail"}"#, "{}").await;
        let patched = api.http.patch(api.url(&format!("/api/knownissues/{id}/"))).header("Authorization", format!("Token {}", api.admin))
            .json(&serde_json::json!({"active": true})).send().await.unwrap();
        assert_eq!(patched.status().as_u16(), 200);
        api.submit("p", "v3", "x86", r#"{"s/a": "fail"}"#, "{}").await;
        let xfails = |version: &str| {
            let sql = format!("SELECT s.tests_xfail FROM build_status s JOIN builds b ON b.id = s.build_id WHERE b.version = '{version}'");
            let db = &api.db;
            async move { db.scalar(&sql).await }
        };
        assert_eq!((xfails("v2").await, xfails("v3").await), (0, 1));
        // Each write also queued the re-application to stored tests (run by
        // a worker; see squadron-status' tests).
        assert_eq!(api.db.scalar("SELECT COUNT(*) FROM tasks WHERE kind = 'reapply_known_issues'").await, 2);
        assert_eq!(api.ok(&format!("/api/knownissues/?active=true&id={id}")).await["count"], 1);

        let deleted = api.http.delete(api.url(&format!("/api/knownissues/{id}/"))).header("Authorization", format!("Token {}", api.admin))
            .send().await.unwrap();
        assert_eq!(deleted.status().as_u16(), 204);
        let (status, _) = api.get_json(&format!("/api/knownissues/{id}/"), None).await;
        assert_eq!(status, 404);
    }

    async fn metric_thresholds_are_written_by_group_admins(db: TestDb) {
        let api = Api::new(db).await;
        api.submit("p", "v1", "x86", r#"{"a": "pass"}"#, "{}").await;
        let project = api.db.scalar("SELECT id FROM projects WHERE slug = 'p'").await;
        let send = |method: reqwest::Method, path: String, token: Option<String>, body: serde_json::Value| {
            let mut req = api.http.request(method, api.url(&path)).json(&body);
            if let Some(t) = token {
                req = req.header("Authorization", format!("Token {t}"));
            }
            req.send()
        };
        let body = serde_json::json!({"project": api.url(&format!("/api/projects/{project}/")), "name": "bench/*", "is_higher_better": true});
        let post = reqwest::Method::POST;
        assert_eq!(send(post.clone(), "/api/metricthresholds/".into(), None, body.clone()).await.unwrap().status().as_u16(), 401);
        assert_eq!(send(post.clone(), "/api/metricthresholds/".into(), Some(api.member.clone()), body.clone()).await.unwrap().status().as_u16(), 403);
        let created: Value = send(post.clone(), "/api/metricthresholds/".into(), Some(api.admin.clone()), body.clone()).await.unwrap().json().await.unwrap();
        assert_eq!((created["name"].as_str(), created["value"].is_null(), created["is_higher_better"].as_bool()), (Some("bench/*"), true, Some(true)), "{created}");
        let id = created["id"].as_i64().unwrap();
        // The same project, environment and name: updated, not duplicated.
        let mut again = body.clone();
        again["value"] = serde_json::json!(5.5);
        let updated: Value = send(post, "/api/metricthresholds/".into(), Some(api.admin.clone()), again).await.unwrap().json().await.unwrap();
        assert_eq!((updated["id"].as_i64(), updated["value"].as_f64()), (Some(id), Some(5.5)), "{updated}");
        let listed = api.ok(&format!("/api/metricthresholds/?project={project}")).await;
        assert_eq!(listed["count"], 1);
        let patched: Value = send(reqwest::Method::PATCH, format!("/api/metricthresholds/{id}/"), Some(api.admin.clone()), serde_json::json!({"value": null})).await.unwrap().json().await.unwrap();
        assert!(patched["value"].is_null(), "{patched}");
        assert!(api.db.scalar("SELECT COUNT(*) FROM tasks WHERE kind = 'update_build_status' AND unique_key LIKE 'build_baseline:%'").await >= 1,
            "the project's builds look at their metric changes again");
        // The same threshold for one environment and for the whole project
        // says the same thing twice: refused either way, as SQUAD.
        let env = api.db.scalar("SELECT id FROM environments WHERE slug = 'x86'").await;
        let for_env = serde_json::json!({"project": api.url(&format!("/api/projects/{project}/")), "environment": api.url(&format!("/api/environments/{env}/")), "name": "bench/*", "is_higher_better": true});
        let (code, answer) = api.call_json(reqwest::Method::POST, "/api/metricthresholds/", Some(&api.admin), for_env.clone()).await;
        assert_eq!(code, 400, "{answer}");
        assert_eq!(answer["detail"], "Found a threshold that already applies to the whole project");
        let mut other = for_env.clone();
        other["value"] = serde_json::json!(3.0);
        let (code, env_threshold) = api.call_json(reqwest::Method::POST, "/api/metricthresholds/", Some(&api.admin), other).await;
        assert_eq!(code, 201, "another value is another threshold: {env_threshold}");
        let (code, answer) = api.call_json(reqwest::Method::PATCH, &format!("/api/metricthresholds/{id}/"), Some(&api.admin), serde_json::json!({"value": 3.0})).await;
        assert_eq!((code, answer["detail"].as_str()), (400, Some("Found a threshold for environment 'x86' with the exact same attributes")));
        api.call_json(reqwest::Method::DELETE, &format!("/api/metricthresholds/{}/", env_threshold["id"]), Some(&api.admin), serde_json::json!({})).await;
        let deleted = send(reqwest::Method::DELETE, format!("/api/metricthresholds/{id}/"), Some(api.admin.clone()), serde_json::json!({})).await.unwrap();
        assert_eq!(deleted.status().as_u16(), 204);
        assert_eq!(api.get_json(&format!("/api/metricthresholds/{id}/"), None).await.0, 404);
    }

    async fn build_status_after_each_submission(db: TestDb) {
        let api = Api::new(db).await;
        api.submit("p", "v1", "x86", r#"{"s/a": "pass", "s/b": "fail"}"#, "{}").await;
        api.submit("p", "v2", "x86", r#"{"s/a": "fail", "s/b": "pass", "s/c": "skip"}"#, "{}").await;
        let builds = api.ok("/api/builds/?version=v2").await;
        let id = builds["results"][0]["id"].as_i64().unwrap();
        assert_eq!(builds["results"][0]["finished"], true);
        let status = api.ok(&format!("/api/builds/{id}/status/")).await;
        assert_eq!(status["regressions"], r#"{"x86":["s/a"]}"#, "a JSON-encoded string, as SQUAD: {status}");
        assert_eq!(status["fixes"], r#"{"x86":["s/b"]}"#);
        assert!(status["baseline"].as_str().unwrap().ends_with(&format!("/api/builds/{}/", id - 1)), "{status}");
        assert_eq!(status["details"]["null"]["regressions"], serde_json::json!(["s/a"]));
        assert!((status["pass_percentage"].as_f64().unwrap() - 100.0 / 3.0).abs() < 1e-9);
        assert_eq!(status["skip_percentage"].as_f64(), status["fail_percentage"].as_f64());
        let (code, _) = api.get_json("/api/builds/9999/status/", None).await;
        assert_eq!(code, 404);
    }

    async fn pagination_both_envelopes(db: TestDb) {
        let api = Api::new(db).await;
        let tests: Vec<String> = (0..25).map(|i| format!("\"s/t{i:02}\": \"pass\"")).collect();
        let run = api.submit("p", "v1", "x86", &format!("{{{}}}", tests.join(",")), "{}").await;
        for v in 2..=12 {
            api.submit("p", &format!("v{v}"), "x86", r#"{"a": "pass"}"#, "{}").await;
        }
        // limit/offset: count, next, previous.
        let page = api.ok("/api/builds/?limit=5&offset=5").await;
        assert_eq!(page["count"], 12);
        assert_eq!(page["results"].as_array().unwrap().len(), 5);
        assert!(page["next"].as_str().unwrap().contains("offset=10"));
        assert!(page["previous"].as_str().unwrap().contains("limit=5"));
        let all = api.walk("/api/builds/?limit=5").await;
        assert_eq!(all.len(), 12);
        let versions: Vec<&str> = all.iter().map(|b| b["version"].as_str().unwrap()).collect();
        assert_eq!(versions[0], "v12", "newest first");
        let ordered = api.ok("/api/builds/?ordering=version&limit=2").await;
        assert_eq!(ordered["results"][0]["version"], "v1");
        let searched = api.ok("/api/builds/?search=v1").await;
        assert_eq!(searched["count"], 4, "v1, v10, v11, v12");

        // cursor: no count; walking next gives every test once, in order.
        let first = api.ok(&format!("/api/testruns/{run}/tests/?limit=10")).await;
        assert!(first.get("count").is_none());
        assert_eq!(first["previous"], Value::Null);
        let walked = api.walk(&format!("/api/testruns/{run}/tests/?limit=10")).await;
        let walked_ids = ids(&walked);
        assert_eq!(walked_ids.len(), 25);
        assert!(walked_ids.windows(2).all(|w| w[0] < w[1]));
        let newest_first = ids(&api.walk("/api/tests/?limit=7").await);
        assert_eq!(newest_first.len(), 25 + 11);
        assert!(newest_first.windows(2).all(|w| w[0] > w[1]), "/api/tests/ is newest first");
        // previous goes back to the page before.
        let second = api.http.get(first["next"].as_str().unwrap()).send().await.unwrap().json::<Value>().await.unwrap();
        let back = api.http.get(second["previous"].as_str().unwrap()).send().await.unwrap().json::<Value>().await.unwrap();
        assert_eq!(ids(back["results"].as_array().unwrap()), ids(first["results"].as_array().unwrap()));
        let (status, _) = api.get_json("/api/tests/?cursor=garbage", None).await;
        assert_eq!(status, 404);
    }

    async fn filters(db: TestDb) {
        let api = Api::new(db).await;
        let r1 = api.submit("p", "v1", "x86", r#"{"ltp/fork01": "pass", "ltp/clone01": "fail", "kselftest/net": "skip"}"#, r#"{"job_id": "a1"}"#).await;
        let r2 = api.submit("p", "v2", "arm", r#"{"ltp/fork01": "fail"}"#, r#"{"job_id": "b2"}"#).await;
        let count = |v: Value| v["results"].as_array().unwrap().len();
        assert_eq!(count(api.ok(&format!("/api/tests/?test_run={r1}")).await), 3);
        assert_eq!(count(api.ok("/api/tests/?result=false").await), 2);
        assert_eq!(count(api.ok("/api/tests/?result__isnull=true").await), 1);
        assert_eq!(count(api.ok("/api/tests/?name=FORK").await), 2, "name is icontains on the short name");
        assert_eq!(count(api.ok("/api/tests/?metadata__suite=ltp&environment__slug=arm").await), 1);
        assert_eq!(count(api.ok("/api/tests/?build__version=v1&suite__slug__startswith=kself").await), 1);
        assert_eq!(count(api.ok("/api/tests/?test_run__job_id__in=a1,b2").await), 4);
        assert_eq!(count(api.ok("/api/tests/?build__project__group__slug=g&result=true").await), 1);
        assert_eq!(count(api.ok(&format!("/api/testruns/?build={}&limit=5", r2 - 1)).await), 1);
        assert_eq!(api.ok("/api/builds/?project__full_name=g/p").await["count"], 2);
        assert_eq!(api.ok("/api/builds/?project__full_name=g/nope").await["count"], 0);
        assert_eq!(api.ok("/api/environments/?project__slug=p&slug__in=arm,x86").await["count"], 2);
        assert_eq!(count(api.ok("/api/statuses/?suite__isnull=false&tests_fail__gt=0").await), 2);
        assert_eq!(count(api.ok("/api/tests/?stray=1&unknown__lookup=2").await), 4, "unknown parameters are ignored");
        for (path, named) in [
            ("/api/tests/?test_run=abc", "test_run"),
            ("/api/tests/?result=maybe", "result"),
            ("/api/builds/?created_at__gt=yesterday", "created_at__gt"),
            ("/api/builds/?status__finished=true", "status__finished"),
            ("/api/projects/?filters=(slug%3Dp)", "filters"),
        ] {
            let (status, body) = api.get_json(path, None).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert!(body["detail"].as_str().unwrap().contains(named), "{path}: {body}");
        }
    }

    async fn visibility(db: TestDb) {
        let api = Api::new(db).await;
        api.submit("p", "v1", "x86", r#"{"public": "pass"}"#, "{}").await;
        let private_run = api.submit("private", "v1", "x86", r#"{"secret": "pass"}"#, "{}").await;
        // Anonymous callers see the public project only, on every list.
        for (path, expected) in [("/api/projects/", 1), ("/api/builds/", 1), ("/api/environments/", 1), ("/api/suites/", 1)] {
            assert_eq!(api.ok(path).await["count"], expected, "{path}");
        }
        assert_eq!(api.ok("/api/testruns/").await["results"].as_array().unwrap().len(), 1);
        assert_eq!(api.ok("/api/tests/").await["results"].as_array().unwrap().len(), 1);
        assert_eq!(api.ok("/api/statuses/").await["results"].as_array().unwrap().len(), 2);
        assert_eq!(api.ok("/api/suitemetadata/?kind=test").await["results"].as_array().unwrap().len(), 1);
        let (status, _) = api.get_json(&format!("/api/testruns/{private_run}/"), None).await;
        assert_eq!(status, 404);
        // A member of the group sees both; so does a superuser.
        for token in [&api.member, &api.admin] {
            let (_, body) = api.get_json("/api/tests/", Some(token)).await;
            assert_eq!(body["results"].as_array().unwrap().len(), 2);
            let (status, _) = api.get_json(&format!("/api/testruns/{private_run}/tests/"), Some(token)).await;
            assert_eq!(status, 200);
        }
        // A bad token is refused on REST endpoints, not made anonymous.
        let (status, body) = api.get_json("/api/projects/", Some("bad")).await;
        assert_eq!((status, body["detail"].as_str()), (403, Some("Invalid token.")));
    }

    async fn writes_as_squad_client_sends_them(db: TestDb) {
        let api = Api::new(db).await;
        let base = api.base.clone();
        // Groups: superusers only.
        let (status, _) = api.post_form("/api/groups/", Some(&api.submitter), &[("slug", "new")]).await;
        assert_eq!(status, 403);
        let (status, body) = api.post_form("/api/groups/", Some(&api.admin), &[("slug", "new"), ("name", "New")]).await;
        assert_eq!(status, 201, "{body}");
        let group: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(group["name"], "New");
        let (status, body) = api.post_form("/api/groups/", Some(&api.admin), &[("slug", "bad slug")]).await;
        assert_eq!(status, 400, "{body}");

        // Projects: form data with the group as a link and the plugins as a
        // repeated field, as squad-client's Project.save() sends them.
        let group_url = format!("{base}/api/groups/1/");
        let fields = [
            ("group", group_url.as_str()),
            ("slug", "created"),
            ("enabled_plugins_list", "linux-log-parser"),
            ("enabled_plugins_list", "tradefed"),
            ("is_public", "False"),
            ("project_settings", "CI_LAVA_HANDLE_SUITE: true\n"),
        ];
        let (status, _) = api.post_form("/api/projects/", Some(&api.member), &fields).await;
        assert_eq!(status, 403, "members may not create projects");
        api.db.store.set_member(1, 1, squadron_core::access::Role::Admin).await.unwrap();
        let (status, body) = api.post_form("/api/projects/", Some(&api.submitter), &fields).await;
        assert_eq!(status, 201, "{body}");
        let project: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(project["enabled_plugins_list"], serde_json::json!(["linux-log-parser", "tradefed"]));
        assert_eq!(project["is_public"], false);
        let id = project["id"].as_i64().unwrap();
        let resp = api.http.patch(api.url(&format!("/api/projects/{id}/"))).header("Authorization", format!("token {}", api.submitter))
            .form(&[("description", "changed"), ("wait_before_notification", "60")]).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let patched: Value = resp.json().await.unwrap();
        assert_eq!((patched["description"].as_str(), patched["wait_before_notification"].as_i64()), (Some("changed"), Some(60)));
        let (status, body) = api.post_form("/api/projects/", Some(&api.submitter), &[("group", group_url.as_str()), ("slug", "created")]).await;
        assert_eq!(status, 400, "duplicate slug: {body}");
        let (status, body) = api.post_form("/api/projects/", Some(&api.submitter), &[("group", group_url.as_str()), ("slug", "x"), ("project_settings", "- not a mapping")]).await;
        assert_eq!(status, 400);
        assert!(body.contains("project_settings"), "{body}");

        // Environments, created with the project as a link, then patched.
        let project_url = format!("{base}/api/projects/{id}/");
        let resp = api.http.post(api.url("/api/environments/")).header("Authorization", format!("Token {}", api.submitter))
            .json(&serde_json::json!({"project": project_url, "slug": "qemu-arm64", "expected_test_runs": 2})).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 201);
        let env: Value = resp.json().await.unwrap();
        assert_eq!(env["expected_test_runs"], 2);
        let resp = api.http.put(api.url(&format!("/api/environments/{}/", env["id"]))).header("Authorization", format!("Token {}", api.submitter))
            .json(&serde_json::json!({"name": "QEMU arm64"})).send().await.unwrap();
        assert_eq!(resp.json::<Value>().await.unwrap()["name"], "QEMU arm64");

        // Builds: release marking.
        api.submit("p", "v1", "x86", r#"{"a": "pass"}"#, "{}").await;
        let resp = api.http.patch(api.url("/api/builds/1/")).header("Authorization", format!("Token {}", api.submitter))
            .json(&serde_json::json!({"is_release": true, "release_label": "LTS"})).send().await.unwrap();
        let build: Value = resp.json().await.unwrap();
        assert_eq!((build["is_release"].as_bool(), build["release_label"].as_str()), (Some(true), Some("LTS")));
        assert_eq!(api.ok("/api/builds/?is_release=true").await["count"], 1);
    }
}
