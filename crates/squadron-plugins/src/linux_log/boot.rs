//! `linux_log_parser`: kernel failure reports in a boot/test console log.

use std::io::BufRead;
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, MatchKind};
use memchr::memmem;
use regex::Regex;

use super::collect::{Collector, Naming};
use super::engine::{Pattern, PatternSet, SegmentMatcher, Trigger};
use super::lines::{Line, LineSplitter, Prescan};
use super::naming::remove_numbers_and_time;
use super::{read_all, LogParseError, LogTest};

/// A kernel timestamp, `[   12.345678]`.
const TSTAMP: &str = r"\[[ \d]+\.[ \d]+\]";
/// An optional caller id after it, `[    T123]` / `[  C1]`.
const PID: &str = r"(?:\s*?\[\s*?[CT]\d+\s*?\])";
/// Rest of a line up to a `+` (names stop before `+0x12/0x34`).
const NAME_TAIL: &str = r"[^\+\n]*";

const SUITES: [&str; 2] = ["log-parser-boot", "log-parser-test"];

/// SQUAD 1.98's `MULTILINERS + ONELINERS`, in its order (broader first).
static PATTERNS: LazyLock<PatternSet> = LazyLock::new(|| {
    use Trigger::{NextLine, ThisLine};
    let report = |name, marker: &'static str| {
        (name, format!(r"{TSTAMP}{PID}?\s+=+\n{TSTAMP}{PID}?\s+{marker}"), marker, NextLine(marker))
    };
    let (kasan, kasan_start, kasan_marker, kasan_trigger) = report("kasan", "BUG: KASAN:");
    let (kcsan, kcsan_start, kcsan_marker, kcsan_trigger) = report("kcsan", "BUG: KCSAN:");
    let (kfence, kfence_start, kfence_marker, kfence_trigger) = report("kfence", "BUG: KFENCE:");
    PatternSet::new(vec![
        Pattern::multi_line(
            "exception",
            Some(r"-+\[? cut here \]?-+"),
            &format!(r"-+\[? cut here \]?-+.*?{TSTAMP}{PID}?\s+-+\[? end trace \w* \]?-+"),
            &format!(r"\n{TSTAMP}{NAME_TAIL}"),
            vec![ThisLine(" cut here ")],
        ),
        Pattern::multi_line(
            kasan,
            Some(TSTAMP),
            &format!(r"{kasan_start}.*?\n*?{TSTAMP}{PID}?\s+=+"),
            &format!("{kasan_marker}{NAME_TAIL}"),
            vec![kasan_trigger],
        ),
        Pattern::multi_line(
            kcsan,
            Some(TSTAMP),
            &format!(r"{kcsan_start}.*?=+"),
            &format!("{kcsan_marker}{NAME_TAIL}"),
            vec![kcsan_trigger],
        ),
        Pattern::multi_line(
            kfence,
            Some(TSTAMP),
            &format!(r"{kfence_start}.*?{TSTAMP}{PID}?\s+=+"),
            &format!("{kfence_marker}{NAME_TAIL}"),
            vec![kfence_trigger],
        ),
        Pattern::multi_line(
            "panic-multiline",
            Some(TSTAMP),
            &format!(r"{TSTAMP}{PID}?\s+Kernel panic - [^\n]+\n.*?-+\[? end Kernel panic - [^\n]+ \]?-*"),
            &format!("Kernel {NAME_TAIL}"),
            vec![ThisLine("Kernel panic - ")],
        ),
        Pattern::multi_line(
            "internal-error-oops",
            Some(TSTAMP),
            &format!(r"{TSTAMP}{PID}?\s+Internal error: Oops.*?-+\[? end trace \w+ \]?-+"),
            &format!("Oops{NAME_TAIL}"),
            vec![ThisLine("Internal error: Oops")],
        ),
        Pattern::one_line(
            "oops",
            r"^[^\n]+Oops(?: -|:).*?$",
            &format!("Oops{NAME_TAIL}"),
            vec![ThisLine("Oops -"), ThisLine("Oops:")],
        ),
        Pattern::one_line(
            "fault",
            r"^[^\n]+Unhandled fault.*?$",
            &format!("Unhandled {NAME_TAIL}"),
            vec![ThisLine("Unhandled fault")],
        ),
        Pattern::one_line(
            "warning",
            r"^[^\n]+WARNING:.*?$",
            &format!("WARNING:{NAME_TAIL}"),
            vec![ThisLine("WARNING:")],
        ),
        Pattern::one_line(
            "bug",
            r"^[^\n]+(?: kernel BUG at|BUG:).*?$",
            &format!("BUG{NAME_TAIL}"),
            vec![ThisLine(" kernel BUG at"), ThisLine("BUG:")],
        ),
        Pattern::one_line(
            "invalid-opcode",
            r"^[^\n]+invalid opcode:.*?$",
            &format!("invalid opcode:{NAME_TAIL}"),
            vec![ThisLine("invalid opcode:")],
        ),
        Pattern::one_line(
            "panic",
            r"Kernel panic - not syncing.*?$",
            &format!("Kernel {NAME_TAIL}"),
            vec![ThisLine("Kernel panic - not syncing")],
        ),
    ])
});

