//! squadron's storage: one logical schema on two engines (SQLite, the
//! embedded default, and PostgreSQL), with the SQUAD data model, bulk
//! ingestion of test runs in short transactions, and the blob store for
//! logs, submitted files and attachments.

#[macro_use]
mod db;
pub mod accounts;
pub mod bench;
pub mod blob;
pub mod builds;
mod error;
pub mod ingest;
mod known_issues;
pub mod maintenance;
pub mod postprocess;
pub mod projects;
pub mod retention;
pub mod sql;
pub mod subscriptions;
#[cfg(feature = "testing")]
pub mod testing;

pub use db::{redact_url, Migrations, Store, WriteStats, WriteTx, DEFAULT_POSTGRES_CONNECTIONS};
pub use error::StoreError;
