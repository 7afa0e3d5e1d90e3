//! SQL built at run time for either engine: text with placeholders and
//! typed values, rendered as `?` (SQLite) or `$n` (PostgreSQL) when run.
//! Used by read queries whose shape depends on the request (filters,
//! pagination).

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::FromRow;

use crate::db::Engine;
use crate::{Store, StoreError};

/// Stands for a placeholder in [`Sql`] text until it is rendered.
const PLACEHOLDER: char = '\u{1}';

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
    /// A boolean.
    Bool(bool),
    /// A floating-point number.
    Float(f64),
    /// A point in time.
    Time(DateTime<Utc>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<DateTime<Utc>> for Value {
    fn from(v: DateTime<Utc>) -> Self {
        Value::Time(v)
    }
}

/// A statement being built.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sql {
    text: String,
    values: Vec<Value>,
}

impl Sql {
    /// Starts a statement.
    pub fn new(text: &str) -> Sql {
        Sql { text: text.to_string(), values: Vec::new() }
    }

    /// Appends text (which must not come from the request).
    pub fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `value`.
    pub fn bind(&mut self, value: impl Into<Value>) -> &mut Sql {
        self.text.push(PLACEHOLDER);
        self.values.push(value.into());
        self
    }

    /// Appends a placeholder bound to `value`, or `NULL` for `None`.
    pub fn bind_optional(&mut self, value: Option<impl Into<Value>>) -> &mut Sql {
        match value {
            Some(v) => self.bind(v),
            None => self.push("NULL"),
        }
    }

