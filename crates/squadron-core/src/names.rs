//! SQUAD's naming rules: slugs, and the split of a full test or metric name
//! into a suite and a short name.

/// The suite of tests and metrics submitted without a suite part.
pub const ROOT_SUITE: &str = "/";

/// Whether `slug` is a valid SQUAD slug: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
///
/// Project slugs, build versions and environment slugs follow this rule.
pub fn is_valid_slug(slug: &str) -> bool {
    let mut chars = slug.chars();
    match chars.next() {
        Some(first) if first.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Whether `slug` is a valid group slug: a slug, or `~` followed by one
/// (SQUAD's personal "user namespaces").
pub fn is_valid_group_slug(slug: &str) -> bool {
    is_valid_slug(slug.strip_prefix('~').unwrap_or(slug))
}

/// Splits a full name such as `suite/sub/test` into `("suite/sub", "test")`.
///
/// A name without `/` belongs to the root suite `/`. When the last segment
/// ends with `]`, the split happens before the leftmost segment holding a
/// `[`, so `suite/test[variant/with/slashes]` keeps the slashes inside the
/// brackets (CTS parameterised test names). Same rules as SQUAD's
/// `parse_name`.
pub fn parse_name(full_name: &str) -> (&str, &str) {
    let parts: Vec<&str> = full_name.split('/').collect();
    if parts.len() < 2 {
        return (ROOT_SUITE, full_name);
    }
    let last = parts.len() - 1;
    let index =
        if parts[last].ends_with(']') { parts.iter().position(|p| p.contains('[')).unwrap_or(last) } else { last };
    // Byte offset of the start of segment `index`.
    let offset: usize = parts[..index].iter().map(|p| p.len() + 1).sum();
    let suite = &full_name[..offset.saturating_sub(1)];
    let name = &full_name[offset..];
    if suite.is_empty() {
        (ROOT_SUITE, name)
    } else {
        (suite, name)
    }
}

/// Joins a suite and a short name back into a full name (SQUAD's
/// `join_name`): names in the root suite stand alone.
pub fn join_name(suite: &str, name: &str) -> String {
    if suite == ROOT_SUITE {
        name.to_string()
    } else {
        format!("{suite}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for ok in ["a", "A0", "v1.2-rc_3", "0abc"] {
            assert!(is_valid_slug(ok), "{ok}");
        }
        for bad in ["", "-a", ".a", "_a", "a/b", "a b", "é", "~a"] {
            assert!(!is_valid_slug(bad), "{bad}");
        }
        assert!(is_valid_group_slug("~user"));
        assert!(!is_valid_group_slug("~"));
        assert!(!is_valid_group_slug("~~a"));
    }

    #[test]
    fn parse_name_follows_squad() {
        assert_eq!(parse_name("test"), ("/", "test"));
        assert_eq!(parse_name("/mytest0"), ("/", "mytest0"));
        assert_eq!(parse_name("group1/pass"), ("group1", "pass"));
        assert_eq!(parse_name("foo/bar/baz"), ("foo/bar", "baz"));
        assert_eq!(parse_name("suite/test[variant/with/slashes]"), ("suite", "test[variant/with/slashes]"));
        assert_eq!(
            parse_name("a/b/c[x]/d[y/z]"),
            ("a/b", "c[x]/d[y/z]"),
            "split before the leftmost segment holding ["
        );
        assert_eq!(parse_name("a/b]"), ("a", "b]"), "no [ at all: plain split");
        assert_eq!(parse_name("[a/b]"), ("/", "[a/b]"));
        assert_eq!(parse_name("a//b"), ("a/", "b"));
    }

    #[test]
    fn join_name_inverts_parse_name() {
        for full in ["test", "group1/pass", "foo/bar/baz", "s/t[a/b]"] {
            let (suite, name) = parse_name(full);
            assert_eq!(join_name(suite, name), full);
        }
    }
}
