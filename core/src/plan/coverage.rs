//! Which link targets the cache needs, and which declared reads it can never answer.
//!
//! A link field (`entity`, `multi_entity`) renders each target as `{type, id, name}`; the
//! `name` comes from the target type's display field, and a retired target reads as no link,
//! so the cache can render a link only when the target type is cached with its display field
//! (as text). A target type the spec does not list is therefore *implied by links*: planned
//! with just its display field (`id`, `updated_at` and retirement come with every table),
//! unless the spec opts out (`implyLinkTargets: false`). What still cannot be rendered (opted
//! out, a type the site lacks, no text display field, a field that may link to any type) is a
//! [`LinkGap`]: reads returning it pass through (`reason="link_name"`), and the status says so.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::resolve::{display_field, uncacheable_reason};
use super::{DbState, FieldRecord, FieldState};
use crate::ident;
use crate::schema::{DataType, FieldSchema, SiteSchema, Storage};
use crate::spec::{EntitySpec, ShotgunCacheSpec};

/// A type the spec does not list, cached because cached links point to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImpliedType {
    pub entity_type: String,
    /// The field giving the links' `name`.
    pub display_field: String,
    /// The cached link fields that point to it (`Shot.sg_sequence`), in spec order.
    pub linked_from: Vec<String>,
}

impl std::fmt::Display for ImpliedType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}) for {}",
            self.entity_type,
            self.display_field,
            self.linked_from.join(", ")
        )
    }
}

/// A declared link field whose targets are not all nameable from the cache: reads returning
/// it pass through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkGap {
    pub entity_type: String,
    pub field_name: String,
    /// The target types the cache cannot name, each with why; empty when the field may link to
    /// any type.
    pub missing: Vec<(String, String)>,
}

impl LinkGap {
    /// The names of the missing target types.
    pub fn missing_types(&self) -> Vec<&str> {
        self.missing.iter().map(|(t, _)| t.as_str()).collect()
    }
}

impl std::fmt::Display for LinkGap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let targets = if self.missing.is_empty() {
            "any type (no target type to cache)".to_string()
        } else {
            let each: Vec<String> = self
                .missing
                .iter()
                .map(|(t, why)| format!("{t} ({why})"))
                .collect();
            each.join(", ")
        };
        write!(f, "{}.{} -> {targets}", self.entity_type, self.field_name)
    }
}

/// The link targets of a spec on a site: the types implied by links, and the declared links
/// the cache still cannot render.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkTargets {
    pub implied: Vec<ImpliedType>,
    pub gaps: Vec<LinkGap>,
}

impl LinkTargets {
    /// `spec` with each implied type listed, with its display field only: what is planned.
    pub fn extend(&self, spec: &ShotgunCacheSpec) -> ShotgunCacheSpec {
        let mut extended = spec.clone();
        extended
            .entities
            .extend(self.implied.iter().map(|t| EntitySpec {
                entity_type: t.entity_type.clone(),
                fields: vec![t.display_field.clone()],
                exclude: Vec::new(),
            }));
        extended
    }
}

/// Why the cache cannot name links to `target`, or its display field when it can.
fn nameable<'a>(
    spec: &'a ShotgunCacheSpec,
    site: &'a SiteSchema,
    target: &str,
) -> Result<&'a str, String> {
    let Some(schema) = site.entity(target) else {
        return Err("the site has no such type".into());
    };
    ident::validate_entity_type(target)?;
    let Some(display) = display_field(spec, schema) else {
        return Err("it has no display field".into());
    };
    let field = &schema.fields[display];
    if field.data_type.storage() != Storage::Text {
        return Err(format!("its display field {display} is not text"));
    }
    if let Some(why) = uncacheable_reason(target, field) {
        return Err(format!("its display field {display}: {why}"));
    }
    Ok(display)
}

/// The link fields a listed type caches, `(name, declared explicitly, schema)`: the named
/// ones in spec order, then those `*` brings.
fn cached_links<'a>(
    entity: &'a EntitySpec,
    site: &'a SiteSchema,
) -> Vec<(&'a str, bool, &'a FieldSchema)> {
    let Some(schema) = site.entity(&entity.entity_type) else {
        return Vec::new();
    };
    let explicit = entity
        .fields
        .iter()
        .filter_map(|f| schema.fields.get(f))
        .map(|f| (f, true));
    let starred = schema
        .fields
        .values()
        .filter(|f| entity.all_fields() && !entity.fields.contains(&f.name))
        .filter(|f| !entity.exclude.contains(&f.name))
        .map(|f| (f, false));
    explicit
        .chain(starred)
        .filter(|(f, _)| matches!(f.data_type, DataType::Entity | DataType::MultiEntity))
        .filter(|(f, _)| uncacheable_reason(&entity.entity_type, f).is_none())
        .map(|(f, explicit)| (f.name.as_str(), explicit, f))
        .collect()
}

