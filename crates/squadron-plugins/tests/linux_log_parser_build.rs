//! `linux_log_parser_build` against SQUAD 1.98's output on the fixture logs.

mod common;

use squadron_plugins::linux_log::{parse_build_log, LogTest};

fn parse(input: &[u8]) -> Vec<LogTest> {
    parse_build_log(input).expect("in-memory input reads")
}

macro_rules! fixtures {
    ($($test:ident => $log:literal,)*) => {$(
        #[test]
        fn $test() {
            common::check_fixture("squad/linux_log_parser_build", $log, parse);
        }
    )*};
}

fixtures! {
    clang_arm64_25103120 => "clang_arm64_25103120.log",
    clang_arm64_2957859 => "clang_arm64_2957859.log",
    clang_arm_24958120 => "clang_arm_24958120.log",
    clang_arm_26001178 => "clang_arm_26001178.log",
    clang_i386_25043392 => "clang_i386_25043392.log",
    clang_i386_25431539 => "clang_i386_25431539.log",
    clang_riscv_24688299 => "clang_riscv_24688299.log",
    clang_x86_64_25086964 => "clang_x86_64_25086964.log",
    clang_x86_64_26103794 => "clang_x86_64_26103794.log",
    gcc_arm64_24934206 => "gcc_arm64_24934206.log",
    gcc_arm_24951924 => "gcc_arm_24951924.log",
    gcc_arm_25044425 => "gcc_arm_25044425.log",
    gcc_arm_25078650 => "gcc_arm_25078650.log",
    gcc_i386_25044475 => "gcc_i386_25044475.log",
    gcc_riscv_24715191 => "gcc_riscv_24715191.log",
    gcc_s390_26103313 => "gcc_s390_26103313.log",
    gcc_sh_26103296 => "gcc_sh_26103296.log",
    gcc_x86_64_24932905 => "gcc_x86_64_24932905.log",
    gcc_x86_64_26103833 => "gcc_x86_64_26103833.log",
    gcc_x86_64_26788931 => "gcc_x86_64_26788931.log",
    gcc_x86_64_26861563 => "gcc_x86_64_26861563.log",
}

#[test]
fn no_toolchain_no_tests() {
    assert!(parse(b"/x.c:1:2: error: boom\n").is_empty());
}

#[test]
fn clang_wins_over_gcc() {
    let log = b"--toolchain=gcc\n/x.c:1:2: error: boom\nclang: error: linker failed\n--toolchain=clang\n";
    let tests = parse(log);
    assert!(tests.iter().all(|t| t.suite == "log-parser-build-clang"), "{tests:?}");
    assert!(tests.iter().any(|t| t.name.starts_with("clang-compiler-single-line")), "{tests:?}");
}

/// Feeding a log in pieces of any size gives the same tests as in one go.
#[test]
fn pieces_do_not_matter() {
    let path = common::fixtures().join("squad/linux_log_parser_build/gcc_arm_25044425.log");
    let log = std::fs::read(path).unwrap();
    let whole = parse(&log);
    assert!(!whole.is_empty());
    for size in [1, 13, 4096] {
        let mut parser = squadron_plugins::linux_log::BuildLogParser::new();
        log.chunks(size).for_each(|piece| parser.feed(piece));
        assert_eq!(parser.finish(), whole, "pieces of {size} bytes");
    }
}
