use serde_json::{json, Map, Value};
use sgcache::api3::ErrorCode;

use super::*;

#[test]
fn invalid_values_are_clear_faults() {
    let s = site();
    let bad = |fields: Value, needle: &str| {
        let e = err_of(call(
            &s,
            "create",
            json!({"type": "Shot", "fields": fields}),
        ));
        assert_eq!(e.code, ErrorCode::Fault);
        assert!(
            e.message.contains(needle),
            "{} does not mention {needle}",
            e.message
        );
    };
    bad(
        json!([{"field_name": "sg_cut_in", "value": "ten"}]),
        "expected an integer",
    );
    bad(
        json!([{"field_name": "code", "value": 5}]),
        "expected a string",
    );
    bad(
        json!([{"field_name": "sg_status_list", "value": "bogus"}]),
        "valid values",
    );
    bad(
        json!([{"field_name": "sg_sequence", "value": {"type": "Asset", "id": 1}}]),
        "valid types",
    );
    bad(
        json!([{"field_name": "sg_sequence", "value": {"type": "Sequence", "id": 999999}}]),
        "does not exist",
    );
    bad(
        json!([{"field_name": "created_at", "value": "yesterday"}]),
        "date_time",
    );
    bad(
        json!([{"field_name": "nope", "value": 1}]),
        "'nope' does not exist",
    );
    bad(
        json!([{"field_name": "image", "value": "x"}]),
        "cannot be written",
    );
    let e = err_of(call(&s, "frobnicate", json!({})));
    assert!(e.message.contains("Unknown method 'frobnicate'"));
    let e = err_of(call(&s, "create", json!({"type": "Nope", "fields": []})));
    assert!(e.message.contains("Entity type 'Nope' does not exist"));
}

#[test]
fn authentication_families() {
    let s = site();
    let e = err_of(call_as(
        &s,
        auth_of("sgcache_test", "wrong"),
        "read",
        json!({"type": "Shot"}),
    ));
    assert_eq!(e.code, ErrorCode::Authentication);
    assert_eq!(e.to_body()["error_code"], 102);
    let user: Map<String, Value> =
        serde_json::from_value(json!({"user_login": "artist", "user_password": "artist_password"}))
            .unwrap();
    let token = call_as(&s, user.clone(), "get_session_token", Value::Null).unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let session: Map<String, Value> =
        serde_json::from_value(json!({"session_token": token, "reject_if_expired": true})).unwrap();
    let r = call_as(&s, session, "create", json!({"type": "Shot", "fields": [{"field_name": "code", "value": "by_artist"}], "return_fields": ["created_by"]})).unwrap();
    assert_eq!(r["created_by"]["name"], "Artist User");
    let mut sudo = auth_of("sgcache_test", "test_key");
    sudo.insert("sudo_as_login".into(), json!("user002"));
    let r = call_as(&s, sudo.clone(), "create", json!({"type": "Shot", "fields": [{"field_name": "code", "value": "sudo"}], "return_fields": ["created_by"]})).unwrap();
    assert_eq!(r["created_by"]["type"], "HumanUser");
    sudo.insert("sudo_as_login".into(), json!("nobody"));
    assert!(err_of(call_as(&s, sudo, "read", json!({"type": "Shot"})))
        .message
        .starts_with("The user does not have permission to 'sudo':"));
    let bad_user: Map<String, Value> =
        serde_json::from_value(json!({"user_login": "artist", "user_password": "nope"})).unwrap();
    assert_eq!(
        err_of(call_as(&s, bad_user, "read", json!({"type": "Shot"}))).code,
        ErrorCode::Authentication
    );
}

#[test]
fn create_result_and_defaults() {
    let s = site();
    let r = call(
        &s,
        "create",
        json!({"type": "Shot", "fields": [
        {"field_name": "code", "value": "new <shot> ✨"},
        {"field_name": "assets", "value": [{"type": "Asset", "id": 1}, {"type": "Asset", "id": 2}]},
        {"field_name": "tag_list", "value": ["hero"]}],
        "return_fields": ["created_at", "sg_status_list", "sg_sequence", "created_by"]}),
    )
    .unwrap();
    assert_eq!(r["type"], "Shot");
    assert_eq!(r["code"], "new <shot> ✨");
    assert_eq!(r["assets"].as_array().unwrap().len(), 2);
    assert_eq!(r["created_at"], "2024-11-20T12:00:00Z");
    assert!(r["sg_sequence"].is_null());
    assert_eq!(r["created_by"]["name"], "sgcache_test");
    let back = read_all(
        &s,
        "Shot",
        and(json!([{"path": "id", "relation": "is", "values": [r["id"]]}])),
        &["code", "tag_list", "assets"],
    );
    assert_eq!(back[0]["code"], r["code"]);
    assert_eq!(back[0]["tag_list"], json!(["hero"]));
    assert!(
        back[0]["assets"][0].get("valid").is_none(),
        "read links carry no 'valid'"
    );
}