    /// Appends `(v1, v2, …)` for a list of values.
    pub fn bind_list(&mut self, values: impl IntoIterator<Item = Value>) -> &mut Sql {
        self.text.push('(');
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.bind(v);
        }
        self.text.push(')');
        self
    }

    /// Appends another statement's text and values.
    pub fn append(&mut self, other: &Sql) -> &mut Sql {
        self.text.push_str(&other.text);
        self.values.extend(other.values.iter().cloned());
        self
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The text with the engine's placeholders.
    fn render(&self, numbered: bool) -> String {
        let mut out = String::with_capacity(self.text.len() + self.values.len() * 3);
        let mut n = 0;
        for c in self.text.chars() {
            if c == PLACEHOLDER {
                n += 1;
                if numbered {
                    out.push('$');
                    out.push_str(&n.to_string());
                } else {
                    out.push('?');
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// Binds every value of `sql` to `query`.
macro_rules! bind_values {
    ($query:expr, $values:expr) => {{
        let mut query = $query;
        for value in $values {
            query = match value {
                Value::Int(v) => query.bind(*v),
                Value::Text(v) => query.bind(v.as_str()),
                Value::Bool(v) => query.bind(*v),
                Value::Float(v) => query.bind(*v),
                Value::Time(v) => query.bind(*v),
            };
        }
        query
    }};
}

/// Column assignments for an update: `(column, value)`, `None` being NULL.
/// Column names come from code, never from a request.
pub type Assignments = Vec<(&'static str, Option<Value>)>;

/// Appends `col = ?, col2 = NULL, …` for `set`.
fn push_assignments(sql: &mut Sql, set: &Assignments) {
    for (i, (column, value)) in set.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push(column).push(" = ").bind_optional(value.clone());
    }
}

/// A row type that both engines can decode.
pub trait Row: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin + 'static {}
impl<T> Row for T where T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin + 'static {}

impl Store {
    /// Runs a read query and decodes every row.
    pub async fn fetch_all<T: Row>(&self, sql: &Sql) -> Result<Vec<T>, StoreError> {
        Ok(match self.engine() {
            Engine::Sqlite { reader, .. } => {
                let text = sql.render(false);
                bind_values!(sqlx::query_as::<_, T>(&text), &sql.values).fetch_all(reader).await?
            }
            Engine::Postgres(pool) => {
                let text = sql.render(true);
                bind_values!(sqlx::query_as::<_, T>(&text), &sql.values).fetch_all(pool).await?
            }
        })
    }

    /// Runs a read query expected to give at most one row.
    pub async fn fetch_optional<T: Row>(&self, sql: &Sql) -> Result<Option<T>, StoreError> {
        Ok(self.fetch_all(sql).await?.into_iter().next())
    }

    /// Runs a statement in a write transaction of its own; returns how many
    /// rows it changed.
    pub async fn execute(&self, sql: &Sql) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let changed = execute_in(&mut tx, sql).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// Inserts a row into `table` (a table name from code) with the given
    /// fields; returns its id.
    pub async fn insert_row(&self, table: &'static str, set: &Assignments) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let id = tx.fetch_integer(&row_insert(table, set)).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Deletes the row `id` of `table` (a table name from code); returns
    /// whether there was one.
    pub async fn delete_row(&self, table: &'static str, id: i64) -> Result<bool, StoreError> {
        let mut sql = Sql::new(&format!("DELETE FROM {table} WHERE id = "));
        sql.bind(id);
        Ok(self.execute(&sql).await? > 0)
    }

    /// Sets fields of the row `id` of `table` (a table name from code).
    pub async fn update_row(&self, table: &'static str, id: i64, set: &Assignments) -> Result<(), StoreError> {
        if !set.is_empty() {
            self.execute(&row_update(table, id, set)).await?;
        }
        Ok(())
    }

    /// Runs a query giving one integer (a count).
    pub async fn fetch_count(&self, sql: &Sql) -> Result<i64, StoreError> {
        let row: Option<(i64,)> = self.fetch_optional(sql).await?;
        Ok(row.map_or(0, |(n,)| n))
    }
}

/// `UPDATE <table> SET … WHERE id = <id>` (table and columns from code).
pub fn row_update(table: &'static str, id: i64, set: &Assignments) -> Sql {
    let mut sql = Sql::new(&format!("UPDATE {table} SET "));
    push_assignments(&mut sql, set);
    sql.push(" WHERE id = ").bind(id);
    sql
}

/// `INSERT INTO <table> (…) VALUES (…) RETURNING id` (table and columns
/// from code).
fn row_insert(table: &'static str, set: &Assignments) -> Sql {
    let columns: Vec<&str> = set.iter().map(|(c, _)| *c).collect();
    let mut sql = Sql::new(&format!("INSERT INTO {table} ({}) VALUES (", columns.join(", ")));
    for (i, (_, value)) in set.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind_optional(value.clone());
    }
    sql.push(") RETURNING id");
    sql
}

/// Runs a statement in a write transaction.
pub(crate) async fn execute_in(tx: &mut crate::db::WriteTx, sql: &Sql) -> Result<u64, StoreError> {
    Ok(match &mut tx.tx {
        crate::db::EngineTx::Sqlite(c) => {
            let text = sql.render(false);
            bind_values!(sqlx::query(&text), &sql.values).execute(&mut **c).await?.rows_affected()
        }
        crate::db::EngineTx::Postgres(c) => {
            let text = sql.render(true);
            bind_values!(sqlx::query(&text), &sql.values).execute(&mut **c).await?.rows_affected()
        }
    })
}

/// Runs a read query in a write transaction.
pub(crate) async fn fetch_all_in<T: Row>(tx: &mut crate::db::WriteTx, sql: &Sql) -> Result<Vec<T>, StoreError> {
    Ok(match &mut tx.tx {
        crate::db::EngineTx::Sqlite(c) => {
            let text = sql.render(false);
            bind_values!(sqlx::query_as::<_, T>(&text), &sql.values).fetch_all(&mut **c).await?
        }
        crate::db::EngineTx::Postgres(c) => {
            let text = sql.render(true);
            bind_values!(sqlx::query_as::<_, T>(&text), &sql.values).fetch_all(&mut **c).await?
        }
    })
}

/// Runs a query giving one integer (such as `INSERT … RETURNING id`) in a
/// write transaction.
pub(crate) async fn fetch_id_in(tx: &mut crate::db::WriteTx, sql: &Sql) -> Result<i64, StoreError> {
    Ok(match &mut tx.tx {
        crate::db::EngineTx::Sqlite(c) => {
            let text = sql.render(false);
            bind_values!(sqlx::query_scalar(&text), &sql.values).fetch_one(&mut **c).await?
        }
        crate::db::EngineTx::Postgres(c) => {
            let text = sql.render(true);
            bind_values!(sqlx::query_scalar(&text), &sql.values).fetch_one(&mut **c).await?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_for_each_engine() {
        let mut sql = Sql::new("SELECT a FROM t WHERE b = ");
        sql.bind(1).push(" AND c IN ").bind_list([Value::from("x"), Value::from("y")]);
        assert_eq!(sql.render(false), "SELECT a FROM t WHERE b = ? AND c IN (?, ?)");
        assert_eq!(sql.render(true), "SELECT a FROM t WHERE b = $1 AND c IN ($2, $3)");
        assert_eq!(sql.values.len(), 3);
    }
}
