//! Turning snippets into tests, as SQUAD's `create_name_log_dict` and
//! `create_squad_tests_from_name_log_dict` do, within bounded memory.

use std::collections::{HashMap, VecDeque};

use regex::Regex;

use super::engine::PatternSet;
use super::naming::{create_name, shasum};
use super::{LogTest, LogTestKind};

/// Most distinct snippets kept per test: SQUAD's `MAX_LOG_ENTRIES`, the
/// number of snippets SQUAD stores in a test's log.
///
/// SQUAD keeps *every* distinct snippet in memory and stores an arbitrary
/// 100 of them (it joins a Python set); the parsers keep the first 100 in
/// log order. Beyond 100 snippets per test the stored log may therefore
/// hold other snippets than SQUAD's (which is not deterministic there).
pub const MAX_SNIPPETS_PER_TEST: usize = 100;

/// Longest test log, in characters: SQUAD's `MAX_LOG_LENGTH`. Snippets stop
/// being kept once the joined log reaches it (the last kept one may be cut).
pub const MAX_LOG_CHARS: usize = 1_000_000;

/// Most tests one parse reports. SQUAD has no such limit; a log with more
/// distinct problems than this loses the tests past it.
pub const MAX_TESTS: usize = 10_000;

/// Most snippet bytes one parse keeps over all its tests. Past it, tests are
/// still reported but their logs get no more snippets (SQUAD has no such
/// limit; it takes thousands of large distinct reports to reach it).
pub const MAX_KEPT_SNIPPET_BYTES: usize = 64 * 1024 * 1024;

/// How many recent names [`RecentNames`] keeps.
const RECENT_NAMES: usize = 8;

/// The last few slugs made ([`create_name`]), by extraction pattern and
/// snippet: the build parser runs both toolchains' patterns until it knows
/// which one the log is for, and both usually match the same snippets.
#[derive(Default)]
pub(crate) struct RecentNames {
    /// (extraction pattern, snippet, slug), the newest last.
    entries: VecDeque<(String, String, Option<String>)>,
}

impl RecentNames {
    /// `create_name(snippet, extract, clean)`, from memory when it was
    /// just made; callers must always pass the same `clean` for a pattern.
    fn slug(&mut self, snippet: &str, extract: &Regex, clean: fn(&str) -> String) -> Option<String> {
        let pattern = extract.as_str();
        if let Some((_, _, slug)) = self.entries.iter().find(|(p, s, _)| p == pattern && s == snippet) {
            return slug.clone();
        }
        let slug = create_name(snippet, extract, clean);
        if self.entries.len() == RECENT_NAMES {
            self.entries.pop_front();
        }
        self.entries.push_back((pattern.to_owned(), snippet.to_owned(), slug.clone()));
        slug
    }
}

/// How a parser names tests.
pub(crate) struct Naming {
    /// Longest test name, in characters (SQUAD: 191 with fingerprint tests, 256 without).
    pub(crate) max_name_len: usize,
    /// Whether a `<name>-<sha256>` test is made per distinct normalised snippet.
    pub(crate) fingerprints: bool,
    /// Clean-up of the extracted name before slugifying it.
    pub(crate) clean: fn(&str) -> String,
}

struct Accumulator {
    name: String,
    snippets: Vec<String>,
    joined_chars: usize,
    full: bool,
}

impl Accumulator {
    fn new(name: String) -> Self {
        Accumulator { name, snippets: Vec::new(), joined_chars: 0, full: false }
    }

    fn add(&mut self, snippet: &str, kind: LogTestKind, budget: &mut usize) {
        if self.full || self.snippets.iter().any(|kept| kept == snippet) {
            return;
        }
        let separator = if self.snippets.is_empty() { 0 } else { kind.separator().len() };
        let room = MAX_LOG_CHARS.saturating_sub(self.joined_chars + separator);
        let mut kept: String = snippet.chars().take(room).collect();
        if kept.len() > *budget {
            let mut cut = *budget;
            while !kept.is_char_boundary(cut) {
                cut -= 1;
            }
            kept.truncate(cut);
        }
        if kept.is_empty() {
            self.full = true;
            return;
        }
        *budget -= kept.len();
        self.joined_chars += separator + kept.chars().count();
        self.full = self.snippets.len() + 1 == MAX_SNIPPETS_PER_TEST
            || self.joined_chars >= MAX_LOG_CHARS
            || kept.len() < snippet.len();
        self.snippets.push(kept);
    }

    fn into_test(self, suite: &str, kind: LogTestKind) -> LogTest {
        LogTest { suite: suite.to_owned(), name: self.name, result: false, kind, snippets: self.snippets }
    }
}

