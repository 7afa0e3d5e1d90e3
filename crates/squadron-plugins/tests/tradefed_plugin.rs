//! `tradefed` as a plugin, stepped as the pipeline steps it: from an
//! attached report and from an attached archive; on a CI job, decorating
//! the lab's failed tests (SQUAD's default) or recording every test, from
//! an attachment or from the lab's results archive; interrupted after
//! every step (its cursor through JSON, a fresh plugin and input) it ends
//! with exactly the output of an uninterrupted run; bad input is a clear
//! failure.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use squadron_plugins::tradefed::Tradefed;
use squadron_plugins::{
    KnownIssueRef, LabArtifact, LabJob, Plugin, PluginError, PluginInput, ReadSeek, StashedAttachment, StepOutput,
};

/// Attachments from files; the stash in a directory; a lab whose
/// downloads are files too.
struct Files {
    attachments: BTreeMap<String, PathBuf>,
    /// Shared by the inputs of one run, as the blob store is.
    stash: std::sync::Arc<tempfile::TempDir>,
    settings: serde_json::Value,
    job: Option<LabJob>,
    failed: Vec<(String, String)>,
    downloads: BTreeMap<String, PathBuf>,
    /// Where the run's attachments are served, if known.
    attachments_at: Option<String>,
}

impl Files {
    fn new(attachments: &[(&str, &Path)]) -> Files {
        Files {
            attachments: attachments.iter().map(|(n, p)| (n.to_string(), p.to_path_buf())).collect(),
            stash: std::sync::Arc::new(tempfile::tempdir().unwrap()),
            settings: serde_json::json!({}),
            job: None,
            failed: Vec::new(),
            downloads: BTreeMap::new(),
            attachments_at: None,
        }
    }

    /// The run of a LAVA job with `definition` and these failed tests.
    fn job(mut self, definition: &str, failed: &[(&str, &str)]) -> Files {
        self.job = Some(LabJob {
            backend: "lava".into(),
            job_id: Some("4242".into()),
            definition: Some(definition.into()),
            artifacts: Vec::new(),
        });
        self.failed = failed.iter().map(|(s, n)| (s.to_string(), n.to_string())).collect();
        self
    }
}

