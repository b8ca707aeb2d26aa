//! Rows as read from the database, each value borrowed from the row that holds it.
//!
//! The proxy writes a cached answer straight from these: a page of 50 decoded into owned
//! values first (a `String` per text cell, a vector per row) cost it more CPU than writing
//! the answer did. [`SqlValue`] is the owned form, for callers that keep what they read.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::{PgRow, PgValueFormat, PgValueRef};
use sqlx::sqlite::SqliteRow;
use sqlx::{Column, Row, TypeInfo, ValueRef};

use super::SqlValue;

/// One value of a row, borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cell<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(&'a str),
    /// A JSON column's text, as PostgreSQL sent it (not parsed yet).
    JsonText(&'a str),
    /// A JSON value parsed already.
    Json(&'a serde_json::Value),
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
}

impl SqlValue {
    pub fn as_cell(&self) -> Cell<'_> {
        match self {
            SqlValue::Null => Cell::Null,
            SqlValue::Bool(b) => Cell::Bool(*b),
            SqlValue::Int(i) => Cell::Int(*i),
            SqlValue::Float(f) => Cell::Float(*f),
            SqlValue::Text(s) => Cell::Text(s),
            SqlValue::Json(v) => Cell::Json(v),
            SqlValue::Date(d) => Cell::Date(*d),
            SqlValue::DateTime(t) => Cell::DateTime(*t),
        }
    }
}

impl Cell<'_> {
    /// The owned value. JSON text that does not parse is kept as text (PostgreSQL only
    /// sends JSON it validated).
    pub fn to_value(self) -> SqlValue {
        match self {
            Cell::Null => SqlValue::Null,
            Cell::Bool(b) => SqlValue::Bool(b),
            Cell::Int(i) => SqlValue::Int(i),
            Cell::Float(f) => SqlValue::Float(f),
            Cell::Text(s) => SqlValue::Text(s.to_owned()),
            Cell::JsonText(s) => serde_json::from_str(s)
                .map(SqlValue::Json)
                .unwrap_or_else(|_| SqlValue::Text(s.to_owned())),
            Cell::Json(v) => SqlValue::Json(v.clone()),
            Cell::Date(d) => SqlValue::Date(d),
            Cell::DateTime(t) => SqlValue::DateTime(t),
        }
    }
}

/// A result's rows, all of the same width, in one allocation.
#[derive(Debug, Default)]
pub struct Rows<'a> {
    width: usize,
    cells: Vec<Cell<'a>>,
}

