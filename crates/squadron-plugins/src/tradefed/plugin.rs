//! `tradefed` as a plugin: a run's `test_result.xml` read in steps.
//!
//! Where the report comes from:
//! - a CI job whose definition has exactly one test definition from a
//!   `tradefed.yaml` (its `name` is the action, its `RESULTS_FORMAT` the
//!   format): the results archive a lab result of a suite containing that
//!   name points to (LAVA's `test-attachment`), downloaded into the stash
//!   and attached to the run with the report, its address in the run's
//!   metadata (`tradefed_results_url_<job id>`); else an attached report or
//!   archive. A job without such a definition is left alone, as SQUAD does;
//! - a run submitted directly: an attachment named `test_result.xml`, or an
//!   attached archive that holds one; the action is the report's
//!   `suite_name` in lower case (`cts`, `vts`).
//!
//! What it does with it:
//! - **record every test** (a direct submission; a CI job whose project
//!   sets `PLUGINS_TRADEFED_EXTRACT_AGGREGATED` and whose format is
//!   `aggregated`): suites `<action>/<abi>.<module>`, tests
//!   `<TestCase>.<Test>`; each `ASSUMPTION_FAILURE` files a known issue
//!   `Tradefed/<suite>/<test>` for the run's environment, so the test is an
//!   expected failure; the last step adds the report's counts as metrics;
//! - otherwise (SQUAD's default for CI jobs) **decorate**: the stack traces
//!   of the report go to the failed tests the lab reported
//!   ([`super::decorate`]).
//!
//! Steps: locating (and downloading) the report, extracting it from its
//! archive into the stash (with the archive limits against bombs), then
//! batches of [`BATCH_TESTS`] tests from the last cursor (a byte offset with
//! the enclosing module, ABI and test case), so an interrupted run resumes
//! after its last stored batch and ends with exactly the rows of an
//! uninterrupted one.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

use quick_xml::events::Event;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use squadron_core::results::TestStatus;
use squadron_core::settings::truthy;
use squadron_core::submission::{SubmittedMetric, SubmittedTest};

use super::archive::{detect_format, extract_members, ArchiveError, Format, Limits, Member, TEST_RESULT};
use super::companions::{attachment_of, write_member};
use super::decorate::{DecorateState, Decorator};
use super::results::{Counts, Cursor, Parser, TradefedTest};
use crate::{KnownIssueRef, LabJob, Plugin, PluginError, PluginInput, StashedAttachment, StepOutput, StopOnRequest};

/// Tests parsed and written per step when every test is recorded.
pub const BATCH_TESTS: usize = 5000;
/// Tests read per step when decorating (little is written).
const DECORATE_BATCH_TESTS: usize = 50_000;
/// The project setting that makes a CI job's `aggregated` results
/// recorded test by test.
pub const EXTRACT_AGGREGATED: &str = "PLUGINS_TRADEFED_EXTRACT_AGGREGATED";

/// `tradefed`.
pub struct Tradefed;

/// An attachment, or a file in the stash.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum File {
    Attachment(String),
    Stashed(String),
}

/// What is done with the report's tests.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Mode {
    RecordAll,
    Decorate(DecorateState),
}

/// The plugin's cursor between steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum State {
    /// The report is to be extracted from an archive.
    Extract {
        archive: File,
        action: Option<String>,
        mode: Mode,
        /// Whether to attach the extracted report and its companion files
        /// (the archive came from the lab).
        attach_report: bool,
    },
    /// The report is being read; `parse` is `None` before the first batch.
    Read { report: File, action: String, mode: Mode, parse: Option<Cursor> },
}

/// Whether the first bytes of an attachment are an archive or a report.
fn format_of(input: &dyn PluginInput, name: &str) -> Option<Format> {
    let mut head = [0u8; 512];
    let mut file = input.attachment(name).ok()??;
    let read = file.read(&mut head).ok()?;
    detect_format(&head[..read])
}

fn is_archive(format: Option<Format>) -> bool {
    matches!(format, Some(Format::Zip | Format::TarGz | Format::TarXz))
}

/// The attached report, or else the first attached archive.
fn attached(input: &dyn PluginInput) -> Option<File> {
    let names = input.attachments();
    if names.iter().any(|n| n == TEST_RESULT) {
        return Some(File::Attachment(TEST_RESULT.into()));
    }
    names.into_iter().find(|n| is_archive(format_of(input, n))).map(File::Attachment)
}

