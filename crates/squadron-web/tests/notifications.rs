//! The notification side of the REST API on both engines: project
//! subscriptions, email templates, a project's template, and the build's
//! email rendered on demand.

mod common;

use common::Api;
use reqwest::Method;
use serde_json::{json, Value};
use squadron_store::both_engines;
#[allow(unused_imports)]
use squadron_store::testing::TestDb;

both_engines! {

async fn subscriptions_by_address_or_user(db: TestDb) {
    let api = Api::new(db).await;
    let project = api.db.scalar("SELECT id FROM projects WHERE slug = 'p'").await;
    let subscribe = format!("/api/projects/{project}/subscribe/");
    let body = json!({"email": "dev@example.com"});
    assert_eq!(api.call_json(Method::POST, &subscribe, None, body.clone()).await.0, 401);
    assert_eq!(api.call_json(Method::POST, &subscribe, Some(&api.member), body.clone()).await.0, 403);
    let (code, answer) = api.call_json(Method::POST, &subscribe, Some(&api.admin), body.clone()).await;
    assert_eq!((code, answer), (201, json!({"email": "dev@example.com"})));
    assert_eq!(api.call_json(Method::POST, &subscribe, Some(&api.admin), body.clone()).await.0, 201, "again: no-op");
    assert_eq!(api.db.scalar("SELECT COUNT(*) FROM subscriptions").await, 1);
    let (code, answer) = api.call_json(Method::POST, &subscribe, Some(&api.admin), json!({})).await;
    assert_eq!(code, 400);
    assert!(answer["detail"].as_str().unwrap().contains("'email' field is mandatory"), "{answer}");
    let (code, answer) = api.call_json(Method::POST, &subscribe, Some(&api.admin), json!({"email": "not an address"})).await;
    assert_eq!(code, 400, "{answer}");
    api.db.execute("UPDATE users SET email = 'sub@example.com' WHERE username = 'sub'").await;
    api.call_json(Method::POST, &subscribe, Some(&api.admin), json!({"email": "sub@example.com"})).await;
    assert_eq!(api.db.scalar("SELECT COUNT(*) FROM subscriptions WHERE user_id IS NOT NULL").await, 1, "the user is subscribed");

    let unsubscribe = format!("/api/projects/{project}/unsubscribe/");
    let (code, answer) = api.call_json(Method::POST, &unsubscribe, Some(&api.admin), json!({"email": "sub@example.com"})).await;
    assert_eq!((code, answer), (200, json!({"email": "sub@example.com"})));
    assert_eq!(api.db.scalar("SELECT COUNT(*) FROM subscriptions").await, 1, "only the user's subscription is gone");
    assert_eq!(api.call_json(Method::POST, "/api/projects/9999/subscribe/", Some(&api.admin), body).await.0, 404);
}

async fn email_templates_are_checked_and_used_by_the_project(db: TestDb) {
    let api = Api::new(db).await;
    let create = |body: Value, token: Option<String>| {
        let api = &api;
        async move { api.call_json(Method::POST, "/api/emailtemplates/", token.as_deref(), body).await }
    };
    let template = json!({"name": "short", "subject": "{{ project }}: {{ tests_fail }} failed", "plain_text": "{% for env, tests in regressions|items %}{{ env }}: {{ tests|join(',') }}{% endfor %}"});
    assert_eq!(create(template.clone(), Some(api.member.clone())).await.0, 403, "superusers only");
    let (code, created) = create(template.clone(), Some(api.admin.clone())).await;
    assert_eq!(code, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["url"], api.url(&format!("/api/emailtemplates/{id}/")));
    assert_eq!((created["name"].as_str(), created["html"].is_null()), (Some("short"), true));
    let (code, answer) = create(template, Some(api.admin.clone())).await;
    assert_eq!(code, 400, "the name is unique: {answer}");
    let (code, answer) = create(json!({"name": "broken", "plain_text": "line one\n{% for x in y %}"}), Some(api.admin.clone())).await;
    assert_eq!(code, 400);
    assert!(answer["detail"].as_str().unwrap().contains("plain_text (line 2)"), "names the part and line: {answer}");
    assert_eq!(api.db.scalar("SELECT COUNT(*) FROM email_templates").await, 1, "nothing stored for bad input");
    let listed = api.call(Method::GET, "/api/emailtemplates/?name=short", None).await.1;
    assert_eq!(listed["count"], 1);

    let project = api.db.scalar("SELECT id FROM projects WHERE slug = 'p'").await;
    let link = api.url(&format!("/api/emailtemplates/{id}/"));
    let (code, patched) = api.call_json(Method::PATCH, &format!("/api/projects/{project}/"), Some(&api.admin), json!({"custom_email_template": link})).await;
    assert_eq!((code, patched["custom_email_template"].as_str()), (200, Some(link.as_str())), "{patched}");

    let v1 = api.submit_tests("p", "v1", r#"{"s/a": "pass", "s/b": "pass"}"#).await;
    let v2 = api.submit_tests("p", "v2", r#"{"s/a": "fail", "s/b": "pass"}"#).await;
    let (code, content_type, body) = api.get_text(&format!("/api/builds/{v2}/email/")).await;
    assert_eq!((code, content_type.as_str(), body.as_str()), (200, "text/plain; charset=utf-8", "x86: s/a"));
    let (code, _, body) = api.get_text(&format!("/api/builds/{v2}/email/?template=default&output=text/html")).await;
    assert_eq!(code, 200);
    assert!(body.starts_with("<html>") && body.contains("<li>s/a</li>") && body.contains("compared to build v1"), "{body}");
    let (_, _, body) = api.get_text(&format!("/api/builds/{v2}/email/?template=default&baseline={v2}")).await;
    assert!(body.contains("Regressions (compared to build v2)\n---") && body.contains("(none)"), "another baseline: {body}");
    assert_eq!(api.call(Method::GET, &format!("/api/builds/{v1}/email/?template=9999"), None).await.0, 400);
    assert_eq!(api.call(Method::GET, &format!("/api/builds/{v1}/email/?output=pdf"), None).await.0, 400);
    assert_eq!(api.call(Method::GET, "/api/builds/9999/email/", None).await.0, 404);

    let (code, _) = api.call(Method::DELETE, &format!("/api/emailtemplates/{id}/"), Some(&api.admin)).await;
    assert_eq!(code, 204);
    let detail = api.call(Method::GET, &format!("/api/projects/{project}/"), None).await.1;
    assert!(detail["custom_email_template"].is_null(), "the project falls back to the default: {detail}");
}

async fn patch_sources_keep_their_credentials_and_patch_builds_are_reported(db: TestDb) {
    let api = Api::new(db).await;
    let body = json!({"name": "gh", "url": "https://api.github.com", "implementation": "github", "token": "s3cret", "username": "bot"});
    assert_eq!(api.call_json(Method::POST, "/api/patchsources/", Some(&api.member), body.clone()).await.0, 403);
    let (code, created) = api.call_json(Method::POST, "/api/patchsources/", Some(&api.admin), body.clone()).await;
    assert_eq!(code, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created, json!({"id": id, "name": "gh", "url": "https://api.github.com", "implementation": "github"}), "credentials are write-only");
    assert_eq!(api.db.text("SELECT token FROM patch_sources").await, "s3cret");
    assert_eq!(api.call_json(Method::POST, "/api/patchsources/", Some(&api.admin), body).await.0, 400, "unique name");
    let bad = json!({"name": "x", "url": "https://x", "implementation": "svn"});
    assert_eq!(api.call_json(Method::POST, "/api/patchsources/", Some(&api.admin), bad).await.0, 400);
    let bad = json!({"name": "x", "url": "gopher://x", "implementation": "gerrit"});
    assert_eq!(api.call_json(Method::POST, "/api/patchsources/", Some(&api.admin), bad).await.0, 400);
    assert_eq!(api.db.scalar("SELECT COUNT(*) FROM patch_sources").await, 1, "nothing stored for bad input");
    let (code, patched) = api.call_json(Method::PATCH, &format!("/api/patchsources/{id}/"), Some(&api.admin), json!({"_password": "pw"})).await;
    assert_eq!((code, patched["name"].as_str()), (200, Some("gh")));
    assert_eq!(api.db.text("SELECT password FROM patch_sources").await, "pw", "SQUAD's field name for the password");

    // A new build from a patch source is reported as being tested.
    let fields = [("patch_source", "gh"), ("patch_id", "linaro/squad/abc")];
    let (code, answer) = api.post_form("/api/createbuild/g/p/v1", Some(&api.submitter), &fields).await;
    assert_eq!(code, 201, "{answer}");
    assert_eq!(api.db.scalar("SELECT COUNT(*) FROM tasks WHERE kind = 'notify_patch_source'").await, 1);
    let (code, _) = api.post_form("/api/createbuild/g/p/v1", Some(&api.submitter), &fields).await;
    assert_eq!(code, 201);
    assert_eq!(api.db.scalar("SELECT COUNT(*) FROM tasks WHERE kind = 'notify_patch_source'").await, 1, "an existing build is not reported again");
}

}
