//! Interning of suite, test and metric names into `suite_metadata`, in
//! batches: one query looks up a whole batch, one inserts what is missing.

use std::collections::HashMap;

use sqlx::{Executor, Postgres, Sqlite};

use super::plain_insert;
use crate::db::{EngineTx, WriteTx};
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

/// `(?,?),(?,?),…` for `rows` rows of `per_row` values.
///
/// SQLite statements with many parameters use anonymous `?` placeholders:
/// sqlx looks up the name of every numbered (`$N`) parameter, and SQLite
/// finds a name by a linear scan, which makes binding thousands of `$N`
/// parameters quadratic (seconds for one 5,000-row batch).
pub(crate) fn values_placeholders(per_row: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; per_row].join(","));
    vec![row; rows].join(",")
}

/// `?,?,…` for a list of `count` values.
pub(crate) fn list_placeholders(count: usize) -> String {
    vec!["?"; count].join(",")
}

/// `(position in the keys, id)` of an interned name. Lookups return
/// integers only: decoding thousands of names back and matching them up
/// cost more than the lookup itself.
type Found = (i64, i64);

async fn select_sqlite<'c>(
    e: impl Executor<'c, Database = Sqlite>,
    kind: NameKind,
    keys: &Keys<'_>,
) -> Result<Vec<Found>, sqlx::Error> {
    let sql = format!(
        "SELECT v.column3, m.id FROM (VALUES {}) AS v JOIN suite_metadata m \
         ON m.kind = {} AND m.suite = v.column1 AND m.name = v.column2",
        values_placeholders(3, keys.len()),
        kind.sql()
    );
    let mut query = sqlx::query_as(&sql);
    for (position, (suite, name)) in keys.iter().enumerate() {
        query = query.bind(*suite).bind(*name).bind(position as i64);
    }
    query.fetch_all(e).await
}

async fn select_postgres<'c>(
    e: impl Executor<'c, Database = Postgres>,
    kind: NameKind,
    keys: &Keys<'_>,
) -> Result<Vec<Found>, sqlx::Error> {
    let sql = format!(
        "SELECT v.position - 1, m.id FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS v(suite, name, position) \
         JOIN suite_metadata m ON m.kind = {} AND m.suite = v.suite AND m.name = v.name",
        kind.sql()
    );
    let (suites, names): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
    sqlx::query_as(&sql).bind(suites).bind(names).fetch_all(e).await
}

/// Inserts the names of `keys` with ids of their own choosing: the writer
/// holds SQLite's only write lock, so the ids after the largest are free,
/// and nothing comes back to decode. Returns the ids aligned with `keys`,
/// or all `None` if some name was interned meanwhile (another writer got
/// in between the lookup and this transaction): the caller looks those up.
async fn insert_sqlite(
    c: &mut sqlx::SqliteConnection,
    kind: NameKind,
    keys: &Keys<'_>,
) -> Result<Vec<Option<i64>>, sqlx::Error> {
    let last: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM suite_metadata").fetch_one(&mut *c).await?;
    let sql = format!(
        "INSERT INTO suite_metadata (id, kind, suite, name) SELECT column1, {}, column2, column3 FROM (VALUES {}) WHERE true \
         ON CONFLICT DO NOTHING",
        kind.sql(),
        values_placeholders(3, keys.len())
    );
    let mut query = sqlx::query(&sql);
    for (i, (suite, name)) in keys.iter().enumerate() {
        query = query.bind(last + 1 + i as i64).bind(*suite).bind(*name);
    }
    let inserted = query.execute(&mut *c).await?.rows_affected();
    Ok(if inserted == keys.len() as u64 {
        (0..keys.len()).map(|i| Some(last + 1 + i as i64)).collect()
    } else {
        vec![None; keys.len()]
    })
}

