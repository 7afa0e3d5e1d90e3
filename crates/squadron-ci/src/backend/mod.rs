//! Lab backends: one trait for every kind of lab (SQUAD's
//! `squad/ci/backend/`), and the factory that opens a stored backend.
//!
//! A backend only talks to its lab; it never touches the database. The
//! pipeline tasks call it outside any transaction and record what it
//! returned in one short transaction afterwards.

pub mod fake;
pub mod lava;
mod python;
pub mod tuxsuite;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::jobs::TestJob;

/// A backend as stored (SQUAD's `Backend` model).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BackendRecord {
    /// Row id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// The lab's URL (its API root).
    pub url: String,
    /// User name for the lab's API.
    pub username: String,
    /// Token for the lab's API.
    pub token: String,
    /// `lava`, `tuxsuite` or `fake`.
    pub implementation_type: String,
    /// YAML settings text.
    pub backend_settings: Option<String>,
    /// Seconds between two fetch attempts of a running job.
    pub poll_interval: i64,
    /// Failed fetches after which a job is given up.
    pub max_fetch_attempts: i64,
    /// Whether the periodic poll fetches this backend's jobs.
    pub poll_enabled: bool,
    /// Whether `squadron listener` follows this backend's events.
    pub listen_enabled: bool,
}

/// The implementation types squadron knows.
pub const IMPLEMENTATION_TYPES: [&str; 3] = ["fake", "lava", "tuxsuite"];

/// What a lab says about a job when asked for its results.
#[derive(Debug)]
pub enum Fetched {
    /// The job has not finished yet; `status` is its current state, if the
    /// lab says.
    Running {
        /// The lab's state of the job (`Submitted`, `Running`, …).
        status: Option<String>,
    },
    /// The job is over.
    Finished(Box<JobResults>),
}

/// The results of a finished job, as SQUAD's `Backend.fetch` returns them.
#[derive(Debug, Default)]
pub struct JobResults {
    /// The lab's final status (`Complete`, `Incomplete`, `Canceled`, …).
    pub status: String,
    /// Whether the job ran to completion; an incomplete job's tests and
    /// metrics are dropped and it may be resubmitted.
    pub completed: bool,
    /// The job's name, from its definition.
    pub name: Option<String>,
    /// When the job started in the lab.
    pub started_at: Option<DateTime<Utc>>,
    /// When the job ended in the lab.
    pub ended_at: Option<DateTime<Utc>>,
    /// The test run's metadata (the pipeline adds `job_id`, `job_status`
    /// and `job_url`).
    pub metadata: Map<String, Value>,
    /// Tests: full name (`suite/test`) and SQUAD's result value (`pass`,
    /// `fail`, anything else is a skip) with an optional log.
    pub tests: Vec<LabTest>,
    /// Metrics: full name, measurements and unit.
    pub metrics: Vec<LabMetric>,
    /// The test run's log.
    pub log: Option<Vec<u8>>,
    /// The lab's results as received, kept as a blob.
    pub raw: Vec<u8>,
    /// A failure to record on the job (the lab's error message).
    pub failure: Option<String>,
    /// Whether the job failed for an infrastructure reason and should be
    /// resubmitted automatically (LAVA's `CI_LAVA_INFRA_ERROR_MESSAGES`).
    pub resubmit: bool,
    /// Files to attach to the test run: name and content.
    pub attachments: Vec<(String, Vec<u8>)>,
    /// Files the results point to, for plugins (LAVA's `test-attachment`
    /// results).
    pub artifacts: Vec<squadron_plugins::LabArtifact>,
    /// The environment the job belongs to after all, when the lab says
    /// (TuxSuite's `test_name`); the job moves there.
    pub environment: Option<String>,
}

/// One test of a lab's results.
#[derive(Debug, Clone, PartialEq)]
pub struct LabTest {
    /// `suite/name`.
    pub name: String,
    /// `pass`, `fail`, or anything else for a skip.
    pub result: String,
    /// The test's log.
    pub log: Option<String>,
}

/// One metric of a lab's results.
#[derive(Debug, Clone, PartialEq)]
pub struct LabMetric {
    /// `suite/name`.
    pub name: String,
    /// The measurements (the metric's value is their mean).
    pub values: Vec<f64>,
    /// The unit.
    pub unit: Option<String>,
}

/// What a lab's event stream says about one of its jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabEvent {
    /// The lab's id of the job.
    pub job_id: String,
    /// Its new state, if the event names one.
    pub status: Option<String>,
    /// Whether the job is over (its results can be fetched).
    pub finished: bool,
}

