//! Applying a plan: DDL plus state-table updates, in one transaction that no other migration
//! can interleave with. The plan is made inside that transaction, from the state it reads, so
//! two concurrent migrations both succeed and the second finds nothing left to do.

use sha2::{Digest, Sha256};

use super::ddl;
use super::{begin_exclusive, ensure_state_tables, now_value, read_state_tx, StorageError};
use crate::ident;
use crate::plan::{self, Change, FieldDef, FieldState, Plan, PlanOptions};
use crate::schema::{DataType, SiteSchema};
use crate::spec::ShotgunCacheSpec;
use crate::sql::{Db, SqlValue, Tx};

/// Plans and applies a migration; returns the plan that was applied (empty when the layout
/// already matched). On error nothing changes.
pub async fn migrate(
    db: &Db,
    spec: &ShotgunCacheSpec,
    site: &SiteSchema,
    options: PlanOptions,
) -> Result<Plan, StorageError> {
    let mut tx = begin_exclusive(db).await?;
    ensure_schema(&mut tx, spec).await?;
    ensure_state_tables(&mut tx).await?;
    let current = read_state_tx(&mut tx).await?;
    let plan = plan::plan(spec, site, &current, options)?;
    if !plan.is_empty() {
        apply_plan(&mut tx, &plan).await?;
        record_migration(&mut tx, &plan, &spec_hash(spec)).await?;
    }
    ensure_link_indexes(&mut tx).await?;
    super::checkbox::ensure_nullable_checkboxes(&mut tx).await?;
    super::notify::ensure_change_triggers(&mut tx).await?;
    tx.commit().await?;
    // Every reconcile and every worker start migrates; only a change is news.
    if plan.is_empty() {
        tracing::debug!("migration: nothing to change");
    } else {
        tracing::info!(changes = plan.changes.len(), "migration applied");
    }
    Ok(plan)
}

/// Creates the cache's own schema (`database.schema`, PostgreSQL) on its first migration; the
/// connections already work in it (their `search_path`). Under the migration lock, so two
/// first migrations do not race on it.
async fn ensure_schema(tx: &mut Tx, spec: &ShotgunCacheSpec) -> Result<(), StorageError> {
    let Some(schema) = &spec.database.schema else {
        return Ok(());
    };
    if tx.dialect() != crate::sql::Dialect::Postgres {
        return Ok(());
    }
    let mut q = tx.sql();
    q.push("CREATE SCHEMA IF NOT EXISTS ").push_ident(schema);
    tx.execute(&q).await?;
    Ok(())
}

/// Creates the `{field}__id` index of every entity field that lacks it: new fields get it
/// with their columns, caches made before the index existed get it here (once; afterwards the
/// names are found and nothing is run).
async fn ensure_link_indexes(tx: &mut Tx) -> Result<(), StorageError> {
    let state = read_state_tx(tx).await?;
    let mut q = tx.sql();
    q.push(match tx.dialect() {
        crate::sql::Dialect::Postgres => {
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema()"
        }
        crate::sql::Dialect::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'index'",
    });
    let existing: std::collections::BTreeSet<String> = tx
        .fetch_all(&q)
        .await?
        .into_iter()
        .filter_map(|r| match r.into_iter().next() {
            Some(SqlValue::Text(s)) => Some(s),
            _ => None,
        })
        .collect();
    for (entity_type, ty) in &state.types {
        for (field, record) in state.live_fields(entity_type) {
            if record.storage() != crate::schema::Storage::EntityLink
                || existing.contains(&ddl::link_index_name(&ty.table_name, field))
            {
                continue;
            }
            let d = tx.dialect();
            tx.execute(&ddl::create_link_index(d, &ty.table_name, field))
                .await?;
        }
    }
    Ok(())
}

