//! Interning of suite, test and metric names into `suite_metadata`, in
//! batches: one query looks up a whole batch, one inserts what is missing.

use std::collections::HashMap;

use sqlx::{Executor, Postgres, Sqlite};

use crate::db::WriteTx;
use crate::{Store, StoreError};

/// The kind of an interned name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameKind {
    Test,
    Metric,
}

impl NameKind {
    fn sql(self) -> &'static str {
        match self {
            NameKind::Test => "'test'",
            NameKind::Metric => "'metric'",
        }
    }
}

type NameRow = (i64, String, String);

/// `(suite, name)` pairs of one batch, without duplicates.
pub(crate) type Keys<'a> = [(&'a str, &'a str)];

/// `($1,$2),($3,$4),…` for `rows` rows of `per_row` values, starting at `$start`.
pub(crate) fn values_placeholders(start: usize, per_row: usize, rows: usize) -> String {
    let mut sql = String::with_capacity(rows * per_row * 8);
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push('(');
        for col in 0..per_row {
            if col > 0 {
                sql.push(',');
            }
            sql.push('$');
            sql.push_str(&(start + row * per_row + col).to_string());
        }
        sql.push(')');
    }
    sql
}

/// `$start,…` for a list of `count` values.
pub(crate) fn list_placeholders(start: usize, count: usize) -> String {
    (start..start + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(",")
}

async fn select_sqlite<'c>(
    e: impl Executor<'c, Database = Sqlite>,
    kind: NameKind,
    keys: &Keys<'_>,
) -> Result<Vec<NameRow>, sqlx::Error> {
    let sql = format!(
        "SELECT m.id, m.suite, m.name FROM (VALUES {}) AS v JOIN suite_metadata m \
         ON m.kind = {} AND m.suite = v.column1 AND m.name = v.column2",
        values_placeholders(1, 2, keys.len()),
        kind.sql()
    );
    let mut query = sqlx::query_as(&sql);
    for (suite, name) in keys {
        query = query.bind(*suite).bind(*name);
    }
    query.fetch_all(e).await
}

async fn select_postgres<'c>(
    e: impl Executor<'c, Database = Postgres>,
    kind: NameKind,
    keys: &Keys<'_>,
) -> Result<Vec<NameRow>, sqlx::Error> {
    let sql = format!(
        "SELECT m.id, m.suite, m.name FROM UNNEST($1::text[], $2::text[]) AS v(suite, name) JOIN suite_metadata m \
         ON m.kind = {} AND m.suite = v.suite AND m.name = v.name",
        kind.sql()
    );
    let (suites, names): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
    sqlx::query_as(&sql).bind(suites).bind(names).fetch_all(e).await
}

async fn insert_sqlite<'c>(
    e: impl Executor<'c, Database = Sqlite>,
    kind: NameKind,
    keys: &Keys<'_>,
) -> Result<Vec<NameRow>, sqlx::Error> {
    let sql = format!(
        "INSERT INTO suite_metadata (kind, suite, name) SELECT {}, column1, column2 FROM (VALUES {}) WHERE true \
         ON CONFLICT DO NOTHING RETURNING id, suite, name",
        kind.sql(),
        values_placeholders(1, 2, keys.len())
    );
    let mut query = sqlx::query_as(&sql);
    for (suite, name) in keys {
        query = query.bind(*suite).bind(*name);
    }
    query.fetch_all(e).await
}

async fn insert_postgres<'c>(
    e: impl Executor<'c, Database = Postgres>,
    kind: NameKind,
    keys: &Keys<'_>,
) -> Result<Vec<NameRow>, sqlx::Error> {
    let sql = format!(
        "INSERT INTO suite_metadata (kind, suite, name) SELECT {}, suite, name FROM UNNEST($1::text[], $2::text[]) AS v(suite, name) \
         ON CONFLICT DO NOTHING RETURNING id, suite, name",
        kind.sql()
    );
    let (suites, names): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
    sqlx::query_as(&sql).bind(suites).bind(names).fetch_all(e).await
}

