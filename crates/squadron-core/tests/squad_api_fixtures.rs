//! The submission parsers give what SQUAD 1.98's parsers give on SQUAD's
//! own API fixtures.

use std::fs::File;
use std::ops::ControlFlow;
use std::path::PathBuf;

use serde_json::Value;
use squadron_core::submission::{parse_metrics, parse_tests};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/squad-api").join(name)
}

fn expected() -> Value {
    serde_json::from_reader(File::open(fixture("parsers.expected.json")).unwrap()).unwrap()
}

#[test]
fn tests_match_squad_1_98() {
    let expected = expected();
    let cases = expected["reference_output_squad_1_98"]["tests"].as_object().unwrap();
    assert!(cases.len() >= 6);
    for (file, want) in cases {
        let mut got = Vec::new();
        parse_tests(File::open(fixture(file)).unwrap(), |t| {
            got.push(serde_json::json!({
                "group_name": t.suite, "test_name": t.name, "pass": t.result, "log": t.log,
            }));
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(&Value::Array(got), want, "{file}");
    }
}

#[test]
fn metrics_match_squad_1_98() {
    let expected = expected();
    let cases = expected["reference_output_squad_1_98"]["metrics"].as_object().unwrap();
    assert!(cases.len() >= 4);
    for (file, want) in cases {
        let mut got = Vec::new();
        parse_metrics(File::open(fixture(file)).unwrap(), |m| {
            got.push(m);
            ControlFlow::Continue(())
        })
        .unwrap();
        let want = want.as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{file}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.name, w["name"].as_str().unwrap(), "{file}");
            assert_eq!(g.suite, w["group_name"].as_str().unwrap(), "{file}");
            assert_eq!(g.result, w["result"].as_f64().unwrap(), "{file}");
            let measurements: Vec<f64> =
                w["measurements"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert_eq!(g.measurements, measurements, "{file}");
            assert_eq!(g.unit.as_deref(), w["unit"].as_str(), "{file}");
        }
    }
}
