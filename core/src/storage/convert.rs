//! API3 JSON values (as `read` returns them) to column values, per storage kind. Anything that
//! does not have the exact shape the data type promises, or that a column cannot hold, is
//! refused (never coerced) with an [`Unstorable`] reason that names no value.

use chrono::{NaiveDate, NaiveDateTime};
use serde_json::Value;

use crate::schema::Storage;
use crate::sql::SqlValue;

/// A field's value ready for the database.
#[derive(Clone, Debug, PartialEq)]
pub enum Converted {
    /// One column.
    One(SqlValue),
    /// `{field}__type`, `{field}__id`.
    Link(SqlValue, SqlValue),
    /// Association rows in order: (target type, target id).
    Links(Vec<(String, i64)>),
}

/// Why a value cannot be stored. Never holds the value itself: reasons are logged and kept
/// in `_sgcache_fields`, and entity values are never logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unstorable {
    /// U+0000 in text or JSON: PostgreSQL `text`/`jsonb` refuse it, SQLite's string functions
    /// stop at it.
    Nul,
    /// Not the JSON shape the data type promises (what was expected).
    Shape(&'static str),
    /// A link to an entity type the field's schema does not list.
    LinkType(String),
}

impl std::fmt::Display for Unstorable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unstorable::Nul => f.write_str("contains U+0000, which the column cannot hold"),
            Unstorable::Shape(what) => write!(f, "expected {what}"),
            Unstorable::LinkType(t) => {
                write!(f, "links to entity type {t}, which the field does not list")
            }
        }
    }
}

/// A null value of a field: every column is nullable (a checkbox too: sites return null for
/// unset checkboxes, docs/storage.md).
fn null_of(storage: Storage) -> Converted {
    match storage {
        Storage::EntityLink => Converted::Link(SqlValue::Null, SqlValue::Null),
        Storage::MultiEntity => Converted::Links(vec![]),
        _ => Converted::One(SqlValue::Null),
    }
}

/// What a field stores in place of a value it cannot hold: null (the field is then unservable).
pub fn unstorable_placeholder(storage: Storage) -> Converted {
    null_of(storage)
}

/// True when a JSON value holds U+0000 in a string or a key.
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Converts `value` for a field stored as `storage`; the error says what was wrong.
pub fn convert(storage: Storage, value: &Value) -> Result<Converted, Unstorable> {
    use Converted::One;
    if value.is_null() {
        return Ok(null_of(storage));
    }
    let wrong = |what: &'static str| Err(Unstorable::Shape(what));
    match storage {
        Storage::Text => match value {
            Value::String(s) if s.contains('\0') => Err(Unstorable::Nul),
            Value::String(s) => Ok(One(SqlValue::Text(s.clone()))),
            _ => wrong("a string"),
        },
        Storage::Integer => match value.as_i64() {
            Some(i) => Ok(One(SqlValue::Int(i))),
            None => wrong("an integer"),
        },
        Storage::Float => match value.as_f64() {
            Some(x) if x.is_finite() => Ok(One(SqlValue::Float(x))),
            _ => wrong("a finite number"),
        },
        Storage::Boolean => match value {
            Value::Bool(b) => Ok(One(SqlValue::Bool(*b))),
            _ => wrong("true or false"),
        },
        Storage::Date => match value.as_str().and_then(parse_date) {
            Some(d) => Ok(One(SqlValue::Date(d))),
            None => wrong("a date YYYY-MM-DD"),
        },
        Storage::DateTime => match value.as_str().and_then(parse_date_time) {
            Some(t) => Ok(One(SqlValue::DateTime(t))),
            None => wrong("a date-time YYYY-MM-DDTHH:MM:SSZ"),
        },
        Storage::Json if has_nul(value) => Err(Unstorable::Nul),
        Storage::Json => Ok(One(SqlValue::Json(value.clone()))),
        Storage::EntityLink => {
            let (t, id) = link(value)?;
            Ok(Converted::Link(SqlValue::Text(t), SqlValue::Int(id)))
        }
        Storage::MultiEntity => match value {
            Value::Array(items) => items
                .iter()
                .map(link)
                .collect::<Result<_, _>>()
                .map(Converted::Links),
            _ => wrong("a list of entity links"),
        },
        Storage::Uncacheable(_) => wrong("a cacheable data type"),
    }
}

