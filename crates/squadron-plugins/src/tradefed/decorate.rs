//! SQUAD's default `tradefed` mode for CI jobs: the lab already reported
//! the tests, and the report only lends its stack traces to the failed
//! ones, found the way SQUAD's plugin finds them, in two streaming passes
//! instead of a document tree.
//!
//! A failed lab test `<definition>/<abi>.<module>` `<a>.<b>.<test>` (its
//! suite must have a `/`; an `abi.` prefix is optional) is looked up:
//!
//! 1. in the first `<Module>` of that name (and abi), as the first `<Test>`
//!    named `<test>` (the last dot-separated part of the lab's name); if
//!    the report has no such module, the test is left alone;
//! 2. else, anywhere in the report (first match in document order), as a
//!    `<Test>` named `<b>.<test>` (the lab's name without its first part),
//!    then `<p>.<name>` and `<p>/<name>` for every dotted suffix `<p>` of
//!    the suite's parts after the second, longest first.
//!
//! The test found gives its `<StackTrace>`, if it has one. Pass 1 reads the
//! report for rule 1; pass 2, only when some test needs it, for rule 2.
//! Both passes are resumable: their state is the plugin's cursor.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use squadron_core::submission::SubmittedTest;

use super::results::TradefedTest;

/// How one failed lab test is looked up in the report.
#[derive(Debug)]
struct Lookup {
    suite: String,
    name: String,
    module: String,
    abi: Option<String>,
}

impl Lookup {
    /// The lookup of a lab test; `None` when its suite has no `/` (not a
    /// tradefed module).
    fn of(suite: &str, name: &str) -> Option<Lookup> {
        let module_part = suite.split('/').nth(1)?;
        let (abi, module) = match module_part.split_once('.') {
            Some((abi, module)) => (Some(abi.to_string()), module.to_string()),
            None => (None, module_part.to_string()),
        };
        Some(Lookup { suite: suite.to_string(), name: name.to_string(), module, abi })
    }

    /// The key of this test in the cursor.
    fn key(&self) -> String {
        format!("{}\u{0}{}", self.suite, self.name)
    }

    /// Rule 1's `<Test name>`.
    fn last(&self) -> &str {
        self.name.rsplit('.').next().unwrap_or(&self.name)
    }

    /// Rule 2's `<Test name>`s, in priority order.
    fn fallbacks(&self) -> Vec<String> {
        let parts: Vec<&str> = self.name.split('.').collect();
        let mut names = vec![parts[1..].join(".")];
        let prefix = self.suite.split('/').skip(2).collect::<Vec<_>>().join("/");
        let prefixes: Vec<&str> = prefix.split('.').collect();
        for join in [".", "/"] {
            for i in 0..prefixes.len() {
                names.push(format!("{}{join}{}", prefixes[i..].join("."), self.name));
            }
        }
        names
    }

    /// Whether the report has the module this test is looked up in.
    fn module_seen(&self, state: &DecorateState) -> bool {
        match &self.abi {
            Some(abi) => state.seen_modules.contains(&module_key(&self.module, Some(abi))),
            None => state.seen_names.contains(&self.module),
        }
    }
}

fn module_key(module: &str, abi: Option<&str>) -> String {
    format!("{}\u{0}{module}", abi.unwrap_or(""))
}

/// The decoration's progress, kept in the plugin's cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecorateState {
    /// 1 or 2.
    pub pass: u8,
    /// Modules (abi and name) read so far in pass 1.
    seen_modules: BTreeSet<String>,
    /// Module names read so far in pass 1.
    seen_names: BTreeSet<String>,
    /// The module of the last test read, and whether it is the first
    /// module of its abi and name, and the first of its name.
    current: Option<(String, bool, bool)>,
    /// Lab tests found by rule 1 (with a stack trace or not).
    found: BTreeSet<String>,
    /// Pass 2: the best rule-2 match so far of each test: the fallback's
    /// position and the stack trace (empty for none).
    fallback: BTreeMap<String, (usize, String)>,
}

impl DecorateState {
    /// A decoration about to start.
    pub fn new() -> DecorateState {
        DecorateState { pass: 1, ..DecorateState::default() }
    }
}

/// The failed lab tests, indexed for both passes.
pub struct Decorator {
    lookups: Vec<Lookup>,
    /// (module key, `<Test name>`) → lookups with an abi (rule 1).
    by_module: HashMap<(String, String), Vec<usize>>,
    /// (module name, `<Test name>`) → lookups without an abi (rule 1).
    by_name: HashMap<(String, String), Vec<usize>>,
    /// `<Test name>` → (lookup, fallback position) (rule 2).
    by_fallback: HashMap<String, Vec<(usize, usize)>>,
}

