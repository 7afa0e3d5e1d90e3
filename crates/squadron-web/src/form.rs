//! Reading a form body (`multipart/form-data` or
//! `application/x-www-form-urlencoded`) as it streams in: small fields are
//! kept as text, large ones go straight to the blob store.

use std::fmt;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use squadron_store::blob::{Blob, BlobStore, BlobWriter};

use crate::error::ApiError;
use crate::urlencoded::{Decoder, Event};

/// What to do with a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Keep its value as text (at most [`Limits::text`] bytes).
    Text,
    /// Store it as a blob.
    Blob,
    /// Store it as a blob without NUL bytes (logs).
    BlobWithoutNul,
    /// Ignore it.
    Skip,
}

/// Size limits of a form.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The whole body, in bytes.
    pub body: u64,
    /// One text field, in bytes.
    pub text: usize,
}

/// A field received as text.
#[derive(Debug)]
pub(crate) struct TextField {
    pub name: String,
    pub value: String,
    /// Whether it came as a file upload.
    pub is_file: bool,
}

/// A field stored as a blob.
#[derive(Debug)]
pub(crate) struct BlobField {
    pub name: String,
    /// The uploaded file's name; `None` for a plain form value.
    pub filename: Option<String>,
    pub blob: Blob,
}

/// A received form.
#[derive(Debug, Default)]
pub(crate) struct Form {
    pub texts: Vec<TextField>,
    pub blobs: Vec<BlobField>,
}

impl Form {
    /// A text field's value; an uploaded file wins over a plain value, as in
    /// SQUAD.
    pub fn text(&self, name: &str) -> Option<&str> {
        let fields = self.texts.iter().filter(|f| f.name == name);
        preferring_files(fields, |f| f.is_file).map(|f| f.value.as_str())
    }

    /// A blob field; an uploaded file wins over a plain value.
    pub fn blob(&self, name: &str) -> Option<&Blob> {
        let fields = self.blobs.iter().filter(|f| f.name == name);
        preferring_files(fields, |f| f.filename.is_some()).map(|f| &f.blob)
    }

    /// Every uploaded file of a repeatable field, with its file name.
    pub fn files<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a str, &'a Blob)> + 'a {
        self.blobs.iter().filter(move |f| f.name == name).filter_map(|f| f.filename.as_deref().map(|n| (n, &f.blob)))
    }
}

/// The last uploaded file among `fields`, else the last plain value.
fn preferring_files<'a, T>(fields: impl Iterator<Item = &'a T>, is_file: impl Fn(&T) -> bool) -> Option<&'a T> {
    let (mut file, mut value) = (None, None);
    for f in fields {
        if is_file(f) {
            file = Some(f);
        } else {
            value = Some(f);
        }
    }
    file.or(value)
}

/// A field being received.
enum Sink {
    Text { name: String, bytes: Vec<u8>, is_file: bool },
    Blob { name: String, filename: Option<String>, writer: Box<BlobWriter> },
    Skip,
}

struct Receiver<'a> {
    blobs: &'a BlobStore,
    limits: Limits,
    keep: &'a (dyn Fn(&str) -> Keep + Sync),
    form: Form,
}

impl Receiver<'_> {
    fn open(&self, name: &str, filename: Option<String>) -> Result<Sink, ApiError> {
        let writer = |strip_nul: bool| {
            let w = if strip_nul { self.blobs.writer_without_nul() } else { self.blobs.writer() };
            w.map_err(|e| ApiError::internal(&e))
        };
        Ok(match (self.keep)(name) {
            Keep::Text => Sink::Text { name: name.to_string(), bytes: Vec::new(), is_file: filename.is_some() },
            Keep::Blob => Sink::Blob { name: name.to_string(), filename, writer: Box::new(writer(false)?) },
            Keep::BlobWithoutNul => Sink::Blob { name: name.to_string(), filename, writer: Box::new(writer(true)?) },
            Keep::Skip => Sink::Skip,
        })
    }

    async fn write(&self, sink: &mut Sink, chunk: &[u8]) -> Result<(), ApiError> {
        match sink {
            Sink::Text { name, bytes, .. } => {
                if bytes.len() + chunk.len() > self.limits.text {
                    return Err(ApiError::too_large(format!(
                        "field {name:?} is larger than {} bytes",
                        self.limits.text
                    )));
                }
                bytes.extend_from_slice(chunk);
            }
            Sink::Blob { writer, .. } => writer.write(chunk).await.map_err(|e| ApiError::internal(&e))?,
            Sink::Skip => {}
        }
        Ok(())
    }

    async fn close(&mut self, sink: Sink) -> Result<(), ApiError> {
        match sink {
            Sink::Text { name, bytes, is_file } => {
                let value = String::from_utf8(bytes)
                    .map_err(|_| ApiError::bad_request(format!("field {name:?} is not valid UTF-8 text")))?;
                self.form.texts.push(TextField { name, value, is_file });
            }
            Sink::Blob { name, filename, writer } => {
                let blob = writer.finish().await.map_err(|e| ApiError::internal(&e))?;
                self.form.blobs.push(BlobField { name, filename, blob });
            }
            Sink::Skip => {}
        }
        Ok(())
    }
}

/// An uploaded file's name without directories, as Django keeps it
/// (squad-client sends the whole path it read the file from).
fn base_name(name: &str) -> String {
    name.rsplit(['/', '\\']).next().unwrap_or(name).to_string()
}

