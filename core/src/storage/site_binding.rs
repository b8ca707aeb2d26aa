//! Which site a cache belongs to, and starting a cache afresh.
//!
//! `_sgcache_site` holds one row: the normalised URL of the site the cache was filled from,
//! what that site's `info` said then, and when. The first migration writes it; every worker
//! compares its configured site with it, so data filled from one site (the test site, a
//! staging copy) is never served as another's. `info` carries no site id, so the URL is
//! what is compared; the `info` answer is kept for people reading the table.

use serde_json::Value;

use super::{json_value, now_value, StorageError};
use crate::sql::{Db, Dialect, SqlValue, Tx};

/// The table's name.
pub const SITE_TABLE: &str = "_sgcache_site";

const PG_DDL: &str = "CREATE TABLE IF NOT EXISTS \"_sgcache_site\" (id integer PRIMARY KEY \
     CHECK (id = 1), url text NOT NULL, info jsonb, bound_at timestamptz NOT NULL DEFAULT now())";
const SQLITE_DDL: &str = "CREATE TABLE IF NOT EXISTS \"_sgcache_site\" (id INTEGER PRIMARY KEY \
     CHECK (id = 1), url TEXT NOT NULL, info TEXT, bound_at TEXT NOT NULL)";

/// The site a cache was filled from.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteBinding {
    /// Normalised with [`normalize_site_url`].
    pub url: String,
    /// The site's `info` answer when the cache was bound (`Null` if it gave none).
    pub info: Value,
}

/// The form of a site URL that is stored and compared: scheme and host in lower case, no
/// default port, no credentials, query or fragment, no trailing `/`. Text that is not a URL
/// is compared as given, trimmed.
pub fn normalize_site_url(url: &str) -> String {
    let trimmed = url.trim();
    let Ok(mut parsed) = reqwest::Url::parse(trimmed) else {
        return trimmed.trim_end_matches('/').to_string();
    };
    // Setting these cannot fail on a URL that has a host; a URL without one keeps them.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    parsed.set_query(None);
    parsed.set_fragment(None);
    parsed.as_str().trim_end_matches('/').to_string()
}

/// Creates `_sgcache_site` if it is missing (checked first, so PostgreSQL logs no "already
/// exists" notice on every start).
pub async fn ensure_table(tx: &mut Tx) -> Result<(), StorageError> {
    let ddl = match tx.dialect() {
        Dialect::Postgres => PG_DDL,
        Dialect::Sqlite => SQLITE_DDL,
    };
    create_table_if_missing(tx, SITE_TABLE, ddl).await
}

/// The site the cache is bound to; None for a cache never bound (new, or made before
/// binding existed).
pub async fn read_binding(db: &Db) -> Result<Option<SiteBinding>, StorageError> {
    let mut tx = db.begin().await?;
    read_binding_tx(&mut tx).await
}

async fn read_binding_tx(tx: &mut Tx) -> Result<Option<SiteBinding>, StorageError> {
    if !table_exists(tx, SITE_TABLE).await? {
        return Ok(None);
    }
    let mut sql = tx.sql();
    sql.push("SELECT url, info FROM \"_sgcache_site\" WHERE id = 1");
    let Some(row) = tx.fetch_all(&sql).await?.into_iter().next() else {
        return Ok(None);
    };
    let corrupt = |message: String| StorageError::CorruptState {
        table: SITE_TABLE,
        message,
    };
    let mut cols = row.into_iter();
    let url = match cols.next() {
        Some(SqlValue::Text(url)) => url,
        other => return Err(corrupt(format!("expected a URL, found {other:?}"))),
    };
    let info = json_value(cols.next().unwrap_or(SqlValue::Null)).map_err(corrupt)?;
    Ok(Some(SiteBinding { url, info }))
}

/// Binds the cache to `binding` unless it is bound already, and returns the binding that
/// holds afterwards (the earlier one, if any: the caller compares).
pub async fn bind_site(db: &Db, binding: &SiteBinding) -> Result<SiteBinding, StorageError> {
    let mut tx = db.begin().await?;
    ensure_table(&mut tx).await?;
    let mut sql = tx.sql();
    sql.push("INSERT INTO \"_sgcache_site\" (id, url, info, bound_at) VALUES (1, ")
        .push_bind(SqlValue::Text(normalize_site_url(&binding.url)))
        .push(", ")
        .push_bind(SqlValue::Json(binding.info.clone()))
        .push(", ")
        .push_bind(now_value(tx.dialect()))
        .push(") ON CONFLICT (id) DO NOTHING");
    tx.execute(&sql).await?;
    let bound = read_binding_tx(&mut tx).await?;
    tx.commit().await?;
    bound.ok_or_else(|| StorageError::CorruptState {
        table: SITE_TABLE,
        message: "no row after binding".into(),
    })
}

