//! The cache's own state tables: `_sgcache_types`, `_sgcache_fields`, `_sgcache_events`,
//! `_sgcache_migrations`, `_sgcache_dead_letters`. Created idempotently (columns added since
//! the first release too); read into the planner's [`DbState`].

use chrono::{DateTime, Utc};
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
     updated_at timestamptz NOT NULL DEFAULT now(), unservable_reason text, unservable_id bigint, \
     PRIMARY KEY (entity_type, field_name))",
    "CREATE TABLE IF NOT EXISTS \"_sgcache_events\" (id integer PRIMARY KEY CHECK (id = 1), \
     last_event_id bigint, backlog jsonb NOT NULL DEFAULT '[]', \
     updated_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS \"_sgcache_migrations\" (id bigserial PRIMARY KEY, \
     applied_at timestamptz NOT NULL DEFAULT now(), plan jsonb NOT NULL, spec_hash text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS \"_sgcache_dead_letters\" (event_id bigint NOT NULL, \
     entity_type text NOT NULL, entity_id bigint NOT NULL, field_name text NOT NULL, \
     reason text NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now(), \
     PRIMARY KEY (event_id, entity_type, entity_id, field_name))",
    super::scans::CREATE_SCANS,
    super::schema_check::CREATE_SCHEMA_CHECK,
    super::trust::CREATE_TRUST,
    super::read_counts::CREATE_READ_COUNTS,
    super::event_log::PG_DDL[0],
    super::event_log::PG_DDL[1],
];

const SQLITE_TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS \"_sgcache_types\" (entity_type TEXT PRIMARY KEY, \
     table_name TEXT NOT NULL, display_field TEXT, added_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS \"_sgcache_fields\" (entity_type TEXT NOT NULL, \
     field_name TEXT NOT NULL, data_type TEXT NOT NULL, storage TEXT NOT NULL, \
     state TEXT NOT NULL, schema TEXT, backfill_cursor INTEGER, \
     backfill_done INTEGER NOT NULL DEFAULT 0, backfill_total INTEGER, \
     updated_at TEXT NOT NULL, unservable_reason TEXT, unservable_id INTEGER, \
     PRIMARY KEY (entity_type, field_name))",
    "CREATE TABLE IF NOT EXISTS \"_sgcache_events\" (id INTEGER PRIMARY KEY CHECK (id = 1), \
     last_event_id INTEGER, backlog TEXT NOT NULL DEFAULT '[]', updated_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS \"_sgcache_migrations\" (id INTEGER PRIMARY KEY, \
     applied_at TEXT NOT NULL, plan TEXT NOT NULL, spec_hash TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS \"_sgcache_dead_letters\" (event_id INTEGER NOT NULL, \
     entity_type TEXT NOT NULL, entity_id INTEGER NOT NULL, field_name TEXT NOT NULL, \
     reason TEXT NOT NULL, recorded_at TEXT NOT NULL, \
     PRIMARY KEY (event_id, entity_type, entity_id, field_name))",
    super::scans::CREATE_SCANS,
    super::schema_check::CREATE_SCHEMA_CHECK,
    super::trust::CREATE_TRUST,
    super::read_counts::CREATE_READ_COUNTS,
    super::event_log::SQLITE_DDL[0],
    super::event_log::SQLITE_DDL[1],
];

/// The state tables, in creation order: what `migrate` creates and what deleting a cache
/// must drop with the entity tables.
const CREATED_STATE_TABLES: &[&str] = STATE_TABLES;

/// Every table the cache keeps about itself (not entity data).
pub const STATE_TABLES: &[&str] = &[
    "_sgcache_types",
    "_sgcache_fields",
    "_sgcache_events",
    "_sgcache_migrations",
    "_sgcache_dead_letters",
    "_sgcache_scans",
    "_sgcache_trust",
    "_sgcache_read_counts",
    "_sgcache_event_log",
    "_sgcache_event_log_window",
    "_sgcache_schema_check",
];

