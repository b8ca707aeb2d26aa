//! `create`, `update`, `delete` (retire), `revive` and `batch` (doc 3.4), with their events.
//!
//! Choices: an update that leaves a field unchanged logs no event for it, but `updated_at`
//! and `updated_by` are bumped by every write (including by scripts without events), and
//! also on the other side of a link whose back-reference the write changed.

use std::time::Instant;

use rand::rngs::StdRng;
use serde_json::{json, Map, Value};
use sgcache::api3::Api3Error;
use sgcache::schema::DataType;

use crate::auth::Principal;
use crate::codec::{parse_value, render, LinkStyle};
use crate::faults::Faults;
use crate::read::{entity_json, resolve_return_fields};
use crate::store::{Row, Store};
use crate::txn::Txn;
use crate::value::{Link, Ty, Val};

pub struct Writer<'a> {
    pub txn: Txn<'a>,
    pub principal: &'a Principal,
    pub now: i64,
    pub instant: Instant,
    pub faults: Faults,
    pub rng: &'a mut StdRng,
}

fn obj(payload: &Value) -> Result<&Map<String, Value>, Api3Error> {
    payload
        .as_object()
        .ok_or_else(|| Api3Error::bad_request("the payload must be an object"))
}

fn type_and_id(store: &Store, p: &Map<String, Value>) -> Result<Link, Api3Error> {
    let t = p
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| Api3Error::bad_request("missing entity type"))?;
    let ty = store.ty(t)?;
    let id = p
        .get("id")
        .and_then(Value::as_u64)
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| Api3Error::bad_request("missing or invalid entity id"))?;
    Ok(Link { ty, id })
}

fn not_found(store: &Store, l: Link) -> Api3Error {
    Api3Error::bad_request(format!(
        "Entity {} {} does not exist or is retired",
        store.table(l.ty).name,
        l.id
    ))
}

/// One `{field_name, value[, multi_entity_update_mode]}`.
type FieldWrite<'a> = (&'a str, &'a Value, Option<&'a str>);

fn field_list(p: &Map<String, Value>) -> Result<Vec<FieldWrite<'_>>, Api3Error> {
    let Some(fields) = p.get("fields") else {
        return Ok(Vec::new());
    };
    let fields = fields
        .as_array()
        .ok_or_else(|| Api3Error::bad_request("fields must be a list of {field_name, value}"))?;
    fields
        .iter()
        .map(|f| {
            let name = f
                .get("field_name")
                .and_then(Value::as_str)
                .ok_or_else(|| Api3Error::bad_request("every field needs a field_name"))?;
            let mode = f.get("multi_entity_update_mode").and_then(Value::as_str);
            Ok((name, f.get("value").unwrap_or(&Value::Null), mode))
        })
        .collect()
}

