//! A minimal XML-RPC codec: the value types LAVA's API uses, method calls,
//! responses and faults, both ways (the fake LAVA server of the tests
//! decodes calls and encodes responses with it).

use std::fmt::Write as _;

use quick_xml::events::Event;
use quick_xml::Reader;
use serde_json::{Map, Number};

/// An XML-RPC value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `<int>`/`<i4>`/`<i8>`.
    Int(i64),
    /// `<boolean>`.
    Bool(bool),
    /// `<string>`, or a `<value>` with bare text.
    String(String),
    /// `<double>`.
    Double(f64),
    /// `<dateTime.iso8601>`, as sent (`20201113T10:23:41`).
    DateTime(String),
    /// `<struct>`, members in order.
    Struct(Vec<(String, Value)>),
    /// `<array>`.
    Array(Vec<Value>),
    /// `<nil/>` (Python's `None`).
    Nil,
}

impl Value {
    /// The text of a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A member of a struct value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(members) => members.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value as JSON (date-times as their text).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Bool(b) => serde_json::Value::from(*b),
            Value::String(s) | Value::DateTime(s) => serde_json::Value::from(s.as_str()),
            Value::Double(d) => Number::from_f64(*d).map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Struct(members) => {
                serde_json::Value::Object(members.iter().map(|(k, v)| (k.clone(), v.to_json())).collect::<Map<_, _>>())
            }
            Value::Array(items) => serde_json::Value::Array(items.iter().map(Value::to_json).collect()),
            Value::Nil => serde_json::Value::Null,
        }
    }

    fn encode(&self, out: &mut String) {
        out.push_str("<value>");
        match self {
            Value::Int(i) => {
                let _ = write!(out, "<int>{i}</int>");
            }
            Value::Bool(b) => {
                let _ = write!(out, "<boolean>{}</boolean>", u8::from(*b));
            }
            Value::String(s) => {
                let _ = write!(out, "<string>{}</string>", quick_xml::escape::escape(s.as_str()));
            }
            Value::Double(d) => {
                let _ = write!(out, "<double>{d:?}</double>");
            }
            Value::DateTime(s) => {
                let _ = write!(out, "<dateTime.iso8601>{}</dateTime.iso8601>", quick_xml::escape::escape(s.as_str()));
            }
            Value::Struct(members) => {
                out.push_str("<struct>");
                for (name, value) in members {
                    let _ = write!(out, "<member><name>{}</name>", quick_xml::escape::escape(name.as_str()));
                    value.encode(out);
                    out.push_str("</member>");
                }
                out.push_str("</struct>");
            }
            Value::Array(items) => {
                out.push_str("<array><data>");
                for item in items {
                    item.encode(out);
                }
                out.push_str("</data></array>");
            }
            Value::Nil => out.push_str("<nil/>"),
        }
        out.push_str("</value>");
    }
}

/// An XML-RPC fault (an error raised by the called method).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("XML-RPC fault {code}: {message}")]
pub struct Fault {
    /// `faultCode`; LAVA uses HTTP-like codes (404, 500, …).
    pub code: i64,
    /// `faultString`.
    pub message: String,
}

/// Why an XML-RPC document could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("not a valid XML-RPC document: {0}")]
pub struct DecodeError(String);

const DECL: &str = "<?xml version=\"1.0\"?>\n";

