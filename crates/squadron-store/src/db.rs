//! Connecting to either engine, migrations, and write transactions that
//! measure how long they hold the database.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migrate, Migration, MigrationSource, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, PgPool, Postgres, Sqlite, SqlitePool, Transaction};
use squadron_queue::{install_sqlite_wake, Conn, QueueDb, StepTx, Wake};

use crate::ingest::name_cache::NameCache;
use crate::StoreError;

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// Batches of one submission written at once on PostgreSQL.
const POSTGRES_WRITE_PARALLELISM: usize = 2;

/// How much of the SQLite file the name-lookup connections map into memory.
const LOOKUP_MMAP_BYTES: &str = "268435456";

/// The page cache of each SQLite read connection (KiB, negative as SQLite
/// takes it).
const READER_CACHE: &str = "-8192";

/// Rows a SQLite reader's thread may run ahead of the task reading them.
/// sqlx's default (50) makes the two threads hand over every few rows of
/// a 1,000-row page; each hand-over is a wake-up and a context switch.
const READER_ROW_BUFFER: usize = 256;

/// How long a writer waits for SQLite's lock held by another process.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The two engines. SQLite has one writer, so the store keeps a pool of one
/// connection for writes (which serialises writers inside the process) and
/// a pool of readers (WAL lets them read while a write is in progress).
pub(crate) enum Engine {
    Sqlite {
        writer: SqlitePool,
        reader: SqlitePool,
        /// Readers for ingestion's name lookups (see `connect_with`).
        lookup: SqlitePool,
        /// Wakes this process's workers when a write enqueued tasks.
        wake: Wake,
    },
    Postgres(PgPool),
}

