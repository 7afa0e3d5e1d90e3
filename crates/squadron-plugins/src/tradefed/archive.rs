//! Finding `test_result.xml` and its companion files in a tradefed
//! results archive.
//!
//! Tradefed's results come as a `.tar.xz` (what LKFT's LAVA jobs upload),
//! sometimes as a `.tar.gz` or a `.zip`, or as the bare XML. The format
//! is told by the first bytes, not by a file name. Each file taken is
//! streamed into a caller's [`Write`] (which can store it as a blob):
//! neither the archive nor its files are held in memory.
//!
//! The files taken are the [`Member`]s asked for, each the first regular
//! file of its name (in any folder), in the archive's order; a tarball is
//! read until all were found. Archives are untrusted input, so [`Limits`]
//! bound each file's size, how far the archive may expand (zip bombs) and
//! how many entries are looked at.
//!
//! Only the report is required: a companion file over its size limit is
//! passed over, one that cannot be read is dropped (in a zip) and, once
//! the report was taken, a damaged or over-limit rest of a tarball ends
//! the search instead of failing it.

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
    /// Largest companion file taken, in bytes (a larger one is passed
    /// over).
    pub max_companion_size: u64,
    /// Largest ratio of decompressed to compressed bytes: for a tarball,
    /// over the whole stream read so far (so huge members before the
    /// report count too); for a zip, for each entry taken.
    pub max_ratio: u64,
    /// Most archive entries looked at (a zip's whole directory, a
    /// tarball's members up to the last one taken).
    pub max_entries: u64,
}

impl Default for Limits {
    /// 8 GiB for the report, 1 GiB for a companion (the console and
    /// device logs; the stylesheet, CSS and logo are kilobytes), a ratio
    /// of 1000 (text compresses about 10 to 100 times; deflate cannot
    /// exceed 1032) and a million entries.
    fn default() -> Self {
        Limits { max_size: 8 << 30, max_companion_size: 1 << 30, max_ratio: 1000, max_entries: 1_000_000 }
    }
}

impl Limits {
    /// The size limit of `member`.
    fn size_of(&self, member: Member) -> u64 {
        match member {
            Member::TestResult => self.max_size,
            _ => self.max_companion_size.min(self.max_size),
        }
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

/// A file of tradefed's results folder, told by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Member {
    /// `test_result.xml`, the report.
    TestResult,
    /// `compatibility_result.xsl`, the stylesheet a browser shows the report with.
    Stylesheet,
    /// `compatibility_result.css`, which the stylesheet imports.
    Css,
    /// `logo.png`, which the stylesheet shows.
    Logo,
    /// `tradefed-stdout.txt`, tradefed's console output.
    Stdout,
    /// `tradefed-logcat.txt`, the device's log.
    Logcat,
}

impl Member {
    /// Every member, the report first.
    pub const ALL: [Member; 6] =
        [Member::TestResult, Member::Stylesheet, Member::Css, Member::Logo, Member::Stdout, Member::Logcat];

    /// Its file name in the archive.
    pub fn file_name(self) -> &'static str {
        match self {
            Member::TestResult => TEST_RESULT,
            Member::Stylesheet => "compatibility_result.xsl",
            Member::Css => "compatibility_result.css",
            Member::Logo => "logo.png",
            Member::Stdout => "tradefed-stdout.txt",
            Member::Logcat => "tradefed-logcat.txt",
        }
    }

    /// The member an archive path names (by its last component).
    pub fn of_path(path: &[u8]) -> Option<Member> {
        let name = path.rsplit(|&b| b == b'/').next()?;
        Member::ALL.into_iter().find(|m| m.file_name().as_bytes() == name)
    }
}

/// Copies one found member into the writer given, within the limits.
pub type CopyMember<'a> = dyn FnMut(&mut dyn Write) -> io::Result<()> + 'a;

/// What the report's extraction found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The input's format.
    pub format: Format,
    /// Path of the report inside the archive; `None` for a bare XML.
    pub path: Option<String>,
    /// The report's size in bytes.
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
    /// Storing an extracted file failed (the receiver's error).
    #[error("cannot store an extracted file: {0}")]
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
pub fn extract_test_result<R: Read + Seek>(
    input: R,
    output: &mut dyn Write,
    limits: &Limits,
) -> Result<Extracted, ArchiveError> {
    extract_members(input, &[Member::TestResult], limits, &mut |_, copy| copy(output))
}

/// Finds the `wanted` members of `input` (read from its current
/// position), which must hold a report, and hands each one found to
/// `keep` with a function that copies it, within `limits`, into a writer.
/// A bare XML is the report alone. A limit a copy runs into is the error
/// returned, whatever `keep` made of it; another error of `keep` is
/// [`ArchiveError::Write`].
pub fn extract_members<R: Read + Seek>(
    mut input: R,
    wanted: &[Member],
    limits: &Limits,
    keep: &mut dyn FnMut(Member, &mut CopyMember<'_>) -> io::Result<()>,
) -> Result<Extracted, ArchiveError> {
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
    let mut found = Found { wanted: wanted.to_vec(), keep, report: None };
    match format {
        Format::Xml => {
            found.hand_over(Member::TestResult, None, &mut input, None, limits, &ArchiveError::Read)?;
        }
        Format::Zip => extract_zip(input, &mut found, limits)?,
        Format::TarXz => {
            let meter = Rc::new(Meter::default());
            let stream = xz2::stream::Stream::new_stream_decoder(XZ_MEMORY_LIMIT, xz2::stream::CONCATENATED)
                .map_err(|err| ArchiveError::Unsupported(err.to_string()))?;
            let compressed = Counted { inner: input, meter: Rc::clone(&meter) };
            let decoder = xz2::read::XzDecoder::new_stream(compressed, stream);
            extract_tar(decoder, meter, &mut found, limits)?;
        }
        Format::TarGz => {
            let meter = Rc::new(Meter::default());
            let compressed = Counted { inner: input, meter: Rc::clone(&meter) };
            let decoder = flate2::read::MultiGzDecoder::new(compressed);
            extract_tar(decoder, meter, &mut found, limits)?;
        }
    }
    let (path, size) = found.report.expect("every format found the report or failed");
    Ok(Extracted { format, path, size })
}

/// The members still wanted, and where the report was.
struct Found<'k> {
    wanted: Vec<Member>,
    keep: &'k mut dyn FnMut(Member, &mut CopyMember<'_>) -> io::Result<()>,
    report: Option<(Option<String>, u64)>,
}

