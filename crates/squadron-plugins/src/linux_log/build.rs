//! `linux_log_parser_build`: compiler and linker problems in a tuxmake
//! kernel build log.

use std::io::BufRead;
use std::sync::LazyLock;

use aho_corasick::AhoCorasick;
use memchr::memmem;
use regex_automata::meta;

use super::collect::{Collector, Naming, RecentNames};
use super::engine::{anchored_regex, any_of, match_at, LineWindow, Pattern, PatternSet, SegmentMatcher, Trigger};
use super::lines::{Line, LineSplitter, Prescan};
use super::naming::clean_build_name;
use super::{read_all, LogParseError, LogTest};

use Trigger::{NextLine, ThisLine};

/// `path:line:col:` or `<stdin>:` at the start of a line.
const FILE_PATH: &str = r"^(?:[^\n]*?:(?:\d+:){2}|<[^\n]*?>:)";

/// `gcc-compiler` / `clang-compiler`: a `file:l:c: error|warning:` line and
/// what belongs to it (source excerpts, `...`, indented lines that are not
/// `  CC` progress, `note:` lines). SQUAD's pattern uses a lookahead, which
/// is checked by hand here.
fn compiler(name: &'static str) -> Pattern {
    let first = anchored_regex(&format!(r"{FILE_PATH} (?:error|warning): [^\n]+?\n"));
    let dots = anchored_regex(r"\.+\n");
    let progress = anchored_regex(r"\s+(?:CC|Kernel[^\n]*?is ready)");
    let indented = anchored_regex(r"\s+?[^\n]+\n");
    let note = anchored_regex(&format!(r"{FILE_PATH} note:[^\n]+\n"));
    let body = move |hay: &str, at: usize| {
        let mut end = match_at(&first, hay, at)?;
        loop {
            let next = match_at(&dots, hay, end)
                .or_else(|| match_at(&progress, hay, end).is_none().then(|| match_at(&indented, hay, end)).flatten())
                .or_else(|| match_at(&note, hay, end));
            match next {
                Some(next) => end = next,
                None => return Some(end),
            }
        }
    };
    Pattern::with_body(
        name,
        None,
        Box::new(body),
        r"^[^\n]*(?:error|warning)[^\n]*$",
        vec![ThisLine(" error: "), ThisLine(" warning: ")],
    )
}

/// SQUAD's `MULTILINERS_GENERAL`.
fn general_multi_line() -> Vec<Pattern> {
    let multi = |name, pattern, extract, trigger| Pattern::multi_line(name, None, pattern, extract, vec![trigger]);
    vec![
        multi(
            "general-not-a-git-repo",
            r"^[^\n]*fatal: not a git repository.*?not set\)\.$",
            r"fatal: not a git repository.*?$",
            ThisLine("fatal: not a git repository"),
        ),
        multi(
            "general-unexpected-argument",
            r"^[^\n]*error: Found argument.*?--help$",
            r"error: Found argument.*?$",
            ThisLine("error: Found argument"),
        ),
        multi(
            "general-broken-32-bit",
            r"^[^\n]*Warning: you seem to have a broken 32-bit build.*?(?:If[^\n]*?try:(?:\n|\s+.+?$)+)+",
            r"Warning:.*?$",
            ThisLine("Warning: you seem to have a broken 32-bit build"),
        ),
        multi(
            "general-makefile-overriding",
            r"^[^\n]*warning: overriding recipe for target.*?ignoring old recipe for target.*?$",
            r"^[^\n]*warning:.*?$",
            ThisLine("warning: overriding recipe for target"),
        ),
        multi(
            "general-unmet-dependencies",
            r"^WARNING: unmet direct dependencies detected for.*?$(?:\n +[^\n]+)*",
            r"^WARNING: unmet direct dependencies detected for.*?$",
            ThisLine("WARNING: unmet direct dependencies detected for"),
        ),
        multi(
            "general-ldd",
            r"^[^\n]*?lld:[^\n]+?(?:warning|error):.*?$(?:\n^>>>[^\n]+)*",
            r"lld:.*?$",
            ThisLine("lld:"),
        ),
        multi(
            "general-ld",
            r"^[^\n]*?ld:[^\n]+?(?:warning|error):[^\n]*?$(?:\n^[^\n]*?NOTE:[^\n]+)*",
            r"(?:warning|error):.*?$",
            ThisLine("ld:"),
        ),
        multi(
            "general-objcopy",
            r"^[^\n]*?objcopy:[^\n]+?(?:warning|error):[^\n]*?$(?:\n^[^\n]*?NOTE:[^\n]+)*",
            r"(?:warning|error):.*?$",
            ThisLine("objcopy:"),
        ),
        multi(
            "general-ld-undefined-reference",
            r"^[^\n]*?ld[^\n]*?$\n^[^\n]+undefined reference.*?$",
            r"undefined reference.*?$",
            NextLine("undefined reference"),
        ),
        multi(
            "general-modpost",
            r"^[^\n]*?WARNING: modpost:[^\n]*?$(?:\n^To see.*?:$\n^.*?$)?",
            r"WARNING.*?$",
            ThisLine("WARNING: modpost:"),
        ),
        Pattern::multi_line(
            "general-python-traceback",
            Some("Traceback"),
            r"Traceback.*?^[^\s]+Error: .*?$",
            r"^[^\s]+Error: .*?$",
            vec![ThisLine("Traceback")],
        ),
    ]
}

