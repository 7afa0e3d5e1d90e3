//! Finding `test_result.xml` in a tradefed results archive.
//!
//! Tradefed's results come as a `.tar.xz` (what LKFT's LAVA jobs upload),
//! sometimes as a `.tar.gz` or a `.zip`, or as the bare XML. The format
//! is told by the first bytes, not by a file name. The report is streamed
//! into a caller's [`Write`] (which can store it as a blob): neither the
//! archive nor the report is held in memory.
//!
//! The member taken is the first regular file named `test_result.xml` (in
//! any folder). Archives are untrusted input, so [`Limits`] bound the
//! report's size, how far the archive may expand (zip bombs) and how many
//! entries are looked at.

use std::cell::Cell;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::rc::Rc;

/// The file name of the report inside an archive.
pub const TEST_RESULT: &str = "test_result.xml";

/// The expansion ratio is only checked once more than this many bytes
/// were decompressed, so that tiny, very compressible archives pass.
pub const RATIO_GRACE_BYTES: u64 = 1 << 20;

/// The most memory the xz decoder may use (xz's `-9` preset needs 65 MiB).
pub const XZ_MEMORY_LIMIT: u64 = 256 << 20;

/// Bounds on what extraction may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `test_result.xml` accepted, in bytes.
    pub max_size: u64,
    /// Largest ratio of decompressed to compressed bytes: for a tarball,
    /// over the whole stream read so far (so huge members before the
    /// report count too); for a zip, for the report's entry.
    pub max_ratio: u64,
    /// Most archive entries looked at (a zip's whole directory, a
    /// tarball's members up to the report).
    pub max_entries: u64,
}

impl Default for Limits {
    /// 8 GiB, a ratio of 1000 (text compresses about 10 to 100 times;
    /// deflate cannot exceed 1032) and a million entries.
    fn default() -> Self {
        Limits { max_size: 8 << 30, max_ratio: 1000, max_entries: 1_000_000 }
    }
}

/// The kinds of input recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A zip archive.
    Zip,
    /// An xz-compressed tarball.
    TarXz,
    /// A gzip-compressed tarball.
    TarGz,
    /// The bare `test_result.xml`.
    Xml,
}

/// What was extracted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The input's format.
    pub format: Format,
    /// Path of the report inside the archive; `None` for a bare XML.
    pub path: Option<String>,
    /// Bytes written.
    pub size: u64,
}

