//! Compares what the spec asks for with what the database holds.

use std::collections::BTreeSet;

use super::resolve::{Desired, DesiredType};
use super::{Change, DbState, FieldDef, FieldState, Plan, PlanOptions};
use crate::ident;
use crate::schema::{FieldSchema, Storage};

pub(super) fn diff(desired: &Desired<'_>, current: &DbState, options: PlanOptions) -> Plan {
    let mut plan = Plan::default();
    let types: BTreeSet<&String> = desired.keys().chain(current.types.keys()).collect();
    for et in types {
        match desired.get(et) {
            Some(d) => {
                diff_type(et, d, current, options, &mut plan.changes);
                plan.passed_through.extend(d.passed_through.iter().cloned());
            }
            None => retire_type(et, current, options, &mut plan.changes),
        }
    }
    plan
}

fn field_def(et: &str, f: &FieldSchema) -> FieldDef {
    FieldDef {
        entity_type: et.to_string(),
        field_name: f.name.clone(),
        data_type: f.data_type.api_name().to_string(),
        schema: f.raw.clone(),
    }
}

fn diff_type(
    et: &str,
    d: &DesiredType<'_>,
    current: &DbState,
    options: PlanOptions,
    out: &mut Vec<Change>,
) {
    match current.types.get(et) {
        None => out.push(Change::CreateTable {
            entity_type: et.to_string(),
            table: d.table.clone(),
            display_field: d.display_field.clone(),
        }),
        Some(t) if t.display_field != d.display_field => out.push(Change::SetDisplayField {
            entity_type: et.to_string(),
            display_field: d.display_field.clone(),
        }),
        Some(_) => {}
    }
    let existing = current.fields.get(et);
    for (name, f) in &d.fields {
        let def = field_def(et, f);
        let change = match existing.and_then(|m| m.get(name)) {
            None => Some(Change::AddField(def)),
            Some(r) if r.data_type != def.data_type => Some(Change::RebuildField {
                field: def,
                old_data_type: r.data_type.clone(),
            }),
            // An unservable field is backfilled again: the values the site now holds may be
            // storable (docs/storage.md "Values the cache cannot store").
            Some(r) if matches!(r.state, FieldState::Dropped | FieldState::Unservable) => {
                Some(Change::ReviveField(def))
            }
            Some(r) if r.schema != def.schema => Some(Change::UpdateFieldSchema(def)),
            Some(_) => None,
        };
        out.extend(change);
    }
    for (name, r) in existing.into_iter().flatten() {
        if d.fields.contains_key(name) {
            continue;
        }
        if options.prune {
            out.push(Change::PruneField {
                entity_type: et.to_string(),
                field_name: name.clone(),
                data_type: r.data_type.clone(),
            });
        } else if r.state != FieldState::Dropped {
            out.push(Change::DropField {
                entity_type: et.to_string(),
                field_name: name.clone(),
            });
        }
    }
}

/// A type that is no longer declared: drop its fields, or with `prune` its whole table.
fn retire_type(et: &str, current: &DbState, options: PlanOptions, out: &mut Vec<Change>) {
    let fields = current.fields.get(et);
    if options.prune {
        let assoc_tables = fields
            .into_iter()
            .flatten()
            .filter(|(_, r)| r.storage() == Storage::MultiEntity)
            .map(|(name, _)| ident::assoc_table_name(et, name))
            .collect();
        let table = current
            .types
            .get(et)
            .map_or_else(|| ident::table_name(et), |t| t.table_name.clone());
        out.push(Change::PruneTable {
            entity_type: et.to_string(),
            table,
            assoc_tables,
        });
        return;
    }
    for (name, r) in fields.into_iter().flatten() {
        if r.state != FieldState::Dropped {
            out.push(Change::DropField {
                entity_type: et.to_string(),
                field_name: name.clone(),
            });
        }
    }
}
