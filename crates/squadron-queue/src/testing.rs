//! Test support (feature `testing`): scratch databases on either engine,
//! and a queue on one.
//!
//! PostgreSQL scratch databases live on the server at
//! `SQUADRON_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`): each is created for one
//! test and dropped when it ends.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::{install_sqlite_wake, QueueDb, Wake};

/// Runs the async test body once on SQLite and once on PostgreSQL, as
/// `<name>::sqlite` and `<name>::postgres`, with `$db` bound to
/// `<$ty>::sqlite().await` and `<$ty>::postgres().await`.
#[macro_export]
macro_rules! both_engines {
    ($ty:ty; $(async fn $name:ident($db:ident) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $db = <$ty>::sqlite().await;
                $body
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let $db = <$ty>::postgres().await;
                $body
            }
        }
    )*};
}

/// The PostgreSQL server tests use.
pub fn postgres_admin_url() -> String {
    std::env::var("SQUADRON_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// An empty database for one test, removed when dropped: a SQLite file in a
/// temporary directory, or a database of its own on the PostgreSQL server.
pub struct ScratchDatabase {
    /// Its URL.
    pub url: String,
    /// A temporary directory (the SQLite file, anything else a test keeps).
    pub dir: tempfile::TempDir,
    postgres_database: Option<String>,
}

impl ScratchDatabase {
    /// A SQLite file in a fresh temporary directory.
    pub fn sqlite() -> ScratchDatabase {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("squadron.db").display());
        ScratchDatabase { url, dir, postgres_database: None }
    }

    /// A new database on the test server.
    pub async fn postgres() -> ScratchDatabase {
        let name = format!("squadron_test_{}", uuid::Uuid::new_v4().simple());
        let admin = postgres_admin_url();
        let pool = sqlx::PgPool::connect(&admin).await.expect("PostgreSQL for tests is reachable");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await.expect("create test database");
        pool.close().await;
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        let dir = tempfile::tempdir().expect("temporary directory");
        ScratchDatabase { url, dir, postgres_database: Some(name) }
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let Some(name) = self.postgres_database.take() else {
            return;
        };
        // Drop the database from a thread of its own: this may run inside
        // the test's runtime, which cannot be blocked on.
        let admin = postgres_admin_url();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                if let Ok(pool) = PgPoolOptions::new().acquire_timeout(Duration::from_secs(10)).connect(&admin).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(&sql).execute(&pool).await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

/// A scratch database holding only the queue's tables.
pub struct TestQueueDb {
    /// The queue's handle on it.
    pub db: QueueDb,
    /// The database itself.
    pub scratch: ScratchDatabase,
}

impl TestQueueDb {
    /// On SQLite.
    pub async fn sqlite() -> TestQueueDb {
        TestQueueDb::open(ScratchDatabase::sqlite()).await
    }

    /// On PostgreSQL.
    pub async fn postgres() -> TestQueueDb {
        TestQueueDb::open(ScratchDatabase::postgres().await).await
    }

    async fn open(scratch: ScratchDatabase) -> TestQueueDb {
        let db = connect(&scratch.url).await;
        match &db {
            QueueDb::Sqlite { writer, .. } => db.migrations().run(writer).await.expect("migrate"),
            QueueDb::Postgres(pool) => db.migrations().run(pool).await.expect("migrate"),
        }
        TestQueueDb { db, scratch }
    }

    /// Runs one statement; returns the rows it changed.
    pub async fn execute(&self, sql: &str) -> u64 {
        match &self.db {
            QueueDb::Sqlite { writer, .. } => sqlx::query(sql).execute(writer).await.expect(sql).rows_affected(),
            QueueDb::Postgres(pool) => sqlx::query(sql).execute(pool).await.expect(sql).rows_affected(),
        }
    }

    /// Runs a query returning one integer.
    pub async fn scalar(&self, sql: &str) -> i64 {
        match &self.db {
            QueueDb::Sqlite { reader, .. } => sqlx::query_scalar(sql).fetch_one(reader).await.expect(sql),
            QueueDb::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql),
        }
    }
}

/// The queue's handle on the database at `url`, with pools shaped as the
/// store's (one SQLite writer connection that wakes in-process workers).
pub async fn connect(url: &str) -> QueueDb {
    if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url)
            .expect("SQLite URL")
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30));
        let wake = Wake::default();
        let on_connect = wake.clone();
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .after_connect(move |conn, _| {
                let wake = on_connect.clone();
                Box::pin(async move { install_sqlite_wake(conn, wake).await })
            })
            .connect_with(options.clone())
            .await
            .expect("SQLite writer");
        let reader = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.expect("SQLite readers");
        QueueDb::Sqlite { writer, reader, wake }
    } else {
        QueueDb::Postgres(PgPoolOptions::new().max_connections(16).connect(url).await.expect("PostgreSQL pool"))
    }
}