/// Inserts the names of `keys` that are not interned yet; returns the ids
/// aligned with `keys`, `None` for names another writer interned meanwhile.
/// They are inserted plainly (see [`plain_insert`]) unless one was.
async fn insert_postgres(
    c: &mut sqlx::PgConnection,
    kind: NameKind,
    keys: &Keys<'_>,
) -> Result<Vec<Option<i64>>, sqlx::Error> {
    let insert = format!(
        "INSERT INTO suite_metadata (kind, suite, name) SELECT {}, suite, name FROM UNNEST($1::text[], $2::text[]) AS v(suite, name)",
        kind.sql()
    );
    let (suites, names): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
    plain_insert::begin(c).await?;
    let plain = format!("{insert} RETURNING id, suite, name");
    let outcome = sqlx::query_as(&plain).bind(&suites).bind(&names).fetch_all(&mut *c).await;
    let rows: Vec<NameRow> = match plain_insert::settle(c, outcome).await? {
        Some(rows) => rows,
        None => {
            let sql = format!("{insert} ON CONFLICT DO NOTHING RETURNING id, suite, name");
            sqlx::query_as(&sql).bind(&suites).bind(&names).fetch_all(&mut *c).await?
        }
    };
    let mut ids = vec![None; keys.len()];
    let index: HashMap<(&str, &str), usize> = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    for (id, suite, name) in rows {
        if let Some(&i) = index.get(&(suite.as_str(), name.as_str())) {
            ids[i] = Some(id);
        }
    }
    Ok(ids)
}

/// Puts found ids into `ids`, at their positions.
fn place(found: Vec<Found>, ids: &mut [Option<i64>]) {
    for (position, id) in found {
        if let Some(slot) = ids.get_mut(position as usize) {
            *slot = Some(id);
        }
    }
}

/// The positions of `ids` still `None`, and their keys.
fn unresolved<'k>(keys: &Keys<'k>, ids: &[Option<i64>]) -> (Vec<usize>, Vec<(&'k str, &'k str)>) {
    let positions: Vec<usize> = (0..keys.len()).filter(|&i| ids[i].is_none()).collect();
    let unresolved_keys = positions.iter().map(|&i| keys[i]).collect();
    (positions, unresolved_keys)
}

impl Store {
    /// The ids of interned names at name epoch `epoch`, from the name cache
    /// or else the database, outside any write transaction. `None` where a
    /// name is not interned yet.
    pub(crate) async fn resolve_names(
        &self,
        epoch: i64,
        kind: NameKind,
        keys: &Keys<'_>,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let mut ids = self.name_cache().get(epoch, kind, keys);
        let (misses, miss_keys) = unresolved(keys, &ids);
        if misses.is_empty() {
            return Ok(ids);
        }
        let found = self.lookup_names(kind, &miss_keys).await?;
        self.name_cache().put(epoch, kind, &miss_keys, &found);
        for (i, id) in misses.into_iter().zip(found) {
            ids[i] = id;
        }
        Ok(ids)
    }

    /// Looks up the ids of interned names in the database, outside any
    /// write transaction. `None` where a name is not interned yet.
    pub(crate) async fn lookup_names(&self, kind: NameKind, keys: &Keys<'_>) -> Result<Vec<Option<i64>>, StoreError> {
        let mut ids = vec![None; keys.len()];
        if keys.is_empty() {
            return Ok(ids);
        }
        let found = match self.engine() {
            crate::db::Engine::Sqlite { lookup, .. } => select_sqlite(lookup, kind, keys).await?,
            crate::db::Engine::Postgres(pool) => select_postgres(pool, kind, keys).await?,
        };
        place(found, &mut ids);
        Ok(ids)
    }
}

impl Store {
    /// The current name epoch (see `name_epoch` in the schema).
    pub(crate) async fn name_epoch(&self) -> Result<i64, StoreError> {
        Ok(
            with_reader!(self, pool => sqlx::query_scalar("SELECT epoch FROM name_epoch WHERE id = 1").fetch_one(pool).await)?,
        )
    }
}

