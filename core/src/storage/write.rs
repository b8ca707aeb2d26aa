//! The entity write path shared by the scanner, the event follower and the proxy's
//! write-through: API3 records in, multi-row upserts out, guarded so older data never
//! overwrites newer data and replayed events change nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::convert::{
    check_link_types, convert, parse_date_time, unstorable_placeholder, Converted, Unstorable,
};
use super::ddl::field_columns;
use super::{now_value, StorageError};
use crate::ident;
use crate::plan::DbState;
use crate::schema::Storage;
use crate::sql::{Db, Dialect, Sql, SqlValue, Tx};

/// Bound values per statement: under SQLite's 32766 and PostgreSQL's 65535.
const MAX_BINDS: usize = 30_000;

/// When a read of the site began, on the clock of the cache database that `_cached_at` is
/// written with ([`read_mark`]): what that read returned may be older than a row another
/// writer changed since, which the site's `updated_at` (whole seconds, and untouched by a
/// write-through `delete`) cannot always tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadMark(DateTime<Utc>);

impl ReadMark {
    pub(super) fn value(self, dialect: Dialect) -> SqlValue {
        match dialect {
            Dialect::Postgres => SqlValue::DateTime(self.0),
            Dialect::Sqlite => SqlValue::Text(super::format_micros(&self.0)),
        }
    }
}

/// The cache database's clock now, taken before a read of the site whose rows are written
/// with [`WriteSource::Read`]. PostgreSQL's own clock, as every process writing the cache
/// stamps `_cached_at` with it; SQLite's callers share this machine's clock.
pub async fn read_mark(db: &Db) -> Result<ReadMark, StorageError> {
    if db.dialect() == Dialect::Sqlite {
        return Ok(ReadMark(Utc::now()));
    }
    let mut sql = db.sql();
    sql.push("SELECT clock_timestamp()");
    mark_of(db.fetch_all(&sql).await?)
}

/// [`read_mark`] in a transaction the caller holds anyway (one round trip, no other
/// connection).
pub async fn read_mark_tx(tx: &mut Tx) -> Result<ReadMark, StorageError> {
    if tx.dialect() == Dialect::Sqlite {
        return Ok(ReadMark(Utc::now()));
    }
    let mut sql = tx.sql();
    sql.push("SELECT clock_timestamp()");
    mark_of(tx.fetch_all(&sql).await?)
}

fn mark_of(rows: Vec<Vec<SqlValue>>) -> Result<ReadMark, StorageError> {
    match rows.first().and_then(|r| r.first()) {
        Some(SqlValue::DateTime(t)) => Ok(ReadMark(*t)),
        other => Err(StorageError::Db(sqlx::Error::Protocol(format!(
            "clock_timestamp() returned {other:?}"
        )))),
    }
}

/// Where the data of a write comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteSource {
    /// Rows a `read` of the site returned (a scan, the follower's fetch, a refresh), live or
    /// `retired` as that read asked, the read having begun `at`. Such a row is one instant's
    /// view: it never changes a row another writer changed after that instant unless its
    /// `updated_at` is newer, and never changes the retired flag of such a row (a delete
    /// answered through the proxy while the read was on its way back).
    Read { at: ReadMark, retired: bool },
    /// The proxy forwarded a create/update and writes the site's answer: the rows are live.
    WriteThrough,
    /// An EventLogEntry: applied once; replays (id <= `_last_event_id`) are no-ops.
    Event { event_id: i64 },
}

/// What a write did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Rows inserted or updated.
    pub written: u64,
    /// Rows left alone because they already hold newer data (or the event was applied).
    pub skipped: u64,
    /// Values stored as null because their column cannot hold them: their fields are now
    /// unservable (docs/storage.md "Values the cache cannot store").
    pub unstorable: u64,
}

/// A value the cache could not store: the field becomes unservable (docs/storage.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnstorableValue {
    pub field: String,
    pub entity_id: i64,
    pub reason: Unstorable,
}

