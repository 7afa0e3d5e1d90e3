//! The plugin interface and the registry of plugins by name.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Seek, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use squadron_core::submission::{SubmittedMetric, SubmittedTest};
use tracing::warn;

/// What a plugin reads. The pipeline implements it over the blob store
/// for stored runs and over the lab's artifacts for CI jobs.
pub trait PluginInput: Send + Sync {
    /// The run's log, if it has one.
    fn log(&self) -> std::io::Result<Option<Box<dyn BufRead + Send + '_>>>;
    /// The names of the run's attachments.
    fn attachments(&self) -> Vec<String>;
    /// An attachment's content, if the run has one by that name.
    fn attachment(&self, name: &str) -> std::io::Result<Option<Box<dyn ReadSeek + Send + '_>>>;
    /// Keeps a file the plugin derives (an extracted report) for its later
    /// steps: `write` writes it; returns its key for [`PluginInput::stashed`].
    fn stash(&self, write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>) -> std::io::Result<String>;
    /// A file kept by [`PluginInput::stash`].
    fn stashed(&self, key: &str) -> std::io::Result<Option<Box<dyn ReadSeek + Send + '_>>>;
    /// The project's settings (its YAML `project_settings`, as JSON).
    fn settings(&self) -> &serde_json::Value;
    /// The CI job whose results the run holds; `None` for a run submitted
    /// directly.
    fn job(&self) -> Option<&LabJob> {
        None
    }
    /// The run's failing tests (result `false`, known issues included) as
    /// `(suite, name)`, in name order.
    fn failed_tests(&self) -> std::io::Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }
    /// Downloads a file the lab's results point to into the stash; returns
    /// its key for [`PluginInput::stashed`]. A refusal by the server (4xx)
    /// or a file over the size limit is [`PluginError::BadInput`]; anything
    /// worth retrying is [`PluginError::Io`].
    fn download(&self, url: &str) -> Result<String, PluginError> {
        Err(PluginError::BadInput(format!("cannot download {url}: no lab behind this run")))
    }
    /// The address the run's attachment `filename` is (or will be) served
    /// at, for links between attached files; `None` when unknown (links
    /// are then left alone).
    fn attachment_url(&self, _filename: &str) -> Option<String> {
        None
    }
    /// Whether the worker wants the step given up (it is shutting down):
    /// a long step checks it as it reads ([`StopOnRequest`]) and returns
    /// [`PluginError::Interrupted`]; the step is done again elsewhere.
    fn should_stop(&self) -> bool {
        false
    }
}

/// Bytes read between two checks of [`PluginInput::should_stop`].
const STOP_CHECK_BYTES: u64 = 4 << 20;

/// A reader that fails once the input asks to stop (checked every few MiB),
/// so a step that reads a huge file gives up within a fraction of a second
/// of a shutdown.
pub struct StopOnRequest<'a, R> {
    inner: R,
    input: &'a dyn PluginInput,
    unchecked: u64,
}

impl<'a, R> StopOnRequest<'a, R> {
    /// Wraps `inner`, which `input` gave.
    pub fn new(inner: R, input: &'a dyn PluginInput) -> Self {
        StopOnRequest { inner, input, unchecked: 0 }
    }

    fn count(&mut self, bytes: usize) -> std::io::Result<()> {
        self.unchecked += bytes as u64;
        if self.unchecked >= STOP_CHECK_BYTES {
            self.unchecked = 0;
            if self.input.should_stop() {
                return Err(std::io::Error::other("the worker is stopping"));
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for StopOnRequest<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.count(read)?;
        Ok(read)
    }
}

impl<R: BufRead> BufRead for StopOnRequest<'_, R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.count(0)?;
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.unchecked += amount as u64;
        self.inner.consume(amount);
    }
}

impl<R: Seek> Seek for StopOnRequest<'_, R> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(to)
    }
}

