//! The queue's handle on the database, the connection and transaction
//! types its callers lend it, and its migrations.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteOperation;
use sqlx::{PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool, Transaction};
use tokio::sync::watch;

use crate::QueueError;

/// The queue's migrations on SQLite. They number from 1001 so that they
/// can run beside the store's in one migration history.
pub static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
/// The queue's migrations on PostgreSQL (numbered as on SQLite).
pub static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// The database clock, in microseconds since the Unix epoch, as an SQL
/// expression: every time the queue stores comes from it, so workers on
/// different machines agree on lease expiry.
pub(crate) const NOW: &str = "(SELECT now_us FROM queue_clock)";

/// The queue's handle on the database: pools shared with the rest of the
/// process. Cheap to clone.
#[derive(Clone)]
pub enum QueueDb {
    /// SQLite has one writer: the queue writes through the process's single
    /// writer connection, so its claims queue up fairly behind other writes
    /// instead of spinning on SQLite's lock.
    Sqlite {
        /// The pool of one connection every write goes through.
        writer: SqlitePool,
        /// Connections for reads.
        reader: SqlitePool,
        /// Woken when a transaction that inserted tasks commits on `writer`
        /// (see [`install_sqlite_wake`]).
        wake: Wake,
    },
    /// PostgreSQL: one pool; workers are woken by `LISTEN/NOTIFY`.
    Postgres(PgPool),
}

impl QueueDb {
    /// `sqlite` or `postgres`.
    pub fn engine_name(&self) -> &'static str {
        match self {
            QueueDb::Sqlite { .. } => "sqlite",
            QueueDb::Postgres(_) => "postgres",
        }
    }

    /// Starts a write transaction (on SQLite, `BEGIN IMMEDIATE` on the
    /// writer connection, so it never fails later on lock upgrade).
    pub async fn begin(&self) -> Result<QueueTx, QueueError> {
        Ok(match self {
            QueueDb::Sqlite { writer, .. } => QueueTx::Sqlite(writer.begin_with("BEGIN IMMEDIATE").await?),
            QueueDb::Postgres(pool) => QueueTx::Postgres(pool.begin().await?),
        })
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), QueueError> {
        match self {
            QueueDb::Sqlite { reader, .. } => sqlx::query("SELECT 1").execute(reader).await.map(|_| ())?,
            QueueDb::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ())?,
        };
        Ok(())
    }

    /// The queue's migrations for this engine.
    pub fn migrations(&self) -> &'static Migrator {
        match self {
            QueueDb::Sqlite { .. } => &SQLITE_MIGRATIONS,
            QueueDb::Postgres(_) => &POSTGRES_MIGRATIONS,
        }
    }
}

/// A connection lent to the queue by its caller, usually inside the
/// caller's transaction: a task enqueued through it commits or rolls back
/// with the caller's own writes.
pub enum Conn<'c> {
    /// A SQLite connection.
    Sqlite(&'c mut SqliteConnection),
    /// A PostgreSQL connection.
    Postgres(&'c mut PgConnection),
}

/// Runs `$body` with `$c` bound to the engine's connection inside a
/// [`Conn`]; the body is compiled once per engine.
#[macro_export]
macro_rules! with_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::Conn::Sqlite($c) => $body,
            $crate::Conn::Postgres($c) => $body,
        }
    };
}

/// A transaction whose writes a step commits together with its checkpoint
/// and the check that the task's lease is still this worker's. The store's
/// write transactions implement it, and so do the queue's own
/// [`QueueTx`].
pub trait StepTx: Send {
    /// The transaction's connection.
    fn conn(&mut self) -> Conn<'_>;
    /// Commits the transaction.
    fn commit(self) -> impl std::future::Future<Output = Result<(), sqlx::Error>> + Send;
}

/// A write transaction on the queue's database.
pub enum QueueTx {
    /// On SQLite.
    Sqlite(Transaction<'static, Sqlite>),
    /// On PostgreSQL.
    Postgres(Transaction<'static, Postgres>),
}

impl StepTx for QueueTx {
    fn conn(&mut self) -> Conn<'_> {
        match self {
            QueueTx::Sqlite(tx) => Conn::Sqlite(tx),
            QueueTx::Postgres(tx) => Conn::Postgres(tx),
        }
    }

    async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            QueueTx::Sqlite(tx) => tx.commit().await,
            QueueTx::Postgres(tx) => tx.commit().await,
        }
    }
}

/// Wakes a process's idle claim loops when new work may be there. Each
/// wake bumps a counter, so a loop that was busy when it happened still
/// sees it before it next waits.
#[derive(Clone)]
pub struct Wake(Arc<watch::Sender<u64>>);

impl Default for Wake {
    fn default() -> Self {
        Wake(Arc::new(watch::Sender::new(0)))
    }
}

impl Wake {
    /// Wakes every loop waiting on this.
    pub fn wake(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every later wake.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// Makes `wake` fire whenever a transaction that inserted into `tasks`
/// commits on `conn`. Install it on the SQLite writer connection (its
/// pool's `after_connect`): a worker in the same process then starts a
/// task enqueued there at once instead of at its next poll.
pub async fn install_sqlite_wake(conn: &mut SqliteConnection, wake: Wake) -> Result<(), sqlx::Error> {
    let inserted = Arc::new(AtomicBool::new(false));
    let mut handle = conn.lock_handle().await?;
    let on_insert = inserted.clone();
    handle.set_update_hook(move |change| {
        if change.operation == SqliteOperation::Insert && change.table == "tasks" {
            on_insert.store(true, Ordering::Relaxed);
        }
    });
    let on_commit = inserted.clone();
    handle.set_commit_hook(move || {
        if on_commit.swap(false, Ordering::Relaxed) {
            wake.wake();
        }
        true
    });
    handle.set_rollback_hook(move || inserted.store(false, Ordering::Relaxed));
    Ok(())
}

/// Runs `$body` with `$c` bound to a connection that may write: on SQLite
/// inside a `BEGIN IMMEDIATE` transaction on the writer connection,
/// committed after the body; on PostgreSQL a pooled connection (each
/// statement its own transaction). Evaluates to the body's value; errors
/// propagate with `?`.
macro_rules! on_writer {
    ($db:expr, $c:ident => $body:expr) => {
        match $db {
            $crate::db::QueueDb::Sqlite { writer, .. } => {
                let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
                let out = {
                    let $c = &mut *tx;
                    $body
                };
                tx.commit().await?;
                out
            }
            $crate::db::QueueDb::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                let $c = &mut *conn;
                $body
            }
        }
    };
}
pub(crate) use on_writer;