/// Puts the ids of `rows` into `ids`, aligned with `keys`.
fn fill(keys: &Keys<'_>, rows: Vec<NameRow>, ids: &mut [Option<i64>]) {
    let index: HashMap<(&str, &str), usize> = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    for (id, suite, name) in rows {
        if let Some(&i) = index.get(&(suite.as_str(), name.as_str())) {
            ids[i] = Some(id);
        }
    }
}

fn missing<'k>(keys: &Keys<'k>, ids: &[Option<i64>]) -> Vec<(&'k str, &'k str)> {
    keys.iter().zip(ids).filter(|(_, id)| id.is_none()).map(|(k, _)| *k).collect()
}

impl Store {
    /// Looks up the ids of interned names, outside any write transaction.
    /// `None` where a name is not interned yet.
    pub(crate) async fn lookup_names(&self, kind: NameKind, keys: &Keys<'_>) -> Result<Vec<Option<i64>>, StoreError> {
        let mut ids = vec![None; keys.len()];
        if keys.is_empty() {
            return Ok(ids);
        }
        let rows = match self.engine() {
            crate::db::Engine::Sqlite { reader, .. } => select_sqlite(reader, kind, keys).await?,
            crate::db::Engine::Postgres(pool) => select_postgres(pool, kind, keys).await?,
        };
        fill(keys, rows, &mut ids);
        Ok(ids)
    }
}

/// Interns the names of `keys` whose id is still `None`, inside `tx`, and
/// fills in their ids (also for names another writer interned meanwhile).
pub(crate) async fn intern_missing(
    tx: &mut WriteTx,
    kind: NameKind,
    keys: &Keys<'_>,
    ids: &mut [Option<i64>],
) -> Result<(), StoreError> {
    let todo = missing(keys, ids);
    if todo.is_empty() {
        return Ok(());
    }
    let inserted = with_tx!(tx, c => c.insert_names(kind, &todo).await)?;
    fill(keys, inserted, ids);
    let raced = missing(keys, ids);
    if !raced.is_empty() {
        let found = with_tx!(tx, c => c.select_names(kind, &raced).await)?;
        fill(keys, found, ids);
    }
    match missing(keys, ids).first() {
        Some((suite, name)) => Err(StoreError::Invalid(format!("could not intern name {suite}/{name}"))),
        None => Ok(()),
    }
}

/// Name interning on either engine's connection.
trait EngineNames {
    async fn insert_names(&mut self, kind: NameKind, keys: &Keys<'_>) -> Result<Vec<NameRow>, sqlx::Error>;
    async fn select_names(&mut self, kind: NameKind, keys: &Keys<'_>) -> Result<Vec<NameRow>, sqlx::Error>;
}

impl EngineNames for sqlx::SqliteConnection {
    async fn insert_names(&mut self, kind: NameKind, keys: &Keys<'_>) -> Result<Vec<NameRow>, sqlx::Error> {
        insert_sqlite(self, kind, keys).await
    }
    async fn select_names(&mut self, kind: NameKind, keys: &Keys<'_>) -> Result<Vec<NameRow>, sqlx::Error> {
        select_sqlite(self, kind, keys).await
    }
}

impl EngineNames for sqlx::PgConnection {
    async fn insert_names(&mut self, kind: NameKind, keys: &Keys<'_>) -> Result<Vec<NameRow>, sqlx::Error> {
        insert_postgres(self, kind, keys).await
    }
    async fn select_names(&mut self, kind: NameKind, keys: &Keys<'_>) -> Result<Vec<NameRow>, sqlx::Error> {
        select_postgres(self, kind, keys).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        assert_eq!(values_placeholders(1, 2, 2), "($1,$2),($3,$4)");
        assert_eq!(values_placeholders(4, 3, 1), "($4,$5,$6)");
        assert_eq!(list_placeholders(2, 3), "$2,$3,$4");
    }
}
