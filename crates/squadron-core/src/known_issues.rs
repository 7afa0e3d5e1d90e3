//! Known issues: a failing test whose full name matches an active known
//! issue of its environment is an expected failure (xfail).

use std::collections::BTreeMap;
use std::ops::Bound;

use regex::RegexSet;

/// Matches full test names against known-issue patterns.
///
/// A pattern is a full test name where `*` stands for any text; as in
/// SQUAD, a pattern matches a name that *starts* with it (Python's
/// `re.match`), so `suite/test` also matches `suite/test2`.
///
/// Patterns without `*` (most of them: tradefed files one per
/// `ASSUMPTION_FAILURE`, tens of thousands in a large CTS run) are kept in
/// a sorted map, where the few that are prefixes of a name are found by a
/// handful of ordered lookups; patterns can be added one at a time
/// ([`KnownIssueMatcher::add`]) without rebuilding anything. The others go
/// into a regex set.
#[derive(Debug, Clone)]
pub struct KnownIssueMatcher {
    set: RegexSet,
    patterns: Vec<String>,
    ids: Vec<i64>,
    /// `$` when patterns must match whole names, else empty.
    end: &'static str,
    /// Literal patterns (prefix matches) and the issues filed under each.
    literals: BTreeMap<Box<[u8]>, Vec<i64>>,
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

    fn anchored<'a>(issues: impl IntoIterator<Item = (i64, &'a str)>, end: &'static str) -> Self {
        let mut matcher = KnownIssueMatcher {
            set: RegexSet::empty(),
            patterns: Vec::new(),
            ids: Vec::new(),
            end,
            literals: BTreeMap::new(),
        };
        let mut wild = false;
        for (id, pattern) in issues {
            wild |= matcher.insert(id, pattern);
        }
        if wild {
            matcher.rebuild_set();
        }
        matcher
    }

    /// Adds known issue `id` with `pattern`, unless it is already in.
    pub fn add(&mut self, id: i64, pattern: &str) {
        let regex = self.regex(pattern);
        let known = match &regex {
            None => self.literals.get(pattern.as_bytes()).is_some_and(|ids| ids.contains(&id)),
            Some(regex) => self.ids.iter().zip(&self.patterns).any(|(known, p)| *known == id && p == regex),
        };
        if !known && self.insert(id, pattern) {
            self.rebuild_set();
        }
    }

    /// The regex of a wildcard pattern; `None` for a literal one.
    fn regex(&self, pattern: &str) -> Option<String> {
        (!self.end.is_empty() || pattern.contains('*'))
            .then(|| format!("^{}{}", regex::escape(pattern).replace(r"\*", ".*?"), self.end))
    }

    /// Files `pattern` under `id`; returns whether it went to the regex set
    /// (which must then be rebuilt).
    fn insert(&mut self, id: i64, pattern: &str) -> bool {
        match self.regex(pattern) {
            None => {
                self.literals.entry(pattern.as_bytes().into()).or_default().push(id);
                false
            }
            Some(regex) => {
                self.ids.push(id);
                self.patterns.push(regex);
                true
            }
        }
    }

    fn rebuild_set(&mut self) {
        self.set = RegexSet::new(&self.patterns).expect("escaped patterns are valid regexes");
    }

    /// Whether there is nothing to match.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.literals.is_empty()
    }

    /// Ids of the known issues matching `full_name`.
    pub fn matches(&self, full_name: &str) -> Vec<i64> {
        let mut found: Vec<i64> = Vec::new();
        self.literal_prefixes(full_name.as_bytes(), &mut found);
        if !self.ids.is_empty() {
            found.extend(self.set.matches(full_name).iter().map(|i| self.ids[i]));
        }
        found
    }

    /// Adds the ids of the literal patterns that are prefixes of `name`.
    ///
    /// The greatest pattern `c` not above the name bounds the search: if
    /// `c` is a prefix of the name, every shorter prefix is at most `c`
    /// less its last byte; if not, every prefix of the name is at most its
    /// common prefix with `c` (a longer one would sort after `c`). Each
    /// lookup shortens the bound, so a name costs a few lookups.
    fn literal_prefixes(&self, name: &[u8], found: &mut Vec<i64>) {
        let mut bound = name;
        while let Some((pattern, ids)) =
            self.literals.range::<[u8], _>((Bound::Unbounded, Bound::Included(bound))).next_back()
        {
            let common = pattern.iter().zip(name).take_while(|(a, b)| a == b).count();
            if common == pattern.len() {
                found.extend(ids);
                let Some(shorter) = common.checked_sub(1) else { break };
                bound = &name[..shorter];
            } else {
                bound = &name[..common];
            }
        }
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

    /// Every string over `alphabet` of at most `len` characters.
    fn strings(alphabet: &[char], len: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..len {
            last = last.iter().flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}"))).collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn literal_prefixes_are_all_found() {
        let names = strings(&['a', 'b', '/'], 5);
        // Pattern sets chosen by a fixed linear congruential sequence, so
        // nested prefixes, siblings and gaps all occur.
        let mut state: u64 = 7;
        for round in 0..40 {
            let candidates = strings(&['a', 'b', '/'], 4);
            let mut patterns = Vec::new();
            for (i, candidate) in candidates.iter().enumerate() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                if (state >> 33) % 100 < 5 + round {
                    patterns.push((i as i64, candidate.as_str()));
                }
            }
            let built = KnownIssueMatcher::new(patterns.iter().copied());
            let mut added = KnownIssueMatcher::new([]);
            for (id, pattern) in patterns.iter().rev() {
                added.add(*id, pattern);
                added.add(*id, pattern);
            }
            for name in &names {
                let mut expected: Vec<i64> =
                    patterns.iter().filter(|(_, p)| name.starts_with(p)).map(|(id, _)| *id).collect();
                expected.sort();
                for matcher in [&built, &added] {
                    let mut found = matcher.matches(name);
                    found.sort();
                    assert_eq!(found, expected, "name {name:?}, patterns {patterns:?}");
                }
            }
        }
    }

    #[test]
    fn issues_added_later_match_and_are_not_repeated() {
        let mut m = KnownIssueMatcher::new([(1, "s/a")]);
        m.add(2, "s/a");
        m.add(2, "s/a");
        m.add(3, "s/*x");
        m.add(3, "s/*x");
        let mut hits = m.matches("s/ax");
        hits.sort();
        assert_eq!(hits, vec![1, 2, 3]);
        assert_eq!(m.matches("s/b"), Vec::<i64>::new());
    }
}
