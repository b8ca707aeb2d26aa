//! The cache's own state tables: `_sgcache_types`, `_sgcache_fields`, `_sgcache_events`,
//! `_sgcache_migrations`. Created idempotently; read into the planner's [`DbState`].

use serde_json::Value;

use super::{json_value, now_value, StorageError};
use crate::plan::{DbState, FieldRecord, FieldState, TypeState};
use crate::sql::{Db, Dialect, Sql, SqlValue, Tx};

const PG_TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS \"_sgcache_types\" (entity_type text PRIMARY KEY, \
     table_name text NOT NULL, display_field text, added_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS \"_sgcache_fields\" (entity_type text NOT NULL, \
     field_name text NOT NULL, data_type text NOT NULL, storage text NOT NULL, \
     state text NOT NULL, schema jsonb, backfill_cursor bigint, \
     backfill_done bigint NOT NULL DEFAULT 0, backfill_total bigint, \
     updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (entity_type, field_name))",
    "CREATE TABLE IF NOT EXISTS \"_sgcache_events\" (id integer PRIMARY KEY CHECK (id = 1), \
     last_event_id bigint, backlog jsonb NOT NULL DEFAULT '[]', \
     updated_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS \"_sgcache_migrations\" (id bigserial PRIMARY KEY, \
     applied_at timestamptz NOT NULL DEFAULT now(), plan jsonb NOT NULL, spec_hash text NOT NULL)",
];

const SQLITE_TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS \"_sgcache_types\" (entity_type TEXT PRIMARY KEY, \
     table_name TEXT NOT NULL, display_field TEXT, added_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS \"_sgcache_fields\" (entity_type TEXT NOT NULL, \
     field_name TEXT NOT NULL, data_type TEXT NOT NULL, storage TEXT NOT NULL, \
     state TEXT NOT NULL, schema TEXT, backfill_cursor INTEGER, \
     backfill_done INTEGER NOT NULL DEFAULT 0, backfill_total INTEGER, \
     updated_at TEXT NOT NULL, PRIMARY KEY (entity_type, field_name))",
    "CREATE TABLE IF NOT EXISTS \"_sgcache_events\" (id INTEGER PRIMARY KEY CHECK (id = 1), \
     last_event_id INTEGER, backlog TEXT NOT NULL DEFAULT '[]', updated_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS \"_sgcache_migrations\" (id INTEGER PRIMARY KEY, \
     applied_at TEXT NOT NULL, plan TEXT NOT NULL, spec_hash TEXT NOT NULL)",
];

/// Creates the state tables if they are missing.
pub async fn ensure_state_tables(tx: &mut Tx) -> Result<(), StorageError> {
    let dialect = tx.dialect();
    super::site_binding::ensure_table(tx).await?;
    if count_state_tables(tx).await? == PG_TABLES.len() as i64 {
        return Ok(()); // skips PostgreSQL's "already exists" notices on every run
    }
    let ddl = match dialect {
        Dialect::Postgres => PG_TABLES,
        Dialect::Sqlite => SQLITE_TABLES,
    };
    for stmt in ddl {
        let mut sql = Sql::new(dialect);
        sql.push(stmt);
        tx.execute(&sql).await?;
    }
    Ok(())
}

async fn count_state_tables(tx: &mut Tx) -> Result<i64, StorageError> {
    let mut sql = tx.sql();
    match tx.dialect() {
        Dialect::Postgres => sql.push(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() \
             AND table_name IN ('_sgcache_types', '_sgcache_fields', '_sgcache_events', '_sgcache_migrations')",
        ),
        Dialect::Sqlite => sql.push(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' \
             AND name IN ('_sgcache_types', '_sgcache_fields', '_sgcache_events', '_sgcache_migrations')",
        ),
    };
    let rows = tx.fetch_all(&sql).await?;
    match rows.first().and_then(|r| r.first()) {
        Some(SqlValue::Int(n)) => Ok(*n),
        other => Err(corrupt(
            "information_schema",
            format!("unexpected count {other:?}"),
        )),
    }
}

/// True once a migration created the state tables.
async fn state_tables_exist(tx: &mut Tx) -> Result<bool, StorageError> {
    Ok(count_state_tables(tx).await? > 0)
}

