//! The streaming matcher both parsers share.
//!
//! SQUAD runs one big alternation (`(p1)|(p2)|...`, compiled with
//! `re.S | re.M`) over a whole text with `findall`: at each position the
//! patterns are tried in order, the first one that matches wins, and the
//! scan resumes where that match ended. [`SegmentMatcher`] gives the same
//! answer line by line: for the line under the cursor it asks every
//! pattern for its leftmost match at or after the cursor and keeps the
//! leftmost one (ties go to the earlier pattern), exactly the order
//! Python's backtracking engine tries them in.
//!
//! A pattern either stays within one line, or starts in one line and is
//! matched (anchored) against a window of the following lines: at most
//! [`WINDOW_LINES`] lines after its first one and [`WINDOW_BYTES`] bytes in
//! all. A multi-line report whose end lies beyond that window is not seen
//! as one match, where SQUAD, which has the whole log in memory, would
//! find it.
//!
//! Lines are prefiltered by the literal text each pattern needs in its
//! first line (or, for reports that start with a line of `=`, in the line
//! after it): callers rule out most lines with one search over a whole
//! piece of input ([`PatternSet::any_literal`], [`super::lines::Prescan`]),
//! an overlapping Aho-Corasick search of the others tells which patterns
//! may start there, and regexes only run on the few lines that pass.

use std::collections::VecDeque;

use aho_corasick::{AhoCorasick, MatchKind};
use regex::Regex;
use regex_automata::{meta, Anchored, Input};

/// How many lines after its first one a multi-line match may span.
///
/// Beyond that SQUAD 1.98 may report a match (e.g. a `cut here` block whose
/// `end trace` comes 20,000 lines later) that the streaming parsers do not.
pub const WINDOW_LINES: usize = 10_000;

/// How many bytes a multi-line match (and the window it is sought in) may
/// span; the window holds at most this much text, whichever of this and
/// [`WINDOW_LINES`] is reached first.
pub const WINDOW_BYTES: usize = 8 * 1024 * 1024;

/// Compiles a pattern for use on one line or a snippet, with the flags SQUAD
/// compiles its patterns with (`re.S | re.M`).
pub(crate) fn python_regex(pattern: &str) -> Regex {
    Regex::new(&format!("(?sm){pattern}")).unwrap_or_else(|e| panic!("bad built-in pattern {pattern}: {e}"))
}

/// Compiles a pattern for anchored matching on a window ([`match_at`]),
/// with SQUAD's `re.S | re.M`.
pub(crate) fn anchored_regex(pattern: &str) -> meta::Regex {
    meta::Regex::new(&format!("(?sm){pattern}")).unwrap_or_else(|e| panic!("bad built-in pattern {pattern}: {e}"))
}

/// Where a match of `re` starting exactly at `at` ends, if there is one.
/// The text before `at` counts for `^` and `\b`.
pub(crate) fn match_at(re: &meta::Regex, hay: &str, at: usize) -> Option<usize> {
    re.search(&Input::new(hay).range(at..).anchored(Anchored::Yes)).map(|m| m.end())
}

/// Matches a multi-line pattern anchored at a position of a window; returns
/// where the match ends.
pub(crate) type Body = Box<dyn Fn(&str, usize) -> Option<usize> + Send + Sync>;

