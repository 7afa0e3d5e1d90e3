//! The `metrics` field: `{"suite/metric": 1.5, "m": [1, 2], "n": {"value": 3, "unit": "s"}}`.

use std::cell::RefCell;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::ops::ControlFlow;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::nonfinite::{marker_value, NonFiniteReader};
use super::tests::io_error;
use super::{finish_parse, InputError, Unexpected};
use crate::names::parse_name;

/// One submitted metric.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmittedMetric {
    /// The suite (`/` for names without one).
    pub suite: String,
    /// The short metric name.
    pub name: String,
    /// The mean of the measurements.
    pub result: f64,
    /// Every measurement, in order.
    pub measurements: Vec<f64>,
    /// The unit, if one was given.
    pub unit: Option<String>,
}

/// Parses a `metrics` document from `reader`, handing each metric to `sink`;
/// returns how many metrics were handed on.
///
/// A value is a number, a numeric string, a non-empty list of numbers, or an
/// object with `value` (any of those) and `unit`. A metric whose mean is
/// NaN or infinite is dropped, as SQUAD does (Python's bare `NaN` and
/// `Infinity` tokens are understood). Anything else is an error naming the
/// metric.
pub fn parse_metrics<R: Read>(
    reader: R,
    sink: impl FnMut(SubmittedMetric) -> ControlFlow<()>,
) -> Result<usize, InputError> {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    if reader.fill_buf().map_err(|e| io_error("metrics", e))?.is_empty() {
        return Ok(0);
    }
    let recorded = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_reader(NonFiniteReader::new(reader));
    let visitor = MetricsVisitor { sink, recorded: &recorded, count: 0 };
    let outcome = de.deserialize_any(visitor).and_then(|n| de.end().map(|_| n));
    finish_parse("metrics", outcome, recorded.into_inner())
}

struct MetricsVisitor<'a, F> {
    sink: F,
    recorded: &'a RefCell<Option<InputError>>,
    count: usize,
}

impl<F> MetricsVisitor<'_, F> {
    fn fail<E: de::Error>(&self, err: InputError) -> Result<usize, E> {
        *self.recorded.borrow_mut() = Some(err);
        Err(E::custom("invalid metrics"))
    }

    fn not_an_object<E: de::Error>(self, found: String) -> Result<usize, E> {
        self.fail(InputError::NotAnObject { field: "metrics", found })
    }
}

