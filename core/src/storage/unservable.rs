//! Unservable fields and dead letters: what the cache does with a value the site returned that
//! a column cannot hold (docs/storage.md "Values the cache cannot store"). The record is
//! stored with that field null, the field leaves `ready` for `unservable` (reads touching it
//! pass through) with the reason and the first entity id, and a dead letter records the value's
//! place (event, entity, field, reason) for operators. Nothing here runs unless such a value
//! was met, so the write path pays nothing for it.

use std::collections::BTreeMap;

use super::write::UnstorableValue;
use super::{now_value, StorageError};
use crate::plan::FieldState;
use crate::sql::{Db, SqlValue, Tx};

/// Dead letters written per write call at most: a page full of bad values records the first
/// ones (the field is unservable after the first anyway); the rest are counted in the log.
const MAX_DEAD_LETTERS_PER_CALL: usize = 20;

/// A value the cache met and could not store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The EventLogEntry that carried it; `None` for scans and write-throughs.
    pub event_id: Option<i64>,
    pub entity_type: String,
    pub entity_id: i64,
    pub field_name: String,
    pub reason: String,
}

/// Marks the fields of `values` unservable (first entity id and reason kept) and records dead
/// letters, in the caller's transaction.
pub(super) async fn record(
    tx: &mut Tx,
    entity_type: &str,
    values: &[UnstorableValue],
    event_id: Option<i64>,
) -> Result<(), StorageError> {
    let mut first: BTreeMap<&str, &UnstorableValue> = BTreeMap::new();
    for v in values {
        first.entry(v.field.as_str()).or_insert(v);
    }
    for (field, v) in &first {
        let marked =
            mark_unservable(tx, entity_type, field, &v.reason.to_string(), v.entity_id).await?;
        if marked {
            tracing::warn!(
                entity_type,
                field = %field,
                entity_id = v.entity_id,
                reason = %v.reason,
                "a value the cache cannot store: the field is unservable (reads pass through) until the next migrate"
            );
        }
    }
    for v in values.iter().take(MAX_DEAD_LETTERS_PER_CALL) {
        let letter = DeadLetter {
            event_id,
            entity_type: entity_type.into(),
            entity_id: v.entity_id,
            field_name: v.field.clone(),
            reason: v.reason.to_string(),
        };
        write_dead_letter(tx, &letter).await?;
    }
    if values.len() > MAX_DEAD_LETTERS_PER_CALL {
        tracing::warn!(
            entity_type,
            unrecorded = values.len() - MAX_DEAD_LETTERS_PER_CALL,
            "more values the cache cannot store in one write than dead letters kept"
        );
    }
    Ok(())
}

/// Moves a field to `unservable` (unless dropped or already unservable) with its reason and
/// the first entity id met. Returns true when the field changed state.
pub async fn mark_unservable(
    tx: &mut Tx,
    entity_type: &str,
    field: &str,
    reason: &str,
    entity_id: i64,
) -> Result<bool, StorageError> {
    let mut sql = tx.sql();
    sql.push("UPDATE \"_sgcache_fields\" SET state = ")
        .push_bind(SqlValue::Text(FieldState::Unservable.as_str().into()))
        .push(", unservable_reason = ")
        .push_bind(SqlValue::Text(reason.into()))
        .push(", unservable_id = ")
        .push_bind(SqlValue::Int(entity_id))
        .push(", updated_at = ")
        .push_bind(now_value(tx.dialect()))
        .push(" WHERE state NOT IN ('dropped', 'unservable') AND entity_type = ")
        .push_bind(SqlValue::Text(entity_type.into()))
        .push(" AND field_name = ")
        .push_bind(SqlValue::Text(field.into()));
    Ok(tx.execute(&sql).await? > 0)
}

/// Records (or refreshes) a dead letter; one row per event, entity and field.
pub async fn write_dead_letter(tx: &mut Tx, letter: &DeadLetter) -> Result<(), StorageError> {
    let mut sql = tx.sql();
    sql.push(
        "INSERT INTO \"_sgcache_dead_letters\" (event_id, entity_type, entity_id, field_name, \
         reason, recorded_at) VALUES (",
    )
    .push_bind(SqlValue::Int(letter.event_id.unwrap_or(0)))
    .push(", ")
    .push_bind(SqlValue::Text(letter.entity_type.clone()))
    .push(", ")
    .push_bind(SqlValue::Int(letter.entity_id))
    .push(", ")
    .push_bind(SqlValue::Text(letter.field_name.clone()))
    .push(", ")
    .push_bind(SqlValue::Text(letter.reason.clone()))
    .push(", ")
    .push_bind(now_value(tx.dialect()))
    .push(
        ") ON CONFLICT (event_id, entity_type, entity_id, field_name) DO UPDATE SET \
         reason = excluded.reason, recorded_at = excluded.recorded_at",
    );
    tx.execute(&sql).await?;
    Ok(())
}

/// Every dead letter, oldest event first.
pub async fn list_dead_letters(db: &Db) -> Result<Vec<DeadLetter>, StorageError> {
    let mut sql = db.sql();
    sql.push(
        "SELECT event_id, entity_type, entity_id, field_name, reason FROM \
         \"_sgcache_dead_letters\" ORDER BY event_id, entity_type, entity_id, field_name",
    );
    let rows = db.fetch_all(&sql).await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| match <[SqlValue; 5]>::try_from(row).ok()? {
            [SqlValue::Int(ev), SqlValue::Text(t), SqlValue::Int(id), SqlValue::Text(f), SqlValue::Text(r)] => {
                Some(DeadLetter {
                    event_id: (ev != 0).then_some(ev),
                    entity_type: t,
                    entity_id: id,
                    field_name: f,
                    reason: r,
                })
            }
            _ => None,
        })
        .collect())
}

/// Dead letters per entity type (for status displays, which need the counts, not the rows).
pub async fn count_dead_letters(db: &Db) -> Result<BTreeMap<String, i64>, StorageError> {
    let mut sql = db.sql();
    sql.push(
        "SELECT entity_type, count(*) FROM \"_sgcache_dead_letters\" GROUP BY entity_type \
         ORDER BY entity_type",
    );
    let rows = db.fetch_all(&sql).await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| match <[SqlValue; 2]>::try_from(row).ok()? {
            [SqlValue::Text(t), SqlValue::Int(n)] => Some((t, n)),
            _ => None,
        })
        .collect())
}
