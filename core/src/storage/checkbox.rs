//! Checkbox columns of caches made before checkboxes were nullable (they were `NOT NULL
//! DEFAULT false`): a site that returns null for an unset checkbox proved that rule wrong
//! (docs/storage.md). `migrate` relaxes them: PostgreSQL drops the constraint and the default
//! in place (the stored values stay right); SQLite cannot alter a column's constraints, so the
//! column is dropped and added again and the field backfilled again.

use super::ddl::ColumnType;
use super::{now_value, StorageError};
use crate::plan::FieldState;
use crate::schema::Storage;
use crate::sql::{Dialect, SqlValue, Tx};

/// Makes every checkbox column of the cache nullable, without a default.
pub(super) async fn ensure_nullable_checkboxes(tx: &mut Tx) -> Result<(), StorageError> {
    let state = super::read_state_tx(tx).await?;
    for (entity_type, ty) in &state.types {
        let checkboxes: Vec<&String> = state
            .live_fields(entity_type)
            .filter(|(_, r)| r.storage() == Storage::Boolean)
            .map(|(name, _)| name)
            .collect();
        if checkboxes.is_empty() {
            continue;
        }
        for column in not_null_columns(tx, &ty.table_name).await? {
            if !checkboxes.iter().any(|c| **c == column) {
                continue;
            }
            tracing::info!(entity_type, field = %column, "making a checkbox column nullable");
            match tx.dialect() {
                Dialect::Postgres => relax_in_place(tx, &ty.table_name, &column).await?,
                Dialect::Sqlite => rebuild(tx, entity_type, &ty.table_name, &column).await?,
            }
        }
    }
    Ok(())
}

/// The NOT NULL columns of `table` (metadata columns included; the caller filters).
async fn not_null_columns(tx: &mut Tx, table: &str) -> Result<Vec<String>, StorageError> {
    let mut sql = tx.sql();
    match tx.dialect() {
        Dialect::Postgres => sql
            .push(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND is_nullable = 'NO' AND table_name = ",
            )
            .push_bind(SqlValue::Text(table.into())),
        Dialect::Sqlite => sql
            .push("SELECT name FROM pragma_table_info(")
            .push_bind(SqlValue::Text(table.into()))
            .push(") WHERE \"notnull\" = 1"),
    };
    Ok(tx
        .fetch_all(&sql)
        .await?
        .into_iter()
        .filter_map(|r| match r.into_iter().next() {
            Some(SqlValue::Text(s)) => Some(s),
            _ => None,
        })
        .collect())
}

async fn relax_in_place(tx: &mut Tx, table: &str, column: &str) -> Result<(), StorageError> {
    let mut sql = tx.sql();
    sql.push("ALTER TABLE ")
        .push_ident(table)
        .push(" ALTER COLUMN ")
        .push_ident(column)
        .push(" DROP NOT NULL, ALTER COLUMN ")
        .push_ident(column)
        .push(" DROP DEFAULT");
    tx.execute(&sql).await?;
    Ok(())
}

/// SQLite: drop and re-add the column, and backfill the field again from the site.
async fn rebuild(
    tx: &mut Tx,
    entity_type: &str,
    table: &str,
    column: &str,
) -> Result<(), StorageError> {
    let d = tx.dialect();
    let mut drop = tx.sql();
    drop.push("ALTER TABLE ")
        .push_ident(table)
        .push(" DROP COLUMN ")
        .push_ident(column);
    tx.execute(&drop).await?;
    let mut add = tx.sql();
    add.push("ALTER TABLE ")
        .push_ident(table)
        .push(" ADD COLUMN ")
        .push_ident(column)
        .push(" ")
        .push(ColumnType::Checkbox.sql(d));
    tx.execute(&add).await?;
    let mut reset = tx.sql();
    reset
        .push("UPDATE \"_sgcache_fields\" SET state = ")
        .push_bind(SqlValue::Text(FieldState::Pending.as_str().into()))
        .push(", backfill_cursor = NULL, backfill_done = 0, backfill_total = NULL, updated_at = ")
        .push_bind(now_value(d))
        .push(" WHERE entity_type = ")
        .push_bind(SqlValue::Text(entity_type.into()))
        .push(" AND field_name = ")
        .push_bind(SqlValue::Text(column.into()));
    tx.execute(&reset).await?;
    Ok(())
}