/// The tests of one name, SQUAD's `tests_without_shas_to_create` entry, with
/// its fingerprint tests.
struct Aggregate {
    test: Accumulator,
    fingerprints: Vec<Accumulator>,
    fingerprint_index: HashMap<String, usize>,
}

#[derive(Default)]
struct Group {
    aggregates: Vec<Aggregate>,
    index: HashMap<String, usize>,
}

struct Suite {
    name: String,
    /// One group per pattern, in pattern order.
    groups: Vec<Group>,
}

/// Collects the tests of one parse, for one or more suites.
pub(crate) struct Collector {
    patterns: &'static PatternSet,
    naming: Naming,
    suites: Vec<Suite>,
    tests_left: usize,
    bytes_left: usize,
}

impl Collector {
    pub(crate) fn new(patterns: &'static PatternSet, naming: Naming, suites: &[&str]) -> Self {
        let suites = suites
            .iter()
            .map(|name| Suite {
                name: (*name).to_owned(),
                groups: patterns.patterns.iter().map(|_| Group::default()).collect(),
            })
            .collect();
        Collector { patterns, naming, suites, tests_left: MAX_TESTS, bytes_left: MAX_KEPT_SNIPPET_BYTES }
    }

    /// Records that pattern `pattern` matched `snippet` in suite `suite`.
    pub(crate) fn record(&mut self, suite: usize, pattern: usize, snippet: &str) {
        let slug = create_name(snippet, &self.patterns.patterns[pattern].extract, self.naming.clean);
        self.record_named(suite, pattern, snippet, slug);
    }

    /// [`Self::record`], taking the name from `names` when it was just made
    /// for the same snippet and extraction pattern (by a collector with the
    /// same [`Naming`]).
    pub(crate) fn record_with(&mut self, suite: usize, pattern: usize, snippet: &str, names: &mut RecentNames) {
        let slug = names.slug(snippet, &self.patterns.patterns[pattern].extract, self.naming.clean);
        self.record_named(suite, pattern, snippet, slug);
    }

    fn record_named(&mut self, suite: usize, pattern: usize, snippet: &str, slug: Option<String>) {
        let definition = &self.patterns.patterns[pattern];
        let name = match slug {
            Some(slug) => {
                let mut name = format!("{}-{slug}", definition.name);
                // Names are ASCII (a slug is), so bytes are characters.
                name.truncate(self.naming.max_name_len);
                name
            }
            None => definition.name.to_owned(),
        };
        let group = &mut self.suites[suite].groups[pattern];
        let position = match group.index.get(&name) {
            Some(&position) => position,
            None if self.tests_left == 0 => return,
            None => {
                self.tests_left -= 1;
                group.index.insert(name.clone(), group.aggregates.len());
                group.aggregates.push(Aggregate {
                    test: Accumulator::new(name.clone()),
                    fingerprints: Vec::new(),
                    fingerprint_index: HashMap::new(),
                });
                group.aggregates.len() - 1
            }
        };
        let aggregate = &mut group.aggregates[position];
        aggregate.test.add(snippet, LogTestKind::Aggregate, &mut self.bytes_left);
        if !self.naming.fingerprints {
            return;
        }
        let fingerprint_name = format!("{name}-{}", shasum(snippet));
        let position = match aggregate.fingerprint_index.get(&fingerprint_name) {
            Some(&position) => position,
            None if self.tests_left == 0 => return,
            None => {
                self.tests_left -= 1;
                aggregate.fingerprint_index.insert(fingerprint_name.clone(), aggregate.fingerprints.len());
                aggregate.fingerprints.push(Accumulator::new(fingerprint_name));
                aggregate.fingerprints.len() - 1
            }
        };
        aggregate.fingerprints[position].add(snippet, LogTestKind::Sha, &mut self.bytes_left);
    }

    /// The tests, suite by suite and pattern by pattern, in SQUAD's creation
    /// order: a pattern's name tests first (in order of first appearance),
    /// then its fingerprint tests.
    pub(crate) fn into_tests(self) -> Vec<LogTest> {
        let mut tests = Vec::new();
        for suite in self.suites {
            for group in suite.groups {
                let mut fingerprints = Vec::new();
                for aggregate in group.aggregates {
                    tests.push(aggregate.test.into_test(&suite.name, LogTestKind::Aggregate));
                    fingerprints.extend(aggregate.fingerprints);
                }
                tests.extend(fingerprints.into_iter().map(|test| test.into_test(&suite.name, LogTestKind::Sha)));
            }
        }
        tests
    }
}
