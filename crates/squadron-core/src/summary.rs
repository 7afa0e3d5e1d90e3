//! Per-run status rows: test counts and metrics summaries, per suite and
//! for the whole run, accumulated as results stream in.

use std::collections::HashMap;
use std::hash::Hash;

use crate::results::TestStatus;

/// Counts of test statuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TestCounts {
    /// Passed tests.
    pub pass: i64,
    /// Failed tests without a known issue.
    pub fail: i64,
    /// Failed tests with a known issue.
    pub xfail: i64,
    /// Skipped tests.
    pub skip: i64,
}

impl TestCounts {
    /// Counts `n` more tests of `status`.
    pub fn add(&mut self, status: TestStatus, n: i64) {
        match status {
            TestStatus::Pass => self.pass += n,
            TestStatus::Fail => self.fail += n,
            TestStatus::Xfail => self.xfail += n,
            TestStatus::Skip => self.skip += n,
        }
    }

    /// Adds another count to this one.
    pub fn merge(&mut self, other: &TestCounts) {
        self.pass += other.pass;
        self.fail += other.fail;
        self.xfail += other.xfail;
        self.skip += other.skip;
    }

    /// All tests counted.
    pub fn total(&self) -> i64 {
        self.pass + self.fail + self.xfail + self.skip
    }
}

/// The geometric mean of measurements, computed SQUAD's way: values ≤ 0 are
/// left out, and no values give 0.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Geomean {
    log_sum: f64,
    count: u64,
}

impl Geomean {
    /// Adds one measurement.
    pub fn add(&mut self, value: f64) {
        if value > 0.0 {
            self.log_sum += value.ln();
            self.count += 1;
        }
    }

    /// Adds the measurements of another mean to this one.
    pub fn merge(&mut self, other: &Geomean) {
        self.log_sum += other.log_sum;
        self.count += other.count;
    }

    /// The geometric mean so far.
    pub fn value(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            (self.log_sum / self.count as f64).exp()
        }
    }
}

/// One status row: a suite's, or the whole run's.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StatusRow {
    /// Test counts.
    pub tests: TestCounts,
    /// Geometric mean of every metric measurement.
    pub metrics_summary: Geomean,
    /// Whether any metric was recorded.
    pub has_metrics: bool,
}

impl StatusRow {
    /// Adds another row's counts and measurements to this one.
    pub fn merge(&mut self, other: &StatusRow) {
        self.tests.merge(&other.tests);
        self.metrics_summary.merge(&other.metrics_summary);
        self.has_metrics |= other.has_metrics;
    }
}

/// Status rows of one test run, keyed by suite, plus the run's total.
#[derive(Debug, Clone)]
pub struct RunStatus<S> {
    /// Per-suite rows.
    pub suites: HashMap<S, StatusRow>,
    /// The whole run's row.
    pub total: StatusRow,
}

impl<S> Default for RunStatus<S> {
    fn default() -> Self {
        RunStatus { suites: HashMap::new(), total: StatusRow::default() }
    }
}

impl<S: Eq + Hash> RunStatus<S> {
    /// Counts a test of `suite`.
    pub fn add_test(&mut self, suite: S, status: TestStatus) {
        self.add_tests(suite, status, 1);
    }

    /// Counts `n` tests of `suite` with the same status.
    pub fn add_tests(&mut self, suite: S, status: TestStatus, n: i64) {
        self.suites.entry(suite).or_default().tests.add(status, n);
        self.total.tests.add(status, n);
    }

    /// Adds the rows of a part of the run (a batch) to these.
    pub fn merge(&mut self, other: RunStatus<S>) {
        for (suite, row) in other.suites {
            self.suites.entry(suite).or_default().merge(&row);
        }
        self.total.merge(&other.total);
    }

    /// Counts a metric of `suite` with its measurements.
    pub fn add_metric(&mut self, suite: S, measurements: &[f64]) {
        let row = self.suites.entry(suite).or_default();
        row.has_metrics = true;
        self.total.has_metrics = true;
        for &m in measurements {
            row.metrics_summary.add(m);
            self.total.metrics_summary.add(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geomean_like_squad() {
        let mut g = Geomean::default();
        assert_eq!(g.value(), 0.0);
        for v in [2.0, 8.0, 0.0, -5.0] {
            g.add(v);
        }
        assert!((g.value() - 4.0).abs() < 1e-12);
    }

    #[test]
    fn run_status_counts_per_suite_and_total() {
        let mut s = RunStatus::default();
        s.add_test(1, TestStatus::Pass);
        s.add_test(1, TestStatus::Fail);
        s.add_test(2, TestStatus::Xfail);
        s.add_test(2, TestStatus::Skip);
        s.add_metric(3, &[4.0, 16.0]);
        assert_eq!(s.total.tests, TestCounts { pass: 1, fail: 1, xfail: 1, skip: 1 });
        assert_eq!(s.suites[&1].tests.total(), 2);
        assert!(!s.suites[&1].has_metrics);
        assert!(s.suites[&3].has_metrics && s.total.has_metrics);
        assert!((s.suites[&3].metrics_summary.value() - 8.0).abs() < 1e-12);
    }

    #[test]
    fn merged_parts_equal_the_whole() {
        let mut whole = RunStatus::default();
        let (mut a, mut b) = (RunStatus::default(), RunStatus::default());
        for (i, status) in
            [TestStatus::Pass, TestStatus::Fail, TestStatus::Xfail, TestStatus::Skip].into_iter().enumerate()
        {
            whole.add_test(i % 2, status);
            if i < 2 {
                a.add_test(i % 2, status)
            } else {
                b.add_test(i % 2, status)
            }
        }
        whole.add_metric(0, &[2.0, 8.0]);
        a.add_metric(0, &[2.0]);
        b.add_metric(0, &[8.0]);
        a.merge(b);
        assert_eq!(a.total, whole.total);
        assert_eq!(a.suites, whole.suites);
    }
}
