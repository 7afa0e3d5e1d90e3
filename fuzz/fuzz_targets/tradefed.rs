//! The tradefed report parser and the archive extraction on any bytes:
//! they never panic; every member found is handed over once, the report
//! among them; the links of the report and stylesheet are rewritten
//! without a panic; a parse resumed from any batch's cursor hands out the
//! same tests as the uninterrupted parse.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use squadron_plugins::tradefed::archive::{extract_members, Limits, Member};
use squadron_plugins::tradefed::companions::write_member;
use squadron_plugins::tradefed::results::Parser;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_size: 1 << 20, max_companion_size: 1 << 16, max_ratio: 100, max_entries: 100 };
    let url_of = |name: &str| Some(format!("/g/p/build/v&1/attachments/testrun/1/{name}"));
    let mut kept = Vec::new();
    let extracted = extract_members(Cursor::new(data), &Member::ALL, &limits, &mut |member, copy| {
        assert!(!kept.contains(&member), "{member:?} handed over twice");
        kept.push(member);
        write_member(member, &url_of, &mut std::io::sink(), copy)
    });
    if extracted.is_ok() {
        assert!(kept.contains(&Member::TestResult), "an extraction without the report succeeded");
    }

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
