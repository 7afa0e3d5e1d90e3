//! Known issues filed by plugins (SQUAD's tradefed files one per
//! `ASSUMPTION_FAILURE`): found by title and test name, or created, and
//! extended to the environment of the run that needs them.

use crate::sql::Sql;
use crate::{Store, StoreError};

impl Store {
    /// Files each `(title, test_name)` for the environment of run `run_id`,
    /// as SQUAD's `get_or_create` + `environments.add`: an issue with that
    /// title and test name is reused, else created, and the environment is
    /// added to it. On PostgreSQL a lock per title keeps two runs filing the
    /// same issue at once from creating it twice. Returns the id and test
    /// name of each issue that is active (a found issue may have been
    /// deactivated, and then marks no test).
    pub async fn file_known_issues(
        &self,
        run_id: i64,
        issues: &[(String, String)],
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut environment = Sql::new("SELECT environment_id FROM testruns WHERE id = ");
        environment.bind(run_id);
        let Some((environment,)) = tx.fetch_optional::<(i64,)>(&environment).await? else {
            return Ok(Vec::new());
        };
        let mut filed = Vec::with_capacity(issues.len());
        for (title, test_name) in issues {
            if self.engine_name() == "postgres" {
                let mut lock = Sql::new("SELECT pg_advisory_xact_lock(hashtext(");
                lock.bind(format!("known_issue:{title}")).push("))");
                tx.execute(&lock).await?;
            }
            let mut find = Sql::new("SELECT id, active FROM known_issues WHERE title = ");
            find.bind(title.as_str()).push(" AND test_name = ").bind(test_name.as_str()).push(" ORDER BY id LIMIT 1");
            let (id, active) = match tx.fetch_optional::<(i64, bool)>(&find).await? {
                Some(found) => found,
                None => {
                    let mut insert = Sql::new("INSERT INTO known_issues (title, test_name) VALUES (");
                    insert.bind(title.as_str()).push(", ").bind(test_name.as_str()).push(") RETURNING id");
                    (tx.fetch_integer(&insert).await?, true)
                }
            };
            let mut link = Sql::new("INSERT INTO known_issue_environments (known_issue_id, environment_id) VALUES (");
            link.bind(id).push(", ").bind(environment).push(") ON CONFLICT DO NOTHING");
            tx.execute(&link).await?;
            if active {
                filed.push((id, test_name.clone()));
            }
        }
        tx.commit().await?;
        Ok(filed)
    }
}
