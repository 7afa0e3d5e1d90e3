//! LAVA job logs: the test run's log (the device's output) and the lines of
//! one test case.
//!
//! A LAVA log is a YAML list of `{dt, lvl, msg}` mappings, one a line.
//! Bytes that are not UTF-8 are read as latin-1 (serial consoles send
//! anything), so no log makes a fetch fail.

use saphyr_parser::{Event, Parser};

/// The characters of `bytes`: UTF-8 where it is valid, each other byte as
/// its latin-1 character. Borrows, never copies the whole input.
struct Utf8OrLatin1<'a> {
    bytes: &'a [u8],
}

impl Iterator for Utf8OrLatin1<'_> {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        let (&first, _) = self.bytes.split_first()?;
        let width = match first {
            0x00..=0x7f => 1,
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => 0,
        };
        if width > 0 && self.bytes.len() >= width {
            if let Ok(text) = std::str::from_utf8(&self.bytes[..width]) {
                self.bytes = &self.bytes[width..];
                return text.chars().next();
            }
        }
        self.bytes = &self.bytes[1..];
        Some(char::from(first))
    }
}

/// The test run's log: the `msg` of every entry whose `lvl` is `target` or
/// `feedback`, one a line, in one pass over the YAML event stream (SQUAD's
/// `__parse_log__`, with its state machine). A log that stops being valid
/// YAML keeps what came before the error.
pub fn device_output(raw: &[u8]) -> String {
    let mut out = String::new();
    if raw.is_empty() {
        return out;
    }
    let mut in_mapping = false;
    let mut entry: Option<Vec<(String, String)>> = None;
    let mut key = String::new();
    let mut is_value = false;
    for event in Parser::new_from_iter(Utf8OrLatin1 { bytes: raw }) {
        let Ok((event, _)) = event else {
            tracing::warn!("the LAVA log is not valid YAML; keeping the part before the error");
            break;
        };
        match event {
            Event::MappingStart(..) => {
                in_mapping = true;
                entry = Some(Vec::new());
            }
            Event::MappingEnd => {
                in_mapping = false;
                if let Some(fields) = entry.take().filter(|f| !f.is_empty()) {
                    let get = |name: &str| fields.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
                    if matches!(get("lvl"), Some("target" | "feedback")) {
                        if let Some(msg) = get("msg") {
                            out.push_str(msg);
                            out.push('\n');
                        }
                    }
                }
                is_value = false;
            }
            Event::Scalar(value, ..) if in_mapping => {
                if is_value {
                    if let Some(fields) = entry.as_mut() {
                        fields.push((std::mem::take(&mut key), value.into_owned()));
                    }
                } else {
                    key = value.into_owned();
                }
                is_value = !is_value;
            }
            _ => {}
        }
    }
    out
}

/// The lines of a log one test case asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRange {
    /// The first line (1-based).
    pub first: u64,
    /// The last line, included.
    pub last: u64,
}

impl LineRange {
    /// SQUAD's reading of a result's `log_start_line`/`log_end_line`: no
    /// (or a zero) start means no lines; no end means three lines; the
    /// start line is always included, even after the end.
    pub fn new(start: Option<i64>, end: Option<i64>) -> Option<LineRange> {
        let start = start.filter(|&s| s != 0)?;
        let end = end.filter(|&e| e != 0).unwrap_or(start + 2);
        let first = start.max(1) as u64;
        Some(LineRange { first, last: (end.max(0) as u64).max(first) })
    }
}

/// Appends to each `(range, text)` the lines of `raw` in its range, in one
/// pass over the log however many ranges there are. Each line is decoded on
/// its own (UTF-8, or latin-1 if it is not) and, like SQUAD, followed by a
/// newline of its own after the one it already has.
pub fn append_lines(raw: &[u8], wanted: &mut [(LineRange, &mut String)]) {
    wanted.sort_by_key(|(range, _)| range.first);
    let mut next = 0;
    let mut active: Vec<usize> = Vec::new();
    for (number, line) in (1u64..).zip(raw.split_inclusive(|&b| b == b'\n')) {
        while next < wanted.len() && wanted[next].0.first <= number {
            active.push(next);
            next += 1;
        }
        if active.is_empty() {
            if next == wanted.len() {
                break;
            }
            continue;
        }
        let text = match std::str::from_utf8(line) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => std::borrow::Cow::Owned(line.iter().map(|&b| char::from(b)).collect()),
        };
        active.retain(|&i| {
            let (range, out) = &mut wanted[i];
            out.push_str(&text);
            out.push('\n');
            number < range.last
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_target_and_feedback_lines() {
        let log = b"- {\"dt\": \"x\", \"lvl\": \"info\", \"msg\": \"info\"}\n\
                    - {\"dt\": \"x\", \"lvl\": \"target\", \"msg\": \"hello \xb1\"}\n\
                    - {\"dt\": \"x\", \"lvl\": \"feedback\", \"msg\": \"fb\"}\n";
        assert_eq!(device_output(log), "hello \u{b1}\nfb\n");
        assert_eq!(device_output(b""), "");
    }

    #[test]
    fn a_broken_log_keeps_what_came_before() {
        let log = b"- {\"lvl\": \"target\", \"msg\": \"one\"}\n- {\"lvl: \"target\", \"msg\": \"two\"}\n";
        assert_eq!(device_output(log), "one\n");
    }

    #[test]
    fn ranges_follow_squad() {
        assert_eq!(LineRange::new(None, Some(4)), None);
        assert_eq!(LineRange::new(Some(0), Some(4)), None);
        assert_eq!(LineRange::new(Some(2), None), Some(LineRange { first: 2, last: 4 }));
        assert_eq!(LineRange::new(Some(5), Some(4)), Some(LineRange { first: 5, last: 5 }));
        assert_eq!(LineRange::new(Some(-3), Some(1)), Some(LineRange { first: 1, last: 1 }));
    }

    #[test]
    fn lines_in_one_pass() {
        let raw = b"l1\nl2\nl3\n\xb1\nl5";
        let (mut a, mut b, mut c) = (String::new(), String::new(), String::new());
        let mut wanted = vec![
            (LineRange { first: 3, last: 5 }, &mut a),
            (LineRange { first: 1, last: 1 }, &mut b),
            (LineRange { first: 5, last: 9 }, &mut c),
        ];
        append_lines(raw, &mut wanted);
        assert_eq!(a, "l3\n\n\u{b1}\n\nl5\n");
        assert_eq!(b, "l1\n\n");
        assert_eq!(c, "l5\n");
    }
}
