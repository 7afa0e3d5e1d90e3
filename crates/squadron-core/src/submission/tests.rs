//! The `tests` field: `{"suite/test": "pass", "other": {"result": "fail", "log": "…"}}`.

use std::cell::RefCell;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::ops::ControlFlow;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::{finish_parse, InputError, Unexpected};
use crate::names::parse_name;
use crate::results::parse_result;

/// One submitted test, its full name split SQUAD's way.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmittedTest {
    /// The suite (`/` for names without one).
    pub suite: String,
    /// The short test name.
    pub name: String,
    /// `Some(true)` pass, `Some(false)` fail, `None` skip.
    pub result: Option<bool>,
    /// The test's log, if one was given.
    pub log: Option<String>,
}

/// Parses a `tests` document from `reader`, handing each test to `sink` in
/// document order; returns how many tests were read.
///
/// Empty input means no tests (as SQUAD). Any result string other than
/// `pass` or `fail` is a skip; a value that is neither a string, `null` nor
/// an object is an error naming the test. The sink may stop the parse by
/// returning `ControlFlow::Break`, which yields [`InputError::Aborted`].
pub fn parse_tests<R: Read>(
    reader: R,
    sink: impl FnMut(SubmittedTest) -> ControlFlow<()>,
) -> Result<usize, InputError> {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    if reader.fill_buf().map_err(|e| io_error("tests", e))?.is_empty() {
        return Ok(0);
    }
    let recorded = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_reader(reader);
    let visitor = TestsVisitor { sink, recorded: &recorded, count: 0 };
    let outcome = de.deserialize_any(visitor).and_then(|n| de.end().map(|_| n));
    finish_parse("tests", outcome, recorded.into_inner())
}

pub(crate) fn io_error(field: &'static str, e: std::io::Error) -> InputError {
    InputError::Json { field, message: e.to_string() }
}

struct TestsVisitor<'a, F> {
    sink: F,
    recorded: &'a RefCell<Option<InputError>>,
    count: usize,
}

