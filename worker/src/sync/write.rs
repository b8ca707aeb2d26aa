//! Writing records read from the site, shared by the scanner and the event follower. Writes go
//! through `storage::upsert_entities`, whose guards keep newer rows; retired records are
//! written like live ones and then flagged retired only where the row holds exactly that data
//! or older, so a scan never retires a row the follower has since revived with newer data.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sgcache::ident;
use sgcache::plan::DbState;
use sgcache::sql::{SqlValue, Tx};
use sgcache::storage::{self, parse_date_time, StorageError, WriteOutcome, WriteSource};

/// Rows per guarded retire statement (two binds each).
const FLAG_CHUNK: usize = 500;

/// Writes what a read returned: `active` rows live, `retired` rows retired.
pub async fn write_read(
    tx: &mut Tx,
    state: &DbState,
    entity_type: &str,
    active: &[Value],
    retired: &[Value],
) -> Result<WriteOutcome, StorageError> {
    // Every record is stored: a value a column cannot hold makes its field unservable instead
    // (storage::upsert_entities), so no row of a type is ever missing.
    let mut out =
        storage::upsert_entities(tx, state, entity_type, active, WriteSource::Scan).await?;
    if !retired.is_empty() {
        let o =
            storage::upsert_entities(tx, state, entity_type, retired, WriteSource::Scan).await?;
        out.written += o.written;
        out.skipped += o.skipped;
        out.unstorable += o.unstorable;
        let flags: Vec<(i64, Option<DateTime<Utc>>)> = retired
            .iter()
            .filter_map(|r| {
                let id = r.get("id")?.as_i64()?;
                let t = r
                    .get("updated_at")
                    .and_then(Value::as_str)
                    .and_then(parse_date_time);
                Some((id, t))
            })
            .collect();
        set_retired_if_current(tx, entity_type, &flags, true).await?;
    }
    Ok(out)
}

/// Sets `_retired` on rows whose data is not newer than `seen` (the `updated_at` of the data
/// that says so; `None`: unconditionally). Returns the rows changed.
pub async fn set_retired_if_current(
    tx: &mut Tx,
    entity_type: &str,
    rows: &[(i64, Option<DateTime<Utc>>)],
    retired: bool,
) -> Result<u64, StorageError> {
    let table = ident::table_name(entity_type);
    let mut changed = 0;
    for chunk in rows.chunks(FLAG_CHUNK) {
        let mut sql = tx.sql();
        sql.push("UPDATE ")
            .push_ident(&table)
            .push(" SET \"_retired\" = ")
            .push_bind(SqlValue::Bool(retired))
            .push(", \"_cached_at\" = ")
            .push_bind(storage::now_value(tx.dialect()))
            .push(" WHERE \"_retired\" <> ")
            .push_bind(SqlValue::Bool(retired))
            .push(" AND (");
        for (i, (id, seen)) in chunk.iter().enumerate() {
            sql.push(if i == 0 {
                "(\"id\" = "
            } else {
                " OR (\"id\" = "
            })
            .push_bind(SqlValue::Int(*id));
            if let Some(t) = seen {
                sql.push(" AND (\"_updated_at_seen\" IS NULL OR \"_updated_at_seen\" <= ")
                    .push_bind(SqlValue::DateTime(*t))
                    .push(")");
            }
            sql.push(")");
        }
        sql.push(")");
        changed += tx.execute(&sql).await?;
    }
    Ok(changed)
}

/// Which of `ids` have a row in the cache table of `entity_type`.
pub async fn existing_ids(
    tx: &mut Tx,
    entity_type: &str,
    ids: &[i64],
) -> Result<std::collections::BTreeSet<i64>, StorageError> {
    cached_ids(tx, entity_type, ids, false).await
}

/// Which of `ids` are cached as retired.
pub async fn retired_ids(
    tx: &mut Tx,
    entity_type: &str,
    ids: &[i64],
) -> Result<std::collections::BTreeSet<i64>, StorageError> {
    cached_ids(tx, entity_type, ids, true).await
}

/// Which of `ids` have a row (a retired one, with `retired_only`).
async fn cached_ids(
    tx: &mut Tx,
    entity_type: &str,
    ids: &[i64],
    retired_only: bool,
) -> Result<std::collections::BTreeSet<i64>, StorageError> {
    let table = ident::table_name(entity_type);
    let mut found = std::collections::BTreeSet::new();
    for chunk in ids.chunks(5_000) {
        let mut sql = tx.sql();
        sql.push("SELECT \"id\" FROM ")
            .push_ident(&table)
            .push(" WHERE ");
        if retired_only {
            sql.push("\"_retired\" = ")
                .push_bind(SqlValue::Bool(true))
                .push(" AND ");
        }
        sql.push("\"id\" IN (").push_id_list(chunk).push(")");
        for row in tx.fetch_all(&sql).await? {
            if let Some(SqlValue::Int(id)) = row.first() {
                found.insert(*id);
            }
        }
    }
    Ok(found)
}

/// The cached entities `records` link to, by type. The site hides links to retired entities
/// on the other side without touching it (no event, no `updated_at`), so when an entity comes
/// back to life the rows linking to it are read again to get their full lists back.
pub fn link_targets(
    state: &DbState,
    entity_type: &str,
    records: &[&Value],
) -> std::collections::BTreeMap<String, Vec<i64>> {
    use sgcache::schema::Storage;
    let mut out: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    let link_fields: Vec<&String> = state
        .live_fields(entity_type)
        .filter(|(_, r)| matches!(r.storage(), Storage::EntityLink | Storage::MultiEntity))
        .map(|(n, _)| n)
        .collect();
    let mut push = |l: &Value| {
        if let (Some(t), Some(id)) = (
            l.get("type").and_then(Value::as_str),
            l.get("id").and_then(Value::as_i64),
        ) {
            if state.types.contains_key(t) {
                out.entry(t.to_string()).or_default().push(id);
            }
        }
    };
    for r in records {
        for f in &link_fields {
            match r.get(f.as_str()) {
                Some(Value::Array(a)) => a.iter().for_each(&mut push),
                Some(v @ Value::Object(_)) => push(v),
                _ => {}
            }
        }
    }
    for ids in out.values_mut() {
        ids.sort_unstable();
        ids.dedup();
    }
    out
}

/// `_updated_at_seen` of the cached rows among `ids` (rows absent are left out).
pub async fn seen_times(
    tx: &mut Tx,
    entity_type: &str,
    ids: &[i64],
) -> Result<std::collections::BTreeMap<i64, Option<DateTime<Utc>>>, StorageError> {
    let table = ident::table_name(entity_type);
    let mut found = std::collections::BTreeMap::new();
    for chunk in ids.chunks(5_000) {
        let mut sql = tx.sql();
        sql.push("SELECT \"id\", \"_updated_at_seen\" FROM ")
            .push_ident(&table)
            .push(" WHERE \"id\" IN (");
        sql.push_id_list(chunk);
        sql.push(")");
        for row in tx.fetch_all(&sql).await? {
            let seen = match row.get(1) {
                Some(SqlValue::DateTime(t)) => Some(*t),
                Some(SqlValue::Text(s)) => parse_date_time(s),
                _ => None,
            };
            if let Some(SqlValue::Int(id)) = row.first() {
                found.insert(*id, seen);
            }
        }
    }
    Ok(found)
}
