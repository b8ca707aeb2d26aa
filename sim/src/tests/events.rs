use serde_json::{json, Value};

use super::*;

const EVENT_FIELDS: &[&str] = &[
    "event_type",
    "attribute_name",
    "entity",
    "meta",
    "user",
    "project",
    "created_at",
    "session_uuid",
];

fn events_after(site: &Site, id: u64) -> Vec<Value> {
    read_with(
        site,
        json!({"type": "EventLogEntry",
        "filters": and(json!([{"path": "id", "relation": "greater_than", "values": [id]}])),
        "return_fields": EVENT_FIELDS, "sorts": [{"field_name": "id", "direction": "asc"}]}),
    )
}

fn last_event_id(site: &Site) -> u64 {
    read_with(site, json!({"type": "EventLogEntry", "filters": and(json!([])),
        "sorts": [{"field_name": "id", "direction": "desc"}], "paging": {"entities_per_page": 1, "current_page": 1}}))
        .first()
        .and_then(|e| e["id"].as_u64())
        .unwrap_or(0)
}

#[test]
fn create_logs_new_then_in_create_changes_and_back_reference() {
    let s = site();
    let shot = read_all(&s, "Shot", and(json!([])), &["code", "tasks"])[0].clone();
    let created = call(
        &s,
        "create",
        json!({"type": "Task", "fields": [
        {"field_name": "content", "value": "comp"},
        {"field_name": "entity", "value": {"type": "Shot", "id": shot["id"]}},
        {"field_name": "due_date", "value": "2024-12-01"}], "return_fields": ["sg_status_list"]}),
    )
    .unwrap();
    assert_eq!(
        created["entity"],
        json!({"type": "Shot", "id": shot["id"], "name": shot["code"], "valid": "valid"})
    );
    assert_eq!(created["due_date"], "2024-12-01");
    let task_id = created["id"].clone();
    let ev = events_after(&s, 0);
    let types: Vec<&str> = ev
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "Shotgun_Task_New",
            "Shotgun_Task_Change",
            "Shotgun_Task_Change",
            "Shotgun_Shot_Change",
            "Shotgun_Task_Change"
        ]
    );
    assert_eq!(
        ev[0]["meta"],
        json!({"type": "new_entity", "entity_type": "Task", "entity_id": task_id})
    );
    assert!(ev[1..]
        .iter()
        .filter(|e| e["event_type"] == "Shotgun_Task_Change")
        .all(|e| e["meta"]["in_create"] == true));
    let back = &ev[3];
    assert_eq!(back["attribute_name"], "tasks");
    assert_eq!(back["entity"]["id"], shot["id"]);
    assert_eq!(back["meta"]["actual_attribute_changed"], "Task.entity");
    assert_eq!(back["meta"]["entity_type"], "Task");
    assert_eq!(back["meta"]["original_event_log_entry_id"], ev[2]["id"]);
    assert_eq!(back["meta"]["added"][0]["id"], task_id);
    assert_eq!(ev[0]["user"]["type"], "ApiUser");
    // The back-reference field itself now lists the task.
    let tasks = read_all(
        &s,
        "Shot",
        and(json!([{"path": "id", "relation": "is", "values": [shot["id"]]}])),
        &["tasks"],
    );
    assert!(tasks[0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["id"] == task_id));
}

