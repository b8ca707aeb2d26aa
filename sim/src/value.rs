//! Compact in-memory field values and the date formats of the protocol (doc section 4).
//!
//! A row keeps only the fields that are set, as `(field index, Val)` pairs, so a million
//! sparse entities cost a few hundred bytes each instead of one JSON map per entity.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// Index of an entity type in the store.
pub type Ty = u16;

/// A link to an entity: type index and id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Link {
    pub ty: Ty,
    pub id: u32,
}

/// A stored value. Null is never stored: an absent field is null (or empty / false).
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(Box<str>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Seconds since the Unix epoch, UTC.
    DateTime(i64),
    Link(Link),
    Multi(Box<[Link]>),
    Tags(Box<[Box<str>]>),
    Json(Box<serde_json::Value>),
}

impl Val {
    pub fn str(s: &str) -> Val {
        Val::Str(s.into())
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_link(&self) -> Option<Link> {
        match self {
            Val::Link(l) => Some(*l),
            _ => None,
        }
    }
    pub fn links(&self) -> &[Link] {
        match self {
            Val::Multi(l) => l,
            Val::Link(l) => std::slice::from_ref(l),
            _ => &[],
        }
    }
}

const EPOCH_DAYS_CE: i32 = 719_163;

pub fn date_from_days(days: i32) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt(days + EPOCH_DAYS_CE).unwrap_or_default()
}

pub fn days_from_date(d: NaiveDate) -> i32 {
    chrono::Datelike::num_days_from_ce(&d) - EPOCH_DAYS_CE
}

/// `YYYY-MM-DD`.
pub fn format_date(days: i32) -> String {
    date_from_days(days).format("%Y-%m-%d").to_string()
}

pub fn parse_date(s: &str) -> Option<i32> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .map(days_from_date)
}

/// The API form, exactly 20 characters: `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_date_time(secs: i64) -> String {
    to_utc(secs).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The event-log `meta` form: `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_meta_date_time(secs: i64) -> String {
    to_utc(secs).format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub fn to_utc(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// Accepts the API form, RFC 3339 with an offset (converted to UTC) and the naive
/// `YYYY-MM-DD HH:MM:SS` form (taken as UTC). Fractions of a second are dropped.
pub fn parse_date_time(s: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%SZ",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_formats_round_trip() {
        let d = parse_date("2024-03-05").unwrap();
        assert_eq!(format_date(d), "2024-03-05");
        assert_eq!(parse_date("1970-01-01"), Some(0));
        let t = parse_date_time("2024-03-05T17:04:09Z").unwrap();
        assert_eq!(format_date_time(t), "2024-03-05T17:04:09Z");
        assert_eq!(format_meta_date_time(t), "2024-03-05 17:04:09 UTC");
        assert_eq!(parse_date_time("2024-03-05T18:04:09+01:00"), Some(t));
        assert_eq!(parse_date_time("2024-03-05 17:04:09"), Some(t));
        assert!(parse_date_time("yesterday").is_none());
        assert!(std::mem::size_of::<Val>() <= 24);
    }
}