/// SQUAD keeps only kernel messages: from a timestamp (+ caller id) and a
/// space to the end of the line.
static KERNEL_MESSAGE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!("{TSTAMP}{PID}? ")).expect("kernel message pattern"));

/// Where [`KERNEL_MESSAGE`] first matches in `line`, found by a byte scan:
/// `Ok(None)` when it does not match, `Err(())` when a non-ASCII byte is in
/// the way (`\d` and `\s` take some non-ASCII characters) and the regex
/// must decide.
fn kernel_message_start(line: &[u8]) -> Result<Option<usize>, ()> {
    // Most kernel messages start their line: no search then.
    if line.first() == Some(&b'[') && kernel_message_at(line, 0)? {
        return Ok(Some(0));
    }
    let mut from = 0;
    while let Some(found) = memchr::memchr(b'[', &line[from..]) {
        let at = from + found;
        if kernel_message_at(line, at)? {
            return Ok(Some(at));
        }
        from = at + 1;
    }
    Ok(None)
}

/// Whether `\[[ \d]+\.[ \d]+\](?:\s*?\[\s*?[CT]\d+\s*?\])? ` matches at
/// `at` (a `[`); `Err(())` when that depends on a non-ASCII character. No
/// part of the pattern can give back what it took to let the rest match
/// (each class excludes the byte that follows it), so one forward scan
/// decides.
fn kernel_message_at(line: &[u8], at: usize) -> Result<bool, ()> {
    // The byte at `i`, `Err` if it is not ASCII; 0 past the end (matches nothing).
    let byte = |i: usize| match line.get(i) {
        Some(&b) if b >= 0x80 => Err(()),
        Some(&b) => Ok(b),
        None => Ok(0),
    };
    let span = |mut i: usize, class: fn(u8) -> bool| -> Result<usize, ()> {
        while class(byte(i)?) {
            i += 1;
        }
        Ok(i)
    };
    let time = |b: u8| b == b' ' || b.is_ascii_digit();
    // Python's and the regex crate's `\s` on ASCII: `[\t\n\v\f\r ]`.
    let space = |b: u8| matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ');
    let digit = |b: u8| b.is_ascii_digit();
    // `\[[ \d]+\.[ \d]+\]`
    let i = span(at + 1, time)?;
    if i == at + 1 || byte(i)? != b'.' {
        return Ok(false);
    }
    let j = span(i + 1, time)?;
    if j == i + 1 || byte(j)? != b']' {
        return Ok(false);
    }
    let after = j + 1;
    // No caller id, then the space.
    if byte(after)? == b' ' {
        return Ok(true);
    }
    // `\s*?\[\s*?[CT]\d+\s*?\] `
    let k = span(after, space)?;
    if byte(k)? != b'[' {
        return Ok(false);
    }
    let k = span(k + 1, space)?;
    if !matches!(byte(k)?, b'C' | b'T') {
        return Ok(false);
    }
    let d = span(k + 1, digit)?;
    if d == k + 1 {
        return Ok(false);
    }
    let e = span(d, space)?;
    Ok(byte(e)? == b']' && byte(e + 1)? == b' ')
}

/// `root@<anything>:/#` or `:~#`, one of the three boot/test split points.
static ROOT_PROMPT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"root@(.*):[/~]#").expect("root prompt pattern"));

static LOGIN: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b" login:"));
static CONSOLE: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"console:/"));

/// A literal each split point holds, to rule out the lines without one.
static SPLIT_LITERALS: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostFirst)
        .build([" login:", "console:/", "root@"])
        .expect("split literals build")
});

/// Where SQUAD would cut the log in this line: the earliest ` login:`,
/// `console:/` or `root@<host>:/#` (or `:~#`).
fn split_point(line: &str) -> Option<usize> {
    let login = LOGIN.find(line.as_bytes());
    let console = CONSOLE.find(line.as_bytes());
    let root = ROOT_PROMPT.find(line).map(|m| m.start());
    [login, console, root].into_iter().flatten().min()
}

