//! Change notifications (PostgreSQL only): a statement-level trigger on every table the proxy
//! reads calls `pg_notify('sgcache_changed', <table>)` when the statement changed it, whoever
//! wrote (follower, scanner, another proxy's write-through, a person with psql). Proxies
//! `LISTEN` on the channel and drop the answers they keep in memory, so an answer is never
//! served from memory after the rows it came from changed (beyond the notification's own
//! delivery, milliseconds). PostgreSQL sends a notification at commit and folds identical ones
//! of one transaction into one, so a page of a backfill costs one per table.

use super::StorageError;
use crate::sql::{Dialect, SqlValue, Tx};

/// The channel proxies listen on.
pub const CHANNEL: &str = "sgcache_changed";

/// The trigger's name on every table.
const TRIGGER: &str = "_sgcache_notify";

/// Tables whose changes do not change any answer: the follower's position, scan progress and
/// the migration log (written on every poll or page, they would only add noise).
const QUIET_TABLES: [&str; 3] = ["_sgcache_events", "_sgcache_scans", "_sgcache_migrations"];

/// Creates the notify function and puts the trigger on every table of the cache's schema that
/// lacks it (new tables of this migration, and caches made before notifications existed).
/// Runs inside the migration's transaction, under its lock.
pub async fn ensure_change_triggers(tx: &mut Tx) -> Result<(), StorageError> {
    if tx.dialect() != Dialect::Postgres {
        return Ok(());
    }
    let mut f = tx.sql();
    f.push(
        "CREATE OR REPLACE FUNCTION \"_sgcache_notify_change\"() RETURNS trigger \
         LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('",
    )
    .push(CHANNEL)
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