/// What a plugin may know of the CI job a run came from.
#[derive(Debug, Clone, Default)]
pub struct LabJob {
    /// The backend's implementation type (`lava`, `tuxsuite`, `fake`).
    pub backend: String,
    /// The job's id in the lab.
    pub job_id: Option<String>,
    /// The job's definition as submitted.
    pub definition: Option<String>,
    /// The files the lab's results point to.
    pub artifacts: Vec<LabArtifact>,
}

/// A file a lab's results point to (LAVA: the `reference` of a
/// `test-attachment` result).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabArtifact {
    /// The lab's suite the result is in, as the lab names it (`1_cts-lkft`).
    pub suite: String,
    /// The result's outcome (`pass`, `fail`, …).
    pub result: String,
    /// Where the file is.
    pub url: String,
}

/// A known issue a plugin files for the run's environment (created if no
/// issue has this title and test name, else extended to the environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownIssueRef {
    /// The issue's title.
    pub title: String,
    /// The full name (`<suite>/<test>`) of the test it covers.
    pub test_name: String,
}

/// A stashed file to attach to the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StashedAttachment {
    /// The attachment's file name.
    pub filename: String,
    /// The key [`PluginInput::stash`] or [`PluginInput::download`] gave.
    pub key: String,
    /// Its media type.
    pub mimetype: String,
}

/// A readable, seekable input.
pub trait ReadSeek: Read + Seek {}

impl<T: Read + Seek> ReadSeek for T {}

/// What one step of a plugin produced.
#[derive(Debug, Default)]
pub struct StepOutput {
    /// Tests to add to the run (or to overwrite, by suite and name).
    pub tests: Vec<SubmittedTest>,
    /// Metrics to add to the run (or to overwrite).
    pub metrics: Vec<SubmittedMetric>,
    /// Known issues to file before the tests are written, so that the
    /// tests they cover count as expected failures.
    pub known_issues: Vec<KnownIssueRef>,
    /// Files to attach to the run.
    pub attachments: Vec<StashedAttachment>,
    /// Entries to add to the run's metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Where the next step starts; `None` when the plugin is done.
    pub next: Option<serde_json::Value>,
}

/// Why a plugin step failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The input is unusable (truncated, wrong format, over a limit): no
    /// retry can help, and the failure is recorded on the run or job.
    #[error("{0}")]
    BadInput(String),
    /// Reading the input failed; worth retrying.
    #[error("cannot read the plugin's input: {0}")]
    Io(#[from] std::io::Error),
    /// The step was given up because the worker is stopping.
    #[error("the worker is stopping")]
    Interrupted,
}

/// A post-processing plugin.
pub trait Plugin: Send + Sync {
    /// The name projects enable it by (in `enabled_plugins_list`).
    fn name(&self) -> &'static str;
    /// Whether the run has anything for this plugin (a log, an attachment
    /// of the right name, …); a plugin that has nothing to do is skipped.
    fn applies_to(&self, input: &dyn PluginInput) -> bool;
    /// Runs one step from `cursor` (`None` for the first step). A step is
    /// pure: given the same input and cursor it returns the same output.
    /// It should stay short (seconds), so a worker asked to stop hands the
    /// task back quickly.
    fn step(&self, input: &dyn PluginInput, cursor: Option<&serde_json::Value>) -> Result<StepOutput, PluginError>;
}

/// The plugins a process knows, by name.
#[derive(Clone, Default)]
pub struct Plugins {
    by_name: BTreeMap<&'static str, Arc<dyn Plugin>>,
    aliases: BTreeMap<&'static str, &'static str>,
}

impl Plugins {
    /// No plugins.
    pub fn new() -> Plugins {
        Plugins::default()
    }

    /// Every plugin squadron has (and, in a test build, the pipeline
    /// tests' own).
    pub fn builtin() -> Plugins {
        let mut plugins = Plugins::new();
        plugins.register(Arc::new(crate::linux_log::LinuxLogParser));
        plugins.register(Arc::new(crate::linux_log::LinuxLogParserBuild));
        plugins.alias(crate::linux_log::LINUX_LOG_PARSER_ALIAS, "linux_log_parser");
        plugins.register(Arc::new(crate::tradefed::Tradefed));
        #[cfg(feature = "testing")]
        plugins.register(Arc::new(crate::testing::StepCounter));
        plugins
    }

