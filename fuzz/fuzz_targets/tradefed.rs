//! The tradefed report parser and the archive extraction on any bytes:
//! they never panic; a parse resumed from any batch's cursor hands out the
//! same tests as the uninterrupted parse.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use squadron_plugins::tradefed::archive::{extract_test_result, Limits};
use squadron_plugins::tradefed::results::Parser;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_size: 1 << 20, max_ratio: 100, max_entries: 100 };
    let _ = extract_test_result(Cursor::new(data), &mut std::io::sink(), &limits);

    let mut parser = Parser::new(data, "cts", 2);
    let mut batches = Vec::new();
    while let Ok(Some(batch)) = parser.next_batch() {
        batches.push(batch);
    }
    if let Some(first) = batches.first() {
        let at = first.cursor.byte_offset as usize;
        if at <= data.len() {
            let mut resumed = Parser::resume(&data[at..], first.cursor.clone(), "cts", 2);
            for expected in &batches[1..] {
                match resumed.next_batch() {
                    Ok(Some(batch)) => assert_eq!(batch.tests, expected.tests),
                    other => panic!("the resumed parse ended early: {other:?}"),
                }
            }
        }
    }
});
