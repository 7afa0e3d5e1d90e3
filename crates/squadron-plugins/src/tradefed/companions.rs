//! The files of a lab's results archive kept as attachments of the run, as
//! SQUAD's tradefed plugin keeps them: their attachment names and media
//! types, and the links between them rewritten to where they are served.
//!
//! A browser shows `test_result.xml` through `compatibility_result.xsl`,
//! which imports `compatibility_result.css` and shows `logo.png`; the
//! archive links them by bare file name. SQUAD rewrites those names into
//! the addresses of the run's attachments; so does squadron, with two
//! differences written down here:
//! - in the report, only the prolog (what precedes the root element, where
//!   the `xml-stylesheet` instruction is) is rewritten, so a multi-GB
//!   report streams through; SQUAD replaced the name on every line;
//! - a stylesheet larger than [`MAX_STYLESHEET_BYTES`] (tradefed's is
//!   16 KiB) is kept as it is.

use std::io::{self, Write};

use super::archive::Member;

/// The most of a report's beginning searched for the root element.
pub const MAX_PROLOG_BYTES: usize = 64 * 1024;
/// The largest stylesheet whose links are rewritten.
pub const MAX_STYLESHEET_BYTES: usize = 1 << 20;

/// The attachment name and media type of a member, SQUAD's (including its
/// `teadefed_` spelling of the console and device logs, which scripts
/// written for SQUAD look for).
pub fn attachment_of(member: Member) -> (&'static str, &'static str) {
    match member {
        Member::TestResult => ("test_results.xml", "application/xml"),
        Member::Stylesheet => ("compatibility_result.xsl", "application/xslt+xml"),
        Member::Css => ("compatibility_result.css", "text/css"),
        Member::Logo => ("logo.png", "image/png"),
        Member::Stdout => ("teadefed_stdout.txt", "text/plain"),
        Member::Logcat => ("teadefed_logcat.txt", "text/plain"),
    }
}

/// Writes member `member` through `copy` into `out`, its links to other
/// members rewritten with `url_of` (the address of an attachment by name;
/// `None` leaves the links alone).
pub fn write_member(
    member: Member,
    url_of: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
    copy: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let links: &[Member] = match member {
        Member::TestResult => &[Member::Stylesheet],
        Member::Stylesheet => &[Member::Css, Member::Logo],
        _ => &[],
    };
    let links: Vec<(&str, String)> =
        links.iter().filter_map(|m| Some((m.file_name(), escape(&url_of(attachment_of(*m).0)?)))).collect();
    if links.is_empty() {
        return copy(out);
    }
    let limit = if member == Member::TestResult { Head::Prolog } else { Head::Whole(MAX_STYLESHEET_BYTES) };
    let mut rewriter = Rewriter { out, links, head: Vec::new(), limit, passing: false };
    copy(&mut rewriter)?;
    rewriter.finish()
}

/// An address as the value of an XML attribute or a CSS string.
fn escape(url: &str) -> String {
    quick_xml::escape::escape(url).into_owned()
}

/// How much of a member's beginning is rewritten.
#[derive(Clone, Copy)]
enum Head {
    /// Up to the root element (at most [`MAX_PROLOG_BYTES`]).
    Prolog,
    /// All of it, if it is no longer than this.
    Whole(usize),
}

/// Holds a member's beginning back until it is known how much to rewrite,
/// then passes the rest through.
struct Rewriter<'a> {
    out: &'a mut dyn Write,
    /// The file names and what they are replaced with.
    links: Vec<(&'static str, String)>,
    head: Vec<u8>,
    limit: Head,
    /// Set once the head was written.
    passing: bool,
}

impl Rewriter<'_> {
    /// Writes the head, its links rewritten up to byte `end`.
    fn release(&mut self, end: usize) -> io::Result<()> {
        let (rewritten, rest) = self.head.split_at(end.min(self.head.len()));
        self.out.write_all(&replace(rewritten, &self.links))?;
        self.out.write_all(rest)?;
        self.head = Vec::new();
        self.passing = true;
        Ok(())
    }

    /// Writes what is held back, once the member ended.
    fn finish(mut self) -> io::Result<()> {
        if !self.passing {
            let end = match self.limit {
                Head::Prolog => root_element(&self.head).unwrap_or(self.head.len()),
                Head::Whole(_) => self.head.len(),
            };
            self.release(end)?;
        }
        self.out.flush()
    }
}

impl Write for Rewriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.passing {
            return self.out.write(buf);
        }
        self.head.extend_from_slice(buf);
        match self.limit {
            Head::Prolog => match root_element(&self.head) {
                Some(end) => self.release(end)?,
                None if self.head.len() > MAX_PROLOG_BYTES => self.release(0)?,
                None => {}
            },
            Head::Whole(max) if self.head.len() > max => self.release(0)?,
            Head::Whole(_) => {}
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where the root element of an XML document starts: the first `<` that
/// is outside processing instructions (`<?…?>`), comments (`<!--…-->`) and
/// declarations (`<!…>`); `None` until it is in `text`.
fn root_element(text: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let start = at + text[at..].iter().position(|&b| b == b'<')?;
        let rest = &text[start..];
        if rest.len() < 4 && b"<!--".starts_with(rest) {
            return None; // a comment or a declaration, or not: more is needed
        }
        let close: &[u8] = if rest.starts_with(b"<!--") {
            b"-->"
        } else if rest.starts_with(b"<?") {
            b"?>"
        } else if rest.starts_with(b"<!") {
            b">"
        } else {
            return Some(start);
        };
        at = start + 2 + find(&rest[2..], close)? + close.len();
    }
}

