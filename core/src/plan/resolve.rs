//! Which fields each declared type caches: the spec's list (or `*` minus `exclude`) plus the
//! fields always cached, split into stored fields and fields passed through.

use std::collections::{BTreeMap, BTreeSet};

use super::{PassThrough, PlanError};
use crate::ident;
use crate::schema::{EntitySchema, FieldSchema, SiteSchema, Storage};
use crate::spec::{EntitySpec, ShotgunCacheSpec};
use crate::unknown_names::describe;

/// Suffix of the index on an association table's targets: `{table}_{field}__target`.
pub const ASSOC_INDEX_SUFFIX: &str = "__target";

/// What one declared type should look like.
pub(super) struct DesiredType<'a> {
    pub table: String,
    pub display_field: Option<String>,
    /// Stored fields by name.
    pub fields: BTreeMap<String, &'a FieldSchema>,
    pub passed_through: Vec<PassThrough>,
}

/// Declared types by name.
pub(super) type Desired<'a> = BTreeMap<String, DesiredType<'a>>;

pub(super) fn resolve<'a>(
    spec: &ShotgunCacheSpec,
    site: &'a SiteSchema,
) -> Result<Desired<'a>, PlanError> {
    let missing = not_on_site(spec, site);
    if !missing.is_empty() {
        return Err(PlanError::NotOnSite(missing));
    }
    check_display_overrides(spec, site)?;
    let mut desired = BTreeMap::new();
    for entity in &spec.entities {
        let schema = site
            .entity(&entity.entity_type)
            .ok_or_else(|| PlanError::UnknownEntityType(entity.entity_type.clone()))?;
        desired.insert(
            entity.entity_type.clone(),
            resolve_type(spec, entity, schema)?,
        );
    }
    check_table_names(&desired)?;
    Ok(desired)
}

/// Every type and field the spec names that the site lacks (all at once, so one run shows
/// every typo), with "did you mean" for near misses.
fn not_on_site(spec: &ShotgunCacheSpec, site: &SiteSchema) -> Vec<String> {
    let types = || site.entities.keys().map(String::as_str);
    let mut missing = Vec::new();
    let named = spec
        .entities
        .iter()
        .map(|e| {
            (
                &e.entity_type,
                e.fields.iter().chain(&e.exclude).collect::<Vec<_>>(),
            )
        })
        .chain(
            spec.display_fields
                .iter()
                .map(|d| (&d.entity_type, vec![&d.field])),
        );
    for (ty, fields) in named {
        let Some(schema) = site.entity(ty) else {
            missing.push(describe(&format!("entity type {ty}"), ty, types()));
            continue;
        };
        for f in fields.into_iter().filter(|f| *f != "*") {
            if !schema.fields.contains_key(f) {
                let known = schema.fields.keys().map(String::as_str);
                missing.push(describe(&format!("field {ty}.{f}"), f, known));
            }
        }
    }
    missing.dedup();
    missing
}

fn check_display_overrides(spec: &ShotgunCacheSpec, site: &SiteSchema) -> Result<(), PlanError> {
    for d in &spec.display_fields {
        let entity = site
            .entity(&d.entity_type)
            .ok_or_else(|| PlanError::UnknownEntityType(d.entity_type.clone()))?;
        if !entity.fields.contains_key(&d.field) {
            return Err(PlanError::UnknownField(
                d.entity_type.clone(),
                d.field.clone(),
            ));
        }
    }
    Ok(())
}

/// The field naming links to a type: the spec's override, else the site's.
pub(super) fn display_field<'a>(
    spec: &'a ShotgunCacheSpec,
    schema: &'a EntitySchema,
) -> Option<&'a str> {
    spec.display_fields
        .iter()
        .find(|d| d.entity_type == schema.entity_type)
        .map(|d| d.field.as_str())
        .or_else(|| schema.display_field())
}

