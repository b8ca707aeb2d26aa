//! What the proxy must not answer from the cache even though it holds it: types further
//! behind the site than `workers.proxy.maxLag` (reason `stale`) and unservable fields (reason
//! `unservable`, set by the writers in `_sgcache_fields`). Both are read with the catalog.

use std::time::Duration;

use sgcache::query::Catalog;
use sgcache::sql::Db;
use sgcache::storage;

/// The catalog with its stale types marked, and the event follower's consecutive failures.
pub struct Loaded {
    pub catalog: Catalog,
    pub follower_failures: i64,
}

/// Loads the catalog and marks the types whose last known match with the site is older than
/// `max_lag` (`ZERO`: never). A type no follower or scan has measured is not judged.
pub async fn load(db: &Db, max_lag: Duration) -> anyhow::Result<Loaded> {
    let mut catalog = Catalog::load(db).await?;
    // EventLogEntry is answered from the kept log while the follower keeps one; the floor
    // and position are read by each statement itself (`sgcache::query::event_log`).
    if storage::event_log::read_window(db).await?.is_some() {
        catalog.add_event_log();
    }
    let freshness = storage::read_freshness(db).await?;
    let loaded = |catalog| Loaded {
        catalog,
        follower_failures: freshness.follower_failures,
    };
    if max_lag.is_zero() {
        return Ok(loaded(catalog));
    }
    let now = chrono::Utc::now();
    for (name, ty) in catalog.types.iter_mut() {
        let Some(at) = freshness.fresh_at(name) else {
            continue;
        };
        let behind = (now - at).to_std().unwrap_or_default();
        ty.stale = behind > max_lag;
        if ty.stale {
            tracing::debug!(entity_type = %name, behind_s = behind.as_secs(), "type is stale");
        }
    }
    Ok(loaded(catalog))
}

/// Names of the stale types, for `/readyz`.
pub fn stale_types(catalog: &Catalog) -> Vec<String> {
    catalog
        .types
        .values()
        .filter(|t| t.stale)
        .map(|t| t.entity_type.clone())
        .collect()
}

/// `Type.field` of every unservable field, for `/readyz`.
pub fn unservable_fields(catalog: &Catalog) -> Vec<String> {
    catalog
        .types
        .values()
        .flat_map(|t| {
            t.fields
                .values()
                .filter(|f| f.unservable)
                .map(|f| format!("{}.{}", t.entity_type, f.name))
        })
        .collect()
}
