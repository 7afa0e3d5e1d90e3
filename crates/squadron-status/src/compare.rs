//! Regressions and fixes between two builds, by SQUAD's rules, computed in
//! the database.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use squadron_core::known_issues::KnownIssueMatcher;
use squadron_core::names::join_name;
use squadron_store::sql::Sql;
use squadron_store::Store;

use crate::StatusError;

/// Full test names that changed, by environment slug.
pub type ByEnvironment = BTreeMap<String, Vec<String>>;

/// Short test names that changed, by environment slug and suite (SQUAD's
/// `*_grouped_by_suite`).
pub type BySuite = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// Which environments of the two builds are compared with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairing {
    /// The same environment (two builds of one project).
    SameEnvironment,
    /// Environments with the same slug (builds of different projects).
    SameSlug,
}

/// What changed from a baseline build to a target build.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// Tests that passed in the baseline and fail (without a known issue)
    /// in the target.
    pub regressions: ByEnvironment,
    /// Tests that failed in the baseline (unless with an intermittent
    /// known issue) and pass in the target.
    pub fixes: ByEnvironment,
    /// The regressions by environment and suite.
    pub regressions_by_suite: BySuite,
    /// The fixes by environment and suite.
    pub fixes_by_suite: BySuite,
}

/// The regressions and fixes of `target` against `baseline`.
///
/// SQUAD's rules: the same test (interned name) in the same environment;
/// both results set (skips are ignored) and different; a target failure
/// with a known issue (xfail) is never a regression; a baseline failure
/// with an intermittent known issue is never fixed. A test that ran several
/// times in an environment is compared run against run, so it can be both
/// a regression and a fix, as in SQUAD.
///
/// The join pairs the two builds' runs per environment and walks each
/// pair's tests through the `(test_run_id, metadata_id)` index: nothing is
/// loaded but the changed tests.
pub async fn regressions_and_fixes(
    store: &Store,
    baseline: i64,
    target: i64,
    pairing: Pairing,
) -> Result<Changes, StatusError> {
    let paired = match pairing {
        Pairing::SameEnvironment => "rb.environment_id = rt.environment_id",
        Pairing::SameSlug => "rb.environment_id IN (SELECT id FROM environments eb WHERE eb.slug = e.slug)",
    };
    // The CROSS JOINs fix the order on SQLite (runs, then the target's
    // tests, then each one's baseline twin through the unique
    // (test_run_id, metadata_id) index); left to itself its planner looks
    // the twin up by name alone, across every build that has the test.
    let mut sql = Sql::new(&format!(
        "SELECT e.slug, m.suite, m.name, t.result \
         FROM testruns rt CROSS JOIN testruns rb CROSS JOIN tests t CROSS JOIN tests b \
         JOIN environments e ON e.id = rt.environment_id \
         JOIN suite_metadata m ON m.id = t.metadata_id \
         WHERE rt.visible AND rb.visible AND {paired} \
           AND t.test_run_id = rt.id AND b.test_run_id = rb.id AND b.metadata_id = t.metadata_id \
           AND t.result IS NOT NULL AND b.result IS NOT NULL AND t.result <> b.result \
           AND (t.result OR NOT COALESCE(t.has_known_issues, FALSE)) \
           AND NOT (t.result AND EXISTS (SELECT 1 FROM test_known_issues l \
                    JOIN known_issues k ON k.id = l.known_issue_id WHERE l.test_id = b.id AND k.intermittent)) \
           AND rb.build_id = "
    ));
    sql.bind(baseline).push(" AND rt.build_id = ").bind(target);
    let rows: Vec<(String, String, String, bool)> = store.fetch_all(&sql).await?;
    let (mut regressions, mut fixes) = (Changed::new(), Changed::new());
    for (environment, suite, name, passes_now) in rows {
        let into = if passes_now { &mut fixes } else { &mut regressions };
        into.entry(environment).or_default().insert((suite, name));
    }
    Ok(Changes::from_sets(&regressions, &fixes))
}