impl Writer<'_> {
    pub fn store(&self) -> &Store {
        self.txn.store
    }

    fn writable(&self, ty: Ty, name: &str) -> Result<u16, Api3Error> {
        if name == "id" || name == "type" {
            return Err(Api3Error::bad_request(format!(
                "field '{name}' cannot be set"
            )));
        }
        self.store().field(ty, name)
    }

    fn stamp(&mut self, link: Link, created: bool) {
        let actor = Val::Link(self.principal.actor);
        let t = self.store().table(link.ty);
        let mut sets = vec![
            (t.field("updated_at"), Val::DateTime(self.now)),
            (t.field("updated_by"), actor.clone()),
        ];
        if created {
            sets.push((t.field("created_at"), Val::DateTime(self.now)));
            sets.push((t.field("created_by"), actor));
        }
        for (f, v) in sets {
            if let Some(f) = f {
                let keep = created && self.store().row(link).is_some_and(|r| r.get(f).is_some());
                if !keep {
                    self.txn.set(link, f, Some(v));
                }
            }
        }
    }

    pub fn create(&mut self, payload: &Value) -> Result<Value, Api3Error> {
        let p = obj(payload)?;
        let t = p
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| Api3Error::bad_request("create needs an entity type"))?;
        let ty = self.store().ty(t)?;
        let mut row = Row::default();
        let mut given = Vec::new();
        for (name, value, _) in field_list(p)? {
            let f = self.writable(ty, name)?;
            let meta = &self.store().table(ty).fields[f as usize];
            let v = parse_value(self.store(), meta, value)?;
            row.set(f, v.clone());
            given.push((f, v));
        }
        self.apply_defaults(ty, &mut row);
        let id = self.txn.insert(ty, row);
        let link = Link { ty, id };
        self.stamp(link, true);
        if !self.is_event_log(ty) {
            let new_event = self.event_new(link);
            for (f, v) in &given {
                let ev = self.event_change(link, *f, None, v.as_ref(), true, new_event);
                self.sync_inverse(link, *f, &[], v.as_ref().map(Val::links).unwrap_or(&[]), ev);
            }
        }
        let mut out = self.result(link, given.iter().map(|(f, _)| *f));
        let extra = match p.get("return_fields") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            _ => Vec::new(),
        };
        let fields = resolve_return_fields(self.store(), ty, &extra)?;
        let row = self
            .store()
            .row(link)
            .ok_or_else(|| not_found(self.store(), link))?;
        for (k, v) in entity_json(self.store(), ty, id, row, &fields) {
            out.entry(k).or_insert(v);
        }
        Ok(Value::Object(out))
    }

    fn is_event_log(&self, ty: Ty) -> bool {
        self.store().table(ty).name == "EventLogEntry"
    }

    /// Schema defaults for fields not given (doc 4: `properties.default_value`).
    fn apply_defaults(&self, ty: Ty, row: &mut Row) {
        let Some(schema) = self.schema_defaults(ty) else {
            return;
        };
        for (f, v) in schema {
            if row.get(f).is_none() {
                row.set(f, Some(v));
            }
        }
    }

    fn schema_defaults(&self, ty: Ty) -> Option<Vec<(u16, Val)>> {
        let t = self.store().table(ty);
        let defaults = t.defaults.as_ref()?;
        Some(defaults.clone())
    }

    /// `type`, `id` and the written fields, links with `"valid": "valid"`.
    fn result(&self, link: Link, fields: impl Iterator<Item = u16>) -> Map<String, Value> {
        let store = self.store();
        let t = store.table(link.ty);
        let mut out = Map::new();
        out.insert("type".into(), json!(t.name));
        out.insert("id".into(), json!(link.id));
        let row = store.row(link);
        for f in fields {
            let meta = &t.fields[f as usize];
            let v = render(store, meta, row.and_then(|r| r.get(f)), LinkStyle::Write);
            out.insert(meta.name.clone(), v);
        }
        out
    }

    pub fn update(
        &mut self,
        payload: &Value,
        default_mode: Option<&str>,
    ) -> Result<Value, Api3Error> {
        let p = obj(payload)?;
        let link = type_and_id(self.store(), p)?;
        if self.is_event_log(link.ty) {
            return Err(Api3Error::bad_request(
                "EventLogEntry entities cannot be updated",
            ));
        }
        if self.store().active(link).is_none() {
            return Err(not_found(self.store(), link));
        }
        let default_mode =
            default_mode.or(p.get("multi_entity_update_mode").and_then(Value::as_str));
        let mut written = Vec::new();
        for (name, value, mode) in field_list(p)? {
            let f = self.writable(link.ty, name)?;
            // Schema `editable: false` = not writable through the API (doc 7). `updated_at` /
            // `updated_by` are accepted and then overwritten by the stamp (tests/events.rs relies
            // on that).
            if !self.store().table(link.ty).fields[f as usize].editable
                && name != "updated_at"
                && name != "updated_by"
            {
                return Err(Api3Error::bad_request(format!(
                    "field '{name}' of {} is not editable",
                    self.store().table(link.ty).name
                )));
            }
            self.update_field(link, f, value, mode.or(default_mode))?;
            written.push(f);
        }
        self.stamp(link, false);
        Ok(Value::Object(self.result(link, written.into_iter())))
    }

    fn update_field(
        &mut self,
        link: Link,
        f: u16,
        value: &Value,
        mode: Option<&str>,
    ) -> Result<(), Api3Error> {
        let meta = self.store().table(link.ty).fields[f as usize].clone();
        let parsed = parse_value(self.store(), &meta, value)?;
        let old = self.store().row(link).and_then(|r| r.get(f).cloned());
        let is_multi = matches!(meta.data_type, DataType::MultiEntity | DataType::Addressing);
        let new = match (mode.unwrap_or("set"), is_multi) {
            ("set", _) => parsed,
            ("add", true) => {
                let mut l: Vec<Link> = old.as_ref().map(Val::links).unwrap_or(&[]).to_vec();
                for x in parsed.as_ref().map(Val::links).unwrap_or(&[]) {
                    if !l.contains(x) {
                        l.push(*x);
                    }
                }
                (!l.is_empty()).then(|| Val::Multi(l.into()))
            }
            ("remove", true) => {
                let gone = parsed.as_ref().map(Val::links).unwrap_or(&[]);
                let l: Vec<Link> = old
                    .as_ref()
                    .map(Val::links)
                    .unwrap_or(&[])
                    .iter()
                    .filter(|x| !gone.contains(x))
                    .copied()
                    .collect();
                (!l.is_empty()).then(|| Val::Multi(l.into()))
            }
            ("add" | "remove", false) => {
                return Err(Api3Error::bad_request(format!(
                    "multi_entity_update_mode applies only to multi-entity fields, not '{}'",
                    meta.name
                )))
            }
            (other, _) => {
                return Err(Api3Error::bad_request(format!(
                    "invalid multi_entity_update_mode '{other}' (set, add, remove)"
                )))
            }
        };
        if new == old {
            return Ok(());
        }
        self.txn.set(link, f, new.clone());
        let ev = self.event_change(link, f, old.as_ref(), new.as_ref(), false, 0);
        let links = |v: &Option<Val>| v.as_ref().map(Val::links).unwrap_or(&[]).to_vec();
        self.sync_inverse(link, f, &links(&old), &links(&new), ev);
        Ok(())
    }

    pub fn delete(&mut self, payload: &Value) -> Result<Value, Api3Error> {
        let link = type_and_id(self.store(), obj(payload)?)?;
        if self.is_event_log(link.ty) {
            return Err(Api3Error::bad_request(
                "EventLogEntry entities cannot be deleted",
            ));
        }
        // The official client's suite asserts that deleting an already retired entity answers
        // `false` (as revive of an active one does); an id that never existed is a Fault.
        match self.store().row(link) {
            None => return Err(not_found(self.store(), link)),
            Some(r) if r.retired => return Ok(json!(false)),
            Some(_) => {}
        }
        if let Some(row) = self.txn.row_mut(link) {
            row.retired = true;
        }
        self.stamp(link, false);
        self.event_retirement(link);
        Ok(json!(true))
    }

    pub fn revive(&mut self, payload: &Value) -> Result<Value, Api3Error> {
        let link = type_and_id(self.store(), obj(payload)?)?;
        match self.store().row(link) {
            None => Err(not_found(self.store(), link)),
            Some(r) if !r.retired => Ok(json!(false)),
            Some(_) => {
                if let Some(row) = self.txn.row_mut(link) {
                    row.retired = false;
                }
                self.stamp(link, false);
                self.event_revival(link);
                Ok(json!(true))
            }
        }
    }

    /// Runs the sub-requests in order; the caller rolls back on error.
    pub fn batch(&mut self, payload: &Value) -> Result<Value, Api3Error> {
        let items = payload
            .as_array()
            .ok_or_else(|| Api3Error::bad_request("batch needs a list of requests"))?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let kind = item
                .get("request_type")
                .and_then(Value::as_str)
                .unwrap_or("");
            let r = match kind {
                "create" => self.create(item),
                "update" => self.update(item, None),
                "delete" => self.delete(item),
                other => Err(Api3Error::bad_request(format!(
                    "invalid request_type '{other}' (create, update, delete)"
                ))),
            };
            out.push(r.map_err(|e| {
                Api3Error::new(
                    e.code,
                    format!("batch request {} ({kind}) failed: {}", i + 1, e.message),
                )
            })?);
        }
        Ok(Value::Array(out))
    }
}
