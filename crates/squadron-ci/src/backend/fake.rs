//! `fake`: a deterministic lab for demos and tests. It ignores its URL.
//!
//! A job definition is YAML:
//!
//! ```yaml
//! tests: 500        # how many tests
//! failures: 5       # how many of them fail (chosen by the seed)
//! suites: 10        # spread over this many suites
//! seed: 7           # the same definition always gives the same results
//! runtime: 2s       # how long the job "runs" before it is complete
//! log_lines: 1000   # lines of log
//! status: Complete  # the final status (Incomplete: no results, resubmittable)
//! ```
//!
//! Like a real lab it creates a new job on every submit call (it never
//! de-duplicates), and it appends every call to a log file outside any
//! database transaction, so a double submission is visible. The job id
//! carries its submission time, so any process can tell whether the job is
//! still "running" without shared state.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{Backend, BackendError, Fetched, JobResults, LabEvent, LabMetric, LabTest};
use crate::jobs::TestJob;

/// The fake lab's log of calls, in the data directory.
pub const LAB_LOG: &str = "fake-lab.log";

/// A fake job definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FakeDefinition {
    /// How many tests.
    pub tests: u64,
    /// How many of them fail.
    pub failures: u64,
    /// Over how many suites.
    pub suites: u64,
    /// The seed choosing the failures.
    pub seed: u64,
    /// How long the job runs.
    #[serde(with = "humantime_serde_compat")]
    pub runtime: Duration,
    /// Lines of log.
    pub log_lines: u64,
    /// The final status.
    pub status: String,
    /// The job's name.
    pub job_name: Option<String>,
}

impl Default for FakeDefinition {
    fn default() -> Self {
        FakeDefinition {
            tests: 10,
            failures: 0,
            suites: 1,
            seed: 0,
            runtime: Duration::ZERO,
            log_lines: 10,
            status: "Complete".into(),
            job_name: None,
        }
    }
}

/// `runtime` as humantime text (`2s`, `1m 30s`).
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

impl FakeDefinition {
    /// Parses a definition; an empty one takes every default.
    pub fn parse(text: &str) -> Result<FakeDefinition, String> {
        if text.trim().is_empty() {
            return Ok(FakeDefinition::default());
        }
        let definition: FakeDefinition =
            serde_norway::from_str(text).map_err(|e| format!("not a valid fake job definition: {e}"))?;
        if definition.failures > definition.tests {
            return Err(format!("failures ({}) exceed tests ({})", definition.failures, definition.tests));
        }
        if definition.suites == 0 && definition.tests > 0 {
            return Err("suites must be at least 1".into());
        }
        Ok(definition)
    }

    /// The results this definition always gives.
    pub fn results(&self) -> JobResults {
        let failing = choose(self.seed, self.tests, self.failures);
        let completed = self.status == "Complete";
        let mut tests = Vec::new();
        let mut metrics = Vec::new();
        if completed {
            tests = (0..self.tests)
                .map(|i| LabTest {
                    name: format!("suite-{}/test-{i}", i % self.suites),
                    result: if failing.binary_search(&i).is_ok() { "fail" } else { "pass" }.into(),
                    log: None,
                })
                .collect();
            let mut random = SplitMix(self.seed ^ 0x5eed);
            metrics = (0..self.suites.min(self.tests))
                .map(|s| LabMetric {
                    name: format!("suite-{s}/duration"),
                    values: vec![(random.next() % 10_000) as f64 / 100.0],
                    unit: Some("s".into()),
                })
                .collect();
        }
        let log: String = (0..self.log_lines)
            .map(|n| format!("[{:>10.6}] fake lab: seed {} line {n}\n", n as f64 / 1000.0, self.seed))
            .collect();
        let raw = json!({
            "status": self.status,
            "tests": tests.iter().map(|t| (t.name.clone(), Value::from(t.result.clone()))).collect::<Map<_, _>>(),
        });
        let mut metadata = Map::new();
        metadata.insert("fake_seed".into(), json!(self.seed));
        JobResults {
            status: self.status.clone(),
            completed,
            name: self.job_name.clone(),
            metadata,
            tests,
            metrics,
            log: Some(log.into_bytes()),
            raw: raw.to_string().into_bytes(),
            failure: (!completed).then(|| format!("the job ended {}", self.status)),
            ..JobResults::default()
        }
    }
}