/// A stable hash of the spec's entity and display-field sections (what shapes the layout).
pub fn spec_hash(spec: &ShotgunCacheSpec) -> String {
    let shape = serde_json::json!({
        "entities": spec.entities,
        "displayFields": spec.display_fields,
        "implyLinkTargets": spec.implies_link_targets(),
    });
    hex::encode(Sha256::digest(shape.to_string().as_bytes()))
}

/// Applies every change of `plan` in `tx`. The caller holds the migration lock and commits.
pub async fn apply_plan(tx: &mut Tx, plan: &Plan) -> Result<(), StorageError> {
    for change in &plan.changes {
        tracing::debug!(%change, "applying");
        apply_change(tx, change).await?;
    }
    Ok(())
}

async fn apply_change(tx: &mut Tx, change: &Change) -> Result<(), StorageError> {
    let d = tx.dialect();
    match change {
        Change::CreateTable {
            entity_type,
            table,
            display_field,
        } => {
            tx.execute(&ddl::create_entity_table(d, table)).await?;
            let mut sql = tx.sql();
            sql.push("INSERT INTO \"_sgcache_types\" (entity_type, table_name, display_field, added_at) VALUES (")
                .push_bind(SqlValue::Text(entity_type.clone()))
                .push(", ")
                .push_bind(SqlValue::Text(table.clone()))
                .push(", ")
                .push_bind(opt_text(display_field))
                .push(", ")
                .push_bind(now_value(d))
                .push(")");
            tx.execute(&sql).await?;
        }
        Change::SetDisplayField {
            entity_type,
            display_field,
        } => {
            let mut sql = tx.sql();
            sql.push("UPDATE \"_sgcache_types\" SET display_field = ")
                .push_bind(opt_text(display_field))
                .push(" WHERE entity_type = ")
                .push_bind(SqlValue::Text(entity_type.clone()));
            tx.execute(&sql).await?;
        }
        Change::AddField(f) => {
            for stmt in ddl::add_field(d, &f.entity_type, &f.field_name, f.storage()) {
                tx.execute(&stmt).await?;
            }
            upsert_field_row(tx, f).await?;
        }
        Change::RebuildField {
            field: f,
            old_data_type,
        } => {
            let old = DataType::from_api(old_data_type).storage();
            for stmt in ddl::drop_field(d, &f.entity_type, &f.field_name, old) {
                tx.execute(&stmt).await?;
            }
            for stmt in ddl::add_field(d, &f.entity_type, &f.field_name, f.storage()) {
                tx.execute(&stmt).await?;
            }
            upsert_field_row(tx, f).await?;
        }
        Change::ReviveField(f) => upsert_field_row(tx, f).await?,
        Change::UpdateFieldSchema(f) => {
            let mut sql = tx.sql();
            sql.push("UPDATE \"_sgcache_fields\" SET schema = ")
                .push_bind(SqlValue::Json(f.schema.clone()))
                .push(", updated_at = ")
                .push_bind(now_value(d));
            push_field_key(&mut sql, &f.entity_type, &f.field_name);
            tx.execute(&sql).await?;
        }
        Change::DropField {
            entity_type,
            field_name,
        } => {
            let mut sql = tx.sql();
            sql.push("UPDATE \"_sgcache_fields\" SET state = ")
                .push_bind(SqlValue::Text(FieldState::Dropped.as_str().into()))
                .push(", updated_at = ")
                .push_bind(now_value(d));
            push_field_key(&mut sql, entity_type, field_name);
            tx.execute(&sql).await?;
        }
        Change::PruneField {
            entity_type,
            field_name,
            data_type,
        } => {
            let storage = DataType::from_api(data_type).storage();
            for stmt in ddl::drop_field(d, entity_type, field_name, storage) {
                tx.execute(&stmt).await?;
            }
            let mut sql = tx.sql();
            sql.push("DELETE FROM \"_sgcache_fields\"");
            push_field_key(&mut sql, entity_type, field_name);
            tx.execute(&sql).await?;
        }
        Change::PruneTable {
            entity_type,
            table,
            assoc_tables,
        } => prune_table(tx, entity_type, table, assoc_tables).await?,
    }
    Ok(())
}

