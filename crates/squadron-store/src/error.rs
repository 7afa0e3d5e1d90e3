use thiserror::Error;

/// What went wrong in the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// Applying or reading migrations failed.
    #[error("migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    /// The schema is older than this binary and migrating was not asked for.
    #[error("the database {url} has {count} pending migration(s); run `squadron migrate --database {url}` or pass --migrate")]
    PendingMigrations {
        /// The database, without credentials.
        url: String,
        /// How many migrations are pending.
        count: usize,
    },
    /// The database URL names no supported engine.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    /// A named object does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A named object exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A value is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing a blob failed.
    #[error("blob store: {0}")]
    Io(std::io::Error),
    /// Enqueueing a follow-up task failed.
    #[error("task queue: {0}")]
    Queue(squadron_queue::QueueError),
}

impl From<squadron_queue::QueueError> for StoreError {
    fn from(e: squadron_queue::QueueError) -> Self {
        StoreError::Queue(e)
    }
}

// The causes' messages are part of ours; they are not also given as
// sources, so error chains do not print them twice.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(e)
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e)
    }
}

impl StoreError {
    /// Whether the database refused a row because of a unique constraint.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Database(e) if is_kind(e, sqlx::error::ErrorKind::UniqueViolation))
    }

    /// Whether the database refused a row because a referenced row is gone.
    pub fn is_foreign_key_violation(&self) -> bool {
        matches!(self, StoreError::Database(e) if is_kind(e, sqlx::error::ErrorKind::ForeignKeyViolation))
    }
}

fn is_kind(e: &sqlx::Error, kind: sqlx::error::ErrorKind) -> bool {
    e.as_database_error().is_some_and(|d| d.kind() == kind)
}