/// A LAVA job definition with one tradefed test definition.
fn tradefed_job(name: &str, format: &str) -> String {
    format!(
        "job_name: cts\nactions:\n- test:\n    definitions:\n    - name: {name}\n      \
         path: automated/android/noninteractive-tradefed/tradefed.yaml\n      \
         params: {{TEST_PARAMS: cts, RESULTS_FORMAT: {format}}}\n"
    )
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
    fn job(&self) -> Option<&LabJob> {
        self.job.as_ref()
    }
    fn failed_tests(&self) -> std::io::Result<Vec<(String, String)>> {
        Ok(self.failed.clone())
    }
    fn attachment_url(&self, filename: &str) -> Option<String> {
        Some(format!("{}/{filename}", self.attachments_at.as_ref()?))
    }
    fn download(&self, url: &str) -> Result<String, PluginError> {
        let path = self.downloads.get(url).ok_or_else(|| PluginError::BadInput(format!("{url}: 404")))?;
        let mut file = std::fs::File::open(path)?;
        Ok(self.stash(&mut |out| std::io::copy(&mut file, out).map(drop))?)
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
    assert_resumable(&whole, || Files::new(&[("test_result.xml", &xml)]));
    let inline = testdata(INLINE);
    let decorating = || Files::new(&[("test_result.xml", &inline)]).job(&tradefed_job("cts-lkft", "x"), &LAB_FAILURES);
    assert_resumable(&run(&decorating()).unwrap(), decorating);
}

/// Resumes after every step of `whole` from a fresh input, as a new
/// worker would, and checks the outputs add up to the same.
fn assert_resumable(whole: &[StepOutput], input: impl Fn() -> Files) {
    for stop in 1..whole.len() {
        let mut outputs: Vec<StepOutput> = Vec::new();
        let first = input();
        let mut cursor = None;
        for _ in 0..stop {
            let output = Tradefed.step(&first, cursor.as_ref()).unwrap();
            cursor = output.next.clone();
            outputs.push(output);
        }
        let text = serde_json::to_string(&cursor).unwrap();
        let mut cursor: Option<serde_json::Value> = serde_json::from_str(&text).unwrap();
        let mut second = input();
        second.stash = first.stash.clone();
        while let Some(at) = cursor {
            let output = Tradefed.step(&second, Some(&at)).unwrap();
            cursor = output.next.clone();
            outputs.push(output);
        }
        assert_eq!(tests_of(&outputs), tests_of(whole), "resumed after step {stop}");
        let metrics = |o: &[StepOutput]| {
            o.iter().flat_map(|o| &o.metrics).map(|m| (m.name.clone(), m.result)).collect::<Vec<_>>()
        };
        assert_eq!(metrics(&outputs), metrics(whole));
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
    let outputs = run(&nothing).unwrap();
    assert!(outputs.len() == 1 && outputs[0].tests.is_empty(), "nothing to do, nothing done");

    let bomb = dir.path().join("results.tar.xz");
    std::fs::write(&bomb, b"\xFD7zXZ\x00 not really xz").unwrap();
    let err = run(&Files::new(&[("results.tar.xz", &bomb)])).unwrap_err();
    assert!(matches!(&err, PluginError::BadInput(m) if m.contains("results.tar.xz")), "{err}");

    // The lab's archive cannot be had: a clear failure, nothing recorded.
    let mut gone = Files::new(&[]).job(&tradefed_job("cts-lkft", "aggregated"), &[]);
    let artifact =
        LabArtifact { suite: "1_cts-lkft".into(), result: "pass".into(), url: "http://lab/gone.tar.xz".into() };
    gone.job.as_mut().unwrap().artifacts.push(artifact);
    let err = run(&gone).unwrap_err();
    assert!(matches!(&err, PluginError::BadInput(m) if m.contains("404")), "{err}");
}

const INLINE: &str = "tradefed/inline/test_result-with-failures.xml";

/// The failed tests of SQUAD's own `_assign_test_log` cases, and a test
/// of another plugin.
const LAB_FAILURES: [(&str, &str); 6] = [
    ("cts-lkft/arm64-v8a.module_foo", "TestCaseBar.test_bar4"),
    ("cts-lkft.arm64-v8a.module_foo", "TestCaseBar.test_bar4"),
    ("cts-lkft/arm64-v8a.module_foo/TestCaseBar.first_subname/second_subname.third_subname", "test_bar5_64bit"),
    ("cts-lkft/arm64-v8a.module_foo", "TestCaseBar.test_bar5"),
    ("cts-lkft/arm64-v8a.module_foo1", "TestCaseBar.test_bar5"),
    ("log-parser-test", "panic-kernel-panic"),
];

#[test]
fn a_ci_job_has_its_failed_tests_decorated_as_squad_does() {
    let xml = testdata(INLINE);
    let input = Files::new(&[("test_result.xml", &xml)]).job(&tradefed_job("cts-lkft", "aggregated"), &LAB_FAILURES);
    assert!(Tradefed.applies_to(&input));
    let outputs = run(&input).unwrap();
    let tests = tests_of(&outputs);
    let decorated: Vec<(&str, &str)> = tests.iter().map(|t| (t.0.as_str(), t.1.as_str())).collect();
    assert_eq!(decorated, [LAB_FAILURES[0], LAB_FAILURES[2]], "the lookups SQUAD's tests expect");
    for (_, _, result, log) in &tests {
        assert_eq!(*result, Some(false));
        assert!(log.as_deref().unwrap().starts_with("java.lang.Error:"), "{log:?}");
    }
    assert!(outputs.iter().all(|o| o.metrics.is_empty() && o.known_issues.is_empty()), "decorating adds nothing else");

    // No failed test: the report is not read at all.
    let idle = Files::new(&[("test_result.xml", &xml)]).job(&tradefed_job("cts-lkft", "aggregated"), &[]);
    assert!(tests_of(&run(&idle).unwrap()).is_empty());
    // A job without a tradefed test definition is left alone.
    let other = Files::new(&[("test_result.xml", &xml)]).job("job_name: boot\nactions: []\n", &LAB_FAILURES);
    assert!(!Tradefed.applies_to(&other));
}

#[test]
fn a_ci_job_records_every_test_when_its_project_asks_for_aggregated_results() {
    let xml = testdata(INLINE);
    let mut input = Files::new(&[("test_result.xml", &xml)]).job(&tradefed_job("cts-lkft", "aggregated"), &[]);
    input.settings = serde_json::json!({"PLUGINS_TRADEFED_EXTRACT_AGGREGATED": true});
    let outputs = run(&input).unwrap();
    let tests = tests_of(&outputs);
    assert_eq!(tests.len(), 11);
    assert!(tests.iter().all(|t| t.0.starts_with("cts-lkft/arm64-v8a.module_")), "action = the definition's name");
    let issues: Vec<&KnownIssueRef> = outputs.iter().flat_map(|o| &o.known_issues).collect();
    let name = "cts-lkft/arm64-v8a.module_bar/TestCaseFoo.ztestSetAndGetBrightnessConfiguration";
    assert_eq!(issues, [&KnownIssueRef { title: format!("Tradefed/{name}"), test_name: name.into() }]);
    assert_eq!(metric(&outputs, "tests-assumption-failure"), 1.0);

    // Another format keeps SQUAD's default.
    input.job = Files::new(&[]).job(&tradefed_job("cts-lkft", "atomic"), &[]).job;
    assert!(tests_of(&run(&input).unwrap()).is_empty());
}

#[test]
fn a_ci_job_reads_the_archive_its_lab_results_point_to() {
    let archive = testdata("tradefed/squad-integration/tradefed-output-20220608105250.tar.xz");
    let url = "https://storage.lab/artifacts/tradefed-output-20220608105250.tar.xz";
    let failed = [(
        "cts-lkft/arm64-v8a.CtsDeqpTestCases",
        "dEQP-GLES2.functional.shaders.indexing.tmp_array.vec3_const_write_dynamic_read_vertex",
    )];
    let mut input = Files::new(&[]).job(&tradefed_job("cts-lkft", "aggregated"), &failed);
    input.downloads.insert(url.into(), archive);
    let served = "https://qa.example/lkft/android/build/v%201/attachments/testrun/9";
    input.attachments_at = Some(served.into());
    assert!(!Tradefed.applies_to(&input), "no archive in the lab's results yet");
    let job = input.job.as_mut().unwrap();
    job.artifacts.push(LabArtifact { suite: "0_boot".into(), result: "pass".into(), url: "http://elsewhere".into() });
    job.artifacts.push(LabArtifact { suite: "1_cts-lkft".into(), result: "pass".into(), url: url.into() });
    assert!(Tradefed.applies_to(&input));
    let outputs = run(&input).unwrap();
    let tests = tests_of(&outputs);
    assert_eq!(tests.len(), 1);
    assert!(tests[0].3.as_deref().unwrap().starts_with("=== with config {glformat=rgba8888d24s8ms0,"), "{tests:?}");
    // The report and its companion files are attached under SQUAD's names
    // (this archive has no logo), their links rewritten to where the run's
    // attachments are served.
    let attached: BTreeMap<&str, &StashedAttachment> =
        outputs.iter().flat_map(|o| &o.attachments).map(|a| (a.filename.as_str(), a)).collect();
    let names: Vec<&str> = outputs.iter().flat_map(|o| &o.attachments).map(|a| a.filename.as_str()).collect();
    assert_eq!(
        names,
        [
            "tradefed-output-20220608105250.tar.xz",
            "test_results.xml",
            "compatibility_result.xsl",
            "compatibility_result.css",
            "teadefed_stdout.txt",
            "teadefed_logcat.txt"
        ]
    );
    let content = |name: &str| std::fs::read(input.stash.path().join(&attached[name].key)).unwrap();
    let report = String::from_utf8(content("test_results.xml")).unwrap();
    let original = std::fs::read_to_string(testdata("tradefed/squad-integration/test_result.xml")).unwrap();
    assert_eq!(
        report,
        original.replacen("\"compatibility_result.xsl\"", &format!("\"{served}/compatibility_result.xsl\""), 1)
    );
    let xsl = String::from_utf8(content("compatibility_result.xsl")).unwrap();
    assert!(xsl.contains(&format!("@import \"{served}/compatibility_result.css\";")), "{xsl}");
    assert!(xsl.contains(&format!("<img src=\"{served}/logo.png\"/>")), "{xsl}");
    assert_eq!(content("compatibility_result.css").len(), 3340);
    assert_eq!(content("teadefed_stdout.txt"), b"tradefed stdout sample\n");
    assert_eq!(content("teadefed_logcat.txt"), b"tradefed logcat sample\n");
    let types: Vec<&str> = attached.values().map(|a| a.mimetype.as_str()).collect();
    assert_eq!(
        types,
        ["text/css", "application/xslt+xml", "text/plain", "text/plain", "application/xml", "application/x-tar"]
    );
    let metadata: Vec<_> = outputs.iter().flat_map(|o| &o.metadata).collect();
    assert_eq!(metadata, [(&"tradefed_results_url_4242".to_string(), &serde_json::json!(url))]);
    assert_resumable(&outputs, || {
        let mut input = Files::new(&[]).job(&tradefed_job("cts-lkft", "aggregated"), &failed);
        input
            .downloads
            .insert(url.into(), testdata("tradefed/squad-integration/tradefed-output-20220608105250.tar.xz"));
        input.job.as_mut().unwrap().artifacts =
            vec![LabArtifact { suite: "1_cts-lkft".into(), result: "pass".into(), url: url.into() }];
        input.attachments_at = Some(served.into());
        input
    });
}
