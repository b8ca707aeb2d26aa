//! The site's event log kept by the cache (`eventLog` in the spec): every EventLogEntry the
//! follower reads, of every entity type, stored in the transaction that advances its
//! position, so event daemons polling through the proxy are answered without the site.
//!
//! Two tables (docs/storage.md, "The event log"):
//! * `_sgcache_event_log`: one row per event, the fields daemons read (`id`, `event_type`,
//!   `attribute_name`, `meta`, `entity`, `user`, `project`, `session_uuid`, `created_at`),
//!   links as `{field}__type` / `{field}__id` like entity tables, `meta` as its JSON text
//!   (text, not `jsonb`: it comes back exactly as read, key order and all), and
//!   `_unstorable` for a record some column could not hold (reads returning it pass through).
//! * `_sgcache_event_log_window` (one row): `floor` and `through`: every event the site has
//!   with `floor < id <= through` is stored (`through` is the follower's contiguous position:
//!   no id at or below it can still show up late). Absent: nothing is answered.
//!
//! Trimming is two-phase so a proxy that read the window a moment ago never answers over a
//! hole: a trim raises `floor` first, and only a later trim (after [`TRIM_GRACE`]) deletes the
//! rows at or below it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::site_binding::table_exists;
use super::{parse_date_time, StorageError};
use crate::sql::{Db, Dialect, Sql, SqlValue, Tx};

pub const LOG_TABLE: &str = "_sgcache_event_log";
pub const WINDOW_TABLE: &str = "_sgcache_event_log_window";

/// The fields of EventLogEntry the cache keeps (the shotgunEvents daemon's list).
pub const LOG_FIELDS: &[&str] = &[
    "id",
    "event_type",
    "attribute_name",
    "meta",
    "entity",
    "user",
    "project",
    "session_uuid",
    "created_at",
];

/// How long rows stay after `floor` passed them: longer than any proxy takes to re-read the
/// window (its catalog refresh, 5 s), so no proxy answers from rows being deleted.
pub const TRIM_GRACE: Duration = Duration::from_secs(30);

pub(super) const PG_DDL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS \"_sgcache_event_log\" (id bigint PRIMARY KEY, \
     event_type text, attribute_name text, meta text, entity__type text, entity__id bigint, \
     user__type text, user__id bigint, project__type text, project__id bigint, \
     session_uuid text, created_at timestamptz, \
     _unstorable boolean NOT NULL DEFAULT false)",
    "CREATE TABLE IF NOT EXISTS \"_sgcache_event_log_window\" (id integer PRIMARY KEY \
     CHECK (id = 1), floor bigint NOT NULL, through bigint NOT NULL, floor_at_ms bigint NOT NULL, \
     trims bigint NOT NULL DEFAULT 0, trimmed_rows bigint NOT NULL DEFAULT 0, trimmed_at_ms bigint)",
];

pub(super) const SQLITE_DDL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS \"_sgcache_event_log\" (id INTEGER PRIMARY KEY, \
     event_type TEXT, attribute_name TEXT, meta TEXT, entity__type TEXT, entity__id INTEGER, \
     user__type TEXT, user__id INTEGER, project__type TEXT, project__id INTEGER, \
     session_uuid TEXT, created_at TEXT, _unstorable INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS \"_sgcache_event_log_window\" (id INTEGER PRIMARY KEY \
     CHECK (id = 1), floor INTEGER NOT NULL, through INTEGER NOT NULL, \
     floor_at_ms INTEGER NOT NULL, trims INTEGER NOT NULL DEFAULT 0, \
     trimmed_rows INTEGER NOT NULL DEFAULT 0, trimmed_at_ms INTEGER)",
];

/// Creates the two tables when missing (caches made before the event log was kept).
pub async fn ensure_tables(tx: &mut Tx) -> Result<(), StorageError> {
    for (table, i) in [(LOG_TABLE, 0), (WINDOW_TABLE, 1)] {
        if table_exists(tx, table).await? {
            continue;
        }
        let mut sql = tx.sql();
        sql.push(match tx.dialect() {
            Dialect::Postgres => PG_DDL[i],
            Dialect::Sqlite => SQLITE_DDL[i],
        });
        tx.execute(&sql).await?;
    }
    Ok(())
}

/// What the cache may answer: events with `floor < id <= through`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogWindow {
    pub floor: i64,
    pub through: i64,
}