    /// Adds a plugin under its name.
    pub fn register(&mut self, plugin: Arc<dyn Plugin>) {
        self.by_name.insert(plugin.name(), plugin);
    }

    /// Makes `alias` another name of the plugin called `name`.
    pub fn alias(&mut self, alias: &'static str, name: &'static str) {
        self.aliases.insert(alias, name);
    }

    /// The plugin called (or aliased) `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Plugin>> {
        let name = self.aliases.get(name).copied().unwrap_or(name);
        self.by_name.get(name).cloned()
    }

    /// The plugins a project enables, each once, in the order listed.
    /// Unknown names are kept in the project and skipped with a warning,
    /// as SQUAD does, so projects migrated from SQUAD keep working.
    pub fn enabled<S: AsRef<str>>(&self, names: impl IntoIterator<Item = S>) -> Vec<Arc<dyn Plugin>> {
        let mut found: Vec<Arc<dyn Plugin>> = Vec::new();
        for name in names {
            let name = name.as_ref();
            match self.get(name) {
                Some(plugin) if !found.iter().any(|p| p.name() == plugin.name()) => found.push(plugin),
                Some(_) => {}
                None => warn!(plugin = %name, "unknown plugin enabled in a project; ignored"),
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Named(&'static str);

    impl Plugin for Named {
        fn name(&self) -> &'static str {
            self.0
        }
        fn applies_to(&self, _: &dyn PluginInput) -> bool {
            true
        }
        fn step(&self, _: &dyn PluginInput, _: Option<&serde_json::Value>) -> Result<StepOutput, PluginError> {
            Ok(StepOutput::default())
        }
    }

    /// A run with a big log whose worker starts stopping at once.
    struct Stopping(Vec<u8>);

    impl PluginInput for Stopping {
        fn log(&self) -> std::io::Result<Option<Box<dyn BufRead + Send + '_>>> {
            Ok(Some(Box::new(std::io::Cursor::new(&self.0))))
        }
        fn attachments(&self) -> Vec<String> {
            Vec::new()
        }
        fn attachment(&self, _: &str) -> std::io::Result<Option<Box<dyn ReadSeek + Send + '_>>> {
            Ok(None)
        }
        fn stash(&self, _: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>) -> std::io::Result<String> {
            Err(std::io::Error::other("no stash"))
        }
        fn stashed(&self, _: &str) -> std::io::Result<Option<Box<dyn ReadSeek + Send + '_>>> {
            Ok(None)
        }
        fn settings(&self) -> &serde_json::Value {
            &serde_json::Value::Null
        }
        fn should_stop(&self) -> bool {
            true
        }
    }

    #[test]
    fn a_long_read_gives_up_once_the_worker_is_stopping() {
        let input = Stopping(b"[    1.000000] nothing to see here\n".repeat(1 << 18));
        let mut reader = StopOnRequest::new(input.log().unwrap().unwrap(), &input);
        let mut read = Vec::new();
        assert!(reader.read_to_end(&mut read).is_err());
        assert!(read.len() as u64 <= STOP_CHECK_BYTES + (64 << 10), "stopped within a few MiB: {}", read.len());
        let step = crate::linux_log::LinuxLogParser.step(&input, None);
        assert!(matches!(step, Err(PluginError::Interrupted)), "{step:?}");
    }

    #[test]
    fn enabled_resolves_aliases_once_and_skips_unknown_names() {
        let mut plugins = Plugins::new();
        plugins.register(Arc::new(Named("linux_log_parser")));
        plugins.register(Arc::new(Named("tradefed")));
        plugins.alias("linux-log-parser", "linux_log_parser");
        let names = ["linux-log-parser", "nope", "tradefed", "linux_log_parser"];
        let enabled: Vec<&str> = plugins.enabled(names).iter().map(|p| p.name()).collect();
        assert_eq!(enabled, ["linux_log_parser", "tradefed"]);
    }
}
