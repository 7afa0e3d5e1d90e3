//! `tradefed` as a plugin, stepped as the pipeline steps it: from an
//! attached report and from an attached archive; interrupted after every
//! step (its cursor through JSON, a fresh plugin and input) it ends with
//! exactly the output of an uninterrupted run; bad input is a clear
//! failure.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use squadron_plugins::tradefed::Tradefed;
use squadron_plugins::{Plugin, PluginError, PluginInput, ReadSeek, StepOutput};

/// Attachments from files; the stash in a directory.
struct Files {
    attachments: BTreeMap<String, PathBuf>,
    stash: tempfile::TempDir,
    settings: serde_json::Value,
}

impl Files {
    fn new(attachments: &[(&str, &Path)]) -> Files {
        Files {
            attachments: attachments.iter().map(|(n, p)| (n.to_string(), p.to_path_buf())).collect(),
            stash: tempfile::tempdir().unwrap(),
            settings: serde_json::json!({}),
        }
    }
}

impl PluginInput for Files {
    fn log(&self) -> std::io::Result<Option<Box<dyn BufRead + Send + '_>>> {
        Ok(None)
    }
    fn attachments(&self) -> Vec<String> {
        self.attachments.keys().cloned().collect()
    }
    fn attachment(&self, name: &str) -> std::io::Result<Option<Box<dyn ReadSeek + Send + '_>>> {
        match self.attachments.get(name) {
            Some(path) => Ok(Some(Box::new(std::fs::File::open(path)?))),
            None => Ok(None),
        }
    }
    fn stash(&self, write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>) -> std::io::Result<String> {
        let key = format!("stash-{}", std::fs::read_dir(self.stash.path())?.count());
        let mut file = std::fs::File::create(self.stash.path().join(&key))?;
        write(&mut file)?;
        Ok(key)
    }
    fn stashed(&self, key: &str) -> std::io::Result<Option<Box<dyn ReadSeek + Send + '_>>> {
        Ok(Some(Box::new(std::fs::File::open(self.stash.path().join(key))?)))
    }
    fn settings(&self) -> &serde_json::Value {
        &self.settings
    }
}

fn testdata(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(path)
}

/// Every step's output, each step from a cursor that went through JSON.
fn run(input: &dyn PluginInput) -> Result<Vec<StepOutput>, PluginError> {
    let mut outputs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let value = cursor.as_deref().map(|c| serde_json::from_str(c).unwrap());
        let output = Tradefed.step(input, value.as_ref())?;
        cursor = output.next.as_ref().map(|c| c.to_string());
        let done = output.next.is_none();
        outputs.push(output);
        if done {
            return Ok(outputs);
        }
    }
}

fn tests_of(outputs: &[StepOutput]) -> Vec<(String, String, Option<bool>, Option<String>)> {
    outputs
        .iter()
        .flat_map(|o| o.tests.iter().map(|t| (t.suite.clone(), t.name.clone(), t.result, t.log.clone())))
        .collect()
}

fn metric(outputs: &[StepOutput], name: &str) -> f64 {
    outputs.iter().flat_map(|o| &o.metrics).find(|m| m.name == name).unwrap_or_else(|| panic!("no {name}")).result
}

#[test]
fn a_report_and_its_archive_give_the_same_tests() {
    let xml = testdata("tradefed/squad-linaro-plugins/test_result.xml");
    let archive = testdata("tradefed/squad-linaro-plugins/test_output.tar.xz");
    let direct = Files::new(&[("test_result.xml", &xml)]);
    let packed = Files::new(&[("notes.txt", &testdata("README.md")), ("results.tar.xz", &archive)]);
    assert!(Tradefed.applies_to(&direct) && Tradefed.applies_to(&packed));
    let (a, b) = (run(&direct).unwrap(), run(&packed).unwrap());
    assert_eq!(tests_of(&a), tests_of(&b));
    assert_eq!(tests_of(&a).len(), 515);
    assert!(
        tests_of(&a).iter().all(|(suite, ..)| suite.starts_with("cts/arm64-v8a.")),
        "suites are <action>/<abi>.<module>"
    );
    assert_eq!(metric(&a, "tests-pass"), 515.0);
    // Counted in the body: the report was trimmed from 17 modules.
    assert_eq!(metric(&a, "modules-total"), 2.0);
}

#[test]
fn a_run_interrupted_after_any_step_ends_as_an_uninterrupted_one() {
    let xml = testdata("tradefed/squad-integration/test_result.xml");
    let whole = run(&Files::new(&[("test_result.xml", &xml)])).unwrap();
    assert!(whole.len() > 2, "several steps: {}", whole.len());
    assert_eq!(tests_of(&whole).iter().filter(|t| t.2 == Some(false)).count(), 1);
    // Resume after every step from a fresh input, as a new worker would.
    for stop in 1..whole.len() {
        let mut outputs: Vec<StepOutput> = Vec::new();
        let first = Files::new(&[("test_result.xml", &xml)]);
        let mut cursor = None;
        for _ in 0..stop {
            let output = Tradefed.step(&first, cursor.as_ref()).unwrap();
            cursor = output.next.clone();
            outputs.push(output);
        }
        let text = serde_json::to_string(&cursor).unwrap();
        let mut cursor: Option<serde_json::Value> = serde_json::from_str(&text).unwrap();
        let second = Files::new(&[("test_result.xml", &xml)]);
        while let Some(at) = cursor {
            let output = Tradefed.step(&second, Some(&at)).unwrap();
            cursor = output.next.clone();
            outputs.push(output);
        }
        assert_eq!(tests_of(&outputs), tests_of(&whole), "resumed after step {stop}");
        assert_eq!(metric(&outputs, "tests-total"), metric(&whole, "tests-total"));
    }
}

#[test]
fn bad_input_is_a_clear_failure() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("test_result.xml");
    let text = std::fs::read(testdata("tradefed/inline/test_result-with-failures.xml")).unwrap();
    std::fs::write(&truncated, &text[..text.len() / 2]).unwrap();
    let err = run(&Files::new(&[("test_result.xml", &truncated)])).unwrap_err();
    assert!(matches!(&err, PluginError::BadInput(m) if m.contains("test_result.xml")), "{err}");

    let nothing = Files::new(&[("notes.txt", &testdata("README.md"))]);
    assert!(!Tradefed.applies_to(&nothing));
    let err = run(&nothing).unwrap_err();
    assert!(matches!(&err, PluginError::BadInput(m) if m.contains("no test_result.xml")), "{err}");
}
