//! `schema_read`, `schema_entity_read`, `schema_field_read` (doc section 7), served from the
//! loaded schema. Every record reports `visible: true` (no per-project hidden fields).

use serde_json::{json, Map, Value};
use sgcache::api3::Api3Error;
use sgcache::schema::{EntitySchema, SiteSchema};

fn with_visible(raw: &Value) -> Value {
    let mut v = raw.clone();
    if let Value::Object(m) = &mut v {
        m.entry("visible")
            .or_insert(json!({"value": true, "editable": false}));
    }
    v
}

fn fields(e: &EntitySchema) -> Value {
    Value::Object(
        e.fields
            .iter()
            .map(|(k, f)| (k.clone(), with_visible(&f.raw)))
            .collect::<Map<_, _>>(),
    )
}

pub fn call(schema: &SiteSchema, method: &str, payload: &Value) -> Result<Value, Api3Error> {
    match method {
        "schema_read" => Ok(Value::Object(
            schema
                .entities
                .iter()
                .map(|(k, e)| (k.clone(), fields(e)))
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
        _ => field_read(schema, payload),
    }
}

fn field_read(schema: &SiteSchema, payload: &Value) -> Result<Value, Api3Error> {
    let t = payload
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| Api3Error::bad_request("schema_field_read needs a type"))?;
    let e = schema
        .entity(t)
        .ok_or_else(|| Api3Error::bad_request(format!("Entity type '{t}' does not exist")))?;
    match payload.get("field_name").and_then(Value::as_str) {
        None => Ok(fields(e)),
        Some(f) => {
            let field = e.fields.get(f).ok_or_else(|| {
                Api3Error::bad_request(format!("Field '{f}' does not exist on entity type '{t}'"))
            })?;
            Ok(json!({ f: with_visible(&field.raw) }))
        }
    }
}
