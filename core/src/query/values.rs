//! Filter values from the wire, checked against the field's storage and turned into bound
//! SQL values. Anything whose meaning the cache cannot reproduce exactly passes through.

use chrono::{NaiveDate, NaiveDateTime};
use serde_json::Value;

use super::{pass, PassThrough, Reason};
use crate::ident;
use crate::schema::Storage;
use crate::sql::SqlValue;

/// A scalar filter value bound as the column's storage expects.
pub fn scalar(storage: Storage, v: &Value, field: &str) -> Result<SqlValue, PassThrough> {
    let bad = || {
        pass(
            Reason::Value,
            format!("filter value {v} does not fit field {field}"),
        )
    };
    Ok(match storage {
        Storage::Integer => SqlValue::Int(v.as_i64().ok_or_else(bad)?),
        Storage::Float => SqlValue::Float(v.as_f64().ok_or_else(bad)?),
        Storage::Boolean => SqlValue::Bool(v.as_bool().ok_or_else(bad)?),
        Storage::Date => SqlValue::Date(parse_date(v.as_str().ok_or_else(bad)?).ok_or_else(bad)?),
        Storage::DateTime => {
            SqlValue::DateTime(parse_datetime(v.as_str().ok_or_else(bad)?).ok_or_else(bad)?)
        }
        // Lower-cased as the site compares text (see `super::text`).
        Storage::Text => SqlValue::Text(v.as_str().ok_or_else(bad)?.to_lowercase()),
        _ => return Err(bad()),
    })
}

/// `YYYY-MM-DD`, exactly.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    if s.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// `YYYY-MM-DDTHH:MM:SSZ`, exactly (what the client sends).
pub fn parse_datetime(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if s.len() != 20 {
        return None;
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ")
        .ok()
        .map(|t| t.and_utc())
}

/// An entity link filter value: `{"type": T, "id": N, ...}`; extra keys are ignored by the
/// site (entity matching uses only type and id).
pub fn link(v: &Value, field: &str) -> Result<(String, i64), PassThrough> {
    let bad = || {
        pass(
            Reason::Value,
            format!("filter value on {field} is not an entity link"),
        )
    };
    let t = v.get("type").and_then(Value::as_str).ok_or_else(bad)?;
    let id = v.get("id").and_then(Value::as_i64).ok_or_else(bad)?;
    ident::validate_entity_type(t).map_err(|_| bad())?;
    Ok((t.to_string(), id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_checked_against_storage() {
        assert_eq!(
            scalar(Storage::Integer, &json!(3), "f").unwrap(),
            SqlValue::Int(3)
        );
        assert!(scalar(Storage::Integer, &json!("3"), "f").is_err());
        assert!(scalar(Storage::Integer, &json!(1.5), "f").is_err());
        assert_eq!(
            scalar(Storage::Text, &json!("AbC"), "f").unwrap(),
            SqlValue::Text("abc".into())
        );
        assert_eq!(
            scalar(Storage::Text, &json!("ÄΣ"), "f").unwrap(),
            SqlValue::Text("äς".into())
        );
        assert!(scalar(Storage::Date, &json!("2024-3-5"), "f").is_err());
        assert!(scalar(Storage::DateTime, &json!("2024-03-05T17:04:09+00:00"), "f").is_err());
        assert!(scalar(Storage::DateTime, &json!("2024-03-05T17:04:09Z"), "f").is_ok());
        assert!(link(&json!({"type": "Shot; drop", "id": 1}), "f").is_err());
        assert_eq!(
            link(&json!({"type": "Shot", "id": 1, "name": "x"}), "f").unwrap(),
            ("Shot".to_string(), 1)
        );
    }
}