/// Why no report could be extracted.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The input is none of the formats of [`Format`].
    #[error("not a results archive: expected a zip, a .tar.xz, a .tar.gz or test_result.xml")]
    UnknownFormat,
    /// The archive holds no regular file named `test_result.xml`.
    #[error("the archive has no test_result.xml (looked at {entries} entries)")]
    NoTestResult {
        /// Entries looked at.
        entries: u64,
    },
    /// The report is larger than [`Limits::max_size`].
    #[error("test_result.xml is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The archive expands more than [`Limits::max_ratio`] times.
    #[error("the archive expands more than {limit} times its compressed size (a zip bomb?)")]
    RatioExceeded {
        /// The limit.
        limit: u64,
    },
    /// The archive has more entries than [`Limits::max_entries`].
    #[error("the archive has more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// The archive is damaged or truncated.
    #[error("corrupt archive: {0}")]
    Corrupt(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The archive uses a feature this reader lacks (encryption, a zip
    /// compression method other than stored or deflate).
    #[error("unsupported archive: {0}")]
    Unsupported(String),
    /// Reading the input failed.
    #[error("cannot read the archive: {0}")]
    Read(#[source] io::Error),
    /// Writing the report failed.
    #[error("cannot write test_result.xml: {0}")]
    Write(#[source] io::Error),
}

/// Tells the format from the first bytes of the input (a few hundred
/// are plenty; a bare XML may start with a byte order mark and white
/// space).
pub fn detect_format(head: &[u8]) -> Option<Format> {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Some(Format::Zip)
    } else if head.starts_with(b"\xFD7zXZ\x00") {
        Some(Format::TarXz)
    } else if head.starts_with(b"\x1F\x8B") {
        Some(Format::TarGz)
    } else {
        let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
        (text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<')).then_some(Format::Xml)
    }
}

/// Copies the `test_result.xml` of `input` (read from its current
/// position) into `output`, within `limits`. On error, `output` may have
/// received part of the report.
pub fn extract_test_result<R, W>(mut input: R, output: &mut W, limits: &Limits) -> Result<Extracted, ArchiveError>
where
    R: Read + Seek,
    W: Write + ?Sized,
{
    let start = input.stream_position().map_err(ArchiveError::Read)?;
    let mut head = [0u8; 512];
    let mut len = 0;
    while len < head.len() {
        match input.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(ArchiveError::Read(err)),
        }
    }
    let format = detect_format(&head[..len]).ok_or(ArchiveError::UnknownFormat)?;
    input.seek(SeekFrom::Start(start)).map_err(ArchiveError::Read)?;
    match format {
        Format::Xml => {
            let size = copy_limited(&mut input, output, limits, None, &ArchiveError::Read)?;
            Ok(Extracted { format, path: None, size })
        }
        Format::Zip => extract_zip(input, output, limits),
        Format::TarXz => {
            let meter = Rc::new(Meter::default());
            let stream = xz2::stream::Stream::new_stream_decoder(XZ_MEMORY_LIMIT, xz2::stream::CONCATENATED)
                .map_err(|err| ArchiveError::Unsupported(err.to_string()))?;
            let compressed = Counted { inner: input, meter: Rc::clone(&meter) };
            let decoder = xz2::read::XzDecoder::new_stream(compressed, stream);
            extract_tar(decoder, meter, format, output, limits)
        }
        Format::TarGz => {
            let meter = Rc::new(Meter::default());
            let compressed = Counted { inner: input, meter: Rc::clone(&meter) };
            let decoder = flate2::read::MultiGzDecoder::new(compressed);
            extract_tar(decoder, meter, format, output, limits)
        }
    }
}

/// Bytes that went in and came out of a decompressor.
#[derive(Default)]
struct Meter {
    compressed: Cell<u64>,
    decompressed: Cell<u64>,
    /// Set when the decompressed stream was cut for exceeding the ratio,
    /// whatever error the tar reader then reports.
    tripped: Cell<bool>,
}

/// The compressed input, counted.
struct Counted<R> {
    inner: R,
    meter: Rc<Meter>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.meter.compressed.set(self.meter.compressed.get() + n as u64);
        Ok(n)
    }
}

/// The decompressed stream, cut once it expands beyond the ratio.
struct Bounded<R> {
    inner: R,
    meter: Rc<Meter>,
    max_ratio: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.meter.decompressed.get() + n as u64;
        self.meter.decompressed.set(total);
        if total > RATIO_GRACE_BYTES && total > self.meter.compressed.get().saturating_mul(self.max_ratio) {
            self.meter.tripped.set(true);
            return Err(io::Error::other("decompression ratio limit exceeded"));
        }
        Ok(n)
    }
}

fn extract_tar<D, W>(
    decoder: D,
    meter: Rc<Meter>,
    format: Format,
    output: &mut W,
    limits: &Limits,
) -> Result<Extracted, ArchiveError>
where
    D: Read,
    W: Write + ?Sized,
{
    let classify = |err: io::Error| {
        if meter.tripped.get() {
            ArchiveError::RatioExceeded { limit: limits.max_ratio }
        } else {
            read_error(err)
        }
    };
    let bounded = Bounded { inner: decoder, meter: Rc::clone(&meter), max_ratio: limits.max_ratio };
    let mut archive = tar::Archive::new(bounded);
    let mut seen = 0u64;
    for entry in archive.entries().map_err(classify)? {
        let mut entry = entry.map_err(classify)?;
        seen += 1;
        if seen > limits.max_entries {
            return Err(ArchiveError::TooManyEntries { limit: limits.max_entries });
        }
        if !entry.header().entry_type().is_file() || !is_test_result(&entry.path_bytes()) {
            continue;
        }
        if entry.size() > limits.max_size {
            return Err(ArchiveError::TooLarge { limit: limits.max_size });
        }
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let size = copy_limited(&mut entry, output, limits, None, &classify)?;
        return Ok(Extracted { format, path: Some(path), size });
    }
    Err(ArchiveError::NoTestResult { entries: seen })
}

