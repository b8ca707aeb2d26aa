//! `read`: filter, sort, page and project (doc 3.2).
//!
//! Choices where the doc is silent: default order is id ascending and `id asc` is always the
//! final tiebreak; text sorts case-insensitively (unless [`crate::semantics`] says otherwise); nulls sort last ascending and first
//! descending (PostgreSQL's default); links sort by display name; `entities_per_page` is
//! capped at the site's `api_max_entities_per_page`. A deep return field through a
//! multi_entity hop returns the list of far values of the active linked entities.

use std::cmp::Ordering;
use std::time::Instant;

use serde_json::{json, Map, Value};
use sgcache::api3::{Api3Error, PagingStyle, ReadRequest, ReturnOnly, SortDirection};

use crate::codec::{render, LinkStyle};
use crate::filter::{checkbox_value, compile, resolve_path, Compiled, Path};
use crate::store::{Row, Store};
use crate::value::{Link, Ty, Val};

/// What a read needs besides the store.
#[derive(Clone, Copy, Debug)]
pub struct ReadEnv {
    pub now: i64,
    pub instant: Instant,
    pub max_per_page: u64,
}

/// Which rows a query considers before its filter.
pub struct Scope {
    pub ty: Ty,
    pub retired: bool,
    pub hide_archived: bool,
    project_field: Option<u16>,
    archived_field: Option<(Ty, u16)>,
}

impl Scope {
    pub fn new(store: &Store, ty: Ty, retired: bool, include_archived: bool) -> Scope {
        let archived_field = store
            .by_name
            .get("Project")
            .and_then(|&p| Some((p, store.table(p).field("archived")?)));
        let project_field = store.table(ty).field("project");
        Scope {
            ty,
            retired,
            hide_archived: !include_archived,
            project_field,
            archived_field,
        }
    }

    pub fn admits(&self, store: &Store, id: u32, row: &Row, now: Instant) -> bool {
        if row.retired != self.retired || !store.table(self.ty).visible(id, now) {
            return false;
        }
        if !self.hide_archived {
            return true;
        }
        let Some((pty, archived)) = self.archived_field else {
            return true;
        };
        let project = if self.ty == pty {
            Some(row)
        } else {
            self.project_field
                .and_then(|f| row.get(f)?.as_link())
                .filter(|l| l.ty == pty)
                .and_then(|l| store.row(l))
        };
        !project.is_some_and(|p| p.get(archived) == Some(&Val::Bool(true)))
    }
}

/// Iterates matching rows in id order (ascending or descending) within id bounds.
pub fn scan<'a>(
    store: &'a Store,
    scope: &'a Scope,
    filter: &'a Compiled,
    desc: bool,
    now: Instant,
) -> impl Iterator<Item = (u32, &'a Row)> + 'a {
    let rows = &store.table(scope.ty).rows;
    let (lo, hi) = filter.id_bounds();
    let lo = lo.max(1) as usize;
    let hi = (hi as usize).min(rows.len());
    let range = if lo > hi { 0..0 } else { lo - 1..hi };
    let ids: Box<dyn Iterator<Item = usize>> = if desc {
        Box::new(range.rev())
    } else {
        Box::new(range)
    };
    ids.filter_map(move |i| {
        let row = rows[i].as_ref()?;
        let id = i as u32 + 1;
        (scope.admits(store, id, row, now) && filter.matches(store, id, row)).then_some((id, row))
    })
}

#[derive(Clone, Debug, PartialEq, PartialOrd)]
enum Key {
    Num(f64),
    /// The primary and secondary keys of [`crate::semantics::Semantics::sort_key`].
    Text(String, String),
    Null,
}

fn sort_key(store: &Store, path: &Path, id: u32, row: &Row) -> Key {
    let mut row = row;
    let mut id = id;
    for hop in &path.hops {
        let next = row
            .get(hop.field)
            .map(Val::links)
            .unwrap_or(&[])
            .iter()
            .find(|l| l.ty == hop.target)
            .and_then(|l| Some((l.id, store.active(*l)?)));
        match next {
            Some((i, r)) => (id, row) = (i, r),
            None => return Key::Null,
        }
    }
    let Some(f) = path.field else {
        return Key::Num(id as f64);
    };
    let text = |s: &str| {
        let (primary, secondary) = store.semantics.sort_key(s);
        Key::Text(primary, secondary)
    };
    let name = |l: &Link| text(store.display_name(*l).unwrap_or(""));
    let data_type = &store.table(table_of(path)).fields[f as usize].data_type;
    match checkbox_value(store, data_type, row.get(f)) {
        None => Key::Null,
        Some(Val::Int(n)) => Key::Num(*n as f64),
        Some(Val::Float(x)) => Key::Num(*x),
        Some(Val::Bool(b)) => Key::Num(*b as u8 as f64),
        Some(Val::Date(d)) => Key::Num(*d as f64),
        Some(Val::DateTime(t)) => Key::Num(*t as f64),
        Some(Val::Str(s)) => text(s),
        Some(Val::Link(l)) if store.active(*l).is_some() => name(l),
        // The first member a read returns: retired members are not in the list (README).
        Some(Val::Multi(ls)) => ls
            .iter()
            .find(|l| store.active(**l).is_some())
            .map(name)
            .unwrap_or(Key::Null),
        Some(Val::Tags(t)) => t.first().map(|t| text(t)).unwrap_or(Key::Null),
        Some(_) => Key::Null,
    }
}

fn cmp_key(a: &Key, b: &Key) -> Ordering {
    match (a, b) {
        (Key::Null, Key::Null) => Ordering::Equal,
        (Key::Null, _) => Ordering::Greater,
        (_, Key::Null) => Ordering::Less,
        _ => a.partial_cmp(b).unwrap_or(Ordering::Equal),
    }
}

/// The value of a (possibly deep) path for one row, as the API returns it.
pub fn project(store: &Store, path: &Path, id: u32, row: &Row, hops_done: usize) -> Value {
    let Some(hop) = path.hops.get(hops_done) else {
        return match path.field {
            None => json!(id),
            Some(f) => {
                let meta = &store.table(table_of(path)).fields[f as usize];
                render(store, meta, row.get(f), LinkStyle::Read)
            }
        };
    };
    let targets = row
        .get(hop.field)
        .map(Val::links)
        .unwrap_or(&[])
        .iter()
        .filter(|l| l.ty == hop.target)
        .filter_map(|l| Some((l.id, store.active(*l)?)));
    if hop.multi {
        Value::Array(
            targets
                .map(|(i, r)| project(store, path, i, r, hops_done + 1))
                .collect(),
        )
    } else {
        let mut targets = targets;
        match targets.next() {
            Some((i, r)) => project(store, path, i, r, hops_done + 1),
            None => Value::Null,
        }
    }
}

/// The type that holds a path's final field.
fn table_of(path: &Path) -> Ty {
    path.hops.last().map(|h| h.target).unwrap_or(path.root)
}

/// Return fields resolved once per request. `type` and `id` are always returned.
pub fn resolve_return_fields(
    store: &Store,
    ty: Ty,
    fields: &[String],
) -> Result<Vec<(String, Path)>, Api3Error> {
    fields
        .iter()
        .filter(|f| f.as_str() != "type" && f.as_str() != "id")
        .map(|f| Ok((f.clone(), resolve_path(store, ty, f)?)))
        .collect()
}

pub fn entity_json(
    store: &Store,
    ty: Ty,
    id: u32,
    row: &Row,
    fields: &[(String, Path)],
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), json!(store.table(ty).name));
    m.insert("id".into(), json!(id));
    for (name, path) in fields {
        m.insert(name.clone(), project(store, path, id, row, 0));
    }
    m
}

