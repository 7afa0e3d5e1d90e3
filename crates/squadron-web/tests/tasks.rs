//! `/api/tasks/`, `/metrics`, `/healthz` and `/readyz` over real HTTP, on
//! both engines.

mod common;

use common::Api;
use squadron_queue::{NewTask, Queue, RunAt, StepTx};
use squadron_store::both_engines;
#[allow(unused_imports)]
use squadron_store::testing::TestDb;

impl Api {
    async fn enqueue(&self, count: usize) {
        let task = NewTask {
            kind: "example".into(),
            default_queue: "core_quick".into(),
            args: r#"{"n": 1}"#.into(),
            priority: 0,
            run_at: RunAt::Now,
            unique_key: None,
            max_attempts: 3,
            advance: false,
        };
        let db = self.db.store.queue_db();
        let mut tx = db.begin().await.unwrap();
        Queue::default().enqueue_many(tx.conn(), &vec![task; count]).await.unwrap();
        tx.commit().await.unwrap();
    }
}

both_engines! {

async fn superusers_list_retry_and_cancel_tasks(db: TestDb) {
    let api = Api::new(db).await;
    api.enqueue(3).await;
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    assert_eq!(api.call(get.clone(), "/api/tasks/", None).await.0, 401);
    assert_eq!(api.call(get.clone(), "/api/tasks/", Some(&api.member)).await.0, 403);
    let (status, page) = api.call(get.clone(), "/api/tasks/?limit=2", Some(&api.admin)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["count"], 3);
    assert_eq!(page["results"].as_array().unwrap().len(), 2);
    assert!(page["next"].as_str().unwrap().contains("offset=2"), "{page}");
    let first = &page["results"][0];
    assert_eq!(first["state"], "available");
    assert_eq!(first["queue"], "core_quick");
    assert_eq!(first["args"]["n"], 1);
    let id = first["id"].as_i64().unwrap();

    let (status, body) = api.call(get.clone(), "/api/tasks/?state=bogus", Some(&api.admin)).await;
    assert_eq!(status, 400, "{body}");
    let (status, cancelled) = api.call(post.clone(), &format!("/api/tasks/{id}/cancel/"), Some(&api.admin)).await;
    assert_eq!((status, cancelled["state"].as_str()), (200, Some("cancelled")), "{cancelled}");
    let (status, body) = api.call(post.clone(), &format!("/api/tasks/{id}/cancel/"), Some(&api.admin)).await;
    assert_eq!(status, 409, "a cancelled task cannot be cancelled again: {body}");
    assert_eq!(api.call(post.clone(), &format!("/api/tasks/{id}/retry/"), Some(&api.member)).await.0, 403);
    let (_, page) = api.call(get.clone(), "/api/tasks/?state=cancelled", Some(&api.admin)).await;
    assert_eq!(page["count"], 1);
    let (status, retried) = api.call(post.clone(), &format!("/api/tasks/{id}/retry/"), Some(&api.admin)).await;
    assert_eq!((status, retried["state"].as_str()), (200, Some("available")), "{retried}");
    assert_eq!(api.call(get.clone(), "/api/tasks/999999/", Some(&api.admin)).await.0, 404);
    assert_eq!(api.call(post, "/api/tasks/999999/retry/", Some(&api.admin)).await.0, 404);
}

async fn metrics_and_probes(db: TestDb) {
    let api = Api::new(db).await;
    api.enqueue(2).await;
    let metrics = api.http.get(api.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = metrics.text().await.unwrap();
    assert!(text.contains(r#"squadron_queue_depth{queue="core_quick",state="available"} 2"#), "{text}");
    assert!(text.contains(r#"squadron_queue_depth{queue="ci_poll",state="available"} 0"#), "empty queues too");
    assert!(text.contains("squadron_queue_fenced_commits_rejected_total 0"), "{text}");
    assert_eq!(api.http.get(api.url("/healthz")).send().await.unwrap().text().await.unwrap(), "ok");
    assert_eq!(api.http.get(api.url("/readyz")).send().await.unwrap().status().as_u16(), 200);
}

}