#[test]
fn updates_log_old_and_new_values_and_multi_entity_deltas() {
    let s = site();
    let shot = read_all(
        &s,
        "Shot",
        and(json!([{"path": "assets", "relation": "is", "values": [null]}])),
        &["sg_status_list", "updated_at"],
    )[0]
    .clone();
    let asset = read_all(&s, "Asset", and(json!([])), &["code", "shots"])[0].clone();
    let before = last_event_id(&s);
    let r = call(&s, "update", json!({"type": "Shot", "id": shot["id"], "fields": [
        {"field_name": "sg_status_list", "value": "fin"},
        {"field_name": "assets", "value": [{"type": "Asset", "id": asset["id"]}], "multi_entity_update_mode": "add"},
        {"field_name": "updated_at", "value": "2024-01-02T03:04:05Z"}]})).unwrap();
    assert_eq!(r["assets"][0]["valid"], "valid");
    let ev = events_after(&s, before);
    let by_attr = |a: &str| {
        ev.iter()
            .find(|e| e["attribute_name"] == a)
            .cloned()
            .unwrap_or_else(|| panic!("no {a} event in {ev:?}"))
    };
    let status = by_attr("sg_status_list");
    assert_eq!(status["meta"]["old_value"], shot["sg_status_list"]);
    assert_eq!(status["meta"]["new_value"], "fin");
    assert!(status["meta"].get("in_create").is_none());
    let assets = by_attr("assets");
    assert_eq!(assets["meta"]["added"][0]["id"], asset["id"]);
    assert_eq!(assets["meta"]["removed"], json!([]));
    let inverse = by_attr("shots");
    assert_eq!(inverse["event_type"], "Shotgun_Asset_Change");
    assert_eq!(inverse["meta"]["actual_attribute_changed"], "Shot.assets");
    assert_eq!(
        by_attr("updated_at")["meta"]["new_value"],
        "2024-01-02 03:04:05 UTC"
    );
    let a = read_all(
        &s,
        "Asset",
        and(json!([{"path": "id", "relation": "is", "values": [asset["id"]]}])),
        &["shots"],
    );
    assert!(a[0]["shots"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["id"] == shot["id"]));
    // remove mode takes it out again, on both sides.
    call(&s, "update", json!({"type": "Shot", "id": shot["id"], "fields": [
        {"field_name": "assets", "value": [{"type": "Asset", "id": asset["id"]}], "multi_entity_update_mode": "remove"}]})).unwrap();
    let a = read_all(
        &s,
        "Asset",
        and(json!([{"path": "id", "relation": "is", "values": [asset["id"]]}])),
        &["shots"],
    );
    assert!(!a[0]["shots"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["id"] == shot["id"]));
}

#[test]
fn retirement_and_revival() {
    let s = site();
    let shot = read_all(&s, "Shot", and(json!([])), &["code"])[0].clone();
    let before = last_event_id(&s);
    assert_eq!(
        call(&s, "delete", json!({"type": "Shot", "id": shot["id"]})).unwrap(),
        json!(true)
    );
    let ev = events_after(&s, before);
    assert_eq!(ev[0]["attribute_name"], "retirement_date");
    assert_eq!(ev[0]["meta"]["new_value"], "2024-11-20 12:00:00 UTC");
    assert_eq!(ev[1]["event_type"], "Shotgun_Shot_Retirement");
    assert_eq!(ev[1]["meta"]["display_name"], shot["code"]);
    assert!(
        ev.iter().all(|e| e["entity"].is_null()),
        "entity is null while retired"
    );
    assert_eq!(
        call(&s, "delete", json!({"type": "Shot", "id": shot["id"]})).unwrap(),
        json!(false),
        "deleting a retired entity answers false, as the official client's suite asserts"
    );
    assert_eq!(events_after(&s, before).len(), 2, "and writes no event");
    assert_eq!(
        call(&s, "revive", json!({"type": "Shot", "id": shot["id"]})).unwrap(),
        json!(true)
    );
    assert_eq!(
        call(&s, "revive", json!({"type": "Shot", "id": shot["id"]})).unwrap(),
        json!(false)
    );
    let ev = events_after(&s, before);
    assert_eq!(ev[2]["event_type"], "Shotgun_Shot_Revival");
    assert!(
        ev.iter().all(|e| e["entity"]["id"] == shot["id"]),
        "entity visible again once revived"
    );
}

