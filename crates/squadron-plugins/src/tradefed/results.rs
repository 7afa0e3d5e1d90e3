//! Streaming, resumable parser of tradefed's `test_result.xml`.
//!
//! The report nests `<Result>` → `<Module name= abi=>` → `<TestCase name=>`
//! → `<Test name= result=>`, a failing `<Test>` holding
//! `<Failure message=><StackTrace>…</StackTrace></Failure>`. [`Parser`]
//! reads it with `quick-xml` event by event (never a tree) and hands out
//! the tests in batches, each followed by a [`Cursor`] from which
//! [`Parser::resume`] carries on after a crash or a hand-over.
//!
//! # Naming, as SQUAD's tradefed plugin does it
//!
//! * suite: `<action>/<abi>.<module>`, or `<action>/<module>` when the
//!   `<Module>` has no `abi`; `action` is the name of the LAVA test action
//!   (e.g. `cts-lkft`), given by the caller;
//! * test: `<TestCase name>.<Test name>`, cut to
//!   [`MAX_TEST_NAME_CHARS`] characters;
//! * status: `pass` → pass, `fail` → fail, `ASSUMPTION_FAILURE` → xfail
//!   (SQUAD stores a failure and a known issue
//!   `Tradefed/<suite>/<test>` covering it, see
//!   [`TradefedTest::known_issue_title`]), anything else (`IGNORED`, …) →
//!   skip;
//! * log: the `<StackTrace>` text, verbatim; when a `<Failure>` has no
//!   `<StackTrace>`, its `message` (SQUAD stores an empty log there).
//!
//! # Cursors
//!
//! A batch only ever ends right after a `</Test>` end tag (or a
//! self-closing `<Test/>`), at which point the parser is always inside
//! exactly `<Result>`, one `<Module>` and one `<TestCase>`: the cursor
//! stores the byte offset just past that tag, the module name and abi
//! and the test case name, which is all the context the rest of the
//! document needs. The last batch's cursor points past the end of the
//! document and has no module: resuming from it yields nothing more. The
//! cursor also carries the running [`Counts`], so that a resumed parse
//! ends with the same totals as an uninterrupted one.
//!
//! Only UTF-8 (or its ASCII subset) is accepted; a document declaring or
//! starting in another encoding is refused rather than misread.

use std::borrow::Cow;
use std::io::{self, BufRead};
use std::sync::Arc;

use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesDecl, BytesStart, Event};
use quick_xml::Reader;
use serde::{Deserialize, Serialize};
use squadron_core::results::TestStatus;

/// The longest test name SQUAD stores, in characters; longer
/// `<TestCase>.<Test>` names are cut to it.
pub const MAX_TEST_NAME_CHARS: usize = 256;

/// One `<Test>` of the report, named the way SQUAD's tradefed plugin
/// names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradefedTest {
    /// `<action>/<abi>.<module>` (or `<action>/<module>` without an abi).
    pub suite: String,
    /// `<TestCase name>.<Test name>`, at most [`MAX_TEST_NAME_CHARS`]
    /// characters.
    pub name: String,
    /// The result mapped to squadron's statuses (`ASSUMPTION_FAILURE` is
    /// an expected failure).
    pub status: TestStatus,
    /// The stack trace of a failure (or its message when there is no
    /// stack trace); empty when the test has neither.
    pub log: String,
    /// Whether `log` is a `<StackTrace>` (not a failure's message).
    pub has_stack_trace: bool,
    /// The enclosing `<Module name>`.
    pub module: String,
    /// The enclosing module's `abi`, if any.
    pub abi: Option<String>,
    /// The `<Test name>` as written.
    pub test: String,
}

impl TradefedTest {
    /// The result as SQUAD stores it: `Some(true)` for pass, `Some(false)`
    /// for fail and xfail (the known issue makes it an xfail), `None` for
    /// skip.
    pub fn result(&self) -> Option<bool> {
        match self.status {
            TestStatus::Pass => Some(true),
            TestStatus::Fail | TestStatus::Xfail => Some(false),
            TestStatus::Skip => None,
        }
    }