impl<'de, F: FnMut(SubmittedTest) -> ControlFlow<()>> Visitor<'de> for TestsVisitor<'_, F> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<usize, A::Error> {
        while let Some(full_name) = map.next_key::<String>()? {
            let value = map.next_value_seed(TestValueSeed)?;
            let (result, log) = match value {
                TestValue::Result(r) => (r, None),
                TestValue::Object { result, log } => (result, log),
                TestValue::Invalid(found) => {
                    *self.recorded.borrow_mut() = Some(InputError::InvalidTestValue { name: full_name, found });
                    return Err(de::Error::custom("invalid test"));
                }
            };
            let (suite, name) = parse_name(&full_name);
            let test = SubmittedTest { suite: suite.to_string(), name: name.to_string(), result, log };
            self.count += 1;
            if (self.sink)(test).is_break() {
                *self.recorded.borrow_mut() = Some(InputError::Aborted);
                return Err(de::Error::custom("aborted"));
            }
        }
        Ok(self.count)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<usize, A::Error> {
        self.not_an_object("a list".into())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        self.not_an_object(format!("{v:?}"))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<usize, E> {
        self.not_an_object(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<usize, E> {
        self.not_an_object(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
        self.not_an_object(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<usize, E> {
        self.not_an_object(v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<usize, E> {
        self.not_an_object("null".into())
    }
}

impl<F> TestsVisitor<'_, F> {
    fn not_an_object<E: de::Error>(self, found: String) -> Result<usize, E> {
        *self.recorded.borrow_mut() = Some(InputError::NotAnObject { field: "tests", found });
        Err(E::custom("not an object"))
    }
}

/// A test's value: a result string, an object, or something invalid.
enum TestValue {
    Result(Option<bool>),
    Object { result: Option<bool>, log: Option<String> },
    Invalid(String),
}

struct TestValueSeed;

impl<'de> DeserializeSeed<'de> for TestValueSeed {
    type Value = TestValue;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<TestValue, D::Error> {
        d.deserialize_any(TestValueVisitor)
    }
}

struct TestValueVisitor;

impl TestValueVisitor {
    fn invalid<E>(u: de::Unexpected) -> Result<TestValue, E> {
        Ok(TestValue::Invalid(Unexpected(u).to_string()))
    }
}

impl<'de> Visitor<'de> for TestValueVisitor {
    type Value = TestValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a test result")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<TestValue, E> {
        Ok(TestValue::Result(parse_result(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<TestValue, E> {
        Ok(TestValue::Result(None))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<TestValue, E> {
        Self::invalid(de::Unexpected::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<TestValue, E> {
        Self::invalid(de::Unexpected::Signed(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<TestValue, E> {
        Self::invalid(de::Unexpected::Unsigned(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<TestValue, E> {
        Self::invalid(de::Unexpected::Float(v))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<TestValue, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Self::invalid(de::Unexpected::Seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TestValue, A::Error> {
        let mut result = None;
        let mut log = None;
        let mut invalid = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "result" => match map.next_value::<serde_json::Value>()? {
                    serde_json::Value::String(s) => result = parse_result(&s),
                    serde_json::Value::Null => result = None,
                    other => invalid = Some(format!("an object with \"result\": {other}")),
                },
                "log" => match map.next_value::<serde_json::Value>()? {
                    serde_json::Value::String(s) => log = Some(s),
                    serde_json::Value::Null => log = None,
                    other => invalid = Some(format!("an object with \"log\": {other}")),
                },
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(match invalid {
            Some(found) => TestValue::Invalid(found),
            None => TestValue::Object { result, log },
        })
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    fn parse(input: &str) -> Result<Vec<SubmittedTest>, InputError> {
        let mut out = Vec::new();
        parse_tests(input.as_bytes(), |t| {
            out.push(t);
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    fn t(suite: &str, name: &str, result: Option<bool>, log: Option<&str>) -> SubmittedTest {
        SubmittedTest { suite: suite.into(), name: name.into(), result, log: log.map(Into::into) }
    }

    #[test]
    fn plain_and_object_forms() {
        let tests = parse(r#"{"a": "pass", "s/b": "FAIL", "s/c": "xfail", "d": {"result": "fail", "log": "boom"}, "e": null, "f": {}}"#).unwrap();
        assert_eq!(
            tests,
            vec![
                t("/", "a", Some(true), None),
                t("s", "b", Some(false), None),
                t("s", "c", None, None),
                t("/", "d", Some(false), Some("boom")),
                t("/", "e", None, None),
                t("/", "f", None, None),
            ]
        );
    }

    #[test]
    fn empty_inputs_mean_no_tests() {
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("{}").unwrap(), vec![]);
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let e = parse(r#"{"a": "pass", "bad": true}"#).unwrap_err();
        assert_eq!(e, InputError::InvalidTestValue { name: "bad".into(), found: "true".into() });
        assert!(e.to_string().contains("\"bad\""), "{e}");

        let e = parse(r#"{"x": {"result": 1}}"#).unwrap_err();
        assert!(e.to_string().contains("\"x\"") && e.to_string().contains("\"result\": 1"), "{e}");

        let e = parse("[1, 2]").unwrap_err();
        assert_eq!(e, InputError::NotAnObject { field: "tests", found: "a list".into() });

        let e = parse("null").unwrap_err();
        assert!(matches!(e, InputError::NotAnObject { .. }), "{e}");

        let e = parse(r#"{"a": "pass",}"#).unwrap_err();
        assert!(matches!(&e, InputError::Json { field: "tests", message } if message.contains("line 1")), "{e}");

        let e = parse(r#"{"a": "pass"} trailing"#).unwrap_err();
        assert!(matches!(e, InputError::Json { .. }), "{e}");
    }

    #[test]
    fn sink_can_stop_the_parse() {
        let mut seen = 0;
        let e = parse_tests(r#"{"a": "pass", "b": "pass", "c": "pass"}"#.as_bytes(), |_| {
            seen += 1;
            if seen == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap_err();
        assert_eq!(e, InputError::Aborted);
        assert_eq!(seen, 2);
    }
}
