//! `linux_log_parser`: kernel failure reports in a boot/test console log.

use std::io::BufRead;
use std::sync::LazyLock;

use memchr::memmem;
use regex::Regex;

use super::collect::{Collector, Naming};
use super::engine::{Pattern, PatternSet, SegmentMatcher, Trigger};
use super::lines::LineSplitter;
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

/// `root@<anything>:/#` or `:~#`, one of the three boot/test split points.
static ROOT_PROMPT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"root@(.*):[/~]#").expect("root prompt pattern"));

/// Where SQUAD would cut the log in this line: the earliest ` login:`,
/// `console:/` or `root@<host>:/#` (or `:~#`).
fn split_point(line: &str) -> Option<usize> {
    let login = memmem::find(line.as_bytes(), b" login:");
    let console = memmem::find(line.as_bytes(), b"console:/");
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
    /// The last kernel message (if `holding`), held back until we know
    /// whether another follows it (`\n`) or its part ends (no `\n`).
    held: String,
    holding: bool,
    collector: Collector,
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
                matcher: SegmentMatcher::new(&PATTERNS),
                held: String::new(),
                holding: false,
                collector: Collector::new(&PATTERNS, naming, &SUITES),
            },
        }
    }

    /// Feeds the next bytes of the log (any size, cut anywhere).
    pub fn feed(&mut self, bytes: &[u8]) {
        let state = &mut self.state;
        self.lines.feed(bytes, |line, _| state.line(line));
    }

    /// Ends the log and returns the tests: boot suite first, then test
    /// suite; within a suite pattern by pattern in SQUAD's order.
    pub fn finish(mut self) -> Vec<LogTest> {
        let state = &mut self.state;
        self.lines.finish(|line, _| state.line(line));
        self.state.end_part();
        self.state.collector.into_tests()
    }
}

impl BootState {
    fn line(&mut self, line: &str) {
        if self.part == 0 {
            if let Some(at) = split_point(line) {
                self.message(&line[..at]);
                self.end_part();
                self.part = 1;
                self.message(&line[at..]);
                return;
            }
        }
        self.message(line);
    }

    fn message(&mut self, text: &str) {
        let Some(found) = KERNEL_MESSAGE.find(text) else {
            return;
        };
        let mut held = std::mem::take(&mut self.held);
        if self.holding {
            self.push(&held, true);
        }
        held.clear();
        held.push_str(&text[found.start()..]);
        self.held = held;
        self.holding = true;
    }

    fn end_part(&mut self) {
        if self.holding {
            let last = std::mem::take(&mut self.held);
            self.push(&last, false);
            self.held = last;
            self.holding = false;
        }
        let BootState { part, matcher, collector, .. } = self;
        matcher.finish(&mut |pattern, snippet| collector.record(*part, pattern, snippet));
    }

    fn push(&mut self, message: &str, newline: bool) {
        let BootState { part, matcher, collector, .. } = self;
        matcher.push(message, newline, &mut |pattern, snippet| collector.record(*part, pattern, snippet));
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