/// Why a lab call failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A failure worth retrying later (timeouts, 5xx, a lab in
    /// maintenance): SQUAD's `TemporarySubmissionIssue`/`TemporaryFetchIssue`.
    #[error("{0}")]
    Temporary(String),
    /// A failure no retry fixes (a rejected definition, a malformed
    /// answer): SQUAD's `SubmissionIssue`/`FetchIssue`.
    #[error("{0}")]
    Permanent(String),
    /// The backend cannot do this at all.
    #[error("the {backend} backend does not support {what}")]
    NotSupported {
        /// The implementation type.
        backend: &'static str,
        /// The operation.
        what: &'static str,
    },
}

/// A lab. Every method is called outside any database transaction.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The implementation type (`lava`, `tuxsuite`, `fake`).
    fn kind(&self) -> &'static str;

    /// Checks a job definition before `submitjob` accepts it; the error
    /// says what is wrong.
    fn check_definition(&self, definition: &str) -> Result<(), String>;

    /// Checks the lab's id of a job given to `watchjob`; the error says
    /// what is wrong (SQUAD's `check_job_id`).
    fn check_job_id(&self, _job_id: &str) -> Result<(), String> {
        Ok(())
    }

    /// Whether squadron can submit jobs to this lab (TuxSuite's jobs come
    /// from `watchjob` and callbacks only).
    fn can_submit(&self) -> bool {
        true
    }

    /// Submits `job`'s definition; returns the lab's job ids (several for
    /// a multinode job). `submission_key` must travel with the job, so that
    /// [`Backend::lookup`] can find it again.
    async fn submit(&self, job: &TestJob, submission_key: &str) -> Result<Vec<String>, BackendError>;

    /// The ids of the jobs an earlier [`Backend::submit`] with this key
    /// created, if it reached the lab: asked before submitting again after
    /// a crash, so that a job is never submitted twice.
    async fn lookup(&self, job: &TestJob, submission_key: &str) -> Result<Option<Vec<String>>, BackendError>;

    /// Asks the lab for `job`'s state and, if it is over, its results.
    async fn fetch(&self, job: &TestJob) -> Result<Fetched, BackendError>;

    /// Asks the lab to cancel `job`; `false` when the lab cannot.
    async fn cancel(&self, job: &TestJob) -> Result<bool, BackendError>;

    /// The job's page in the lab.
    fn job_url(&self, job: &TestJob) -> Option<String>;

    /// Follows the lab's job events, sending each to `events`, until the
    /// stream ends or fails; `squadron listener` reconnects with a backoff.
    /// Labs without an event stream are polled only.
    async fn listen(&self, events: tokio::sync::mpsc::Sender<LabEvent>) -> Result<(), BackendError> {
        drop(events);
        Err(BackendError::NotSupported { backend: self.kind(), what: "listening to job events" })
    }

    /// The definition of a job submitted by someone else (`watchjob`).
    async fn job_definition(&self, _job_id: &str) -> Result<Option<String>, BackendError> {
        Ok(None)
    }
}

/// Opens stored backends with what they need from the process.
#[derive(Clone)]
pub struct Backends {
    /// Where the fake lab keeps its log of calls.
    pub fake_lab: PathBuf,
    /// The HTTP client of the labs reached over HTTP.
    pub http: reqwest::Client,
}

impl Backends {
    /// Backends whose fake lab lives under `data_dir`.
    pub fn new(data_dir: &std::path::Path) -> Backends {
        Backends { fake_lab: data_dir.join(fake::LAB_LOG), http: reqwest::Client::new() }
    }

    /// The implementation of `record`.
    pub fn open(&self, record: &BackendRecord) -> Result<Arc<dyn Backend>, BackendError> {
        match record.implementation_type.as_str() {
            "fake" => Ok(Arc::new(fake::FakeLab::new(self.fake_lab.clone()))),
            "lava" => Ok(Arc::new(lava::LavaLab::new(record, self.http.clone())?)),
            "tuxsuite" => {
                Ok(Arc::new(tuxsuite::TuxSuite::new(record, self.http.clone(), tuxsuite::HttpPolicy::default())?))
            }
            _ => Err(BackendError::Permanent(format!(
                "backend {:?} has an unknown implementation type {:?}",
                record.name, record.implementation_type
            ))),
        }
    }
}
