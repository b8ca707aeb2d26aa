//! The cache database: the layout of docs/storage.md, migrations that apply a plan, the
//! cache's state tables and the entity write path, over PostgreSQL and SQLite.

mod checkbox;
mod convert;
pub mod ddl;
mod drift;
pub mod event_log;
mod migrate;
pub mod notify;
pub mod read_counts;
mod rows;
mod scans;
mod schema_check;
mod schema_follow;
mod site_binding;
mod state;
mod trust;
mod unservable;
mod write;

use chrono::{DateTime, Utc};
use serde_json::Value;

pub use convert::{parse_date_time, Unstorable};
pub use drift::{drifted_fields, mark_drifted, Drift};
pub use migrate::{apply_plan, migrate, spec_hash};
pub use rows::{
    cached_links, existing_ids, multi_entity_links, retired_ids, seen_times, set_retired_if_current,
};
pub use scans::{last_scan_start, record_scan_start};
pub use schema_check::{record_schema_check, schema_checked_ms};
pub use schema_follow::{follow_site_schema, SchemaFollow};
pub use site_binding::{
    bind_site, drop_cache, normalize_site_url, read_binding, restart_backfills, SiteBinding,
};
pub use state::{
    ensure_state_tables, list_fields, mark_caught_up, read_event_position, read_freshness,
    read_non_ascii, read_state, read_state_tx, record_follower_failures, set_backfill_progress,
    set_field_state, write_event_position, EventPosition, FieldStatus, Freshness, STATE_TABLES,
};
pub use trust::{
    add_progress, read_trust, record_difference, record_match, reset_trust, TrustProgress,
    TrustRecord, TrustState, TRUST_TABLE,
};
pub use unservable::{
    count_dead_letters, list_dead_letters, mark_unservable, write_dead_letter, DeadLetter,
};
pub use write::{
    read_mark, read_mark_tx, retire, retire_missing, revive, upsert_entities, ReadMark,
    UnstorableValue, WriteOutcome, WriteSource,
};

use crate::plan::PlanError;
use crate::sql::{Db, Dialect, SqlValue, Tx};

/// An error of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{0} is not a cached entity type")]
    NotCached(String),
    #[error("bad {entity_type} record: {message}")]
    BadRecord {
        entity_type: String,
        message: String,
    },
    #[error("bad value for {entity_type}.{field} of id {id}: {message}")]
    BadValue {
        entity_type: String,
        field: String,
        id: i64,
        message: String,
    },
    #[error("state table {table} holds unexpected data: {message}")]
    CorruptState {
        table: &'static str,
        message: String,
    },
}

/// Key of the PostgreSQL advisory lock that serialises migrations ("sgcache" in ASCII).
pub const MIGRATION_LOCK_KEY: i64 = 0x0073_6763_6163_6865;

/// SQL for a cache's advisory lock key: `$1` itself under the default `search_path` (as before
/// caches had their own schemas), else mixed with the `search_path`, so caches in their own
/// schemas of one database never take each other's locks. `$1` is the base key.
pub const CACHE_LOCK_KEY_SQL: &str =
    "(CASE WHEN current_setting('search_path') = '\"$user\", public' \
     THEN $1::bigint ELSE hashtextextended(current_setting('search_path'), $1::bigint) END)";

/// Pushes [`CACHE_LOCK_KEY_SQL`] with `key` bound.
fn push_cache_lock_key(sql: &mut crate::sql::Sql, key: i64) {
    sql.push("(CASE WHEN current_setting('search_path') = '\"$user\", public' THEN ")
        .push_bind(SqlValue::Int(key))
        .push("::bigint ELSE hashtextextended(current_setting('search_path'), ")
        .push_bind(SqlValue::Int(key))
        .push("::bigint) END)");
}

/// Begins a transaction that no other writer can interleave with: on PostgreSQL it holds the
/// migration advisory lock until it ends; on SQLite it is `BEGIN IMMEDIATE` (sqlx's plain
/// `begin()` is DEFERRED, which lets two writers both read and then fail to upgrade).
pub async fn begin_exclusive(db: &Db) -> Result<Tx, StorageError> {
    match db {
        Db::Postgres(_) => {
            let mut tx = db.begin().await?;
            let mut sql = tx.sql();
            sql.push("SELECT pg_advisory_xact_lock(");
            push_cache_lock_key(&mut sql, MIGRATION_LOCK_KEY);
            sql.push(")");
            tx.execute(&sql).await?;
            Ok(tx)
        }
        Db::Sqlite(pool) => Ok(Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?)),
    }
}

/// The current time as the cache stores its own timestamps (`timestamptz`, or text with
/// microseconds on SQLite).
pub fn now_value(dialect: Dialect) -> SqlValue {
    let now = Utc::now();
    match dialect {
        Dialect::Postgres => SqlValue::DateTime(now),
        Dialect::Sqlite => SqlValue::Text(format_micros(&now)),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`: the SQLite spelling of `_cached_at`.
pub fn format_micros(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A JSON column's value: `jsonb` on PostgreSQL, text on SQLite.
pub(crate) fn json_value(v: SqlValue) -> Result<Value, String> {
    match v {
        SqlValue::Null => Ok(Value::Null),
        SqlValue::Json(j) => Ok(j),
        SqlValue::Text(s) => serde_json::from_str(&s).map_err(|e| format!("invalid JSON: {e}")),
        other => Err(format!("expected JSON, found {other:?}")),
    }
}

/// A database URL fit for logs: the password (`user:password@`) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let masked = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{masked}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://cache:s3cr:et@db:5432/sg?sslmode=require"),
            "postgres://cache:***@db:5432/sg?sslmode=require"
        );
        assert_eq!(redact_url("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(
            redact_url("sqlite://sgcache.db?mode=rwc"),
            "sqlite://sgcache.db?mode=rwc"
        );
    }
}
