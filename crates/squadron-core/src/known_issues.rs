//! Known issues: a failing test whose full name matches an active known
//! issue of its environment is an expected failure (xfail).

use regex::RegexSet;

/// Matches full test names against known-issue patterns.
///
/// A pattern is a full test name where `*` stands for any text; as in
/// SQUAD, a pattern matches a name that *starts* with it (Python's
/// `re.match`), so `suite/test` also matches `suite/test2`.
#[derive(Debug, Clone)]
pub struct KnownIssueMatcher {
    set: RegexSet,
    ids: Vec<i64>,
}

impl KnownIssueMatcher {
    /// Builds a matcher from `(known issue id, test_name pattern)` pairs.
    pub fn new<'a>(issues: impl IntoIterator<Item = (i64, &'a str)>) -> Self {
        Self::anchored(issues, "")
    }

    /// Builds a matcher whose patterns must match whole names (metric
    /// thresholds: `boot` names the metric `boot`, not `boot-time`).
    pub fn whole_names<'a>(patterns: impl IntoIterator<Item = (i64, &'a str)>) -> Self {
        Self::anchored(patterns, "$")
    }

    fn anchored<'a>(issues: impl IntoIterator<Item = (i64, &'a str)>, end: &str) -> Self {
        let (ids, patterns): (Vec<i64>, Vec<String>) = issues
            .into_iter()
            .map(|(id, pattern)| (id, format!("^{}{end}", regex::escape(pattern).replace(r"\*", ".*?"))))
            .unzip();
        let set = RegexSet::new(&patterns).expect("escaped patterns are valid regexes");
        KnownIssueMatcher { set, ids }
    }

    /// Whether there is nothing to match.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Ids of the known issues matching `full_name`.
    pub fn matches(&self, full_name: &str) -> Vec<i64> {
        if self.ids.is_empty() {
            return Vec::new();
        }
        self.set.matches(full_name).iter().map(|i| self.ids[i]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_prefix_matching() {
        let m = KnownIssueMatcher::new([(1, "suite/test"), (2, "ltp-*/fork*"), (3, "a.b[x]")]);
        assert_eq!(m.matches("suite/test"), vec![1]);
        assert_eq!(m.matches("suite/test2"), vec![1], "anchored at the start only");
        assert_eq!(m.matches("other/suite/test"), Vec::<i64>::new());
        assert_eq!(m.matches("ltp-syscalls/fork01"), vec![2]);
        assert_eq!(m.matches("a.b[x]"), vec![3], "regex characters are literal");
        assert_eq!(m.matches("aXb[x]"), Vec::<i64>::new());
        assert!(KnownIssueMatcher::new([]).is_empty());
        let whole = KnownIssueMatcher::whole_names([(1, "boot"), (2, "bench/*-time")]);
        assert_eq!(whole.matches("boot"), vec![1]);
        assert_eq!(whole.matches("boot-time"), Vec::<i64>::new());
        assert_eq!(whole.matches("bench/boot-time"), vec![2]);
    }
}
