//! Delayed reports on both engines: asked for through the API, made once
//! per set of parameters, rendered by a worker (default, custom and broken
//! templates), emailed through a real SMTP server on loopback, POSTed to a
//! local callback server, listed to who may see their builds, and removed
//! after their retention days.

mod common;
#[path = "../../squadron-status/tests/common/smtp.rs"]
mod smtp;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Form, Router};
use common::Api;
use reqwest::Method;
use serde_json::{json, Value};
use smtp::SmtpSink;
use squadron_queue::{NewTask, Queue, Registry, StepTx};
use squadron_status::notify::{
    MailSettings, Mailer, Notifying, PrepareReport, RemoveDelayedReports, SendReportCallback, SendReportEmail, Site,
};
use squadron_status::Delivering;
use squadron_store::both_engines;
#[allow(unused_imports)]
use squadron_store::testing::TestDb;

/// Runs the report tasks (email to `smtp_port`) until `condition` (a
/// count) is at least 1.
async fn run_until(db: &TestDb, smtp_port: u16, condition: &str) {
    let mut registry = Registry::new();
    let settings = MailSettings {
        smtp_host: "127.0.0.1".into(),
        smtp_port,
        from: "noreply@squad.example.com".into(),
        site: Site { name: "Test SQUAD".into(), base_url: "https://squad.example.com".into() },
    };
    let mailer = Mailer::new(settings).unwrap();
    let notifying = Arc::new(Notifying { store: db.store.clone(), queue: Queue::default(), mailer });
    registry.register::<PrepareReport>(notifying.clone());
    registry.register::<SendReportEmail>(notifying);
    registry.register::<SendReportCallback>(Arc::new(Delivering::new(db.store.clone())));
    registry.register::<RemoveDelayedReports>(Arc::new(db.store.clone()));
    db.run_tasks_until(registry, &["core_reporting", "core_notification", "core_quick"], condition).await;
}

/// The id at the end of a report's URL.
fn report_id(answer: &Value) -> i64 {
    let url = answer["url"].as_str().unwrap_or_else(|| panic!("a url in {answer}"));
    url.trim_end_matches('/').rsplit('/').next().unwrap().parse().unwrap()
}

/// What the callback server received: headers and form fields of each
/// request.
type Received = Arc<Mutex<Vec<(HeaderMap, HashMap<String, String>)>>>;

