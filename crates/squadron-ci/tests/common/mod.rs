//! Helpers shared by the integration tests.

#![allow(dead_code)]

pub mod fake_tuxsuite;

use chrono::Utc;
use squadron_ci::backend::BackendRecord;
use squadron_ci::TestJob;

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
