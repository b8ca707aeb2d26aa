//! API3 JSON values (as `read` returns them) to column values, per storage kind. Anything that
//! does not have the exact shape the data type promises is refused, never coerced.

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

/// Converts `value` for a field stored as `storage`; the error says what was wrong.
pub fn convert(storage: Storage, value: &Value) -> Result<Converted, String> {
    use Converted::One;
    if value.is_null() {
        return match storage {
            Storage::Boolean => Err("a checkbox cannot be null".into()),
            Storage::EntityLink => Ok(Converted::Link(SqlValue::Null, SqlValue::Null)),
            Storage::MultiEntity => Ok(Converted::Links(vec![])),
            _ => Ok(One(SqlValue::Null)),
        };
    }
    let wrong = |what: &str| Err(format!("expected {what}, found {value}"));
    match storage {
        Storage::Text => match value {
            Value::String(s) => Ok(One(SqlValue::Text(s.clone()))),
            _ => wrong("a string"),
        },
        Storage::Integer => match value.as_i64() {
            Some(i) => Ok(One(SqlValue::Int(i))),
            None => wrong("an integer"),
        },
        Storage::Float => match value {
            Value::Number(n) => Ok(One(SqlValue::Float(n.as_f64().unwrap_or(f64::NAN)))),
            _ => wrong("a number"),
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
        Storage::Uncacheable(reason) => Err(format!("not cached: {reason}")),
    }
}

/// `{"type": "Shot", "id": 12, ...}` → ("Shot", 12).
fn link(value: &Value) -> Result<(String, i64), String> {
    let t = value.get("type").and_then(Value::as_str);
    let id = value.get("id").and_then(Value::as_i64);
    match (t, id) {
        (Some(t), Some(id)) if crate::ident::validate_entity_type(t).is_ok() => Ok((t.into(), id)),
        _ => Err(format!(
            "expected an entity link {{\"type\", \"id\"}}, found {value}"
        )),
    }
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
        assert!(convert(Storage::Boolean, &Value::Null).is_err());
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
