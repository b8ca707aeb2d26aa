//! `schema_read`, `schema_entity_read`, `schema_field_read` (doc section 7), served from the
//! store's schema (which `schema_field_*` writes change). `visible` is per project for custom
//! fields (see `schema_writes`); without a project every field reports visible.

use serde_json::{json, Map, Value};
use sgcache::api3::Api3Error;
use sgcache::schema::EntitySchema;

use crate::store::Store;

fn with_visible(
    store: &Store,
    e: &EntitySchema,
    field: &str,
    raw: &Value,
    project: Option<&Value>,
) -> Value {
    let mut v = raw.clone();
    if let Value::Object(m) = &mut v {
        m.insert(
            "visible".into(),
            store.edits.visible(&e.entity_type, field, project),
        );
    }
    v
}

fn fields(store: &Store, e: &EntitySchema, project: Option<&Value>) -> Value {
    Value::Object(
        e.fields
            .iter()
            .map(|(k, f)| (k.clone(), with_visible(store, e, k, &f.raw, project)))
            .collect::<Map<_, _>>(),
    )
}

pub fn call(store: &Store, method: &str, payload: &Value) -> Result<Value, Api3Error> {
    let schema = &store.schema;
    let project = payload.get("project").filter(|p| !p.is_null());
    match method {
        "schema_read" => Ok(Value::Object(
            schema
                .entities
                .iter()
                .map(|(k, e)| (k.clone(), fields(store, e, project)))
                .collect(),
        )),
        "schema_entity_read" => Ok(Value::Object(
            schema
                .entities
                .iter()
                .map(|(k, e)| {
                    let v = json!({
                        "name": {"value": e.display_name, "editable": false},
                        "visible": {"value": true, "editable": false},
                    });
                    (k.clone(), v)
                })
                .collect(),
        )),
        _ => field_read(store, payload, project),
    }
}

fn field_read(store: &Store, payload: &Value, project: Option<&Value>) -> Result<Value, Api3Error> {
    let t = payload
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| Api3Error::bad_request("schema_field_read needs a type"))?;
    let e = store
        .schema
        .entity(t)
        .ok_or_else(|| Api3Error::bad_request(format!("Entity type '{t}' does not exist")))?;
    match payload.get("field_name").and_then(Value::as_str) {
        None => Ok(fields(store, e, project)),
        Some(f) => {
            let field = e.fields.get(f).ok_or_else(|| {
                Api3Error::bad_request(format!("Field '{f}' does not exist on entity type '{t}'"))
            })?;
            Ok(json!({ f: with_visible(store, e, f, &field.raw, project) }))
        }
    }
}
