//! `_sgcache_scans`: when each type's last complete scan started, so incremental scans resume
//! where they left off and the proxy can tell how far behind the site a type is. Created by
//! `migrate` with the other state tables, and additively here for caches made before.

use super::StorageError;
use crate::sql::{Db, SqlValue, Tx};

const SCANS_TABLE: &str = "_sgcache_scans";

/// The same DDL on both dialects (`BIGINT` is `INTEGER` affinity on SQLite).
pub(super) const CREATE_SCANS: &str =
    "CREATE TABLE IF NOT EXISTS \"_sgcache_scans\" (entity_type TEXT PRIMARY KEY, \
     started_ms BIGINT NOT NULL)";

/// Creates the table if it is missing (the scanner records a scan of every type every
/// interval).
async fn ensure_table(tx: &mut Tx) -> Result<(), StorageError> {
    super::site_binding::create_table_if_missing(tx, SCANS_TABLE, CREATE_SCANS).await
}

/// Saves `started_ms` as the start of the last complete scan of `entity_type`.
pub async fn record_scan_start(
    tx: &mut Tx,
    entity_type: &str,
    started_ms: i64,
) -> Result<(), StorageError> {
    ensure_table(tx).await?;
    let mut sql = tx.sql();
    sql.push("INSERT INTO \"_sgcache_scans\" (entity_type, started_ms) VALUES (")
        .push_bind(SqlValue::Text(entity_type.into()))
        .push(", ")
        .push_bind(SqlValue::Int(started_ms))
        .push(") ON CONFLICT (entity_type) DO UPDATE SET started_ms = excluded.started_ms");
    tx.execute(&sql).await?;
    Ok(())
}

/// When the last complete scan of `entity_type` started (unix ms), if ever.
pub async fn last_scan_start(db: &Db, entity_type: &str) -> Result<Option<i64>, StorageError> {
    let mut tx = db.begin().await?;
    // Reading creates nothing: a cache without the table has no scan recorded.
    if !super::site_binding::table_exists(&mut tx, SCANS_TABLE).await? {
        return Ok(None);
    }
    let mut sql = tx.sql();
    sql.push("SELECT started_ms FROM \"_sgcache_scans\" WHERE entity_type = ")
        .push_bind(SqlValue::Text(entity_type.into()));
    let rows = tx.fetch_all(&sql).await?;
    tx.commit().await?;
    Ok(match rows.first().and_then(|r| r.first()) {
        Some(SqlValue::Int(ms)) => Some(*ms),
        _ => None,
    })
}