/// A literal that must occur for a pattern to start in a line.
pub(crate) enum Trigger {
    /// The literal is in the line the match starts in.
    ThisLine(&'static str),
    /// The literal is in the line after the one the match starts in.
    NextLine(&'static str),
}

enum Start {
    /// Only at the beginning of a line (the pattern starts with `^`).
    LineStart,
    /// Wherever this line-local regex matches.
    Find(Regex),
}

enum Shape {
    /// The pattern never crosses a line end: this regex, run on the line
    /// alone, gives its matches.
    OneLine(Regex),
    /// The pattern may cross lines: candidates come from `start`, `body`
    /// decides at each one.
    MultiLine { start: Start, body: Body },
}

/// One of SQUAD's (name, pattern, name-extraction pattern) triples.
pub(crate) struct Pattern {
    /// The test name prefix, SQUAD's `REGEX_NAME`.
    pub(crate) name: &'static str,
    /// SQUAD's `REGEX_EXTRACT_NAME`: its first match in a snippet names the test.
    pub(crate) extract: Regex,
    shape: Shape,
    triggers: Vec<Trigger>,
}

impl Pattern {
    /// A pattern confined to one line.
    pub(crate) fn one_line(name: &'static str, pattern: &str, extract: &str, triggers: Vec<Trigger>) -> Self {
        Pattern { name, extract: python_regex(extract), shape: Shape::OneLine(python_regex(pattern)), triggers }
    }

    /// A pattern that may span lines. `start` is a line-local regex that
    /// matches at every position the pattern can start at (`None`: the
    /// pattern starts with `^`).
    pub(crate) fn multi_line(
        name: &'static str,
        start: Option<&str>,
        pattern: &str,
        extract: &str,
        triggers: Vec<Trigger>,
    ) -> Self {
        let full = anchored_regex(pattern);
        Self::with_body(name, start, Box::new(move |hay, at| match_at(&full, hay, at)), extract, triggers)
    }

    /// A pattern that may span lines, matched by hand-written code (for
    /// patterns the regex engine cannot express, such as lookaheads).
    pub(crate) fn with_body(
        name: &'static str,
        start: Option<&str>,
        body: Body,
        extract: &str,
        triggers: Vec<Trigger>,
    ) -> Self {
        let start = start.map_or(Start::LineStart, |s| Start::Find(python_regex(s)));
        Pattern { name, extract: python_regex(extract), shape: Shape::MultiLine { start, body }, triggers }
    }

    /// The leftmost match starting in `line` at or after `from` and before
    /// `limit`, as offsets into `hay` (which starts with `line`).
    fn find(&self, line: &str, hay: &str, mut from: usize, limit: usize) -> Option<(usize, usize)> {
        match &self.shape {
            Shape::OneLine(re) => {
                let m = re.find_at(line, from)?;
                (m.start() < limit).then(|| (m.start(), m.end()))
            }
            Shape::MultiLine { start, body } => loop {
                let at = match start {
                    Start::LineStart if from == 0 => 0,
                    Start::LineStart => return None,
                    Start::Find(re) => re.find_at(line, from)?.start(),
                };
                if at >= limit {
                    return None;
                }
                if let Some(end) = body(hay, at) {
                    return Some((at, end));
                }
                from = at + line[at..].chars().next().map_or(1, char::len_utf8);
                if from > line.len() {
                    return None;
                }
            },
        }
    }
}

/// A searcher telling whether any of `literals` occurs in a text, as fast
/// as possible: leftmost semantics let the search use a vectorised
/// prefilter (Teddy), which an overlapping search cannot, and a literal
/// holding another one is left out (it adds nothing to "does any occur").
pub(crate) fn any_of<S: AsRef<str>>(literals: &[S]) -> AhoCorasick {
    let needed: Vec<&str> = literals
        .iter()
        .map(AsRef::as_ref)
        .filter(|literal| !literals.iter().any(|other| other.as_ref() != *literal && literal.contains(other.as_ref())))
        .collect();
    AhoCorasick::builder().match_kind(MatchKind::LeftmostFirst).build(needed).expect("literal prefilter builds")
}

/// An ordered list of patterns, SQUAD's `REGEXES`, with its prefilter.
pub(crate) struct PatternSet {
    pub(crate) patterns: Vec<Pattern>,
    literals: AhoCorasick,
    /// The same literals, for finding whether any occurs ([`any_of`]).
    any_literal: AhoCorasick,
    literal_strings: Vec<&'static str>,
    /// Per literal: patterns it lets start in its own line, and in the line before.
    literal_masks: Vec<(u64, u64)>,
}

impl PatternSet {
    pub(crate) fn new(patterns: Vec<Pattern>) -> Self {
        assert!(patterns.len() <= 64, "a pattern set is a 64-bit mask");
        let mut literals: Vec<&'static str> = Vec::new();
        let mut literal_masks: Vec<(u64, u64)> = Vec::new();
        for (index, pattern) in patterns.iter().enumerate() {
            for trigger in &pattern.triggers {
                let (literal, this_line) = match trigger {
                    Trigger::ThisLine(literal) => (*literal, true),
                    Trigger::NextLine(literal) => (*literal, false),
                };
                let id = literals.iter().position(|l| *l == literal).unwrap_or_else(|| {
                    literals.push(literal);
                    literal_masks.push((0, 0));
                    literals.len() - 1
                });
                if this_line {
                    literal_masks[id].0 |= 1 << index;
                } else {
                    literal_masks[id].1 |= 1 << index;
                }
            }
        }
        let any_literal = any_of(&literals);
        let literal_strings = literals.clone();
        let literals = AhoCorasick::new(&literals).expect("literal prefilter builds");
        PatternSet { patterns, literals, literal_strings, any_literal, literal_masks }
    }

    /// The literals a line must hold for a pattern to start in it (or in
    /// the line before it).
    pub(crate) fn literal_strings(&self) -> &[&'static str] {
        &self.literal_strings
    }

    /// The literals of the prefilter: a line holding none of them starts no match
    /// (nor does the line before it).
    pub(crate) fn any_literal(&self) -> &AhoCorasick {
        &self.any_literal
    }

    /// Which patterns may start in `line` (first) and in the line before it (second).
    fn masks(&self, line: &str) -> (u64, u64) {
        self.literals.find_overlapping_iter(line).fold((0, 0), |(this, prev), hit| {
            let (t, p) = self.literal_masks[hit.pattern().as_usize()];
            (this | t, prev | p)
        })
    }

    /// The leftmost match, over the patterns in `mask`, starting in `line`
    /// at or after `from`: `(start, end, pattern index)`, offsets into `hay`.
    fn leftmost(&self, mask: u64, line: &str, hay: &str, from: usize) -> Option<(usize, usize, usize)> {
        let mut best: Option<(usize, usize, usize)> = None;
        for (index, pattern) in self.patterns.iter().enumerate() {
            if mask & (1 << index) == 0 {
                continue;
            }
            // Patterns come in priority order: a later one wins only further left.
            let limit = best.map_or(usize::MAX, |(start, _, _)| start);
            if let Some((start, end)) = pattern.find(line, hay, from, limit) {
                best = Some((start, end, index));
            }
        }
        best
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct LineRec {
    /// Offset of the line's first byte in the stream of pushed text.
    pub(crate) start: usize,
    pub(crate) len: usize,
    /// Whether a `\n` follows the line.
    pub(crate) newline: bool,
    /// Patterns (or, for the keyword splitter, keywords) that may start here.
    pub(crate) mask: u64,
}

impl LineRec {
    fn end(&self) -> usize {
        self.start + self.len + usize::from(self.newline)
    }
}

/// Lines pushed and not yet consumed, in one contiguous buffer, so that a
/// pattern can be matched against the front line and the
/// [`WINDOW_LINES`] lines after it as one `&str`.
#[derive(Default)]
pub(crate) struct LineWindow {
    buf: String,
    /// Stream offset of `buf[0]`.
    base: usize,
    lines: VecDeque<LineRec>,
    /// How many lines, from the front, the front line's window holds.
    window_lines: usize,
    /// Whether the `\n` after the last line pushed may still be taken back
    /// ([`Self::last_line_unterminated`]).
    tentative: bool,
}

impl LineWindow {
    pub(crate) fn push(&mut self, text: &str, newline: bool, mask: u64) {
        let start = self.base + self.buf.len();
        self.buf.push_str(text);
        if newline {
            self.buf.push('\n');
        }
        self.lines.push_back(LineRec { start, len: text.len(), newline, mask });
        self.grow();
    }

    /// Drops the `\n` after the last line pushed, if it has one.
    pub(crate) fn last_line_unterminated(&mut self) {
        if let Some(last) = self.lines.back_mut() {
            if last.newline {
                last.newline = false;
                self.buf.pop();
                // One byte less may let the line into the front's window.
                self.grow();
            }
        }
    }

    /// The last line pushed, if not consumed yet.
    pub(crate) fn back_mut(&mut self) -> Option<&mut LineRec> {
        self.lines.back_mut()
    }

    /// Whether the front line can be processed: its whole window is here
    /// (a line after the window has arrived), or no more lines will come.
    pub(crate) fn ready(&self, finished: bool) -> bool {
        if self.lines.is_empty() || (!finished && self.window_lines == self.lines.len()) {
            return false;
        }
        if finished || !self.tentative || self.window_lines + 1 < self.lines.len() {
            return true;
        }
        // Only the last line is left out: for want of one byte (its `\n`,
        // which may be taken back), the window is not complete yet.
        let last = self.lines[self.window_lines];
        self.window_lines > WINDOW_LINES || last.start + last.len - self.lines[0].start > WINDOW_BYTES
    }

    pub(crate) fn front(&self) -> LineRec {
        self.lines[0]
    }

    pub(crate) fn line(&self, index: usize) -> LineRec {
        self.lines[index]
    }

    /// The front line and the lines of its window, with their `\n`s.
    pub(crate) fn window(&self) -> &str {
        let front = self.lines[0];
        let last = self.lines[self.window_lines - 1];
        &self.buf[front.start - self.base..last.end() - self.base]
    }

    /// The line holding stream offset `at`, and the offset within it; the
    /// offset just after a line's `\n` belongs to the next line, which may
    /// not have arrived yet (index == number of lines held).
    pub(crate) fn locate(&self, at: usize) -> (usize, usize) {
        let after = self.lines.partition_point(|line| line.start <= at);
        let line = self.lines[after - 1];
        if at > line.start + line.len {
            (after, 0)
        } else {
            (after - 1, at - line.start)
        }
    }

    pub(crate) fn pop_front(&mut self, count: usize) {
        if count == 1 {
            self.lines.pop_front();
        } else {
            self.lines.drain(..count.min(self.lines.len()));
        }
        self.window_lines = self.window_lines.saturating_sub(count);
        let keep_from = self.lines.front().map_or(self.base + self.buf.len(), |line| line.start);
        let consumed = keep_from - self.base;
        if consumed >= 64 * 1024 && consumed * 2 >= self.buf.len() {
            self.buf.drain(..consumed);
            self.base = keep_from;
        }
        self.grow();
    }

    fn grow(&mut self) {
        let Some(front) = self.lines.front() else {
            return;
        };
        let first = front.start;
        self.window_lines = self.window_lines.max(1);
        while self.window_lines < self.lines.len() && self.window_lines <= WINDOW_LINES {
            if self.lines[self.window_lines].end() - first > WINDOW_BYTES {
                break;
            }
            self.window_lines += 1;
        }
    }
}

/// Runs a [`PatternSet`] over one text (a "segment": SQUAD's `findall`
/// target), fed line by line; reports every match as `(pattern index,
/// matched text)` in order.
pub(crate) struct SegmentMatcher {
    set: &'static PatternSet,
    window: LineWindow,
    /// Where in the front line the scan resumes (after a match).
    cursor: usize,
}

impl SegmentMatcher {
    pub(crate) fn new(set: &'static PatternSet) -> Self {
        SegmentMatcher { set, window: LineWindow::default(), cursor: 0 }
    }

    /// A matcher whose caller pushes every line with a `\n` after it and,
    /// when the segment ends, takes back the last one
    /// ([`Self::last_line_unterminated`]).
    pub(crate) fn with_tentative_newlines(set: &'static PatternSet) -> Self {
        let window = LineWindow { tentative: true, ..LineWindow::default() };
        SegmentMatcher { set, window, cursor: 0 }
    }

    /// Adds the next line of the segment; `newline` says whether a `\n`
    /// follows it in the segment's text. `literal` is false when the caller
    /// knows the line holds none of the set's [`PatternSet::any_literal`]
    /// (then the prefilter need not run on it).
    pub(crate) fn push(&mut self, line: &str, newline: bool, literal: bool, emit: &mut impl FnMut(usize, &str)) {
        let (this, previous) = if literal { self.set.masks(line) } else { (0, 0) };
        if previous != 0 {
            if let Some(before) = self.window.back_mut() {
                before.mask |= previous;
            }
        }
        self.window.push(line, newline, this);
        while self.window.ready(false) {
            self.step(emit);
        }
    }

    /// Takes back the `\n` after the last line pushed: the segment ends
    /// with that line. Only for a matcher made
    /// [`Self::with_tentative_newlines`], before [`Self::finish`]: no match
    /// has seen that `\n` yet, as a line is only matched once its window
    /// is complete, which needs a line after it (or the end) and, with
    /// tentative newlines, no doubt about whether the last line fits.
    pub(crate) fn last_line_unterminated(&mut self) {
        self.window.last_line_unterminated();
    }

    /// Ends the segment; the matcher is then ready for a new one.
    pub(crate) fn finish(&mut self, emit: &mut impl FnMut(usize, &str)) {
        while self.window.ready(true) {
            self.step(emit);
        }
        self.cursor = 0;
    }

    fn step(&mut self, emit: &mut impl FnMut(usize, &str)) {
        let front = self.window.front();
        let mut consumed = 1;
        let mut next_cursor = 0;
        if front.mask != 0 {
            let hay = self.window.window();
            let line = &hay[..front.len];
            let mut from = self.cursor;
            while let Some((start, end, index)) = self.set.leftmost(front.mask, line, hay, from) {
                emit(index, &hay[start..end]);
                if end <= front.len {
                    from = end;
                    continue;
                }
                (consumed, next_cursor) = self.window.locate(front.start + end);
                break;
            }
        }
        self.window.pop_front(consumed);
        self.cursor = next_cursor;
    }
}
