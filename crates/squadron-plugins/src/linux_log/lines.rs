//! Cutting a byte stream into lines: bounded, lossily decoded, and ruled
//! out in bulk when they cannot hold a literal.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, Input};

/// The longest prefix of one input line, in bytes, that the parsers look at.
///
/// Bytes beyond it, up to the next `\n`, are dropped before any matching:
/// a 10 MB line costs 64 KiB of memory, not 10 MB. Real kernel and build
/// log lines are far shorter (the longest in SQUAD's fixtures is 20 KB), so
/// this only changes results for absurd lines, where SQUAD would see the
/// whole line.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// One line cut from the input: at most [`MAX_LINE_BYTES`] of it, not
/// decoded yet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Line<'a> {
    pub(crate) bytes: &'a [u8],
    /// `bytes` as text, when they are known to be valid UTF-8 (checked
    /// for a whole piece at once, which is much faster than line by line).
    pub(crate) valid: Option<&'a str>,
    /// Whether a `\n` ended the line (only the input's last line has none).
    pub(crate) newline: bool,
    /// Where the whole line (up to its `\n`) lies in the piece being fed,
    /// when it lies there entirely; `None` for a line that began in an
    /// earlier piece. Lets [`Prescan`] look for literals over a whole piece
    /// at once rather than line by line.
    pub(crate) span: Option<(usize, usize)>,
}

impl<'a> Line<'a> {
    /// The line as text, invalid UTF-8 replaced by U+FFFD.
    pub(crate) fn text(&self) -> Cow<'a, str> {
        self.text_from(0)
    }

    /// The line from byte `at` on (an ASCII character, or the end) as text,
    /// invalid UTF-8 replaced by U+FFFD.
    pub(crate) fn text_from(&self, at: usize) -> Cow<'a, str> {
        match self.valid {
            Some(text) => Cow::Borrowed(&text[at..]),
            None => decode(&self.bytes[at..]),
        }
    }
}

/// Splits bytes fed in arbitrary pieces into lines at `\n` (a `\r` stays
/// part of the line, as in a Python string), keeping at most
/// [`MAX_LINE_BYTES`] of each. Lines that lie entirely in one piece are
/// handed out in place, without a copy.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
    /// Whether `pending` holds the beginning of a line (possibly empty so far).
    partial: bool,
}

impl LineSplitter {
    /// Feeds the next piece of input; `emit` gets every line it completes.
    pub(crate) fn feed(&mut self, data: &[u8], mut emit: impl FnMut(Line<'_>)) {
        let mut start = 0;
        if self.partial {
            let Some(newline) = memchr::memchr(b'\n', data) else {
                self.keep(data);
                return;
            };
            self.keep(&data[..newline]);
            emit(Line { bytes: &self.pending, valid: None, newline: true, span: None });
            self.pending.clear();
            self.partial = false;
            start = newline + 1;
        }
        let base = start;
        let complete = memchr::memrchr(b'\n', &data[base..]).map_or(0, |last| last + 1);
        // The complete lines' text, up to the first invalid UTF-8 if any.
        let valid = match std::str::from_utf8(&data[base..base + complete]) {
            Ok(text) => text,
            Err(e) => std::str::from_utf8(&data[base..base + e.valid_up_to()]).unwrap_or_default(),
        };
        for newline in memchr::memchr_iter(b'\n', &data[base..base + complete]) {
            let end = base + newline;
            let cut = end.min(start + MAX_LINE_BYTES);
            let bytes = &data[start..cut];
            // `get` is `None` past the valid text or for a cut inside a character.
            let valid = valid.get(start - base..cut - base);
            emit(Line { bytes, valid, newline: true, span: Some((start, end)) });
            start = end + 1;
        }
        if start < data.len() {
            self.keep(&data[start..]);
            self.partial = true;
        }
    }

    /// Ends the input: `emit` gets a last line that had no `\n` (an input
    /// ending in `\n` has no such line).
    pub(crate) fn finish(&mut self, mut emit: impl FnMut(Line<'_>)) {
        if !self.pending.is_empty() {
            emit(Line { bytes: &self.pending, valid: None, newline: false, span: None });
        }
        self.pending.clear();
        self.partial = false;
    }

    fn keep(&mut self, part: &[u8]) {
        let room = MAX_LINE_BYTES.saturating_sub(self.pending.len());
        self.pending.extend_from_slice(&part[..part.len().min(room)]);
    }
}

/// Decodes bytes as UTF-8, invalid sequences replaced by U+FFFD.
///
/// Decoding a part of a line that starts at an ASCII byte gives the same
/// text as the matching part of the decoded line: an ASCII byte is never
/// part of a multi-byte sequence, valid or not.
fn decode(bytes: &[u8]) -> Cow<'_, str> {
    // `from_utf8` checks ASCII a word at a time; the lossy decoder, byte by
    // byte, is only needed when the line is not valid UTF-8.
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Tells, line by line, whether a line may contain one of a set of
/// literals, searching a whole piece of input at a time: the search runs
/// once over the text between hits instead of once per line.
///
/// A line that lies entirely in the piece is a candidate when a literal
/// occurs within it; other lines (ones that began in an earlier piece) are
/// always candidates. Candidates must still be checked exactly: the answer
/// only rules lines out.
#[derive(Debug)]
pub(crate) struct Prescan {
    literals: &'static AhoCorasick,
    /// The leftmost literal occurrence (earliest-ending, with standard
    /// match semantics) starting at or after `searched_from` in the current
    /// piece, as (start, end); `None`: none.
    hit: Option<(usize, usize)>,
    /// Where the last search started; `usize::MAX`: no search in this piece yet.
    searched_from: usize,
}

impl Prescan {
    pub(crate) fn new(literals: &'static AhoCorasick) -> Self {
        Prescan { literals, hit: None, searched_from: usize::MAX }
    }

    /// Forgets the previous piece; call before feeding the next one.
    pub(crate) fn new_piece(&mut self) {
        self.hit = None;
        self.searched_from = usize::MAX;
    }

    /// Whether `line` (cut from `piece`) may hold one of the literals.
    /// Lines must be asked about in order.
    pub(crate) fn may_hold(&mut self, piece: &[u8], line: &Line<'_>) -> bool {
        let Some((start, end)) = line.span else {
            return true;
        };
        let stale = match self.hit {
            _ if self.searched_from == usize::MAX || self.searched_from > start => true,
            // The hit lies before this line: look again from its start.
            Some((hit_start, _)) => hit_start < start,
            None => false,
        };
        if stale {
            // Literals hold no `\n`, so an occurrence lies within one line;
            // the one found from `start` is in this line if any is (the
            // leftmost one starts first, the earliest-ending one ends first).
            self.hit = self.literals.find(Input::new(piece).range(start..)).map(|m| (m.start(), m.end()));
            self.searched_from = start;
        }
        self.hit.is_some_and(|(_, hit_end)| hit_end <= end)
    }
}
