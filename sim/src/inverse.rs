//! Which field is the other side of a link (doc section 7: the pairing is not in the schema).
//!
//! Rule chosen for the test site, applied once at start-up:
//! 1. Explicit self-referential pairs: `Shot.shots`/`Shot.parent_shots`,
//!    `Asset.assets`/`Asset.parents`, `Task.upstream_tasks`/`Task.downstream_tasks`,
//!    `PublishedFile.upstream_published_files`/`downstream_published_files`.
//! 2. A field `A.f` (entity or multi_entity, not `project`/`created_by`/`updated_by`/`user`)
//!    targeting `B != A` pairs with `B.<plural of A>` (`Task` → `tasks`, `PublishedFile` →
//!    `published_files`) when that is a multi_entity field accepting `A`. So `Task.entity`
//!    ↔ `Shot.tasks`, `Shot.sg_sequence` ↔ `Sequence.shots`, `Shot.assets` ↔ `Asset.shots`.
//! 3. `Note.note_links` ↔ `B.notes` for every target `B` without a pair from rule 2.
//!
//! A field gets at most one partner per other entity type; the first rule that applies wins. A multi_entity field
//! paired with an entity field (`Shot.tasks` ↔ `Task.entity`) is the "back-reference" side.

use crate::store::Store;
use crate::value::Ty;

const SELF_PAIRS: &[(&str, &str, &str)] = &[
    ("Shot", "shots", "parent_shots"),
    ("Asset", "assets", "parents"),
    ("Task", "upstream_tasks", "downstream_tasks"),
    (
        "PublishedFile",
        "upstream_published_files",
        "downstream_published_files",
    ),
];

const NO_BACKREF: &[&str] = &["project", "created_by", "updated_by", "user"];

/// `PublishedFile` → `published_files`.
pub fn plural(type_name: &str) -> String {
    let mut out = String::new();
    for (i, c) in type_name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out.push('s');
    out
}

fn is_link(store: &Store, ty: Ty, f: u16) -> bool {
    use sgcache::schema::DataType::*;
    matches!(
        store.table(ty).fields[f as usize].data_type,
        Entity | MultiEntity
    )
}

fn is_multi_accepting(store: &Store, ty: Ty, f: u16, target: Ty) -> bool {
    let meta = &store.table(ty).fields[f as usize];
    meta.data_type == sgcache::schema::DataType::MultiEntity && meta.valid_types.contains(&target)
}

fn partners(store: &Store, (ty, f): (Ty, u16)) -> &[(Ty, u16)] {
    &store.table(ty).fields[f as usize].inverse
}

/// Pairs `a` with `b` unless either already has a partner of the other's type.
fn link(store: &mut Store, a: (Ty, u16), b: (Ty, u16)) {
    if partners(store, a).iter().any(|p| p.0 == b.0)
        || partners(store, b).iter().any(|p| p.0 == a.0)
    {
        return;
    }
    store.table_mut(a.0).fields[a.1 as usize].inverse.push(b);
    store.table_mut(b.0).fields[b.1 as usize].inverse.push(a);
}

pub fn pair_fields(store: &mut Store) {
    for (t, f, g) in SELF_PAIRS {
        let Some(&ty) = store.by_name.get(*t) else {
            continue;
        };
        let (Some(f), Some(g)) = (store.table(ty).field(f), store.table(ty).field(g)) else {
            continue;
        };
        link(store, (ty, f), (ty, g));
    }
    // Entity fields first so that `Task.entity` claims `Shot.tasks` before anything else.
    for pass_entity in [true, false] {
        for a in 0..store.tables.len() as Ty {
            for f in 0..store.table(a).fields.len() as u16 {
                let meta = &store.table(a).fields[f as usize];
                let is_entity = meta.data_type == sgcache::schema::DataType::Entity;
                if is_entity != pass_entity
                    || !is_link(store, a, f)
                    || NO_BACKREF.contains(&meta.name.as_str())
                {
                    continue;
                }
                let wanted = plural(&store.table(a).name);
                for b in meta.valid_types.clone() {
                    if b == a {
                        continue;
                    }
                    if let Some(g) = store.table(b).field(&wanted) {
                        if is_multi_accepting(store, b, g, a) {
                            link(store, (a, f), (b, g));
                        }
                    }
                }
            }
        }
    }
    pair_note_links(store);
}

/// Rule 3: `Note.note_links` ↔ `B.notes`.
fn pair_note_links(store: &mut Store) {
    let Some(&note) = store.by_name.get("Note") else {
        return;
    };
    let Some(links) = store.table(note).field("note_links") else {
        return;
    };
    for b in store.table(note).fields[links as usize].valid_types.clone() {
        if let Some(g) = store.table(b).field("notes") {
            if is_multi_accepting(store, b, g, note) {
                link(store, (note, links), (b, g));
            }
        }
    }
}

/// The partner of field `f` of type `a` on the side of an entity of type `target`.
pub fn partner_for(store: &Store, a: Ty, f: u16, target: Ty) -> Option<u16> {
    partners(store, (a, f))
        .iter()
        .find(|p| p.0 == target)
        .map(|p| p.1)
}
