//! The spec as far as the site still has it. A site's schema moves under a running cache:
//! a field the spec names may be deleted on the site, a type may go. Refusing the whole spec
//! then (as planning does for a name the cache never held: a person's typo) would stop every
//! migration and every worker's start; instead what the cache holds and the site deleted
//! leaves the spec it plans with, so it stops being served (`DropField`) and comes back by
//! itself if the site revives it.

use super::DbState;
use crate::schema::SiteSchema;
use crate::spec::ShotgunCacheSpec;

/// `spec` without the declared types and fields that the cache holds and the site deleted
/// (display-field overrides of them, and exclusions the site lacks in held types), and the names of what was left out
/// (`Shot.sg_cut`, `CustomEntity07`).
pub fn narrow_to_site(
    spec: &ShotgunCacheSpec,
    site: &SiteSchema,
    current: &DbState,
) -> (ShotgunCacheSpec, Vec<String>) {
    let held_type = |ty: &str| site.entity(ty).is_none() && current.types.contains_key(ty);
    let held_field = |ty: &str, f: &str| {
        f != "*"
            && site.entity(ty).is_some_and(|s| !s.fields.contains_key(f))
            && current.field(ty, f).is_some()
    };
    let mut narrowed = spec.clone();
    let mut gone = Vec::new();
    narrowed.entities.retain_mut(|e| {
        let ty = e.entity_type.clone();
        if held_type(&ty) {
            gone.push(ty);
            return false;
        }
        for f in e.fields.iter().filter(|f| held_field(&ty, f)) {
            gone.push(format!("{ty}.{f}"));
        }
        e.fields.retain(|f| !held_field(&ty, f));
        // Excluding a name the site lacks is a typo in a new cache, a deletion in a held one.
        if current.types.contains_key(&ty) {
            e.exclude
                .retain(|f| site.entity(&ty).is_none_or(|s| s.fields.contains_key(f)));
        }
        true
    });
    narrowed
        .display_fields
        .retain(|d| !held_type(&d.entity_type) && !held_field(&d.entity_type, &d.field));
    gone.sort();
    gone.dedup();
    (narrowed, gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{plan, Change, PlanOptions};
    use crate::schema::fixture_dir;

    const SPEC: &str = "entities:\n  - type: Shot\n    fields: [code, sg_cut_in, description]\n  - type: Asset\n    fields: [code]\n";

    fn site() -> SiteSchema {
        SiteSchema::load_dir(&fixture_dir()).expect("fixture schema")
    }

    fn spec() -> ShotgunCacheSpec {
        ShotgunCacheSpec::from_yaml(SPEC, "test").expect("spec")
    }

    /// The state after migrating `spec()` on the whole fixture site.
    fn cached() -> DbState {
        let p = plan(
            &spec(),
            &site(),
            &DbState::default(),
            PlanOptions::default(),
        )
        .unwrap();
        DbState::default().after(&p)
    }

    #[test]
    fn a_spec_the_site_fully_has_is_unchanged() {
        let (narrowed, gone) = narrow_to_site(&spec(), &site(), &cached());
        assert_eq!(narrowed, spec());
        assert!(gone.is_empty());
    }

    #[test]
    fn a_held_field_deleted_on_the_site_is_dropped_and_revived_when_it_comes_back() {
        let mut without = site();
        let shot = without.entities.get_mut("Shot").unwrap();
        shot.fields.remove("sg_cut_in");
        // A name the cache never held stays a planning error (a typo, not the site's doing).
        let (_, none) = narrow_to_site(&spec(), &without, &DbState::default());
        assert!(none.is_empty());
        assert!(plan(
            &spec(),
            &without,
            &DbState::default(),
            PlanOptions::default()
        )
        .is_err());

        let p = plan(&spec(), &without, &cached(), PlanOptions::default()).unwrap();
        assert_eq!(p.gone, vec!["Shot.sg_cut_in".to_string()]);
        assert_eq!(
            p.changes,
            vec![Change::DropField {
                entity_type: "Shot".into(),
                field_name: "sg_cut_in".into()
            }]
        );
        let back = plan(
            &spec(),
            &site(),
            &cached().after(&p),
            PlanOptions::default(),
        )
        .unwrap();
        assert!(
            matches!(back.changes.as_slice(), [Change::ReviveField(f)] if f.field_name == "sg_cut_in"),
            "{back:?}"
        );
        assert!(back.gone.is_empty());
    }

    #[test]
    fn a_held_type_deleted_on_the_site_leaves_the_spec_and_its_fields_are_dropped() {
        let mut without = site();
        without.entities.remove("Asset");
        let (narrowed, gone) = narrow_to_site(&spec(), &without, &cached());
        assert_eq!(gone, vec!["Asset".to_string()]);
        assert!(narrowed.entities.iter().all(|e| e.entity_type != "Asset"));
        let p = plan(&spec(), &without, &cached(), PlanOptions::default()).unwrap();
        assert!(!p.changes.is_empty());
        let only_asset = |c: &Change| matches!(c, Change::DropField { entity_type, .. } if entity_type == "Asset");
        assert!(p.changes.iter().all(only_asset), "{p:?}");
    }
}