impl Decorator {
    /// Indexes the run's failed tests, `(suite, name)`.
    pub fn new(failed: &[(String, String)]) -> Decorator {
        let lookups: Vec<Lookup> = failed.iter().filter_map(|(suite, name)| Lookup::of(suite, name)).collect();
        let mut decorator = Decorator {
            lookups: Vec::new(),
            by_module: HashMap::new(),
            by_name: HashMap::new(),
            by_fallback: HashMap::new(),
        };
        for (i, lookup) in lookups.iter().enumerate() {
            let test = lookup.last().to_string();
            match &lookup.abi {
                Some(abi) => decorator.by_module.entry((module_key(&lookup.module, Some(abi)), test)),
                None => decorator.by_name.entry((lookup.module.clone(), test)),
            }
            .or_default()
            .push(i);
            for (position, name) in lookup.fallbacks().into_iter().enumerate() {
                decorator.by_fallback.entry(name).or_default().push((i, position));
            }
        }
        decorator.lookups = lookups;
        decorator
    }

    /// Whether there is no failed test to look up.
    pub fn is_empty(&self) -> bool {
        self.lookups.is_empty()
    }

    /// Pass 1 over a batch of the report: the lab tests found by rule 1
    /// with a stack trace.
    pub fn first_pass(&self, state: &mut DecorateState, batch: &[TradefedTest]) -> Vec<SubmittedTest> {
        let mut out = Vec::new();
        for test in batch {
            let key = module_key(&test.module, test.abi.as_deref());
            let (first_module, first_name) = match &state.current {
                Some((current, first_module, first_name)) if *current == key => (*first_module, *first_name),
                _ => {
                    let first_module = state.seen_modules.insert(key.clone());
                    let first_name = state.seen_names.insert(test.module.clone());
                    state.current = Some((key.clone(), first_module, first_name));
                    (first_module, first_name)
                }
            };
            let mut hits: Vec<usize> = Vec::new();
            if first_module {
                hits.extend(self.by_module.get(&(key, test.test.clone())).into_iter().flatten());
            }
            if first_name {
                hits.extend(self.by_name.get(&(test.module.clone(), test.test.clone())).into_iter().flatten());
            }
            for i in hits {
                let lookup = &self.lookups[i];
                if state.found.insert(lookup.key()) && test.has_stack_trace && !test.log.is_empty() {
                    out.push(decorated(lookup, &test.log));
                }
            }
        }
        out
    }

    /// Whether, after pass 1, some lab test needs rule 2.
    pub fn needs_second_pass(&self, state: &DecorateState) -> bool {
        self.lookups.iter().any(|l| self.wants_fallback(state, l))
    }

    fn wants_fallback(&self, state: &DecorateState, lookup: &Lookup) -> bool {
        lookup.module_seen(state) && !state.found.contains(&lookup.key())
    }

    /// Pass 2 over a batch of the report.
    pub fn second_pass(&self, state: &mut DecorateState, batch: &[TradefedTest]) {
        for test in batch {
            let Some(candidates) = self.by_fallback.get(&test.test) else { continue };
            for &(i, position) in candidates {
                let lookup = &self.lookups[i];
                if !self.wants_fallback(state, lookup) {
                    continue;
                }
                let better = state.fallback.get(&lookup.key()).is_none_or(|(best, _)| position < *best);
                if better {
                    let trace = if test.has_stack_trace { test.log.clone() } else { String::new() };
                    state.fallback.insert(lookup.key(), (position, trace));
                }
            }
        }
    }

    /// After pass 2: the lab tests found by rule 2 with a stack trace.
    pub fn finish(&self, state: &DecorateState) -> Vec<SubmittedTest> {
        self.lookups
            .iter()
            .filter_map(|lookup| match state.fallback.get(&lookup.key()) {
                Some((_, trace)) if !trace.is_empty() => Some(decorated(lookup, trace)),
                _ => None,
            })
            .collect()
    }
}

/// The lab's failed test with the report's stack trace as its log.
fn decorated(lookup: &Lookup, trace: &str) -> SubmittedTest {
    SubmittedTest {
        suite: lookup.suite.clone(),
        name: lookup.name.clone(),
        result: Some(false),
        log: Some(trace.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_names_follow_squads_order() {
        let lookup = Lookup::of("cts-lkft/arm64-v8a.CtsFoo/x.y", "a.b.testC").unwrap();
        assert_eq!((lookup.module.as_str(), lookup.abi.as_deref()), ("CtsFoo", Some("arm64-v8a")));
        assert_eq!(lookup.last(), "testC");
        assert_eq!(lookup.fallbacks(), ["b.testC", "x.y.a.b.testC", "y.a.b.testC", "x.y/a.b.testC", "y/a.b.testC"]);
        let plain = Lookup::of("vts/VtsKernel", "ltp.syscalls").unwrap();
        assert_eq!((plain.module.as_str(), plain.abi.as_deref()), ("VtsKernel", None));
        assert_eq!(plain.fallbacks(), ["syscalls", ".ltp.syscalls", "/ltp.syscalls"]);
        assert!(Lookup::of("boot", "x").is_none());
    }
}
