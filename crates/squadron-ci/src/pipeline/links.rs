//! Addresses of a run's attachments on this instance: the ones plugins
//! write into attached files (SQUAD's
//! `/<group>/<project>/build/<version>/attachments/testrun/<id>/<filename>`),
//! and telling whether an address a lab's results point to is one of
//! this instance's attachments, which is then read from the store rather
//! than downloaded (as SQUAD does for its `BASE_URL`).

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::Url;

/// What a path segment keeps as it is: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// A path segment, percent-encoded; `.` and `..` are encoded too, so that
/// they stay segments of their own.
fn segment(text: &str) -> String {
    match text {
        "." | ".." => "%2E".repeat(text.len()),
        _ => utf8_percent_encode(text, SEGMENT).to_string(),
    }
}

/// Where a run's attachments are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPlace {
    /// The group's slug.
    pub group: String,
    /// The project's slug.
    pub project: String,
    /// The build's version.
    pub version: String,
    /// The run's id.
    pub testrun: i64,
}

impl RunPlace {
    /// The address of attachment `filename`: under `base` (a base URL that
    /// [`valid_base`] accepted) if there is one, else from the server's
    /// root.
    pub fn attachment_url(&self, base: &str, filename: &str) -> String {
        let testrun = self.testrun.to_string();
        let segments =
            [self.group.as_str(), &self.project, "build", &self.version, "attachments", "testrun", &testrun, filename];
        let path: String = segments.iter().map(|s| format!("/{}", segment(s))).collect();
        format!("{}{path}", base.trim_end_matches('/'))
    }
}

/// Whether `base` can be the base of this instance's addresses: an
/// absolute http or https URL without a query or fragment.
pub fn valid_base(base: &str) -> bool {
    Url::parse(base).is_ok_and(|url| {
        matches!(url.scheme(), "http" | "https")
            && !url.cannot_be_a_base()
            && url.query().is_none()
            && url.fragment().is_none()
    })
}

/// The run and file name an address names, if it is one of this
/// instance's attachments (under `base`): `<base>/api/testruns/<id>/attachments/?filename=<name>`
/// (the last `filename`, as the API takes it) or
/// `<base>/<group>/<project>/build/<version>/attachments/testrun/<id>/<name>`
/// (whose group, project and version are not checked: the caller checks
/// what it may read by the run). Without a base URL no address is taken
/// for this instance's.
pub fn local_attachment(base: &str, address: &str) -> Option<(i64, String)> {
    let base = Url::parse(base).ok()?;
    let url = Url::parse(address).ok()?;
    if base.cannot_be_a_base() || url.origin() != base.origin() {
        return None;
    }
    let prefix: Vec<&str> = base.path_segments()?.filter(|s| !s.is_empty()).collect();
    let segments: Vec<&str> = url.path_segments()?.collect();
    let rest = segments.strip_prefix(prefix.as_slice())?;
    match rest {
        ["api", "testruns", id, "attachments", ""] | ["api", "testruns", id, "attachments"] => {
            let filename = url.query_pairs().filter(|(k, _)| k == "filename").last()?.1.into_owned();
            Some((id.parse().ok()?, filename))
        }
        [_, _, "build", _, "attachments", "testrun", id, name @ ..] if !name.is_empty() => {
            let name: Vec<String> = name
                .iter()
                .map(|s| percent_encoding::percent_decode_str(s).decode_utf8().ok().map(String::from))
                .collect::<Option<_>>()?;
            Some((id.parse().ok()?, name.join("/")))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place() -> RunPlace {
        RunPlace { group: "lkft".into(), project: "android".into(), version: "v1 #2/3".into(), testrun: 42 }
    }

    #[test]
    fn attachment_addresses_escape_their_parts() {
        assert_eq!(
            place().attachment_url("", "logo.png"),
            "/lkft/android/build/v1%20%232%2F3/attachments/testrun/42/logo.png"
        );
        assert_eq!(
            place().attachment_url("https://qa.example/squad/", "a b.xsl"),
            "https://qa.example/squad/lkft/android/build/v1%20%232%2F3/attachments/testrun/42/a%20b.xsl"
        );
        let dots = RunPlace { version: "..".into(), ..place() };
        assert_eq!(dots.attachment_url("", "x"), "/lkft/android/build/%2E%2E/attachments/testrun/42/x");
    }

    #[test]
    fn base_urls_are_checked() {
        for good in ["https://qa.example", "http://127.0.0.1:8000/squad/"] {
            assert!(valid_base(good), "{good}");
        }
        for bad in ["qa.example", "localhost:8000", "squad.example.com:8080", "ftp://x/", "https://x/?a=1", ""] {
            assert!(!valid_base(bad), "{bad}");
        }
    }

    #[test]
    fn this_instances_attachments_are_recognised() {
        let base = "https://qa.example/squad";
        let ours = |address: &str| local_attachment(base, address);
        assert_eq!(
            ours("https://qa.example/squad/api/testruns/7/attachments/?filename=cts%20results.tar.xz"),
            Some((7, "cts results.tar.xz".into()))
        );
        assert_eq!(
            ours(&place().attachment_url(base, "r+1.tar.xz")),
            Some((42, "r+1.tar.xz".into())),
            "the address squadron writes"
        );
        assert_eq!(
            ours("https://qa.example/squad/api/testruns/7/attachments/?filename=a&filename=b"),
            Some((7, "b".into())),
            "the last file name, as the API reads it"
        );
        assert_eq!(ours("https://qa.example/squadron/api/testruns/7/attachments/?filename=x"), None, "another path");
        assert_eq!(ours("https://qa.example/squad/api/testruns/7/attachments/"), None, "no file name");
        assert_eq!(ours("https://qa.example/api/testruns/7/attachments/?filename=x"), None, "outside the base path");
        assert_eq!(ours("https://lab.example/squad/api/testruns/7/attachments/?filename=x"), None, "another host");
        assert_eq!(ours("http://qa.example/squad/api/testruns/7/attachments/?filename=x"), None, "another scheme");
        assert_eq!(ours("https://qa.example/squad/api/testruns/x/attachments/?filename=x"), None);
        assert_eq!(local_attachment("", "https://qa.example/api/testruns/7/attachments/?filename=x"), None);
    }
}
