//! The submission parsers (`tests`, `metrics`, `metadata` of
//! `/api/submit`) on any bytes: they never panic.
#![no_main]

use std::ops::ControlFlow;

use libfuzzer_sys::fuzz_target;
use squadron_core::submission::{parse_metadata, parse_metrics, parse_tests};

fuzz_target!(|data: &[u8]| {
    let _ = parse_tests(data, |_| ControlFlow::Continue(()));
    let _ = parse_metrics(data, |_| ControlFlow::Continue(()));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_metadata(text);
    }
});