/// What the links of `spec` need on `site`. Types and fields the site lacks are the plan's
/// business, not this (they are skipped).
pub fn link_targets(spec: &ShotgunCacheSpec, site: &SiteSchema) -> LinkTargets {
    let listed = |t: &str| spec.entity(t).is_some();
    let mut implied: BTreeMap<String, ImpliedType> = BTreeMap::new();
    let mut order = Vec::new();
    let mut gaps = Vec::new();
    for entity in &spec.entities {
        for (name, explicit, field) in cached_links(entity, site) {
            let from = format!("{}.{name}", entity.entity_type);
            let mut missing = Vec::new();
            for target in &field.valid_types {
                let display = nameable(spec, site, target);
                if listed(target) {
                    if let Err(why) = display {
                        missing.push((target.clone(), why));
                    }
                    continue;
                }
                if !spec.implies_link_targets() {
                    let why = "not listed; implyLinkTargets is false".to_string();
                    missing.push((target.clone(), why));
                    continue;
                }
                match display {
                    Ok(d) => {
                        let t = implied.entry(target.clone()).or_insert_with(|| {
                            order.push(target.clone());
                            ImpliedType {
                                entity_type: target.clone(),
                                display_field: d.to_string(),
                                linked_from: Vec::new(),
                            }
                        });
                        t.linked_from.push(from.clone());
                    }
                    Err(why) => missing.push((target.clone(), why)),
                }
            }
            if explicit && (field.valid_types.is_empty() || !missing.is_empty()) {
                gaps.push(LinkGap {
                    entity_type: entity.entity_type.clone(),
                    field_name: name.to_string(),
                    missing,
                });
            }
        }
    }
    LinkTargets {
        implied: order
            .into_iter()
            .filter_map(|t| implied.remove(&t))
            .collect(),
        gaps,
    }
}

/// The declared link fields whose targets the cache cannot name (after implying what it can),
/// in spec order.
pub fn link_gaps(spec: &ShotgunCacheSpec, site: &SiteSchema) -> Vec<LinkGap> {
    link_targets(spec, site).gaps
}

/// The same question asked of the cache as it stands (what the status shows, matching what the
/// proxy can render): which types `state` holds for links only, and which declared links
/// point to types it cannot name. Link fields keep their schema record in `state`, so no
/// site schema is needed.
pub fn state_coverage(spec: &ShotgunCacheSpec, state: &DbState) -> LinkTargets {
    let nameable = |t: &str| {
        state.types.get(t).is_some_and(|ty| {
            ty.display_field.as_deref().is_some_and(|d| {
                state
                    .field(t, d)
                    .is_some_and(|r| r.state != FieldState::Dropped && r.storage() == Storage::Text)
            })
        })
    };
    let mut implied: BTreeMap<String, ImpliedType> = BTreeMap::new();
    let mut gaps = Vec::new();
    for entity in &spec.entities {
        let mut links: Vec<(&String, &FieldRecord)> = state
            .live_fields(&entity.entity_type)
            .filter(|(_, r)| matches!(r.storage(), Storage::EntityLink | Storage::MultiEntity))
            .collect();
        // Named fields in spec order, then the rest.
        let rank = |n: &str| {
            entity
                .fields
                .iter()
                .position(|f| f == n)
                .unwrap_or(usize::MAX)
        };
        links.sort_by_key(|(n, _)| (rank(n), (*n).clone()));
        for (name, record) in links {
            let valid_types = FieldSchema::from_api(&entity.entity_type, name, &record.schema)
                .map(|f| f.valid_types)
                .unwrap_or_default();
            let mut missing = Vec::new();
            for target in &valid_types {
                if !nameable(target) {
                    let why = if spec.entity(target).is_none() && !spec.implies_link_targets() {
                        "not listed; implyLinkTargets is false"
                    } else {
                        "not cached"
                    };
                    missing.push((target.clone(), why.to_string()));
                } else if spec.entity(target).is_none() {
                    let display = state.types[target]
                        .display_field
                        .clone()
                        .unwrap_or_default();
                    implied
                        .entry(target.clone())
                        .or_insert_with(|| ImpliedType {
                            entity_type: target.clone(),
                            display_field: display,
                            linked_from: Vec::new(),
                        })
                        .linked_from
                        .push(format!("{}.{name}", entity.entity_type));
                }
            }
            let explicit = entity.fields.iter().any(|f| f == name);
            if explicit && (valid_types.is_empty() || !missing.is_empty()) {
                gaps.push(LinkGap {
                    entity_type: entity.entity_type.clone(),
                    field_name: name.clone(),
                    missing,
                });
            }
        }
    }
    LinkTargets {
        implied: implied.into_values().collect(),
        gaps,
    }
}