/// Reads the cache's layout from the state tables (empty when they do not exist yet).
pub async fn read_state(db: &Db) -> Result<DbState, StorageError> {
    let mut tx = db.begin().await?;
    read_state_tx(&mut tx).await
    // Dropping the read-only transaction rolls it back.
}

/// [`read_state`] inside a transaction.
pub async fn read_state_tx(tx: &mut Tx) -> Result<DbState, StorageError> {
    let mut state = DbState::default();
    if !state_tables_exist(tx).await? {
        return Ok(state);
    }
    let mut sql = tx.sql();
    sql.push("SELECT entity_type, table_name, display_field FROM \"_sgcache_types\"");
    for row in tx.fetch_all(&sql).await? {
        let [et, table, display] = take::<3>(row, "_sgcache_types")?;
        state.types.insert(
            text(et, "_sgcache_types")?,
            TypeState {
                table_name: text(table, "_sgcache_types")?,
                display_field: opt_text(display),
            },
        );
    }
    let mut sql = tx.sql();
    sql.push("SELECT entity_type, field_name, data_type, state, schema FROM \"_sgcache_fields\"");
    for row in tx.fetch_all(&sql).await? {
        let [et, name, data_type, st, schema] = take::<5>(row, "_sgcache_fields")?;
        let st = text(st, "_sgcache_fields")?;
        let record = FieldRecord {
            data_type: text(data_type, "_sgcache_fields")?,
            state: FieldState::parse(&st)
                .ok_or_else(|| corrupt("_sgcache_fields", format!("unknown state {st:?}")))?,
            schema: json_value(schema).map_err(|m| corrupt("_sgcache_fields", m))?,
        };
        state
            .fields
            .entry(text(et, "_sgcache_fields")?)
            .or_default()
            .insert(text(name, "_sgcache_fields")?, record);
    }
    Ok(state)
}

fn corrupt(table: &'static str, message: String) -> StorageError {
    StorageError::CorruptState { table, message }
}

fn take<const N: usize>(
    row: Vec<SqlValue>,
    table: &'static str,
) -> Result<[SqlValue; N], StorageError> {
    row.try_into()
        .map_err(|_| corrupt(table, format!("expected {N} columns")))
}

fn text(v: SqlValue, table: &'static str) -> Result<String, StorageError> {
    match v {
        SqlValue::Text(s) => Ok(s),
        other => Err(corrupt(table, format!("expected text, found {other:?}"))),
    }
}

fn opt_text(v: SqlValue) -> Option<String> {
    match v {
        SqlValue::Text(s) => Some(s),
        _ => None,
    }
}

fn opt_int(v: SqlValue) -> Option<i64> {
    match v {
        SqlValue::Int(i) => Some(i),
        _ => None,
    }
}

/// One row of `_sgcache_fields`, for the scanner and the proxy.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldStatus {
    pub entity_type: String,
    pub field_name: String,
    pub data_type: String,
    pub storage: String,
    pub state: FieldState,
    pub schema: Value,
    /// Last entity id the backfill finished, for resuming.
    pub backfill_cursor: Option<i64>,
    /// Entities backfilled so far.
    pub backfill_done: i64,
    /// Entities to backfill, when known.
    pub backfill_total: Option<i64>,
}

/// Every field with storage, ordered by type and name.
pub async fn list_fields(db: &Db) -> Result<Vec<FieldStatus>, StorageError> {
    let mut tx = db.begin().await?;
    if !state_tables_exist(&mut tx).await? {
        return Ok(vec![]);
    }
    let mut sql = tx.sql();
    sql.push(
        "SELECT entity_type, field_name, data_type, storage, state, schema, backfill_cursor, \
         backfill_done, backfill_total FROM \"_sgcache_fields\" ORDER BY entity_type, field_name",
    );
    let t = "_sgcache_fields";
    tx.fetch_all(&sql)
        .await?
        .into_iter()
        .map(|row| {
            let [et, name, dt, storage, st, schema, cursor, done, total] = take::<9>(row, t)?;
            let st = text(st, t)?;
            Ok(FieldStatus {
                entity_type: text(et, t)?,
                field_name: text(name, t)?,
                data_type: text(dt, t)?,
                storage: text(storage, t)?,
                state: FieldState::parse(&st)
                    .ok_or_else(|| corrupt(t, format!("unknown state {st:?}")))?,
                schema: json_value(schema).map_err(|m| corrupt(t, m))?,
                backfill_cursor: opt_int(cursor),
                backfill_done: opt_int(done).unwrap_or(0),
                backfill_total: opt_int(total),
            })
        })
        .collect()
}