/// The window, or None when the log is not kept (disabled, reset, or an older cache).
pub async fn read_window(db: &Db) -> Result<Option<LogWindow>, StorageError> {
    let mut tx = db.begin().await?;
    let out = window_tx(&mut tx).await?;
    tx.commit().await?;
    Ok(out)
}

async fn window_tx(tx: &mut Tx) -> Result<Option<LogWindow>, StorageError> {
    if !table_exists(tx, WINDOW_TABLE).await? {
        return Ok(None);
    }
    let mut sql = tx.sql();
    sql.push("SELECT floor, through FROM \"_sgcache_event_log_window\" WHERE id = 1");
    let rows = tx.fetch_all(&sql).await?;
    Ok(match rows.first().map(Vec::as_slice) {
        Some([SqlValue::Int(floor), SqlValue::Int(through)]) => Some(LogWindow {
            floor: *floor,
            through: *through,
        }),
        _ => None,
    })
}

/// The `entity` the site holds for an event. The site reads it as null while the entity is
/// retired (protocol doc 8.1: as of the read, not of the write), so a null read from an event
/// about an entity is rebuilt from `meta` (the doc's own rule: the target is `meta.entity_type`
/// / `meta.entity_id`, back-references excepted): once revived, the site shows the link again,
/// and reads from the log render it from the target's state then. A null that cannot be
/// rebuilt (a back-reference) is not stored as a null the site may not hold: the record is
/// unstorable (`Some(Value::Bool(false))`, which no link column takes).
fn entity_link(record: &Value) -> Option<Value> {
    let read = record.get("entity")?;
    if !read.is_null() {
        return Some(read.clone());
    }
    let event_type = record
        .get("event_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    let Some(rest) = event_type.strip_prefix("Shotgun_") else {
        return Some(Value::Null); // custom events: entity is whatever was written
    };
    let Some((ty, action)) = rest.rsplit_once('_') else {
        return Some(Value::Null);
    };
    if !matches!(action, "New" | "Change" | "Retirement" | "Revival") || ty == "DisplayColumn" {
        return Some(Value::Null);
    }
    let meta = record.get("meta").unwrap_or(&Value::Null);
    let same_type = meta.get("entity_type").and_then(Value::as_str) == Some(ty);
    let backref = meta.get("actual_attribute_changed").is_some();
    match meta.get("entity_id").and_then(Value::as_i64) {
        Some(id) if same_type && !backref => Some(serde_json::json!({"type": ty, "id": id})),
        _ => Some(Value::Bool(false)),
    }
}

/// One event as its columns, and whether every value fitted.
struct Row {
    id: i64,
    values: Vec<SqlValue>,
    unstorable: bool,
}

/// Largest integer JSON carries exactly through the follower (serde_json reads bigger ones as
/// floats): a `meta` holding a number beyond it would not come back as the site wrote it.
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

fn meta_exact(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.abs() < EXACT_INT)
        }
        Value::Array(a) => a.iter().all(meta_exact),
        Value::Object(m) => m.values().all(meta_exact),
        _ => true,
    }
}

fn row_of(record: &Value, dialect: Dialect) -> Option<Row> {
    let id = record.get("id")?.as_i64()?;
    let mut ok = true;
    let mut values = Vec::with_capacity(11);
    let text = |v: Option<&Value>, ok: &mut bool| match v {
        Some(Value::Null) => SqlValue::Null,
        Some(Value::String(s)) if !s.contains('\0') => SqlValue::Text(s.clone()),
        _ => {
            *ok = false;
            SqlValue::Null
        }
    };
    values.push(text(record.get("event_type"), &mut ok));
    values.push(text(record.get("attribute_name"), &mut ok));
    values.push(match record.get("meta") {
        // JSON text never holds a NUL byte (serde_json escapes it).
        Some(m) if meta_exact(m) => SqlValue::Text(m.to_string()),
        _ => {
            ok = false;
            SqlValue::Null
        }
    });
    let entity = entity_link(record);
    for field in ["entity", "user", "project"] {
        let value = match field {
            "entity" => entity.as_ref(),
            _ => record.get(field),
        };
        let (t, i) = match value {
            Some(Value::Null) => (SqlValue::Null, SqlValue::Null),
            Some(l) => match (
                l.get("type").and_then(Value::as_str),
                l.get("id").and_then(Value::as_i64),
            ) {
                (Some(t), Some(i)) if !t.contains('\0') => {
                    (SqlValue::Text(t.into()), SqlValue::Int(i))
                }
                _ => {
                    ok = false;
                    (SqlValue::Null, SqlValue::Null)
                }
            },
            None => {
                ok = false;
                (SqlValue::Null, SqlValue::Null)
            }
        };
        values.push(t);
        values.push(i);
    }
    values.push(text(record.get("session_uuid"), &mut ok));
    values.push(match record.get("created_at") {
        Some(Value::Null) => SqlValue::Null,
        Some(Value::String(s)) => match parse_date_time(s) {
            Some(t) => SqlValue::DateTime(t),
            None => {
                ok = false;
                SqlValue::Null
            }
        },
        _ => {
            ok = false;
            SqlValue::Null
        }
    });
    values.push(match dialect {
        Dialect::Postgres => SqlValue::Bool(!ok),
        Dialect::Sqlite => SqlValue::Int(i64::from(!ok)),
    });
    Some(Row {
        id,
        values,
        unstorable: !ok,
    })
}