/// Columns added to state tables after the first release: (table, column, PostgreSQL type,
/// SQLite type). `migrate` adds those an older cache lacks.
const ADDED_COLUMNS: &[(&str, &str, &str, &str)] = &[
    ("_sgcache_fields", "unservable_reason", "text", "TEXT"),
    ("_sgcache_fields", "unservable_id", "bigint", "INTEGER"),
    ("_sgcache_events", "caught_up_at", "timestamptz", "TEXT"),
    (
        "_sgcache_events",
        "failures",
        "bigint NOT NULL DEFAULT 0",
        "INTEGER NOT NULL DEFAULT 0",
    ),
    ("_sgcache_events", "last_error", "text", "TEXT"),
    // Null: not known (fields recorded before the flag); see `mark_non_ascii`.
    ("_sgcache_fields", "non_ascii", "boolean", "INTEGER"),
    // When the backfill that set `backfill_cursor` began; see `set_backfill_progress`.
    (
        "_sgcache_fields",
        "backfill_started_ms",
        "bigint",
        "INTEGER",
    ),
];

/// Creates the state tables if they are missing, and the columns added since.
pub async fn ensure_state_tables(tx: &mut Tx) -> Result<(), StorageError> {
    let dialect = tx.dialect();
    super::site_binding::ensure_table(tx).await?;
    if count_state_tables(tx).await? != CREATED_STATE_TABLES.len() as i64 {
        // (Skipped when all exist: PostgreSQL would log "already exists" notices every run.)
        let ddl = match dialect {
            Dialect::Postgres => PG_TABLES,
            Dialect::Sqlite => SQLITE_TABLES,
        };
        for stmt in ddl {
            let mut sql = Sql::new(dialect);
            sql.push(stmt);
            tx.execute(&sql).await?;
        }
    }
    if !has_column(tx, super::trust::TRUST_TABLE, "last_check_ms").await? {
        add_columns(
            tx,
            super::trust::TRUST_TABLE,
            super::trust::ADDED_TRUST_COLUMNS,
        )
        .await?;
    }
    for (table, column, pg, sqlite) in ADDED_COLUMNS {
        if has_column(tx, table, column).await? {
            continue;
        }
        let mut sql = Sql::new(dialect);
        sql.push("ALTER TABLE ")
            .push_ident(table)
            .push(" ADD COLUMN ")
            .push_ident(column)
            .push(" ")
            .push(match dialect {
                Dialect::Postgres => pg,
                Dialect::Sqlite => sqlite,
            });
        tx.execute(&sql).await?;
    }
    Ok(())
}

/// Adds `columns` (name, DDL type the same on both dialects) to state table `table`.
pub(super) async fn add_columns(
    tx: &mut Tx,
    table: &str,
    columns: &[(&str, &str)],
) -> Result<(), StorageError> {
    for (column, ty) in columns {
        let mut sql = tx.sql();
        sql.push("ALTER TABLE ")
            .push_ident(table)
            .push(" ADD COLUMN ")
            .push_ident(column)
            .push(" ")
            .push(ty);
        tx.execute(&sql).await?;
    }
    Ok(())
}

/// True when state table `table` has `column` (older caches lack the columns added since).
pub(super) async fn has_column(
    tx: &mut Tx,
    table: &str,
    column: &str,
) -> Result<bool, StorageError> {
    let mut sql = tx.sql();
    match tx.dialect() {
        Dialect::Postgres => sql
            .push(
                "SELECT count(*) FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = ",
            )
            .push_bind(SqlValue::Text(table.into()))
            .push(" AND column_name = "),
        Dialect::Sqlite => sql
            .push("SELECT count(*) FROM pragma_table_info(")
            .push_bind(SqlValue::Text(table.into()))
            .push(") WHERE name = "),
    };
    sql.push_bind(SqlValue::Text(column.into()));
    let rows = tx.fetch_all(&sql).await?;
    Ok(matches!(rows.first().and_then(|r| r.first()), Some(SqlValue::Int(n)) if *n > 0))
}