impl Found<'_> {
    /// The member at `path`, if it is still wanted.
    fn wants(&self, path: &[u8]) -> Option<Member> {
        Member::of_path(path).filter(|m| self.wanted.contains(m))
    }

    /// Whether every wanted member was found.
    fn done(&self) -> bool {
        self.wanted.is_empty()
    }

    /// Whether `err`, met in a stream after the report was taken, can be
    /// set aside: only the report is required, but a receiver that failed
    /// to store a file fails the extraction.
    fn can_skip(&self, err: &ArchiveError) -> bool {
        !matches!(err, ArchiveError::Write(_)) && self.report.is_some()
    }

    /// Hands `source`, member `member` at `path`, to `keep`.
    fn hand_over(
        &mut self,
        member: Member,
        path: Option<String>,
        source: &mut dyn Read,
        compressed: Option<u64>,
        limits: &Limits,
        read_failed: &dyn Fn(io::Error) -> ArchiveError,
    ) -> Result<(), ArchiveError> {
        self.wanted.retain(|m| *m != member);
        let limits = Limits { max_size: limits.size_of(member), ..*limits };
        let mut failure = None;
        let mut size = 0;
        let kept = (self.keep)(member, &mut |out: &mut dyn Write| {
            copy_limited(source, out, &limits, compressed, read_failed).map(|n| size = n).map_err(|err| {
                let message = io::Error::other(err.to_string());
                failure = Some(err);
                message
            })
        });
        match (failure, kept) {
            (Some(err), _) => Err(err),
            (None, Err(err)) => Err(ArchiveError::Write(err)),
            (None, Ok(())) => {
                if member == Member::TestResult {
                    self.report = Some((path, size));
                }
                Ok(())
            }
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

fn extract_tar<D: Read>(
    decoder: D,
    meter: Rc<Meter>,
    found: &mut Found<'_>,
    limits: &Limits,
) -> Result<(), ArchiveError> {
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
    // After the report, a damaged or over-limit rest of the stream only
    // ends the search for companions.
    let walked = (|| {
        for entry in archive.entries().map_err(classify)? {
            let mut entry = entry.map_err(classify)?;
            seen += 1;
            if seen > limits.max_entries {
                return Err(ArchiveError::TooManyEntries { limit: limits.max_entries });
            }
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let Some(member) = found.wants(&entry.path_bytes()) else { continue };
            if entry.size() > limits.size_of(member) {
                if member == Member::TestResult {
                    return Err(ArchiveError::TooLarge { limit: limits.max_size });
                }
                continue;
            }
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            found.hand_over(member, Some(path), &mut entry, None, limits, &classify)?;
            if found.done() {
                break;
            }
        }
        Ok(())
    })();
    match walked {
        Err(err) if !found.can_skip(&err) => Err(err),
        _ if found.report.is_none() => Err(ArchiveError::NoTestResult { entries: seen }),
        _ => Ok(()),
    }
}

fn extract_zip<R: Read + Seek>(input: R, found: &mut Found<'_>, limits: &Limits) -> Result<(), ArchiveError> {
    let mut zip = zip::ZipArchive::new(input).map_err(zip_error)?;
    let entries = zip.len() as u64;
    if entries > limits.max_entries {
        return Err(ArchiveError::TooManyEntries { limit: limits.max_entries });
    }
    for index in 0..zip.len() {
        let Some(member) = zip.name_for_index(index).and_then(|name| found.wants(name.as_bytes())) else {
            continue;
        };
        let companion = member != Member::TestResult;
        let mut file = match zip.by_index(index).map_err(zip_error) {
            Ok(file) => file,
            Err(_) if companion => continue,
            Err(err) => return Err(err),
        };
        if !file.is_file() {
            continue;
        }
        if file.size() > limits.size_of(member) {
            if companion {
                continue;
            }
            return Err(ArchiveError::TooLarge { limit: limits.max_size });
        }
        let path = file.name().to_owned();
        let compressed = file.compressed_size();
        match found.hand_over(member, Some(path), &mut file, Some(compressed), limits, &read_error) {
            // A zip's entries are independent: a bad companion is dropped
            // wherever it is.
            Err(err) if companion && !matches!(err, ArchiveError::Write(_)) => continue,
            other => other?,
        }
        if found.done() {
            break;
        }
    }
    match found.report {
        Some(_) => Ok(()),
        None => Err(ArchiveError::NoTestResult { entries }),
    }
}

/// Copies `source` into `output` within the size limit and, when the
/// compressed size is known, the ratio limit.
fn copy_limited(
    source: &mut dyn Read,
    output: &mut dyn Write,
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
