//! Post-processing plugins: a plugin turns a test run's raw output (its
//! log, its attachments, the lab's results) into more tests and metrics.
//!
//! Plugins know no database and no lab: they read through [`PluginInput`]
//! and work in steps ([`Plugin::step`]), each returning its output and a
//! cursor to resume from. The pipeline stores each step's output together
//! with the cursor, so a plugin interrupted at any moment resumes where it
//! was and gives the same rows as an uninterrupted run. The parsers behind
//! the plugins are pure and streaming (`linux_log`, `tradefed`).

pub mod linux_log;
mod plugin;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tradefed;

pub use plugin::{
    KnownIssueRef, LabArtifact, LabJob, Plugin, PluginError, PluginInput, Plugins, ReadSeek, StashedAttachment,
    StepOutput, StopOnRequest,
};
