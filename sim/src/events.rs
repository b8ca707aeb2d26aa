//! EventLogEntry rows written by every write (doc 8.1, 8.2), and the other side of links.

use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};
use sgcache::schema::DataType;

use crate::codec::{render_link_raw, render_val, LinkStyle};
use crate::inverse::partner_for;
use crate::store::{Pending, Row, Store};
use crate::value::{format_meta_date_time, Link, Val};
use crate::write::Writer;

/// A value as event meta spells it: date-times as `YYYY-MM-DD HH:MM:SS UTC`, links with
/// their name whatever their state.
fn meta_value(store: &Store, v: Option<&Val>) -> Value {
    match v {
        None => Value::Null,
        Some(Val::DateTime(t)) => json!(format_meta_date_time(*t)),
        Some(Val::Link(l)) => render_link_raw(store, *l, LinkStyle::Read),
        Some(v) => render_val(store, v, LinkStyle::Read),
    }
}

/// A link in `added` / `removed`: `valid` and, when the type has one, `status`.
fn meta_link(store: &Store, l: Link) -> Value {
    let mut v = render_link_raw(store, l, LinkStyle::Write);
    let status = store.table(l.ty).field("sg_status_list");
    if let (Some(f), Value::Object(m)) = (status, &mut v) {
        let s = store.row(l).and_then(|r| r.get(f)).and_then(Val::as_str);
        m.insert("status".into(), json!(s));
    }
    v
}

fn diff(a: &[Link], b: &[Link]) -> Vec<Link> {
    a.iter().filter(|x| !b.contains(x)).copied().collect()
}

