//! The reconcile's database step, behind a small trait so the reconcile can be tested against
//! a fake and run against the shared storage code.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sgcache::spec::SiteConnection;
use sgcache::ShotgunCacheSpec;

/// What the workers connect to, resolved from the spec and its Secrets.
#[derive(Clone)]
pub struct Connection {
    pub database_url: String,
    pub site: SiteConnection,
}

impl std::fmt::Debug for Connection {
    // Neither the database URL (it may hold a password) nor the API key reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("database_url", &"<redacted>")
            .field("site", &self.site)
            .finish()
    }
}

/// One row of `_sgcache_fields`, as the status reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldRow {
    pub entity_type: String,
    pub field_name: String,
    /// `pending`, `backfilling`, `ready` or `dropped`.
    pub state: String,
    pub backfill_done: i64,
    pub backfill_total: Option<i64>,
}

/// The row of `_sgcache_events`.
#[derive(Clone, Debug, PartialEq)]
pub struct EventsRow {
    pub last_event_id: Option<i64>,
    /// Number of missed event ids still awaited.
    pub backlog: i64,
    /// When the follower last wrote its position.
    pub updated_at: Option<DateTime<Utc>>,
}

/// What the status reads from the cache's state tables.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DbSnapshot {
    pub fields: Vec<FieldRow>,
    pub events: Option<EventsRow>,
}

/// The outcome of a migration, in words for Events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MigrationOutcome {
    /// One line per change applied, e.g. `add field Shot.description`.
    pub changes: Vec<String>,
}

/// Why the database step failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    /// The database refused the connection or is unreachable.
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    /// The site (needed for its schema) failed.
    #[error("cannot read the site schema: {0}")]
    Site(String),
    /// Planning or applying the migration failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// Reading or dropping the cache tables failed.
    #[error("database query failed: {0}")]
    Query(String),
}

impl DbError {
    /// The condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            DbError::Connect(_) => "DatabaseUnreachable",
            DbError::Site(_) => "SiteUnreachable",
            DbError::Migration(_) => "MigrationFailed",
            DbError::Query(_) => "DatabaseQueryFailed",
        }
    }
}

/// The cache database as the operator uses it.
pub trait CacheDatabase: Send + Sync + 'static {
    /// Brings the cache layout to the spec (the same plan and code as `sgcache-worker migrate`):
    /// new fields become pending, removed fields stop being served.
    fn migrate<'a>(
        &'a self,
        conn: &'a Connection,
        spec: &'a ShotgunCacheSpec,
    ) -> BoxFuture<'a, Result<MigrationOutcome, DbError>>;

    /// Reads field states and the event position.
    fn snapshot<'a>(&'a self, conn: &'a Connection) -> BoxFuture<'a, Result<DbSnapshot, DbError>>;

    /// Drops every cache table and state table (deletion policy `Delete`). Idempotent.
    fn drop_cache<'a>(&'a self, conn: &'a Connection) -> BoxFuture<'a, Result<(), DbError>>;
}