/// SQUAD's `ONELINERS_CLANG`.
fn clang_one_line() -> Vec<Pattern> {
    vec![
        Pattern::one_line(
            "clang-compiler-single-line",
            r"^clang: (?:error|warning).*?$",
            r"^[^\n]*(?:error|warning).*?$",
            vec![ThisLine("clang: error"), ThisLine("clang: warning")],
        ),
        Pattern::one_line(
            "clang-compiler-fatal-error",
            r"^fatal error.*?$",
            r"^fatal error.*?$",
            vec![ThisLine("fatal error")],
        ),
    ]
}

/// SQUAD's `ONELINERS_GENERAL`.
fn general_one_line() -> Vec<Pattern> {
    let one = |name, pattern, extract, literal| Pattern::one_line(name, pattern, extract, vec![ThisLine(literal)]);
    let same = |name, pattern, literal| one(name, pattern, pattern, literal);
    vec![
        same(
            "general-no-such-file-or-directory",
            r"^[^\n]+?No such file or directory.*?$",
            "No such file or directory",
        ),
        same("general-no-targets", r"^[^\n]+?No targets.*?$", "No targets"),
        same("general-no-rule-to-make-target", r"^[^\n]+?No rule to make target.*?$", "No rule to make target"),
        // SQUAD's `.` here is any character, not a dot.
        same("general-makefile-config", r"^Makefile.config:\d+:.*?$", "Makefile"),
        same("general-not-found", r"^[^\n]*?not found.*?$", "not found"),
        one(
            "general-kernel-abi",
            r"^Warning: Kernel ABI header at.*?$",
            r"Warning: Kernel ABI header at.*?$",
            "Warning: Kernel ABI header at",
        ),
        one("general-missing", r"^Warning: missing.*?$", r"Warning: missing.*?$", "Warning: missing"),
        one("general-dtc", r"^[^\n]*?Warning \([^\n]*?\).*?$", r"Warning.*?$", "Warning ("),
        one(
            "general-register-allocation",
            r"^[^\n]*?error: register allocation failed.*?$",
            r"error.*?$",
            "error: register allocation failed",
        ),
    ]
}

/// SQUAD's `REGEXES_GCC`.
static GCC: LazyLock<PatternSet> = LazyLock::new(|| {
    PatternSet::new(
        [vec![compiler("gcc-compiler")], general_multi_line(), general_one_line()].into_iter().flatten().collect(),
    )
});

/// SQUAD's `REGEXES_CLANG`.
static CLANG: LazyLock<PatternSet> = LazyLock::new(|| {
    PatternSet::new(
        [vec![compiler("clang-compiler")], general_multi_line(), clang_one_line(), general_one_line()]
            .into_iter()
            .flatten()
            .collect(),
    )
});

/// The lines that split a build log into blocks and give its snippets
/// their context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    Make,
    InFile,
    InFunction,
    EnteringDirectory,
    LeavingDirectory,
}

