//! JSON values ↔ stored values, per data type (doc section 4).

use serde_json::{json, Map, Value};
use sgcache::api3::Api3Error;
use sgcache::schema::DataType;

use crate::store::{FieldMeta, Store};
use crate::value::*;

/// How links are spelled: `read` results carry `{type, id, name}`; create/update results and
/// event meta add `"valid": "valid"` (doc section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkStyle {
    Read,
    Write,
}

fn bad(meta: &FieldMeta, what: &str, v: &Value) -> Api3Error {
    Api3Error::bad_request(format!(
        "Invalid value for field '{}' ({}): expected {what}, got {v}",
        meta.name,
        meta.data_type.api_name()
    ))
}

/// Parses a value written by create/update. `Ok(None)` is null / empty.
pub fn parse_value(store: &Store, meta: &FieldMeta, v: &Value) -> Result<Option<Val>, Api3Error> {
    use DataType::*;
    if v.is_null() {
        return match meta.data_type {
            Checkbox => Err(bad(meta, "true or false", v)),
            _ => Ok(None),
        };
    }
    let val = match &meta.data_type {
        Text | Footage | Color | EntityType | Uuid | SystemTaskType | Password => {
            Val::str(v.as_str().ok_or_else(|| bad(meta, "a string", v))?)
        }
        List | StatusList => {
            let s = v.as_str().ok_or_else(|| bad(meta, "a string", v))?;
            if !meta.valid_values.is_empty() && !meta.valid_values.iter().any(|x| x == s) {
                return Err(Api3Error::bad_request(format!(
                    "Invalid value for field '{}': '{s}' is not one of its valid values {:?}",
                    meta.name, meta.valid_values
                )));
            }
            Val::str(s)
        }
        Number | Percent | Duration | Timecode => {
            let n = v.as_i64().ok_or_else(|| bad(meta, "an integer", v))?;
            if i32::try_from(n).is_err() {
                return Err(bad(meta, "an integer in the 32-bit range", v));
            }
            Val::Int(n)
        }
        Float | Currency => Val::Float(v.as_f64().ok_or_else(|| bad(meta, "a number", v))?),
        Checkbox => Val::Bool(v.as_bool().ok_or_else(|| bad(meta, "true or false", v))?),
        Date => Val::Date(
            v.as_str()
                .and_then(parse_date)
                .ok_or_else(|| bad(meta, "a date 'YYYY-MM-DD'", v))?,
        ),
        DateTime => Val::DateTime(
            v.as_str()
                .and_then(parse_date_time)
                .ok_or_else(|| bad(meta, "a date_time 'YYYY-MM-DDTHH:MM:SSZ'", v))?,
        ),
        Entity => Val::Link(parse_link(store, meta, v)?),
        MultiEntity | Addressing => {
            let items = v
                .as_array()
                .ok_or_else(|| bad(meta, "a list of entities", v))?;
            let mut links = Vec::with_capacity(items.len());
            for item in items {
                let l = parse_link(store, meta, item)?;
                if !links.contains(&l) {
                    links.push(l);
                }
            }
            if links.is_empty() {
                return Ok(None);
            }
            Val::Multi(links.into())
        }
        TagList => {
            let items = v
                .as_array()
                .ok_or_else(|| bad(meta, "a list of tag names", v))?;
            let tags = items
                .iter()
                .map(|t| {
                    tag_name(t)
                        .map(Into::into)
                        .ok_or_else(|| bad(meta, "tag names", v))
                })
                .collect::<Result<Vec<Box<str>>, _>>()?;
            if tags.is_empty() {
                return Ok(None);
            }
            Val::Tags(tags.into())
        }
        Serializable | Url => {
            if !v.is_object() {
                return Err(bad(meta, "an object", v));
            }
            Val::Json(Box::new(v.clone()))
        }
        Image | UrlTemplate | PivotColumn | Summary | Calculated | Other(_) => {
            return Err(Api3Error::bad_request(format!(
                "Field '{}' ({}) cannot be written through the API",
                meta.name,
                meta.data_type.api_name()
            )))
        }
    };
    Ok(Some(val))
}

/// Tag values may be plain names or `{"type": "Tag", "name": ...}`.
pub fn tag_name(v: &Value) -> Option<&str> {
    v.as_str().or_else(|| v.get("name")?.as_str())
}

/// A link value `{"type", "id"}` to an existing entity of an accepted type.
pub fn parse_link(store: &Store, meta: &FieldMeta, v: &Value) -> Result<Link, Api3Error> {
    let (Some(t), Some(id)) = (
        v.get("type").and_then(Value::as_str),
        v.get("id").and_then(Value::as_u64),
    ) else {
        return Err(bad(meta, "an entity {\"type\", \"id\"}", v));
    };
    let ty = store.ty(t)?;
    if !meta.valid_types.contains(&ty) {
        return Err(Api3Error::bad_request(format!(
            "Invalid value for field '{}': entity type '{t}' is not one of its valid types",
            meta.name
        )));
    }
    let link = Link { ty, id: id as u32 };
    if id > u32::MAX as u64 || store.row(link).is_none() {
        return Err(Api3Error::bad_request(format!(
            "Invalid value for field '{}': {t} {id} does not exist",
            meta.name
        )));
    }
    Ok(link)
}

/// A link as JSON, or null when the target is retired (retired entities are excluded from
/// link resolution in reads, doc 5.6; this is also what makes `EventLogEntry.entity` null
/// while its entity is retired, doc 8.1).
pub fn render_link(store: &Store, link: Link, style: LinkStyle) -> Value {
    if store.active(link).is_none() {
        return Value::Null;
    }
    render_link_raw(store, link, style)
}

/// A link whatever the state of its target (event meta describes retired entities too).
pub fn render_link_raw(store: &Store, link: Link, style: LinkStyle) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), json!(store.table(link.ty).name));
    m.insert("id".into(), json!(link.id));
    m.insert("name".into(), json!(store.display_name(link)));
    if style == LinkStyle::Write {
        m.insert("valid".into(), json!("valid"));
    }
    Value::Object(m)
}

/// A stored value (or its absence) as the API returns it for a field.
pub fn render(store: &Store, meta: &FieldMeta, val: Option<&Val>, style: LinkStyle) -> Value {
    use DataType::*;
    match (&meta.data_type, val) {
        (Password, Some(_)) => json!("*******"),
        (Checkbox, None) if !store.null_checkboxes => json!(false),
        (MultiEntity | Addressing, v) => Value::Array(
            v.map(Val::links)
                .unwrap_or(&[])
                .iter()
                .filter(|l| store.active(**l).is_some())
                .map(|l| render_link_raw(store, *l, style))
                .collect(),
        ),
        (TagList, None) => json!([]),
        (_, None) => Value::Null,
        (_, Some(v)) => render_val(store, v, style),
    }
}

pub fn render_val(store: &Store, v: &Val, style: LinkStyle) -> Value {
    match v {
        Val::Int(n) => json!(n),
        Val::Float(f) => json!(f),
        Val::Bool(b) => json!(b),
        Val::Str(s) => json!(s),
        Val::Date(d) => json!(format_date(*d)),
        Val::DateTime(t) => json!(format_date_time(*t)),
        Val::Link(l) => render_link(store, *l, style),
        Val::Multi(ls) => Value::Array(
            ls.iter()
                .filter(|l| store.active(**l).is_some())
                .map(|l| render_link_raw(store, *l, style))
                .collect(),
        ),
        Val::Tags(t) => json!(t),
        Val::Json(j) => (**j).clone(),
    }
}
