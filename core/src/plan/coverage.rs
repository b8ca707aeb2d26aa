//! Which declared reads the cache can never answer, for the status to say so: a link field
//! (`entity`, `multi_entity`) renders each target as `{type, id, name}`, and the `name` comes
//! from the target type's display field, which is cached only when the target type is. A read
//! returning a link to a type the spec does not cache passes through (`reason="link_name"`).

use crate::schema::{DataType, SiteSchema};
use crate::spec::ShotgunCacheSpec;

/// A declared link field whose targets are not all cached: reads returning it pass through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkGap {
    pub entity_type: String,
    pub field_name: String,
    /// The target types the spec does not cache; empty when the field may link to any type.
    pub missing: Vec<String>,
}

impl std::fmt::Display for LinkGap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let targets = if self.missing.is_empty() {
            "any type".to_string()
        } else {
            self.missing.join(", ")
        };
        write!(f, "{}.{} -> {targets}", self.entity_type, self.field_name)
    }
}

/// The fields the spec names explicitly (not through `*`) that link to types it does not
/// cache, in spec order. Fields or types the site lacks are the plan's business, not this.
pub fn link_gaps(spec: &ShotgunCacheSpec, site: &SiteSchema) -> Vec<LinkGap> {
    let cached = |t: &str| spec.entities.iter().any(|e| e.entity_type == t);
    let mut gaps = Vec::new();
    for entity in &spec.entities {
        for name in entity.fields.iter().filter(|f| f.as_str() != "*") {
            let Some(field) = site.field(&entity.entity_type, name) else {
                continue;
            };
            if !matches!(field.data_type, DataType::Entity | DataType::MultiEntity) {
                continue;
            }
            let missing: Vec<String> = field
                .valid_types
                .iter()
                .filter(|t| !cached(t))
                .cloned()
                .collect();
            if field.valid_types.is_empty() || !missing.is_empty() {
                gaps.push(LinkGap {
                    entity_type: entity.entity_type.clone(),
                    field_name: name.clone(),
                    missing,
                });
            }
        }
    }
    gaps
}
