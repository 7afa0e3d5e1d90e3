//! Test results as SQUAD stores and reports them.

use serde::Serialize;

/// Parses a submitted result string: `pass` and `fail` (any case) are
/// results, anything else is a skip (`None`), as SQUAD does.
pub fn parse_result(value: &str) -> Option<bool> {
    if value.eq_ignore_ascii_case("pass") {
        Some(true)
    } else if value.eq_ignore_ascii_case("fail") {
        Some(false)
    } else {
        None
    }
}

/// The status SQUAD derives from a stored test: a failure with an active
/// known issue is an expected failure (`xfail`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TestStatus {
    /// The test passed.
    Pass,
    /// The test failed and no known issue covers it.
    Fail,
    /// The test failed and a known issue covers it.
    Xfail,
    /// The test did not run or reported anything but pass/fail.
    Skip,
}

impl TestStatus {
    /// Derives the status from a stored result and its known-issue flag.
    pub fn of(result: Option<bool>, has_known_issues: bool) -> Self {
        match result {
            Some(true) => TestStatus::Pass,
            Some(false) if has_known_issues => TestStatus::Xfail,
            Some(false) => TestStatus::Fail,
            None => TestStatus::Skip,
        }
    }

    /// The lowercase name used by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TestStatus::Pass => "pass",
            TestStatus::Fail => "fail",
            TestStatus::Xfail => "xfail",
            TestStatus::Skip => "skip",
        }
    }
}

/// The status of a test that a build has several times in one environment
/// (SQUAD's `test_confidence`): the most common one, ties going to fail,
/// then pass, xfail and skip; with the share of the duplicates that have
/// it, in percent. `None` when there are no statuses.
pub fn resolve_duplicates(statuses: &[TestStatus]) -> Option<(TestStatus, f64)> {
    const PRIORITY: [TestStatus; 4] = [TestStatus::Fail, TestStatus::Pass, TestStatus::Xfail, TestStatus::Skip];
    let counts = PRIORITY.map(|s| statuses.iter().filter(|&&t| t == s).count());
    let most = *counts.iter().max()?;
    if most == 0 {
        return None;
    }
    let index = counts.iter().position(|&n| n == most)?;
    Some((PRIORITY[index], most as f64 / statuses.len() as f64 * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anything_but_pass_or_fail_is_a_skip() {
        assert_eq!(parse_result("pass"), Some(true));
        assert_eq!(parse_result("PASS"), Some(true));
        assert_eq!(parse_result("Fail"), Some(false));
        for other in ["skip", "xfail", "", "passed", "error", "unknown"] {
            assert_eq!(parse_result(other), None, "{other}");
        }
    }

    #[test]
    fn duplicates_resolve_to_the_most_common_status_then_by_priority() {
        use TestStatus::*;
        assert_eq!(resolve_duplicates(&[]), None);
        assert_eq!(resolve_duplicates(&[Skip]), Some((Skip, 100.0)));
        assert_eq!(resolve_duplicates(&[Pass, Fail, Pass]), Some((Pass, 2.0 / 3.0 * 100.0)), "computed as SQUAD does");
        assert_eq!(resolve_duplicates(&[Pass, Fail]), Some((Fail, 50.0)));
        assert_eq!(resolve_duplicates(&[Skip, Xfail, Pass, Pass, Skip, Xfail]), Some((Pass, 2.0 / 6.0 * 100.0)));
        assert_eq!(resolve_duplicates(&[Skip, Xfail]), Some((Xfail, 50.0)));
    }

    #[test]
    fn status_derivation() {
        assert_eq!(TestStatus::of(Some(true), true), TestStatus::Pass);
        assert_eq!(TestStatus::of(Some(false), false), TestStatus::Fail);
        assert_eq!(TestStatus::of(Some(false), true), TestStatus::Xfail);
        assert_eq!(TestStatus::of(None, true), TestStatus::Skip);
    }
}