/// The fields of a type the cache writes, with what a value must be to be stored.
struct FieldRule {
    storage: Storage,
    /// Target types of link fields (empty: any, or not a link).
    valid_types: Vec<String>,
}

/// One record, validated and converted.
struct Row {
    id: i64,
    updated_at: Option<DateTime<Utc>>,
    values: BTreeMap<String, Converted>,
}

/// Upserts API3 records (`{"type", "id", field: value, ...}`, as `read` returns them) into
/// the table of `entity_type`. Only fields present in a record and cached (not dropped) are
/// written; multi-entity fields present replace the entity's links, keeping their order.
/// Every record is stored: a value its column cannot hold is stored as null, its field is
/// marked unservable and a dead letter records it ([`super::mark_unservable`]), in this
/// transaction. Only records without an integer id or of another type fail the call.
pub async fn upsert_entities(
    tx: &mut Tx,
    state: &DbState,
    entity_type: &str,
    records: &[Value],
    source: WriteSource,
) -> Result<WriteOutcome, StorageError> {
    if !state.types.contains_key(entity_type) {
        return Err(StorageError::NotCached(entity_type.into()));
    }
    let fields: BTreeMap<&str, FieldRule> = state
        .live_fields(entity_type)
        .map(|(name, r)| (name.as_str(), field_rule(entity_type, name, r)))
        .collect();
    let (rows, unstorable) = parse_rows(entity_type, &fields, records)?;
    super::state::mark_non_ascii(tx, entity_type, &non_ascii_fields(&fields, &rows)).await?;
    // Rows carrying the same fields share a statement.
    let mut groups: BTreeMap<(Vec<&str>, bool), Vec<&Row>> = BTreeMap::new();
    for row in rows.values() {
        let key = (
            row.values.keys().map(String::as_str).collect(),
            row.updated_at.is_some(),
        );
        groups.entry(key).or_default().push(row);
    }
    let mut outcome = WriteOutcome::default();
    for ((names, has_updated_at), rows) in groups {
        let group = Group {
            entity_type,
            fields: names.iter().map(|n| (*n, fields[n].storage)).collect(),
            has_updated_at,
            source,
        };
        let written = group.write(tx, &rows).await?;
        outcome.written += written;
        outcome.skipped += rows.len() as u64 - written;
    }
    outcome.unstorable = unstorable.len() as u64;
    if !unstorable.is_empty() {
        let event_id = match source {
            WriteSource::Event { event_id } => Some(event_id),
            _ => None,
        };
        super::unservable::record(tx, entity_type, &unstorable, event_id).await?;
    }
    Ok(outcome)
}

/// Text-stored fields some row writes text outside ASCII into (see
/// `super::state::mark_non_ascii`).
fn non_ascii_fields<'a>(
    fields: &BTreeMap<&'a str, FieldRule>,
    rows: &BTreeMap<i64, Row>,
) -> std::collections::BTreeSet<&'a str> {
    fields
        .iter()
        .filter(|(_, rule)| rule.storage == Storage::Text)
        .filter(|(name, _)| {
            rows.values().any(|r| {
                matches!(r.values.get(**name), Some(Converted::One(SqlValue::Text(t))) if !t.is_ascii())
            })
        })
        .map(|(name, _)| *name)
        .collect()
}

fn field_rule(entity_type: &str, name: &str, record: &crate::plan::FieldRecord) -> FieldRule {
    let storage = record.storage();
    let valid_types = match storage {
        Storage::EntityLink | Storage::MultiEntity => {
            crate::schema::FieldSchema::from_api(entity_type, name, &record.schema)
                .map(|f| f.valid_types)
                .unwrap_or_default()
        }
        _ => Vec::new(),
    };
    FieldRule {
        storage,
        valid_types,
    }
}