/// The test definitions of a job definition that run `tradefed.yaml`, as
/// `(name, RESULTS_FORMAT)`; those without either are skipped, as SQUAD
/// skips them.
pub fn tradefed_definitions(definition: &str) -> Vec<(String, String)> {
    let Ok(definition) = serde_norway::from_str::<Value>(definition) else {
        return Vec::new();
    };
    let actions = definition.get("actions").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let definitions = actions.iter().filter_map(|action| action.get("test")?.get("definitions")?.as_array()).flatten();
    definitions
        .filter(|d| d.get("path").and_then(Value::as_str).is_some_and(|p| p.contains("tradefed.yaml")))
        .filter_map(|d| {
            let name = d.get("name")?.as_str()?.to_string();
            let format = d.get("params")?.get("RESULTS_FORMAT")?;
            Some((name, format.as_str().map_or_else(|| format.to_string(), str::to_string)))
        })
        .collect()
}

/// The one tradefed test definition of a job, if it has exactly one.
fn job_tradefed(job: &LabJob) -> Option<(String, String)> {
    let mut found = tradefed_definitions(job.definition.as_deref()?);
    (found.len() == 1).then(|| found.remove(0))
}

/// The lab's artifact for test definition `name`: a passed result of the
/// first suite whose name contains it.
fn artifact<'a>(job: &'a LabJob, name: &str) -> Option<&'a str> {
    job.artifacts.iter().find(|a| a.suite.contains(name) && a.result == "pass").map(|a| a.url.as_str())
}

/// The file name of a results archive from its address, as SQUAD finds it
/// (a `….tar.xz` name in the path or the query), else `tradefed.tar.gz`.
fn archive_name(url: &str) -> String {
    let tarball = |text: &str| -> Option<String> {
        let start = text.rfind(|c: char| !(c.is_alphanumeric() || "_.-".contains(c))).map_or(0, |i| i + 1);
        let name = &text[start..];
        (name.ends_with("tar.xz") && name.len() > "tar.xz".len()).then(|| name.to_string())
    };
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let path = path.split('#').next().unwrap_or(path);
    tarball(path.rsplit('/').next().unwrap_or(path))
        .or_else(|| query.split('&').filter_map(|pair| pair.split_once('=')).find_map(|(_, value)| tarball(value)))
        .unwrap_or_else(|| "tradefed.tar.gz".into())
}

/// The report's `suite_name`, lower case (`tradefed` without one).
fn action_of(reader: impl BufRead) -> String {
    let mut xml = quick_xml::Reader::from_reader(reader);
    let mut buf = Vec::new();
    loop {
        match xml.read_event_into(&mut buf) {
            Ok(Event::Start(e) | Event::Empty(e)) if e.name().as_ref() == b"Result" => {
                let name = e
                    .attributes()
                    .flatten()
                    .find(|a| a.key.as_ref() == b"suite_name")
                    .and_then(|a| a.unescape_value().ok().map(|v| v.to_lowercase()));
                return name.filter(|n| !n.is_empty()).unwrap_or_else(|| "tradefed".into());
            }
            Ok(Event::Eof) | Err(_) => return "tradefed".into(),
            _ => buf.clear(),
        }
    }
}

fn open<'a>(input: &'a dyn PluginInput, file: &File) -> Result<Box<dyn crate::ReadSeek + Send + 'a>, PluginError> {
    let found = match file {
        File::Attachment(name) => input.attachment(name)?,
        File::Stashed(key) => input.stashed(key)?,
    };
    found.ok_or_else(|| PluginError::BadInput("the report is gone".into()))
}

fn encode(state: &State) -> Option<Value> {
    Some(serde_json::to_value(state).expect("the state serializes"))
}

impl Tradefed {
    /// The first step: where the report is and what to do with it;
    /// `None` when there is nothing to do.
    fn locate(&self, input: &dyn PluginInput) -> Result<Option<StepOutput>, PluginError> {
        let Some(job) = input.job() else {
            let Some(file) = attached(input) else { return Ok(None) };
            return Ok(Some(self.start(input, file, None, Mode::RecordAll, false)?));
        };
        let Some((name, format)) = job_tradefed(job) else { return Ok(None) };
        let aggregated = input.settings().get(EXTRACT_AGGREGATED).is_some_and(truthy) && format == "aggregated";
        let mode = if aggregated { Mode::RecordAll } else { Mode::Decorate(DecorateState::new()) };
        let Some(url) = artifact(job, &name) else {
            let Some(file) = attached(input) else { return Ok(None) };
            return Ok(Some(self.start(input, file, Some(name), mode, false)?));
        };
        let key = input.download(url)?;
        let mut output = self.start(input, File::Stashed(key.clone()), Some(name), mode, true)?;
        output.attachments.push(StashedAttachment {
            filename: archive_name(url),
            key,
            mimetype: "application/x-tar".into(),
        });
        let job_id = job.job_id.as_deref().unwrap_or("None");
        output.metadata.insert(format!("tradefed_results_url_{job_id}"), Value::from(url));
        Ok(Some(output))
    }