fn resolve_type<'a>(
    spec: &ShotgunCacheSpec,
    entity: &EntitySpec,
    schema: &'a EntitySchema,
) -> Result<DesiredType<'a>, PlanError> {
    let et = &entity.entity_type;
    let unknown = |f: &String| PlanError::UnknownField(et.clone(), f.clone());
    let exclude: BTreeSet<&String> = entity.exclude.iter().collect();
    if let Some(f) = exclude.iter().find(|f| !schema.fields.contains_key(**f)) {
        return Err(unknown(f));
    }
    let display = display_field(spec, schema);
    let implicit: Vec<(&str, &'static str)> =
        [("id", "the entity id"), ("updated_at", "used by scans")]
            .into_iter()
            .chain(display.map(|d| (d, "the display field")))
            .filter(|(f, _)| schema.fields.contains_key(*f))
            .collect();
    if let Some((f, why)) = implicit
        .iter()
        .find(|(f, _)| exclude.contains(&f.to_string()))
    {
        return Err(PlanError::ImplicitExcluded(et.clone(), f.to_string(), why));
    }
    // Field name → declared explicitly?
    let mut wanted: BTreeMap<&str, bool> = BTreeMap::new();
    for f in entity.fields.iter().filter(|f| *f != "*") {
        if !schema.fields.contains_key(f) {
            return Err(unknown(f));
        }
        if is_viewer_dependent(f) {
            return Err(PlanError::ViewerDependent(et.clone(), f.clone()));
        }
        wanted.insert(f, true);
    }
    if entity.all_fields() {
        for f in schema.fields.keys() {
            wanted.entry(f).or_insert(false);
        }
    }
    wanted.retain(|f, _| !exclude.contains(&f.to_string()));
    for (f, _) in &implicit {
        wanted.entry(f).or_insert(false);
    }
    let mut fields = BTreeMap::new();
    let mut passed_through = Vec::new();
    for (name, declared) in wanted {
        let field = &schema.fields[name];
        match uncacheable_reason(et, field) {
            None => {
                fields.insert(name.to_string(), field);
            }
            Some(reason) => passed_through.push(PassThrough {
                entity_type: et.clone(),
                field_name: name.to_string(),
                data_type: field.data_type.api_name().to_string(),
                reason,
                declared,
            }),
        }
    }
    let display_field = display
        .filter(|d| fields.contains_key(*d))
        .map(str::to_string);
    Ok(DesiredType {
        table: ident::table_name(et),
        display_field,
        fields,
        passed_through,
    })
}

/// True for fields whose value depends on who asks (`current_user_favorite`,
/// `viewed_by_current_user`, `last_accessed_by_current_user`, ...): the cache reads as its own
/// script, so a stored value would be the script's, served to everyone. Every such field of
/// the site schema names the current user.
pub fn is_viewer_dependent(field: &str) -> bool {
    field.contains("current_user")
}

/// Why the cache cannot store a field faithfully, or `None` when it can.
pub fn uncacheable_reason(entity_type: &str, field: &FieldSchema) -> Option<String> {
    if let Err(e) = ident::validate_field_name(&field.name) {
        return Some(e);
    }
    if is_viewer_dependent(&field.name) {
        return Some("its value depends on who asks".into());
    }
    let too_long = |name: String| {
        (name.len() > ident::MAX_IDENT_LEN).then(|| {
            format!(
                "{name} is longer than {} bytes (PostgreSQL's limit)",
                ident::MAX_IDENT_LEN
            )
        })
    };
    match field.data_type.storage() {
        Storage::Uncacheable(reason) => Some(reason.to_string()),
        Storage::EntityLink => too_long(format!("{}__type", field.name)),
        Storage::MultiEntity => too_long(format!(
            "{}{ASSOC_INDEX_SUFFIX}",
            ident::assoc_table_name(entity_type, &field.name)
        )),
        _ => None,
    }
}

fn check_table_names(desired: &Desired<'_>) -> Result<(), PlanError> {
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for (et, d) in desired {
        let assoc = d
            .fields
            .values()
            .filter(|f| f.data_type.storage() == Storage::MultiEntity)
            .map(|f| {
                (
                    ident::assoc_table_name(et, &f.name),
                    format!("{et}.{}", f.name),
                )
            });
        for (table, owner) in std::iter::once((d.table.clone(), et.clone())).chain(assoc) {
            if let Some(first) = owners.insert(table.clone(), owner.clone()) {
                return Err(PlanError::TableCollision {
                    table,
                    first,
                    second: owner,
                });
            }
        }
    }
    Ok(())
}