/// Changed names by environment slug, as (suite, short name).
type Changed = BTreeMap<String, BTreeSet<(String, String)>>;

impl Changes {
    fn from_sets(regressions: &Changed, fixes: &Changed) -> Changes {
        let full = |m: &Changed| -> ByEnvironment {
            m.iter().map(|(env, tests)| (env.clone(), tests.iter().map(|(s, n)| join_name(s, n)).collect())).collect()
        };
        let grouped = |m: &Changed| -> BySuite {
            m.iter()
                .map(|(env, tests)| {
                    let mut suites: BTreeMap<String, Vec<String>> = BTreeMap::new();
                    for (suite, name) in tests {
                        suites.entry(suite.clone()).or_default().push(name.clone());
                    }
                    (env.clone(), suites)
                })
                .collect()
        };
        Changes {
            regressions: full(regressions),
            fixes: full(fixes),
            regressions_by_suite: grouped(regressions),
            fixes_by_suite: grouped(fixes),
        }
    }
}

/// The metric regressions and fixes of `target` against `baseline`.
///
/// SQUAD's rule: only metrics named by a threshold of the target's project
/// *without* a value (a threshold for the metric's environment or for every
/// environment) are classified; the threshold says whether higher is
/// better, so an increase is a fix or a regression accordingly.
pub async fn metric_regressions_and_fixes(
    store: &Store,
    baseline: i64,
    target: i64,
    pairing: Pairing,
) -> Result<Changes, StatusError> {
    let mut sql = Sql::new(
        "SELECT t.environment_id, t.name, t.is_higher_better FROM metric_thresholds t \
         JOIN builds b ON b.project_id = t.project_id WHERE t.value IS NULL AND b.id = ",
    );
    sql.bind(target);
    let thresholds: Vec<(Option<i64>, String, bool)> = store.fetch_all(&sql).await?;
    if thresholds.is_empty() {
        return Ok(Changes::default());
    }
    let matcher = KnownIssueMatcher::whole_names(thresholds.iter().enumerate().map(|(i, t)| (i as i64, t.1.as_str())));
    let paired = match pairing {
        Pairing::SameEnvironment => "rb.environment_id = rt.environment_id",
        Pairing::SameSlug => "rb.environment_id IN (SELECT id FROM environments eb WHERE eb.slug = e.slug)",
    };
    let mut sql = Sql::new(&format!(
        "SELECT e.id, e.slug, m.suite, m.name, b.result, t.result \
         FROM testruns rt CROSS JOIN testruns rb CROSS JOIN metrics t CROSS JOIN metrics b \
         JOIN environments e ON e.id = rt.environment_id \
         JOIN suite_metadata m ON m.id = t.metadata_id \
         WHERE rt.visible AND rb.visible AND {paired} \
           AND t.test_run_id = rt.id AND b.test_run_id = rb.id AND b.metadata_id = t.metadata_id \
           AND t.result <> b.result AND rb.build_id = "
    ));
    sql.bind(baseline).push(" AND rt.build_id = ").bind(target);
    let rows: Vec<(i64, String, String, String, f64, f64)> = store.fetch_all(&sql).await?;
    let (mut regressions, mut fixes) = (Changed::new(), Changed::new());
    for (environment_id, environment, suite, name, before, after) in rows {
        let full = join_name(&suite, &name);
        let threshold = matcher
            .matches(&full)
            .into_iter()
            .map(|i| &thresholds[i as usize])
            .find(|t| t.0.is_none_or(|e| e == environment_id));
        let Some(&(_, _, higher_is_better)) = threshold else { continue };
        let better = (after > before) == higher_is_better;
        let into = if better { &mut fixes } else { &mut regressions };
        into.entry(environment).or_default().insert((suite, name));
    }
    Ok(Changes::from_sets(&regressions, &fixes))
}
