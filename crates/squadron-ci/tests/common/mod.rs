//! Helpers shared by the integration tests.

#![allow(dead_code)]

pub mod fake_lava;
pub mod fake_lava_events;
pub mod fake_tuxsuite;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use squadron_ci::backend::BackendRecord;
use squadron_ci::{Backends, CancelJob, Ci, FetchJob, FinishJob, PollBackends, PostprocessRun, SubmitJob, TestJob};
use squadron_plugins::Plugins;
use squadron_queue::{Queue, Registry};
use squadron_status::{StatusContext, UpdateBuildStatus};
use squadron_store::testing::TestDb;

/// The queues of the pipeline and of the build status update.
pub const QUEUES: [&str; 5] = ["ci_quick", "ci_poll", "ci_fetch", "ci_fetch_postprocess", "core_postprocess"];

/// The base URL the pipeline takes for its own instance's (nothing
/// listens there: what it names is read from the store).
pub const INSTANCE_URL: &str = "http://squadron.invalid/squad";

/// The pipeline's context over `db` with `plugins` and `backends`.
pub fn pipeline(db: &TestDb, plugins: Plugins, backends: Backends) -> Arc<Ci> {
    Arc::new(Ci {
        store: db.store.clone(),
        blobs: db.blobs.clone(),
        queue: Queue::default(),
        backends,
        plugins,
        base_url: INSTANCE_URL.into(),
        submit_retry_delay: Duration::from_millis(100),
    })
}

/// Every pipeline task kind, and the build status update.
pub fn registry(db: &TestDb, ci: Arc<Ci>) -> Registry {
    let mut registry = Registry::new();
    registry.register::<SubmitJob>(ci.clone());
    registry.register::<PollBackends>(ci.clone());
    registry.register::<FetchJob>(ci.clone());
    registry.register::<PostprocessRun>(ci.clone());
    registry.register::<FinishJob>(ci.clone());
    registry.register::<CancelJob>(ci);
    registry
        .register::<UpdateBuildStatus>(Arc::new(StatusContext { store: db.store.clone(), queue: Queue::default() }));
    registry
}

/// A backend record of `implementation_type` at `url` with `settings`.
pub fn backend_record(implementation_type: &str, url: &str, settings: Option<&str>) -> BackendRecord {
    BackendRecord {
        id: 1,
        name: implementation_type.to_string(),
        url: url.to_string(),
        username: String::new(),
        token: String::new(),
        implementation_type: implementation_type.to_string(),
        backend_settings: settings.map(String::from),
        poll_interval: 60,
        max_fetch_attempts: 3,
        poll_enabled: true,
        listen_enabled: false,
    }
}

/// A submitted job of the lab's id `job_id`, as the pipeline loads it.
pub fn test_job(job_id: &str, project_settings: &str, results_input: Option<String>) -> TestJob {
    TestJob {
        id: 1,
        backend_id: 1,
        definition: None,
        name: None,
        target_id: 1,
        target_build_id: Some(1),
        environment: "myenv".into(),
        created_at: Utc::now(),
        submitted_at: Some(Utc::now()),
        fetched_at: None,
        started_at: None,
        ended_at: None,
        last_fetch_attempt: None,
        submitted: true,
        fetched: false,
        fetch_attempts: 0,
        failure: None,
        can_resubmit: false,
        resubmitted_count: 0,
        parent_job_id: None,
        job_id: Some(job_id.into()),
        job_status: None,
        testrun_id: None,
        submission_key: None,
        results_input,
        project_settings: project_settings.into(),
    }
}

/// A fresh P-256 key pair: the signing key and its OpenSSH public key line.
pub fn key_pair() -> (p256::ecdsa::SigningKey, String) {
    use base64::Engine;
    let key = loop {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).unwrap();
        if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&secret) {
            break key;
        }
    };
    let point = key.verifying_key().to_encoded_point(false);
    let mut blob = Vec::new();
    for field in [b"ecdsa-sha2-nistp256".as_slice(), b"nistp256", point.as_bytes()] {
        blob.extend_from_slice(&(field.len() as u32).to_be_bytes());
        blob.extend_from_slice(field);
    }
    (key, format!("ecdsa-sha2-nistp256 {}", base64::engine::general_purpose::STANDARD.encode(blob)))
}

/// TuxSuite's signature header for `content`.
pub fn sign(key: &p256::ecdsa::SigningKey, content: &[u8]) -> String {
    use base64::Engine;
    use p256::ecdsa::signature::Signer;
    let signature: p256::ecdsa::Signature = key.sign(content);
    base64::engine::general_purpose::URL_SAFE.encode(signature.to_der().as_bytes())
}