/// A callback receiver on loopback that fails its first request (503) and
/// accepts the others; returns its URL and what it received.
async fn callback_server() -> (String, Received) {
    async fn receive(
        State(received): State<Received>,
        headers: HeaderMap,
        Form(fields): Form<HashMap<String, String>>,
    ) -> StatusCode {
        let mut received = received.lock().unwrap();
        received.push((headers, fields));
        if received.len() == 1 {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    }
    let received: Received = Arc::default();
    let app = Router::new().route("/hook", post(receive)).with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

both_engines! {

async fn reports_are_made_once_per_parameters_and_rendered_by_a_worker(db: TestDb) {
    let api = Api::new(db).await;
    api.submit_tests("p", "v1", r#"{"s/a": "pass", "s/b": "pass"}"#).await;
    let v2 = api.submit_tests("p", "v2", r#"{"s/a": "fail", "s/b": "pass"}"#).await;
    let path = format!("/api/builds/{v2}/report/");

    let (code, first) = api.call_json(Method::POST, &path, None, json!({})).await;
    assert_eq!(code, 202, "anyone who may see the build: {first}");
    assert_eq!(first["message"], "OK");
    let id = report_id(&first);
    assert_eq!(first["url"], api.url(&format!("/api/reports/{id}/")));
    let (code, again) = api.call(Method::GET, &path, None).await;
    assert_eq!((code, report_id(&again)), (202, id), "the same parameters find the same report");
    let forced = report_id(&api.call(Method::GET, &format!("{path}?force=true"), None).await.1);
    assert_ne!(forced, id, "force makes a new one");
    let html = report_id(&api.call(Method::GET, &format!("{path}?output=text/html&keep=30"), None).await.1);
    assert_ne!(html, id);
    assert_eq!(api.db.scalar("SELECT COUNT(*) FROM delayed_reports").await, 3);
    assert_eq!(api.db.scalar("SELECT COUNT(*) FROM tasks WHERE kind = 'prepare_report'").await, 3, "one task per report made");

    api.db.execute("INSERT INTO email_templates (name, subject, plain_text) VALUES ('short', '{{ project }} report', \
        '{% for env, tests in regressions|items %}{{ env }}: {{ tests|join(\",\") }}{% endfor %}')").await;
    api.db.execute("INSERT INTO email_templates (name, plain_text) VALUES ('broken', 'line one\n{% for x in y %}')").await;
    let short = api.db.scalar("SELECT id FROM email_templates WHERE name = 'short'").await;
    let broken = api.db.scalar("SELECT id FROM email_templates WHERE name = 'broken'").await;
    let custom = report_id(&api.call_json(Method::POST, &path, None, json!({"template": short.to_string()})).await.1);
    let failing = report_id(&api.call(Method::GET, &format!("{path}?template={broken}"), None).await.1);

    run_until(&api.db, 0, "SELECT COUNT(*) FROM (SELECT 1 AS one) o WHERE NOT EXISTS (SELECT 1 FROM delayed_reports WHERE status_code IS NULL)").await;
    let report = |id: i64| {
        let api = &api;
        async move { api.call(Method::GET, &format!("/api/reports/{id}/"), None).await.1 }
    };
    let plain = report(id).await;
    assert_eq!(plain["status_code"], 200, "{plain}");
    assert_eq!(plain["output_subject"], "g/p: 2 tests, 1 failed, 1 passed, 0 skipped (build v2)");
    assert!(plain["output_text"].as_str().unwrap().contains("s/a"), "{plain}");
    assert!(plain["error_message"].is_null() && plain["template"].is_null() && plain["baseline"].is_null());
    assert_eq!(plain["build"], api.url(&format!("/api/builds/{v2}/")));
    assert_eq!(plain["data_retention_days"], 1, "kept a day unless asked");
    let html = report(html).await;
    assert!(html["output_html"].as_str().unwrap().starts_with("<html>"), "{html}");
    assert_eq!(html["data_retention_days"], 30);
    let custom = report(custom).await;
    assert_eq!((custom["output_subject"].as_str(), custom["output_text"].as_str()), (Some("g/p report"), Some("x86: s/a")), "{custom}");
    assert_eq!(custom["template"], api.url(&format!("/api/emailtemplates/{short}/")));
    let failing = report(failing).await;
    assert_eq!(failing["status_code"], 400, "{failing}");
    let error: Value = serde_json::from_str(failing["error_message"].as_str().unwrap()).unwrap();
    assert!(error["message"].as_str().unwrap().contains("plain_text (line 2)"), "names the part and line: {error}");
    assert_eq!(error["txt"], "line one\n{% for x in y %}");

    let (code, _, body) = api.get_text(&format!("/api/builds/{v2}/email/?template={short}")).await;
    assert_eq!((code, body.as_str()), (200, "x86: s/a"), "the email is the cached report");
    let (code, answer) = api.call(Method::GET, &format!("/api/builds/{v2}/email/?template={broken}&keep=2"), None).await;
    assert_eq!(code, 400, "rendered at once, answered with its error");
    assert!(answer["message"].as_str().unwrap().contains("plain_text (line 2)"), "{answer}");
    let no_status = api.db.scalar("SELECT id FROM builds WHERE version = 'v1'").await;
    api.db.execute(&format!("DELETE FROM build_status WHERE build_id = {no_status}")).await;
    let (code, answer) = api.call(Method::GET, &format!("/api/builds/{no_status}/email/"), None).await;
    assert_eq!((code, answer), (404, json!({"message": format!("Requested build status {no_status} doesn't exist")})));
}

async fn bad_parameters_are_refused(db: TestDb) {
    let api = Api::new(db).await;
    let build = api.submit_tests("p", "v1", r#"{"s/a": "pass"}"#).await;
    let private = api.submit_tests("private", "v1", r#"{"s/a": "pass"}"#).await;
    let path = format!("/api/builds/{build}/report/");
    let invisible_baseline = format!("baseline={private}");
    for (query, names) in [
        ("template=abc", "template"),
        ("template=9999", "template"),
        ("baseline=xyz", "baseline"),
        ("baseline=9999", "baseline"),
        (invisible_baseline.as_str(), "baseline"),
        ("keep=31", "keep"),
        ("keep=-1", "keep"),
        ("output=pdf", "output"),
        ("email_recipient=nobody", "email_recipient"),
        ("callback=ftp://example.com/", "callback"),
    ] {
        for endpoint in ["report", "email"] {
            // Deliveries need a caller; the private baseline needs one who cannot see it.
            let delivers = query.starts_with("email_recipient") || query.starts_with("callback");
            let token = delivers.then_some(api.member.as_str());
            let (code, answer) = api.call(Method::GET, &format!("/api/builds/{build}/{endpoint}/?{query}"), token).await;
            assert_eq!(code, 400, "{endpoint}?{query}: {answer}");
            assert!(answer["detail"].as_str().unwrap().starts_with(names), "{endpoint}?{query}: {answer}");
        }
    }
    let (code, answer) = api.call_json(Method::POST, &path, None, json!({"keep": 31})).await;
    assert_eq!(code, 400, "{answer}");
    assert_eq!(api.call(Method::GET, &format!("{path}?keep=30"), None).await.0, 202);
    assert_eq!(api.db.scalar("SELECT COUNT(*) FROM delayed_reports").await, 1, "nothing made for bad input");
    assert_eq!(api.call(Method::GET, &format!("/api/builds/{private}/report/"), None).await.0, 404, "a build the caller cannot see");
    assert_eq!(api.call_json(Method::POST, &format!("/api/builds/{private}/report/"), Some(&api.member), json!({})).await.0, 202, "a member can");
}

async fn reports_are_emailed_and_posted_at_least_once(db: TestDb) {
    let sink = SmtpSink::start();
    let (hook, received) = callback_server().await;
    let api = Api::new(db).await;
    let build = api.submit_tests("p", "v1", r#"{"s/a": "fail", "s/b": "pass"}"#).await;
    let fields = json!({"email_recipient": "dev@example.com", "callback": hook, "callback_token": "s3cret", "output": "text/html"});
    let path = format!("/api/builds/{build}/report/");
    let (code, answer) = api.call_json(Method::POST, &path, None, fields.clone()).await;
    assert_eq!(code, 401, "anonymous callers may not have reports sent anywhere: {answer}");
    let (code, answer) = api.call_json(Method::POST, &path, Some(&api.member), fields).await;
    assert_eq!(code, 202, "{answer}");
    let id = report_id(&answer);

    run_until(&api.db, sink.port, "SELECT COUNT(*) FROM delayed_reports WHERE email_recipient_notified AND callback_notified").await;
    let messages = sink.wait_for(1).await;
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message["rcpt_tos"], json!(["dev@example.com"]));
    assert_eq!(message["headers"]["Subject"], format!("Custom report {id}"));
    assert_eq!(message["headers"]["Message-ID"], format!("<squadron.build-{build}.report.{id}.email@squad.example.com>"));
    assert!(message["text"].as_str().unwrap().contains("s/a"), "{message}");
    assert!(message["html"].as_str().unwrap().starts_with("<html>"), "{message}");
    assert_eq!(api.db.scalar("SELECT COUNT(*) FROM notification_deliveries WHERE event = 'report' AND sent_at IS NOT NULL").await, 1);

    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 2, "a 503 is tried again");
    let key = format!("squadron-report-{id}-callback");
    for (headers, form) in &received {
        assert_eq!(headers["authorization"], "s3cret");
        assert_eq!(headers["auth-token"], "s3cret");
        assert_eq!(headers["idempotency-key"], key.as_str(), "the same key on every attempt");
        assert!(form["text"].contains("s/a") && form["html"].starts_with("<html>"), "{form:?}");
    }
    let shown = api.call(Method::GET, &format!("/api/reports/{id}/"), None).await.1;
    assert_eq!((shown["email_recipient_notified"].as_bool(), shown["callback_notified"].as_bool()), (Some(true), Some(true)));
    assert!(shown.get("callback_token").is_none(), "the token is never shown: {shown}");
}

async fn reports_are_listed_to_who_may_see_their_builds(db: TestDb) {
    let api = Api::new(db).await;
    let public = api.submit_tests("p", "v1", r#"{"s/a": "pass"}"#).await;
    let private = api.submit_tests("private", "v1", r#"{"s/a": "pass"}"#).await;
    let mine = report_id(&api.call(Method::GET, &format!("/api/builds/{public}/report/?baseline={public}"), None).await.1);
    let hidden = report_id(&api.call(Method::GET, &format!("/api/builds/{private}/report/"), Some(&api.admin)).await.1);

    let anonymous = api.call(Method::GET, "/api/reports/", None).await.1;
    assert_eq!(anonymous["count"], 1, "{anonymous}");
    let shown = &anonymous["results"][0];
    assert_eq!(shown["id"], mine);
    assert_eq!(shown["baseline"], api.url(&format!("/api/builds/{public}/status/")));
    assert!(shown["status_code"].is_null(), "not rendered yet");
    assert_eq!(api.call(Method::GET, &format!("/api/reports/{hidden}/"), None).await.0, 404);
    assert_eq!(api.call(Method::GET, "/api/reports/", Some(&api.member)).await.1["count"], 2, "a member of the group sees both");
    let filtered = api.call(Method::GET, &format!("/api/reports/?build={private}"), Some(&api.admin)).await.1;
    assert_eq!((filtered["count"].as_i64(), filtered["results"][0]["id"].as_i64()), (Some(1), Some(hidden)));
    let filtered = api.call(Method::GET, "/api/reports/?build__project__slug=p", Some(&api.admin)).await.1;
    assert_eq!((filtered["count"].as_i64(), filtered["results"][0]["id"].as_i64()), (Some(1), Some(mine)));
    assert_eq!(api.call(Method::GET, "/api/reports/?output_format__startswith=text/", None).await.1["count"], 1);
    assert_eq!(api.call(Method::POST, "/api/reports/", Some(&api.admin)).await.0, 405, "read-only");
}

async fn reports_past_their_retention_are_removed(db: TestDb) {
    let api = Api::new(db).await;
    let build = api.submit_tests("p", "v1", r#"{"s/a": "pass"}"#).await;
    for keep in [0, 1, 2, 30] {
        assert_eq!(api.call(Method::GET, &format!("/api/builds/{build}/report/?keep={keep}"), None).await.0, 202);
    }
    let day_and_a_half_ago = (chrono::Utc::now() - chrono::Duration::hours(36)).to_rfc3339();
    api.db.execute(&format!("UPDATE delayed_reports SET created_at = '{day_and_a_half_ago}' WHERE data_retention_days > 0")).await;
    api.db.execute("UPDATE delayed_reports SET created_at = '2020-01-01T00:00:00Z' WHERE data_retention_days = 0").await;
    api.db.execute("DELETE FROM tasks").await;
    let mut tx = api.db.store.begin_write().await.unwrap();
    Queue::default().enqueue(tx.conn(), &NewTask::of(&RemoveDelayedReports {})).await.unwrap();
    tx.commit().await.unwrap();
    run_until(&api.db, 0, "SELECT COUNT(*) FROM tasks WHERE kind = 'remove_delayed_reports' AND state = 'completed'").await;
    let kept = api.db.text("SELECT STRING_AGG(CAST(data_retention_days AS TEXT), ',') FROM (SELECT data_retention_days FROM delayed_reports ORDER BY data_retention_days) k").await;
    assert_eq!(kept, "2,30", "kept only what is still within its days");
}

}
