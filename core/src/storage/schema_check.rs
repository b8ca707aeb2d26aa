//! `_sgcache_schema_check`: when the layout was last brought to the site's schema, and for
//! which spec layout ([`super::spec_hash`]). Written by whoever read the site's schema and
//! migrated or followed it (the operator, `migrate`, the scanner's timer, the follower);
//! read by a starting scanner, whose first check of the site's schema is then due a
//! `schemaInterval` after that read rather than at once. The operator migrates seconds
//! before the workers start, and reading the whole schema again (hundreds of KB to several MB
//! on a real site) would hold the first backfill back by as long as the read takes.
//!
//! Created by `migrate` with the other state tables, and additively here for caches made
//! before. Its writes trigger no change notification (nothing an answer depends on).

use super::{spec_hash, StorageError};
use crate::spec::ShotgunCacheSpec;
use crate::sql::{Db, SqlValue, Tx};

const TABLE: &str = "_sgcache_schema_check";

/// The same DDL on both dialects (`BIGINT` is `INTEGER` affinity on SQLite). `read_ms`: when
/// the read of the site's schema began (unix ms).
pub(super) const CREATE_SCHEMA_CHECK: &str =
    "CREATE TABLE IF NOT EXISTS \"_sgcache_schema_check\" (id INTEGER PRIMARY KEY \
     CHECK (id = 1), spec_hash TEXT NOT NULL, read_ms BIGINT NOT NULL)";

async fn ensure_table(tx: &mut Tx) -> Result<(), StorageError> {
    super::site_binding::create_table_if_missing(tx, TABLE, CREATE_SCHEMA_CHECK).await
}

/// Records that the layout for `spec` was brought to a site schema read at `read_ms`. A read
/// older than the one recorded for the same spec layout changes nothing (the operator reuses
/// a read for a few seconds, while a scanner may have read it again since); another layout's
/// record is replaced.
pub async fn record_schema_check(
    db: &Db,
    spec: &ShotgunCacheSpec,
    read_ms: i64,
) -> Result<(), StorageError> {
    let mut tx = db.begin().await?;
    ensure_table(&mut tx).await?;
    let mut sql = tx.sql();
    sql.push("INSERT INTO \"_sgcache_schema_check\" AS c (id, spec_hash, read_ms) VALUES (1, ")
        .push_bind(SqlValue::Text(spec_hash(spec)))
        .push(", ")
        .push_bind(SqlValue::Int(read_ms))
        .push(
            ") ON CONFLICT (id) DO UPDATE SET spec_hash = excluded.spec_hash, \
             read_ms = excluded.read_ms \
             WHERE c.spec_hash <> excluded.spec_hash OR c.read_ms < excluded.read_ms",
        );
    tx.execute(&sql).await?;
    tx.commit().await?;
    Ok(())
}

/// When the site's schema was last read and followed for `spec`'s layout (unix ms); `None`
/// when never, or only for another layout (a spec whose layout changed must check at once).
pub async fn schema_checked_ms(
    db: &Db,
    spec: &ShotgunCacheSpec,
) -> Result<Option<i64>, StorageError> {
    let mut tx = db.begin().await?;
    // Reading creates nothing: a cache without the table has no check recorded.
    if !super::site_binding::table_exists(&mut tx, TABLE).await? {
        return Ok(None);
    }
    let mut sql = tx.sql();
    sql.push("SELECT read_ms FROM \"_sgcache_schema_check\" WHERE id = 1 AND spec_hash = ")
        .push_bind(SqlValue::Text(spec_hash(spec)));
    let rows = tx.fetch_all(&sql).await?;
    tx.commit().await?;
    Ok(match rows.first().and_then(|r| r.first()) {
        Some(SqlValue::Int(ms)) => Some(*ms),
        _ => None,
    })
}
