//! The CI endpoints: native `submitjob`, `watchjob`, `resubmit`,
//! `forceresubmit`, `cancel`; REST `/api/testjobs/`, `/api/backends/` and
//! the build's `testjobs/` and `cancel/`, on both engines.

mod common;

use common::Api;
use reqwest::Method;
use serde_json::{json, Value};
use squadron_core::access::Role;
use squadron_store::both_engines;
#[allow(unused_imports)]
use squadron_store::testing::TestDb;

/// A definition the fake lab accepts.
const DEFINITION: &str = "tests: 5\nfailures: 1\n";

impl Api {
    /// A token of a user with the privileged role in group `g`.
    async fn privileged(&self) -> String {
        let s = &self.db.store;
        let group = s.group_by_slug("g").await.unwrap().unwrap();
        let user = s.create_user("ci-bot", "", false).await.unwrap();
        s.set_member(group.id, user.id, Role::Privileged).await.unwrap();
        s.token_for(user.id, false).await.unwrap()
    }

    /// Creates a `fake` backend named `name` through the API.
    async fn fake_backend(&self, name: &str) -> Value {
        let body = json!({"name": name, "url": "https://lab.example.com/", "implementation_type": "fake"});
        let (status, created) = self.call_json(Method::POST, "/api/backends/", Some(&self.admin), body).await;
        assert_eq!(status, 201, "{created}");
        created
    }

    /// Submits `definition` to the fake backend as `token`; returns the job id.
    async fn submit_job(&self, token: &str, project: &str, build: &str, env: &str) -> i64 {
        let path = format!("/api/submitjob/g/{project}/{build}/{env}");
        let (status, body) =
            self.post_form(&path, Some(token), &[("backend", "fake"), ("definition", DEFINITION)]).await;
        assert_eq!(status, 201, "{body}");
        body.parse().unwrap()
    }

    async fn tasks(&self, kind: &str) -> i64 {
        self.db.scalar(&format!("SELECT COUNT(*) FROM tasks WHERE kind = '{kind}' AND state = 'available'")).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call(Method::GET, path, token).await
    }

    async fn post(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call(Method::POST, path, token).await
    }

    /// Makes job `id` look like one the lab ran and that ended `status`.
    async fn ended(&self, id: i64, status: &str, can_resubmit: bool) {
        self.db
            .execute(&format!(
                "UPDATE testjobs SET submitted = TRUE, fetched = TRUE, job_id = '1700000000000-{id}', \
                 job_status = '{status}', can_resubmit = {can_resubmit} WHERE id = {id}"
            ))
            .await;
    }
}