/// Makes `ids`, looked up at name epoch `epoch`, safe to use in `tx`: if
/// names were deleted since, looks them all up again. On PostgreSQL the
/// epoch row is share-locked until `tx` ends, so no name can be deleted
/// before the rows referring to them are committed. Returns the epoch
/// `ids` are valid at.
pub(crate) async fn revalidate(
    tx: &mut WriteTx,
    epoch: i64,
    kind: NameKind,
    keys: &Keys<'_>,
    ids: &mut [Option<i64>],
) -> Result<i64, StoreError> {
    let current: i64 = match &mut tx.tx {
        EngineTx::Sqlite(c) => {
            sqlx::query_scalar("SELECT epoch FROM name_epoch WHERE id = 1").fetch_one(&mut **c).await?
        }
        EngineTx::Postgres(c) => {
            sqlx::query_scalar("SELECT epoch FROM name_epoch WHERE id = 1 FOR SHARE").fetch_one(&mut **c).await?
        }
    };
    if current != epoch {
        ids.fill(None);
        let found = with_tx!(tx, c => c.select_names(kind, keys).await)?;
        place(found, ids);
    }
    Ok(current)
}

/// Bumps the name epoch, in the transaction that is about to delete names.
pub(crate) async fn bump_name_epoch(tx: &mut WriteTx) -> Result<(), StoreError> {
    with_tx!(tx, c => sqlx::query("UPDATE name_epoch SET epoch = epoch + 1 WHERE id = 1").execute(&mut *c).await.map(|_| ()))?;
    Ok(())
}

/// Interns the names of `keys` whose id is still `None`, inside `tx`, and
/// fills in their ids (also for names another writer interned meanwhile).
pub(crate) async fn intern_missing(
    tx: &mut WriteTx,
    kind: NameKind,
    keys: &Keys<'_>,
    ids: &mut [Option<i64>],
) -> Result<(), StoreError> {
    let (todo, todo_keys) = unresolved(keys, ids);
    if todo.is_empty() {
        return Ok(());
    }
    let inserted = with_tx!(tx, c => c.insert_names(kind, &todo_keys).await)?;
    for (i, id) in todo.into_iter().zip(inserted) {
        ids[i] = id;
    }
    let (raced, raced_keys) = unresolved(keys, ids);
    if !raced.is_empty() {
        let found = with_tx!(tx, c => c.select_names(kind, &raced_keys).await)?;
        for (position, id) in found {
            ids[raced[position as usize]] = Some(id);
        }
    }
    match unresolved(keys, ids).1.first() {
        Some((suite, name)) => Err(StoreError::Invalid(format!("could not intern name {suite}/{name}"))),
        None => Ok(()),
    }
}

/// Name interning on either engine's connection.
trait EngineNames {
    /// Inserts names not interned yet; their ids, aligned with `keys`
    /// (`None` for a name to look up instead).
    async fn insert_names(&mut self, kind: NameKind, keys: &Keys<'_>) -> Result<Vec<Option<i64>>, sqlx::Error>;
    async fn select_names(&mut self, kind: NameKind, keys: &Keys<'_>) -> Result<Vec<Found>, sqlx::Error>;
}

impl EngineNames for sqlx::SqliteConnection {
    async fn insert_names(&mut self, kind: NameKind, keys: &Keys<'_>) -> Result<Vec<Option<i64>>, sqlx::Error> {
        insert_sqlite(self, kind, keys).await
    }
    async fn select_names(&mut self, kind: NameKind, keys: &Keys<'_>) -> Result<Vec<Found>, sqlx::Error> {
        select_sqlite(self, kind, keys).await
    }
}

impl EngineNames for sqlx::PgConnection {
    async fn insert_names(&mut self, kind: NameKind, keys: &Keys<'_>) -> Result<Vec<Option<i64>>, sqlx::Error> {
        insert_postgres(self, kind, keys).await
    }
    async fn select_names(&mut self, kind: NameKind, keys: &Keys<'_>) -> Result<Vec<Found>, sqlx::Error> {
        select_postgres(self, kind, keys).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        assert_eq!(values_placeholders(2, 2), "(?,?),(?,?)");
        assert_eq!(values_placeholders(3, 1), "(?,?,?)");
        assert_eq!(list_placeholders(3), "?,?,?");
    }
}
