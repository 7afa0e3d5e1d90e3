//! `POST /api/fetchjob/…`: TuxSuite's signed callbacks, on both engines.

mod common;

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use common::Api;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{json, Value};
use squadron_store::both_engines;
#[allow(unused_imports)]
use squadron_store::testing::TestDb;

/// A fresh P-256 key pair: the signing key and the OpenSSH public key line.
fn key_pair() -> (SigningKey, String) {
    let key = loop {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).unwrap();
        if let Ok(key) = SigningKey::from_slice(&secret) {
            break key;
        }
    };
    let point = key.verifying_key().to_encoded_point(false);
    let mut blob = Vec::new();
    for field in [b"ecdsa-sha2-nistp256".as_slice(), b"nistp256", point.as_bytes()] {
        blob.extend_from_slice(&(field.len() as u32).to_be_bytes());
        blob.extend_from_slice(field);
    }
    (key, format!("ecdsa-sha2-nistp256 {} tux@example", STANDARD.encode(blob)))
}

fn sign(key: &SigningKey, content: &[u8]) -> String {
    let signature: Signature = key.sign(content);
    URL_SAFE.encode(signature.to_der().as_bytes())
}

const PATH: &str = "/api/fetchjob/g/p/v1/myenv/tux";

/// Backend `tux` (TuxSuite) and `lab` (fake); project `p` trusts `public`.
async fn setup(api: &Api, public: &str) {
    api.db
        .execute(
            "INSERT INTO backends (name, url, implementation_type) VALUES \
             ('tux', 'https://tuxapi.tuxsuite.com/v1/', 'tuxsuite'), ('lab', 'https://lab.example.com', 'fake')",
        )
        .await;
    let settings = format!("TUXSUITE_PUBLIC_KEY: \"{public}\"\n");
    api.db.execute(&format!("UPDATE projects SET project_settings = '{settings}' WHERE slug = 'p'")).await;
}