fn too_large(limit: u64) -> ApiError {
    ApiError::too_large(format!("the request body is larger than the upload limit of {limit} bytes"))
}

/// After refusing an over-size body, at most this much more of it is read
/// and thrown away (within [`DRAIN_TIME`]), so that clients that send the
/// whole body before reading the answer see the 413 rather than a reset
/// connection.
const DRAIN_BYTES: u64 = 8 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Why the body stream stopped.
#[derive(Debug)]
enum BodyError {
    TooLarge,
    Read(axum::Error),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::TooLarge => f.write_str("the request body is over the upload limit"),
            BodyError::Read(e) => write!(f, "could not read the request body: {e}"),
        }
    }
}

impl std::error::Error for BodyError {}

type BodyStream = axum::body::BodyDataStream;

/// Reads and discards what is left of a body, within the drain bounds.
async fn drain(stream: &mut BodyStream) {
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    let mut drained = 0u64;
    while drained < DRAIN_BYTES {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => drained += chunk.len() as u64,
            _ => break,
        }
    }
}

/// The body's chunks, ending with [`BodyError::TooLarge`] once more than
/// `limit` bytes came (after draining the rest within bounds).
fn limited(body: Body, limit: u64) -> impl Stream<Item = Result<Bytes, BodyError>> {
    futures_util::stream::unfold(Some((body.into_data_stream(), 0u64)), move |state| async move {
        let (mut inner, seen) = state?;
        match inner.next().await? {
            Err(e) => Some((Err(BodyError::Read(e)), None)),
            Ok(chunk) if seen + chunk.len() as u64 > limit => {
                drain(&mut inner).await;
                Some((Err(BodyError::TooLarge), None))
            }
            Ok(chunk) => {
                let seen = seen + chunk.len() as u64;
                Some((Ok(chunk), Some((inner, seen))))
            }
        }
    })
}

fn body_error(e: BodyError, limit: u64) -> ApiError {
    match e {
        BodyError::TooLarge => too_large(limit),
        BodyError::Read(e) => ApiError::bad_request(format!("could not read the request body: {e}")),
    }
}

/// Reads a form body, deciding for each field by name what to keep.
pub(crate) async fn read_form(
    blobs: &BlobStore,
    headers: &HeaderMap,
    body: Body,
    limits: Limits,
    keep: &(dyn Fn(&str) -> Keep + Sync),
) -> Result<Form, ApiError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(declared) = declared.filter(|&n| n > limits.body) {
        if declared - limits.body <= DRAIN_BYTES {
            drain(&mut body.into_data_stream()).await;
        }
        return Err(too_large(limits.body));
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut receiver = Receiver { blobs, limits, keep, form: Form::default() };
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match mime.as_str() {
        "multipart/form-data" => read_multipart(&mut receiver, content_type, body).await?,
        "application/x-www-form-urlencoded" => read_urlencoded(&mut receiver, body).await?,
        "" if declared.unwrap_or(0) == 0 => {}
        _ => {
            return Err(ApiError::bad_request(format!(
                "expected a form body (multipart/form-data or application/x-www-form-urlencoded), not {content_type:?}"
            )))
        }
    }
    Ok(receiver.form)
}

async fn read_multipart(receiver: &mut Receiver<'_>, content_type: &str, body: Body) -> Result<(), ApiError> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| ApiError::bad_request(format!("malformed multipart content type: {e}")))?;
    let limit = receiver.limits.body;
    let mut multipart = multer::Multipart::new(limited(body, limit), boundary);
    let multipart_error = move |e: multer::Error| match e {
        multer::Error::StreamReadFailed(cause) => match cause.downcast::<BodyError>() {
            Ok(e) => body_error(*e, limit),
            Err(other) => ApiError::bad_request(format!("could not read the request body: {other}")),
        },
        other => ApiError::bad_request(format!("malformed multipart body: {other}")),
    };
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let Some(name) = field.name().map(str::to_string) else {
            continue;
        };
        let mut sink = receiver.open(&name, field.file_name().map(base_name))?;
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            receiver.write(&mut sink, &chunk).await?;
        }
        receiver.close(sink).await?;
    }
    Ok(())
}

async fn read_urlencoded(receiver: &mut Receiver<'_>, body: Body) -> Result<(), ApiError> {
    let mut decoder = Decoder::default();
    let limit = receiver.limits.body;
    let mut stream = std::pin::pin!(limited(body, limit));
    let mut events = Vec::new();
    let mut sink: Option<Sink> = None;
    let mut finished = false;
    while !finished {
        match stream.next().await {
            Some(chunk) => decoder.feed(&chunk.map_err(|e| body_error(e, limit))?, &mut events),
            None => {
                decoder.finish(&mut events);
                finished = true;
            }
        }
        for event in events.drain(..) {
            match event {
                Event::Start(name) => sink = Some(receiver.open(&name, None)?),
                Event::Data(bytes) => {
                    if let Some(s) = sink.as_mut() {
                        receiver.write(s, &bytes).await?;
                    }
                }
                Event::End => {
                    if let Some(s) = sink.take() {
                        receiver.close(s).await?;
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::base_name;

    #[test]
    fn uploaded_file_names_lose_their_directories() {
        assert_eq!(base_name("/tmp/x/log.txt"), "log.txt");
        assert_eq!(base_name("C:\\Users\\me\\log.txt"), "log.txt");
        assert_eq!(base_name("log.txt"), "log.txt");
    }
}