/// Where `needle` first is in `text`.
fn find(text: &[u8], needle: &[u8]) -> Option<usize> {
    text.windows(needle.len()).position(|w| w == needle)
}

/// `text` with every file name of `links` replaced by its address, in one
/// pass (an address is never searched again).
fn replace(text: &[u8], links: &[(&'static str, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut at = 0;
    while at < text.len() {
        let rest = &text[at..];
        match links.iter().find(|(name, _)| rest.starts_with(name.as_bytes())) {
            Some((name, url)) => {
                out.extend_from_slice(url.as_bytes());
                at += name.len();
            }
            None => {
                out.push(text[at]);
                at += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url_of(name: &str) -> Option<String> {
        Some(format!("/g/p/build/v1/attachments/testrun/7/{name}?a=1&b=2"))
    }

    /// Writes `input` in chunks of `chunk` bytes through the rewriter.
    fn rewrite(member: Member, input: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        write_member(member, &url_of, &mut out, &mut |w| input.chunks(chunk.max(1)).try_for_each(|c| w.write_all(c)))
            .unwrap();
        out
    }

    #[test]
    fn the_report_links_its_stylesheet_in_the_prolog_only() {
        let report = b"<?xml version='1.0'?><?xml-stylesheet type=\"text/xsl\" href=\"compatibility_result.xsl\"?>\n\
            <Result><Test name=\"compatibility_result.xsl\"/></Result>";
        let expected = b"<?xml version='1.0'?><?xml-stylesheet type=\"text/xsl\" \
            href=\"/g/p/build/v1/attachments/testrun/7/compatibility_result.xsl?a=1&amp;b=2\"?>\n\
            <Result><Test name=\"compatibility_result.xsl\"/></Result>";
        for chunk in [1, 2, 7, 64, 4096] {
            assert_eq!(rewrite(Member::TestResult, report, chunk), expected, "chunks of {chunk}");
        }
    }

    #[test]
    fn the_stylesheet_links_the_css_and_the_logo() {
        let xsl = b"<style>@import \"compatibility_result.css\";</style><img src=\"logo.png\"/>";
        let out = String::from_utf8(rewrite(Member::Stylesheet, xsl, 5)).unwrap();
        assert_eq!(
            out,
            "<style>@import \"/g/p/build/v1/attachments/testrun/7/compatibility_result.css?a=1&amp;b=2\";</style>\
             <img src=\"/g/p/build/v1/attachments/testrun/7/logo.png?a=1&amp;b=2\"/>"
        );
    }

    #[test]
    fn the_root_element_is_found_past_comments_and_instructions() {
        assert_eq!(root_element(b"<?xml version='1.0'?><!-- <not> --><!DOCTYPE r><R/>"), Some(47));
        assert_eq!(root_element(b"<?a <b> ?>\n<R>"), Some(11));
        for partial in [b"<?xml".as_slice(), b"<!-- <x", b"<!", b"<!-", b"<", b""] {
            assert_eq!(root_element(partial), None, "{:?}", String::from_utf8_lossy(partial));
        }
        let report = b"<!-- compatibility_result.xsl <x> --><?xml-stylesheet href=\"compatibility_result.xsl\"?><R/>";
        let out = String::from_utf8(rewrite(Member::TestResult, report, 3)).unwrap();
        assert!(
            out.ends_with("href=\"/g/p/build/v1/attachments/testrun/7/compatibility_result.xsl?a=1&amp;b=2\"?><R/>"),
            "{out}"
        );
    }

    #[test]
    fn an_address_is_not_rewritten_again() {
        let url_of = |name: &str| Some(format!("/logo.png/{name}"));
        let mut out = Vec::new();
        write_member(Member::Stylesheet, &url_of, &mut out, &mut |w| w.write_all(b"compatibility_result.css logo.png"))
            .unwrap();
        assert_eq!(out, b"/logo.png/compatibility_result.css /logo.png/logo.png");
    }

    #[test]
    fn what_is_not_rewritten_passes_unchanged() {
        let report =
            [b"<?xml-stylesheet href=\"compatibility_result.xsl\"?>".as_slice(), &vec![b' '; 100_000]].concat();
        assert_eq!(rewrite(Member::TestResult, &report, 1000), report, "no root element within the limit");
        let big = [b"logo.png".as_slice(), &vec![b'x'; MAX_STYLESHEET_BYTES]].concat();
        assert_eq!(rewrite(Member::Stylesheet, &big, 4096), big);
        assert_eq!(rewrite(Member::Logo, b"logo.png", 3), b"logo.png");
        let mut out = Vec::new();
        write_member(Member::TestResult, &|_| None, &mut out, &mut |w| w.write_all(b"compatibility_result.xsl<R/>"))
            .unwrap();
        assert_eq!(out, b"compatibility_result.xsl<R/>", "no address known");
        assert_eq!(rewrite(Member::TestResult, b"", 1), b"");
    }
}