/// Converts one value; a value the column cannot hold becomes null and is reported.
fn convert_value(rule: &FieldRule, value: &Value) -> Result<Converted, Unstorable> {
    let converted = convert(rule.storage, value)?;
    check_link_types(&converted, &rule.valid_types)?;
    Ok(converted)
}

type ParsedRows = (BTreeMap<i64, Row>, Vec<UnstorableValue>);

fn parse_rows(
    entity_type: &str,
    fields: &BTreeMap<&str, FieldRule>,
    records: &[Value],
) -> Result<ParsedRows, StorageError> {
    let bad = |message: String| StorageError::BadRecord {
        entity_type: entity_type.into(),
        message,
    };
    let mut rows = BTreeMap::new();
    let mut unstorable = Vec::new();
    for record in records {
        let obj = record
            .as_object()
            .ok_or_else(|| bad("expected an object".to_string()))?;
        let id = obj
            .get("id")
            .and_then(Value::as_i64)
            .ok_or_else(|| bad("record without an integer id".to_string()))?;
        if let Some(t) = obj.get("type").filter(|t| t.as_str() != Some(entity_type)) {
            return Err(bad(format!("record {id} has type {t}")));
        }
        let mut report = |field: &str, reason: Unstorable| {
            unstorable.push(UnstorableValue {
                field: field.into(),
                entity_id: id,
                reason,
            })
        };
        // A row whose updated_at cannot be read is still stored, without the scan guard (the
        // field itself is reported below, as any other value).
        let updated_at = obj
            .get("updated_at")
            .and_then(Value::as_str)
            .and_then(parse_date_time);
        let mut values = BTreeMap::new();
        for (name, value) in obj {
            let Some(rule) = fields.get(name.as_str()).filter(|_| name != "id") else {
                continue; // not cached here (or the key itself): nothing to store
            };
            let converted = convert_value(rule, value).unwrap_or_else(|reason| {
                report(name, reason);
                unstorable_placeholder(rule.storage)
            });
            values.insert(name.clone(), converted);
        }
        // The last record of an id wins, as it would in sequential writes.
        rows.insert(
            id,
            Row {
                id,
                updated_at,
                values,
            },
        );
    }
    Ok((rows, unstorable))
}

/// Rows with the same fields, written by the same statements.
struct Group<'a> {
    entity_type: &'a str,
    fields: Vec<(&'a str, Storage)>,
    has_updated_at: bool,
    source: WriteSource,
}

