//! SQUAD 1.98's two log-parser plugins as streaming parsers.
//!
//! * [`parse_boot_log`] / [`BootLogParser`]: `linux_log_parser`, kernel
//!   failure reports (oops, panic, BUG, KASAN, KFENCE, KCSAN, WARNING,
//!   invalid opcode, unhandled fault, internal error) in a boot/test
//!   console log, reported in suites `log-parser-boot` and
//!   `log-parser-test`.
//! * [`parse_build_log`] / [`BuildLogParser`]: `linux_log_parser_build`,
//!   gcc/clang/linker warnings and errors in a tuxmake kernel build log,
//!   reported in suite `log-parser-build-gcc` or `log-parser-build-clang`.
//!
//! Both read their input once, line by line, in bounded memory whatever
//! the input size, and report the tests SQUAD 1.98 creates: same suites,
//! names and results, and the same snippets in each test's log. Where the
//! bounds make a difference (lines over [`MAX_LINE_BYTES`], multi-line
//! reports longer than [`WINDOW_LINES`] / [`WINDOW_BYTES`], tests with over
//! [`MAX_SNIPPETS_PER_TEST`] snippets, more than [`MAX_TESTS`] tests or
//! [`MAX_KEPT_SNIPPET_BYTES`] of snippets), the results may differ from
//! SQUAD's; `docs/plugins.md` lists every known difference.

mod boot;
mod build;
mod collect;
mod engine;
mod lines;
mod naming;
mod plugin;

use std::io::{BufRead, ErrorKind};

pub use boot::{parse_boot_log, BootLogParser};
pub use build::{parse_build_log, BuildLogParser};
pub use collect::{MAX_KEPT_SNIPPET_BYTES, MAX_LOG_CHARS, MAX_SNIPPETS_PER_TEST, MAX_TESTS};
pub use engine::{WINDOW_BYTES, WINDOW_LINES};
pub use lines::MAX_LINE_BYTES;
pub use plugin::{LinuxLogParser, LinuxLogParserBuild, LINUX_LOG_PARSER_ALIAS};

/// One test a log parser reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTest {
    /// Suite slug, e.g. `log-parser-boot` or `log-parser-build-gcc`.
    pub suite: String,
    /// Test name, e.g. `kasan-bug-kasan-slab-out-of-bounds-in-kmalloc_oob_right`.
    pub name: String,
    /// The test result: always `false` (fail), as SQUAD 1.98 only creates
    /// tests for problems it found.
    pub result: bool,
    /// Whether this is the test of a name or the test of one distinct
    /// normalised snippet (decides how [`LogTest::log`] joins snippets).
    pub kind: LogTestKind,
    /// The distinct snippets matched, in order of first appearance in the
    /// log, at most [`MAX_SNIPPETS_PER_TEST`] of them and at most
    /// [`MAX_LOG_CHARS`] characters once joined.
    pub snippets: Vec<String>,
}

/// The two kinds of test SQUAD 1.98's log parsers create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTestKind {
    /// `<pattern>-<slug>` (or just `<pattern>` when no name could be
    /// extracted): every snippet of that name; log joined with `\n`.
    Aggregate,
    /// `<pattern>-<slug>-<sha256>`: the snippets of that name whose text
    /// without numbers and times has this SHA-256; log joined with
    /// `\n---\n`. Only the boot log parser makes these.
    Sha,
}

impl LogTestKind {
    fn separator(self) -> &'static str {
        match self {
            LogTestKind::Aggregate => "\n",
            LogTestKind::Sha => "\n---\n",
        }
    }
}

impl LogTest {
    /// The test's log as SQUAD stores it: the snippets joined with `\n`
    /// (aggregate tests) or `\n---\n` (SHA tests), cut at
    /// [`MAX_LOG_CHARS`] characters. SQUAD joins them in an undefined
    /// order; here it is their order of first appearance.
    pub fn log(&self) -> String {
        let log = self.snippets.join(self.kind.separator());
        match log.char_indices().nth(MAX_LOG_CHARS) {
            Some((cut, _)) => log[..cut].to_owned(),
            None => log,
        }
    }
}

/// Why a log could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum LogParseError {
    /// Reading the input failed.
    #[error("cannot read the log: {0}")]
    Io(#[from] std::io::Error),
}

/// Feeds everything `input` yields to `feed`, in the reader's own pieces.
fn read_all(mut input: impl BufRead, mut feed: impl FnMut(&[u8])) -> Result<(), LogParseError> {
    loop {
        let piece = match input.fill_buf() {
            Ok(piece) => piece,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if piece.is_empty() {
            return Ok(());
        }
        feed(piece);
        let used = piece.len();
        input.consume(used);
    }
}
