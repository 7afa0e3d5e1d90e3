//! The log parsers as plugins: `linux_log_parser` (and its older name
//! `linux-log-parser`, squad-client's default, which SQUAD 1.98 silently
//! ignores: here it is an alias, so projects set up with squad-client get
//! the parser they asked for) and `linux_log_parser_build`. Each reads the
//! run's log in one streaming pass, as one step; a worker that is stopping
//! makes the step give up within a few MiB (it is done again elsewhere,
//! from the start).

use std::io::BufRead;

use squadron_core::submission::SubmittedTest;

use super::{parse_boot_log, parse_build_log, LogParseError, LogTest};
use crate::{Plugin, PluginError, PluginInput, StepOutput, StopOnRequest};

/// `linux_log_parser`: kernel failures in a boot or test log.
pub struct LinuxLogParser;

/// `linux_log_parser_build`: compiler warnings and errors in a kernel
/// build log.
pub struct LinuxLogParserBuild;

/// The older name of `linux_log_parser`.
pub const LINUX_LOG_PARSER_ALIAS: &str = "linux-log-parser";

fn run(
    input: &dyn PluginInput,
    parse: fn(Box<dyn BufRead + Send + '_>) -> Result<Vec<LogTest>, LogParseError>,
) -> Result<StepOutput, PluginError> {
    let Some(log) = input.log()? else {
        return Ok(StepOutput::default());
    };
    let found = parse(Box::new(StopOnRequest::new(log, input))).map_err(|LogParseError::Io(e)| {
        if input.should_stop() {
            PluginError::Interrupted
        } else {
            PluginError::Io(e)
        }
    })?;
    let tests = found
        .iter()
        .map(|t| SubmittedTest {
            suite: t.suite.clone(),
            name: t.name.clone(),
            result: Some(t.result),
            log: Some(t.log()),
        })
        .collect();
    Ok(StepOutput { tests, ..StepOutput::default() })
}

fn has_log(input: &dyn PluginInput) -> bool {
    input.log().is_ok_and(|log| log.is_some())
}

impl Plugin for LinuxLogParser {
    fn name(&self) -> &'static str {
        "linux_log_parser"
    }

    fn applies_to(&self, input: &dyn PluginInput) -> bool {
        has_log(input)
    }

    fn step(&self, input: &dyn PluginInput, _: Option<&serde_json::Value>) -> Result<StepOutput, PluginError> {
        run(input, |log| parse_boot_log(log))
    }
}

impl Plugin for LinuxLogParserBuild {
    fn name(&self) -> &'static str {
        "linux_log_parser_build"
    }

    fn applies_to(&self, input: &dyn PluginInput) -> bool {
        has_log(input)
    }

    fn step(&self, input: &dyn PluginInput, _: Option<&serde_json::Value>) -> Result<StepOutput, PluginError> {
        run(input, |log| parse_build_log(log))
    }
}