/// A `name IN (...)` list of the created state tables, for catalog queries.
fn state_table_list() -> String {
    CREATED_STATE_TABLES
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn count_state_tables(tx: &mut Tx) -> Result<i64, StorageError> {
    let mut sql = tx.sql();
    let list = state_table_list();
    match tx.dialect() {
        Dialect::Postgres => sql.push(&format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() \
             AND table_name IN ({list})"
        )),
        Dialect::Sqlite => sql.push(&format!(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ({list})"
        )),
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
    /// When the backfill that reached `backfill_cursor` began (ms since the epoch), so one
    /// resumed after a crash knows since when rows may have changed behind it.
    pub backfill_started_ms: Option<i64>,
    /// Why the field is unservable (state `unservable`), and the first entity id met.
    pub unservable_reason: Option<String>,
    pub unservable_id: Option<i64>,
}

/// Every field with storage, ordered by type and name.
pub async fn list_fields(db: &Db) -> Result<Vec<FieldStatus>, StorageError> {
    let mut tx = db.begin().await?;
    if !state_tables_exist(&mut tx).await? {
        return Ok(vec![]);
    }
    // A cache not migrated since the unservable columns came reads as if none were set.
    let unservable = if has_column(&mut tx, "_sgcache_fields", "unservable_id").await? {
        "unservable_reason, unservable_id"
    } else {
        "NULL, NULL"
    };
    let started = if has_column(&mut tx, "_sgcache_fields", "backfill_started_ms").await? {
        "backfill_started_ms"
    } else {
        "NULL"
    };
    let mut sql = tx.sql();
    sql.push(&format!(
        "SELECT entity_type, field_name, data_type, storage, state, schema, backfill_cursor, \
         backfill_done, backfill_total, {unservable}, {started} FROM \"_sgcache_fields\" \
         ORDER BY entity_type, field_name"
    ));
    let t = "_sgcache_fields";
    tx.fetch_all(&sql)
        .await?
        .into_iter()
        .map(|row| {
            let [et, name, dt, storage, st, schema, cursor, done, total, why, first, began] =
                take::<12>(row, t)?;
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
                backfill_started_ms: opt_int(began),
                unservable_reason: opt_text(why),
                unservable_id: opt_int(first),
            })
        })
        .collect()
}

/// Moves fields to `state` (pending → backfilling → ready). Dropped and unservable fields are
/// left alone: only a migration brings them back (a backfill that met a value it could not
/// store must not declare its field ready). Returns the number of fields changed.
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
        .push(" WHERE state NOT IN ('dropped', 'unservable') AND entity_type = ")
        .push_bind(SqlValue::Text(entity_type.into()));
    push_in_list(&mut sql, "field_name", fields);
    Ok(tx.execute(&sql).await?)
}

/// Records backfill progress of fields: the last id done, how many done, how many in total,
/// and when the backfill began (`started_ms`): kept while the cursor is set, so a backfill
/// resumed after a crash keeps the start of its first part (unknown, null, for one begun
/// before the column existed); a reset cursor (null) starts afresh.
pub async fn set_backfill_progress(
    tx: &mut Tx,
    entity_type: &str,
    fields: &[String],
    cursor: Option<i64>,
    done: i64,
    total: Option<i64>,
    started_ms: i64,
) -> Result<u64, StorageError> {
    if fields.is_empty() {
        return Ok(0);
    }
    let opt = |v: Option<i64>| v.map_or(SqlValue::Null, SqlValue::Int);
    let mut sql = tx.sql();
    sql.push(
        "UPDATE \"_sgcache_fields\" SET backfill_started_ms = CASE \
         WHEN backfill_cursor IS NULL THEN ",
    )
    .push_bind(SqlValue::Int(started_ms))
    .push(" ELSE backfill_started_ms END, backfill_cursor = ")
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

/// Records that the event follower had applied every event the site had when it read at
/// `at` (a poll that found fewer new events than a batch, all applied). Never moves back.
pub async fn mark_caught_up(tx: &mut Tx, at: DateTime<Utc>) -> Result<(), StorageError> {
    let value = match tx.dialect() {
        Dialect::Postgres => SqlValue::DateTime(at),
        Dialect::Sqlite => SqlValue::Text(super::format_micros(&at)),
    };
    let mut sql = tx.sql();
    sql.push("UPDATE \"_sgcache_events\" SET caught_up_at = ")
        .push_bind(value.clone())
        .push(" WHERE id = 1 AND (caught_up_at IS NULL OR caught_up_at < ")
        .push_bind(value)
        .push(")");
    tx.execute(&sql).await?;
    Ok(())
}

/// How recently the cache knew it matched the site: the event follower's last caught-up time
/// (for every type) and each type's last complete scan start.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Freshness {
    pub caught_up_at: Option<DateTime<Utc>>,
    pub scanned_at: std::collections::BTreeMap<String, DateTime<Utc>>,
    /// Consecutive failed polls of the event follower (0 while it works).
    pub follower_failures: i64,
}

impl Freshness {
    /// When `entity_type` was last known to match the site; `None` when no follower or scan
    /// has ever said (the cache is then not judged stale: nothing measures it).
    pub fn fresh_at(&self, entity_type: &str) -> Option<DateTime<Utc>> {
        self.caught_up_at
            .into_iter()
            .chain(self.scanned_at.get(entity_type).copied())
            .max()
    }
}

