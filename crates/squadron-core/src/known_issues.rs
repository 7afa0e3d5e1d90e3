//! Known issues: a failing test whose full name matches an active known
//! issue of its environment is an expected failure (xfail).

use aho_corasick::AhoCorasick;
use regex::RegexSet;

/// Matches full test names against known-issue patterns.
///
/// A pattern is a full test name where `*` stands for any text; as in
/// SQUAD, a pattern matches a name that *starts* with it (Python's
/// `re.match`), so `suite/test` also matches `suite/test2`.
///
/// Patterns without `*` (most of them: tradefed files one per
/// `ASSUMPTION_FAILURE`, thousands in a CTS run) are found with one
/// Aho-Corasick search of the name (matches at its start only); the others
/// go into a regex set.
#[derive(Debug, Clone)]
pub struct KnownIssueMatcher {
    set: RegexSet,
    ids: Vec<i64>,
    /// Literal patterns (prefix matches only).
    literals: Option<AhoCorasick>,
    literal_ids: Vec<i64>,
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
        type Patterns<'p> = Vec<(i64, &'p str)>;
        let (literal, wild): (Patterns, Patterns) =
            issues.into_iter().partition(|(_, pattern)| end.is_empty() && !pattern.contains('*'));
        let (ids, patterns): (Vec<i64>, Vec<String>) = wild
            .into_iter()
            .map(|(id, pattern)| (id, format!("^{}{end}", regex::escape(pattern).replace(r"\*", ".*?"))))
            .unzip();
        let set = RegexSet::new(&patterns).expect("escaped patterns are valid regexes");
        let (literal_ids, literal_patterns): (Vec<i64>, Vec<&str>) = literal.into_iter().unzip();
        let literals = (!literal_patterns.is_empty())
            .then(|| AhoCorasick::new(&literal_patterns).expect("a literal automaton of known-issue names builds"));
        KnownIssueMatcher { set, ids, literals, literal_ids }
    }

    /// Whether there is nothing to match.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.literal_ids.is_empty()
    }

    /// Ids of the known issues matching `full_name`.
    pub fn matches(&self, full_name: &str) -> Vec<i64> {
        let mut found: Vec<i64> = Vec::new();
        if let Some(literals) = &self.literals {
            let at_start = literals.find_overlapping_iter(full_name).filter(|m| m.start() == 0);
            found.extend(at_start.map(|m| self.literal_ids[m.pattern().as_usize()]));
        }
        if !self.ids.is_empty() {
            found.extend(self.set.matches(full_name).iter().map(|i| self.ids[i]));
        }
        found
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
        let both = KnownIssueMatcher::new([(4, "cts/a.M/T.x"), (5, "cts/a.M/T.x"), (6, "cts/*"), (7, "cts/a.M/T.xy")]);
        let mut hits = both.matches("cts/a.M/T.xy");
        hits.sort();
        assert_eq!(hits, vec![4, 5, 6, 7], "every literal prefix and every wildcard pattern");
        assert_eq!(both.matches("xcts/a.M/T.x"), Vec::<i64>::new(), "literals are anchored too");
        let whole = KnownIssueMatcher::whole_names([(1, "boot"), (2, "bench/*-time")]);
        assert_eq!(whole.matches("boot"), vec![1]);
        assert_eq!(whole.matches("boot-time"), Vec::<i64>::new());
        assert_eq!(whole.matches("bench/boot-time"), vec![2]);
    }
}