impl Group<'_> {
    /// Entity-table columns, in the order values are bound.
    fn columns(&self) -> Vec<String> {
        let mut cols = vec!["id".to_string()];
        for (name, storage) in &self.fields {
            cols.extend(field_columns(name, *storage).into_iter().map(|(c, _)| c));
        }
        cols.push("_cached_at".into());
        if self.has_updated_at {
            cols.push("_updated_at_seen".into());
        }
        match self.source {
            WriteSource::Event { .. } => cols.push("_last_event_id".into()),
            WriteSource::Read { .. } | WriteSource::WriteThrough => cols.push("_retired".into()),
        }
        cols
    }

    /// A row's values in [`Self::columns`] order; `None` is `_cached_at`, the database's clock.
    fn row_values(&self, row: &Row) -> Vec<Option<SqlValue>> {
        let mut vals = vec![SqlValue::Int(row.id)];
        for (name, storage) in &self.fields {
            match (storage, &row.values[*name]) {
                (Storage::MultiEntity, _) => {}
                (_, Converted::One(v)) => vals.push(v.clone()),
                (_, Converted::Link(t, id)) => vals.extend([t.clone(), id.clone()]),
                (_, Converted::Links(_)) => {}
            }
        }
        let mut vals: Vec<Option<SqlValue>> = vals.into_iter().map(Some).collect();
        vals.push(None);
        if let Some(t) = row.updated_at {
            vals.push(Some(SqlValue::DateTime(t)));
        }
        vals.push(Some(match self.source {
            WriteSource::Event { event_id } => SqlValue::Int(event_id),
            WriteSource::Read { retired, .. } => SqlValue::Bool(retired),
            // A write's answer is the live row.
            WriteSource::WriteThrough => SqlValue::Bool(false),
        }));
        vals
    }

    async fn write(&self, tx: &mut Tx, rows: &[&Row]) -> Result<u64, StorageError> {
        let table = ident::table_name(self.entity_type);
        let cols = self.columns();
        let mut written = Vec::new();
        for chunk in rows.chunks((MAX_BINDS / cols.len()).max(1)) {
            let mut sql = tx.sql();
            sql.push("INSERT INTO ").push_ident(&table).push(" (");
            push_ident_list(&mut sql, &cols);
            sql.push(") VALUES ");
            for (i, row) in chunk.iter().enumerate() {
                sql.push(if i == 0 { "(" } else { ", (" });
                for (j, v) in self.row_values(row).into_iter().enumerate() {
                    if j > 0 {
                        sql.push(", ");
                    }
                    match v {
                        Some(v) => {
                            sql.push_bind(v);
                        }
                        None => push_now(&mut sql),
                    }
                }
                sql.push(")");
            }
            self.push_conflict_clause(&mut sql, &table, &cols);
            for r in tx.fetch_all(&sql).await? {
                if let Some(SqlValue::Int(id)) = r.first() {
                    written.push(*id);
                }
            }
        }
        let by_id: BTreeMap<i64, &Row> = rows.iter().map(|r| (r.id, *r)).collect();
        let written_rows: Vec<&Row> = written
            .iter()
            .filter_map(|id| by_id.get(id).copied())
            .collect();
        for (name, storage) in &self.fields {
            if *storage == Storage::MultiEntity {
                let assoc = ident::assoc_table_name(self.entity_type, name);
                replace_links(tx, &assoc, name, &written_rows).await?;
            }
        }
        Ok(written.len() as u64)
    }

    /// `ON CONFLICT (id) DO UPDATE SET … WHERE <guards> RETURNING id`: the row is only
    /// overwritten by data at least as new (docs/storage.md, "Entity writes").
    fn push_conflict_clause(&self, sql: &mut Sql, table: &str, cols: &[String]) {
        let mark = match self.source {
            WriteSource::Read { at, .. } => Some(at.value(sql.dialect)),
            _ => None,
        };
        sql.push(" ON CONFLICT (\"id\") DO UPDATE SET ");
        for (i, c) in cols.iter().skip(1).enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push_ident(c).push(" = ");
            match &mark {
                // A read never flips the flag of a row written since it began (a delete or
                // revive answered through the proxy meanwhile).
                Some(mark) if c == "_retired" => {
                    sql.push("CASE WHEN ");
                    push_written_since(sql, table, mark.clone());
                    sql.push(" THEN ")
                        .push_ident(table)
                        .push(".\"_retired\" ELSE excluded.\"_retired\" END");
                }
                _ => {
                    sql.push("excluded.").push_ident(c);
                }
            }
        }
        let seen = |sql: &mut Sql| {
            sql.push_ident(table).push(".\"_updated_at_seen\"");
        };
        let mut first = true;
        let mut and = |sql: &mut Sql| {
            sql.push(if first { " WHERE (" } else { ") AND (" });
            first = false;
        };
        match (self.has_updated_at, &mark) {
            (true, None) => {
                and(sql);
                seen(sql);
                sql.push(" IS NULL OR ");
                seen(sql);
                sql.push(" <= excluded.\"_updated_at_seen\"");
            }
            // Newer than the row; or as new, or the row's age unknown (the site's seconds cannot
            // order two writes within one), and nobody wrote the row since the read began.
            (true, Some(mark)) => {
                and(sql);
                seen(sql);
                sql.push(" < excluded.\"_updated_at_seen\" OR ((");
                seen(sql);
                sql.push(" IS NULL OR ");
                seen(sql);
                sql.push(" = excluded.\"_updated_at_seen\") AND NOT ");
                push_written_since(sql, table, mark.clone());
                sql.push(")");
            }
            (false, Some(mark)) => {
                and(sql);
                sql.push("NOT ");
                push_written_since(sql, table, mark.clone());
            }
            (false, None) => {}
        }
        if matches!(self.source, WriteSource::Event { .. }) {
            and(sql);
            sql.push_ident(table)
                .push(".\"_last_event_id\" IS NULL OR ")
                .push_ident(table)
                .push(".\"_last_event_id\" < excluded.\"_last_event_id\"");
        }
        if !first {
            sql.push(")");
        }
        sql.push(" RETURNING \"id\"");
    }
}

