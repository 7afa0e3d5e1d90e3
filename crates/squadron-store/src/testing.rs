//! Test support (feature `testing`): a fresh database per test, on either
//! engine, and helpers to look at every table.
//!
//! PostgreSQL tests use the server at `SQUADRON_TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`): each test
//! creates its own database there and drops it when done.

/// The queue's two-engine test macro, for any test database type.
pub use squadron_queue::both_engines as both_engines_of;
pub use squadron_queue::testing::{postgres_admin_url, ScratchDatabase};

use crate::blob::BlobStore;
use crate::db::{Engine, Migrations};
use crate::Store;

/// Runs the async test body once on SQLite and once on PostgreSQL, as
/// `<name>::sqlite` and `<name>::postgres`, with a fresh [`TestDb`].
#[macro_export]
macro_rules! both_engines {
    ($(async fn $name:ident($db:ident: TestDb) $body:block)*) => {
        $crate::testing::both_engines_of! { $crate::testing::TestDb; $(async fn $name($db) $body)* }
    };
}

/// A fresh, migrated database and blob store, removed when dropped.
pub struct TestDb {
    /// The store.
    pub store: Store,
    /// A blob store in the scratch directory.
    pub blobs: BlobStore,
    /// The database URL (to open more connections, e.g. from a child process).
    pub url: String,
    /// The database, and a temporary directory (SQLite file, blobs).
    pub scratch: ScratchDatabase,
}

impl TestDb {
    /// A fresh SQLite database in a temporary directory.
    pub async fn sqlite() -> TestDb {
        Self::open(ScratchDatabase::sqlite()).await
    }

    /// A fresh PostgreSQL database on the test server.
    pub async fn postgres() -> TestDb {
        Self::open(ScratchDatabase::postgres().await).await
    }

    async fn open(scratch: ScratchDatabase) -> TestDb {
        let url = scratch.url.clone();
        let store = Store::open(&url, Migrations::Apply).await.expect("open and migrate the test database");
        let blobs = BlobStore::open(scratch.dir.path().join("blobs")).expect("blob store");
        TestDb { store, blobs, url, scratch }
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

impl TestDb {
    /// Runs `registry`'s kinds from `queues` (two at a time each, polling
    /// every 50 ms, short retry backoff) until `condition` (a count) is at
    /// least 1; after 20 s panics with what the tasks are doing.
    pub async fn run_tasks_until(&self, registry: squadron_queue::Registry, queues: &[&str], condition: &str) {
        use std::time::{Duration, Instant};
        let queue_db = self.store.queue_db();
        let mut config =
            squadron_queue::WorkerConfig::new(&queue_db, queues.iter().map(|q| (q.to_string(), 2)).collect());
        config.timing.poll = Duration::from_millis(50);
        config.backoff = squadron_queue::Backoff { base: Duration::from_millis(50), max: Duration::from_millis(200) };
        let worker = squadron_queue::Worker::new(
            queue_db.clone(),
            squadron_queue::Queue::default(),
            registry,
            config,
            squadron_queue::Metrics::default(),
        );
        let shutdown = squadron_queue::Shutdown::new();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.scalar(condition).await < 1 {
            if Instant::now() > deadline {
                let tasks = self
                    .text("SELECT COALESCE(STRING_AGG(kind || ' ' || state || ' ' || COALESCE(last_error, ''), '; '), '') FROM tasks")
                    .await;
                panic!("timed out waiting until {condition}; tasks: {tasks}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.signal();
        running.await.expect("the worker ran").expect("the worker stopped cleanly");
    }
}