impl Writer<'_> {
    fn label(&self, l: Link) -> String {
        let s = self.store();
        format!(
            "{} {}",
            s.table(l.ty).name,
            s.display_name(l).unwrap_or("(unnamed)")
        )
    }

    fn project_of(&self, l: Link) -> Option<Link> {
        let s = self.store();
        if s.table(l.ty).name == "Project" {
            return Some(l);
        }
        let f = s.table(l.ty).field("project")?;
        s.row(l)?.get(f)?.as_link()
    }

    /// Appends one EventLogEntry (none for scripts without events); returns its id or 0.
    fn emit(
        &mut self,
        event_type: String,
        entity: Link,
        attribute: Option<&str>,
        meta: Value,
        description: String,
    ) -> u32 {
        self.emit_row(event_type, Some(entity), attribute, meta, description)
    }

    /// [`Self::emit`] for events about no entity row (schema changes).
    fn emit_row(
        &mut self,
        event_type: String,
        entity: Option<Link>,
        attribute: Option<&str>,
        meta: Value,
        description: String,
    ) -> u32 {
        if !self.principal.events {
            return 0;
        }
        let Some(&ty) = self.store().by_name.get("EventLogEntry") else {
            return 0;
        };
        let project = entity.and_then(|e| self.project_of(e));
        let t = self.store().table(ty);
        let mut row = Row::default();
        let mut put = |name: &str, v: Option<Val>| {
            if let Some(f) = t.field(name) {
                row.set(f, v);
            }
        };
        put("event_type", Some(Val::Str(event_type.into())));
        put("attribute_name", attribute.map(Val::str));
        put("entity", entity.map(Val::Link));
        put("project", project.map(Val::Link));
        put("user", Some(Val::Link(self.principal.actor)));
        put("created_at", Some(Val::DateTime(self.now)));
        put("meta", Some(Val::Json(Box::new(meta))));
        put(
            "session_uuid",
            self.principal.session_uuid.as_deref().map(Val::str),
        );
        put("description", Some(Val::Str(description.into())));
        let id = self.txn.insert(ty, row);
        self.maybe_hold_back(ty, id);
        id
    }

    /// The event-gap fault: some ids show up late, some never.
    fn maybe_hold_back(&mut self, ty: crate::value::Ty, id: u32) {
        let f = self.faults.clone();
        if f.event_drop_rate > 0.0 && self.rng.random::<f64>() < f.event_drop_rate {
            self.txn.hold_back(ty, id, Pending::Never);
        } else if f.event_gap_rate > 0.0 && self.rng.random::<f64>() < f.event_gap_rate {
            let until = self.instant + Duration::from_millis(f.event_gap_delay_ms);
            self.txn.hold_back(ty, id, Pending::Until(until));
        }
    }

    fn actor_name(&self) -> String {
        self.store()
            .display_name(self.principal.actor)
            .unwrap_or("someone")
            .to_string()
    }

    /// `Shotgun_DisplayColumn_New` / `_Change` for a field created or edited through the
    /// schema methods (protocol doc section 7: the site writes them; deletion writes none).
    /// *Inferred*: the entity is left empty (the test site has no DisplayColumn rows) and
    /// meta names the type and field.
    pub fn event_display_column(&mut self, action: &str, entity_type: &str, field: &str) -> u32 {
        let meta = json!({"type": "display_column", "entity_type": entity_type,
                          "field_name": field});
        let d = format!(
            "{} {} field {entity_type}.{field}",
            self.actor_name(),
            if action == "New" {
                "created"
            } else {
                "changed"
            }
        );
        self.emit_row(
            format!("Shotgun_DisplayColumn_{action}"),
            None,
            None,
            meta,
            d,
        )
    }

    pub fn event_new(&mut self, l: Link) -> u32 {
        let name = self.store().table(l.ty).name.clone();
        let meta = json!({"type": "new_entity", "entity_type": name, "entity_id": l.id});
        let d = format!("{} created new {}", self.actor_name(), self.label(l));
        self.emit(format!("Shotgun_{name}_New"), l, None, meta, d)
    }

    /// A Change event for field `f`; multi-entity fields log `added`/`removed`.
    pub fn event_change(
        &mut self,
        l: Link,
        f: u16,
        old: Option<&Val>,
        new: Option<&Val>,
        in_create: bool,
        _new_event: u32,
    ) -> u32 {
        let s = self.store();
        let t = s.table(l.ty);
        let meta_f = &t.fields[f as usize];
        let mut meta = json!({
            "type": "attribute_change", "attribute_name": meta_f.name, "entity_type": t.name,
            "entity_id": l.id, "field_data_type": meta_f.data_type.api_name(),
        });
        let m = meta.as_object_mut().expect("object");
        if matches!(
            meta_f.data_type,
            DataType::MultiEntity | DataType::Addressing
        ) {
            let links = |v: Option<&Val>| v.map(Val::links).unwrap_or(&[]).to_vec();
            let (o, n) = (links(old), links(new));
            m.insert(
                "added".into(),
                diff(&n, &o).into_iter().map(|x| meta_link(s, x)).collect(),
            );
            m.insert(
                "removed".into(),
                diff(&o, &n).into_iter().map(|x| meta_link(s, x)).collect(),
            );
        } else {
            m.insert("old_value".into(), meta_value(s, old));
            m.insert("new_value".into(), meta_value(s, new));
        }
        if in_create {
            m.insert("in_create".into(), json!(true));
        }
        let (ty_name, f_name) = (t.name.clone(), meta_f.name.clone());
        let d = format!(
            "{} changed \"{}\" on {}",
            self.actor_name(),
            f_name,
            self.label(l)
        );
        self.emit(
            format!("Shotgun_{ty_name}_Change"),
            l,
            Some(&f_name),
            meta,
            d,
        )
    }

    /// Keeps the other side of a link in step and logs the back-reference change there.
    pub fn sync_inverse(&mut self, src: Link, f: u16, old: &[Link], new: &[Link], primary: u32) {
        for (l, add) in diff(new, old)
            .into_iter()
            .map(|l| (l, true))
            .chain(diff(old, new).into_iter().map(|l| (l, false)))
        {
            let Some(g) = partner_for(self.store(), src.ty, f, l.ty) else {
                continue;
            };
            if self.store().row(l).is_none() {
                continue;
            }
            if self.set_backref(l, g, src, add) {
                self.event_backref(l, g, src, f, add, primary);
            }
        }
    }

    /// Adds/removes `src` in field `g` of `l`; true when something changed.
    fn set_backref(&mut self, l: Link, g: u16, src: Link, add: bool) -> bool {
        let s = self.store();
        let is_multi = s.table(l.ty).fields[g as usize].data_type != DataType::Entity;
        let cur = s.row(l).and_then(|r| r.get(g)).cloned();
        let new = if is_multi {
            let mut v: Vec<Link> = cur.as_ref().map(Val::links).unwrap_or(&[]).to_vec();
            let had = v.contains(&src);
            if add == had {
                return false;
            }
            if add {
                v.push(src)
            } else {
                v.retain(|x| *x != src)
            }
            (!v.is_empty()).then(|| Val::Multi(v.into()))
        } else {
            let holder = cur.as_ref().and_then(Val::as_link);
            if add == (holder == Some(src)) {
                return false;
            }
            // The entity side had another holder: drop the link from that holder's list too.
            if let (true, Some(h)) = (add, holder) {
                if let Some(hf) = partner_for(s, l.ty, g, h.ty) {
                    let keep: Vec<Link> = s
                        .row(h)
                        .and_then(|r| r.get(hf))
                        .map(Val::links)
                        .unwrap_or(&[])
                        .iter()
                        .filter(|x| **x != l)
                        .copied()
                        .collect();
                    self.txn
                        .set(h, hf, (!keep.is_empty()).then(|| Val::Multi(keep.into())));
                }
            }
            add.then_some(Val::Link(src))
        };
        self.txn.set(l, g, new);
        let now = self.now;
        if let Some(u) = self.store().table(l.ty).field("updated_at") {
            self.txn.set(l, u, Some(Val::DateTime(now)));
        }
        true
    }

    fn event_backref(&mut self, l: Link, g: u16, src: Link, f: u16, add: bool, primary: u32) {
        let s = self.store();
        let (lt, st) = (s.table(l.ty), s.table(src.ty));
        let g_name = lt.fields[g as usize].name.clone();
        let src_field = &st.fields[f as usize];
        let link = meta_link(s, src);
        let (added, removed) = if add {
            (vec![link], vec![])
        } else {
            (vec![], vec![link])
        };
        let meta = json!({
            "type": "attribute_change", "attribute_name": g_name, "entity_type": st.name,
            "entity_id": src.id, "field_data_type": src_field.data_type.api_name(),
            "actual_attribute_changed": format!("{}.{}", st.name, src_field.name),
            "original_event_log_entry_id": primary, "added": added, "removed": removed,
        });
        let name = lt.name.clone();
        let d = format!(
            "{} changed \"{}\" on {}",
            self.actor_name(),
            g_name,
            self.label(l)
        );
        self.emit(format!("Shotgun_{name}_Change"), l, Some(&g_name), meta, d);
    }

    pub fn event_retirement(&mut self, l: Link) {
        let name = self.store().table(l.ty).name.clone();
        let date = format_meta_date_time(self.now);
        let change = json!({
            "type": "attribute_change", "attribute_name": "retirement_date", "entity_type": name,
            "entity_id": l.id, "field_data_type": "date_time", "old_value": null, "new_value": date,
        });
        let d = format!("{} retired {}", self.actor_name(), self.label(l));
        self.emit(
            format!("Shotgun_{name}_Change"),
            l,
            Some("retirement_date"),
            change,
            d.clone(),
        );
        let meta = json!({
            "type": "entity_retirement", "entity_type": name, "entity_id": l.id, "id": l.id,
            "class_name": name, "display_name": self.store().display_name(l), "retirement_date": date,
        });
        self.emit(format!("Shotgun_{name}_Retirement"), l, None, meta, d);
    }

    pub fn event_revival(&mut self, l: Link) {
        let name = self.store().table(l.ty).name.clone();
        let meta = json!({
            "type": "entity_revival", "entity_type": name, "entity_id": l.id, "id": l.id,
            "class_name": name, "display_name": self.store().display_name(l),
        });
        let d = format!("{} revived {}", self.actor_name(), self.label(l));
        self.emit(format!("Shotgun_{name}_Revival"), l, None, meta, d);
    }
}