/// SQUAD's `split_regex_gcc` alternatives, in its order.
static KEYWORDS: LazyLock<[(Keyword, meta::Regex); 5]> = LazyLock::new(|| {
    [
        (Keyword::Make, anchored_regex(r"^make .*?$")),
        (Keyword::InFile, anchored_regex(r"^In file[^\n]*?[:,]$(?:\n^(?:\s+|In file)[^\n]*?[:,]$)*")),
        (Keyword::InFunction, anchored_regex(r"^[^\n]*?In function.*?:$")),
        (Keyword::EnteringDirectory, anchored_regex(r"^make\[(?:\d+)\]: Entering directory.*?$")),
        (Keyword::LeavingDirectory, anchored_regex(r"^make\[(?:\d+)\]: Leaving directory.*?$")),
    ]
});

/// The order SQUAD's `process_blocks` tests a block against the keywords.
const CLASSIFY_ORDER: [Keyword; 5] =
    [Keyword::Make, Keyword::EnteringDirectory, Keyword::LeavingDirectory, Keyword::InFile, Keyword::InFunction];

fn keyword_regex(keyword: Keyword) -> &'static meta::Regex {
    &KEYWORDS.iter().find(|(k, _)| *k == keyword).expect("every keyword has a pattern").1
}

static IN_FUNCTION: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"In function"));
static TOOLCHAIN_CLANG: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"--toolchain=clang"));
static TOOLCHAIN_GCC: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"--toolchain=gcc"));

/// What a line needs for [`IN_FUNCTION`] or the toolchain finders to find
/// anything: rules lines out piece by piece.
static RARE_LITERALS: LazyLock<AhoCorasick> = LazyLock::new(|| any_of(&["In function", "--toolchain="]));

/// What a line needs for a pattern of either toolchain to start in it (or
/// in the line before it): rules lines out piece by piece.
static PATTERN_LITERALS: LazyLock<AhoCorasick> =
    LazyLock::new(|| any_of(&[GCC.literal_strings(), CLANG.literal_strings()].concat()));

/// Whether a keyword can start this line (cheap test before the regexes);
/// `rare` is false when the line is known not to hold `In function`.
fn may_be_keyword(line: &str, rare: bool) -> bool {
    line.starts_with("make") || line.starts_with("In file") || (rare && IN_FUNCTION.find(line.as_bytes()).is_some())
}

/// In a [`KeywordSplitter`]'s line masks: a keyword may start in the line.
const KEYWORD: u64 = 1;
/// In a [`KeywordSplitter`]'s line masks: the line may hold a pattern literal.
const LITERAL: u64 = 2;

