//! Test support (feature `testing`): a fresh database per test, on either
//! engine, and helpers to look at every table.
//!
//! PostgreSQL tests use the server at `SQUADRON_TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`): each test
//! creates its own database there and drops it when done.

use std::time::Duration;

use crate::blob::BlobStore;
use crate::db::{Engine, Migrations};
use crate::Store;

/// Runs the async test body once on SQLite and once on PostgreSQL, as
/// `<name>::sqlite` and `<name>::postgres`.
#[macro_export]
macro_rules! both_engines {
    ($(async fn $name:ident($db:ident: TestDb) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $db = $crate::testing::TestDb::sqlite().await;
                $body
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let $db = $crate::testing::TestDb::postgres().await;
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

/// A fresh, migrated database and blob store, removed when dropped.
pub struct TestDb {
    /// The store.
    pub store: Store,
    /// A blob store in a temporary directory.
    pub blobs: BlobStore,
    /// The database URL (to open more connections, e.g. from a child process).
    pub url: String,
    /// The temporary directory (SQLite file, blobs).
    pub dir: tempfile::TempDir,
    postgres_database: Option<String>,
}

impl TestDb {
    /// A fresh SQLite database in a temporary directory.
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("squadron.db").display());
        Self::open(url, dir, None).await
    }

    /// A fresh PostgreSQL database on the test server.
    pub async fn postgres() -> TestDb {
        let name = format!("squadron_test_{}", uuid::Uuid::new_v4().simple());
        let admin = postgres_admin_url();
        let pool = sqlx::PgPool::connect(&admin).await.expect("PostgreSQL for tests is reachable");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await.expect("create test database");
        pool.close().await;
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        let dir = tempfile::tempdir().expect("temporary directory");
        Self::open(url, dir, Some(name)).await
    }

    async fn open(url: String, dir: tempfile::TempDir, postgres_database: Option<String>) -> TestDb {
        let store = Store::open(&url, Migrations::Apply).await.expect("open and migrate the test database");
        let blobs = BlobStore::open(dir.path().join("blobs")).expect("blob store");
        TestDb { store, blobs, url, dir, postgres_database }
    }

    /// Creates group `g` with public project `p`; returns the project's id.
    pub async fn public_project(&self) -> i64 {
        let group = self.store.create_group("g", None).await.expect("create group");
        let project =
            crate::projects::NewProject { group_id: group.id, slug: "p", is_public: true, ..Default::default() };
        self.store.create_project(project).await.expect("create project").id
    }

    /// Row counts of every table, by table name.
    pub async fn table_counts(&self) -> Vec<(String, i64)> {
        table_counts(&self.store).await
    }

    /// Runs one SQL statement (for tests that need a state no API makes).
    pub async fn execute(&self, sql: &str) -> u64 {
        match self.store.engine() {
            Engine::Sqlite { writer, .. } => sqlx::query(sql).execute(writer).await.expect(sql).rows_affected(),
            Engine::Postgres(pool) => sqlx::query(sql).execute(pool).await.expect(sql).rows_affected(),
        }
    }

    /// Runs a query returning one text value.
    pub async fn text(&self, sql: &str) -> String {
        match self.store.engine() {
            Engine::Sqlite { reader, .. } => sqlx::query_scalar(sql).fetch_one(reader).await.expect(sql),
            Engine::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql),
        }
    }

    /// Runs a query returning one integer.
    pub async fn scalar(&self, sql: &str) -> i64 {
        match self.store.engine() {
            Engine::Sqlite { reader, .. } => sqlx::query_scalar(sql).fetch_one(reader).await.expect("query"),
            Engine::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.expect("query"),
        }
    }
}

/// Row counts of every table of the store, by table name.
pub async fn table_counts(store: &Store) -> Vec<(String, i64)> {
    let tables: Vec<String> = match store.engine() {
        Engine::Sqlite { reader, .. } => sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%' AND name NOT LIKE '_sqlx%' ORDER BY name",
        )
        .fetch_all(reader)
        .await
        .expect("list tables"),
        Engine::Postgres(pool) => sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE '_sqlx%' ORDER BY tablename",
        )
        .fetch_all(pool)
        .await
        .expect("list tables"),
    };
    let mut counts = Vec::new();
    for table in tables {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let n: i64 = match store.engine() {
            Engine::Sqlite { reader, .. } => sqlx::query_scalar(&sql).fetch_one(reader).await.expect("count"),
            Engine::Postgres(pool) => sqlx::query_scalar(&sql).fetch_one(pool).await.expect("count"),
        };
        counts.push((table, n));
    }
    counts
}

impl Drop for TestDb {
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
                if let Ok(pool) =
                    sqlx::postgres::PgPoolOptions::new().acquire_timeout(Duration::from_secs(10)).connect(&admin).await
                {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(&sql).execute(&pool).await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}