/// `count` distinct numbers below `total`, sorted, chosen by `seed`.
fn choose(seed: u64, total: u64, count: u64) -> Vec<u64> {
    let mut random = SplitMix(seed);
    let mut chosen = std::collections::BTreeSet::new();
    while (chosen.len() as u64) < count.min(total) {
        chosen.insert(random.next() % total);
    }
    chosen.into_iter().collect()
}

/// SplitMix64: a tiny, well-known deterministic generator.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// One line of the fake lab's log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LabCall {
    /// `submit`, `fetch` or `cancel`.
    pub call: String,
    /// The job.
    pub job_id: String,
    /// The submission key (submit calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// When the job will be over, in milliseconds since the epoch (submit
    /// calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<i64>,
    /// When, in milliseconds since the epoch.
    pub at: i64,
}

impl LabCall {
    /// A call without a key.
    fn of(call: &str, job_id: &str, at: i64) -> LabCall {
        LabCall { call: call.into(), job_id: job_id.into(), key: None, at, ends_at: None }
    }
}

/// The fake lab, keeping its log at a path.
pub struct FakeLab {
    log: PathBuf,
}

impl FakeLab {
    /// A fake lab logging to `log`.
    pub fn new(log: PathBuf) -> FakeLab {
        FakeLab { log }
    }

    /// Every call the lab has seen, in order.
    pub fn calls(&self) -> std::io::Result<Vec<LabCall>> {
        Ok(self.calls_from(0)?.0)
    }

    /// The calls logged from byte `offset` on, and the offset after the
    /// last complete line.
    fn calls_from(&self, offset: u64) -> std::io::Result<(Vec<LabCall>, u64)> {
        let mut file = match std::fs::File::open(&self.log) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(offset))?;
        let (mut calls, mut read) = (Vec::new(), offset);
        let mut reader = BufReader::new(file);
        let mut line = String::new();
        while reader.read_line(&mut line)? > 0 && line.ends_with('\n') {
            read += line.len() as u64;
            // A line torn by a crash mid-write is skipped.
            if let Ok(call) = serde_json::from_str(&line) {
                calls.push(call);
            }
            line.clear();
        }
        Ok((calls, read))
    }

    fn record(&self, call: &LabCall) -> Result<(), BackendError> {
        let mut line = serde_json::to_vec(call).expect("a lab call serializes");
        line.push(b'\n');
        // One write on an O_APPEND file: lines from concurrent processes do
        // not interleave.
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .and_then(|mut f| f.write_all(&line))
            .map_err(|e| BackendError::Temporary(format!("the fake lab cannot write its log: {e}")))
    }

    fn calls_or_temporary(&self) -> Result<Vec<LabCall>, BackendError> {
        self.calls().map_err(|e| BackendError::Temporary(format!("the fake lab cannot read its log: {e}")))
    }
}

/// The submission time a fake job id carries.
fn submitted_at(job_id: &str) -> Option<DateTime<Utc>> {
    job_id.split('-').next()?.parse().ok().and_then(DateTime::from_timestamp_millis)
}

fn definition(job: &TestJob) -> Result<FakeDefinition, BackendError> {
    FakeDefinition::parse(job.definition.as_deref().unwrap_or("")).map_err(BackendError::Permanent)
}

#[async_trait]
impl Backend for FakeLab {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn check_definition(&self, definition: &str) -> Result<(), String> {
        FakeDefinition::parse(definition).map(|_| ())
    }