const COLUMNS: &str = "id, event_type, attribute_name, meta, entity__type, entity__id, \
     user__type, user__id, project__type, project__id, session_uuid, created_at, _unstorable";

/// Rows per INSERT: 13 values each, well under both databases' bound-value limits.
const CHUNK: usize = 500;

/// What [`store`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    pub rows: u64,
    /// Records some column could not hold (kept, flagged: reads returning them pass through).
    pub unstorable: u64,
    /// The window started with this batch (first batch, or the log was dropped before).
    pub started: bool,
}

/// Stores `records` (EventLogEntry records as the site returned them; replays are no-ops)
/// and moves the window's `through` to the follower's contiguous position, in the caller's
/// transaction. Without a window yet, the log starts here: rows left from before are
/// dropped and `floor` is `start_after` (every id above it the follower has not applied yet
/// is in this batch or still to come).
pub async fn store(
    tx: &mut Tx,
    records: &[&Value],
    start_after: i64,
    through: i64,
) -> Result<Stored, StorageError> {
    let mut out = Stored::default();
    if window_tx(tx).await?.is_none() {
        ensure_tables(tx).await?;
        let mut sql = tx.sql();
        sql.push("DELETE FROM \"_sgcache_event_log\"");
        tx.execute(&sql).await?;
        let mut sql = tx.sql();
        sql.push("INSERT INTO \"_sgcache_event_log_window\" (id, floor, through, floor_at_ms) VALUES (1, ")
            .push_bind(SqlValue::Int(start_after))
            .push(", ")
            .push_bind(SqlValue::Int(start_after))
            .push(", ")
            .push_bind(SqlValue::Int(Utc::now().timestamp_millis()))
            .push(")");
        tx.execute(&sql).await?;
        out.started = true;
    }
    let rows: Vec<Row> = records
        .iter()
        .filter_map(|r| row_of(r, tx.dialect()))
        .collect();
    for chunk in rows.chunks(CHUNK) {
        let mut sql = tx.sql();
        sql.push("INSERT INTO \"_sgcache_event_log\" (")
            .push(COLUMNS)
            .push(") VALUES ");
        for (n, row) in chunk.iter().enumerate() {
            sql.push(if n == 0 { "(" } else { ", (" })
                .push_bind(SqlValue::Int(row.id));
            for v in &row.values {
                sql.push(", ").push_bind(v.clone());
            }
            sql.push(")");
        }
        sql.push(" ON CONFLICT (id) DO NOTHING");
        out.rows += tx.execute(&sql).await?;
        out.unstorable += chunk.iter().filter(|r| r.unstorable).count() as u64;
    }
    // Never backwards: a position reset (a restored site) drops the window instead.
    let mut sql = tx.sql();
    sql.push("UPDATE \"_sgcache_event_log_window\" SET through = ")
        .push_bind(SqlValue::Int(through))
        .push(" WHERE id = 1 AND through < ")
        .push_bind(SqlValue::Int(through));
    tx.execute(&sql).await?;
    Ok(out)
}

/// Stops answering from the log at once (the window goes; the rows go with the next trim).
pub async fn drop_window(tx: &mut Tx) -> Result<(), StorageError> {
    if table_exists(tx, WINDOW_TABLE).await? {
        let mut sql = tx.sql();
        sql.push("DELETE FROM \"_sgcache_event_log_window\"");
        tx.execute(&sql).await?;
    }
    Ok(())
}