#[test]
fn schema_methods() {
    let s = site();
    let all = call(&s, "schema_read", Value::Null).unwrap();
    assert_eq!(
        all.as_object().unwrap().len(),
        s.store.read().unwrap().schema.entities.len()
    );
    let f = call(
        &s,
        "schema_field_read",
        json!({"type": "Shot", "field_name": "sg_sequence"}),
    )
    .unwrap();
    assert_eq!(f["sg_sequence"]["data_type"]["value"], "entity");
    assert_eq!(f["sg_sequence"]["visible"]["value"], true);
    let e = call(&s, "schema_entity_read", Value::Null).unwrap();
    assert_eq!(e["PublishedFile"]["name"]["value"], "Published File");
    assert!(err_of(call(
        &s,
        "schema_field_read",
        json!({"type": "Shot", "field_name": "nope"})
    ))
    .message
    .contains("nope"));
}

#[test]
fn schema_fields_are_created_updated_deleted_and_revived() {
    let s = site();
    let field_read = |f: &str| {
        call(
            &s,
            "schema_field_read",
            json!({"type": "Asset", "field_name": f}),
        )
    };
    let name = call(
        &s,
        "schema_field_create",
        json!({"type": "Asset", "data_type": "number",
            "properties": [{"property_name": "name", "value": "Monkey Count!"},
                           {"property_name": "description", "value": "monkeys"}]}),
    )
    .unwrap();
    assert_eq!(name, json!("sg_monkey_count"));
    let schema_events = |event_type: &str| {
        call(
            &s,
            "read",
            json!({"type": "EventLogEntry",
                "filters": and(json!([{"path": "event_type", "relation": "is", "values": [event_type]}])),
                "return_fields": ["meta", "entity"]}),
        )
        .unwrap()["entities"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let created = schema_events("Shotgun_DisplayColumn_New");
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0]["meta"]["field_name"], "sg_monkey_count");
    assert_eq!(created[0]["meta"]["entity_type"], "Asset");
    let f = field_read("sg_monkey_count").unwrap();
    assert_eq!(f["sg_monkey_count"]["data_type"]["value"], "number");
    assert_eq!(f["sg_monkey_count"]["description"]["value"], "monkeys");
    // The new column takes values and filters at once.
    let asset = call(
        &s,
        "create",
        json!({"type": "Asset", "fields": [{"field_name": "code", "value": "monkeys"},
            {"field_name": "sg_monkey_count", "value": 0}], "return_fields": ["sg_monkey_count"]}),
    )
    .unwrap();
    assert_eq!(asset["sg_monkey_count"], json!(0));
    let update = |props: Value| {
        call(
            &s,
            "schema_field_update",
            json!({"type": "Asset", "field_name": "sg_monkey_count", "properties": props}),
        )
    };
    assert_eq!(
        update(json!([{"property_name": "description", "value": "more"}])).unwrap(),
        json!(true)
    );
    assert_eq!(schema_events("Shotgun_DisplayColumn_Change").len(), 1);
    let refused = update(json!([{"property_name": "data_type", "value": "text"}])).unwrap_err();
    assert!(
        refused.message.contains("not editable"),
        "{}",
        refused.message
    );
    // The name is taken, and built-in fields cannot be deleted.
    let again = call(
        &s,
        "schema_field_create",
        json!({"type": "Asset", "data_type": "text",
            "properties": [{"property_name": "name", "value": "monkey count"}]}),
    );
    assert!(again.is_err());
    assert!(call(
        &s,
        "schema_field_delete",
        json!({"type": "Asset", "field_name": "code"})
    )
    .is_err());
    // Deleted: gone from the schema and from reads; revived: back with its values.
    let read_count = || {
        call(
            &s,
            "read",
            json!({"type": "Asset", "filters": and(json!([{"path": "id", "relation": "is", "values": [asset["id"]]}])),
                "return_fields": ["sg_monkey_count"]}),
        )
    };
    let del = json!({"type": "Asset", "field_name": "sg_monkey_count"});
    assert_eq!(
        call(&s, "schema_field_delete", del.clone()).unwrap(),
        json!(true)
    );
    assert!(field_read("sg_monkey_count").is_err());
    assert!(read_count()
        .unwrap_err()
        .message
        .contains("sg_monkey_count"));
    assert_eq!(
        call(&s, "schema_field_revive", del.clone()).unwrap(),
        json!(true)
    );
    assert_eq!(call(&s, "schema_field_revive", del).unwrap(), json!(false));
    assert_eq!(
        read_count().unwrap()["entities"][0]["sg_monkey_count"],
        json!(0)
    );
}