enum Event<'a> {
    /// A line of text between keywords, whether `\n` follows it, and
    /// whether it may hold a pattern literal.
    Text(&'a str, bool, bool),
    /// A keyword block, what `process_blocks` takes it for, and whether `\n` follows it.
    Keyword(&'a str, Keyword, bool),
}

/// SQUAD's `split_by_regex(log, split_regex_gcc)`, streamed: tells keyword
/// blocks from text lines, looking ahead at most a window for keywords
/// that span lines.
#[derive(Default)]
struct KeywordSplitter {
    window: LineWindow,
}

impl KeywordSplitter {
    /// Adds a line; `rare` and `literal` are false when the line is known
    /// not to hold [`RARE_LITERALS`] or [`PATTERN_LITERALS`].
    fn push(&mut self, line: &str, newline: bool, rare: bool, literal: bool, on: &mut impl FnMut(Event<'_>)) {
        let mask = if may_be_keyword(line, rare) { KEYWORD } else { 0 } | if literal { LITERAL } else { 0 };
        self.window.push(line, newline, mask);
        while self.window.ready(false) {
            self.step(on);
        }
    }

    fn finish(&mut self, on: &mut impl FnMut(Event<'_>)) {
        while self.window.ready(true) {
            self.step(on);
        }
    }

    fn step(&mut self, on: &mut impl FnMut(Event<'_>)) {
        let front = self.window.front();
        let hay = self.window.window();
        let found = (front.mask & KEYWORD != 0)
            .then(|| KEYWORDS.iter().find_map(|(keyword, re)| Some((*keyword, match_at(re, hay, 0)?))))
            .flatten();
        let Some((keyword, end)) = found else {
            on(Event::Text(&hay[..front.len], front.newline, front.mask & LITERAL != 0));
            self.window.pop_front(1);
            return;
        };
        let text = &hay[..end];
        let kind =
            CLASSIFY_ORDER.into_iter().find(|k| match_at(keyword_regex(*k), text, 0).is_some()).unwrap_or(keyword);
        // A keyword ends at the end of a line.
        let (last, _) = self.window.locate(front.start + end);
        on(Event::Keyword(text, kind, self.window.line(last).newline));
        self.window.pop_front(last + 1);
    }
}

/// The last keyword blocks seen, prepended to each snippet as SQUAD does.
#[derive(Default)]
struct Context {
    make: Option<String>,
    entering: Option<String>,
    in_file: Option<String>,
    in_function: Option<String>,
}

impl Context {
    fn update(&mut self, keyword: Keyword, text: &str) {
        let text = Some(text.to_owned());
        match keyword {
            Keyword::Make => *self = Context { make: text, ..Context::default() },
            Keyword::EnteringDirectory => {
                *self = Context { make: self.make.take(), entering: text, ..Context::default() }
            }
            Keyword::LeavingDirectory => *self = Context { make: self.make.take(), ..Context::default() },
            Keyword::InFile => {
                self.in_file = text;
                self.in_function = None;
            }
            Keyword::InFunction => self.in_function = text,
        }
    }

    fn prepend(&self, snippet: &str) -> String {
        let mut out = String::new();
        for block in [&self.make, &self.entering, &self.in_file, &self.in_function].into_iter().flatten() {
            out.push_str(block);
            out.push('\n');
        }
        out.push_str(snippet);
        out
    }
}

/// One toolchain's patterns run over the text blocks.
struct Engine {
    matcher: SegmentMatcher,
    context: Context,
    collector: Collector,
}

impl Engine {
    fn new(set: &'static PatternSet, suite: &str) -> Self {
        let naming = Naming { max_name_len: 256, fingerprints: false, clean: clean_build_name };
        Engine {
            matcher: SegmentMatcher::new(set),
            context: Context::default(),
            collector: Collector::new(set, naming, &[suite]),
        }
    }

    /// Takes the next event; `names` is shared with the other toolchain's
    /// engine, which sees the same events and mostly the same matches.
    fn on(&mut self, event: &Event<'_>, names: &mut RecentNames) {
        let Engine { matcher, context, collector } = self;
        let mut record = |pattern, snippet: &str| collector.record_with(0, pattern, &context.prepend(snippet), names);
        match *event {
            Event::Text(line, newline, literal) => matcher.push(line, newline, literal, &mut record),
            Event::Keyword(text, keyword, newline) => {
                matcher.finish(&mut record);
                context.update(keyword, text);
                if newline {
                    // The text block after a keyword starts with the `\n` that ends it.
                    matcher.push("", true, false, &mut |pattern, snippet| {
                        collector.record_with(0, pattern, &context.prepend(snippet), names)
                    });
                }
            }
        }
    }

    fn finish(mut self) -> Vec<LogTest> {
        let Engine { matcher, context, collector } = &mut self;
        matcher.finish(&mut |pattern, snippet| collector.record(0, pattern, &context.prepend(snippet)));
        self.collector.into_tests()
    }
}

/// SQUAD 1.98's `linux_log_parser_build`, fed bytes as they come.
///
/// The toolchain is `clang` if `--toolchain=clang` occurs anywhere in the
/// log, else `gcc` if `--toolchain=gcc` does; with neither there are no
/// tests (as in SQUAD). The log is cut into blocks at `make ...`,
/// `make[n]: Entering/Leaving directory`, `In file included from ...` and
/// `... In function ...:` lines; the toolchain's patterns run over the
/// other blocks, and each snippet is prefixed with the last `make`,
/// directory, `In file` and `In function` blocks. Until the toolchain is
/// known both toolchains' patterns run. One streaming pass; memory is
/// bounded by the windows ([`super::WINDOW_LINES`], [`super::WINDOW_BYTES`]:
/// one for keywords, one per toolchain) and the test caps.
pub struct BuildLogParser {
    lines: LineSplitter,
    state: BuildState,
}

struct BuildState {
    /// Rules out lines without `In function` or `--toolchain=`.
    rare_scan: Prescan,
    /// Rules out lines without any pattern's literal.
    pattern_scan: Prescan,
    splitter: KeywordSplitter,
    /// Dropped once `--toolchain=clang` is seen: clang wins then.
    gcc: Option<Engine>,
    clang: Engine,
    saw_gcc: bool,
    saw_clang: bool,
    names: RecentNames,
}

impl Default for BuildLogParser {
    fn default() -> Self {
        Self::new()
    }
}

impl BuildLogParser {
    /// A parser at the start of a log.
    pub fn new() -> Self {
        BuildLogParser {
            lines: LineSplitter::default(),
            state: BuildState {
                rare_scan: Prescan::new(&RARE_LITERALS),
                pattern_scan: Prescan::new(&PATTERN_LITERALS),
                splitter: KeywordSplitter::default(),
                gcc: Some(Engine::new(&GCC, "log-parser-build-gcc")),
                clang: Engine::new(&CLANG, "log-parser-build-clang"),
                saw_gcc: false,
                saw_clang: false,
                names: RecentNames::default(),
            },
        }
    }

    /// Feeds the next bytes of the log (any size, cut anywhere).
    pub fn feed(&mut self, bytes: &[u8]) {
        let state = &mut self.state;
        state.rare_scan.new_piece();
        state.pattern_scan.new_piece();
        self.lines.feed(bytes, |line| state.line(bytes, &line));
    }

    /// Ends the log and returns the tests, pattern by pattern in SQUAD's order.
    pub fn finish(mut self) -> Vec<LogTest> {
        let state = &mut self.state;
        self.lines.finish(|line| state.line(&[], &line));
        let BuildState { splitter, gcc, clang, saw_gcc, saw_clang, mut names, .. } = self.state;
        let mut engines = [gcc, Some(clang)];
        let mut splitter = splitter;
        splitter.finish(&mut |event| engines.iter_mut().flatten().for_each(|engine| engine.on(&event, &mut names)));
        let [gcc, clang] = engines;
        let chosen = if saw_clang {
            clang
        } else if saw_gcc {
            gcc
        } else {
            None
        };
        chosen.map(Engine::finish).unwrap_or_default()
    }
}

impl BuildState {
    /// Takes the next line of the log, cut from `piece`.
    fn line(&mut self, piece: &[u8], line: &Line<'_>) {
        let rare = self.rare_scan.may_hold(piece, line);
        if rare {
            if !self.saw_clang && TOOLCHAIN_CLANG.find(line.bytes).is_some() {
                self.saw_clang = true;
                self.gcc = None;
            }
            if !self.saw_gcc && TOOLCHAIN_GCC.find(line.bytes).is_some() {
                self.saw_gcc = true;
            }
        }
        let literal = self.pattern_scan.may_hold(piece, line);
        let text = line.text();
        let BuildState { splitter, gcc, clang, names, .. } = self;
        splitter.push(&text, line.newline, rare, literal, &mut |event| {
            if let Some(gcc) = gcc.as_mut() {
                gcc.on(&event, names);
            }
            clang.on(&event, names);
        });
    }
}

/// Runs [`BuildLogParser`] over everything `input` yields.
///
/// # Errors
///
/// [`LogParseError::Io`] when reading `input` fails.
pub fn parse_build_log(input: impl BufRead) -> Result<Vec<LogTest>, LogParseError> {
    let mut parser = BuildLogParser::new();
    read_all(input, |bytes| parser.feed(bytes))?;
    Ok(parser.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines cut by piece boundaries, checked line by line, and lines in
    /// one piece, ruled out piece by piece, give the same tests.
    #[test]
    fn pieces_do_not_matter_on_any_fixture() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/squad/linux_log_parser_build");
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .expect("fixture directory")
            .map(|entry| entry.expect("fixture entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
            .collect();
        paths.sort();
        assert!(paths.len() >= 20, "{} fixture logs", paths.len());
        for path in paths {
            let log = std::fs::read(&path).expect("fixture log");
            let whole = parse_build_log(log.as_slice()).expect("in memory");
            for size in [1, 5, 64, 4096] {
                let mut parser = BuildLogParser::new();
                log.chunks(size).for_each(|piece| parser.feed(piece));
                assert_eq!(parser.finish(), whole, "{} in pieces of {size} bytes", path.display());
            }
        }
    }
}
