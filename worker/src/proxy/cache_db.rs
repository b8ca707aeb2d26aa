//! The proxy's side of the cache database: the connection (attached late when the database
//! was unreachable at start), whether it answers and can be vouched for, the catalog of
//! ready fields, and the answers kept in memory with the statements in flight that fill them.
//! Everything that decides whether the cache *can* answer lives here; whether it *may*
//! (principals, trust) is [`super::policy`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use sgcache::query::{Catalog, PassThrough};
use sgcache::sql::Db;

use super::answer_cache::{Kept, ResultCache};
use super::db_guard::{self, DbGuard};
use super::freshness;
use super::metrics::Metrics;
use super::upstream::flights::Flights;
use super::ProxyConfig;

/// Longest wait for the proxy's own probe of the cache database (`SELECT 1`) after a read
/// failed in it: a database that cannot answer that is unavailable for every read.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct CacheDb {
    /// Unset runs a pure pass-through proxy (see [`CacheDb::attach`]).
    db: OnceLock<Db>,
    /// A database connection is being retried in the background.
    pub pending: AtomicBool,
    /// The database answers the proxy (catalog refreshes, probes); when false every read
    /// passes through.
    ok: AtomicBool,
    catalog: RwLock<Arc<Catalog>>,
    /// Held across each catalog load and store, so a load that began before a change can
    /// never replace the catalog a later load stored (under load, the periodic refresh and
    /// one asked for after a backfill overlapped and the older one won: a ready type read as
    /// not cached until the next refresh).
    load: tokio::sync::Mutex<()>,
    /// Whether the database can be vouched for (failover, rollback, unsynced writes).
    pub guard: DbGuard,
    /// How far behind the site a type may be and still be answered (`ZERO`: unchecked).
    pub max_lag: Duration,
    /// Answers kept in memory.
    pub results: ResultCache,
    /// Cached reads' statements in flight: identical ones run once.
    pub statements: Flights<Result<Kept, PassThrough>>,
}

impl CacheDb {
    pub fn new(config: &ProxyConfig, db: Option<Db>) -> CacheDb {
        CacheDb {
            ok: AtomicBool::new(db.is_some()),
            db: db.map(OnceLock::from).unwrap_or_default(),
            pending: AtomicBool::new(false),
            catalog: RwLock::new(Arc::new(Catalog::default())),
            load: tokio::sync::Mutex::new(()),
            guard: Default::default(),
            max_lag: config.max_lag,
            results: ResultCache::new(config.result_cache_bytes, config.result_cache_ttl),
            statements: Default::default(),
        }
    }

    /// The cache database, once connected.
    pub fn db(&self) -> Option<&Db> {
        self.db.get()
    }

    /// Connects the cache after start (the database was unreachable then); reads are served
    /// from it from the next catalog refresh on.
    pub fn attach(&self, db: Db) {
        if self.db.set(db).is_ok() {
            self.pending.store(false, Ordering::Relaxed);
        }
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The database is connected, answers, and can be vouched for.
    pub fn ok(&self) -> bool {
        self.db()
            .is_some_and(|db| self.ok.load(Ordering::Relaxed) && self.guard.current(db))
    }

    /// A read failed in the database: probes it (`SELECT 1`) and returns whether it answers.
    /// Only a failed probe marks it unavailable for every read (until the next successful
    /// catalog refresh): a statement error or a slow statement is that read's problem.
    pub async fn recheck(&self) -> bool {
        let Some(db) = self.db() else { return false };
        let mut probe = db.sql();
        probe.push("SELECT 1");
        let up = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, db.fetch_all(&probe)).await,
            Ok(Ok(_))
        );
        if !up && self.ok.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                "cache database does not answer the proxy's probe; passing reads through"
            );
        }
        up
    }

    /// Re-reads the catalog; a failure marks the database unavailable (reads pass through).
    /// Returns the database when the catalog was loaded from it.
    pub async fn refresh(&self, site_up: bool, metrics: &Metrics) -> Option<&Db> {
        let db = self.db()?;
        let _one_at_a_time = self.load.lock().await;
        // Nothing from a database the proxy cannot vouch for (db_guard logs why).
        let vouched = self.guard.check(db, site_up).await;
        metrics.set_db_guard(&self.guard);
        let Ok(held_back) = vouched else {
            self.ok.store(false, Ordering::Relaxed);
            return None;
        };
        match freshness::load(db, self.max_lag).await {
            Ok(mut loaded) => {
                db_guard::hold_back(&mut loaded.catalog, &held_back);
                metrics.set_fidelity(&loaded.catalog);
                metrics.events_failures.set(loaded.follower_failures);
                *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded.catalog);
                if !self.ok.swap(true, Ordering::Relaxed) {
                    tracing::info!("cache database available again");
                }
                Some(db)
            }
            Err(e) => {
                if self.ok.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cache database unavailable; passing reads through");
                }
                None
            }
        }
    }
}