/// A `<methodCall>` document.
pub fn encode_call(method: &str, params: &[Value]) -> String {
    let mut out = format!("{DECL}<methodCall><methodName>{}</methodName><params>", quick_xml::escape::escape(method));
    for param in params {
        out.push_str("<param>");
        param.encode(&mut out);
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>\n");
    out
}

/// A `<methodResponse>` document carrying `value`.
pub fn encode_response(value: &Value) -> String {
    let mut out = format!("{DECL}<methodResponse><params><param>");
    value.encode(&mut out);
    out.push_str("</param></params></methodResponse>\n");
    out
}

/// A `<methodResponse>` document carrying a fault.
pub fn encode_fault(fault: &Fault) -> String {
    let mut out = format!("{DECL}<methodResponse><fault>");
    Value::Struct(vec![
        ("faultCode".into(), Value::Int(fault.code)),
        ("faultString".into(), Value::String(fault.message.clone())),
    ])
    .encode(&mut out);
    out.push_str("</fault></methodResponse>\n");
    out
}

/// Reads a `<methodResponse>`: the returned value, or the fault.
pub fn decode_response(xml: &[u8]) -> Result<Result<Value, Fault>, DecodeError> {
    let mut parser = Parser::new(xml)?;
    parser.open("methodResponse")?;
    let answer = match parser.next_tag()? {
        Tag::Open(name) if name == "params" => {
            parser.open("param")?;
            let value = parser.value()?;
            parser.close("param")?;
            parser.close("params")?;
            Ok(value)
        }
        Tag::Open(name) if name == "fault" => {
            let value = parser.value()?;
            parser.close("fault")?;
            let code = match value.get("faultCode") {
                Some(Value::Int(code)) => *code,
                _ => return Err(DecodeError("a fault without an integer faultCode".into())),
            };
            let message = value.get("faultString").and_then(Value::as_str).unwrap_or_default().to_string();
            Err(Fault { code, message })
        }
        other => return Err(DecodeError(format!("expected <params> or <fault>, found {other}"))),
    };
    parser.close("methodResponse")?;
    Ok(answer)
}

/// Reads a `<methodCall>`: the method's name and its parameters.
pub fn decode_call(xml: &[u8]) -> Result<(String, Vec<Value>), DecodeError> {
    let mut parser = Parser::new(xml)?;
    parser.open("methodCall")?;
    parser.open("methodName")?;
    let method = parser.text("methodName")?;
    let mut params = Vec::new();
    match parser.next_tag()? {
        Tag::Open(name) if name == "params" => loop {
            match parser.next_tag()? {
                Tag::Open(name) if name == "param" => {
                    params.push(parser.value()?);
                    parser.close("param")?;
                }
                Tag::Close(name) if name == "params" => break,
                Tag::Empty(name) if name == "param" => {}
                other => return Err(DecodeError(format!("expected <param>, found {other}"))),
            }
        },
        Tag::Empty(name) if name == "params" => {}
        Tag::Close(name) if name == "methodCall" => return Ok((method, params)),
        other => return Err(DecodeError(format!("expected <params>, found {other}"))),
    }
    parser.close("methodCall")?;
    Ok((method, params))
}

/// A tag as met by the parser.
enum Tag {
    Open(String),
    Close(String),
    Empty(String),
}

impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tag::Open(n) => write!(f, "<{n}>"),
            Tag::Close(n) => write!(f, "</{n}>"),
            Tag::Empty(n) => write!(f, "<{n}/>"),
        }
    }
}

/// A pull parser over the elements of an XML-RPC document.
struct Parser<'a> {
    reader: Reader<&'a [u8]>,
    /// Text met before the next tag (the content of a leaf element).
    pending_text: String,
}

