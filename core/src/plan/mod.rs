//! Schema planning: from the spec, the site schema and the cache's current layout to the list
//! of changes that brings the layout to what the spec asks for. Pure: no I/O.
//!
//! Applying a plan (see `crate::storage::migrate`) and planning again yields an empty plan;
//! [`DbState::after`] is the model of that application the property tests check.

mod coverage;
mod diff;
mod display;
mod narrow;
mod resolve;
mod state;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema::{DataType, SiteSchema, Storage};
use crate::spec::ShotgunCacheSpec;

pub use coverage::{link_gaps, link_targets, state_coverage, ImpliedType, LinkGap, LinkTargets};
pub use narrow::narrow_to_site;
pub use resolve::{is_viewer_dependent, uncacheable_reason, ASSOC_INDEX_SUFFIX};
pub use state::{DbState, FieldRecord, FieldState, TypeState};

/// A field as a change creates or rebuilds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldDef {
    pub entity_type: String,
    pub field_name: String,
    /// The site's data type (`text`, `entity`, …).
    pub data_type: String,
    /// The site's schema record of the field.
    pub schema: Value,
}

impl FieldDef {
    pub fn storage(&self) -> Storage {
        DataType::from_api(&self.data_type).storage()
    }
}

/// One change to the cache's layout or state tables.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// A new entity table (its fields follow as `AddField`).
    CreateTable {
        entity_type: String,
        table: String,
        display_field: Option<String>,
    },
    /// The display field of a cached type changed.
    SetDisplayField {
        entity_type: String,
        display_field: Option<String>,
    },
    /// New column(s) or association table; the field starts `pending`.
    AddField(FieldDef),
    /// The site changed the field's data type: drop and recreate its storage, back to `pending`.
    RebuildField {
        field: FieldDef,
        old_data_type: String,
    },
    /// A dropped field is back in the spec, or an unservable field is retried: its column is
    /// kept but stale, so back to `pending`.
    ReviveField(FieldDef),
    /// Same data type, new schema record (e.g. valid values changed): only the record changes.
    UpdateFieldSchema(FieldDef),
    /// Out of the spec: stop serving and writing it; the column stays.
    DropField {
        entity_type: String,
        field_name: String,
    },
    /// Out of the spec and `prune`: drop its column(s) or association table and its state.
    PruneField {
        entity_type: String,
        field_name: String,
        data_type: String,
    },
    /// A type out of the spec and `prune`: drop its table, association tables and state.
    PruneTable {
        entity_type: String,
        table: String,
        assoc_tables: Vec<String>,
    },
}

/// A field the spec asks for that the cache does not store: reads touching it pass through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassThrough {
    pub entity_type: String,
    pub field_name: String,
    pub data_type: String,
    pub reason: String,
    /// Named explicitly in the spec (rather than by `*`).
    pub declared: bool,
}

/// What a migration does.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub passed_through: Vec<PassThrough>,
    /// Declared types and fields the cache held that the site has deleted since
    /// (`Shot.sg_cut`): planned as out of the spec, so they are dropped, not an error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gone: Vec<String>,
    /// Types the spec does not list, cached for the links that point to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub implied: Vec<ImpliedType>,
    /// Declared links the cache still cannot render (`Shot.sg_sequence -> Sequence (why)`):
    /// reads returning them go to the site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uncovered: Vec<String>,
}

impl Plan {
    /// True when the layout already matches the spec.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Planning options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Drop the storage of fields and types that are out of the spec.
    pub prune: bool,
}

/// A spec the site schema cannot satisfy. One line, naming the offending item.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("unknown entity type {0}: the site has no such type")]
    UnknownEntityType(String),
    #[error("unknown field {0}.{1}: the site has no such field")]
    UnknownField(String, String),
    /// Every declared type and field the site lacks, each with a suggestion when one is near.
    #[error("not on the site: {}", .0.join("; "))]
    NotOnSite(Vec<String>),
    #[error("field {0}.{1} cannot be excluded: it is always cached ({2})")]
    ImplicitExcluded(String, String, &'static str),
    #[error(
        "field {0}.{1} cannot be cached: its value depends on who asks (remove it; \"*\" leaves it out)"
    )]
    ViewerDependent(String, String),
    #[error("table name {table} is used by both {first} and {second}")]
    TableCollision {
        table: String,
        first: String,
        second: String,
    },
}

/// Plans the changes that bring `current` to what `spec` asks for on a site with `site`'s schema.
pub fn plan(
    spec: &ShotgunCacheSpec,
    site: &SiteSchema,
    current: &DbState,
    options: PlanOptions,
) -> Result<Plan, PlanError> {
    let (narrowed, gone) = narrow_to_site(spec, site, current);
    let targets = link_targets(&narrowed, site);
    let desired = resolve::resolve(&targets.extend(&narrowed), site)?;
    Ok(Plan {
        gone,
        implied: targets.implied,
        uncovered: targets.gaps.iter().map(ToString::to_string).collect(),
        ..diff::diff(&desired, current, options)
    })
}

impl DbState {
    /// The state after applying `plan`: the model the storage layer must match.
    pub fn after(&self, plan: &Plan) -> DbState {
        let mut next = self.clone();
        for change in &plan.changes {
            next.apply_change(change);
        }
        next
    }

    fn apply_change(&mut self, change: &Change) {
        match change {
            Change::CreateTable {
                entity_type,
                table,
                display_field,
            } => {
                self.types.insert(
                    entity_type.clone(),
                    TypeState {
                        table_name: table.clone(),
                        display_field: display_field.clone(),
                    },
                );
            }
            Change::SetDisplayField {
                entity_type,
                display_field,
            } => {
                if let Some(t) = self.types.get_mut(entity_type) {
                    t.display_field = display_field.clone();
                }
            }
            Change::AddField(f)
            | Change::RebuildField { field: f, .. }
            | Change::ReviveField(f) => self.set_field(f, FieldState::Pending),
            Change::UpdateFieldSchema(f) => {
                let state = self
                    .field(&f.entity_type, &f.field_name)
                    .map_or(FieldState::Pending, |r| r.state);
                self.set_field(f, state)
            }
            Change::DropField {
                entity_type,
                field_name,
            } => {
                if let Some(r) = self
                    .fields
                    .get_mut(entity_type)
                    .and_then(|m| m.get_mut(field_name))
                {
                    r.state = FieldState::Dropped;
                }
            }
            Change::PruneField {
                entity_type,
                field_name,
                ..
            } => {
                if let Some(m) = self.fields.get_mut(entity_type) {
                    m.remove(field_name);
                    if m.is_empty() {
                        self.fields.remove(entity_type);
                    }
                }
            }
            Change::PruneTable { entity_type, .. } => {
                self.types.remove(entity_type);
                self.fields.remove(entity_type);
            }
        }
    }

    fn set_field(&mut self, f: &FieldDef, state: FieldState) {
        self.fields
            .entry(f.entity_type.clone())
            .or_default()
            .insert(
                f.field_name.clone(),
                FieldRecord {
                    data_type: f.data_type.clone(),
                    state,
                    schema: f.schema.clone(),
                },
            );
    }
}