/// Runs `$body` once per engine, with `$pool` bound to that engine's pool
/// for reads. The body is compiled for both engines.
macro_rules! with_reader {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store.engine() {
            $crate::db::Engine::Sqlite { reader: $pool, .. } => $body,
            $crate::db::Engine::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` once per engine, with `$conn` bound to the write
/// transaction's connection (use `&mut *$conn` for each query).
macro_rules! with_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match &mut $tx.tx {
            $crate::db::EngineTx::Sqlite(t) => {
                let $conn = &mut **t;
                $body
            }
            $crate::db::EngineTx::Postgres(t) => {
                let $conn = &mut **t;
                $body
            }
        }
    };
}

/// Handle on the database. Cheap to clone; clones share the pools.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    url: String,
    stats: HoldStats,
    names: NameCache,
}

#[derive(Default)]
struct HoldStats {
    longest_micros: AtomicU64,
    transactions: AtomicU64,
}

/// Figures about the store's write transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// The longest time one write transaction held the database.
    pub longest_hold: Duration,
    /// How many write transactions ended.
    pub transactions: u64,
}

/// What to do when the schema is behind this binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrations {
    /// Apply pending migrations.
    Apply,
    /// Refuse to open a database with pending migrations.
    Require,
}

/// Connections a process keeps to PostgreSQL at most, unless configured.
pub const DEFAULT_POSTGRES_CONNECTIONS: u32 = 16;

impl Store {
    /// Opens the database at `url` (`sqlite://PATH` or `postgres://…`),
    /// applying or requiring migrations as asked.
    pub async fn open(url: &str, migrations: Migrations) -> Result<Store, StoreError> {
        Store::open_sized(url, migrations, DEFAULT_POSTGRES_CONNECTIONS).await
    }

    /// [`Store::open`] with at most `postgres_connections` connections to
    /// PostgreSQL in the pool (SQLite's pools are fixed).
    pub async fn open_sized(url: &str, migrations: Migrations, postgres_connections: u32) -> Result<Store, StoreError> {
        let store = Store::connect_with(url, migrations == Migrations::Apply, postgres_connections).await?;
        match migrations {
            Migrations::Apply => {
                store.migrate().await?;
            }
            Migrations::Require => {
                let count = store.pending_migrations().await?;
                if count > 0 {
                    return Err(StoreError::PendingMigrations { url: store.inner.url.clone(), count });
                }
            }
        }
        Ok(store)
    }

    /// Connects without touching the schema (creating a missing SQLite
    /// database file).
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, true, DEFAULT_POSTGRES_CONNECTIONS).await
    }

    async fn connect_with(url: &str, create_sqlite_file: bool, postgres_connections: u32) -> Result<Store, StoreError> {
        let engine = if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(create_sqlite_file)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true)
                // Temporary storage stays in files (the default): a sort
                // over a run of millions of tests (its status recount)
                // spills to disk instead of growing the process by GBs.
                .pragma("cache_size", "-65536");
            let wake = Wake::default();
            let wake_on_connect = wake.clone();
            let writer = SqlitePoolOptions::new()
                .after_connect(move |conn, _| Box::pin(install_sqlite_wake(conn, wake_on_connect.clone())))
                .after_release(|conn, _| Box::pin(release_outside_transaction(conn)))
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(600))
                .connect_with(options.clone())
                .await?;
            let reader = SqlitePoolOptions::new()
                .after_release(|conn, _| Box::pin(release_outside_transaction(conn)))
                .max_connections(8)
                .connect_with(options.clone().pragma("cache_size", READER_CACHE).row_buffer_size(READER_ROW_BUFFER))
                .await?;
            // A reader's page cache is reset whenever another connection
            // changed the database since its last read: every ingested batch.
            // The name lookups of ingestion, which read the name index again
            // for each batch, go through a memory map instead of copying its
            // pages in again. They get connections of their own so that only
            // that index, not every page other reads touch, is mapped.
            let lookup = SqlitePoolOptions::new()
                .after_release(|conn, _| Box::pin(release_outside_transaction(conn)))
                .max_connections(2)
                .connect_with(options.pragma("mmap_size", LOOKUP_MMAP_BYTES).pragma("cache_size", READER_CACHE))
                .await?;
            Engine::Sqlite { writer, reader, lookup, wake }
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .after_release(|conn, _| Box::pin(release_outside_transaction(conn)))
                .max_connections(postgres_connections.max(2))
                .acquire_timeout(Duration::from_secs(60))
                .connect_with(options)
                .await?;
            Engine::Postgres(pool)
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        Ok(Store {
            inner: Arc::new(Inner {
                engine,
                url: redact_url(url),
                stats: HoldStats::default(),
                names: NameCache::new(),
            }),
        })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The ids of recently used interned names.
    pub(crate) fn name_cache(&self) -> &NameCache {
        &self.inner.names
    }

    /// `sqlite` or `postgres`.
    pub fn engine_name(&self) -> &'static str {
        match self.engine() {
            Engine::Sqlite { .. } => "sqlite",
            Engine::Postgres(_) => "postgres",
        }
    }

    /// How many batches of one submission are written at once: SQLite has
    /// a single writer; PostgreSQL writes two (this machine kind has two
    /// cores, and the database server does the work).
    pub(crate) fn write_parallelism(&self) -> usize {
        match self.engine() {
            Engine::Sqlite { .. } => 1,
            Engine::Postgres(_) => POSTGRES_WRITE_PARALLELISM,
        }
    }

    /// The database URL without credentials.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The queue's handle on this database: the same pools, so a task is
    /// enqueued in the transaction of the writes that call for it.
    pub fn queue_db(&self) -> QueueDb {
        match self.engine() {
            Engine::Sqlite { writer, reader, wake, .. } => {
                QueueDb::Sqlite { writer: writer.clone(), reader: reader.clone(), wake: wake.clone() }
            }
            Engine::Postgres(pool) => QueueDb::Postgres(pool.clone()),
        }
    }

    /// Every migration of this engine: the store's, then the queue's (whose
    /// tables live in the same database), in one history.
    async fn migrator(&self) -> Result<Migrator, StoreError> {
        let (store, queue) = match self.engine() {
            Engine::Sqlite { .. } => (&SQLITE_MIGRATOR, &squadron_queue::SQLITE_MIGRATIONS),
            Engine::Postgres(_) => (&POSTGRES_MIGRATOR, &squadron_queue::POSTGRES_MIGRATIONS),
        };
        let all = store.iter().chain(queue.iter()).cloned().collect();
        Ok(Migrator::new(MigrationList(all)).await?)
    }

    /// Applies pending migrations; returns how many were pending.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let pending = self.pending_migrations().await?;
        let migrator = self.migrator().await?;
        match self.engine() {
            Engine::Sqlite { writer, .. } => migrator.run(writer).await?,
            Engine::Postgres(pool) => migrator.run(pool).await?,
        }
        Ok(pending)
    }

    /// How many migrations this binary has that the database lacks. Reads
    /// only: a database never migrated is left as it is.
    pub async fn pending_migrations(&self) -> Result<usize, StoreError> {
        let applied: HashSet<i64> = match self.engine() {
            Engine::Sqlite { writer, .. } => {
                let mut conn = writer.acquire().await?;
                let exists: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
                )
                .fetch_one(&mut *conn)
                .await?;
                if exists {
                    conn.list_applied_migrations().await?
                } else {
                    Vec::new()
                }
            }
            Engine::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                    .fetch_one(&mut *conn)
                    .await?;
                if exists {
                    conn.list_applied_migrations().await?
                } else {
                    Vec::new()
                }
            }
        }
        .into_iter()
        .map(|m| m.version)
        .collect();
        Ok(self
            .migrator()
            .await?
            .iter()
            .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
            .count())
    }

    /// Starts a write transaction. On SQLite it takes the write lock at
    /// once (`BEGIN IMMEDIATE`), so it never fails later on lock upgrade.
    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let tx = match self.engine() {
            Engine::Sqlite { writer, .. } => EngineTx::Sqlite(writer.begin_with("BEGIN IMMEDIATE").await?),
            Engine::Postgres(pool) => EngineTx::Postgres(pool.begin().await?),
        };
        Ok(WriteTx { tx, _hold: HoldGuard { started: Instant::now(), store: self.clone() } })
    }

    /// Figures about write transactions so far.
    pub fn write_stats(&self) -> WriteStats {
        let s = &self.inner.stats;
        WriteStats {
            longest_hold: Duration::from_micros(s.longest_micros.load(Ordering::Relaxed)),
            transactions: s.transactions.load(Ordering::Relaxed),
        }
    }

    /// Forgets the longest hold seen so far (to measure a window).
    pub fn reset_write_stats(&self) {
        self.inner.stats.longest_micros.store(0, Ordering::Relaxed);
    }

    fn record_hold(&self, held: Duration) {
        let s = &self.inner.stats;
        s.longest_micros.fetch_max(held.as_micros() as u64, Ordering::Relaxed);
        s.transactions.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs one administrative statement outside any transaction (such as
    /// `CREATE DATABASE`, for scratch databases).
    pub async fn execute_ddl(&self, sql: &str) -> Result<(), StoreError> {
        match self.engine() {
            Engine::Sqlite { writer, .. } => sqlx::raw_sql(sql).execute(writer).await.map(|_| ())?,
            Engine::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(|_| ())?,
        }
        Ok(())
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_reader!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match self.engine() {
            Engine::Sqlite { writer, reader, lookup, .. } => {
                writer.close().await;
                reader.close().await;
                lookup.close().await;
            }
            Engine::Postgres(pool) => pool.close().await,
        }
    }
}

/// Decides whether a connection going back to its pool may be reused.
///
/// A future dropped at the wrong moment (a cancelled request, an aborted
/// task) can leave a connection inside a transaction that no `Transaction`
/// value owns any more; sqlx would then refuse every later `BEGIN
/// IMMEDIATE` on SQLite's only writer connection. The ping runs any rollback
/// a dropped transaction queued; a connection still in a transaction after
/// it is closed instead of reused (closing rolls the transaction back).
async fn release_outside_transaction<C: Connection>(conn: &mut C) -> Result<bool, sqlx::Error> {
    conn.ping().await?;
    Ok(!conn.is_in_transaction())
}

/// Removes the password from a database URL for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Migrations gathered from several migrators into one history.
#[derive(Debug)]
struct MigrationList(Vec<Migration>);

impl MigrationSource<'static> for MigrationList {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move { Ok(self.0) })
    }
}

