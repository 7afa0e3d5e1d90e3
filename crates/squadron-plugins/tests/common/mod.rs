//! Comparing a parser's tests with SQUAD 1.98's reference output.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;
use squadron_plugins::linux_log::{LogTest, LogTestKind, MAX_LOG_CHARS, MAX_SNIPPETS_PER_TEST};

/// The repository's `testdata/` (real logs with SQUAD 1.98's output).
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

fn kind_name(kind: LogTestKind) -> &'static str {
    match kind {
        LogTestKind::Aggregate => "aggregate",
        LogTestKind::Sha => "sha",
    }
}

fn result_name(result: bool) -> &'static str {
    if result {
        "pass"
    } else {
        "fail"
    }
}

/// Asserts that `tests` are SQUAD 1.98's `reference` tests: same suites,
/// names, results and kinds, and per test the same set of snippets (a
/// subset of SQUAD's when SQUAD has more than a test log keeps).
pub fn assert_reference(tests: &[LogTest], reference: &[Value], what: &str) {
    let ours: Vec<(String, String, &str, &str)> =
        tests.iter().map(|t| (t.suite.clone(), t.name.clone(), result_name(t.result), kind_name(t.kind))).collect();
    let mut theirs: Vec<(String, String, &str, &str)> = reference
        .iter()
        .map(|t| {
            (
                t["suite"].as_str().expect("suite").to_owned(),
                t["name"].as_str().expect("name").to_owned(),
                t["result"].as_str().expect("result"),
                t["kind"].as_str().expect("kind"),
            )
        })
        .collect();
    let mut sorted = ours.clone();
    sorted.sort();
    theirs.sort();
    assert_eq!(sorted, theirs, "{what}: tests differ from SQUAD 1.98's");

    for expected in reference {
        let test = tests
            .iter()
            .find(|t| t.suite == expected["suite"].as_str().unwrap() && t.name == expected["name"].as_str().unwrap())
            .expect("test present");
        let snippets: BTreeSet<&str> = test.snippets.iter().map(String::as_str).collect();
        assert_eq!(snippets.len(), test.snippets.len(), "{what}: {}: snippets repeat", test.name);
        let reference_snippets: BTreeSet<&str> =
            expected["snippets"].as_array().expect("snippets").iter().map(|s| s.as_str().expect("snippet")).collect();
        let joined: usize = reference_snippets.iter().map(|s| s.chars().count() + 5).sum();
        if reference_snippets.len() <= MAX_SNIPPETS_PER_TEST && joined <= MAX_LOG_CHARS {
            assert_eq!(snippets, reference_snippets, "{what}: {}: snippets differ", test.name);
        } else {
            assert!(snippets.is_subset(&reference_snippets), "{what}: {}: unknown snippet", test.name);
            assert_eq!(snippets.len(), MAX_SNIPPETS_PER_TEST, "{what}: {}: kept too few snippets", test.name);
        }
        let log = test.log();
        let separator = if test.kind == LogTestKind::Sha { "\n---\n" } else { "\n" };
        assert_eq!(log, test.snippets.join(separator), "{what}: {}: log is the joined snippets", test.name);
    }
}

/// Checks SQUAD 1.98's own test assertions (transcribed) against `tests`.
pub fn assert_squad_assertions(tests: &[LogTest], assertions: &Value, reference: &[Value], what: &str) {
    let Some(assertions) = assertions.as_array() else {
        return; // "no test method asserts on this file"
    };
    for assertion in assertions {
        if assertion["kind"] == "count" {
            assert_eq!(tests.len() as u64, assertion["equals"].as_u64().unwrap(), "{what}: {assertion}");
            continue;
        }
        let Some(name) = assertion["name"].as_str() else {
            continue; // depends on test-run state (a build test run), not on the log
        };
        let suite = assertion["suite"].as_str().expect("suite");
        let found = tests.iter().find(|t| t.suite == suite && t.name == name);
        if assertion["must_exist"] == false {
            assert!(found.is_none(), "{what}: {assertion}");
            continue;
        }
        let test = found.unwrap_or_else(|| panic!("{what}: missing {suite}/{name}"));
        if let Some(result) = assertion["result"].as_str() {
            assert_eq!(result_name(test.result), result, "{what}: {assertion}");
        }
        let log = test.log();
        // With more snippets than a log keeps, SQUAD's own log holds an
        // arbitrary 100: a string may then be in one we did not keep.
        let capped = reference.iter().any(|t| {
            t["suite"] == suite && t["name"] == name && t["snippets"].as_array().unwrap().len() > MAX_SNIPPETS_PER_TEST
        });
        for needle in assertion["log_contains"].as_array().into_iter().flatten() {
            let needle = needle.as_str().unwrap();
            assert!(capped || log.contains(needle), "{what}: {name}: log lacks {needle:?}");
        }
        for needle in assertion["log_not_contains"].as_array().into_iter().flatten() {
            let needle = needle.as_str().unwrap();
            assert!(!log.contains(needle), "{what}: {name}: log has {needle:?}");
        }
    }
}

/// Runs `parse` on a fixture log and checks it against its `.expected.json`.
pub fn check_fixture(dir: &str, log: &str, parse: impl Fn(&[u8]) -> Vec<LogTest>) {
    let dir = fixtures().join(dir);
    let input = std::fs::read(dir.join(log)).unwrap_or_else(|e| panic!("{log}: {e}"));
    let stem = log.rsplit_once('.').map_or(log, |(stem, _)| stem);
    let expected = [format!("{log}.expected.json"), format!("{stem}.expected.json")]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("{log}: no .expected.json"));
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(expected).unwrap()).unwrap();
    let reference = expected["reference_output_squad_1_98"].as_array().expect("reference output");
    let tests = parse(&input);
    assert_reference(&tests, reference, log);
    assert_squad_assertions(&tests, &expected["assertions_squad_1_98"], reference, log);
}