/// What one trim did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Rows deleted (at or below a floor raised at least [`TRIM_GRACE`] ago).
    pub deleted: u64,
    /// The new floor, when it was raised.
    pub raised_to: Option<i64>,
}

/// Retention in rows or age; see `spec::Retain`.
#[derive(Clone, Copy, Debug)]
pub enum Keep {
    Rows(u64),
    Since(DateTime<Utc>),
}

/// One round of trimming: deletes the rows a floor raised at least `grace` ago left behind,
/// then raises the floor past the events beyond `keep`. Without a window (the log disabled
/// or reset) every row is deleted.
pub async fn trim(db: &Db, keep: Keep, grace: Duration) -> Result<Trimmed, StorageError> {
    let mut tx = db.begin().await?;
    let mut out = Trimmed::default();
    ensure_tables(&mut tx).await?;
    let now_ms = Utc::now().timestamp_millis();
    let mut sql = tx.sql();
    sql.push("SELECT floor, floor_at_ms FROM \"_sgcache_event_log_window\" WHERE id = 1");
    let row = tx.fetch_all(&sql).await?.into_iter().next();
    let Some([SqlValue::Int(floor), SqlValue::Int(floor_at)]) = row.as_deref() else {
        let mut sql = tx.sql();
        sql.push("DELETE FROM \"_sgcache_event_log\"");
        out.deleted = tx.execute(&sql).await?;
        tx.commit().await?;
        return Ok(out);
    };
    let (floor, floor_at) = (*floor, *floor_at);
    if now_ms - floor_at >= grace.as_millis() as i64 {
        let mut sql = tx.sql();
        sql.push("DELETE FROM \"_sgcache_event_log\" WHERE id <= ")
            .push_bind(SqlValue::Int(floor));
        out.deleted = tx.execute(&sql).await?;
    }
    let mut sql = tx.sql();
    match keep {
        Keep::Rows(n) => {
            sql.push("SELECT id FROM \"_sgcache_event_log\" WHERE id > ")
                .push_bind(SqlValue::Int(floor))
                .push(" ORDER BY id DESC LIMIT 1 OFFSET ")
                .push_bind(SqlValue::Int(n.min(i64::MAX as u64) as i64));
        }
        Keep::Since(t) => {
            sql.push("SELECT max(id) FROM \"_sgcache_event_log\" WHERE id > ")
                .push_bind(SqlValue::Int(floor))
                .push(" AND created_at < ")
                .push_bind(SqlValue::DateTime(t));
        }
    }
    let new_floor = match tx.fetch_all(&sql).await?.first().and_then(|r| r.first()) {
        Some(SqlValue::Int(id)) if *id > floor => Some(*id),
        _ => None,
    };
    let mut sql = tx.sql();
    sql.push("UPDATE \"_sgcache_event_log_window\" SET trimmed_rows = trimmed_rows + ")
        .push_bind(SqlValue::Int(out.deleted as i64));
    if out.deleted > 0 {
        sql.push(", trims = trims + 1, trimmed_at_ms = ")
            .push_bind(SqlValue::Int(now_ms));
    }
    if let Some(f) = new_floor {
        sql.push(", floor = ")
            .push_bind(SqlValue::Int(f))
            .push(", floor_at_ms = ")
            .push_bind(SqlValue::Int(now_ms));
    }
    sql.push(" WHERE id = 1");
    tx.execute(&sql).await?;
    tx.commit().await?;
    out.raised_to = new_floor;
    Ok(out)
}

/// The kept log as `status` and metrics show it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogStatus {
    pub window: Option<LogWindow>,
    pub rows: i64,
    pub trims: i64,
    pub trimmed_rows: i64,
    /// `created_at` of the oldest and newest event answerable.
    pub oldest_at: Option<DateTime<Utc>>,
    pub newest_at: Option<DateTime<Utc>>,
}