    /// Goes on with `file`: a report is read next, an archive extracted.
    fn start(
        &self,
        input: &dyn PluginInput,
        file: File,
        action: Option<String>,
        mode: Mode,
        attach_report: bool,
    ) -> Result<StepOutput, PluginError> {
        let head = {
            let mut head = [0u8; 512];
            let read = open(input, &file)?.read(&mut head)?;
            detect_format(&head[..read])
        };
        let state = if is_archive(head) {
            State::Extract { archive: file, action, mode, attach_report }
        } else {
            self.reading(input, file, action, mode)?
        };
        Ok(StepOutput { next: encode(&state), ..StepOutput::default() })
    }

    /// The state that reads `report` from its beginning.
    fn reading(
        &self,
        input: &dyn PluginInput,
        report: File,
        action: Option<String>,
        mode: Mode,
    ) -> Result<State, PluginError> {
        let action = match action {
            Some(action) => action,
            None => action_of(BufReader::new(open(input, &report)?)),
        };
        Ok(State::Read { report, action, mode, parse: None })
    }

    /// Extracts the report from its archive into the stash, and its
    /// companion files too when they are to be attached.
    fn extract(
        &self,
        input: &dyn PluginInput,
        archive: File,
        action: Option<String>,
        mode: Mode,
        attach_report: bool,
    ) -> Result<StepOutput, PluginError> {
        let mut file = StopOnRequest::new(open(input, &archive)?, input);
        let wanted: &[Member] = if attach_report { &Member::ALL } else { &[Member::TestResult] };
        let url_of = |name: &str| input.attachment_url(name).filter(|_| attach_report);
        let mut stashed = Vec::new();
        let extracted = extract_members(&mut file, wanted, &Limits::default(), &mut |member, copy| {
            let key = input.stash(&mut |out| write_member(member, &url_of, out, copy))?;
            stashed.push((member, key));
            Ok(())
        });
        if input.should_stop() {
            return Err(PluginError::Interrupted);
        }
        match extracted {
            Ok(_) => {}
            Err(ArchiveError::Write(e)) => return Err(PluginError::Io(e)),
            Err(e) => {
                let name = match &archive {
                    File::Attachment(name) => name.as_str(),
                    File::Stashed(_) => "the results archive",
                };
                return Err(PluginError::BadInput(format!("{name}: {e}")));
            }
        }
        stashed.sort();
        let report = stashed.iter().find(|(m, _)| *m == Member::TestResult).map(|(_, key)| key.clone());
        let report = report.expect("a successful extraction stashed the report");
        let state = self.reading(input, File::Stashed(report), action, mode)?;
        let mut output = StepOutput { next: encode(&state), ..StepOutput::default() };
        if attach_report {
            output.attachments = stashed
                .into_iter()
                .map(|(member, key)| {
                    let (filename, mimetype) = attachment_of(member);
                    StashedAttachment { filename: filename.into(), key, mimetype: mimetype.into() }
                })
                .collect();
        }
        Ok(output)
    }

    /// Reads the next batch of the report.
    fn read(
        &self,
        input: &dyn PluginInput,
        report: File,
        action: String,
        mode: Mode,
        parse: Option<Cursor>,
    ) -> Result<StepOutput, PluginError> {
        let batch_size = match mode {
            Mode::RecordAll => BATCH_TESTS,
            Mode::Decorate(_) => DECORATE_BATCH_TESTS,
        };
        let decorator = match &mode {
            Mode::RecordAll => None,
            Mode::Decorate(_) => {
                let decorator = Decorator::new(&input.failed_tests()?);
                if decorator.is_empty() {
                    return Ok(StepOutput::default());
                }
                Some(decorator)
            }
        };
        let mut file = open(input, &report)?;
        let mut parser = match parse.clone() {
            None => Parser::new(BufReader::new(file), action.clone(), batch_size),
            Some(at) => {
                file.seek(SeekFrom::Start(at.byte_offset))?;
                Parser::resume(BufReader::new(file), at, action.clone(), batch_size)
            }
        };
        let batch = parser.next_batch().map_err(|e| PluginError::BadInput(format!("test_result.xml: {e}")))?;
        let counts = match (&batch, parser.summary()) {
            (Some(batch), _) => batch.cursor.counts,
            (None, Some(counts)) => *counts,
            (None, None) => parse.as_ref().map(|c| c.counts).unwrap_or_default(),
        };
        let (tests, over) = match batch {
            Some(batch) => {
                let over = batch.cursor.module.is_none();
                (batch.tests, (!over).then_some(batch.cursor))
            }
            None => (Vec::new(), None),
        };
        match (mode, decorator) {
            (Mode::Decorate(mut state), Some(decorator)) => {
                let mut output = StepOutput::default();
                if state.pass == 1 {
                    output.tests = decorator.first_pass(&mut state, &tests);
                } else {
                    decorator.second_pass(&mut state, &tests);
                }
                let next = match over {
                    Some(cursor) => {
                        Some(State::Read { report, action, mode: Mode::Decorate(state), parse: Some(cursor) })
                    }
                    None if state.pass == 1 && decorator.needs_second_pass(&state) => {
                        state.pass = 2;
                        Some(State::Read { report, action, mode: Mode::Decorate(state), parse: None })
                    }
                    None => {
                        output.tests.extend(decorator.finish(&state));
                        None
                    }
                };
                output.next = next.as_ref().and_then(encode);
                Ok(output)
            }
            (mode, _) => {
                let known_issues = tests.iter().filter_map(known_issue).collect();
                let tests = tests.into_iter().map(recorded).collect();
                let (metrics, next) = match over {
                    Some(cursor) => (Vec::new(), encode(&State::Read { report, action, mode, parse: Some(cursor) })),
                    None => (summary(&action, &counts), None),
                };
                Ok(StepOutput { tests, metrics, known_issues, next, ..StepOutput::default() })
            }
        }
    }
}

