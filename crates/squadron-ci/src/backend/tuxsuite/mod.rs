//! `tuxsuite`: builds and tests run by TuxSuite (SQUAD's
//! `squad/ci/backend/tuxsuite.py`, as of SQUAD 1.98).
//!
//! squadron never submits to TuxSuite: its jobs come from `watchjob` and
//! from TuxSuite's callbacks (`/api/fetchjob`, see [`callback`]). A job id
//! names the kind of object, its TuxSuite group and project and its uid:
//! `BUILD|OEBUILD|TEST:<group>@<project>#<uid>`; the job's URL is
//! `<backend url>groups/<group>/projects/<project>/<kind>s/<uid>`.
//!
//! A fetch reads the payload a callback stored (consumed by the fetch) or
//! GETs the job's URL; a job whose `state` is not `finished` is still
//! running. What a finished build, OpenEmbedded build or test gives is in
//! [`parse`]. Settings are the backend's YAML overlaid by the project's:
//! `BUILD_METADATA_KEYS`, `OEBUILD_METADATA_KEYS`, `TEST_METADATA_KEYS`,
//! `TEST_BUILD_METADATA_KEYS` (which fields of the lab's answers become
//! test-run metadata) and `TUXSUITE_TOKEN` (sent as `Authorization` on
//! every GET).

pub mod callback;
mod http;
mod parse;

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::{Backend, BackendError, BackendRecord, Fetched};
use crate::jobs::TestJob;

pub use http::HttpPolicy;

/// The kinds of TuxSuite objects a job can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// A kernel build (tuxmake).
    Build,
    /// An OpenEmbedded/Android build.
    OeBuild,
    /// A test run (tuxrun).
    Test,
}

impl JobKind {
    /// The kind as it starts a job id (`BUILD`, `OEBUILD`, `TEST`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Build => "BUILD",
            JobKind::OeBuild => "OEBUILD",
            JobKind::Test => "TEST",
        }
    }

    /// The kind named in a callback or a job id, in any case.
    pub fn parse(text: &str) -> Option<JobKind> {
        match text.to_ascii_uppercase().as_str() {
            "BUILD" => Some(JobKind::Build),
            "OEBUILD" => Some(JobKind::OeBuild),
            "TEST" => Some(JobKind::Test),
            _ => None,
        }
    }

    /// The collection in TuxSuite's API (`builds`, `oebuilds`, `tests`).
    fn collection(self) -> &'static str {
        match self {
            JobKind::Build => "builds",
            JobKind::OeBuild => "oebuilds",
            JobKind::Test => "tests",
        }
    }
}

/// A parsed TuxSuite job id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobId {
    /// What the job is.
    pub kind: JobKind,
    /// The TuxSuite group.
    pub group: String,
    /// The TuxSuite project.
    pub project: String,
    /// The object's uid (a KSUID).
    pub uid: String,
}

/// What a job id must look like, as SQUAD writes it in its error.
const JOB_ID_PATTERN: &str = r"^(OEBUILD|BUILD|TEST):([0-9a-z_\-.]+@[0-9a-z_\-.]+)#([a-zA-Z0-9]+)$";

impl JobId {
    /// Parses `KIND:group@project#uid`; the error is SQUAD's message.
    pub fn parse(text: &str) -> Result<JobId, String> {
        let invalid = || format!("Job id \"{text}\" does not match \"{JOB_ID_PATTERN}\"");
        let (kind, rest) = text.split_once(':').ok_or_else(invalid)?;
        let kind = match kind {
            "BUILD" => JobKind::Build,
            "OEBUILD" => JobKind::OeBuild,
            "TEST" => JobKind::Test,
            _ => return Err(invalid()),
        };
        let (project, uid) = rest.split_once('#').ok_or_else(invalid)?;
        let (group, project) = project.split_once('@').ok_or_else(invalid)?;
        let name = |s: &str| {
            !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c))
        };
        if !name(group) || !name(project) || uid.is_empty() || !uid.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(invalid());
        }
        Ok(JobId { kind, group: group.into(), project: project.into(), uid: uid.into() })
    }

    /// The same group and project's object `uid` of kind `kind`.
    fn sibling(&self, kind: JobKind, uid: &str) -> JobId {
        JobId { kind, uid: uid.into(), ..self.clone() }
    }

    /// The object's path under the API root.
    fn path(&self) -> String {
        format!("groups/{}/projects/{}/{}/{}", self.group, self.project, self.kind.collection(), self.uid)
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}@{}#{}", self.kind.as_str(), self.group, self.project, self.uid)
    }
}

/// A TuxSuite instance, reached at its API root.
pub struct TuxSuite {
    url: String,
    settings: Map<String, Value>,
    http: http::Http,
}

impl TuxSuite {
    /// The lab of `record`, reached with `client` under `policy`.
    pub fn new(record: &BackendRecord, client: reqwest::Client, policy: HttpPolicy) -> Result<TuxSuite, BackendError> {
        let settings = squadron_core::settings::parse_settings(record.backend_settings.as_deref().unwrap_or(""))
            .map_err(|e| BackendError::Permanent(format!("backend {:?}: {e}", record.name)))?;
        Ok(TuxSuite { url: record.url.clone(), settings, http: http::Http::new(client, policy) })
    }

    /// The absolute URL of `job`.
    fn url_of(&self, job: &JobId) -> Result<String, BackendError> {
        http::join(&self.url, &job.path())
    }

    /// The backend's settings overlaid by the job's project's.
    fn settings_for(&self, job: &TestJob) -> Map<String, Value> {
        let mut settings = self.settings.clone();
        settings.extend(job.settings());
        settings
    }
}