/// Reads [`LogStatus`] (counts the rows: for status and metrics, not per request).
pub async fn log_status(db: &Db) -> Result<LogStatus, StorageError> {
    let mut tx = db.begin().await?;
    let mut out = LogStatus::default();
    if !table_exists(&mut tx, LOG_TABLE).await? || !table_exists(&mut tx, WINDOW_TABLE).await? {
        tx.commit().await?;
        return Ok(out);
    }
    out.window = window_tx(&mut tx).await?;
    let mut sql = tx.sql();
    sql.push("SELECT count(*) FROM \"_sgcache_event_log\"");
    if let Some(SqlValue::Int(n)) = tx.fetch_all(&sql).await?.first().and_then(|r| r.first()) {
        out.rows = *n;
    }
    let mut sql = tx.sql();
    sql.push("SELECT trims, trimmed_rows FROM \"_sgcache_event_log_window\" WHERE id = 1");
    if let Some([SqlValue::Int(t), SqlValue::Int(r)]) =
        tx.fetch_all(&sql).await?.first().map(Vec::as_slice)
    {
        out.trims = *t;
        out.trimmed_rows = *r;
    }
    if let Some(w) = out.window {
        let mut sql = tx.sql();
        sql.push("SELECT min(created_at), max(created_at) FROM \"_sgcache_event_log\" WHERE id > ")
            .push_bind(SqlValue::Int(w.floor))
            .push(" AND id <= ")
            .push_bind(SqlValue::Int(w.through));
        if let Some(r) = tx.fetch_all(&sql).await?.into_iter().next() {
            out.oldest_at = r.first().and_then(time_of);
            out.newest_at = r.get(1).and_then(time_of);
        }
    }
    tx.commit().await?;
    Ok(out)
}

fn time_of(v: &SqlValue) -> Option<DateTime<Utc>> {
    match v {
        SqlValue::DateTime(t) => Some(*t),
        SqlValue::Text(s) => parse_date_time(s),
        _ => None,
    }
}

/// The ids stored, ascending (tests and the crash check).
pub async fn stored_ids(db: &Db) -> Result<Vec<i64>, StorageError> {
    let mut sql = Sql::new(db.dialect());
    sql.push("SELECT id FROM \"_sgcache_event_log\" ORDER BY id");
    Ok(db
        .fetch_all(&sql)
        .await?
        .into_iter()
        .filter_map(|r| match r.first() {
            Some(SqlValue::Int(i)) => Some(*i),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_record_some_column_cannot_hold_is_kept_flagged() {
        let good = json!({"id": 5, "event_type": "Shotgun_Shot_Change", "attribute_name": "code",
            "meta": {"b": 1, "a": [1.5, null]}, "entity": {"type": "Shot", "id": 3, "name": "x"},
            "user": null, "project": {"type": "Project", "id": 1}, "session_uuid": null,
            "created_at": "2024-05-02T09:14:07Z"});
        let r = row_of(&good, Dialect::Sqlite).unwrap();
        assert!(!r.unstorable);
        assert_eq!(
            r.values[2],
            SqlValue::Text(r#"{"b":1,"a":[1.5,null]}"#.into())
        );
        for (key, bad) in [
            ("event_type", json!("a\u{0}b")),
            ("entity", json!({"type": "Shot"})),
            ("created_at", json!("2024-05-02 09:14:07 UTC")),
            ("meta", json!({"n": 1e300})),
        ] {
            let mut rec = good.clone();
            rec[key] = bad;
            assert!(row_of(&rec, Dialect::Sqlite).unwrap().unstorable, "{key}");
        }
        // An entity retired when the event was read: its link is rebuilt from meta.
        let mut retired = good.clone();
        retired["entity"] = Value::Null;
        retired["meta"] =
            json!({"type": "attribute_change", "entity_type": "Shot", "entity_id": 3});
        let r = row_of(&retired, Dialect::Sqlite).unwrap();
        assert!(!r.unstorable);
        assert_eq!(
            (&r.values[3], &r.values[4]),
            (&SqlValue::Text("Shot".into()), &SqlValue::Int(3))
        );
        // A back-reference's owner cannot be rebuilt: not stored as a null the site may not hold.
        retired["meta"]["actual_attribute_changed"] = json!("Task.entity");
        assert!(row_of(&retired, Dialect::Sqlite).unwrap().unstorable);
        // Events about no entity keep their null.
        let mut schema = retired.clone();
        schema["event_type"] = json!("Shotgun_DisplayColumn_New");
        assert!(!row_of(&schema, Dialect::Sqlite).unwrap().unstorable);
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("session_uuid");
        assert!(row_of(&missing, Dialect::Sqlite).unwrap().unstorable);
        assert!(row_of(&json!({"event_type": "x"}), Dialect::Sqlite).is_none());
    }
}
