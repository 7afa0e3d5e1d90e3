//! Re-applying known issues to stored tests when an issue changes (SQUAD
//! only applies them at ingestion, so a new known issue never turns
//! yesterday's failures into xfails).
//!
//! The task walks the affected environments' visible runs; a run whose
//! tests change gets its status rows recounted, its build's status marked
//! stale and recomputed. Relabelling a page of tests is idempotent, so only
//! the per-run checkpoint is fenced: a run redone after a crash comes out
//! the same.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use squadron_core::known_issues::KnownIssueMatcher;
use squadron_core::names::join_name;
use squadron_queue::{Job, NewTask, Outcome, StepTx, Task, TaskError};
use squadron_store::sql::Sql;
use squadron_store::Store;

use crate::tasks::{StatusContext, UpdateBuildStatus};

/// Tests relabelled per transaction.
const PAGE: i64 = 5000;

/// Re-applies the active known issues of `environments` to their stored
/// tests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReapplyKnownIssues {
    /// The environments whose issues changed.
    pub environments: Vec<i64>,
}

impl ReapplyKnownIssues {
    /// The task for `environments`.
    pub fn task(environments: Vec<i64>) -> NewTask {
        NewTask::of(&ReapplyKnownIssues { environments })
    }
}

fn failed(e: impl std::fmt::Display) -> TaskError {
    TaskError::failed(e)
}

impl Task for ReapplyKnownIssues {
    const KIND: &'static str = "reapply_known_issues";
    const QUEUE: &'static str = "core_postprocess";
    type Context = StatusContext;

    async fn run(&self, cx: &StatusContext, job: &mut Job) -> Result<Outcome, TaskError> {
        let (mut next_env, mut after_run): (usize, i64) = job.checkpoint()?.unwrap_or((0, 0));
        while let Some(&environment) = self.environments.get(next_env) {
            let matcher = active_issues(&cx.store, environment).await.map_err(failed)?;
            loop {
                job.check_stop()?;
                let mut sql = Sql::new("SELECT id, build_id FROM testruns WHERE visible AND environment_id = ");
                sql.bind(environment).push(" AND id > ").bind(after_run).push(" ORDER BY id LIMIT 1");
                let Some((run, build)) = cx.store.fetch_optional::<(i64, i64)>(&sql).await.map_err(failed)? else {
                    break;
                };
                let changed = relabel_run(&cx.store, &matcher, run).await.map_err(failed)?;
                let mut tx = cx.store.begin_write().await.map_err(failed)?;
                if changed {
                    for statement in recount(&cx.store, run).await.map_err(failed)? {
                        tx.execute(&statement).await.map_err(failed)?;
                    }
                    let mut bump = Sql::new("UPDATE builds SET status_version = status_version + 1 WHERE id = ");
                    bump.bind(build);
                    tx.execute(&bump).await.map_err(failed)?;
                    cx.queue.enqueue(tx.conn(), &UpdateBuildStatus::task(build)).await?;
                }
                job.commit_step(tx, &(next_env, run)).await?;
                after_run = run;
            }
            next_env += 1;
            after_run = 0;
        }
        Ok(Outcome::Done)
    }
}

/// The active known issues of an environment.
async fn active_issues(store: &Store, environment: i64) -> Result<KnownIssueMatcher, squadron_store::StoreError> {
    let mut sql = Sql::new(
        "SELECT k.id, k.test_name FROM known_issues k JOIN known_issue_environments ke ON ke.known_issue_id = k.id \
         WHERE k.active AND ke.environment_id = ",
    );
    sql.bind(environment);
    let issues: Vec<(i64, String)> = store.fetch_all(&sql).await?;
    Ok(KnownIssueMatcher::new(issues.iter().map(|(id, pattern)| (*id, pattern.as_str()))))
}

