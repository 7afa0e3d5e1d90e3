//! PostgreSQL inserts that rarely conflict, run without `ON CONFLICT`.
//!
//! `INSERT … ON CONFLICT DO NOTHING` makes PostgreSQL insert every row
//! speculatively: one more probe of the unique index and one more WAL
//! record per row, even when nothing conflicts (1.4 – 1.9× the time of a
//! plain insert of 500,000 test rows on this machine). Ingestion's inserts
//! conflict only when a name comes again in a later batch of a run, or when
//! two writers intern the same new name at once. So they run plain, under
//! a savepoint; one that hits a unique violation is rolled back to the
//! savepoint and run again with its conflict clause.

use sqlx::error::ErrorKind;
use sqlx::PgConnection;

const SAVEPOINT: &str = "SAVEPOINT plain_insert";

/// Sets the savepoint the plain insert that follows may fall back to.
pub(crate) async fn begin(c: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(SAVEPOINT).execute(c).await.map(|_| ())
}

/// Settles the plain insert's `outcome`: its result if it succeeded, `None`
/// (after rolling back to the savepoint) if it hit a unique violation and
/// must run again with its conflict clause, or its error.
pub(crate) async fn settle<T>(c: &mut PgConnection, outcome: Result<T, sqlx::Error>) -> Result<Option<T>, sqlx::Error> {
    match outcome {
        Ok(done) => {
            sqlx::query("RELEASE SAVEPOINT plain_insert").execute(c).await?;
            Ok(Some(done))
        }
        Err(e) if e.as_database_error().is_some_and(|d| d.kind() == ErrorKind::UniqueViolation) => {
            sqlx::query("ROLLBACK TO SAVEPOINT plain_insert").execute(c).await?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
