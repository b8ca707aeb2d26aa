//! Data a real site holds that a cache must cope with: unset checkboxes that read as null
//! (`SimConfig::null_checkboxes`), U+0000 in text and JSON, the extremes of numbers and dates.

use serde_json::json;

use super::*;

/// A one-condition filter in wire form.
fn by(path: &str, relation: &str, value: serde_json::Value) -> serde_json::Value {
    and(json!([{"path": path, "relation": relation, "values": [value]}]))
}

fn none() -> serde_json::Value {
    and(serde_json::Value::Array(vec![]))
}

fn flagged(s: &Site, rel: &str, value: bool) -> Vec<u64> {
    ids(&read_all(
        s,
        "Version",
        by("flagged", rel, json!(value)),
        &["flagged"],
    ))
}

#[test]
fn unset_checkboxes_read_false_by_default_and_null_when_switched() {
    let s = site();
    let all = ids(&read_all(&s, "Version", none(), &["flagged"]));
    assert!(!all.is_empty());
    call(
        &s,
        "update",
        json!({"type": "Version", "id": all[0], "fields": [{"field_name": "flagged", "value": true}]}),
    )
    .unwrap();
    call(
        &s,
        "update",
        json!({"type": "Version", "id": all[1], "fields": [{"field_name": "flagged", "value": false}]}),
    )
    .unwrap();
    // Default: an unset checkbox is false everywhere (read, `is false`, sort).
    let rows = read_all(&s, "Version", by("id", "is", json!(all[2])), &["flagged"]);
    assert_eq!(rows[0]["flagged"], json!(false));
    assert_eq!(flagged(&s, "is", true), vec![all[0]]);
    assert_eq!(flagged(&s, "is", false).len(), all.len() - 1);
    // Switched: unset reads null, matches neither `is true` nor `is false`, and matches the
    // negations (exact negation of the positive relation, as for every other null).
    s.set_null_checkboxes(true);
    let rows = read_all(&s, "Version", by("id", "is", json!(all[2])), &["flagged"]);
    assert_eq!(rows[0]["flagged"], json!(null));
    assert_eq!(flagged(&s, "is", true), vec![all[0]]);
    assert_eq!(flagged(&s, "is", false), vec![all[1]]);
    assert_eq!(flagged(&s, "is_not", true).len(), all.len() - 1);
    // Nulls sort last ascending, like every other null.
    let sorted = read_with(
        &s,
        json!({"type": "Version", "filters": {"logical_operator": "and", "conditions": []}, "return_fields": ["flagged"],
               "sorts": [{"field_name": "flagged", "direction": "asc"}]}),
    );
    assert_eq!(ids(&sorted)[..2], [all[1], all[0]]);
    assert_eq!(sorted.last().unwrap()["flagged"], json!(null));
    // A checkbox still cannot be written or compared as null.
    assert!(call(
        &s,
        "update",
        json!({"type": "Version", "id": all[0], "fields": [{"field_name": "flagged", "value": null}]}),
    )
    .is_err());
}

#[test]
fn ugly_values_are_stored_and_returned_verbatim() {
    let s = site();
    let id = ids(&read_all(&s, "Version", none(), &["code"]))[0];
    let fields = json!([
        {"field_name": "code", "value": "nul\u{0}inside"},
        {"field_name": "description", "value": "\u{0}"},
        {"field_name": "sg_first_frame", "value": i32::MAX},
        {"field_name": "sg_last_frame", "value": i32::MIN},
        {"field_name": "sg_uploaded_movie_frame_rate", "value": 1.0e300},
        {"field_name": "sg_movie_aspect_ratio", "value": -5e-324},
    ]);
    call(
        &s,
        "update",
        json!({"type": "Version", "id": id, "fields": fields}),
    )
    .unwrap();
    let names = [
        "code",
        "description",
        "sg_first_frame",
        "sg_last_frame",
        "sg_uploaded_movie_frame_rate",
        "sg_movie_aspect_ratio",
    ];
    let row = &read_all(&s, "Version", by("id", "is", json!(id)), &names)[0];
    for f in fields.as_array().unwrap() {
        let name = f["field_name"].as_str().unwrap();
        assert_eq!(row[name], f["value"], "{name}");
    }
    // The JSON on the wire spells U+0000 as an escape.
    assert!(serde_json::to_string(&row["code"])
        .unwrap()
        .contains("\\u0000"));
    assert!(call(
        &s,
        "update",
        json!({"type": "Version", "id": id, "fields": [{"field_name": "sg_first_frame", "value": i64::from(i32::MAX) + 1}]}),
    )
    .is_err());
    let tid = ids(&read_all(&s, "Task", none(), &["content"]))[0];
    for (start, due) in [("0001-01-01", "9999-12-31"), ("1970-01-01", "2038-01-19")] {
        call(
            &s,
            "update",
            json!({"type": "Task", "id": tid, "fields": [
                {"field_name": "start_date", "value": start},
                {"field_name": "due_date", "value": due}]}),
        )
        .unwrap();
        let row = &read_all(
            &s,
            "Task",
            by("id", "is", json!(tid)),
            &["start_date", "due_date"],
        )[0];
        assert_eq!(
            (row["start_date"].as_str(), row["due_date"].as_str()),
            (Some(start), Some(due))
        );
    }
    for t in ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"] {
        call(
            &s,
            "update",
            json!({"type": "Version", "id": id, "fields": [
                {"field_name": "media_center_import_time", "value": t}]}),
        )
        .unwrap();
        let row = &read_all(
            &s,
            "Version",
            by("id", "is", json!(id)),
            &["media_center_import_time"],
        )[0];
        assert_eq!(row["media_center_import_time"], json!(t));
    }
    // JSON (serializable) values keep U+0000 in keys and strings too.
    let splits = json!({"a\u{0}": ["\u{0}"]});
    call(
        &s,
        "update",
        json!({"type": "Task", "id": tid, "fields": [{"field_name": "splits", "value": splits}]}),
    )
    .unwrap();
    let row = &read_all(&s, "Task", by("id", "is", json!(tid)), &["splits"])[0];
    assert_eq!(row["splits"], splits);
}