async fn prune_table(
    tx: &mut Tx,
    entity_type: &str,
    table: &str,
    assoc_tables: &[String],
) -> Result<(), StorageError> {
    let d = tx.dialect();
    // Names come from the state tables: check them as if they came from a spec.
    for t in assoc_tables.iter().map(String::as_str).chain([table]) {
        ident::validate_entity_type(t).map_err(|message| StorageError::CorruptState {
            table: "_sgcache_types",
            message,
        })?;
        tx.execute(&ddl::drop_table(d, t)).await?;
    }
    for state_table in ["_sgcache_fields", "_sgcache_types"] {
        let mut sql = tx.sql();
        sql.push("DELETE FROM ")
            .push_ident(state_table)
            .push(" WHERE entity_type = ")
            .push_bind(SqlValue::Text(entity_type.into()));
        tx.execute(&sql).await?;
    }
    Ok(())
}

fn opt_text(v: &Option<String>) -> SqlValue {
    v.clone().map_or(SqlValue::Null, SqlValue::Text)
}

fn push_field_key(sql: &mut crate::sql::Sql, entity_type: &str, field: &str) {
    sql.push(" WHERE entity_type = ")
        .push_bind(SqlValue::Text(entity_type.into()))
        .push(" AND field_name = ")
        .push_bind(SqlValue::Text(field.into()));
}

/// A field's row in `pending` state with its data type and schema; backfill progress reset.
async fn upsert_field_row(tx: &mut Tx, f: &FieldDef) -> Result<(), StorageError> {
    let d = tx.dialect();
    let mut sql = tx.sql();
    sql.push(
        "INSERT INTO \"_sgcache_fields\" (entity_type, field_name, data_type, storage, state, \
         schema, backfill_cursor, backfill_done, backfill_total, updated_at, non_ascii) VALUES (",
    )
    .push_bind(SqlValue::Text(f.entity_type.clone()))
    .push(", ")
    .push_bind(SqlValue::Text(f.field_name.clone()))
    .push(", ")
    .push_bind(SqlValue::Text(f.data_type.clone()))
    .push(", ")
    .push_bind(SqlValue::Text(ddl::storage_name(f.storage()).into()))
    .push(", ")
    .push_bind(SqlValue::Text(FieldState::Pending.as_str().into()))
    .push(", ")
    .push_bind(SqlValue::Json(f.schema.clone()))
    .push(", NULL, 0, NULL, ")
    .push_bind(now_value(d))
    // A column that starts empty holds no text outside ASCII until a write stores some; a
    // field recorded again keeps what its column was seen to hold.
    .push(", ")
    .push_bind(SqlValue::Bool(false))
    .push(
        ") ON CONFLICT (entity_type, field_name) DO UPDATE SET data_type = excluded.data_type, \
         storage = excluded.storage, state = excluded.state, schema = excluded.schema, \
         backfill_cursor = NULL, backfill_done = 0, backfill_total = NULL, \
         unservable_reason = NULL, unservable_id = NULL, updated_at = excluded.updated_at",
    );
    tx.execute(&sql).await?;
    Ok(())
}

pub(super) async fn record_migration(
    tx: &mut Tx,
    plan: &Plan,
    spec_hash: &str,
) -> Result<(), StorageError> {
    let plan_json = serde_json::to_value(plan).map_err(|e| StorageError::CorruptState {
        table: "_sgcache_migrations",
        message: format!("cannot serialise the plan: {e}"),
    })?;
    let d = tx.dialect();
    let mut sql = tx.sql();
    sql.push("INSERT INTO \"_sgcache_migrations\" (applied_at, plan, spec_hash) VALUES (")
        .push_bind(now_value(d))
        .push(", ")
        .push_bind(SqlValue::Json(plan_json))
        .push(", ")
        .push_bind(SqlValue::Text(spec_hash.into()))
        .push(")");
    tx.execute(&sql).await?;
    Ok(())
}
