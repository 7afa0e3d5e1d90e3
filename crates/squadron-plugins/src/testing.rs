//! A plugin for the pipeline's own tests: it works in a configurable number
//! of steps, each adding tests and taking a configurable time, so tests can
//! interrupt it between and within steps.

use std::time::Duration;

use squadron_core::submission::SubmittedTest;

use crate::{Plugin, PluginError, PluginInput, StepOutput};

/// `test-steps`: adds `TEST_PLUGIN_TESTS_PER_STEP` (default 2) passing tests
/// named `test-plugin/step-<step>-<n>` in each of `TEST_PLUGIN_STEPS`
/// (default 3) steps, each step sleeping `TEST_PLUGIN_STEP_MILLIS` (default
/// 0); project settings set them.
pub struct StepCounter;

/// The name projects enable [`StepCounter`] by.
pub const STEP_COUNTER: &str = "test-steps";

fn setting(input: &dyn PluginInput, key: &str, default: u64) -> u64 {
    input.settings().get(key).and_then(|v| v.as_u64()).unwrap_or(default)
}

impl Plugin for StepCounter {
    fn name(&self) -> &'static str {
        STEP_COUNTER
    }

    fn applies_to(&self, _: &dyn PluginInput) -> bool {
        true
    }

    fn step(&self, input: &dyn PluginInput, cursor: Option<&serde_json::Value>) -> Result<StepOutput, PluginError> {
        let step = cursor.and_then(|c| c.as_u64()).unwrap_or(0);
        let steps = setting(input, "TEST_PLUGIN_STEPS", 3);
        std::thread::sleep(Duration::from_millis(setting(input, "TEST_PLUGIN_STEP_MILLIS", 0)));
        let tests = (0..setting(input, "TEST_PLUGIN_TESTS_PER_STEP", 2))
            .map(|n| SubmittedTest {
                suite: "test-plugin".into(),
                name: format!("step-{step}-{n}"),
                result: Some(true),
                log: None,
            })
            .collect();
        let next = (step + 1 < steps).then(|| serde_json::json!(step + 1));
        Ok(StepOutput { tests, next, ..StepOutput::default() })
    }
}