/// Relabels a run's tests a page at a time; returns whether any changed.
async fn relabel_run(store: &Store, matcher: &KnownIssueMatcher, run: i64) -> Result<bool, squadron_store::StoreError> {
    let mut changed_any = false;
    let mut after = 0;
    loop {
        let mut sql = Sql::new(
            "SELECT t.id, m.suite, m.name, COALESCE(t.has_known_issues, FALSE) FROM tests t \
             JOIN suite_metadata m ON m.id = t.metadata_id WHERE t.test_run_id = ",
        );
        sql.bind(run).push(" AND t.id > ").bind(after).push(&format!(" ORDER BY t.id LIMIT {PAGE}"));
        let page: Vec<(i64, String, String, bool)> = store.fetch_all(&sql).await?;
        let Some(&(last, ..)) = page.last() else { return Ok(changed_any) };
        let mut links = Sql::new("SELECT test_id, known_issue_id FROM test_known_issues WHERE test_id IN ");
        links.bind_list(page.iter().map(|t| t.0.into()));
        let linked: Vec<(i64, i64)> = store.fetch_all(&links).await?;
        let mut old: HashMap<i64, BTreeSet<i64>> = HashMap::new();
        for (test, issue) in linked {
            old.entry(test).or_default().insert(issue);
        }
        let mut tx = store.begin_write().await?;
        for (test, suite, name, had) in &page {
            let now: BTreeSet<i64> = matcher.matches(&join_name(suite, name)).into_iter().collect();
            let before = old.remove(test).unwrap_or_default();
            if now == before && *had != now.is_empty() {
                continue;
            }
            changed_any = true;
            let mut flag = Sql::new("UPDATE tests SET has_known_issues = ");
            flag.bind(!now.is_empty()).push(" WHERE id = ").bind(*test);
            tx.execute(&flag).await?;
            let mut clear = Sql::new("DELETE FROM test_known_issues WHERE test_id = ");
            clear.bind(*test);
            tx.execute(&clear).await?;
            for issue in now {
                let mut link = Sql::new("INSERT INTO test_known_issues (test_id, known_issue_id) VALUES (");
                link.bind(*test).push(", ").bind(issue).push(")");
                tx.execute(&link).await?;
            }
        }
        tx.commit().await?;
        if (page.len() as i64) < PAGE {
            return Ok(changed_any);
        }
        after = last;
    }
}

/// The statements that set a run's fail and xfail counts, per suite and in
/// total, to what its tests say now (counted outside any transaction).
async fn recount(store: &Store, run: i64) -> Result<Vec<Sql>, squadron_store::StoreError> {
    let mut sql = Sql::new(
        "SELECT suite_id, \
                CAST(COALESCE(SUM(CASE WHEN result = FALSE AND NOT COALESCE(has_known_issues, FALSE) THEN 1 ELSE 0 END), 0) AS BIGINT), \
                CAST(COALESCE(SUM(CASE WHEN result = FALSE AND COALESCE(has_known_issues, FALSE) THEN 1 ELSE 0 END), 0) AS BIGINT) \
         FROM tests WHERE test_run_id = ",
    );
    sql.bind(run).push(" GROUP BY suite_id");
    let counts: Vec<(i64, i64, i64)> = store.fetch_all(&sql).await?;
    let mut statements = Vec::with_capacity(counts.len() + 1);
    let (mut fail, mut xfail) = (0, 0);
    for (suite, f, x) in counts {
        fail += f;
        xfail += x;
        let mut update = Sql::new("UPDATE statuses SET tests_fail = ");
        update.bind(f).push(", tests_xfail = ").bind(x).push(" WHERE test_run_id = ").bind(run);
        update.push(" AND suite_id = ").bind(suite);
        statements.push(update);
    }
    let mut total = Sql::new("UPDATE statuses SET tests_fail = ");
    total.bind(fail).push(", tests_xfail = ").bind(xfail).push(" WHERE suite_id IS NULL AND test_run_id = ").bind(run);
    statements.push(total);
    Ok(statements)
}