/// Moves fields to `state` (pending → backfilling → ready). Dropped fields are left alone:
/// only a migration brings them back. Returns the number of fields changed.
pub async fn set_field_state(
    tx: &mut Tx,
    entity_type: &str,
    fields: &[String],
    state: FieldState,
) -> Result<u64, StorageError> {
    if fields.is_empty() || state == FieldState::Dropped {
        return Ok(0);
    }
    let mut sql = tx.sql();
    sql.push("UPDATE \"_sgcache_fields\" SET state = ")
        .push_bind(SqlValue::Text(state.as_str().into()))
        .push(", updated_at = ")
        .push_bind(now_value(tx.dialect()))
        .push(" WHERE state <> 'dropped' AND entity_type = ")
        .push_bind(SqlValue::Text(entity_type.into()));
    push_in_list(&mut sql, "field_name", fields);
    Ok(tx.execute(&sql).await?)
}

/// Records backfill progress of fields: the last id done, how many done, how many in total.
pub async fn set_backfill_progress(
    tx: &mut Tx,
    entity_type: &str,
    fields: &[String],
    cursor: Option<i64>,
    done: i64,
    total: Option<i64>,
) -> Result<u64, StorageError> {
    if fields.is_empty() {
        return Ok(0);
    }
    let opt = |v: Option<i64>| v.map_or(SqlValue::Null, SqlValue::Int);
    let mut sql = tx.sql();
    sql.push("UPDATE \"_sgcache_fields\" SET backfill_cursor = ")
        .push_bind(opt(cursor))
        .push(", backfill_done = ")
        .push_bind(SqlValue::Int(done))
        .push(", backfill_total = ")
        .push_bind(opt(total))
        .push(", updated_at = ")
        .push_bind(now_value(tx.dialect()))
        .push(" WHERE state <> 'dropped' AND entity_type = ")
        .push_bind(SqlValue::Text(entity_type.into()));
    push_in_list(&mut sql, "field_name", fields);
    Ok(tx.execute(&sql).await?)
}

fn push_in_list(sql: &mut Sql, column: &str, values: &[String]) {
    sql.push(" AND ").push_ident(column).push(" IN (");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push_bind(SqlValue::Text(v.clone()));
    }
    sql.push(")");
}

/// Where the event follower is: the last EventLogEntry id applied and the backlog of missing
/// ids (JSON, the follower's format).
#[derive(Clone, Debug, PartialEq)]
pub struct EventPosition {
    pub last_event_id: Option<i64>,
    pub backlog: Value,
}

/// The event follower's saved position, if it has saved one.
pub async fn read_event_position(db: &Db) -> Result<Option<EventPosition>, StorageError> {
    let mut tx = db.begin().await?;
    if !state_tables_exist(&mut tx).await? {
        return Ok(None);
    }
    let mut sql = tx.sql();
    sql.push("SELECT last_event_id, backlog FROM \"_sgcache_events\" WHERE id = 1");
    let Some(row) = tx.fetch_all(&sql).await?.into_iter().next() else {
        return Ok(None);
    };
    let [last, backlog] = take::<2>(row, "_sgcache_events")?;
    Ok(Some(EventPosition {
        last_event_id: opt_int(last),
        backlog: json_value(backlog).map_err(|m| corrupt("_sgcache_events", m))?,
    }))
}

/// Saves the event follower's position, in the transaction that applied the events.
pub async fn write_event_position(
    tx: &mut Tx,
    position: &EventPosition,
) -> Result<(), StorageError> {
    let mut sql = tx.sql();
    sql.push(
        "INSERT INTO \"_sgcache_events\" (id, last_event_id, backlog, updated_at) VALUES (1, ",
    )
    .push_bind(position.last_event_id.map_or(SqlValue::Null, SqlValue::Int))
    .push(", ")
    .push_bind(SqlValue::Json(position.backlog.clone()))
    .push(", ")
    .push_bind(now_value(tx.dialect()))
    .push(
        ") ON CONFLICT (id) DO UPDATE SET last_event_id = excluded.last_event_id, \
             backlog = excluded.backlog, updated_at = excluded.updated_at",
    );
    tx.execute(&sql).await?;
    Ok(())
}
