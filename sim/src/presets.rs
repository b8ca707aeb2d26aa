//! `additional_filter_presets` of `read` (doc 5.6): `LATEST` with `latest_by:
//! ENTITIES_CREATED_AT` on Version and PublishedFile. Other presets and `latest_by` values are
//! a clear Fault: their server-side rules are not modelled.
//!
//! Inferred (the reference says only "ANDed with filters", the official suite checks one
//! Version): among the rows the filters select, keep per linked `entity` the one created last
//! (highest `created_at`, then highest id); a row with no `entity` is its own group.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use sgcache::api3::Api3Error;

use crate::store::{Row, Store};
use crate::value::{Link, Ty, Val};

/// A parsed preset list: `None` when there is nothing to apply.
pub struct Latest {
    entity: u16,
    created_at: u16,
}

const LATEST_TYPES: &[&str] = &["Version", "PublishedFile"];

pub fn parse(store: &Store, ty: Ty, presets: Option<&Value>) -> Result<Option<Latest>, Api3Error> {
    let list = match presets {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) if a.is_empty() => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(Api3Error::bad_request(
                "additional_filter_presets must be a list",
            ))
        }
    };
    let [preset] = list.as_slice() else {
        return Err(Api3Error::bad_request(
            "the test site models one preset at a time (LATEST)",
        ));
    };
    let name = preset.get("preset_name").and_then(Value::as_str);
    let latest_by = preset.get("latest_by").and_then(Value::as_str);
    let table = store.table(ty);
    match (name, latest_by) {
        (None, _) => Err(Api3Error::bad_request(
            "additional_filter_presets: a preset needs a preset_name",
        )),
        (Some("LATEST"), Some("ENTITIES_CREATED_AT")) if LATEST_TYPES.contains(&table.name.as_str()) => {
            let field = |f: &str| store.field(ty, f);
            Ok(Some(Latest {
                entity: field("entity")?,
                created_at: field("created_at")?,
            }))
        }
        (Some(n), by) => Err(Api3Error::bad_request(format!(
            "additional_filter_presets: preset {n} (latest_by {}) on {} is not modelled by the test site",
            by.unwrap_or("none"),
            table.name
        ))),
    }
}

impl Latest {
    /// The ids of `rows` (already filtered) that are the latest of their group.
    pub fn keep<'a>(&self, rows: impl Iterator<Item = (u32, &'a Row)>) -> HashSet<u32> {
        let mut best: HashMap<Option<Link>, (i64, u32)> = HashMap::new();
        let mut ungrouped = HashSet::new();
        for (id, row) in rows {
            let created = match row.get(self.created_at) {
                Some(Val::DateTime(t)) => *t,
                _ => i64::MIN,
            };
            match row.get(self.entity).and_then(Val::as_link) {
                None => {
                    ungrouped.insert(id);
                }
                Some(link) => {
                    let slot = best.entry(Some(link)).or_insert((created, id));
                    if (created, id) > *slot {
                        *slot = (created, id);
                    }
                }
            }
        }
        ungrouped.extend(best.into_values().map(|(_, id)| id));
        ungrouped
    }
}
