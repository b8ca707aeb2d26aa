//! `_sgcache_read_counts`: reads answered from the cache and passed through (by reason), per
//! proxy replica and minute, so the share of reads the cache answers can be told over every
//! replica (each proxy only knows its own counters). Each proxy adds what it counted since
//! its last flush every few seconds and trims what is older than [`KEPT_MINUTES`]; readers
//! (`sgcache-worker status`, the status page, the operator) sum the last minutes.
//! Created by `migrate` with the other state tables, and additively here for caches made
//! before.

use std::collections::BTreeMap;

use serde::Serialize;

use super::StorageError;
use crate::sql::{Db, SqlValue, Tx};

const TABLE: &str = "_sgcache_read_counts";

/// Minutes of counts kept.
pub const KEPT_MINUTES: i64 = 60;

/// The same DDL on both dialects (`BIGINT` is `INTEGER` affinity on SQLite). `reason` is
/// `none` for reads answered from the cache.
pub(super) const CREATE_READ_COUNTS: &str =
    "CREATE TABLE IF NOT EXISTS \"_sgcache_read_counts\" (replica TEXT NOT NULL, \
     minute BIGINT NOT NULL, path TEXT NOT NULL, reason TEXT NOT NULL, \
     reads BIGINT NOT NULL, PRIMARY KEY (replica, minute, path, reason))";

async fn ensure_table(tx: &mut Tx) -> Result<(), StorageError> {
    super::site_binding::create_table_if_missing(tx, TABLE, CREATE_READ_COUNTS).await
}

/// Reads one replica counted in one minute since its last flush.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MinuteReads {
    /// Unix time / 60.
    pub minute: i64,
    pub cache: u64,
    /// Reads passed through, by reason.
    pub site: BTreeMap<String, u64>,
}

impl MinuteReads {
    pub fn is_empty(&self) -> bool {
        self.cache == 0 && self.site.values().all(|n| *n == 0)
    }
}

/// Adds `reads` to `replica`'s counts and deletes every replica's counts older than
/// [`KEPT_MINUTES`] before `reads.minute`.
pub async fn add_reads(db: &Db, replica: &str, reads: &MinuteReads) -> Result<(), StorageError> {
    let mut tx = db.begin().await?;
    ensure_table(&mut tx).await?;
    let rows = std::iter::once(("cache", "none", reads.cache))
        .chain(reads.site.iter().map(|(r, n)| ("site", r.as_str(), *n)))
        .filter(|(_, _, n)| *n > 0);
    for (path, reason, n) in rows {
        let mut sql = tx.sql();
        sql.push(
            "INSERT INTO \"_sgcache_read_counts\" AS c (replica, minute, path, reason, reads) \
             VALUES (",
        )
        .push_bind(SqlValue::Text(replica.into()))
        .push(", ")
        .push_bind(SqlValue::Int(reads.minute))
        .push(", ")
        .push_bind(SqlValue::Text(path.into()))
        .push(", ")
        .push_bind(SqlValue::Text(reason.into()))
        .push(", ")
        .push_bind(SqlValue::Int(n as i64))
        .push(") ON CONFLICT (replica, minute, path, reason) DO UPDATE SET reads = c.reads + ")
        .push_bind(SqlValue::Int(n as i64));
        tx.execute(&sql).await?;
    }
    let mut sql = tx.sql();
    sql.push("DELETE FROM \"_sgcache_read_counts\" WHERE minute < ")
        .push_bind(SqlValue::Int(reads.minute - KEPT_MINUTES));
    tx.execute(&sql).await?;
    tx.commit().await?;
    Ok(())
}

/// Reads over every replica in a window of minutes.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReadShare {
    /// The window: the current minute and the `minutes - 1` before it.
    pub minutes: i64,
    /// Replicas that counted reads in the window.
    pub replicas: u64,
    pub cache: u64,
    pub site: u64,
    /// Reads passed through by reason, most first (ties by name).
    pub reasons: Vec<(String, u64)>,
}

impl ReadShare {
    /// Share of reads answered from the cache; `None` without reads.
    pub fn ratio(&self) -> Option<f64> {
        let all = self.cache + self.site;
        (all > 0).then(|| self.cache as f64 / all as f64)
    }
}

/// Sums every replica's counts of the `minutes` minutes up to `now_minute`. A cache without
/// the table (no proxy flushed yet) has no reads.
pub async fn read_share(db: &Db, now_minute: i64, minutes: i64) -> Result<ReadShare, StorageError> {
    let mut share = ReadShare {
        minutes,
        ..ReadShare::default()
    };
    let mut tx = db.begin().await?;
    if !super::site_binding::table_exists(&mut tx, TABLE).await? {
        tx.commit().await?;
        return Ok(share);
    }
    let mut sql = tx.sql();
    sql.push(
        "SELECT path, reason, CAST(SUM(reads) AS BIGINT) \
         FROM \"_sgcache_read_counts\" WHERE minute > ",
    )
    .push_bind(SqlValue::Int(now_minute - minutes))
    .push(" AND minute <= ")
    .push_bind(SqlValue::Int(now_minute))
    .push(" GROUP BY path, reason");
    let rows = tx.fetch_all(&sql).await?;
    let mut sql = tx.sql();
    sql.push("SELECT COUNT(DISTINCT replica) FROM \"_sgcache_read_counts\" WHERE minute > ")
        .push_bind(SqlValue::Int(now_minute - minutes))
        .push(" AND minute <= ")
        .push_bind(SqlValue::Int(now_minute));
    let replicas = tx.fetch_all(&sql).await?;
    tx.commit().await?;
    if let Some(SqlValue::Int(n)) = replicas.first().and_then(|r| r.first()) {
        share.replicas = *n as u64;
    }
    for row in rows {
        let (Some(SqlValue::Text(path)), Some(SqlValue::Text(reason)), Some(SqlValue::Int(n))) =
            (row.first(), row.get(1), row.get(2))
        else {
            continue;
        };
        let n = (*n).max(0) as u64;
        if path == "cache" {
            share.cache += n;
        } else {
            share.site += n;
            share.reasons.push((reason.clone(), n));
        }
    }
    share
        .reasons
        .sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(share)
}

/// The minute (unix time / 60) of `now`.
pub fn minute_of(now: chrono::DateTime<chrono::Utc>) -> i64 {
    now.timestamp().div_euclid(60)
}
