//! A streaming decoder for `application/x-www-form-urlencoded` bodies, so a
//! large field (a tests document sent by `squad-client` without files) is
//! written out as it arrives instead of being held whole.

/// Something the decoder found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A field starts; its decoded name.
    Start(String),
    /// Decoded bytes of the current field's value.
    Data(Vec<u8>),
    /// The current field ends.
    End,
}

#[derive(Default)]
pub(crate) struct Decoder {
    in_value: bool,
    key: Vec<u8>,
    /// Bytes of a `%XX` escape seen so far (the `%` included).
    escape: Vec<u8>,
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

impl Decoder {
    fn emit(&mut self, data: &mut Vec<u8>, byte: u8) {
        if self.in_value {
            data.push(byte);
        } else {
            self.key.push(byte);
        }
    }

    fn start_value(&mut self, out: &mut Vec<Event>) {
        out.push(Event::Start(String::from_utf8_lossy(&self.key).into_owned()));
        self.key.clear();
        self.in_value = true;
    }

    fn flush_data(out: &mut Vec<Event>, data: &mut Vec<u8>) {
        if !data.is_empty() {
            out.push(Event::Data(std::mem::take(data)));
        }
    }

    /// An invalid escape is kept literally, as Python's `unquote_plus` does.
    fn flush_escape(&mut self, data: &mut Vec<u8>) {
        for b in std::mem::take(&mut self.escape) {
            self.emit(data, b);
        }
    }

    fn end_pair(&mut self, out: &mut Vec<Event>, data: &mut Vec<u8>) {
        self.flush_escape(data);
        if !self.in_value {
            if self.key.is_empty() {
                return;
            }
            self.start_value(out);
        }
        Self::flush_data(out, data);
        out.push(Event::End);
        self.in_value = false;
    }

    /// Decodes a chunk of the body, appending what it found to `out`.
    pub(crate) fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) {
        let mut data = Vec::with_capacity(if self.in_value { chunk.len() } else { 0 });
        for &b in chunk {
            if !self.escape.is_empty() {
                if let Some(digit) = hex(b) {
                    self.escape.push(b);
                    if self.escape.len() == 3 {
                        let high = hex(self.escape[1]).unwrap_or(0);
                        self.escape.clear();
                        self.emit(&mut data, high * 16 + digit);
                    }
                    continue;
                }
                // Not an escape after all: keep it as it was, then read `b`.
                self.flush_escape(&mut data);
            }
            match b {
                b'%' => self.escape.push(b),
                b'+' => self.emit(&mut data, b' '),
                b'&' => self.end_pair(out, &mut data),
                b'=' if !self.in_value => self.start_value(out),
                _ => self.emit(&mut data, b),
            }
        }
        if self.in_value {
            Self::flush_data(out, &mut data);
        }
    }

    /// Ends the body.
    pub(crate) fn finish(&mut self, out: &mut Vec<Event>) {
        let mut data = Vec::new();
        if self.in_value || !self.key.is_empty() || !self.escape.is_empty() {
            self.end_pair(out, &mut data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `body` fed in chunks of `size`, into (name, value) pairs.
    fn decode(body: &str, size: usize) -> Vec<(String, String)> {
        let mut d = Decoder::default();
        let mut events = Vec::new();
        for chunk in body.as_bytes().chunks(size) {
            d.feed(chunk, &mut events);
        }
        d.finish(&mut events);
        let mut pairs = Vec::new();
        let mut value = Vec::new();
        let mut name = String::new();
        for e in events {
            match e {
                Event::Start(n) => {
                    name = n;
                    value.clear();
                }
                Event::Data(d) => value.extend(d),
                Event::End => pairs.push((name.clone(), String::from_utf8(value.clone()).unwrap())),
            }
        }
        pairs
    }

    #[test]
    fn decodes_in_any_chunking() {
        let body = "tests=%7B%22a%22%3A+%22pass%22%7D&metadata=&flag&x%2By=1%2b1&bad=%zz%4&tail=%41";
        let expected = vec![
            ("tests".to_string(), r#"{"a": "pass"}"#.to_string()),
            ("metadata".to_string(), String::new()),
            ("flag".to_string(), String::new()),
            ("x+y".to_string(), "1+1".to_string()),
            ("bad".to_string(), "%zz%4".to_string()),
            ("tail".to_string(), "A".to_string()),
        ];
        for size in [1, 2, 3, 5, 7, 64, 1000] {
            assert_eq!(decode(body, size), expected, "chunks of {size}");
        }
    }

    #[test]
    fn empty_and_stray_separators() {
        assert_eq!(decode("", 4), vec![]);
        assert_eq!(decode("&&a=1&", 1), vec![("a".to_string(), "1".to_string())]);
        assert_eq!(decode("=v", 1), vec![(String::new(), "v".to_string())]);
    }
}