/// SQUAD 1.98's `linux_log_parser`, fed bytes as they come.
///
/// The log is cut at its first ` login:`, `console:/` or `root@<host>:/#`
/// (or `:~#`) into a boot part (suite `log-parser-boot`) and a test part
/// (suite `log-parser-test`). In each part only kernel messages count
/// (lines with a `[ secs.usecs]` timestamp, from the timestamp on), joined
/// by `\n`; SQUAD's patterns run over that text. One streaming pass; memory
/// is bounded by the window ([`super::WINDOW_LINES`],
/// [`super::WINDOW_BYTES`]) and the test caps.
pub struct BootLogParser {
    lines: LineSplitter,
    state: BootState,
}

struct BootState {
    /// 0 before the split point (boot), 1 after it (test).
    part: usize,
    matcher: SegmentMatcher,
    collector: Collector,
    /// Rules out lines without a split point (before the split).
    split_scan: Prescan,
    /// Rules out lines without any pattern's literal.
    pattern_scan: Prescan,
}

impl Default for BootLogParser {
    fn default() -> Self {
        Self::new()
    }
}

impl BootLogParser {
    /// A parser at the start of a log.
    pub fn new() -> Self {
        let naming = Naming { max_name_len: 256 - 65, fingerprints: true, clean: remove_numbers_and_time };
        BootLogParser {
            lines: LineSplitter::default(),
            state: BootState {
                part: 0,
                matcher: SegmentMatcher::with_tentative_newlines(&PATTERNS),
                collector: Collector::new(&PATTERNS, naming, &SUITES),
                split_scan: Prescan::new(&SPLIT_LITERALS),
                pattern_scan: Prescan::new(PATTERNS.any_literal()),
            },
        }
    }

    /// Feeds the next bytes of the log (any size, cut anywhere).
    pub fn feed(&mut self, bytes: &[u8]) {
        let state = &mut self.state;
        state.split_scan.new_piece();
        state.pattern_scan.new_piece();
        self.lines.feed(bytes, |line| state.line(bytes, &line));
    }

    /// Ends the log and returns the tests: boot suite first, then test
    /// suite; within a suite pattern by pattern in SQUAD's order.
    pub fn finish(mut self) -> Vec<LogTest> {
        let state = &mut self.state;
        self.lines.finish(|line| state.line(&[], &line));
        self.state.end_part();
        self.state.collector.into_tests()
    }
}

impl BootState {
    /// Takes the next line of the log, cut from `piece`.
    fn line(&mut self, piece: &[u8], line: &Line<'_>) {
        if self.part == 0 && self.split_scan.may_hold(piece, line) {
            let text = line.text();
            if let Some(at) = split_point(&text) {
                self.message(&text[..at], true);
                self.end_part();
                self.part = 1;
                self.message(&text[at..], true);
                return;
            }
        }
        let literal = self.pattern_scan.may_hold(piece, line);
        match kernel_message_start(line.bytes) {
            Ok(None) => {}
            // The message starts at an ASCII byte: decoding it alone gives
            // the same text as decoding the line.
            Ok(Some(at)) => self.pass_on(&line.text_from(at), literal),
            Err(()) => self.message(&line.text(), literal),
        }
    }

    /// Keeps the kernel message in `text`, if there is one.
    fn message(&mut self, text: &str, literal: bool) {
        if let Some(found) = KERNEL_MESSAGE.find(text) {
            self.pass_on(&text[found.start()..], literal);
        }
    }

    /// Passes on a kernel message. Whether a `\n` follows it in the part's
    /// text is only known with the next line: it is passed on as if one
    /// did, and [`Self::end_part`] takes it back from the last message.
    fn pass_on(&mut self, message: &str, literal: bool) {
        let BootState { part, matcher, collector, .. } = self;
        matcher.push(message, true, literal, &mut |pattern, snippet| collector.record(*part, pattern, snippet));
    }

    fn end_part(&mut self) {
        let BootState { part, matcher, collector, .. } = self;
        matcher.last_line_unterminated();
        matcher.finish(&mut |pattern, snippet| collector.record(*part, pattern, snippet));
    }
}

