//! `linux_log_parser` against SQUAD 1.98's output on the fixture logs, on
//! generated logs, and on hostile input.

mod common;

use squadron_plugins::linux_log::{parse_boot_log, LogTest, LogTestKind};

fn parse(input: &[u8]) -> Vec<LogTest> {
    parse_boot_log(input).expect("in-memory input reads")
}

macro_rules! fixtures {
    ($($test:ident => $dir:literal / $log:literal,)*) => {$(
        #[test]
        fn $test() {
            common::check_fixture($dir, $log, parse);
        }
    )*};
}

fixtures! {
    different_numbers_in_function_name_oops => "squad/linux_log_parser" / "different-numbers-in-function-name-oops.log",
    duplicated_oops => "squad/linux_log_parser" / "duplicated-oops.log",
    internal_error_oops => "squad/linux_log_parser" / "internal-error-oops.log",
    kasan => "squad/linux_log_parser" / "kasan.log",
    kcsan_full_log => "squad/linux_log_parser" / "kcsan_full_log.log",
    kcsan_simple => "squad/linux_log_parser" / "kcsan_simple.log",
    kernel_bug_and_invalid_opcode => "squad/linux_log_parser" / "kernel_bug_and_invalid_opcode.log",
    kernelexceptiontrace => "squad/linux_log_parser" / "kernelexceptiontrace.log",
    kernelexceptiontrace_without_squarebraces => "squad/linux_log_parser" / "kernelexceptiontrace_without_squarebraces.log",
    kernelpanic_multiline => "squad/linux_log_parser" / "kernelpanic-multiline.log",
    kernelpanic_single_and_multiline => "squad/linux_log_parser" / "kernelpanic-single-and-multiline.log",
    kfence => "squad/linux_log_parser" / "kfence.log",
    multiple_issues_dmesg => "squad/linux_log_parser" / "multiple_issues_dmesg.log",
    oops => "squad/linux_log_parser" / "oops.log",
    rcu_warning => "squad/linux_log_parser" / "rcu_warning.log",
    kfence_seconds => "squad/log_parser_base" / "kfence-seconds.log",
    lava_kernel_1 => "external/lava-kernel-logs" / "kernel-1.txt",
    lava_kernel_2 => "external/lava-kernel-logs" / "kernel-2.txt",
    lava_kernel_bug => "external/lava-kernel-logs" / "kernel-bug.txt",
    lava_kernel_kfence => "external/lava-kernel-logs" / "kernel-kfence.txt",
    lava_kernel_login_error => "external/lava-kernel-logs" / "kernel-login-error.txt",
    lava_kernel_many_errors => "external/lava-kernel-logs" / "kernel-many-errors.txt",
    lava_kernel_oops => "external/lava-kernel-logs" / "kernel-oops.txt",
    lava_kernel_panic_and_reset_overlapped => "external/lava-kernel-logs" / "kernel-panic-and-reset-overlapped.txt",
    lava_kernel_panic => "external/lava-kernel-logs" / "kernel-panic.txt",
}

#[test]
fn special_cases() {
    let path = common::fixtures().join("squad/linux_log_parser/special-cases.expected.json");
    let cases: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let panic = &cases["cases"][0];
    let log = std::fs::read(common::fixtures().join("squad/linux_log_parser/inline-one-line-panic.log")).unwrap();
    assert_eq!(log, panic["log_content"].as_str().unwrap().as_bytes());
    let tests = parse(&log);
    common::assert_reference(&tests, panic["reference_output_squad_1_98"].as_array().unwrap(), "inline panic");
    assert!(tests.iter().any(|t| t.suite == "log-parser-boot" && t.name == "panic-kernel-panic-not-syncing"));

    assert_eq!(parse(b""), vec![], "an empty log makes no test");
}

/// Feeding a log in pieces of any size gives the same tests as in one go.
#[test]
fn pieces_do_not_matter() {
    let log = std::fs::read(common::fixtures().join("squad/linux_log_parser/multiple_issues_dmesg.log")).unwrap();
    let whole = parse(&log);
    for size in [1, 7, 4096] {
        let mut parser = squadron_plugins::linux_log::BootLogParser::new();
        log.chunks(size).for_each(|piece| parser.feed(piece));
        assert_eq!(parser.finish(), whole, "pieces of {size} bytes");
    }
}

#[test]
fn invalid_utf8_is_replaced() {
    let mut log = b"[    0.500000] \xc3\x28 boot \xff\n".to_vec();
    log.extend_from_slice(b"[    1.000000] WARNING: CPU: 0 PID: 1 at foo.c:12 bar\xff\xfe+0x1/0x2\n");
    log.extend_from_slice(b"[    2.000000] \xed\xa0\x80 BUG: sleeping \x80function called\n");
    let tests = parse(&log);
    let names: Vec<&str> = tests.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(names[0], "warning-warning-cpu-pid-at-foo-bar");
    assert_eq!(names[2], "bug-bug-sleeping-function-called");
    assert_eq!(tests[0].snippets, ["[    1.000000] WARNING: CPU: 0 PID: 1 at foo.c:12 bar\u{fffd}\u{fffd}+0x1/0x2"]);
    assert_eq!(tests[2].snippets, ["[    2.000000] \u{fffd}\u{fffd}\u{fffd} BUG: sleeping \u{fffd}function called"]);
}

