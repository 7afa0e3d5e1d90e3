//! What the status and notification tests share: submitting runs, writing
//! a build's status, and a loopback SMTP server.

#![allow(dead_code)]

use squadron_core::submission::parse_metadata;
use squadron_queue::Queue;
use squadron_status::{update_build_status, Updated};
use squadron_store::ingest::{IngestOptions, Submission};
use squadron_store::testing::TestDb;

pub mod smtp;

/// Submits `tests` (and `metrics`) as a run of `build` in `env`, at
/// `datetime`; returns the build's id.
pub async fn submit(
    db: &TestDb,
    project: i64,
    build: &str,
    env: &str,
    datetime: &str,
    tests: &str,
    metrics: &str,
) -> i64 {
    submit_with(db, project, build, env, datetime, tests, metrics, IngestOptions::default()).await
}

#[allow(clippy::too_many_arguments)]
pub async fn submit_with(
    db: &TestDb,
    project: i64,
    build: &str,
    env: &str,
    datetime: &str,
    tests: &str,
    metrics: &str,
    options: IngestOptions,
) -> i64 {
    let blob = |text: &str| {
        let text = text.to_string();
        async move {
            if text.is_empty() {
                None
            } else {
                Some(db.blobs.put(text.as_bytes()).await.unwrap())
            }
        }
    };
    let submission = Submission {
        project_id: project,
        build_version: build.into(),
        environment_slug: env.into(),
        metadata: parse_metadata(&format!(r#"{{"datetime": "{datetime}"}}"#)).unwrap(),
        tests_file: blob(tests).await,
        metrics_file: blob(metrics).await,
        log_file: None,
        attachments: Vec::new(),
        completed: true,
    };
    let run = db.store.ingest(&db.blobs, &submission, options).await.unwrap();
    db.scalar(&format!("SELECT build_id FROM testruns WHERE id = {run}")).await
}

pub async fn updated(db: &TestDb, build: i64) -> squadron_status::BuildStatus {
    match update_build_status(&db.store, &Queue::default(), build).await.unwrap() {
        Updated::Written(status) => *status,
        Updated::Stale => panic!("nothing changed the build meanwhile"),
    }
}
