//! Row-level reads and flags on entity tables that the workers need beside the upserts of
//! `write`: which ids are cached (or cached retired), when each row's data was last seen on the
//! site, and the guarded `_retired` flag.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::write::{self, ReadMark};
use super::{parse_date_time, StorageError};
use crate::ident;
use crate::sql::{Db, SqlValue, Tx};

/// Rows per guarded retire statement (two binds each).
const FLAG_CHUNK: usize = 500;

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
        let mut sql = super::write::retired_flag_update(tx, &table, retired);
        sql.push(" WHERE \"_retired\" <> ")
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
) -> Result<BTreeSet<i64>, StorageError> {
    cached_ids(tx, entity_type, ids, None).await
}

/// Which of `ids` are cached as retired and unwritten since `read_at`: those a read begun
/// then that finds them live brings back. A row retired after it (a delete answered through the
/// proxy meanwhile) keeps its flag against that read ([`super::WriteSource::Read`]).
pub async fn retired_ids(
    tx: &mut Tx,
    entity_type: &str,
    ids: &[i64],
    read_at: ReadMark,
) -> Result<BTreeSet<i64>, StorageError> {
    cached_ids(tx, entity_type, ids, Some(read_at)).await
}

/// Which of `ids` have a row (with `retired_before`, a retired one unwritten since the mark).
async fn cached_ids(
    tx: &mut Tx,
    entity_type: &str,
    ids: &[i64],
    retired_before: Option<ReadMark>,
) -> Result<BTreeSet<i64>, StorageError> {
    let table = ident::table_name(entity_type);
    let mut found = BTreeSet::new();
    for chunk in ids.chunks(5_000) {
        let mut sql = tx.sql();
        sql.push("SELECT \"id\" FROM ")
            .push_ident(&table)
            .push(" WHERE ");
        if let Some(mark) = retired_before {
            // As the read's upsert decides (a row written since keeps its flag).
            sql.push("\"_retired\" = ")
                .push_bind(SqlValue::Bool(true))
                .push(" AND NOT COALESCE(");
            write::push_written_since(&mut sql, &table, mark.value(tx.dialect()));
            sql.push(", FALSE) AND ");
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

/// `_updated_at_seen` of the cached rows among `ids` (rows absent are left out).
pub async fn seen_times(
    tx: &mut Tx,
    entity_type: &str,
    ids: &[i64],
) -> Result<BTreeMap<i64, Option<DateTime<Utc>>>, StorageError> {
    let table = ident::table_name(entity_type);
    let mut found = BTreeMap::new();
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

/// The cached links of multi-entity field `field` of each of `ids` (type `entity_type`), in
/// their order; ids with no link are left out.
pub async fn multi_entity_links(
    tx: &mut Tx,
    entity_type: &str,
    field: &str,
    ids: &[i64],
) -> Result<BTreeMap<i64, Vec<(String, i64)>>, StorageError> {
    let assoc = ident::assoc_table_name(entity_type, field);
    let mut out: BTreeMap<i64, Vec<(String, i64)>> = BTreeMap::new();
    for chunk in ids.chunks(5_000) {
        let mut sql = tx.sql();
        sql.push("SELECT \"_entity_id\", \"_target_type\", \"_target_id\" FROM ")
            .push_ident(&assoc)
            .push(" WHERE \"_entity_id\" IN (");
        sql.push_id_list(chunk);
        sql.push(") ORDER BY \"_entity_id\", \"_position\"");
        for row in tx.fetch_all(&sql).await? {
            if let [SqlValue::Int(e), SqlValue::Text(t), SqlValue::Int(i)] = row.as_slice() {
                out.entry(*e).or_default().push((t.clone(), *i));
            }
        }
    }
    Ok(out)
}

/// The links the cache holds in link field `field` of row `id` of `table` (type
/// `entity_type`): one for an entity field, any number for a multi-entity one.
pub async fn cached_links(
    db: &Db,
    table: &str,
    entity_type: &str,
    field: &str,
    multi: bool,
    id: i64,
) -> Result<Vec<(String, i64)>, StorageError> {
    let mut sql = db.sql();
    if multi {
        sql.push("SELECT \"_target_type\", \"_target_id\" FROM ")
            .push_ident(&ident::assoc_table_name(entity_type, field))
            .push(" WHERE \"_entity_id\" = ");
    } else {
        sql.push("SELECT ")
            .push_ident(&format!("{field}__type"))
            .push(", ")
            .push_ident(&format!("{field}__id"))
            .push(" FROM ")
            .push_ident(table)
            .push(" WHERE \"id\" = ");
    }
    sql.push_bind(SqlValue::Int(id));
    let rows = db.fetch_all(&sql).await?;
    Ok(rows
        .iter()
        .filter_map(|row| match row.as_slice() {
            [SqlValue::Text(t), SqlValue::Int(i)] => Some((t.clone(), *i)),
            _ => None,
        })
        .collect())
}
