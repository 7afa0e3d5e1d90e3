//! Addresses of a run's attachments on this instance: the ones plugins
//! write into attached files (SQUAD's
//! `/<group>/<project>/build/<version>/attachments/testrun/<id>/<filename>`),
//! and telling whether an address a lab's results point to is one of
//! this instance's attachments, which is then read from the store rather
//! than downloaded (as SQUAD does for its `BASE_URL`).

use reqwest::Url;

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
    /// The address of attachment `filename`: under `base` (the configured
    /// base URL) if there is one, else from the server's root.
    pub fn attachment_url(&self, base: &str, filename: &str) -> String {
        let root = Url::parse("http://localhost/").expect("a valid URL");
        let mut url = if base.is_empty() { root } else { Url::parse(base).unwrap_or(root) };
        let testrun = self.testrun.to_string();
        url.path_segments_mut().expect("an http URL has a path").pop_if_empty().extend([
            self.group.as_str(),
            &self.project,
            "build",
            &self.version,
            "attachments",
            "testrun",
            &testrun,
            filename,
        ]);
        if base.is_empty() {
            url.path().to_string()
        } else {
            url.to_string()
        }
    }
}

/// The run and file name an address names, if it is one of this
/// instance's attachments (under `base`): `<base>/api/testruns/<id>/attachments/?filename=<name>`
/// or `<base>/<group>/<project>/build/<version>/attachments/testrun/<id>/<name>`.
/// Without a base URL no address is taken for this instance's.
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
            let filename = url.query_pairs().find(|(k, _)| k == "filename")?.1.into_owned();
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
        assert_eq!(ours("https://qa.example/squad/api/testruns/7/attachments/"), None, "no file name");
        assert_eq!(ours("https://qa.example/api/testruns/7/attachments/?filename=x"), None, "outside the base path");
        assert_eq!(ours("https://lab.example/squad/api/testruns/7/attachments/?filename=x"), None, "another host");
        assert_eq!(ours("http://qa.example/squad/api/testruns/7/attachments/?filename=x"), None, "another scheme");
        assert_eq!(ours("https://qa.example/squad/api/testruns/x/attachments/?filename=x"), None);
        assert_eq!(local_attachment("", "https://qa.example/api/testruns/7/attachments/?filename=x"), None);
    }
}
