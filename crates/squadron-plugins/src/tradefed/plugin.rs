//! `tradefed` as a plugin: a run's `test_result.xml` (attached as such, or
//! inside an attached results archive) recorded as tests, in steps.
//!
//! The first step finds the report; an archive is extracted into the
//! plugin's stash (a file kept for its later steps) with the archive
//! limits against bombs. Then each step parses [`BATCH_TESTS`] tests from
//! the last cursor (a byte offset into the report, with the enclosing
//! module, ABI and test case), so an interrupted run resumes after its last
//! stored batch and ends with exactly the rows of an uninterrupted one. The
//! last step adds the report's counts as metrics.
//!
//! Suites are `<action>/<abi>.<module>`, with `action` the report's
//! `suite_name` in lower case (`cts`, `vts`), as the test action of a
//! direct submission. Every test is recorded (SQUAD's
//! `PLUGINS_TRADEFED_EXTRACT_AGGREGATED` behaviour); `ASSUMPTION_FAILURE`
//! tests are recorded as failures (SQUAD also files a known issue for
//! them, which squadron does not yet).

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

use quick_xml::events::Event;
use serde::{Deserialize, Serialize};
use squadron_core::submission::{SubmittedMetric, SubmittedTest};

use super::archive::{detect_format, extract_test_result, Format, Limits, TEST_RESULT};
use super::results::{Counts, Cursor, Parser};
use crate::{Plugin, PluginError, PluginInput, StepOutput};

/// Tests parsed and written per step.
pub const BATCH_TESTS: usize = 5000;

/// `tradefed`.
pub struct Tradefed;

/// Where the report is.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Source {
    /// An attachment that is the report itself.
    Attachment(String),
    /// A report extracted from an archive into the stash.
    Stashed(String),
}

/// The plugin's cursor between steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    source: Source,
    action: String,
    /// Where the parse stopped; `None` before the first batch.
    parse: Option<Cursor>,
}

/// Whether the first bytes of `input` are an archive or a report.
fn format_of(input: &dyn PluginInput, name: &str) -> Option<Format> {
    let mut head = [0u8; 512];
    let mut file = input.attachment(name).ok()??;
    let read = file.read(&mut head).ok()?;
    detect_format(&head[..read])
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

impl Tradefed {
    /// Finds the report, extracting it from an archive if needed.
    fn locate(&self, input: &dyn PluginInput) -> Result<State, PluginError> {
        let names = input.attachments();
        let source = if names.iter().any(|n| n == TEST_RESULT) {
            Source::Attachment(TEST_RESULT.into())
        } else {
            let archive = names
                .iter()
                .find(|n| matches!(format_of(input, n), Some(Format::Zip | Format::TarGz | Format::TarXz)))
                .ok_or_else(|| PluginError::BadInput("no test_result.xml and no results archive attached".into()))?;
            let mut file =
                input.attachment(archive)?.ok_or_else(|| PluginError::BadInput(format!("{archive} vanished")))?;
            let mut failure = None;
            let key = input.stash(&mut |out| {
                if let Err(e) = extract_test_result(&mut file, out, &Limits::default()) {
                    failure = Some(e.to_string());
                }
                Ok(())
            })?;
            if let Some(e) = failure {
                return Err(PluginError::BadInput(format!("{archive}: {e}")));
            }
            Source::Stashed(key)
        };
        let action = action_of(BufReader::new(self.open(input, &source)?));
        Ok(State { source, action, parse: None })
    }

    fn open<'a>(
        &self,
        input: &'a dyn PluginInput,
        source: &Source,
    ) -> Result<Box<dyn crate::ReadSeek + Send + 'a>, PluginError> {
        let file = match source {
            Source::Attachment(name) => input.attachment(name)?,
            Source::Stashed(key) => input.stashed(key)?,
        };
        file.ok_or_else(|| PluginError::BadInput("the report is gone".into()))
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
}

impl Plugin for Tradefed {
    fn name(&self) -> &'static str {
        "tradefed"
    }

    fn applies_to(&self, input: &dyn PluginInput) -> bool {
        input.attachments().iter().any(|n| {
            n == TEST_RESULT || matches!(format_of(input, n), Some(Format::Zip | Format::TarGz | Format::TarXz))
        })
    }

    fn step(&self, input: &dyn PluginInput, cursor: Option<&serde_json::Value>) -> Result<StepOutput, PluginError> {
        let Some(cursor) = cursor else {
            let state = self.locate(input)?;
            return Ok(StepOutput {
                next: Some(serde_json::to_value(&state).expect("state serializes")),
                ..StepOutput::default()
            });
        };
        let mut state: State =
            serde_json::from_value(cursor.clone()).map_err(|e| PluginError::BadInput(format!("bad cursor: {e}")))?;
        let mut file = self.open(input, &state.source)?;
        let mut parser = match state.parse.clone() {
            None => Parser::new(BufReader::new(file), state.action.clone(), BATCH_TESTS),
            Some(at) => {
                file.seek(SeekFrom::Start(at.byte_offset))?;
                Parser::resume(BufReader::new(file), at, state.action.clone(), BATCH_TESTS)
            }
        };
        let batch = parser.next_batch().map_err(|e| PluginError::BadInput(format!("test_result.xml: {e}")))?;
        let Some(batch) = batch else {
            let counts = state.parse.map(|c| c.counts).unwrap_or_default();
            let metrics = Self::summary(&state.action, parser.summary().unwrap_or(&counts));
            return Ok(StepOutput { tests: Vec::new(), metrics, next: None });
        };
        let tests = batch
            .tests
            .iter()
            .map(|t| SubmittedTest {
                suite: t.suite.clone(),
                name: t.name.clone(),
                result: t.result(),
                log: (!t.log.is_empty()).then(|| t.log.clone()),
            })
            .collect();
        let over = batch.cursor.module.is_none();
        let metrics = if over { Self::summary(&state.action, &batch.cursor.counts) } else { Vec::new() };
        state.parse = Some(batch.cursor);
        let next = (!over).then(|| serde_json::to_value(&state).expect("state serializes"));
        Ok(StepOutput { tests, metrics, next })
    }
}
