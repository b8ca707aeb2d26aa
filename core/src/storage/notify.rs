//! Change notifications (PostgreSQL only): a statement-level trigger on every table the proxy
//! reads calls `pg_notify('sgcache_changed', <table>)` when the statement changed it, whoever
//! wrote (follower, scanner, another proxy's write-through, a person with psql). Proxies
//! `LISTEN` on the channel and drop the answers they keep in memory, so an answer is never
//! served from memory after the rows it came from changed (beyond the notification's own
//! delivery, milliseconds). PostgreSQL sends a notification at commit and folds identical ones
//! of one transaction into one, so a page of a backfill costs one per table.

use super::StorageError;
use crate::sql::{Dialect, SqlValue, Tx};

/// The state tables whose notifications say a process moved field or type states (a
/// backfill finished, a field was dropped), which changes what the cache serves.
pub const SERVING_STATE_TABLES: [&str; 2] = ["_sgcache_fields", "_sgcache_types"];

/// The channel proxies listen on, for a cache in the default schema.
pub const CHANNEL: &str = "sgcache_changed";

/// The channel of the cache in `schema`: [`CHANNEL`] for `public`, else one of its own (a
/// hash keeps it within PostgreSQL's 63-byte names), so a cache's writes never wake the
/// proxies of another cache in the same database.
pub fn channel(schema: &str) -> String {
    if schema == "public" {
        return CHANNEL.to_string();
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(schema.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{CHANNEL}_{hex}")
}

/// The channel of the cache this pool's connections work in: its schema, or, before the first
/// migration created it, the schema its `search_path` names.
pub async fn channel_of(db: &crate::sql::Db) -> Result<String, sqlx::Error> {
    let mut q = db.sql();
    q.push("SELECT coalesce(current_schema(), current_setting('search_path'))::text");
    let rows = db.fetch_all(&q).await?;
    let schema = texts(rows)
        .into_iter()
        .next()
        .unwrap_or_else(|| "public".into());
    Ok(channel(&schema))
}

/// The trigger's name on every table.
const TRIGGER: &str = "_sgcache_notify";

/// Tables whose changes do not change any answer: the follower's position, scan progress and
/// the migration log (written on every poll or page, they would only add noise), the
/// proxies' read counts (written by every replica every few seconds) and when the site's
/// schema was last checked.
const QUIET_TABLES: [&str; 5] = [
    "_sgcache_events",
    "_sgcache_scans",
    "_sgcache_migrations",
    "_sgcache_read_counts",
    "_sgcache_schema_check",
];

/// Creates the notify function and puts the trigger on every table of the cache's schema that
/// lacks it (new tables of this migration, and caches made before notifications existed).
/// Runs inside the migration's transaction, under its lock.
pub async fn ensure_change_triggers(tx: &mut Tx) -> Result<(), StorageError> {
    if tx.dialect() != Dialect::Postgres {
        return Ok(());
    }
    let mut q = tx.sql();
    q.push("SELECT current_schema()::text");
    let schema = texts(tx.fetch_all(&q).await?)
        .into_iter()
        .next()
        .unwrap_or_else(|| "public".into());
    // The function lives in the cache's schema (the first of the search_path), and names the
    // cache's own channel; `channel` is hex and underscores only, safe inside the literal.
    let mut f = tx.sql();
    f.push(
        "CREATE OR REPLACE FUNCTION \"_sgcache_notify_change\"() RETURNS trigger \
         LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('",
    )
    .push(&channel(&schema))
    .push("', TG_TABLE_NAME); RETURN NULL; END $$");
    tx.execute(&f).await?;
    let mut q = tx.sql();
    push_untriggered(&mut q);
    let missing = texts(tx.fetch_all(&q).await?);
    for table in missing {
        let mut c = tx.sql();
        c.push("CREATE TRIGGER ")
            .push_ident(TRIGGER)
            .push(" AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ")
            .push_ident(&table)
            .push(" FOR EACH STATEMENT EXECUTE FUNCTION \"_sgcache_notify_change\"()");
        tx.execute(&c).await?;
    }
    Ok(())
}

/// Tables of the cache (PostgreSQL) that would change answers but carry no change trigger, for
/// example when an older sgcache made them. A proxy keeps no answers in memory while any exist.
pub async fn untriggered_tables(db: &crate::sql::Db) -> Result<Vec<String>, sqlx::Error> {
    let mut q = db.sql();
    push_untriggered(&mut q);
    Ok(texts(db.fetch_all(&q).await?))
}

fn push_untriggered(q: &mut crate::sql::Sql) {
    q.push(
        "SELECT c.relname::text FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema() \
         WHERE c.relkind = 'r' AND NOT EXISTS (SELECT 1 FROM pg_trigger t \
           WHERE t.tgrelid = c.oid AND t.tgname = ",
    )
    .push_bind(SqlValue::Text(TRIGGER.into()))
    .push(") AND c.relname::text NOT IN (");
    for (i, t) in QUIET_TABLES.iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.push_bind(SqlValue::Text(t.to_string()));
    }
    q.push(")");
}

fn texts(rows: Vec<Vec<SqlValue>>) -> Vec<String> {
    rows.into_iter()
        .filter_map(|r| match r.into_iter().next() {
            Some(SqlValue::Text(t)) => Some(t),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_schema_has_its_own_channel_within_postgres_name_limits() {
        assert_eq!(
            channel("public"),
            CHANNEL,
            "caches without a schema as before"
        );
        let (a, b) = (
            channel("sgc_default_a_1234abcd"),
            channel("sgc_default_b_1234abcd"),
        );
        assert_ne!(a, b);
        assert_ne!(a, CHANNEL);
        assert_eq!(
            a,
            channel("sgc_default_a_1234abcd"),
            "stable across processes"
        );
        let long = channel(&"x".repeat(63));
        assert!(long.len() <= 63, "{long}");
        assert!(long
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
    }
}