both_engines! {
    async fn submitjob_creates_the_job_and_its_submission_or_nothing(db: TestDb) {
        let api = Api::new(db).await;
        let privileged = api.privileged().await;
        let t = Some(privileged.as_str());
        api.fake_backend("fake").await;
        let project = api.db.scalar("SELECT id FROM projects WHERE slug = 'p'").await;
        api.db.store.create_environment(project, &vec![("slug", Some("off".into())), ("expected_test_runs", Some((-1i64).into()))]).await.unwrap();

        let before = api.db.table_counts().await;
        let good = [("backend", "fake"), ("definition", DEFINITION)];
        for (path, token, fields, status, expected) in [
            ("/api/submitjob/g/p/v1/x86", None, &good[..], 403, "submit test jobs"),
            ("/api/submitjob/g/p/v1/x86", Some(api.submitter.as_str()), &good[..], 403, "submit test jobs"),
            ("/api/submitjob/g/p/v1/x86", Some(api.member.as_str()), &good[..], 403, "submit test jobs"),
            ("/api/submitjob/g/private/v1/x86", None, &good[..], 401, "private"),
            ("/api/submitjob/nope/p/v1/x86", t, &good[..], 404, "nope"),
            ("/api/submitjob/g/nope/v1/x86", t, &good[..], 404, "nope"),
            ("/api/submitjob/g/p/-v1/x86", t, &good[..], 400, "build version"),
            ("/api/submitjob/g/p/v1/x86", t, &[("definition", DEFINITION)][..], 400, "backend field is required"),
            ("/api/submitjob/g/p/v1/x86", t, &[("backend", "lava9"), ("definition", DEFINITION)][..], 400, "requested backend does not exist"),
            ("/api/submitjob/g/p/v1/off", t, &good[..], 400, "environment 'off' is disabled"),
            ("/api/submitjob/g/p/v1/x86", t, &[("backend", "fake")][..], 400, "test job definition is required"),
            ("/api/submitjob/g/p/v1/x86", t, &[("backend", "fake"), ("definition", "tests: many")][..], 400, "test job definition is not valid: "),
        ] {
            let (got, body) = api.post_form(path, token, fields).await;
            assert_eq!(got, status, "{path} {fields:?}: {body}");
            assert!(Api::detail(&body).contains(expected), "{path} {fields:?}: {body}");
        }
        assert_eq!(api.db.table_counts().await, before, "refused requests leave no rows, and no task");

        // The definition as a file upload, with the legacy header.
        let form = reqwest::multipart::Form::new()
            .text("backend", "fake")
            .part("definition", reqwest::multipart::Part::bytes(DEFINITION.as_bytes().to_vec()).file_name("job.yaml"));
        let resp = api.http.post(api.url("/api/submitjob/g/p/v1/x86/")).header("Auth-Token", &privileged).multipart(form).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 201);
        let id: i64 = resp.text().await.unwrap().parse().unwrap();
        assert_eq!(api.db.text(&format!("SELECT definition FROM testjobs WHERE id = {id}")).await, DEFINITION);
        assert_eq!(api.db.scalar(&format!("SELECT COUNT(*) FROM testjobs j JOIN builds b ON b.id = j.target_build_id \
            WHERE j.id = {id} AND b.version = 'v1' AND j.environment = 'x86' AND NOT j.submitted AND j.job_id IS NULL")).await, 1);
        assert_eq!(api.db.scalar("SELECT COUNT(*) FROM environments WHERE slug = 'x86'").await, 1);
        assert_eq!(api.db.scalar("SELECT COUNT(*) FROM tasks").await, 1, "the submission only");
        assert_eq!(api.tasks("ci_submit").await, 1);
        assert!(api.db.text("SELECT args FROM tasks").await.contains(&id.to_string()));

        // A superuser may, too; the existing build is reused.
        let second = api.submit_job(&api.admin, "p", "v1", "x86").await;
        assert_ne!(second, id);
        assert_eq!(api.db.scalar("SELECT COUNT(*) FROM builds").await, 1);
        assert_eq!(api.tasks("ci_submit").await, 2);
    }

    async fn watchjob_follows_a_lab_job_and_fetches_it_unless_delayed(db: TestDb) {
        let api = Api::new(db).await;
        let privileged = api.privileged().await;
        let t = Some(privileged.as_str());
        api.fake_backend("fake").await;
        let before = api.db.table_counts().await;
        for (token, fields, status, expected) in [
            (Some(api.submitter.as_str()), &[("backend", "fake"), ("testjob_id", "1-a")][..], 403, "submit test jobs"),
            (t, &[("testjob_id", "1-a")][..], 400, "backend field is required"),
            (t, &[("backend", "nope"), ("testjob_id", "1-a")][..], 400, "requested backend does not exist"),
            (t, &[("backend", "fake")][..], 400, "testjob_id is required"),
        ] {
            let (got, body) = api.post_form("/api/watchjob/g/p/v1/x86", token, fields).await;
            assert_eq!(got, status, "{fields:?}: {body}");
            assert!(Api::detail(&body).contains(expected), "{fields:?}: {body}");
        }
        assert_eq!(api.db.table_counts().await, before);

        let (status, body) = api.post_form("/api/watchjob/g/p/v1/x86", t, &[("backend", "fake"), ("testjob_id", "1700000000000-abc")]).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(api.db.scalar(&format!("SELECT COUNT(*) FROM testjobs WHERE id = {body} AND submitted \
            AND NOT fetched AND job_id = '1700000000000-abc' AND submitted_at IS NOT NULL AND definition IS NULL")).await, 1);
        assert_eq!(api.tasks("ci_fetch").await, 1);

        let (status, body) = api.post_form("/api/watchjob/g/p/v1/x86?delay_fetch", t, &[("backend", "fake"), ("testjob_id", "1700000000000-def")]).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(api.tasks("ci_fetch").await, 1, "delay_fetch: the poll or a callback fetches it");
    }

    async fn native_resubmit_and_cancel(db: TestDb) {
        let api = Api::new(db).await;
        let privileged = api.privileged().await;
        let t = Some(privileged.as_str());
        api.fake_backend("fake").await;

        // Cancelled before it reached the lab: at once.
        let id = api.submit_job(&privileged, "p", "v1", "x86").await;
        assert_eq!(api.post_form(&format!("/api/cancel/{id}"), Some(&api.submitter), &[]).await.0, 401);
        assert_eq!(api.post_form(&format!("/api/cancel/{id}"), t, &[]).await.0, 200);
        assert_eq!(api.db.scalar(&format!("SELECT COUNT(*) FROM testjobs WHERE id = {id} AND submitted AND fetched \
            AND job_status = 'Canceled' AND failure = 'Canceled before submission'")).await, 1);
        assert_eq!(api.post_form(&format!("/api/cancel/{id}"), t, &[]).await.0, 403, "over already");
        assert_eq!(api.post_form("/api/cancel/999999", t, &[]).await.0, 404);

        // Resubmission: only when allowed, unless forced.
        let id = api.submit_job(&privileged, "p", "v1", "x86").await;
        api.ended(id, "Incomplete", true).await;
        assert_eq!(api.post_form(&format!("/api/resubmit/{id}"), None, &[]).await.0, 401);
        assert_eq!(api.post_form(&format!("/api/resubmit/{id}"), Some(&api.member), &[]).await.0, 401);
        assert_eq!(api.post_form("/api/resubmit/999999", t, &[]).await.0, 404);
        let (status, body) = api.post_form(&format!("/api/resubmit/{id}"), t, &[]).await;
        assert_eq!(status, 201, "{body}");
        let child = format!("SELECT COUNT(*) FROM testjobs WHERE parent_job_id = {id} AND resubmitted_count = 1 AND NOT submitted");
        assert_eq!(api.db.scalar(&child).await, 1);
        assert_eq!(api.post_form(&format!("/api/resubmit/{id}/"), t, &[]).await.0, 403, "once");
        assert_eq!(api.post_form(&format!("/api/forceresubmit/{id}"), t, &[]).await.0, 201);
        assert_eq!(api.db.scalar(&child).await, 2, "forced");

        // Two resubmissions at the same moment make one job.
        let other = api.submit_job(&privileged, "p", "v1", "x86").await;
        api.ended(other, "Incomplete", true).await;
        let path = format!("/api/resubmit/{other}");
        let (a, b) = tokio::join!(api.post_form(&path, t, &[]), api.post_form(&path, t, &[]));
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(statuses, [201, 403]);
        assert_eq!(api.db.scalar(&format!("SELECT COUNT(*) FROM testjobs WHERE parent_job_id = {other}")).await, 1);
    }

    async fn testjobs_list_filters_and_visibility(db: TestDb) {
        let api = Api::new(db).await;
        let privileged = api.privileged().await;
        let backend = api.fake_backend("fake").await;
        let first = api.submit_job(&privileged, "p", "v1", "x86").await;
        let second = api.submit_job(&privileged, "p", "v1", "arm64").await;
        api.ended(second, "Complete", false).await;
        let hidden = api.submit_job(&privileged, "private", "v1", "x86").await;
        let build = api.db.scalar(&format!("SELECT target_build_id FROM testjobs WHERE id = {first}")).await;

        let (status, page) = api.get("/api/testjobs/", None).await;
        assert_eq!(status, 200, "{page}");
        assert!(page.get("count").is_none(), "cursor pagination");
        let jobs = page["results"].as_array().unwrap();
        assert_eq!(jobs.iter().map(|j| j["id"].as_i64().unwrap()).collect::<Vec<_>>(), vec![first, second]);
        let job = &jobs[1];
        let base = &api.base;
        assert_eq!(job["url"], format!("{base}/api/testjobs/{second}/"));
        assert_eq!(job["external_url"], format!("https://fake.example.com/job/1700000000000-{second}"));
        assert_eq!(jobs[0]["external_url"], Value::Null, "not in the lab yet");
        assert_eq!(job["definition"], format!("{base}/api/testjobs/{second}/definition/"));
        assert_eq!(job["backend"], format!("{base}/api/backends/{}/", backend["id"]));
        assert_eq!(job["target_build"], format!("{base}/api/builds/{build}/"));
        assert_eq!(job["target"].as_str().unwrap(), format!("{base}/api/projects/{}/", api.db.scalar("SELECT id FROM projects WHERE slug = 'p'").await));
        assert_eq!((job["testrun"].clone(), job["parent_job"].clone()), (Value::Null, Value::Null));
        assert_eq!((job["job_status"].as_str(), job["submitted"].as_bool(), job["subtasks_count"].as_i64()), (Some("Complete"), Some(true), Some(0)));
        let mut keys: Vec<&str> = job.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["backend", "can_resubmit", "created_at", "definition", "ended_at", "environment", "external_url",
            "failure", "fetch_attempts", "fetched", "fetched_at", "id", "job_id", "job_status", "last_fetch_attempt", "name",
            "parent_job", "resubmitted_count", "started_at", "submitted", "submitted_at", "subtasks_count", "target",
            "target_build", "testrun", "url"]);

        let ids = |page: &Value| page["results"].as_array().unwrap().iter().map(|j| j["id"].as_i64().unwrap()).collect::<Vec<_>>();
        for (query, expected) in [
            ("environment=arm64", vec![second]),
            ("environment__in=arm64,x86", vec![first, second]),
            ("submitted=false", vec![first]),
            ("job_status=Complete", vec![second]),
            ("job_id__startswith=1700000000000", vec![second]),
            ("backend__name=fake", vec![first, second]),
            ("backend__name=other", vec![]),
            (&format!("target_build={build}"), vec![first, second]),
            ("target__slug=p", vec![first, second]),
            ("target_build__version=v2", vec![]),
            (&format!("id__in={first},{hidden}"), vec![first]),
            ("ordering=-id", vec![second, first]),
            ("limit=1", vec![first]),
        ] {
            let (status, page) = api.get(&format!("/api/testjobs/?{query}"), None).await;
            assert_eq!(status, 200, "{query}: {page}");
            assert_eq!(ids(&page), expected, "{query}");
        }
        for query in ["submitted=maybe", "ordering=name", "created_at__gt=yesterday"] {
            assert_eq!(api.get(&format!("/api/testjobs/?{query}"), None).await.0, 400, "{query}");
        }
        let (_, page) = api.get("/api/testjobs/?limit=1", None).await;
        let (_, next) = api.get(page["next"].as_str().unwrap().strip_prefix(base.as_str()).unwrap(), None).await;
        assert_eq!(ids(&next), vec![second], "next page");

        // Private projects' jobs: only for their group.
        assert_eq!(api.get(&format!("/api/testjobs/{hidden}/"), None).await.0, 404);
        assert_eq!(api.get(&format!("/api/testjobs/{hidden}/definition/"), None).await.0, 404);
        let (status, page) = api.get("/api/testjobs/", Some(&api.member)).await;
        assert_eq!(status, 200);
        assert_eq!(ids(&page), vec![first, second, hidden]);

        // The build's jobs: limit/offset, newest first.
        let (status, page) = api.get(&format!("/api/builds/{build}/testjobs/"), None).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!((page["count"].as_i64(), ids(&page)), (Some(2), vec![second, first]));
        let (_, page) = api.get(&format!("/api/builds/{build}/testjobs/?environment=x86"), None).await;
        assert_eq!(ids(&page), vec![first]);
        assert_eq!(api.get("/api/builds/999999/testjobs/", None).await.0, 404);

        // The definition, its secrets masked (as LAVA definitions have them).
        api.db.execute(&format!("UPDATE testjobs SET definition = 'tests: 5\nsecrets:\n  LAB_TOKEN: s3cret\n' WHERE id = {first}")).await;
        let (status, content_type, text) = api.get_text(&format!("/api/testjobs/{first}/definition/")).await;
        assert_eq!((status, content_type.as_str()), (200, "text/plain"));
        assert!(!text.contains("s3cret") && text.contains("LAB_TOKEN") && text.contains("tests: 5"), "{text}");
        let (status, detail) = api.get(&format!("/api/testjobs/{first}/"), None).await;
        assert_eq!((status, detail["environment"].as_str()), (200, Some("x86")));
    }

    async fn testjob_actions(db: TestDb) {
        let api = Api::new(db).await;
        let privileged = api.privileged().await;
        let t = Some(privileged.as_str());
        api.fake_backend("fake").await;
        let id = api.submit_job(&privileged, "p", "v1", "x86").await;
        let base = api.base.clone();

        assert_eq!(api.post(&format!("/api/testjobs/{id}/resubmit/"), None).await.0, 401);
        assert_eq!(api.post(&format!("/api/testjobs/{id}/resubmit/"), Some(&api.submitter)).await.0, 403);
        assert_eq!(api.post("/api/testjobs/999999/resubmit/", t).await.0, 404);

        api.ended(id, "Complete", false).await;
        let (status, body) = api.post(&format!("/api/testjobs/{id}/resubmit/"), t).await;
        assert_eq!((status, body), (200, json!({"message": "Error resubmitting job.", "url": format!("{base}/api/testjobs/{id}/")})));
        let (status, body) = api.post(&format!("/api/testjobs/{id}/force_resubmit/"), t).await;
        assert_eq!((status, body["message"].as_str()), (200, Some("OK")));
        let child = api.db.scalar(&format!("SELECT id FROM testjobs WHERE parent_job_id = {id}")).await;
        assert_eq!(body["url"], format!("{base}/api/testjobs/{child}/"));
        let (status, page) = api.get(&format!("/api/testjobs/{id}/resubmitted_jobs/"), None).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["results"][0]["id"], child);
        assert_eq!(page["results"][0]["parent_job"], format!("{base}/api/testjobs/{id}/"));
        assert_eq!(page["results"][0]["resubmitted_count"], 1);

        // cancel/: the child is not in the lab yet, so at once.
        let (status, body) = api.post(&format!("/api/testjobs/{child}/cancel/"), t).await;
        assert_eq!((status, body), (200, json!({"job_id": null, "status": "Canceled"})));

        // fetch/: a job whose fetches were given up is fetched again.
        let stuck = api.submit_job(&privileged, "p", "v1", "x86").await;
        assert_eq!(api.post(&format!("/api/testjobs/{stuck}/fetch/"), t).await.0, 400, "not in the lab yet");
        api.ended(stuck, "Incomplete", true).await;
        api.db.execute(&format!("UPDATE testjobs SET fetch_attempts = 3, failure = 'lab down' WHERE id = {stuck}")).await;
        let fetches = api.tasks("ci_fetch").await;
        let (status, body) = api.post(&format!("/api/testjobs/{stuck}/fetch/"), t).await;
        assert_eq!((status, body), (200, json!({"job_id": format!("1700000000000-{stuck}"), "status": "Queued for fetching"})));
        assert_eq!(api.db.scalar(&format!("SELECT COUNT(*) FROM testjobs WHERE id = {stuck} AND NOT fetched AND fetch_attempts = 0")).await, 1);
        assert_eq!(api.tasks("ci_fetch").await, fetches + 1);
        api.db.execute(&format!("UPDATE testjobs SET job_status = 'Fetching', fetched = TRUE WHERE id = {stuck}")).await;
        assert_eq!(api.post(&format!("/api/testjobs/{stuck}/fetch/"), t).await.0, 400, "being post-processed");

        // The build's cancel/: every job not over.
        let build = api.db.scalar(&format!("SELECT target_build_id FROM testjobs WHERE id = {id}")).await;
        let waiting = api.submit_job(&privileged, "p", "v1", "x86").await;
        assert_eq!(api.post(&format!("/api/builds/{build}/cancel/"), Some(&api.member)).await.0, 403);
        let (status, body) = api.post(&format!("/api/builds/{build}/cancel/"), t).await;
        assert_eq!((status, body), (200, json!({"status": "canceling 1 jobs", "count": 1})));
        assert_eq!(api.db.text(&format!("SELECT job_status FROM testjobs WHERE id = {waiting}")).await, "Canceled");
        assert_eq!(api.post("/api/builds/999999/cancel/", t).await.0, 404);

        // Not through REST.
        assert_eq!(api.call_json(Method::POST, "/api/testjobs/", t, json!({})).await.0, 501);
    }

    async fn backends_crud(db: TestDb) {
        let api = Api::new(db).await;
        let admin = Some(api.admin.as_str());
        let body = json!({"name": "lab", "url": "https://lava.example.com/RPC2/", "implementation_type": "lava",
            "username": "bot", "token": "t0ken", "poll_interval": 5, "backend_settings": "timeout: 3\n",
            "listen_enabled": false});
        let (status, created) = api.call_json(Method::POST, "/api/backends/", admin, body.clone()).await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_i64().unwrap();
        assert_eq!(created, json!({"url": "https://lava.example.com/RPC2/", "id": id, "name": "lab", "username": "bot",
            "implementation_type": "lava", "backend_settings": "timeout: 3\n", "poll_interval": 5,
            "max_fetch_attempts": 3, "poll_enabled": true, "listen_enabled": false}));
        assert_eq!(api.db.text("SELECT token FROM backends").await, "t0ken", "write-only, but stored");
        assert_eq!(api.db.scalar("SELECT poll_interval FROM backends").await, 300, "seconds in the database");

        let before = api.db.table_counts().await;
        for (token, body, status, expected) in [
            (None, body.clone(), 401, "credentials"),
            (Some(api.submitter.as_str()), body.clone(), 403, "permission"),
            (admin, body.clone(), 400, "name"),
            (admin, json!({"name": "x", "url": "https://x/", "implementation_type": "null"}), 400, "implementation_type"),
            (admin, json!({"name": "x", "url": "lab", "implementation_type": "fake"}), 400, "url"),
            (admin, json!({"url": "https://x/", "implementation_type": "fake"}), 400, "name"),
            (admin, json!({"name": "x", "url": "https://x/", "implementation_type": "fake", "backend_settings": "- a\n"}), 400, "backend_settings"),
            (admin, json!({"name": "x", "url": "https://x/", "implementation_type": "fake", "poll_interval": 0}), 400, "poll_interval"),
            (admin, json!({"name": "x", "url": "https://x/", "implementation_type": "fake", "max_fetch_attempts": "many"}), 400, "max_fetch_attempts"),
        ] {
            let (got, answer) = api.call_json(Method::POST, "/api/backends/", token, body.clone()).await;
            assert_eq!(got, status, "{body}: {answer}");
            assert!(answer["detail"].as_str().unwrap().contains(expected), "{body}: {answer}");
        }
        assert_eq!(api.db.table_counts().await, before);

        let path = format!("/api/backends/{id}/");
        let (status, changed) = api.call_json(Method::PATCH, &path, admin, json!({"poll_interval": 2, "name": "lava"})).await;
        assert_eq!(status, 200, "{changed}");
        assert_eq!((changed["poll_interval"].as_i64(), changed["name"].as_str()), (Some(2), Some("lava")));
        assert_eq!(api.db.text("SELECT token FROM backends").await, "t0ken", "kept when not given");
        api.db.execute("UPDATE backends SET poll_interval = 90").await;
        assert_eq!(api.get(&path, None).await.1["poll_interval"], 1.5);
        assert_eq!(api.call_json(Method::PATCH, &path, Some(&api.member), json!({"name": "x"})).await.0, 403);

        let fake = api.fake_backend("fake").await;
        let (status, page) = api.get("/api/backends/?implementation_type=fake", None).await;
        assert_eq!((status, page["count"].as_i64()), (200, Some(1)));
        assert_eq!(page["results"][0]["name"], "fake");
        assert_eq!(api.get("/api/backends/?name__startswith=la", None).await.1["count"], 1);
        assert_eq!(api.get("/api/backends/?ordering=-name", None).await.1["results"][0]["name"], "lava");
        assert_eq!(api.get("/api/backends/999999/", None).await.0, 404);

        // A backend with jobs stays; one without goes.
        let privileged = api.privileged().await;
        api.submit_job(&privileged, "p", "v1", "x86").await;
        let (status, answer) = api.call(Method::DELETE, &format!("/api/backends/{}/", fake["id"]), admin).await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer["detail"].as_str().unwrap().contains("test jobs"));
        assert_eq!(api.call(Method::DELETE, &path, Some(&api.submitter)).await.0, 403);
        assert_eq!(api.call(Method::DELETE, &path, admin).await.0, 204);
        assert_eq!(api.get(&path, None).await.0, 404);
    }
}