    /// For an `ASSUMPTION_FAILURE` (xfail), the title of the known issue
    /// SQUAD creates for it (`Tradefed/<suite>/<name>`); the issue's test
    /// name is the same without the `Tradefed/` prefix. `None` otherwise.
    pub fn known_issue_title(&self) -> Option<String> {
        (self.status == TestStatus::Xfail).then(|| format!("Tradefed/{}/{}", self.suite, self.name))
    }
}

/// Counts of what the body of the report holds (not what its `<Summary>`
/// claims: trimmed reports keep the original run's summary).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// `<Test>` elements.
    pub tests: u64,
    /// Tests that passed.
    pub pass: u64,
    /// Tests that failed.
    pub fail: u64,
    /// Tests with `ASSUMPTION_FAILURE`.
    pub xfail: u64,
    /// Tests with any other result (`IGNORED`, …).
    pub skip: u64,
    /// `<TestCase>` elements.
    pub test_cases: u64,
    /// `<Module>` elements.
    pub modules: u64,
    /// `<Module>` elements with `done="true"`.
    pub modules_done: u64,
}

impl Counts {
    fn add(&mut self, status: TestStatus) {
        self.tests += 1;
        match status {
            TestStatus::Pass => self.pass += 1,
            TestStatus::Fail => self.fail += 1,
            TestStatus::Xfail => self.xfail += 1,
            TestStatus::Skip => self.skip += 1,
        }
    }
}

/// Where a parse stopped, to resume it with [`Parser::resume`] on the
/// same document. See the module documentation for why this is enough.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Offset in the document just past the last `<Test>` handed out (the
    /// end of the document for the last batch).
    pub byte_offset: u64,
    /// Name of the enclosing `<Module>`; `None` once the whole document
    /// was read.
    pub module: Option<String>,
    /// `abi` of the enclosing `<Module>`, if it has one.
    pub abi: Option<String>,
    /// Name of the enclosing `<TestCase>`; `None` once the whole document
    /// was read.
    pub test_case: Option<String>,
    /// What the document held up to `byte_offset`.
    pub counts: Counts,
}

/// Tests handed out together, and where to resume after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The tests, in document order.
    pub tests: Vec<TradefedTest>,
    /// Resume point just after the last of `tests`.
    pub cursor: Cursor,
}

/// The `<Summary>` element as the report declares it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredSummary {
    /// `pass` attribute.
    pub pass: Option<u64>,
    /// `failed` attribute.
    pub failed: Option<u64>,
    /// `modules_done` attribute.
    pub modules_done: Option<u64>,
    /// `modules_total` attribute.
    pub modules_total: Option<u64>,
}

/// What the report says about the run before its first module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultHeader {
    /// Attributes of `<Result>` (`suite_name`, `suite_version`,
    /// `suite_plan`, `start`, `end`, `devices`, …) in document order.
    pub attributes: Vec<(String, String)>,
    /// Attributes of `<Build>` (`build_fingerprint`, `build_abis`, …).
    pub build: Vec<(String, String)>,
    /// The `<Summary>` element, if present.
    pub summary: Option<DeclaredSummary>,
}