impl<'a> Parser<'a> {
    fn new(xml: &'a [u8]) -> Result<Parser<'a>, DecodeError> {
        std::str::from_utf8(xml).map_err(|e| DecodeError(format!("not UTF-8: {e}")))?;
        Ok(Parser { reader: Reader::from_reader(xml), pending_text: String::new() })
    }

    /// The next tag; the text before it is kept in `pending_text`.
    fn next_tag(&mut self) -> Result<Tag, DecodeError> {
        self.pending_text.clear();
        loop {
            let event = self.reader.read_event().map_err(|e| DecodeError(e.to_string()))?;
            match event {
                Event::Start(e) => return Ok(Tag::Open(name(e.local_name().as_ref()))),
                Event::End(e) => return Ok(Tag::Close(name(e.local_name().as_ref()))),
                Event::Empty(e) => return Ok(Tag::Empty(name(e.local_name().as_ref()))),
                Event::Text(t) => {
                    self.pending_text.push_str(&t.xml_content().map_err(|e| DecodeError(e.to_string()))?);
                }
                Event::CData(t) => {
                    self.pending_text.push_str(&String::from_utf8_lossy(&t));
                }
                Event::GeneralRef(r) => {
                    let resolved = if r.is_char_ref() {
                        r.resolve_char_ref().map_err(|e| DecodeError(e.to_string()))?
                    } else {
                        let entity = r.decode().map_err(|e| DecodeError(e.to_string()))?;
                        quick_xml::escape::resolve_predefined_entity(&entity).and_then(|s| s.chars().next())
                    };
                    let c = resolved.ok_or_else(|| DecodeError("an unknown entity reference".into()))?;
                    self.pending_text.push(c);
                }
                Event::Eof => return Err(DecodeError("the document ends too early".into())),
                Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
            }
        }
    }

    fn open(&mut self, expected: &str) -> Result<(), DecodeError> {
        match self.next_tag()? {
            Tag::Open(name) if name == expected => Ok(()),
            other => Err(DecodeError(format!("expected <{expected}>, found {other}"))),
        }
    }

    fn close(&mut self, expected: &str) -> Result<(), DecodeError> {
        match self.next_tag()? {
            Tag::Close(name) if name == expected => Ok(()),
            other => Err(DecodeError(format!("expected </{expected}>, found {other}"))),
        }
    }

    /// The text of leaf element `element`, up to and with its closing tag.
    fn text(&mut self, element: &str) -> Result<String, DecodeError> {
        match self.next_tag()? {
            Tag::Close(name) if name == element => Ok(std::mem::take(&mut self.pending_text)),
            other => Err(DecodeError(format!("expected the text of <{element}>, found {other}"))),
        }
    }

    /// A `<value>…</value>`.
    fn value(&mut self) -> Result<Value, DecodeError> {
        self.open("value")?;
        self.value_body()
    }

    /// The rest of a value whose `<value>` was read.
    fn value_body(&mut self) -> Result<Value, DecodeError> {
        let value = match self.next_tag()? {
            // `<value>text</value>` is a string.
            Tag::Close(name) if name == "value" => return Ok(Value::String(std::mem::take(&mut self.pending_text))),
            Tag::Empty(name) => match name.as_str() {
                "nil" => Value::Nil,
                "string" => Value::String(String::new()),
                "struct" => Value::Struct(Vec::new()),
                other => return Err(DecodeError(format!("an empty <{other}/> value"))),
            },
            Tag::Open(name) => match name.as_str() {
                "int" | "i4" | "i8" => {
                    let text = self.text(&name)?;
                    Value::Int(text.trim().parse().map_err(|_| DecodeError(format!("{text:?} is not an integer")))?)
                }
                "boolean" => match self.text(&name)?.trim() {
                    "1" => Value::Bool(true),
                    "0" => Value::Bool(false),
                    other => return Err(DecodeError(format!("{other:?} is not a boolean"))),
                },
                "double" => {
                    let text = self.text(&name)?;
                    Value::Double(text.trim().parse().map_err(|_| DecodeError(format!("{text:?} is not a double")))?)
                }
                "string" => Value::String(self.text(&name)?),
                "dateTime.iso8601" => Value::DateTime(self.text(&name)?.trim().to_string()),
                "nil" => {
                    self.text(&name)?;
                    Value::Nil
                }
                "struct" => self.members()?,
                "array" => self.items()?,
                other => return Err(DecodeError(format!("unsupported value type <{other}>"))),
            },
            Tag::Close(other) => return Err(DecodeError(format!("unexpected </{other}>"))),
        };
        self.close("value")?;
        Ok(value)
    }

    fn members(&mut self) -> Result<Value, DecodeError> {
        let mut members = Vec::new();
        loop {
            match self.next_tag()? {
                Tag::Open(name) if name == "member" => {
                    self.open("name")?;
                    let member = self.text("name")?;
                    let value = self.value()?;
                    self.close("member")?;
                    members.push((member, value));
                }
                Tag::Close(name) if name == "struct" => return Ok(Value::Struct(members)),
                other => return Err(DecodeError(format!("expected <member>, found {other}"))),
            }
        }
    }

    fn items(&mut self) -> Result<Value, DecodeError> {
        let mut items = Vec::new();
        match self.next_tag()? {
            Tag::Open(name) if name == "data" => {}
            Tag::Empty(name) if name == "data" => {
                self.close("array")?;
                return Ok(Value::Array(items));
            }
            other => return Err(DecodeError(format!("expected <data>, found {other}"))),
        }
        loop {
            match self.next_tag()? {
                Tag::Open(name) if name == "value" => items.push(self.value_body()?),
                Tag::Close(name) if name == "data" => break,
                other => return Err(DecodeError(format!("expected <value>, found {other}"))),
            }
        }
        self.close("array")?;
        Ok(Value::Array(items))
    }
}

fn name(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        Value::Struct(vec![
            ("id".into(), Value::Int(1234)),
            ("text".into(), Value::String("a <b> & 'c'\n  d".into())),
            ("empty".into(), Value::String(String::new())),
            ("ok".into(), Value::Bool(true)),
            ("ratio".into(), Value::Double(0.5)),
            ("when".into(), Value::DateTime("20201113T10:23:41".into())),
            ("none".into(), Value::Nil),
            ("ids".into(), Value::Array(vec![Value::String("1.0".into()), Value::String("1.1".into())])),
            ("nothing".into(), Value::Array(Vec::new())),
        ])
    }

    #[test]
    fn calls_and_responses_round_trip() {
        let call = encode_call("scheduler.job_details", &[Value::String("1234".into()), sample()]);
        assert_eq!(
            decode_call(call.as_bytes()).unwrap(),
            ("scheduler.job_details".into(), vec![Value::String("1234".into()), sample()])
        );
        assert_eq!(decode_response(encode_response(&sample()).as_bytes()).unwrap(), Ok(sample()));
        let fault = Fault { code: 404, message: "Job '9' was not found.".into() };
        assert_eq!(decode_response(encode_fault(&fault).as_bytes()).unwrap(), Err(fault));
    }

    #[test]
    fn pythons_layout_and_bare_strings() {
        let xml = "<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><array><data>\n<value>plain &amp; bare</value>\n<value><i4>7</i4></value>\n<value><string>caf&#233;</string></value>\n</data></array></value>\n</param>\n</params>\n</methodResponse>\n";
        assert_eq!(
            decode_response(xml.as_bytes()).unwrap(),
            Ok(Value::Array(vec![Value::String("plain & bare".into()), Value::Int(7), Value::String("café".into())]))
        );
    }

    #[test]
    fn broken_documents_are_errors() {
        assert!(decode_response(b"<html>down</html>").is_err());
        assert!(decode_response(b"<?xml version=\"1.0\"?><methodResponse><params>").is_err());
        assert!(decode_response(
            b"<methodResponse><params><param><value><int>x</int></value></param></params></methodResponse>"
        )
        .is_err());
        assert!(decode_response(b"\xff\xfe").is_err());
    }
}