    async fn submit(&self, job: &TestJob, submission_key: &str) -> Result<Vec<String>, BackendError> {
        let runtime = definition(job)?.runtime;
        let now = Utc::now().timestamp_millis();
        let job_id = format!("{now}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        self.record(&LabCall {
            call: "submit".into(),
            job_id: job_id.clone(),
            key: Some(submission_key.into()),
            at: now,
            ends_at: Some(now + runtime.as_millis() as i64),
        })?;
        Ok(vec![job_id])
    }

    async fn lookup(&self, _job: &TestJob, submission_key: &str) -> Result<Option<Vec<String>>, BackendError> {
        let found: Vec<String> = self
            .calls_or_temporary()?
            .into_iter()
            .filter(|c| c.call == "submit" && c.key.as_deref() == Some(submission_key))
            .map(|c| c.job_id)
            .collect();
        Ok((!found.is_empty()).then_some(found))
    }

    async fn fetch(&self, job: &TestJob) -> Result<Fetched, BackendError> {
        let job_id = job.job_id.as_deref().ok_or_else(|| BackendError::Permanent("the job has no job id".into()))?;
        let started = submitted_at(job_id)
            .ok_or_else(|| BackendError::Permanent(format!("{job_id:?} is not a fake lab job id")))?;
        let now = Utc::now();
        self.record(&LabCall::of("fetch", job_id, now.timestamp_millis()))?;
        let definition = definition(job)?;
        let canceled = self.calls_or_temporary()?.iter().any(|c| c.call == "cancel" && c.job_id == job_id);
        let ended = started + chrono::Duration::from_std(definition.runtime).unwrap_or_default();
        if !canceled && now < ended {
            return Ok(Fetched::Running { status: Some("Running".into()) });
        }
        let mut results = if canceled {
            FakeDefinition { status: "Canceled".into(), log_lines: 0, ..definition }.results()
        } else {
            definition.results()
        };
        results.started_at = Some(started);
        results.ended_at = Some(ended.min(now));
        Ok(Fetched::Finished(Box::new(results)))
    }

    async fn cancel(&self, job: &TestJob) -> Result<bool, BackendError> {
        let Some(job_id) = job.job_id.as_deref() else {
            return Ok(false);
        };
        self.record(&LabCall::of("cancel", job_id, Utc::now().timestamp_millis()))?;
        Ok(true)
    }

    fn job_url(&self, job: &TestJob) -> Option<String> {
        job.job_id.as_ref().map(|id| format!("https://fake.example.com/job/{id}"))
    }

    /// Follows the lab's log: each submitted job is reported over when its
    /// runtime has passed, a cancelled one at once.
    async fn listen(&self, events: tokio::sync::mpsc::Sender<LabEvent>) -> Result<(), BackendError> {
        let mut offset = 0;
        let mut due: BinaryHeap<Reverse<(i64, String)>> = BinaryHeap::new();
        loop {
            let (calls, read) = self
                .calls_from(offset)
                .map_err(|e| BackendError::Temporary(format!("the fake lab cannot read its log: {e}")))?;
            offset = read;
            for call in calls {
                match (call.call.as_str(), call.ends_at) {
                    ("submit", Some(ends_at)) => due.push(Reverse((ends_at, call.job_id))),
                    ("cancel", _) => due.push(Reverse((call.at, call.job_id))),
                    _ => {}
                }
            }
            let now = Utc::now().timestamp_millis();
            while due.peek().is_some_and(|Reverse((at, _))| *at <= now) {
                let Reverse((_, job_id)) = due.pop().expect("peeked");
                let event = LabEvent { job_id, status: Some("Finished".into()), finished: true };
                if events.send(event).await.is_err() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_definition_gives_the_same_results() {
        let text = "tests: 500\nfailures: 5\nsuites: 10\nseed: 7\nruntime: 2s\nlog_lines: 1000\n";
        let (a, b) = (FakeDefinition::parse(text).unwrap().results(), FakeDefinition::parse(text).unwrap().results());
        assert_eq!(a.tests, b.tests);
        assert_eq!(a.metrics, b.metrics);
        assert_eq!(a.tests.len(), 500);
        assert_eq!(a.tests.iter().filter(|t| t.result == "fail").count(), 5);
        assert_eq!(
            a.tests.iter().map(|t| t.name.split('/').next().unwrap()).collect::<std::collections::BTreeSet<_>>().len(),
            10
        );
        assert_eq!(a.log.unwrap().iter().filter(|&&b| b == b'\n').count(), 1000);
        let other = FakeDefinition::parse(&text.replace("seed: 7", "seed: 8")).unwrap().results();
        assert_ne!(a.tests, other.tests, "another seed fails other tests");
    }

    #[test]
    fn bad_definitions_are_rejected_with_a_reason() {
        assert!(FakeDefinition::parse("tests: many").unwrap_err().contains("not a valid fake job definition"));
        assert!(FakeDefinition::parse("tests: 1\nfailures: 2").unwrap_err().contains("exceed"));
        assert!(FakeDefinition::parse("colour: blue").is_err(), "unknown keys are typos");
        assert!(FakeDefinition::parse("runtime: soon").is_err());
    }

    #[test]
    fn job_ids_carry_their_submission_time() {
        assert_eq!(submitted_at("1700000000000-abc").unwrap().timestamp(), 1_700_000_000);
        assert!(submitted_at("nope").is_none());
    }
}