/// Puts every live field back to `pending` with its backfill progress cleared, so the scanner
/// reads every cached type again in full and the proxy serves none of it until then. Used
/// when the cache's rows may not be the site's (its event log is behind the cache's
/// position). Returns the number of fields reset.
pub async fn restart_backfills(tx: &mut Tx) -> Result<u64, StorageError> {
    let mut sql = tx.sql();
    sql.push(
        "UPDATE \"_sgcache_fields\" SET state = 'pending', backfill_cursor = NULL, \
         backfill_done = 0, backfill_total = NULL, updated_at = ",
    )
    .push_bind(now_value(tx.dialect()))
    .push(" WHERE state <> 'dropped'");
    Ok(tx.execute(&sql).await?)
}

/// Drops every table the cache made (entity and association tables, and every `_sgcache_*`
/// table) and the change-notification function, in one transaction; returns the tables
/// dropped. The next migration starts from nothing.
pub async fn drop_cache(db: &Db) -> Result<Vec<String>, StorageError> {
    let mut tables: Vec<String> = super::list_fields(db)
        .await?
        .iter()
        .flat_map(|f| {
            let assoc = (f.storage == "multi_entity")
                .then(|| crate::ident::assoc_table_name(&f.entity_type, &f.field_name));
            std::iter::once(crate::ident::table_name(&f.entity_type)).chain(assoc)
        })
        .collect();
    let mut tx = super::begin_exclusive(db).await?;
    tables.extend(own_tables(&mut tx).await?);
    tables.sort();
    tables.dedup();
    let dialect = tx.dialect();
    for table in &tables {
        tx.execute(&super::ddl::drop_table(dialect, table)).await?;
    }
    if tx.dialect() == Dialect::Postgres {
        let mut sql = tx.sql();
        sql.push("DROP FUNCTION IF EXISTS \"_sgcache_notify_change\"()");
        tx.execute(&sql).await?;
    }
    tx.commit().await?;
    Ok(tables)
}

/// The `_sgcache_*` tables present (including ones a newer sgcache made).
async fn own_tables(tx: &mut Tx) -> Result<Vec<String>, StorageError> {
    let mut sql = tx.sql();
    sql.push(match tx.dialect() {
        Dialect::Postgres => {
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND starts_with(table_name::text, '_sgcache_')"
        }
        // GLOB, unlike LIKE, takes `_` literally.
        Dialect::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB '_sgcache_*'"
        }
    });
    Ok(tx
        .fetch_all(&sql)
        .await?
        .into_iter()
        .filter_map(|row| match row.into_iter().next() {
            Some(SqlValue::Text(name)) => Some(name),
            _ => None,
        })
        .collect())
}

/// Runs `ddl` (a `CREATE TABLE IF NOT EXISTS` of `table`) unless the table exists: checked
/// first, since the tables created this way are written often (each write ensures its table)
/// and PostgreSQL logs an "already exists" notice for every `IF NOT EXISTS` of what exists.
pub(super) async fn create_table_if_missing(
    tx: &mut Tx,
    table: &str,
    ddl: &str,
) -> Result<(), StorageError> {
    if table_exists(tx, table).await? {
        return Ok(());
    }
    let mut sql = tx.sql();
    sql.push(ddl);
    tx.execute(&sql).await?;
    Ok(())
}

pub(super) async fn table_exists(tx: &mut Tx, table: &str) -> Result<bool, StorageError> {
    let mut sql = tx.sql();
    sql.push(match tx.dialect() {
        Dialect::Postgres => {
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = "
        }
        Dialect::Sqlite => "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ",
    })
    .push_bind(SqlValue::Text(table.into()));
    let rows = tx.fetch_all(&sql).await?;
    Ok(matches!(rows.first().and_then(|r| r.first()), Some(SqlValue::Int(n)) if *n > 0))
}

#[cfg(test)]
mod tests {
    use super::normalize_site_url;

    #[test]
    fn site_urls_compare_by_their_meaning() {
        let n = normalize_site_url;
        assert_eq!(
            n("HTTPS://Studio.ShotGrid.Autodesk.com:443/"),
            "https://studio.shotgrid.autodesk.com"
        );
        assert_eq!(
            n("http://user:pw@127.0.0.1:8080/?a=1#f"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(n("https://proxy.example/sg/"), "https://proxy.example/sg");
        assert_ne!(n("http://127.0.0.1:8080"), n("http://127.0.0.1:8081"));
        assert_eq!(n(" not a url/ "), "not a url");
    }
}