/// A report's test as a test of the run.
fn recorded(test: TradefedTest) -> SubmittedTest {
    let result = test.result();
    SubmittedTest { suite: test.suite, name: test.name, result, log: (!test.log.is_empty()).then_some(test.log) }
}

/// The known issue SQUAD files for an `ASSUMPTION_FAILURE`.
fn known_issue(test: &TradefedTest) -> Option<KnownIssueRef> {
    (test.status == TestStatus::Xfail).then(|| KnownIssueRef {
        title: test.known_issue_title().unwrap_or_default(),
        test_name: format!("{}/{}", test.suite, test.name),
    })
}

/// The report's counts as metrics of suite `action`.
fn summary(action: &str, counts: &Counts) -> Vec<SubmittedMetric> {
    [
        ("tests-total", counts.tests),
        ("tests-pass", counts.pass),
        ("tests-fail", counts.fail),
        ("tests-assumption-failure", counts.xfail),
        ("tests-skip", counts.skip),
        ("modules-total", counts.modules),
        ("modules-done", counts.modules_done),
    ]
    .into_iter()
    .map(|(name, n)| SubmittedMetric {
        suite: action.to_string(),
        name: name.to_string(),
        result: n as f64,
        measurements: vec![n as f64],
        unit: None,
    })
    .collect()
}

impl Plugin for Tradefed {
    fn name(&self) -> &'static str {
        "tradefed"
    }

    fn applies_to(&self, input: &dyn PluginInput) -> bool {
        match input.job() {
            None => attached(input).is_some(),
            Some(job) => match job_tradefed(job) {
                Some((name, _)) => artifact(job, &name).is_some() || attached(input).is_some(),
                None => false,
            },
        }
    }

    fn step(&self, input: &dyn PluginInput, cursor: Option<&Value>) -> Result<StepOutput, PluginError> {
        let Some(cursor) = cursor else {
            return Ok(self.locate(input)?.unwrap_or_default());
        };
        let state: State =
            serde_json::from_value(cursor.clone()).map_err(|e| PluginError::BadInput(format!("bad cursor: {e}")))?;
        match state {
            State::Extract { archive, action, mode, attach_report } => {
                self.extract(input, archive, action, mode, attach_report)
            }
            State::Read { report, action, mode, parse } => self.read(input, report, action, mode, parse),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tradefed_definitions_as_squad_finds_them() {
        let definition = r#"
actions:
- deploy: {to: fastboot}
- test:
    definitions:
    - {name: boot, path: automated/android/boot.yaml, from: git}
    - name: cts-lkft
      path: automated/android/noninteractive-tradefed/tradefed.yaml
      params: {TEST_PARAMS: cts, RESULTS_FORMAT: aggregated}
    - {name: no-format, path: x/tradefed.yaml, params: {}}
"#;
        assert_eq!(tradefed_definitions(definition), [("cts-lkft".to_string(), "aggregated".to_string())]);
        assert!(tradefed_definitions("job_name: x").is_empty());
        assert!(tradefed_definitions("not: [valid").is_empty());
    }

    #[test]
    fn archive_names_from_addresses() {
        assert_eq!(archive_name("https://a.b/x/android-cts-results.tar.xz"), "android-cts-results.tar.xz");
        assert_eq!(archive_name("https://a.b/fetch?url=http://c/d/r-1.tar.xz&x=1"), "r-1.tar.xz");
        assert_eq!(archive_name("https://a.b/artifacts/123"), "tradefed.tar.gz");
    }
}
