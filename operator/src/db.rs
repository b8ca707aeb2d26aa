//! The reconcile's database step, behind a small trait so the reconcile can be tested against
//! a fake and run against the shared storage code.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sgcache::spec::SiteConnection;
use sgcache::ShotgunCacheSpec;

/// What the workers connect to, resolved from the spec and its Secrets.
#[derive(Clone)]
pub struct Connection {
    /// With the cache's schema as the connections' `search_path`.
    pub database_url: String,
    pub site: SiteConnection,
    /// The cache's own PostgreSQL schema (`database.schema`), `None` for the default.
    pub schema: Option<String>,
}

impl std::fmt::Debug for Connection {
    // Neither the database URL (it may hold a password) nor the API key reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("database_url", &"<redacted>")
            .field("site", &self.site)
            .field("schema", &self.schema)
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

/// How far the cache's event position is behind the site's EventLogEntry.
#[derive(Clone, Debug, PartialEq)]
pub enum SiteLag {
    /// The site has no event newer than the last one applied.
    CaughtUp,
    /// Events wait to be applied; `since` is when the oldest of them happened, `pending` that
    /// there are more than the one read.
    Behind { since: DateTime<Utc>, pending: bool },
    /// The site could not be asked.
    Unknown,
}

/// The row of `_sgcache_events`, and the site's side of it.
#[derive(Clone, Debug, PartialEq)]
pub struct EventsRow {
    pub last_event_id: Option<i64>,
    /// Number of missed event ids still awaited.
    pub backlog: i64,
    pub lag: SiteLag,
}

/// What the status reads from the cache's state tables.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DbSnapshot {
    pub fields: Vec<FieldRow>,
    pub events: Option<EventsRow>,
    /// The trust classes that have a row (learning with no samples otherwise).
    pub trust: Vec<crate::crd::TrustClassStatus>,
    /// Reads over every proxy replica in the last minutes.
    pub reads: Option<sgcache::storage::read_counts::ReadShare>,
}

/// The outcome of a migration, in words for Events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MigrationOutcome {
    /// One line per change applied, e.g. `add field Shot.description`.
    pub changes: Vec<String>,
    /// Declared types and fields the site deleted since they were cached (`Shot.sg_cut`).
    pub gone: Vec<String>,
    /// Declared link fields whose target types are not cached, so reads returning them pass
    /// through (`Shot.sg_sequence -> Sequence`).
    pub uncovered: Vec<String>,
    /// Types the spec does not list, cached for the links to them.
    pub implied: Vec<sgcache::plan::ImpliedType>,
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

    /// Resolves `Ok(true)` once fewer of the cache's fields are pending or backfilling than
    /// `pending` (a backfill finished), `Ok(false)` when `within` passed first. It follows the
    /// cache's change notifications (the state tables notify as every cache table does), so
    /// the status can follow a backfill at once rather than at the next requeue.
    fn backfill_progressed<'a>(
        &'a self,
        conn: &'a Connection,
        pending: usize,
        within: std::time::Duration,
    ) -> BoxFuture<'a, Result<bool, DbError>>;

    /// Drops the cache (deletion policy `Delete`): its whole schema when it has its own, else
    /// every cache table and state table. Idempotent.
    fn drop_cache<'a>(&'a self, conn: &'a Connection) -> BoxFuture<'a, Result<(), DbError>>;
}