/// `table."_cached_at" > mark`: another writer changed the row after a read began.
pub(super) fn push_written_since(sql: &mut Sql, table: &str, mark: SqlValue) {
    sql.push_ident(table)
        .push(".\"_cached_at\" > ")
        .push_bind(mark);
}

/// The value of `_cached_at`: PostgreSQL's clock, which every process writing the cache
/// shares (a [`ReadMark`] is compared with it); this machine's on SQLite.
fn push_now(sql: &mut Sql) {
    match sql.dialect {
        Dialect::Postgres => {
            sql.push("clock_timestamp()");
        }
        Dialect::Sqlite => {
            sql.push_bind(now_value(Dialect::Sqlite));
        }
    }
}

fn push_ident_list(sql: &mut Sql, names: &[String]) {
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push_ident(n);
    }
}

/// Replaces the association rows of `rows` for one multi-entity field, keeping link order.
async fn replace_links(
    tx: &mut Tx,
    assoc: &str,
    field: &str,
    rows: &[&Row],
) -> Result<(), StorageError> {
    for chunk in rows.chunks(MAX_BINDS) {
        let mut sql = tx.sql();
        sql.push("DELETE FROM ")
            .push_ident(assoc)
            .push(" WHERE \"_entity_id\" IN (");
        for (i, row) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push_bind(SqlValue::Int(row.id));
        }
        sql.push(")");
        tx.execute(&sql).await?;
    }
    let links: Vec<(i64, i64, &str, i64)> = rows
        .iter()
        .flat_map(|row| match &row.values[field] {
            Converted::Links(l) => l
                .iter()
                .enumerate()
                .map(|(pos, (t, id))| (row.id, pos as i64, t.as_str(), *id))
                .collect(),
            _ => vec![],
        })
        .collect();
    for chunk in links.chunks(MAX_BINDS / 4) {
        let mut sql = tx.sql();
        sql.push("INSERT INTO ")
            .push_ident(assoc)
            .push(" (\"_entity_id\", \"_position\", \"_target_type\", \"_target_id\") VALUES ");
        for (i, (entity, pos, t, id)) in chunk.iter().enumerate() {
            sql.push(if i == 0 { "(" } else { ", (" })
                .push_bind(SqlValue::Int(*entity))
                .push(", ")
                .push_bind(SqlValue::Int(*pos))
                .push(", ")
                .push_bind(SqlValue::Text((*t).into()))
                .push(", ")
                .push_bind(SqlValue::Int(*id))
                .push(")");
        }
        tx.execute(&sql).await?;
    }
    Ok(())
}

/// Marks entities retired (the site retired them). Returns the rows changed.
pub async fn retire(
    tx: &mut Tx,
    state: &DbState,
    entity_type: &str,
    ids: &[i64],
    source: WriteSource,
) -> Result<u64, StorageError> {
    set_retired(tx, state, entity_type, ids, true, source).await
}