async fn post(api: &Api, path: &str, signature: Option<&str>, body: &[u8]) -> (u16, String) {
    let mut request = api.http.post(api.url(path)).header("content-type", "application/json").body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("x-tux-payload-signature", signature);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn payload(uid: &str, status: Value) -> Vec<u8> {
    let mut fields = json!({"project": "tuxgroup/tuxproject", "uid": uid});
    fields.as_object_mut().unwrap().extend(status.as_object().unwrap().clone());
    json!({"kind": "test", "status": fields}).to_string().into_bytes()
}

both_engines! {
    async fn signed_callbacks_create_and_update_jobs(db: TestDb) {
        let api = Api::new(db).await;
        let (key, public) = key_pair();
        setup(&api, &public).await;

        let body = payload("123", json!({"device": "qemu-arm64", "state": "running"}));
        let (status, id) = post(&api, PATH, Some(&sign(&key, &body)), &body).await;
        assert_eq!(status, 201, "{id}");
        let id: i64 = id.parse().unwrap();
        let row = |column: &str| format!("SELECT {column} FROM testjobs WHERE id = {id}");
        assert_eq!(api.db.text(&row("job_id")).await, "TEST:tuxgroup@tuxproject#123");
        assert_eq!(api.db.text(&row("environment")).await, "qemu-arm64", "the payload's device names the environment");
        let pending = format!("SELECT COUNT(*) FROM testjobs WHERE id = {id} AND submitted AND NOT fetched");
        assert_eq!(api.db.scalar(&pending).await, 1);
        let stored: Value = serde_json::from_str(&api.db.text(&row("results_input")).await).unwrap();
        assert_eq!(stored["state"], "running");
        assert_eq!(
            api.db.scalar(&format!("SELECT COUNT(*) FROM testjobs j JOIN builds b ON b.id = j.target_build_id \
                JOIN backends k ON k.id = j.backend_id WHERE j.id = {id} AND b.version = 'v1' AND k.name = 'tux'")).await,
            1
        );
        let fetches = "SELECT COUNT(*) FROM tasks WHERE kind = 'ci_fetch' AND state = 'available'";
        assert_eq!(api.db.scalar(fetches).await, 1);

        // The next state of the same job: the same job, the newer payload.
        let body = payload("123", json!({"device": "qemu-arm64", "state": "finished", "result": "pass"}));
        let (status, again) = post(&api, &format!("{PATH}/"), Some(&sign(&key, &body)), &body).await;
        assert_eq!((status, again.parse::<i64>().unwrap()), (201, id));
        let stored: Value = serde_json::from_str(&api.db.text(&row("results_input")).await).unwrap();
        assert_eq!(stored["state"], "finished");
        assert_eq!(api.db.scalar("SELECT COUNT(*) FROM testjobs").await, 1);
        assert_eq!(api.db.scalar(fetches).await, 1, "one fetch waits per job");

        // SQUAD ≤ 1.89's form: a JSON string, signed over its content; no
        // environment in the payload, so the URL's.
        let inner = json!({"kind": "build", "status": {"project": "tuxgroup/tuxproject", "uid": "456", "state": "finished"}}).to_string();
        let body = serde_json::to_vec(&inner).unwrap();
        let (status, build_job) = post(&api, PATH, Some(&sign(&key, inner.as_bytes())), &body).await;
        assert_eq!(status, 201, "{build_job}");
        let build_job = format!("SELECT environment FROM testjobs WHERE id = {build_job} AND job_id = 'BUILD:tuxgroup@tuxproject#456'");
        assert_eq!(api.db.text(&build_job).await, "myenv");
        assert_eq!(api.db.scalar(fetches).await, 2);
    }

    async fn refused_callbacks_store_nothing(db: TestDb) {
        let api = Api::new(db).await;
        let (key, public) = key_pair();
        let (other, _) = key_pair();
        setup(&api, &public).await;
        let before = api.db.table_counts().await;

        let body = payload("123", json!({"target_arch": "arm64", "state": "finished"}));
        let good = sign(&key, &body);
        let mut tampered = body.clone();
        let at = tampered.iter().position(|&b| b == b'1').unwrap();
        tampered[at] = b'9';
        let unsigned_fields = |value: Value| {
            let body = value.to_string().into_bytes();
            (sign(&key, &body), body)
        };
        let (no_kind_sig, no_kind) = unsigned_fields(json!({"status": {"project": "a/b", "uid": "1"}}));
        let (plan_sig, plan) = unsigned_fields(json!({"kind": "plan", "status": {"project": "a/b", "uid": "1"}}));
        let (bad_env_sig, bad_env) = unsigned_fields(json!({"kind": "test", "status": {"project": "a/b", "uid": "1", "device": "-x"}}));
        let (text_sig, text) = (sign(&key, b"not json"), b"not json".to_vec());
        let cases: Vec<(String, Option<String>, Vec<u8>, &str)> = vec![
            (PATH.into(), None, body.clone(), "missing signature headers"),
            (PATH.into(), Some(good.clone()), tampered, "Failed to verify signature against payload"),
            (PATH.into(), Some(sign(&other, &body)), body.clone(), "Failed to verify signature against payload"),
            (PATH.into(), Some("%%%".into()), body.clone(), "not base64url"),
            (PATH.into(), Some(URL_SAFE.encode(b"short")), body.clone(), "not an ECDSA P-256 signature"),
            ("/api/fetchjob/g/p/v1/myenv/nope".into(), Some(good.clone()), body.clone(), "requested backend does not exist"),
            ("/api/fetchjob/g/p/v1/myenv/lab".into(), Some(good.clone()), body.clone(), "does not support callbacks"),
            ("/api/fetchjob/g/nope/v1/myenv/tux".into(), Some(good.clone()), body.clone(), "group/project does not exist"),
            ("/api/fetchjob/g/private/v1/myenv/tux".into(), Some(good.clone()), body.clone(), "missing tuxsuite public key"),
            ("/api/fetchjob/g/p/-v1/myenv/tux".into(), Some(good.clone()), body.clone(), "invalid build version"),
            (PATH.into(), Some(no_kind_sig), no_kind, "`kind` and `status` are required"),
            (PATH.into(), Some(plan_sig), plan, "unknown kind"),
            (PATH.into(), Some(bad_env_sig), bad_env, "invalid environment slug"),
            (PATH.into(), Some(text_sig), text, "payload failed to parse as json"),
        ];
        for (path, signature, body, expected) in cases {
            let (status, answer) = post(&api, &path, signature.as_deref(), &body).await;
            assert_eq!(status, 400, "{path} {expected}: {answer}");
            let detail = Api::detail(&answer);
            assert!(detail.contains(expected), "{expected}: {detail}");
        }
        assert_eq!(api.db.table_counts().await, before, "refused callbacks write nothing");

        let (status, _) = post(&api, PATH, Some(&good), &body).await;
        assert_eq!(status, 201, "the untampered callback is accepted");
    }
}