pub fn read(store: &Store, req: &ReadRequest, env: ReadEnv) -> Result<Value, Api3Error> {
    let ty = store.ty(&req.entity_type)?;
    let latest = crate::presets::parse(store, ty, req.additional_filter_presets.as_ref())?;
    let filter = compile(store, ty, &req.filters, env.now)?;
    let fields = resolve_return_fields(store, ty, &req.return_fields)?;
    let sorts = req
        .sorts
        .iter()
        .map(|s| Ok((resolve_path(store, ty, &s.field)?, s.direction)))
        .collect::<Result<Vec<_>, Api3Error>>()?;
    let scope = Scope::new(
        store,
        ty,
        req.return_only == ReturnOnly::Retired,
        req.include_archived_projects,
    );
    let keep = latest.map(|l| l.keep(scan(store, &scope, &filter, false, env.instant)));
    let kept = |id: u32| keep.as_ref().is_none_or(|k| k.contains(&id));
    let (offset, per) = match req.paging {
        Some(p) => {
            let per = p.entities_per_page.min(env.max_per_page) as usize;
            ((p.current_page - 1) as usize * per, per)
        }
        None => (0, usize::MAX),
    };
    let count_all = req.paging_style == PagingStyle::EntityCount;
    let id_only = match sorts.as_slice() {
        [] => Some(false),
        [(p, d)] if p.hops.is_empty() && p.field.is_none() => Some(*d == SortDirection::Desc),
        _ => None,
    };
    let (page, total, more) = match id_only {
        Some(desc) => {
            let mut total = 0usize;
            let mut page = Vec::new();
            let mut more = false;
            for (id, row) in scan(store, &scope, &filter, desc, env.instant).filter(|r| kept(r.0)) {
                if total >= offset && page.len() < per {
                    page.push((id, row));
                } else if total >= offset {
                    more = true;
                    if !count_all {
                        break;
                    }
                }
                total += 1;
            }
            (page, total, more)
        }
        None => {
            let mut all: Vec<(Vec<Key>, u32, &Row)> =
                scan(store, &scope, &filter, false, env.instant)
                    .filter(|r| kept(r.0))
                    .map(|(id, row)| {
                        let keys = sorts
                            .iter()
                            .map(|(p, _)| sort_key(store, p, id, row))
                            .collect();
                        (keys, id, row)
                    })
                    .collect();
            all.sort_by(|a, b| {
                for (i, (_, dir)) in sorts.iter().enumerate() {
                    let o = cmp_key(&a.0[i], &b.0[i]);
                    let o = if *dir == SortDirection::Desc {
                        o.reverse()
                    } else {
                        o
                    };
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                a.1.cmp(&b.1)
            });
            let total = all.len();
            let more = total > offset.saturating_add(per);
            let page = all
                .into_iter()
                .skip(offset)
                .take(per)
                .map(|(_, id, row)| (id, row))
                .collect();
            (page, total, more)
        }
    };
    let entities: Vec<Value> = page
        .into_iter()
        .map(|(id, row)| Value::Object(entity_json(store, ty, id, row, &fields)))
        .collect();
    let paging_info = match req.paging_style {
        PagingStyle::EntityCount => json!({ "entity_count": total }),
        _ => json!({ "has_next_page": more }),
    };
    Ok(json!({"entities": entities, "paging_info": paging_info}))
}