impl<'a> Rows<'a> {
    /// Borrowed from rows decoded already.
    pub fn of_values(rows: &'a [Vec<SqlValue>]) -> Rows<'a> {
        let width = rows.first().map_or(0, Vec::len);
        let cells = rows.iter().flatten().map(SqlValue::as_cell).collect();
        Rows { width, cells }
    }

    pub fn iter(&self) -> std::slice::ChunksExact<'_, Cell<'a>> {
        // `max(1)`: a result of no columns has no cells either.
        self.cells.chunks_exact(self.width.max(1))
    }

    pub fn first(&self) -> Option<&[Cell<'a>]> {
        self.iter().next()
    }

    pub fn len(&self) -> usize {
        self.cells.len() / self.width.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    pub fn to_values(&self) -> Vec<Vec<SqlValue>> {
        self.iter()
            .map(|r| r.iter().map(|c| c.to_value()).collect())
            .collect()
    }
}

/// How a PostgreSQL column's values are decoded, from its type's name.
#[derive(Clone, Copy, Debug, PartialEq)]
enum PgKind {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Json,
    Jsonb,
    Date,
    TimestampTz,
    Timestamp,
    Text,
    /// A type neither listed nor readable as text.
    Unreadable,
}

impl PgKind {
    fn of(type_name: &str) -> PgKind {
        const NAMED: [(&str, PgKind); 12] = [
            ("BOOL", PgKind::Bool),
            ("INT2", PgKind::Int2),
            ("INT4", PgKind::Int4),
            ("INT8", PgKind::Int8),
            ("FLOAT4", PgKind::Float4),
            ("FLOAT8", PgKind::Float8),
            ("NUMERIC", PgKind::Numeric),
            ("JSON", PgKind::Json),
            ("JSONB", PgKind::Jsonb),
            ("DATE", PgKind::Date),
            ("TIMESTAMPTZ", PgKind::TimestampTz),
            ("TIMESTAMP", PgKind::Timestamp),
        ];
        NAMED
            .iter()
            .find(|(name, _)| type_name.eq_ignore_ascii_case(name))
            .map_or(PgKind::Text, |(_, kind)| *kind)
    }
}

/// Every row's cells; the columns' kinds are worked out once (every row of a result has the
/// same columns).
pub(super) fn pg_rows(rows: &[PgRow]) -> Result<Rows<'_>, sqlx::Error> {
    let Some(first) = rows.first() else {
        return Ok(Rows::default());
    };
    let kinds: Vec<PgKind> = first
        .columns()
        .iter()
        .map(|c| match PgKind::of(c.type_info().name()) {
            // Checked once per column rather than per cell, as `try_get` would.
            PgKind::Text if !<String as sqlx::Type<sqlx::Postgres>>::compatible(c.type_info()) => {
                PgKind::Unreadable
            }
            kind => kind,
        })
        .collect();
    let mut cells = Vec::with_capacity(rows.len() * kinds.len());
    for row in rows {
        for (i, kind) in kinds.iter().enumerate() {
            let raw = row.try_get_raw(i)?;
            let cell = if raw.is_null() {
                Cell::Null
            } else {
                pg_cell(raw, *kind).map_err(|source| sqlx::Error::ColumnDecode {
                    index: i.to_string(),
                    source,
                })?
            };
            cells.push(cell);
        }
    }
    Ok(Rows {
        width: kinds.len(),
        cells,
    })
}

/// One cell, by sqlx's decoder for the column's type; text and JSON borrowed.
fn pg_cell(raw: PgValueRef<'_>, kind: PgKind) -> Result<Cell<'_>, sqlx::error::BoxDynError> {
    use sqlx::Decode;
    type Pg = sqlx::Postgres;
    Ok(match kind {
        PgKind::Bool => Cell::Bool(<bool as Decode<Pg>>::decode(raw)?),
        PgKind::Int2 => Cell::Int(<i16 as Decode<Pg>>::decode(raw)?.into()),
        PgKind::Int4 => Cell::Int(<i32 as Decode<Pg>>::decode(raw)?.into()),
        PgKind::Int8 => Cell::Int(<i64 as Decode<Pg>>::decode(raw)?),
        PgKind::Float4 => Cell::Float(<f32 as Decode<Pg>>::decode(raw)?.into()),
        PgKind::Float8 => Cell::Float(<f64 as Decode<Pg>>::decode(raw)?),
        // The cache stores numbers as bigint or double precision; a numeric would be an
        // expression's (a sum): refused rather than guessed (the read goes to the site).
        PgKind::Numeric => return Err("a numeric column, which the cache never stores".into()),
        PgKind::Json => Cell::JsonText(raw.as_str()?),
        PgKind::Jsonb => Cell::JsonText(jsonb_text(raw)?),
        PgKind::Date => Cell::Date(<NaiveDate as Decode<Pg>>::decode(raw)?),
        PgKind::TimestampTz => Cell::DateTime(<DateTime<Utc> as Decode<Pg>>::decode(raw)?),
        PgKind::Timestamp => {
            Cell::DateTime(<chrono::NaiveDateTime as Decode<Pg>>::decode(raw)?.and_utc())
        }
        PgKind::Text => Cell::Text(<&str as Decode<Pg>>::decode(raw)?),
        PgKind::Unreadable => return Err("a column of a type the cache does not read".into()),
    })
}

/// `jsonb` in binary is a version byte (1, the only one PostgreSQL writes) and the text.
fn jsonb_text(raw: PgValueRef<'_>) -> Result<&str, sqlx::error::BoxDynError> {
    let bytes = raw.as_bytes()?;
    let text = match (raw.format(), bytes.split_first()) {
        (PgValueFormat::Text, _) => bytes,
        (PgValueFormat::Binary, Some((1, text))) => text,
        (PgValueFormat::Binary, _) => return Err("a jsonb value of an unknown version".into()),
    };
    Ok(std::str::from_utf8(text)?)
}

pub(super) fn sqlite_row(row: &SqliteRow) -> Result<Vec<SqlValue>, sqlx::Error> {
    (0..row.columns().len())
        .map(|i| {
            let raw = row.try_get_raw(i)?;
            if raw.is_null() {
                return Ok(SqlValue::Null);
            }
            // SQLite types are per value; the caller knows what a text column holds.
            let ty = raw.type_info().name().to_ascii_uppercase();
            Ok(match ty.as_str() {
                "INTEGER" | "BOOLEAN" | "INT" => SqlValue::Int(row.try_get(i)?),
                "REAL" | "FLOAT" | "NUMERIC" => SqlValue::Float(row.try_get(i)?),
                _ => SqlValue::Text(row.try_get(i)?),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_kinds_come_from_type_names_whatever_their_case() {
        assert_eq!(PgKind::of("INT8"), PgKind::Int8);
        assert_eq!(PgKind::of("int4"), PgKind::Int4);
        assert_eq!(PgKind::of("JSONB"), PgKind::Jsonb);
        assert_eq!(PgKind::of("json"), PgKind::Json);
        assert_eq!(PgKind::of("TIMESTAMP"), PgKind::Timestamp);
        assert_eq!(PgKind::of("TIMESTAMPTZ"), PgKind::TimestampTz);
        for text in ["TEXT", "VARCHAR", "citext", "NAME", "UUID"] {
            assert_eq!(PgKind::of(text), PgKind::Text, "{text}");
        }
    }

    #[test]
    fn rows_are_cut_by_their_width_and_round_trip_to_values() {
        let values = vec![
            vec![SqlValue::Int(1), SqlValue::Text("a".into()), SqlValue::Null],
            vec![
                SqlValue::Int(2),
                SqlValue::Json(serde_json::json!([1])),
                SqlValue::Bool(true),
            ],
        ];
        let rows = Rows::of_values(&values);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.iter().nth(1).unwrap()[1], values[1][1].as_cell());
        assert_eq!(rows.to_values(), values);
        let none = Rows::of_values(&[]);
        assert!(none.is_empty() && none.first().is_none());
        assert_eq!(none.iter().count(), 0);
        assert_eq!(
            Cell::JsonText(r#"{"k": [1, "ü"]}"#).to_value(),
            SqlValue::Json(serde_json::json!({"k": [1, "ü"]}))
        );
    }
}