#[test]
fn scripts_without_events_write_none_but_bump_updated_at() {
    let s = site();
    let shot = read_all(&s, "Shot", and(json!([])), &["updated_at"])[0].clone();
    let before = last_event_id(&s);
    call_as(&s, auth_of("silent_script", "silent_key"), "update",
        json!({"type": "Shot", "id": shot["id"], "fields": [{"field_name": "description", "value": "quiet"}]})).unwrap();
    assert_eq!(last_event_id(&s), before);
    let after = read_all(
        &s,
        "Shot",
        and(json!([{"path": "id", "relation": "is", "values": [shot["id"]]}])),
        &["updated_at", "updated_by", "description"],
    );
    assert_eq!(after[0]["updated_at"], "2024-11-20T12:00:00Z");
    assert_eq!(after[0]["updated_by"]["name"], "silent_script");
    assert_eq!(after[0]["description"], "quiet");
}

#[test]
fn batch_is_all_or_nothing() {
    let s = site();
    let before = last_event_id(&s);
    let shots_before = read_all(&s, "Shot", and(json!([])), &["code"]);
    let target = shots_before[0].clone();
    let e = err_of(call(
        &s,
        "batch",
        json!([
        {"request_type": "create", "type": "Shot", "fields": [{"field_name": "code", "value": "batch_new"}]},
        {"request_type": "update", "type": "Shot", "id": target["id"], "fields": [{"field_name": "code", "value": "renamed"}]},
        {"request_type": "delete", "type": "Shot", "id": shots_before[1]["id"]},
        {"request_type": "update", "type": "Shot", "id": target["id"], "fields": [{"field_name": "sg_status_list", "value": "not-a-status"}]}]),
    ));
    assert!(e.message.contains("batch request 4"), "{}", e.message);
    assert_eq!(last_event_id(&s), before);
    assert_eq!(
        read_all(&s, "Shot", and(json!([])), &["code"]),
        shots_before
    );
    let ok = call(&s, "batch", json!([
        {"request_type": "create", "type": "Shot", "fields": [{"field_name": "code", "value": "batch_new"}]},
        {"request_type": "delete", "type": "Shot", "id": shots_before[1]["id"]}])).unwrap();
    assert_eq!(ok[0]["code"], "batch_new");
    assert_eq!(ok[1], json!(true));
    assert!(last_event_id(&s) > before);
}

#[test]
fn event_log_is_readable_like_any_entity() {
    let s = site();
    let shot = read_all(&s, "Shot", and(json!([])), &["code"])[0].clone();
    for status in ["ip", "fin", "hld"] {
        call(&s, "update", json!({"type": "Shot", "id": shot["id"], "fields": [{"field_name": "sg_status_list", "value": status}]})).unwrap();
    }
    let mut a = auth_of("sgcache_test", "test_key");
    a.insert(
        "session_uuid".into(),
        json!("0a1b2c3d-0000-4000-8000-000000000000"),
    );
    call_as(&s, a, "update", json!({"type": "Shot", "id": shot["id"], "fields": [{"field_name": "sg_status_list", "value": "ip"}]})).unwrap();
    let rows = read_all(
        &s,
        "EventLogEntry",
        and(json!([
        {"path": "event_type", "relation": "is", "values": ["Shotgun_Shot_Change"]},
        {"path": "entity", "relation": "is", "values": [{"type": "Shot", "id": shot["id"]}]},
        {"path": "attribute_name", "relation": "is", "values": ["sg_status_list"]}])),
        &["meta", "session_uuid", "project"],
    );
    assert_eq!(rows.len(), 4);
    assert_eq!(
        rows[3]["session_uuid"],
        "0a1b2c3d-0000-4000-8000-000000000000"
    );
    assert_eq!(rows[1]["meta"]["old_value"], "ip");
    assert_eq!(rows[1]["meta"]["new_value"], "fin");
    assert_eq!(rows[0]["project"]["type"], "Project");
    assert!(err_of(call(
        &s,
        "update",
        json!({"type": "EventLogEntry", "id": rows[0]["id"], "fields": []})
    ))
    .message
    .contains("cannot be updated"));
}
