//! The spec as far as the site still has it. A site's schema moves under a running cache:
//! a field the spec names may be deleted on the site, a type may go. Refusing the whole spec
//! then (as `migrate` does for a person's typo) would leave every other field stale; instead
//! the cache following the site plans with the spec narrowed to what the site has, so what
//! went stops being served (`DropField`) and comes back by itself if the site revives it.

use crate::schema::SiteSchema;
use crate::spec::ShotgunCacheSpec;

/// `spec` without the declared types, fields, exclusions and display-field overrides the site
/// does not have, and the names of what was left out (`Shot.sg_cut`, `CustomEntity07`).
pub fn narrow_to_site(
    spec: &ShotgunCacheSpec,
    site: &SiteSchema,
) -> (ShotgunCacheSpec, Vec<String>) {
    let mut narrowed = spec.clone();
    let mut gone = Vec::new();
    narrowed.entities.retain_mut(|e| {
        let Some(schema) = site.entity(&e.entity_type) else {
            gone.push(e.entity_type.clone());
            return false;
        };
        let has = |f: &String| f == "*" || schema.fields.contains_key(f);
        for f in e.fields.iter().filter(|f| !has(f)) {
            gone.push(format!("{}.{f}", e.entity_type));
        }
        e.fields.retain(has);
        e.exclude.retain(has);
        true
    });
    narrowed.display_fields.retain(|d| {
        site.entity(&d.entity_type)
            .is_some_and(|s| s.fields.contains_key(&d.field))
    });
    gone.sort();
    gone.dedup();
    (narrowed, gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{plan, Change, DbState, PlanOptions};
    use crate::schema::fixture_dir;

    fn site() -> SiteSchema {
        SiteSchema::load_dir(&fixture_dir()).expect("fixture schema")
    }

    fn spec(yaml: &str) -> ShotgunCacheSpec {
        ShotgunCacheSpec::from_yaml(yaml, "test").expect("spec")
    }

    const SPEC: &str = "entities:\n  - type: Shot\n    fields: [code, sg_cut_in, description]\n  - type: Asset\n    fields: [code]\n";

    #[test]
    fn a_spec_the_site_fully_has_is_unchanged() {
        let s = spec(SPEC);
        let (narrowed, gone) = narrow_to_site(&s, &site());
        assert_eq!(narrowed, s);
        assert!(gone.is_empty());
    }

    #[test]
    fn a_field_deleted_on_the_site_is_dropped_and_revived_when_it_comes_back() {
        let s = spec(SPEC);
        let full = site();
        let mut without = full.clone();
        without
            .entities
            .get_mut("Shot")
            .unwrap()
            .fields
            .remove("sg_cut_in");
        let (narrowed, gone) = narrow_to_site(&s, &without);
        assert_eq!(gone, vec!["Shot.sg_cut_in".to_string()]);
        let cached = DbState::default()
            .after(&plan(&s, &full, &DbState::default(), PlanOptions::default()).unwrap());
        let p = plan(&narrowed, &without, &cached, PlanOptions::default()).unwrap();
        assert_eq!(
            p.changes,
            vec![Change::DropField {
                entity_type: "Shot".into(),
                field_name: "sg_cut_in".into()
            }]
        );
        let dropped = cached.after(&p);
        let back = plan(&s, &full, &dropped, PlanOptions::default()).unwrap();
        assert!(
            matches!(back.changes.as_slice(), [Change::ReviveField(f)] if f.field_name == "sg_cut_in"),
            "{back:?}"
        );
    }

    #[test]
    fn a_type_deleted_on_the_site_leaves_the_spec_and_its_fields_are_dropped() {
        let s = spec(SPEC);
        let full = site();
        let mut without = full.clone();
        without.entities.remove("Asset");
        let (narrowed, gone) = narrow_to_site(&s, &without);
        assert_eq!(gone, vec!["Asset".to_string()]);
        assert!(narrowed.entities.iter().all(|e| e.entity_type != "Asset"));
        let cached = DbState::default()
            .after(&plan(&s, &full, &DbState::default(), PlanOptions::default()).unwrap());
        let p = plan(&narrowed, &without, &cached, PlanOptions::default()).unwrap();
        assert!(!p.changes.is_empty());
        assert!(
            p.changes.iter().all(
                |c| matches!(c, Change::DropField { entity_type, .. } if entity_type == "Asset")
            ),
            "{p:?}"
        );
    }
}