/// `{"type": "Shot", "id": 12, ...}` → ("Shot", 12).
fn link(value: &Value) -> Result<(String, i64), Unstorable> {
    let t = value.get("type").and_then(Value::as_str);
    let id = value.get("id").and_then(Value::as_i64);
    match (t, id) {
        (Some(t), Some(id)) if crate::ident::validate_entity_type(t).is_ok() => Ok((t.into(), id)),
        _ => Err(Unstorable::Shape("an entity link {\"type\", \"id\"}")),
    }
}

/// Checks that every link of a converted value targets a type in `valid_types` (empty: any).
pub fn check_link_types(converted: &Converted, valid_types: &[String]) -> Result<(), Unstorable> {
    if valid_types.is_empty() {
        return Ok(());
    }
    let listed = |t: &str| valid_types.iter().any(|v| v == t);
    let bad = match converted {
        Converted::Link(SqlValue::Text(t), _) => (!listed(t)).then(|| t.clone()),
        Converted::Links(links) => links
            .iter()
            .find(|(t, _)| !listed(t))
            .map(|(t, _)| t.clone()),
        _ => None,
    };
    bad.map_or(Ok(()), |t| Err(Unstorable::LinkType(t)))
}

/// Exactly `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    (s.len() == 10)
        .then(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .flatten()
}

/// Exactly `YYYY-MM-DDTHH:MM:SSZ`, the only spelling API3 uses (protocol doc 4.1).
pub fn parse_date_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    (s.len() == 20)
        .then(|| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ").ok())
        .flatten()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converts_exact_shapes_and_refuses_others() {
        assert_eq!(
            convert(Storage::Integer, &json!(5)).unwrap(),
            Converted::One(SqlValue::Int(5))
        );
        assert!(convert(Storage::Integer, &json!(5.5)).is_err());
        assert!(convert(Storage::Integer, &json!("5")).is_err());
        assert!(convert(Storage::Text, &json!(5)).is_err());
        assert_eq!(
            convert(Storage::Boolean, &Value::Null).unwrap(),
            Converted::One(SqlValue::Null)
        );
        assert_eq!(
            convert(Storage::Text, &json!("a\u{0}b")).unwrap_err(),
            Unstorable::Nul
        );
        assert_eq!(
            convert(Storage::Json, &json!({"k": ["\u{0}"]})).unwrap_err(),
            Unstorable::Nul
        );
        assert_eq!(
            convert(Storage::Json, &json!({"\u{0}": 1})).unwrap_err(),
            Unstorable::Nul
        );
        assert!(convert(Storage::Integer, &json!(u64::MAX)).is_err());
        let link = convert(Storage::EntityLink, &json!({"type": "Asset", "id": 1})).unwrap();
        assert!(check_link_types(&link, &["Shot".into()]).is_err());
        assert!(check_link_types(&link, &["Shot".into(), "Asset".into()]).is_ok());
        assert!(check_link_types(&link, &[]).is_ok());
        assert!(convert(Storage::Date, &json!("2024-1-5")).is_err());
        assert!(convert(Storage::DateTime, &json!("2024-01-05 10:00:00")).is_err());
        assert!(convert(Storage::DateTime, &json!("2024-01-05T10:00:00+00:00")).is_err());
        assert_eq!(
            convert(
                Storage::EntityLink,
                &json!({"type": "Sequence", "id": 3, "name": "sq"})
            )
            .unwrap(),
            Converted::Link(SqlValue::Text("Sequence".into()), SqlValue::Int(3))
        );
        assert!(convert(Storage::EntityLink, &json!({"type": "x\"y", "id": 3})).is_err());
        assert!(convert(Storage::MultiEntity, &json!([{"type": "Asset"}])).is_err());
        assert_eq!(
            convert(Storage::MultiEntity, &Value::Null).unwrap(),
            Converted::Links(vec![])
        );
    }
}