#[test]
fn ten_megabyte_line_is_capped() {
    use squadron_plugins::linux_log::MAX_LINE_BYTES;
    let mut log = b"[    1.000000] WARNING: first\n[    2.000000] WARNING: long ".to_vec();
    log.resize(log.len() + 10 * 1024 * 1024, b'x');
    log.extend_from_slice(b" end\n[    3.000000] Kernel panic - not syncing: after\n");
    let started = std::time::Instant::now();
    let tests = parse(&log);
    assert!(started.elapsed().as_secs() < 5, "took {:?}", started.elapsed());
    let long = tests
        .iter()
        .find(|t| t.name.starts_with("warning-warning-long-xxx") && t.kind == LogTestKind::Aggregate)
        .expect("the long line is a warning");
    assert_eq!(long.name.len(), 191, "names are cut like SQUAD's");
    assert_eq!(long.snippets, [String::from_utf8(log[30..30 + MAX_LINE_BYTES].to_vec()).unwrap()], "the line is cut");
    assert!(tests.iter().any(|t| t.name == "warning-warning-first"));
    assert!(tests.iter().any(|t| t.name == "panic-kernel-panic-not-syncing-after"), "the line after it still counts");
}

/// A `cut here` block is one match while its `end trace` lies within
/// `WINDOW_LINES` lines; further away it is not (SQUAD would still match).
#[test]
fn multi_line_reports_are_matched_within_the_window() {
    use squadron_plugins::linux_log::WINDOW_LINES;
    let block = |filler: usize| {
        let mut log = String::from("[    1.000000] ------------[ cut here ]------------\n");
        for n in 0..filler {
            log.push_str(&format!("[    1.{n:06}] filler line\n"));
        }
        log.push_str("[    2.000000] ---[ end trace 0000000000000000 ]---\n");
        parse(log.as_bytes())
    };
    let inside = block(WINDOW_LINES - 1);
    assert_eq!(inside.len(), 2, "one exception test and its sha test");
    assert!(inside[0].name.starts_with("exception-"), "{}", inside[0].name);
    assert!(block(WINDOW_LINES).is_empty(), "end trace beyond the window");
}

/// Logs from `gen_kernel_log.py`: every injected block SQUAD 1.98 reports
/// is found, in the right suite and family, and nothing else.
#[test]
fn generated_logs() {
    let generator = common::fixtures().join("../scripts/gen_kernel_log.py");
    let runs: [&[&str]; 4] = [
        &["--lines", "3000", "--blocks", "30", "--seed", "1"],
        &["--lines", "3000", "--blocks", "30", "--seed", "2", "--caller-id", "--login-at", "0.3"],
        &["--lines", "3000", "--blocks", "30", "--seed", "3", "--loglevel-prefix", "--login-at", "-1"],
        &["--lines", "3000", "--blocks", "40", "--seed", "4", "--caller-id", "--loglevel-prefix"],
    ];
    for args in runs {
        let output = std::process::Command::new("python3").arg(&generator).args(args).output().expect("python3 runs");
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        let blocks: serde_json::Value = serde_json::from_slice(&output.stderr).expect("blocks JSON on stderr");
        check_generated(&parse(&output.stdout), blocks["blocks"].as_array().unwrap(), &format!("{args:?}"));
    }
}

const FAMILIES: [&str; 12] = [
    "exception",
    "kasan",
    "kcsan",
    "kfence",
    "panic-multiline",
    "internal-error-oops",
    "oops",
    "fault",
    "warning",
    "bug",
    "invalid-opcode",
    "panic",
];

/// The pattern a test name comes from (the longest family it starts with).
fn family(name: &str) -> &'static str {
    FAMILIES
        .into_iter()
        .filter(|f| name == *f || name.starts_with(&format!("{f}-")))
        .max_by_key(|f| f.len())
        .unwrap_or_else(|| panic!("{name}: no family"))
}

fn check_generated(tests: &[LogTest], blocks: &[serde_json::Value], what: &str) {
    use std::collections::{BTreeMap, BTreeSet};
    // Per suite and family: the key line of each block reported there (the
    // key line is in the first family's snippet; `None` for the others).
    let mut expected: BTreeMap<(String, &str), Vec<Option<&str>>> = BTreeMap::new();
    for block in blocks {
        let suite = format!("log-parser-{}", block["part"].as_str().unwrap());
        for (n, f) in block["squad_1_98_family"].as_array().into_iter().flatten().enumerate() {
            let f = FAMILIES.into_iter().find(|known| f == known).expect("known family");
            let key_line = (n == 0).then(|| block["key_line"].as_str().unwrap());
            expected.entry((suite.clone(), f)).or_default().push(key_line);
        }
    }
    let mut found: BTreeMap<(String, &str), BTreeSet<&str>> = BTreeMap::new();
    let mut fingerprinted: BTreeMap<(String, &str), BTreeSet<&str>> = BTreeMap::new();
    for test in tests {
        let into = if test.kind == LogTestKind::Aggregate { &mut found } else { &mut fingerprinted };
        into.entry((test.suite.clone(), family(&test.name)))
            .or_default()
            .extend(test.snippets.iter().map(String::as_str));
    }
    assert_eq!(found, fingerprinted, "{what}: sha tests hold the same snippets");
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{what}: suites and families reported"
    );
    for (key, key_lines) in &expected {
        let snippets = &found[key];
        assert_eq!(snippets.len(), key_lines.len(), "{what}: {key:?}: one snippet per block");
        for key_line in key_lines.iter().flatten() {
            assert!(snippets.iter().any(|s| s.contains(key_line)), "{what}: {key:?}: {key_line:?} not found");
        }
    }
}