/// Reads [`Freshness`]; tables or columns an older cache lacks read as unknown.
pub async fn read_freshness(db: &Db) -> Result<Freshness, StorageError> {
    let mut tx = db.begin().await?;
    let mut out = Freshness::default();
    if has_column(&mut tx, "_sgcache_events", "caught_up_at").await? {
        let mut sql = tx.sql();
        sql.push("SELECT caught_up_at, failures FROM \"_sgcache_events\" WHERE id = 1");
        if let Some(row) = tx.fetch_all(&sql).await?.into_iter().next() {
            out.caught_up_at = row.first().and_then(time_of);
            out.follower_failures = match row.get(1) {
                Some(SqlValue::Int(n)) => *n,
                _ => 0,
            };
        }
    }
    if has_column(&mut tx, "_sgcache_scans", "started_ms").await? {
        let mut sql = tx.sql();
        sql.push("SELECT entity_type, started_ms FROM \"_sgcache_scans\"");
        for row in tx.fetch_all(&sql).await? {
            if let [SqlValue::Text(t), SqlValue::Int(ms)] = row.as_slice() {
                if let Some(at) = DateTime::<Utc>::from_timestamp_millis(*ms) {
                    out.scanned_at.insert(t.clone(), at);
                }
            }
        }
    }
    Ok(out)
}

fn time_of(v: &SqlValue) -> Option<DateTime<Utc>> {
    match v {
        SqlValue::DateTime(t) => Some(*t),
        SqlValue::Text(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        _ => None,
    }
}

/// Records the event follower's consecutive failed polls and the last error (0 and none once
/// a poll works again), so the proxy's metrics and the operator see a stuck follower.
pub async fn record_follower_failures(
    db: &Db,
    failures: i64,
    last_error: Option<&str>,
) -> Result<(), StorageError> {
    let mut tx = db.begin().await?;
    let mut sql = tx.sql();
    sql.push("UPDATE \"_sgcache_events\" SET failures = ")
        .push_bind(SqlValue::Int(failures))
        .push(", last_error = ")
        .push_bind(last_error.map_or(SqlValue::Null, |e| SqlValue::Text(e.into())))
        .push(" WHERE id = 1");
    tx.execute(&sql).await?;
    tx.commit().await?;
    Ok(())
}

/// Whether each field's column holds text outside ASCII, by (type, field): `None` when not
/// known (recorded before the flag existed, or a cache not migrated since).
pub async fn read_non_ascii(
    db: &Db,
) -> Result<std::collections::BTreeMap<(String, String), Option<bool>>, StorageError> {
    let mut tx = db.begin().await?;
    let mut out = std::collections::BTreeMap::new();
    if has_column(&mut tx, "_sgcache_fields", "non_ascii").await? {
        let mut sql = tx.sql();
        sql.push("SELECT entity_type, field_name, non_ascii FROM \"_sgcache_fields\"");
        for row in tx.fetch_all(&sql).await? {
            if let [SqlValue::Text(t), SqlValue::Text(f), flag] = row.as_slice() {
                let flag = match flag {
                    SqlValue::Bool(b) => Some(*b),
                    SqlValue::Int(n) => Some(*n != 0),
                    _ => None,
                };
                out.insert((t.clone(), f.clone()), flag);
            }
        }
    }
    tx.commit().await?;
    Ok(out)
}

/// Records that the columns of `fields` of `entity_type` now hold text outside ASCII (set by
/// the writes that store it; never cleared while the column keeps its data).
pub(super) async fn mark_non_ascii(
    tx: &mut Tx,
    entity_type: &str,
    fields: &std::collections::BTreeSet<&str>,
) -> Result<(), StorageError> {
    if fields.is_empty() || !has_column(tx, "_sgcache_fields", "non_ascii").await? {
        return Ok(());
    }
    let mut sql = tx.sql();
    sql.push("UPDATE \"_sgcache_fields\" SET non_ascii = ")
        .push_bind(SqlValue::Bool(true))
        .push(" WHERE entity_type = ")
        .push_bind(SqlValue::Text(entity_type.into()))
        .push(" AND (non_ascii IS NULL OR non_ascii = ")
        .push_bind(SqlValue::Bool(false))
        .push(") AND field_name IN (");
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push_bind(SqlValue::Text((*f).into()));
    }
    sql.push(")");
    tx.execute(&sql).await?;
    Ok(())
}