pub(crate) enum EngineTx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// A write transaction; its hold time is recorded when it ends, by commit,
/// or by being dropped (which rolls it back). A task's step commits its
/// writes in one, with its checkpoint and lease check ([`StepTx`]).
pub struct WriteTx {
    pub(crate) tx: EngineTx,
    _hold: HoldGuard,
}

/// Records a write transaction's hold time when dropped.
struct HoldGuard {
    started: Instant,
    store: Store,
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        self.store.record_hold(self.started.elapsed());
    }
}

impl WriteTx {
    /// Commits.
    pub async fn commit(self) -> Result<(), StoreError> {
        Ok(self.commit_engine().await?)
    }

    /// Runs a statement in this transaction; returns how many rows it
    /// changed.
    pub async fn execute(&mut self, sql: &crate::sql::Sql) -> Result<u64, StoreError> {
        crate::sql::execute_in(self, sql).await
    }

    /// Runs a read query in this transaction and decodes every row.
    pub async fn fetch_all<T: crate::sql::Row>(&mut self, sql: &crate::sql::Sql) -> Result<Vec<T>, StoreError> {
        crate::sql::fetch_all_in(self, sql).await
    }

    /// Runs a read query in this transaction and decodes its first row.
    pub async fn fetch_optional<T: crate::sql::Row>(&mut self, sql: &crate::sql::Sql) -> Result<Option<T>, StoreError> {
        Ok(self.fetch_all(sql).await?.into_iter().next())
    }

    /// Runs a query giving one integer in this transaction.
    pub async fn fetch_integer(&mut self, sql: &crate::sql::Sql) -> Result<i64, StoreError> {
        crate::sql::fetch_id_in(self, sql).await
    }

    async fn commit_engine(self) -> Result<(), sqlx::Error> {
        let WriteTx { tx, _hold } = self;
        match tx {
            EngineTx::Sqlite(t) => t.commit().await,
            EngineTx::Postgres(t) => t.commit().await,
        }
    }
}

impl StepTx for WriteTx {
    fn conn(&mut self) -> Conn<'_> {
        match &mut self.tx {
            EngineTx::Sqlite(t) => Conn::Sqlite(t),
            EngineTx::Postgres(t) => Conn::Postgres(t),
        }
    }

    async fn commit(self) -> Result<(), sqlx::Error> {
        self.commit_engine().await
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url as redact;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://./x.db"), "sqlite://./x.db");
    }
}