fn job_id(job: &TestJob) -> Result<JobId, BackendError> {
    let text = job.job_id.as_deref().ok_or_else(|| BackendError::Permanent("the job has no job id".into()))?;
    JobId::parse(text).map_err(BackendError::Permanent)
}

/// TuxSuite jobs cannot be submitted by squadron.
fn not_supported(what: &'static str) -> BackendError {
    BackendError::NotSupported { backend: "tuxsuite", what }
}

#[async_trait]
impl Backend for TuxSuite {
    fn kind(&self) -> &'static str {
        "tuxsuite"
    }

    fn check_definition(&self, _definition: &str) -> Result<(), String> {
        Err("jobs cannot be submitted to TuxSuite: use watchjob or TuxSuite's callbacks".into())
    }

    fn check_job_id(&self, job_id: &str) -> Result<(), String> {
        JobId::parse(job_id).map(|_| ())
    }

    fn can_submit(&self) -> bool {
        false
    }

    async fn submit(&self, _job: &TestJob, _submission_key: &str) -> Result<Vec<String>, BackendError> {
        Err(not_supported("submitting jobs"))
    }

    async fn lookup(&self, _job: &TestJob, _submission_key: &str) -> Result<Option<Vec<String>>, BackendError> {
        Err(not_supported("submitting jobs"))
    }

    async fn fetch(&self, job: &TestJob) -> Result<Fetched, BackendError> {
        let id = job_id(job)?;
        let url = self.url_of(&id)?;
        let settings = self.settings_for(job);
        let token = settings.get("TUXSUITE_TOKEN").and_then(Value::as_str).map(str::to_string);
        let lab = parse::Lab { http: &self.http, token: token.as_deref(), api: &self.url };
        // A payload pushed by a callback stands for the job's page; one
        // that does not parse is ignored (SQUAD would crash on it).
        let pushed = job.results_input.as_deref().and_then(|text| match serde_json::from_str::<Value>(text) {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::warn!(testjob = job.id, error = %e, "ignoring a stored TuxSuite payload that is not JSON");
                None
            }
        });
        let results = match pushed {
            Some(value) => value,
            None => lab.job(&url).await?,
        };
        let Value::Object(results) = results else {
            return Err(BackendError::Permanent(format!("TuxSuite's answer for {url} is not a JSON object")));
        };
        if results.get("state").and_then(Value::as_str) != Some("finished") {
            return Ok(Fetched::Running { status: None });
        }
        let job = parse::Job { id: &id, url: &url, settings: &settings };
        let parsed = match id.kind {
            JobKind::Build => Some(lab.build(&job, results).await?),
            JobKind::OeBuild => Some(lab.oebuild(&job, results).await?),
            JobKind::Test => lab.test(&job, results).await?,
        };
        Ok(match parsed {
            Some(results) => Fetched::Finished(Box::new(results)),
            None => Fetched::Running { status: None },
        })
    }

    async fn cancel(&self, job: &TestJob) -> Result<bool, BackendError> {
        let id = job_id(job)?;
        let url = http::join(&self.url, &format!("{}/cancel", id.path()))?;
        self.http.post(&url).await
    }

    fn job_url(&self, job: &TestJob) -> Option<String> {
        let id = JobId::parse(job.job_id.as_deref()?).ok()?;
        self.url_of(&id).ok()
    }
}

/// SQUAD's build name: `<toolchain>-<kconfig[0]>`, plus the first eight
/// hex digits of the SHA-1 of the other kconfig entries concatenated.
pub fn build_name(toolchain: &str, kconfigs: &[String]) -> String {
    use sha1::{Digest, Sha1};
    let mut name = format!("{toolchain}-{}", kconfigs.first().map(String::as_str).unwrap_or(""));
    if kconfigs.len() > 1 {
        let mut sha = Sha1::new();
        for config in &kconfigs[1..] {
            sha.update(config.as_bytes());
        }
        let digest = sha.finalize();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        name.push('-');
        name.push_str(&hex[..8]);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_parse_as_squad_parses_them() {
        let id = JobId::parse("BUILD:linaro@anders#1yPYGaOEPNwr2pCqBgONY43zORq").unwrap();
        assert_eq!((id.kind, id.group.as_str(), id.project.as_str()), (JobKind::Build, "linaro", "anders"));
        assert_eq!(id.to_string(), "BUILD:linaro@anders#1yPYGaOEPNwr2pCqBgONY43zORq");
        let id = JobId::parse("TEST:linaro.ltd@anders.roxel#1yPYGaOEPNwr2pCqBgONY43zORq").unwrap();
        assert_eq!((id.group.as_str(), id.project.as_str()), ("linaro.ltd", "anders.roxel"));
        assert_eq!(JobId::parse("OEBUILD:tuxgroup@tuxproject#123").unwrap().kind, JobKind::OeBuild);
        assert_eq!(
            JobId::parse("PLAN:tuxgroup@tuxproject#123").unwrap_err(),
            r#"Job id "PLAN:tuxgroup@tuxproject#123" does not match "^(OEBUILD|BUILD|TEST):([0-9a-z_\-.]+@[0-9a-z_\-.]+)#([a-zA-Z0-9]+)$""#
        );
        for bad in
            ["123", "not-really-vallid", "BUILD:Linaro@anders#1", "BUILD:linaro@anders#", "TEST:a#1", "TEST:a@b#1-2"]
        {
            assert!(JobId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn build_names_follow_squads_rule() {
        assert_eq!(build_name("gcc-9", &["defconfig".into()]), "gcc-9-defconfig");
        assert_eq!(build_name("gcc-10", &["defconfig".into(), "CONFIG_DUMMY=1".into()]), "gcc-10-defconfig-1b886a5f");
    }
}
