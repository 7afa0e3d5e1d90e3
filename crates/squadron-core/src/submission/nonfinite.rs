//! Python's `json` module reads and writes the bare tokens `NaN`,
//! `Infinity` and `-Infinity`, so metrics written by Python scripts contain
//! them. This reader adapter turns each such token outside a string into a
//! marker string that the metrics parser reads as the non-finite number.

use std::io::{self, BufRead, Read};

/// Marker strings standing for the non-finite numbers.
pub(crate) const NAN: &str = "\u{0}NaN";
pub(crate) const INFINITY: &str = "\u{0}Infinity";
pub(crate) const NEG_INFINITY: &str = "\u{0}-Infinity";

/// Parses a marker string back into its number.
pub(crate) fn marker_value(s: &str) -> Option<f64> {
    match s {
        NAN => Some(f64::NAN),
        INFINITY => Some(f64::INFINITY),
        NEG_INFINITY => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

#[derive(Clone, Copy)]
enum State {
    Outside,
    InString,
    Escape,
    /// Matching `token` outside a string; `matched` bytes seen so far.
    Token {
        token: &'static [u8],
        matched: usize,
        negative: bool,
    },
    /// Saw `-` outside a string; the next byte decides.
    Minus,
}

/// A reader that rewrites bare `NaN`, `Infinity` and `-Infinity` tokens.
pub(crate) struct NonFiniteReader<R> {
    inner: R,
    rewriter: Rewriter,
    pos: usize,
}

/// The byte-level state machine, apart from the reader so that both can be
/// borrowed at once.
struct Rewriter {
    state: State,
    out: Vec<u8>,
}

impl<R: BufRead> NonFiniteReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        NonFiniteReader { inner, rewriter: Rewriter { state: State::Outside, out: Vec::new() }, pos: 0 }
    }
}

impl Rewriter {
    fn marker(negative: bool, token: &[u8]) -> &'static str {
        match (negative, token) {
            (false, b"NaN") => NAN,
            (false, _) => INFINITY,
            (true, _) => NEG_INFINITY,
        }
    }

    fn push_quoted(&mut self, marker: &str) {
        self.out.push(b'"');
        for c in marker.chars() {
            if c == '\0' {
                self.out.extend_from_slice(b"\\u0000");
            } else {
                let mut buf = [0; 4];
                self.out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
        self.out.push(b'"');
    }

    fn outside(&mut self, b: u8) {
        match b {
            b'"' => {
                self.state = State::InString;
                self.out.push(b);
            }
            b'N' => self.state = State::Token { token: b"NaN", matched: 1, negative: false },
            b'I' => self.state = State::Token { token: b"Infinity", matched: 1, negative: false },
            b'-' => self.state = State::Minus,
            _ => self.out.push(b),
        }
    }

    fn feed(&mut self, b: u8) {
        match self.state {
            State::Outside => self.outside(b),
            State::InString => {
                match b {
                    b'\\' => self.state = State::Escape,
                    b'"' => self.state = State::Outside,
                    _ => {}
                }
                self.out.push(b);
            }
            State::Escape => {
                self.state = State::InString;
                self.out.push(b);
            }
            State::Minus => {
                if b == b'I' {
                    self.state = State::Token { token: b"Infinity", matched: 1, negative: true };
                } else {
                    self.out.push(b'-');
                    self.state = State::Outside;
                    self.outside(b);
                }
            }
            State::Token { token, matched, negative } => {
                if token[matched] == b {
                    if matched + 1 == token.len() {
                        self.push_quoted(Self::marker(negative, token));
                        self.state = State::Outside;
                    } else {
                        self.state = State::Token { token, matched: matched + 1, negative };
                    }
                } else {
                    // Not a token after all: pass the bytes on unchanged and
                    // let the JSON parser report them.
                    if negative {
                        self.out.push(b'-');
                    }
                    self.out.extend_from_slice(&token[..matched]);
                    self.state = State::Outside;
                    self.outside(b);
                }
            }
        }
    }

    fn flush_pending(&mut self) {
        match self.state {
            State::Minus => self.out.push(b'-'),
            State::Token { token, matched, negative } => {
                if negative {
                    self.out.push(b'-');
                }
                self.out.extend_from_slice(&token[..matched]);
            }
            _ => {}
        }
        self.state = State::Outside;
    }
}

impl<R: BufRead> Read for NonFiniteReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rw = &mut self.rewriter;
        while self.pos == rw.out.len() {
            rw.out.clear();
            self.pos = 0;
            let chunk = self.inner.fill_buf()?;
            if chunk.is_empty() {
                rw.flush_pending();
                if rw.out.is_empty() {
                    return Ok(0);
                }
                break;
            }
            for &b in chunk {
                rw.feed(b);
            }
            let n = chunk.len();
            self.inner.consume(n);
        }
        let n = buf.len().min(rw.out.len() - self.pos);
        buf[..n].copy_from_slice(&rw.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn rewrite(input: &str, capacity: usize) -> String {
        let mut out = String::new();
        NonFiniteReader::new(BufReader::with_capacity(capacity, input.as_bytes())).read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn rewrites_tokens_outside_strings_only() {
        let input = r#"{"NaN": NaN, "a": [Infinity, -Infinity, -1.5], "s": "x\"NaN", "n": null}"#;
        let expected =
            r#"{"NaN": "\u0000NaN", "a": ["\u0000Infinity", "\u0000-Infinity", -1.5], "s": "x\"NaN", "n": null}"#;
        for capacity in [1, 2, 3, 7, 64] {
            assert_eq!(rewrite(input, capacity), expected, "capacity {capacity}");
        }
    }

    #[test]
    fn leaves_broken_tokens_for_the_parser() {
        assert_eq!(rewrite("[Nope, -x, Inf", 4), "[Nope, -x, Inf");
        assert_eq!(rewrite("-", 4), "-");
    }

    #[test]
    fn markers_parse_back() {
        assert!(marker_value(NAN).unwrap().is_nan());
        assert_eq!(marker_value(NEG_INFINITY), Some(f64::NEG_INFINITY));
        assert_eq!(marker_value("NaN"), None);
    }
}