/// Runs [`BootLogParser`] over everything `input` yields.
///
/// # Errors
///
/// [`LogParseError::Io`] when reading `input` fails.
pub fn parse_boot_log(input: impl BufRead) -> Result<Vec<LogTest>, LogParseError> {
    let mut parser = BootLogParser::new();
    read_all(input, |bytes| parser.feed(bytes))?;
    Ok(parser.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux_log::{WINDOW_BYTES, WINDOW_LINES};

    /// The byte scan finds the kernel message where the regex does, or
    /// leaves it to the regex when a non-ASCII character is in the way.
    #[test]
    fn kernel_message_scan_agrees_with_the_regex() {
        let alphabet =
            ["[", "[", "]", "]", " ", " ", "0", "7", ".", "T", "C", "\t", "\x0b", "\r", "x", "\u{663}", "\u{a0}", "é"];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            usize::try_from(seed % n as u64).expect("small")
        };
        let mut unsure = 0;
        for round in 0..200_000 {
            let mut line = String::new();
            // Start most lines with something close to a timestamp.
            if round % 2 == 0 {
                line.push_str(["[  1.5]", "[ 12.000001] [T1", "[0.0]\t[ C2 ]", "[1.2][T3]"][next(4)]);
            }
            for _ in 0..next(14) {
                line.push_str(alphabet[next(alphabet.len())]);
            }
            let expected = KERNEL_MESSAGE.find(&line).map(|m| m.start());
            match kernel_message_start(line.as_bytes()) {
                Ok(found) => assert_eq!(found, expected, "{line:?}"),
                Err(()) => {
                    assert!(!line.is_ascii(), "{line:?}");
                    unsure += 1;
                }
            }
        }
        assert!(unsure < 100_000, "{unsure} lines left to the regex");
        for (line, expected) in [
            ("[    1.000000] a", Some(0)),
            ("x [ 1.0] [ T12 ] a", Some(2)),
            ("[ 1.0]\t[C1]\t a", None),
            ("[ 1.0] [T] a", Some(0)),
            ("[ 1.0][T1]x", None),
            ("[ .0] a", Some(0)),
            ("[.0] [1.] [1.0]x", None),
            ("[[ 1.0] ", Some(1)),
        ] {
            assert_eq!(kernel_message_start(line.as_bytes()), Ok(expected), "{line:?}");
            assert_eq!(KERNEL_MESSAGE.find(line).map(|m| m.start()), expected, "{line:?}");
        }
    }

    fn fixture_logs() -> Vec<Vec<u8>> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
        let mut logs = Vec::new();
        for dir in ["squad/linux_log_parser", "external/lava-kernel-logs"] {
            let mut paths: Vec<_> = std::fs::read_dir(root.join(dir))
                .expect("fixture directory")
                .map(|entry| entry.expect("fixture entry").path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "log" || ext == "txt"))
                .collect();
            paths.sort();
            logs.extend(paths.iter().map(|path| std::fs::read(path).expect("fixture log")));
        }
        assert!(logs.len() >= 20, "{} fixture logs", logs.len());
        logs
    }

    fn parse_in_pieces(log: &[u8], size: usize) -> Vec<LogTest> {
        let mut parser = BootLogParser::new();
        log.chunks(size).for_each(|piece| parser.feed(piece));
        parser.finish()
    }

    /// Lines cut by piece boundaries, checked line by line, and lines in
    /// one piece, ruled out piece by piece, give the same tests.
    #[test]
    fn pieces_do_not_matter_on_any_fixture() {
        for mut log in fixture_logs() {
            let whole = parse_boot_log(log.as_slice()).expect("in memory");
            for size in [1, 5, 64, 1000, 4096] {
                assert_eq!(parse_in_pieces(&log, size), whole, "pieces of {size} bytes");
            }
            // Invalid UTF-8 in a piece only changes the lines that hold it.
            log.splice(log.len() / 2..log.len() / 2, *b"\xff\xfe");
            let whole = parse_boot_log(log.as_slice()).expect("in memory");
            for size in [7, 4096] {
                assert_eq!(parse_in_pieces(&log, size), whole, "pieces of {size} bytes, invalid UTF-8");
            }
        }
    }

    /// A part's last message has no `\n` after it: a report ending there
    /// fits a window of exactly [`WINDOW_BYTES`], one byte more does not.
    #[test]
    fn last_message_of_a_part_fits_the_window_without_its_newline() {
        let report = |size: usize| {
            let first = "[    1.000000] ------------[ cut here ]------------\n";
            let last = "[    2.000000] ---[ end trace 0000000000000000 ]---";
            let fillers = 8_000;
            assert!(fillers < WINDOW_LINES);
            let filler = |len: usize| format!("[    1.500000] {}\n", "x".repeat(len - 16));
            // Lines of about 1 KiB (longer ones would be cut at `MAX_LINE_BYTES`).
            let body = size - first.len() - last.len();
            let mut log = String::from(first);
            for n in 0..fillers {
                log.push_str(&filler(body / fillers + usize::from(n < body % fillers)));
            }
            log.push_str(last);
            assert_eq!(log.len(), size);
            log.push_str("\nhost login: root\n");
            parse_boot_log(log.as_bytes()).expect("in memory")
        };
        let fits = report(WINDOW_BYTES);
        assert!(fits.iter().any(|t| t.suite == "log-parser-boot" && t.name.starts_with("exception-")), "{fits:?}");
        let beyond = report(WINDOW_BYTES + 1);
        assert!(beyond.is_empty(), "{:?}", beyond.iter().map(|t| &t.name).collect::<Vec<_>>());
    }
}
