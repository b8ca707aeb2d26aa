//! EventLogEntry records (protocol doc 8.1, 8.2) to what the follower needs of them. Anything
//! malformed becomes `Kind::Other` and is skipped, never a panic.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;
use sgcache::sql::format_datetime;

/// The fields the follower reads from EventLogEntry: what it applies, and what the kept log
/// holds (`sgcache::storage::event_log::LOG_FIELDS`).
pub const EVENT_FIELDS: &[&str] = &[
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

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    New,
    Change,
    Retirement,
    Revival,
    /// Logins, views, custom application events: nothing to cache.
    Other,
}

/// One event, reduced to what the follower applies.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: i64,
    pub kind: Kind,
    /// The type named in `event_type` (the owning side of a back-reference).
    pub entity_type: String,
    /// The affected entity: `meta.entity_id`, or for back-references the `entity` link.
    pub entity_id: Option<i64>,
    pub attribute: Option<String>,
    /// True when the change was written on this side by a link set on the other side.
    pub backref: bool,
    pub meta: Value,
    pub user: Value,
    pub created_at: Option<DateTime<Utc>>,
}

/// Parses one EventLogEntry record; `None` when it has no integer id.
pub fn parse(record: &Value) -> Option<Event> {
    let id = record.get("id")?.as_i64()?;
    let event_type = record
        .get("event_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    let meta = record.get("meta").cloned().unwrap_or(Value::Null);
    let parts: Vec<&str> = event_type.split('_').collect();
    let (entity_type, action) = match parts.as_slice() {
        [_app, middle @ .., action] if !middle.is_empty() => (middle.join("_"), *action),
        _ => (String::new(), ""),
    };
    let backref = meta.get("actual_attribute_changed").is_some()
        || meta
            .get("entity_type")
            .and_then(Value::as_str)
            .is_some_and(|t| t != entity_type && action == "Change");
    let kind = match action {
        "New" => Kind::New,
        "Change" => Kind::Change,
        "Retirement" => Kind::Retirement,
        "Revival" => Kind::Revival,
        _ => Kind::Other,
    };
    // The target comes from meta (the `entity` link is null once the entity is retired),
    // except for back-references, whose meta describes the other side.
    let link_id = record
        .get("entity")
        .and_then(|e| e.get("id"))
        .and_then(Value::as_i64);
    let entity_id = if backref {
        link_id
    } else {
        meta.get("entity_id").and_then(Value::as_i64).or(link_id)
    };
    let attribute = record
        .get("attribute_name")
        .and_then(Value::as_str)
        .or_else(|| meta.get("attribute_name").and_then(Value::as_str))
        .map(str::to_string);
    let created_at = record
        .get("created_at")
        .and_then(Value::as_str)
        .and_then(sgcache::storage::parse_date_time);
    Some(Event {
        id,
        kind,
        entity_type,
        entity_id,
        attribute,
        backref,
        meta,
        user: record.get("user").cloned().unwrap_or(Value::Null),
        created_at,
    })
}

/// Event meta spells date-times `YYYY-MM-DD HH:MM:SS UTC`; the cache stores the API form.
/// Returns `None` for anything else.
pub fn meta_date_time(s: &str) -> Option<String> {
    let t = NaiveDateTime::parse_from_str(s.strip_suffix(" UTC")?, "%Y-%m-%d %H:%M:%S").ok()?;
    Some(format_datetime(&t.and_utc()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_changes_backrefs_and_retirements() {
        let e = parse(&json!({"id": 7, "event_type": "Shotgun_Shot_Change",
            "attribute_name": "code", "entity": {"type": "Shot", "id": 3},
            "meta": {"type": "attribute_change", "entity_type": "Shot", "entity_id": 3,
                     "new_value": "x"}, "created_at": "2024-05-02T09:14:07Z"}))
        .unwrap();
        assert_eq!(
            (e.kind, e.entity_id, e.backref),
            (Kind::Change, Some(3), false)
        );
        assert_eq!(e.entity_type, "Shot");
        assert_eq!(e.attribute.as_deref(), Some("code"));
        assert!(e.created_at.is_some());

        let b = parse(&json!({"id": 8, "event_type": "Shotgun_Shot_Change",
            "attribute_name": "tasks", "entity": {"type": "Shot", "id": 3},
            "meta": {"entity_type": "Task", "entity_id": 55,
                     "actual_attribute_changed": "Task.entity"}}))
        .unwrap();
        assert!(b.backref);
        assert_eq!(b.entity_id, Some(3));

        let r = parse(
            &json!({"id": 9, "event_type": "Shotgun_CustomEntity01_Retirement",
            "entity": null, "meta": {"entity_type": "CustomEntity01", "entity_id": 4}}),
        )
        .unwrap();
        assert_eq!((r.kind, r.entity_id), (Kind::Retirement, Some(4)));
        assert_eq!(r.entity_type, "CustomEntity01");

        assert_eq!(
            parse(&json!({"id": 1, "event_type": "weird"}))
                .unwrap()
                .kind,
            Kind::Other
        );
        assert!(parse(&json!({"event_type": "Shotgun_Shot_New"})).is_none());
    }

    #[test]
    fn converts_meta_date_times_only_when_exact() {
        assert_eq!(
            meta_date_time("2024-05-02 09:14:07 UTC").as_deref(),
            Some("2024-05-02T09:14:07Z")
        );
        assert_eq!(meta_date_time("2024-05-02T09:14:07Z"), None);
        assert_eq!(meta_date_time("2024-05-02 09:14 UTC"), None);
    }
}
