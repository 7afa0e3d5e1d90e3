//! `POST /api/createbuild/…` and small endpoints, on both engines.

mod common;

use common::Api;
use squadron_store::both_engines;
#[allow(unused_imports)]
use squadron_store::testing::TestDb;

both_engines! {
    async fn creates_builds_with_patches_and_callbacks(db: TestDb) {
        let api = Api::new(db).await;
        let t = Some(api.submitter.as_str());
        api.db.store.create_patch_source("github", "https://api.github.com", "github").await.unwrap();
        let (status, body) = api.post_form("/api/createbuild/g/p/v1", t, &[]).await;
        assert_eq!((status, body.as_str()), (201, ""));
        let fields = [
            ("patch_source", "github"),
            ("patch_baseline", "v1"),
            ("patch_id", "org/repo/abc123"),
            ("callback_url", "https://ci.example.com/done"),
            ("callback_headers", r#"{"X-Key": "k"}"#),
            ("callback_record_response", "true"),
        ];
        let (status, body) = api.post_multipart("/api/createbuild/g/p/v2/", t, &fields, &[]).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(api.db.scalar("SELECT COUNT(*) FROM builds WHERE version = 'v2' AND patch_id = 'org/repo/abc123' AND patch_baseline_id IS NOT NULL").await, 1);
        assert_eq!(api.db.scalar("SELECT COUNT(*) FROM callbacks WHERE url = 'https://ci.example.com/done' AND record_response AND method = 'post'").await, 1);
        assert_eq!(api.db.text("SELECT headers FROM callbacks").await, r#"{"X-Key":"k"}"#);

        let before = api.db.table_counts().await;
        for (fields, expected) in [
            (vec![("callback_url", "https://ci.example.com/done")], "already exists"),
            (vec![("callback_url", "ftp:/nowhere")], "callback_url"),
            (vec![("callback_url", "https://x/y"), ("callback_method", "delete")], "callback_method"),
            (vec![("callback_url", "https://x/y"), ("callback_headers", "nope")], "callback_headers"),
            (vec![("patch_source", "gitlab")], "patch source \"gitlab\""),
            (vec![("patch_baseline", "v9")], "patch baseline \"v9\""),
        ] {
            let (status, body) = api.post_form("/api/createbuild/g/p/v2", t, &fields).await;
            assert_eq!(status, 400, "{fields:?}: {body}");
            assert!(Api::detail(&body).contains(expected), "{fields:?}: {body}");
        }
        let (status, body) = api.post_form("/api/createbuild/g/p/v3", t, &[("patch_source", "gitlab")]).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(api.db.table_counts().await, before, "refused requests create nothing");

        let (status, _) = api.post_form("/api/createbuild/g/p/v4", Some(&api.member), &[]).await;
        assert_eq!(status, 403);
        let (status, _) = api.post_form("/api/createbuild/g/private/v4", None, &[]).await;
        assert_eq!(status, 401);
        let (status, body) = api.post_form("/api/createbuild/g/p/-v4", t, &[]).await;
        assert_eq!(status, 400);
        assert!(Api::detail(&body).contains("build version"));
    }

    async fn version_and_health(db: TestDb) {
        let api = Api::new(db).await;
        for path in ["/api/version/", "/api/version"] {
            let resp = api.http.get(api.url(path)).send().await.unwrap();
            assert_eq!(resp.headers()["x-squadron-version"], squadron_web::VERSION);
            assert_eq!(resp.text().await.unwrap(), squadron_web::SQUAD_API_VERSION);
        }
        assert_eq!(api.http.get(api.url("/healthz")).send().await.unwrap().status().as_u16(), 200);
        assert_eq!(api.http.get(api.url("/readyz")).send().await.unwrap().status().as_u16(), 200);
    }
}