impl<'de, F: FnMut(SubmittedMetric) -> ControlFlow<()>> Visitor<'de> for MetricsVisitor<'_, F> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<usize, A::Error> {
        while let Some(full_name) = map.next_key::<String>()? {
            let (measurements, unit) = match map.next_value_seed(EntrySeed)? {
                Ok(parsed) => parsed,
                Err(found) => return self.fail(InputError::InvalidMetricValue { name: full_name, found }),
            };
            let result = measurements.iter().sum::<f64>() / measurements.len() as f64;
            if !result.is_finite() {
                continue;
            }
            let (suite, name) = parse_name(&full_name);
            let metric = SubmittedMetric { suite: suite.into(), name: name.into(), result, measurements, unit };
            self.count += 1;
            if (self.sink)(metric).is_break() {
                return self.fail(InputError::Aborted);
            }
        }
        Ok(self.count)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<usize, A::Error> {
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

/// A metric entry: measurements and unit, or a description of what was
/// found instead.
type Entry = Result<(Vec<f64>, Option<String>), String>;

struct EntrySeed;

impl<'de> DeserializeSeed<'de> for EntrySeed {
    type Value = Entry;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Entry, D::Error> {
        d.deserialize_any(EntryVisitor)
    }
}

/// Reads a metric value: a number, a numeric string or a list of numbers.
struct ValueVisitor;

/// A metric value as measurements, or what was found instead.
type Value = Result<Vec<f64>, String>;

fn python_float(s: &str) -> Option<f64> {
    if let Some(v) = marker_value(s) {
        return Some(v);
    }
    s.trim().replace('_', "").parse::<f64>().ok()
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or a list of numbers")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Ok(vec![v as f64]))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Ok(vec![v as f64]))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Ok(vec![v]))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(python_float(v).map(|x| vec![x]).ok_or_else(|| format!("{v:?}")))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Err(Unexpected(de::Unexpected::Bool(v)).to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Err("null".into()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        while map.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
        Ok(Err("an object".into()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut values = Vec::new();
        let mut invalid = false;
        while let Some(item) = seq.next_element::<serde_json::Value>()? {
            match &item {
                serde_json::Value::Number(n) => values.push(n.as_f64().unwrap_or(f64::NAN)),
                serde_json::Value::String(s) => match marker_value(s) {
                    Some(v) => values.push(v),
                    None => invalid = true,
                },
                _ => invalid = true,
            }
        }
        if invalid {
            Ok(Err("a list holding something other than numbers".into()))
        } else if values.is_empty() {
            Ok(Err("an empty list".into()))
        } else {
            Ok(Ok(values))
        }
    }
}

struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

/// Reads a metric entry: a bare value, or `{"value": …, "unit": …}`.
struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = Entry;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a metric value")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Entry, E> {
        Ok(ValueVisitor.visit_i64(v)?.map(|m| (m, None)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Entry, E> {
        Ok(ValueVisitor.visit_u64(v)?.map(|m| (m, None)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Entry, E> {
        Ok(ValueVisitor.visit_f64(v)?.map(|m| (m, None)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Entry, E> {
        Ok(ValueVisitor.visit_str(v)?.map(|m| (m, None)))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Entry, E> {
        Ok(ValueVisitor.visit_bool(v)?.map(|m| (m, None)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Entry, E> {
        Ok(ValueVisitor.visit_unit()?.map(|m| (m, None)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Entry, A::Error> {
        Ok(ValueVisitor.visit_seq(seq)?.map(|m| (m, None)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entry, A::Error> {
        let mut value: Value = Err("an object without \"value\"".into());
        let mut unit = Ok(None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "value" => value = map.next_value_seed(ValueSeed)?,
                "unit" => {
                    unit = match map.next_value::<serde_json::Value>()? {
                        serde_json::Value::String(s) => Ok(Some(s)),
                        serde_json::Value::Null => Ok(None),
                        other => Err(format!("an object with \"unit\": {other}")),
                    }
                }
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(value.and_then(|m| unit.map(|u| (m, u))))
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    fn parse(input: &str) -> Result<Vec<SubmittedMetric>, InputError> {
        let mut out = Vec::new();
        parse_metrics(input.as_bytes(), |m| {
            out.push(m);
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    #[test]
    fn every_value_form() {
        let m = parse(r#"{"a": 10, "s/b": "2.5", "c": [10, 11, 10, 11], "d": {"value": [1, 2], "unit": "s"}, "e": {"value": " 7 "}}"#).unwrap();
        assert_eq!(m.len(), 5);
        assert_eq!((m[0].suite.as_str(), m[0].name.as_str(), m[0].result), ("/", "a", 10.0));
        assert_eq!((m[1].suite.as_str(), m[1].result), ("s", 2.5));
        assert_eq!((m[2].result, m[2].measurements.clone()), (10.5, vec![10.0, 11.0, 10.0, 11.0]));
        assert_eq!((m[3].result, m[3].unit.as_deref()), (1.5, Some("s")));
        assert_eq!((m[4].result, m[4].unit.as_deref()), (7.0, None));
    }

    #[test]
    fn non_finite_values_are_dropped() {
        let m = parse(r#"{"a": NaN, "b": {"value": [Infinity]}, "c": -Infinity, "d": "nan", "e": 1}"#).unwrap();
        assert_eq!(m.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), vec!["e"]);
    }

    #[test]
    fn invalid_values_name_the_metric() {
        for (input, found) in [
            (r#"{"m": "abc"}"#, "\"abc\""),
            (r#"{"m": true}"#, "true"),
            (r#"{"m": null}"#, "null"),
            (r#"{"m": []}"#, "an empty list"),
            (r#"{"m": [1, "2"]}"#, "a list holding something other than numbers"),
            (r#"{"m": {"unit": "s"}}"#, "an object without \"value\""),
            (r#"{"m": {"value": 1, "unit": 5}}"#, "an object with \"unit\": 5"),
        ] {
            let e = parse(input).unwrap_err();
            assert_eq!(e, InputError::InvalidMetricValue { name: "m".into(), found: found.into() }, "{input}");
            assert!(e.to_string().contains("\"m\""));
        }
        assert!(matches!(parse("[]").unwrap_err(), InputError::NotAnObject { field: "metrics", .. }));
        assert!(matches!(parse("{").unwrap_err(), InputError::Json { field: "metrics", .. }));
    }
}