fn extract_zip<R, W>(input: R, output: &mut W, limits: &Limits) -> Result<Extracted, ArchiveError>
where
    R: Read + Seek,
    W: Write + ?Sized,
{
    let mut zip = zip::ZipArchive::new(input).map_err(zip_error)?;
    let entries = zip.len() as u64;
    if entries > limits.max_entries {
        return Err(ArchiveError::TooManyEntries { limit: limits.max_entries });
    }
    for index in 0..zip.len() {
        if !zip.name_for_index(index).is_some_and(|name| is_test_result(name.as_bytes())) {
            continue;
        }
        let mut file = zip.by_index(index).map_err(zip_error)?;
        if !file.is_file() {
            continue;
        }
        if file.size() > limits.max_size {
            return Err(ArchiveError::TooLarge { limit: limits.max_size });
        }
        let path = file.name().to_owned();
        let compressed = file.compressed_size();
        let size = copy_limited(&mut file, output, limits, Some(compressed), &read_error)?;
        return Ok(Extracted { format: Format::Zip, path: Some(path), size });
    }
    Err(ArchiveError::NoTestResult { entries })
}

/// Whether an archive path names a `test_result.xml`.
fn is_test_result(path: &[u8]) -> bool {
    path.rsplit(|&b| b == b'/').next() == Some(TEST_RESULT.as_bytes())
}

/// Copies `source` into `output` within the size limit and, when the
/// compressed size is known, the ratio limit.
fn copy_limited<W: Write + ?Sized>(
    source: &mut dyn Read,
    output: &mut W,
    limits: &Limits,
    compressed: Option<u64>,
    read_failed: &dyn Fn(io::Error) -> ArchiveError,
) -> Result<u64, ArchiveError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(read_failed(err)),
        };
        total += n as u64;
        if total > limits.max_size {
            return Err(ArchiveError::TooLarge { limit: limits.max_size });
        }
        if let Some(compressed) = compressed {
            if total > RATIO_GRACE_BYTES && total > compressed.saturating_mul(limits.max_ratio) {
                return Err(ArchiveError::RatioExceeded { limit: limits.max_ratio });
            }
        }
        output.write_all(&buf[..n]).map_err(ArchiveError::Write)?;
    }
}

/// Decompressors and the tar reader report bad data as these kinds; any
/// other kind is a failure of the underlying reader.
fn read_error(err: io::Error) -> ArchiveError {
    match err.kind() {
        io::ErrorKind::InvalidData
        | io::ErrorKind::InvalidInput
        | io::ErrorKind::UnexpectedEof
        | io::ErrorKind::Other => ArchiveError::Corrupt(Box::new(err)),
        _ => ArchiveError::Read(err),
    }
}

fn zip_error(err: zip::result::ZipError) -> ArchiveError {
    match err {
        zip::result::ZipError::Io(err) => read_error(err),
        zip::result::ZipError::UnsupportedArchive(what) => ArchiveError::Unsupported(what.to_owned()),
        other => ArchiveError::Corrupt(Box::new(other)),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// A zip whose central directory gives an entry an empty extended
    /// timestamp field (`UT`, length 0), as found by the `tradefed` fuzz
    /// target: reading the directory underflowed the field's length (a
    /// panic with overflow checks on) instead of failing.
    const EMPTY_EXTENDED_TIMESTAMP: &[u8] =
        b"PK\x03\x04PK\x01\x02\x1e\x03\x14\x00\x00\x00\x08\x00\x0c\xa8|]\xa7\x05W\xf4\
        \xf8\x04\x00\x00\xc3\x10\x00\x00\x1c\x00\x18\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x00PK\x05\x06\x00\x00\x00\
        \x00\x03\x00\x03\x00\x03PK\x01\x02\x00\x00\x00\x00\x00result.xmlUT\x00\x00\x00\x00\x00\x00\x00PK\x05\x06\x00\
        \x00\x00\x00\x03\xef\xbb\xbf\x03PK";

    #[test]
    fn an_empty_extended_timestamp_field_is_a_corrupt_zip() {
        let mut out = Vec::new();
        let result = extract_test_result(Cursor::new(EMPTY_EXTENDED_TIMESTAMP), &mut out, &Limits::default());
        assert!(matches!(result, Err(ArchiveError::Corrupt(_))), "{result:?}");
    }
}
