//! The build log parser on any bytes, fed whole and in odd pieces: it
//! never panics, and the pieces give the same tests as the whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use squadron_plugins::linux_log::{parse_build_log, BuildLogParser};

fuzz_target!(|data: &[u8]| {
    let whole = parse_build_log(data).expect("reading a slice cannot fail");
    let mut parser = BuildLogParser::new();
    for piece in data.chunks(5) {
        parser.feed(piece);
    }
    assert_eq!(parser.finish(), whole);
});
