//! Cutting a byte stream into lines: bounded, lossily decoded.

use std::borrow::Cow;

/// The longest prefix of one input line, in bytes, that the parsers look at.
///
/// Bytes beyond it, up to the next `\n`, are dropped before any matching:
/// a 10 MB line costs 64 KiB of memory, not 10 MB. Real kernel and build
/// log lines are far shorter (the longest in SQUAD's fixtures is 20 KB), so
/// this only changes results for absurd lines, where SQUAD would see the
/// whole line.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Splits bytes fed in arbitrary pieces into lines at `\n` (a `\r` stays
/// part of the line, as in a Python string), keeping at most
/// [`MAX_LINE_BYTES`] of each and decoding them as UTF-8 with invalid
/// sequences replaced by U+FFFD.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds the next piece of input; `emit(line, true)` for every line
    /// it completes.
    pub(crate) fn feed(&mut self, mut data: &[u8], mut emit: impl FnMut(&str, bool)) {
        while let Some(newline) = memchr::memchr(b'\n', data) {
            self.keep(&data[..newline]);
            emit(&decode(&self.pending), true);
            self.pending.clear();
            data = &data[newline + 1..];
        }
        self.keep(data);
    }

    /// Ends the input: `emit(line, false)` for a last line that had no
    /// `\n` (an input ending in `\n` has no such line).
    pub(crate) fn finish(&mut self, mut emit: impl FnMut(&str, bool)) {
        if !self.pending.is_empty() {
            emit(&decode(&self.pending), false);
            self.pending.clear();
        }
    }

    fn keep(&mut self, part: &[u8]) {
        let room = MAX_LINE_BYTES.saturating_sub(self.pending.len());
        self.pending.extend_from_slice(&part[..part.len().min(room)]);
    }
}

fn decode(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}