/// Marks entities live again (the site revived them). Returns the rows changed.
pub async fn revive(
    tx: &mut Tx,
    state: &DbState,
    entity_type: &str,
    ids: &[i64],
    source: WriteSource,
) -> Result<u64, StorageError> {
    set_retired(tx, state, entity_type, ids, false, source).await
}

async fn set_retired(
    tx: &mut Tx,
    state: &DbState,
    entity_type: &str,
    ids: &[i64],
    retired: bool,
    source: WriteSource,
) -> Result<u64, StorageError> {
    let table = cached_table(state, entity_type)?;
    let mut changed = 0;
    for chunk in ids.chunks(MAX_BINDS) {
        let mut sql = retired_flag_update(tx, &table, retired);
        match source {
            WriteSource::Event { event_id } => {
                sql.push(", \"_last_event_id\" = ")
                    .push_bind(SqlValue::Int(event_id));
                sql.push(" WHERE (\"_last_event_id\" IS NULL OR \"_last_event_id\" < ")
                    .push_bind(SqlValue::Int(event_id))
                    .push(") AND ");
            }
            // What a read found is not news about a row written since it began.
            WriteSource::Read { at, .. } => {
                sql.push(" WHERE NOT ");
                push_written_since(&mut sql, &table, at.value(tx.dialect()));
                sql.push(" AND ");
            }
            WriteSource::WriteThrough => {
                sql.push(" WHERE ");
            }
        }
        sql.push("\"id\" IN (");
        sql.push_id_list(chunk);
        sql.push(")");
        changed += tx.execute(&sql).await?;
    }
    Ok(changed)
}

/// After a full scan page covering ids in `(after_id, through_id]` (no upper bound when
/// `None`), read from `read_at`, returned `seen`, marks the live rows of that range it did not
/// return as retired, except rows written since the read began (a revive answered through the
/// proxy meanwhile). `seen` is one page, at most 30,000 ids. Returns the rows retired.
pub async fn retire_missing(
    tx: &mut Tx,
    state: &DbState,
    entity_type: &str,
    (after_id, through_id): (i64, Option<i64>),
    seen: &[i64],
    read_at: ReadMark,
) -> Result<u64, StorageError> {
    let table = cached_table(state, entity_type)?;
    if seen.len() > MAX_BINDS {
        return Err(StorageError::BadRecord {
            entity_type: entity_type.into(),
            message: format!("retire_missing takes one page of at most {MAX_BINDS} ids"),
        });
    }
    let mut sql = retired_flag_update(tx, &table, true);
    sql.push(" WHERE \"_retired\" = ")
        .push_bind(SqlValue::Bool(false))
        .push(" AND NOT ");
    push_written_since(&mut sql, &table, read_at.value(tx.dialect()));
    sql.push(" AND \"id\" > ")
        .push_bind(SqlValue::Int(after_id));
    if let Some(through) = through_id {
        sql.push(" AND \"id\" <= ")
            .push_bind(SqlValue::Int(through));
    }
    if !seen.is_empty() {
        sql.push(" AND \"id\" NOT IN (");
        sql.push_id_list(seen);
        sql.push(")");
    }
    Ok(tx.execute(&sql).await?)
}

/// `UPDATE table SET "_retired" = retired, "_cached_at" = now`: how every statement that flips
/// the flag starts (the caller adds which rows).
pub(super) fn retired_flag_update(tx: &Tx, table: &str, retired: bool) -> Sql {
    let mut sql = tx.sql();
    sql.push("UPDATE ")
        .push_ident(table)
        .push(" SET \"_retired\" = ")
        .push_bind(SqlValue::Bool(retired))
        .push(", \"_cached_at\" = ");
    push_now(&mut sql);
    sql
}

fn cached_table(state: &DbState, entity_type: &str) -> Result<String, StorageError> {
    state
        .types
        .get(entity_type)
        .map(|_| ident::table_name(entity_type))
        .ok_or_else(|| StorageError::NotCached(entity_type.into()))
}