impl ResultHeader {
    /// The value of a `<Result>` attribute.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Why a report could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ParseErrorKind {
    /// Reading the document failed.
    #[error("I/O error while reading the report: {0}")]
    Io(#[source] Arc<io::Error>),
    /// The document is not well-formed XML.
    #[error("malformed XML: {0}")]
    Xml(#[source] quick_xml::Error),
    /// The document ends inside an element.
    #[error("truncated report: the document ends inside <{0}>")]
    Truncated(String),
    /// The document is empty or has no root element.
    #[error("not a tradefed report: no <Result> element")]
    NoResult,
    /// The root element is not `<Result>`.
    #[error("not a tradefed report: the root element is <{0}>, expected <Result>")]
    NotTradefed(String),
    /// Elements follow the `</Result>` end tag.
    #[error("element <{0}> after the end of <Result>")]
    TrailingElement(String),
    /// An end tag does not close the element that is open.
    #[error("mismatched end tag: expected </{expected}>, found </{found}>")]
    MismatchedEndTag {
        /// The element that is open.
        expected: String,
        /// The end tag found.
        found: String,
    },
    /// The document is in another encoding than UTF-8.
    #[error("unsupported encoding {0}: only UTF-8 reports are supported")]
    UnsupportedEncoding(String),
    /// The document contains bytes that are not UTF-8.
    #[error("invalid UTF-8 in the report (is it in another encoding?)")]
    InvalidUtf8,
    /// A required attribute is missing.
    #[error("<{element}> has no {attribute} attribute")]
    MissingAttribute {
        /// The element.
        element: &'static str,
        /// The attribute.
        attribute: &'static str,
    },
    /// An attribute has a value this parser cannot use.
    #[error("invalid {attribute}={value:?} on <{element}>: {reason}")]
    InvalidAttribute {
        /// The element.
        element: &'static str,
        /// The attribute.
        attribute: String,
        /// Its value (as far as it could be decoded).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The cursor given to [`Parser::resume`] cannot be a cursor this
    /// parser produced.
    #[error("invalid cursor: {0}")]
    InvalidCursor(&'static str),
}

/// A parse failure: what went wrong, where, and the last cursor whose
/// tests were all handed out.
#[derive(Debug, thiserror::Error)]
#[error("{kind} (at byte {offset})")]
pub struct ParseError {
    /// What went wrong.
    #[source]
    pub kind: ParseErrorKind,
    /// Byte offset in the document where it was detected.
    pub offset: u64,
    /// The cursor of the last batch handed out (or the cursor the parser
    /// was resumed from): every test before it was good. `None` when the
    /// parser started at the beginning and handed out nothing.
    pub last_good: Option<Box<Cursor>>,
}

/// A `<Test>` being read.
#[derive(Debug)]
struct PendingTest {
    test: String,
    name: String,
    status: TestStatus,
    message: Option<String>,
    stack_trace: Option<String>,
}

/// An open element.
#[derive(Debug)]
enum Frame {
    Result,
    Module { name: String, abi: Option<String>, suite: String },
    TestCase(String),
    Test(PendingTest),
    Failure,
    StackTrace(String),
    Other(Vec<u8>),
}

impl Frame {
    fn tag(&self) -> &[u8] {
        match self {
            Frame::Result => b"Result",
            Frame::Module { .. } => b"Module",
            Frame::TestCase(_) => b"TestCase",
            Frame::Test(_) => b"Test",
            Frame::Failure => b"Failure",
            Frame::StackTrace(_) => b"StackTrace",
            Frame::Other(name) => name,
        }
    }
}

/// What handling one event led to.
enum Step {
    Continue,
    Test(TradefedTest),
    End,
}

/// Streaming parser of a `test_result.xml`, handing out tests in batches.
///
/// ```no_run
/// use std::fs::File;
/// use std::io::BufReader;
/// use squadron_plugins::tradefed::results::Parser;
///
/// let file = BufReader::new(File::open("test_result.xml")?);
/// let mut parser = Parser::new(file, "cts-lkft", 1000);
/// while let Some(batch) = parser.next_batch()? {
///     // store batch.tests, then batch.cursor
/// }
/// println!("{:?}", parser.summary());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Parser<R: BufRead> {
    reader: Reader<R>,
    /// Offset in the document of the reader's first byte.
    base: u64,
    buf: Vec<u8>,
    action: String,
    batch_size: usize,
    stack: Vec<Frame>,
    counts: Counts,
    header: Option<ResultHeader>,
    seen_root: bool,
    /// An error found before reading (bad encoding, bad cursor).
    pending_error: Option<ParseErrorKind>,
    last_good: Option<Cursor>,
    /// No more batches: the document was read to the end, or failed.
    done: bool,
    finished: bool,
}

impl<R: BufRead> Parser<R> {
    /// Parses a document from its beginning. `action` is the LAVA test
    /// action name that prefixes every suite; `batch_size` (at least 1)
    /// is the number of tests per batch.
    pub fn new(mut reader: R, action: impl Into<String>, batch_size: usize) -> Self {
        let (base, pending_error) = match skip_bom(&mut reader) {
            Ok(base) => (base, None),
            Err(kind) => (0, Some(kind)),
        };
        let mut parser = Self::with_reader(reader, base, action.into(), batch_size);
        parser.pending_error = pending_error;
        parser
    }

    /// Continues a parse from `cursor`: `reader` must read the same
    /// document from `cursor.byte_offset` on (e.g. a file seeked there),
    /// and `action` must be the one of the original parse. The batches
    /// then are exactly those an uninterrupted parse hands out after the
    /// one `cursor` came with (the batch boundaries match when
    /// `batch_size` does). [`Parser::header`] is not available.
    pub fn resume(reader: R, cursor: Cursor, action: impl Into<String>, batch_size: usize) -> Self {
        let mut parser = Self::with_reader(reader, cursor.byte_offset, action.into(), batch_size);
        parser.seen_root = true;
        parser.counts = cursor.counts;
        match (cursor.module.clone(), cursor.test_case.clone()) {
            (Some(name), Some(test_case)) => {
                let suite = suite_name(&parser.action, &name, cursor.abi.as_deref());
                parser.stack.push(Frame::Result);
                parser.stack.push(Frame::Module { name, abi: cursor.abi.clone(), suite });
                parser.stack.push(Frame::TestCase(test_case));
            }
            (None, None) if cursor.abi.is_none() => {
                parser.done = true;
                parser.finished = true;
            }
            (None, None) => parser.pending_error = Some(ParseErrorKind::InvalidCursor("abi without a module")),
            (Some(_), None) => parser.pending_error = Some(ParseErrorKind::InvalidCursor("module without a test case")),
            (None, Some(_)) => parser.pending_error = Some(ParseErrorKind::InvalidCursor("test case without a module")),
        }
        parser.last_good = Some(cursor);
        parser
    }

    fn with_reader(reader: R, base: u64, action: String, batch_size: usize) -> Self {
        let mut reader = Reader::from_reader(reader);
        // End tags are checked here against the parser's own stack, which
        // a resumed parse starts with already filled (quick-xml's is empty).
        let config = reader.config_mut();
        config.check_end_names = false;
        config.allow_unmatched_ends = true;
        Parser {
            reader,
            base,
            buf: Vec::with_capacity(4096),
            action,
            batch_size: batch_size.max(1),
            stack: Vec::with_capacity(8),
            counts: Counts::default(),
            header: None,
            seen_root: false,
            pending_error: None,
            last_good: None,
            done: false,
            finished: false,
        }
    }

    /// The next batch of tests, or `None` once the document is read (then
    /// [`Parser::summary`] has the totals). After an error the parser is
    /// spent: further calls return `None` and there is no summary; resume
    /// from the error's `last_good` cursor if the input can be fixed.
    pub fn next_batch(&mut self) -> Result<Option<Batch>, ParseError> {
        if let Some(kind) = self.pending_error.take() {
            return Err(self.fail(kind, self.base));
        }
        if self.done {
            return Ok(None);
        }
        let mut tests = Vec::with_capacity(self.batch_size.min(1024));
        let mut buf = std::mem::take(&mut self.buf);
        let outcome = loop {
            buf.clear();
            let step = match self.reader.read_event_into(&mut buf) {
                Ok(event) => self.handle(event),
                Err(err) => {
                    let offset = self.base + self.reader.error_position();
                    break Err(self.fail(xml_error(err), offset));
                }
            };
            match step {
                Ok(Step::Continue) => {}
                Ok(Step::Test(test)) => {
                    tests.push(test);
                    if tests.len() >= self.batch_size {
                        break Ok(Some(self.batch(tests)));
                    }
                }
                Ok(Step::End) => {
                    self.done = true;
                    self.finished = true;
                    break Ok((!tests.is_empty()).then(|| self.batch(tests)));
                }
                Err(kind) => {
                    let offset = self.position();
                    break Err(self.fail(kind, offset));
                }
            }
        };
        self.buf = buf;
        outcome
    }

    /// What `<Result>`, `<Build>` and `<Summary>` say, once read (they
    /// precede the first module, so after the first batch). `None` for a
    /// resumed parse or before the root element was read.
    pub fn header(&self) -> Option<&ResultHeader> {
        self.header.as_ref()
    }

    /// The counts of the whole document, once it was read to the end
    /// without error.
    pub fn summary(&self) -> Option<&Counts> {
        self.finished.then_some(&self.counts)
    }

    fn position(&self) -> u64 {
        self.base + self.reader.buffer_position()
    }

    fn fail(&mut self, kind: ParseErrorKind, offset: u64) -> ParseError {
        self.done = true;
        ParseError { kind, offset, last_good: self.last_good.clone().map(Box::new) }
    }

    fn batch(&mut self, tests: Vec<TradefedTest>) -> Batch {
        let cursor = self.cursor();
        self.last_good = Some(cursor.clone());
        Batch { tests, cursor }
    }

    fn cursor(&self) -> Cursor {
        let mut cursor =
            Cursor { byte_offset: self.position(), module: None, abi: None, test_case: None, counts: self.counts };
        for frame in &self.stack {
            match frame {
                Frame::Module { name, abi, .. } => {
                    cursor.module = Some(name.clone());
                    cursor.abi = abi.clone();
                }
                Frame::TestCase(name) => cursor.test_case = Some(name.clone()),
                _ => {}
            }
        }
        cursor
    }

    fn handle(&mut self, event: Event<'_>) -> Result<Step, ParseErrorKind> {
        match event {
            Event::Start(start) => self.open(&start, false),
            Event::Empty(start) => self.open(&start, true),
            Event::End(end) => self.close(end.name().as_ref()),
            Event::Text(text) => {
                if let Some(Frame::StackTrace(trace)) = self.stack.last_mut() {
                    trace.push_str(&text.xml10_content().map_err(|_| ParseErrorKind::InvalidUtf8)?);
                }
                Ok(Step::Continue)
            }
            Event::CData(data) => {
                if let Some(Frame::StackTrace(trace)) = self.stack.last_mut() {
                    trace.push_str(&data.xml10_content().map_err(|_| ParseErrorKind::InvalidUtf8)?);
                }
                Ok(Step::Continue)
            }
            Event::GeneralRef(reference) => {
                if let Some(Frame::StackTrace(trace)) = self.stack.last_mut() {
                    if let Some(ch) = reference.resolve_char_ref().map_err(ParseErrorKind::Xml)? {
                        trace.push(ch);
                    } else {
                        let name = reference.decode().map_err(|_| ParseErrorKind::InvalidUtf8)?;
                        match quick_xml::escape::resolve_predefined_entity(&name) {
                            Some(value) => trace.push_str(value),
                            None => {
                                return Err(ParseErrorKind::Xml(quick_xml::Error::Escape(
                                    quick_xml::escape::EscapeError::UnrecognizedEntity(0..name.len(), name.into()),
                                )))
                            }
                        }
                    }
                }
                Ok(Step::Continue)
            }
            Event::Decl(decl) => check_declaration(&decl).map(|()| Step::Continue),
            Event::Comment(_) | Event::PI(_) | Event::DocType(_) => Ok(Step::Continue),
            Event::Eof => match self.stack.last() {
                Some(frame) => Err(ParseErrorKind::Truncated(String::from_utf8_lossy(frame.tag()).into_owned())),
                None if self.seen_root => Ok(Step::End),
                None => Err(ParseErrorKind::NoResult),
            },
        }
    }

    fn open(&mut self, start: &BytesStart<'_>, empty: bool) -> Result<Step, ParseErrorKind> {
        let tag = start.name();
        let tag = tag.as_ref();
        let frame = match (self.stack.last_mut(), tag) {
            (None, _) if self.seen_root => {
                return Err(ParseErrorKind::TrailingElement(String::from_utf8_lossy(tag).into_owned()))
            }
            (None, b"Result") => {
                self.seen_root = true;
                self.header =
                    Some(ResultHeader { attributes: all_attributes(start, "Result")?, ..ResultHeader::default() });
                Frame::Result
            }
            (None, _) => return Err(ParseErrorKind::NotTradefed(String::from_utf8_lossy(tag).into_owned())),
            (Some(Frame::Result), b"Module") => self.module(start)?,
            (Some(Frame::Result), b"Build") => {
                let build = all_attributes(start, "Build")?;
                if let Some(header) = &mut self.header {
                    header.build = build;
                }
                Frame::Other(tag.to_vec())
            }
            (Some(Frame::Result), b"Summary") => {
                let summary = declared_summary(start)?;
                if let Some(header) = &mut self.header {
                    header.summary = Some(summary);
                }
                Frame::Other(tag.to_vec())
            }
            (Some(Frame::Module { .. }), b"TestCase") => {
                self.counts.test_cases += 1;
                Frame::TestCase(required(start, "TestCase", "name")?)
            }
            (Some(Frame::TestCase(test_case)), b"Test") => {
                let test_case = test_case.clone();
                Frame::Test(self.test(start, &test_case)?)
            }
            (Some(Frame::Test(test)), b"Failure") => {
                test.message = optional(start, "Failure", "message")?;
                Frame::Failure
            }
            (Some(Frame::Failure), b"StackTrace") => Frame::StackTrace(String::new()),
            _ => Frame::Other(tag.to_vec()),
        };
        self.stack.push(frame);
        if empty {
            self.close(tag)
        } else {
            Ok(Step::Continue)
        }
    }

    fn close(&mut self, tag: &[u8]) -> Result<Step, ParseErrorKind> {
        let Some(frame) = self.stack.pop() else {
            return Err(ParseErrorKind::MismatchedEndTag {
                expected: "(nothing open)".into(),
                found: String::from_utf8_lossy(tag).into_owned(),
            });
        };
        if frame.tag() != tag {
            return Err(ParseErrorKind::MismatchedEndTag {
                expected: String::from_utf8_lossy(frame.tag()).into_owned(),
                found: String::from_utf8_lossy(tag).into_owned(),
            });
        }
        match frame {
            Frame::Test(test) => Ok(Step::Test(self.finish_test(test))),
            Frame::StackTrace(trace) => {
                if let Some(test) = self.open_test() {
                    test.stack_trace = Some(trace);
                }
                Ok(Step::Continue)
            }
            _ => Ok(Step::Continue),
        }
    }

    fn open_test(&mut self) -> Option<&mut PendingTest> {
        self.stack.iter_mut().rev().find_map(|frame| match frame {
            Frame::Test(test) => Some(test),
            _ => None,
        })
    }

    fn module(&mut self, start: &BytesStart<'_>) -> Result<Frame, ParseErrorKind> {
        let mut name = None;
        let mut abi = None;
        let mut done = false;
        for attr in start.attributes() {
            let attr = attr.map_err(|err| ParseErrorKind::Xml(err.into()))?;
            match attr.key.as_ref() {
                b"name" => name = Some(value(&attr, "Module")?.into_owned()),
                b"abi" => abi = Some(value(&attr, "Module")?.into_owned()),
                b"done" => {
                    done = match value(&attr, "Module")?.as_ref() {
                        "true" => true,
                        "false" => false,
                        other => return Err(invalid("Module", &attr, other, "expected true or false")),
                    }
                }
                _ => {}
            }
        }
        let name = name.ok_or(ParseErrorKind::MissingAttribute { element: "Module", attribute: "name" })?;
        self.counts.modules += 1;
        self.counts.modules_done += u64::from(done);
        let suite = suite_name(&self.action, &name, abi.as_deref());
        Ok(Frame::Module { name, abi, suite })
    }

    fn test(&self, start: &BytesStart<'_>, test_case: &str) -> Result<PendingTest, ParseErrorKind> {
        let mut name = None;
        let mut status = None;
        for attr in start.attributes() {
            let attr = attr.map_err(|err| ParseErrorKind::Xml(err.into()))?;
            match attr.key.as_ref() {
                b"name" => name = Some(value(&attr, "Test")?),
                b"result" => status = Some(status_of(&value(&attr, "Test")?)),
                _ => {}
            }
        }
        let name = name.ok_or(ParseErrorKind::MissingAttribute { element: "Test", attribute: "name" })?;
        let status = status.ok_or(ParseErrorKind::MissingAttribute { element: "Test", attribute: "result" })?;
        Ok(PendingTest {
            name: test_name(test_case, &name),
            test: name.into_owned(),
            status,
            message: None,
            stack_trace: None,
        })
    }

    fn finish_test(&mut self, test: PendingTest) -> TradefedTest {
        self.counts.add(test.status);
        let (suite, module, abi) = self
            .stack
            .iter()
            .rev()
            .find_map(|frame| match frame {
                Frame::Module { name, abi, suite } => Some((suite.clone(), name.clone(), abi.clone())),
                _ => None,
            })
            .unwrap_or_default();
        let has_stack_trace = test.stack_trace.is_some();
        TradefedTest {
            suite,
            name: test.name,
            status: test.status,
            log: test.stack_trace.or(test.message).unwrap_or_default(),
            has_stack_trace,
            module,
            abi,
            test: test.test,
        }
    }
}

/// The suite SQUAD's tradefed plugin files a module's tests under.
pub fn suite_name(action: &str, module: &str, abi: Option<&str>) -> String {
    match abi {
        Some(abi) => format!("{action}/{abi}.{module}"),
        None => format!("{action}/{module}"),
    }
}

/// The test name SQUAD's tradefed plugin gives a `<Test>` of a
/// `<TestCase>`: `<test case>.<test>`, cut to [`MAX_TEST_NAME_CHARS`]
/// characters.
pub fn test_name(test_case: &str, test: &str) -> String {
    let mut name = format!("{test_case}.{test}");
    if let Some((cut, _)) = name.char_indices().nth(MAX_TEST_NAME_CHARS) {
        name.truncate(cut);
    }
    name
}

/// Maps a tradefed `result` attribute to squadron's status.
pub fn status_of(result: &str) -> TestStatus {
    match result {
        "pass" => TestStatus::Pass,
        "fail" => TestStatus::Fail,
        "ASSUMPTION_FAILURE" => TestStatus::Xfail,
        _ => TestStatus::Skip,
    }
}

/// Consumes a UTF-8 byte order mark, returning its length, so that
/// offsets count from the start of the file (quick-xml would skip it
/// without counting it); refuses documents that start like UTF-16 or
/// UTF-32 (with or without a byte order mark).
fn skip_bom(reader: &mut impl BufRead) -> Result<u64, ParseErrorKind> {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    let mut skipped = 0;
    while skipped < BOM.len() {
        let head = reader.fill_buf().map_err(|err| ParseErrorKind::Io(Arc::new(err)))?;
        if skipped == 0 {
            let encoding = match head {
                [0x00, 0x00, 0xFE, 0xFF, ..] | [0xFF, 0xFE, 0x00, 0x00, ..] => Some("UTF-32"),
                [0xFE, 0xFF, ..] | [0x00, b'<', ..] => Some("UTF-16BE"),
                [0xFF, 0xFE, ..] | [b'<', 0x00, ..] => Some("UTF-16LE"),
                _ => None,
            };
            if let Some(encoding) = encoding {
                return Err(ParseErrorKind::UnsupportedEncoding(encoding.into()));
            }
        }
        let matching = head.iter().zip(&BOM[skipped..]).take_while(|(a, b)| a == b).count();
        if matching == 0 {
            break;
        }
        reader.consume(matching);
        skipped += matching;
    }
    match skipped {
        0 | 3 => Ok(skipped as u64),
        _ => Err(ParseErrorKind::InvalidUtf8),
    }
}

fn check_declaration(decl: &BytesDecl<'_>) -> Result<(), ParseErrorKind> {
    let Some(encoding) = decl.encoding() else { return Ok(()) };
    let encoding = encoding.map_err(|err| ParseErrorKind::Xml(err.into()))?;
    let name = String::from_utf8_lossy(&encoding);
    if ["utf-8", "utf8", "us-ascii", "ascii"].iter().any(|ok| name.eq_ignore_ascii_case(ok)) {
        Ok(())
    } else {
        Err(ParseErrorKind::UnsupportedEncoding(name.into_owned()))
    }
}

fn xml_error(err: quick_xml::Error) -> ParseErrorKind {
    match err {
        quick_xml::Error::Io(err) => ParseErrorKind::Io(err),
        quick_xml::Error::Encoding(_) => ParseErrorKind::InvalidUtf8,
        other => ParseErrorKind::Xml(other),
    }
}

/// An attribute's value: UTF-8, with literal tabs and line ends turned
/// into spaces (XML attribute-value normalisation, as expat does) and
/// references resolved.
fn value<'a>(attr: &Attribute<'a>, element: &'static str) -> Result<Cow<'a, str>, ParseErrorKind> {
    let unescape = |text: &str| -> Result<Option<String>, ParseErrorKind> {
        match quick_xml::escape::unescape(text) {
            Ok(Cow::Borrowed(_)) => Ok(None),
            Ok(Cow::Owned(resolved)) => Ok(Some(resolved)),
            Err(err) => Err(invalid(element, attr, text, &err.to_string())),
        }
    };
    match &attr.value {
        &Cow::Borrowed(bytes) => {
            let raw: &'a str = utf8(bytes)?;
            if raw.contains(['\t', '\n', '\r']) {
                let normalized = normalize(raw);
                Ok(Cow::Owned(unescape(&normalized)?.unwrap_or(normalized)))
            } else {
                Ok(unescape(raw)?.map_or(Cow::Borrowed(raw), Cow::Owned))
            }
        }
        Cow::Owned(bytes) => {
            let normalized = normalize(utf8(bytes)?);
            Ok(Cow::Owned(unescape(&normalized)?.unwrap_or(normalized)))
        }
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, ParseErrorKind> {
    std::str::from_utf8(bytes).map_err(|_| ParseErrorKind::InvalidUtf8)
}

/// XML attribute-value normalisation of literal white space.
fn normalize(raw: &str) -> String {
    raw.replace("\r\n", " ").replace(['\t', '\n', '\r'], " ")
}

fn invalid(element: &'static str, attr: &Attribute<'_>, value: &str, reason: &str) -> ParseErrorKind {
    ParseErrorKind::InvalidAttribute {
        element,
        attribute: String::from_utf8_lossy(attr.key.as_ref()).into_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn optional(start: &BytesStart<'_>, element: &'static str, name: &str) -> Result<Option<String>, ParseErrorKind> {
    for attr in start.attributes() {
        let attr = attr.map_err(|err| ParseErrorKind::Xml(err.into()))?;
        if attr.key.as_ref() == name.as_bytes() {
            return Ok(Some(value(&attr, element)?.into_owned()));
        }
    }
    Ok(None)
}

fn required(start: &BytesStart<'_>, element: &'static str, name: &'static str) -> Result<String, ParseErrorKind> {
    optional(start, element, name)?.ok_or(ParseErrorKind::MissingAttribute { element, attribute: name })
}

fn all_attributes(start: &BytesStart<'_>, element: &'static str) -> Result<Vec<(String, String)>, ParseErrorKind> {
    start
        .attributes()
        .map(|attr| {
            let attr = attr.map_err(|err| ParseErrorKind::Xml(err.into()))?;
            let key = std::str::from_utf8(attr.key.as_ref()).map_err(|_| ParseErrorKind::InvalidUtf8)?.to_owned();
            Ok((key, value(&attr, element)?.into_owned()))
        })
        .collect()
}

fn declared_summary(start: &BytesStart<'_>) -> Result<DeclaredSummary, ParseErrorKind> {
    let mut summary = DeclaredSummary::default();
    for attr in start.attributes() {
        let attr = attr.map_err(|err| ParseErrorKind::Xml(err.into()))?;
        let slot = match attr.key.as_ref() {
            b"pass" => &mut summary.pass,
            b"failed" => &mut summary.failed,
            b"modules_done" => &mut summary.modules_done,
            b"modules_total" => &mut summary.modules_total,
            _ => continue,
        };
        let text = value(&attr, "Summary")?;
        *slot = Some(text.trim().parse().map_err(|_| invalid("Summary", &attr, &text, "expected a count"))?);
    }
    Ok(summary)
}
