use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::ident;
use crate::schema::{fixture_dir, EntitySchema, FieldSchema};
use crate::spec::EntitySpec;

fn fixture() -> SiteSchema {
    SiteSchema::load_dir(&fixture_dir()).unwrap()
}

fn spec(yaml: &str) -> ShotgunCacheSpec {
    ShotgunCacheSpec::from_yaml(yaml, "test").unwrap()
}

const NO_PRUNE: PlanOptions = PlanOptions { prune: false };
const PRUNE: PlanOptions = PlanOptions { prune: true };

#[test]
fn new_type_gets_table_declared_and_implicit_fields() {
    let site = fixture();
    let s = spec("entities:\n  - {type: Shot, fields: [sg_status_list, assets, image]}\n");
    let p = plan(&s, &site, &DbState::default(), NO_PRUNE).unwrap();
    let text = p.to_string();
    assert_eq!(
        text,
        "+ create table shot for Shot (display field code)\n\
         + add field Shot.assets (multi_entity), pending backfill\n\
         + add field Shot.code (text), pending backfill\n\
         + add field Shot.id (number), pending backfill\n\
         + add field Shot.sg_status_list (status_list), pending backfill\n\
         + add field Shot.updated_at (date_time), pending backfill\n\
         = pass through Shot.image (declared, image): image URLs are signed and expire\n"
    );
    let after = DbState::default().after(&p);
    assert!(plan(&s, &site, &after, NO_PRUNE).unwrap().is_empty());
}

#[test]
fn unknown_names_are_errors_naming_them() {
    let site = fixture();
    let e = plan(
        &spec("entities:\n  - {type: Shot, fields: [sg_foo]}\n"),
        &site,
        &DbState::default(),
        NO_PRUNE,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "not on the site: field Shot.sg_foo");
    let e = plan(
        &spec("entities:\n  - {type: Shoot, fields: [code]}\n"),
        &site,
        &DbState::default(),
        NO_PRUNE,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "not on the site: entity type Shoot (did you mean Shot?)"
    );
    // Every unknown name in one message, each with its suggestion.
    let e = plan(
        &spec(
            "entities:\n  - {type: Shoot, fields: [code]}\n  \
             - {type: Asset, fields: [cdoe, sg_status], exclude: [zzz_nothing]}\n",
        ),
        &site,
        &DbState::default(),
        NO_PRUNE,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "not on the site: entity type Shoot (did you mean Shot?); \
         field Asset.cdoe (did you mean code?); \
         field Asset.sg_status (did you mean sg_status_list?); field Asset.zzz_nothing"
    );
    let e = plan(
        &spec("entities:\n  - {type: Shot, fields: ['*'], exclude: [code]}\n"),
        &site,
        &DbState::default(),
        NO_PRUNE,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("Shot.code cannot be excluded"),
        "{e}"
    );
}

#[test]
fn removing_then_pruning_and_retyping() {
    let site = fixture();
    let full = spec("entities:\n  - {type: Shot, fields: [sg_status_list, assets]}\n  - {type: Step, fields: [short_name]}\n");
    let state =
        DbState::default().after(&plan(&full, &site, &DbState::default(), NO_PRUNE).unwrap());
    let less = spec("entities:\n  - {type: Shot, fields: [sg_status_list]}\n");
    let p = plan(&less, &site, &state, NO_PRUNE).unwrap();
    assert!(p
        .to_string()
        .contains("- drop field Shot.assets (no longer served; storage kept)"));
    assert!(p.to_string().contains("- drop field Step.short_name"));
    let dropped = state.after(&p);
    assert_eq!(
        dropped.field("Shot", "assets").unwrap().state,
        FieldState::Dropped
    );
    assert!(plan(&less, &site, &dropped, NO_PRUNE).unwrap().is_empty());
    let pruned = plan(&less, &site, &dropped, PRUNE).unwrap();
    assert_eq!(
        pruned.to_string(),
        "- prune field Shot.assets (multi_entity): storage dropped\n- prune table step of Step\n"
    );
    // The site retypes a field: rebuild.
    let mut retyped = site.clone();
    let f = retyped
        .entities
        .get_mut("Shot")
        .unwrap()
        .fields
        .get_mut("sg_status_list")
        .unwrap();
    f.data_type = DataType::Number;
    let p = plan(&less, &retyped, &dropped.after(&pruned), NO_PRUNE).unwrap();
    assert_eq!(
        p.to_string(),
        "~ rebuild field Shot.sg_status_list (status_list -> number), pending backfill\n"
    );
}

#[test]
fn plan_round_trips_through_json() {
    let site = fixture();
    let s = spec("entities:\n  - {type: Version, fields: ['*']}\n");
    let p = plan(&s, &site, &DbState::default(), NO_PRUNE).unwrap();
    let text = serde_json::to_string(&p).unwrap();
    assert_eq!(serde_json::from_str::<Plan>(&text).unwrap(), p);
    assert!(text.contains("\"op\":\"create_table\""));
}

const TYPES: &[&str] = &["Shot", "Asset", "CustomEntity01", "Task", "Playlist"];
const DATA_TYPES: &[&str] = &[
    "text",
    "number",
    "float",
    "checkbox",
    "date",
    "date_time",
    "entity",
    "multi_entity",
    "image",
    "serializable",
    "status_list",
    "pivot_column",
    "url",
    "tag_list",
];

fn field(name: &str, data_type: &str) -> FieldSchema {
    FieldSchema {
        name: name.into(),
        display_name: name.into(),
        data_type: DataType::from_api(data_type),
        editable: true,
        mandatory: false,
        valid_types: vec![],
        valid_values: vec![],
        default_value: serde_json::Value::Null,
        raw: json!({"data_type": {"value": data_type}, "name": {"value": name}}),
    }
}

/// A site: some of TYPES, each with id, updated_at, code and random extra fields (some with
/// names long enough to exceed PostgreSQL's limit once suffixed).
fn arb_site() -> impl Strategy<Value = SiteSchema> {
    let extra = proptest::collection::btree_map(
        "[a-z]{1,3}(_[a-z0-9]{1,4}){0,2}|long_[a-z]{50,57}",
        proptest::sample::select(DATA_TYPES),
        0..8,
    );
    proptest::collection::btree_map(proptest::sample::select(TYPES), extra, 1..5).prop_map(
        |types| {
            let entities = types
                .into_iter()
                .map(|(et, extra)| {
                    let mut fields: BTreeMap<String, FieldSchema> = extra
                        .into_iter()
                        .map(|(n, dt)| (n.clone(), field(&n, dt)))
                        .collect();
                    for (n, dt) in [
                        ("id", "number"),
                        ("updated_at", "date_time"),
                        ("code", "text"),
                    ] {
                        fields.insert(n.into(), field(n, dt));
                    }
                    let schema = EntitySchema {
                        entity_type: et.into(),
                        display_name: et.into(),
                        fields,
                    };
                    (et.to_string(), schema)
                })
                .collect();
            SiteSchema { entities }
        },
    )
}

/// A spec over `site`: some of its types, each with `*` and an exclude list, or a field list.
fn arb_spec(site: &SiteSchema) -> impl Strategy<Value = ShotgunCacheSpec> {
    let per_type: Vec<_> = site
        .entities
        .values()
        .map(|e| {
            let et = e.entity_type.clone();
            let names: Vec<String> = e
                .fields
                .keys()
                .filter(|f| !["id", "updated_at", "code"].contains(&f.as_str()))
                .cloned()
                .collect();
            (
                any::<bool>(),
                any::<bool>(),
                proptest::sample::subsequence(names.clone(), 0..=names.len()),
            )
                .prop_map(move |(keep, star, picked)| {
                    keep.then(|| EntitySpec {
                        entity_type: et.clone(),
                        fields: if star {
                            vec!["*".into()]
                        } else if picked.is_empty() {
                            vec!["code".into()]
                        } else {
                            picked.clone()
                        },
                        exclude: if star { picked } else { vec![] },
                    })
                })
        })
        .collect();
    per_type.prop_map(|entities| ShotgunCacheSpec {
        entities: entities.into_iter().flatten().collect(),
        ..Default::default()
    })
}

/// A site, a first spec, a second spec, a retyped copy of the site (some extra fields change
/// data type, as sites do) and whether to prune.
type Case = (
    SiteSchema,
    ShotgunCacheSpec,
    ShotgunCacheSpec,
    SiteSchema,
    bool,
);

fn arb_case() -> impl Strategy<Value = Case> {
    arb_site().prop_flat_map(|site| {
        let a = arb_spec(&site);
        let b = arb_spec(&site);
        let retypes = proptest::collection::vec(proptest::sample::select(DATA_TYPES), 8);
        (Just(site), a, b, retypes, any::<bool>()).prop_map(|(site, a, b, retypes, prune)| {
            let mut changed = site.clone();
            for (i, f) in changed
                .entities
                .values_mut()
                .flat_map(|e| e.fields.values_mut())
                .filter(|f| !["id", "updated_at", "code"].contains(&f.name.as_str()))
                .enumerate()
            {
                if let Some(dt) = retypes.get(i) {
                    *f = field(&f.name, dt);
                }
            }
            (site, a, b, changed, prune)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn planning_after_applying_is_empty((site, first, second, retyped, prune) in arb_case()) {
        let options = PlanOptions { prune };
        let p1 = plan(&first, &site, &DbState::default(), options).unwrap();
        let s1 = DbState::default().after(&p1);
        prop_assert!(plan(&first, &site, &s1, options).unwrap().is_empty());
        let p2 = plan(&second, &retyped, &s1, options).unwrap();
        let s2 = s1.after(&p2);
        let again = plan(&second, &retyped, &s2, options).unwrap();
        prop_assert!(again.is_empty(), "{}", again);
        // Every stored field matches the site's current data type.
        for (et, fields) in &s2.fields {
            for (name, r) in fields.iter().filter(|(_, r)| r.state != FieldState::Dropped) {
                let site_type = retyped.field(et, name).unwrap().data_type.api_name();
                prop_assert_eq!(&r.data_type, site_type, "{}.{}", et, name);
            }
        }
    }

    #[test]
    fn plans_only_emit_valid_identifiers((site, first, second, retyped, prune) in arb_case()) {
        let options = PlanOptions { prune };
        let s1 = DbState::default().after(&plan(&first, &site, &DbState::default(), options).unwrap());
        let p = plan(&second, &retyped, &s1, options).unwrap();
        for c in &p.changes {
            let (et, field, data_type) = match c {
                Change::AddField(d) | Change::ReviveField(d) | Change::UpdateFieldSchema(d)
                | Change::RebuildField { field: d, .. } => (&d.entity_type, Some(&d.field_name), Some(&d.data_type)),
                Change::DropField { entity_type, field_name }
                | Change::PruneField { entity_type, field_name, .. } => (entity_type, Some(field_name), None),
                Change::CreateTable { entity_type, table, .. } | Change::PruneTable { entity_type, table, .. } => {
                    prop_assert_eq!(table, &ident::table_name(entity_type));
                    (entity_type, None, None)
                }
                Change::SetDisplayField { entity_type, .. } => (entity_type, None, None),
            };
            prop_assert!(ident::validate_entity_type(et).is_ok());
            if let Some(f) = field {
                prop_assert!(ident::validate_field_name(f).is_ok());
                let longest = match data_type.map(|d| DataType::from_api(d).storage()) {
                    Some(Storage::MultiEntity) => ident::assoc_table_name(et, f).len() + resolve::ASSOC_INDEX_SUFFIX.len(),
                    Some(Storage::EntityLink) => f.len() + "__type".len(),
                    _ => f.len(),
                };
                prop_assert!(longest <= ident::MAX_IDENT_LEN, "{} too long", f);
            }
        }
    }

    #[test]
    fn excluded_fields_are_never_cached((site, spec, _, _, _) in arb_case()) {
        let state = DbState::default().after(&plan(&spec, &site, &DbState::default(), NO_PRUNE).unwrap());
        for e in spec.entities.iter().filter(|e| e.all_fields()) {
            let excluded: BTreeSet<&String> = e.exclude.iter().collect();
            for (name, _) in state.live_fields(&e.entity_type) {
                prop_assert!(!excluded.contains(name), "{}.{} excluded but cached", e.entity_type, name);
            }
            // Every other cacheable field is there.
            for f in site.entities[&e.entity_type].fields.values() {
                let cacheable = uncacheable_reason(&e.entity_type, f).is_none();
                let cached = state.field(&e.entity_type, &f.name).is_some();
                prop_assert_eq!(cached, cacheable && !excluded.contains(&f.name), "{}", f.name);
            }
        }
    }
}

#[test]
fn viewer_dependent_fields_are_left_out_of_star_and_refused_by_name() {
    let site = fixture();
    let p = plan(
        &spec("entities:\n  - {type: Project, fields: [\"*\"]}\n"),
        &site,
        &DbState::default(),
        NO_PRUNE,
    )
    .unwrap();
    let text = p.to_string();
    assert!(
        !text.contains("add field Project.current_user_favorite"),
        "{text}"
    );
    assert!(
        text.contains("= pass through Project.current_user_favorite"),
        "{text}"
    );
    let e = plan(
        &spec("entities:\n  - {type: Project, fields: [name, current_user_favorite]}\n"),
        &site,
        &DbState::default(),
        NO_PRUNE,
    )
    .unwrap_err();
    let line = e.to_string();
    assert!(!line.contains('\n'));
    assert!(line.contains("Project.current_user_favorite"), "{line}");
    assert!(line.contains("depends on who asks"), "{line}");
}

#[test]
fn unservable_fields_are_backfilled_again_by_the_next_migration() {
    let site = fixture();
    let s = spec("entities:\n  - {type: Shot, fields: [code]}\n");
    let mut state =
        DbState::default().after(&plan(&s, &site, &DbState::default(), NO_PRUNE).unwrap());
    assert!(plan(&s, &site, &state, NO_PRUNE).unwrap().is_empty());
    state
        .fields
        .get_mut("Shot")
        .unwrap()
        .get_mut("code")
        .unwrap()
        .state = FieldState::Unservable;
    let p = plan(&s, &site, &state, NO_PRUNE).unwrap();
    assert_eq!(
        p.to_string(),
        "+ revive field Shot.code (text), pending backfill\n"
    );
}

#[test]
fn a_link_to_a_type_not_cached_is_a_coverage_gap_until_the_type_is() {
    let site = fixture();
    let without = spec(
        "entities:\n  - {type: Shot, fields: [code, sg_sequence, assets, sg_status_list]}\n  - {type: Asset, fields: [code]}\n",
    );
    let gaps = link_gaps(&without, &site);
    assert_eq!(
        gaps.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["Shot.sg_sequence -> Sequence"],
        "assets links to Asset, cached; a status list is no link"
    );
    let with = spec(
        "entities:\n  - {type: Shot, fields: [code, sg_sequence, assets]}\n  - {type: Asset, fields: [code]}\n  - {type: Sequence, fields: [code]}\n",
    );
    assert!(link_gaps(&with, &site).is_empty());
}

#[test]
fn a_link_to_any_type_is_a_gap_and_a_wildcard_is_not_checked() {
    let site = fixture();
    let s = spec("entities:\n  - {type: Shot, fields: [code]}\n  - {type: Task, fields: [content, entity]}\n");
    let gaps = link_gaps(&s, &site);
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(
        (gaps[0].entity_type.as_str(), gaps[0].field_name.as_str()),
        ("Task", "entity")
    );
    assert!(
        !gaps[0].missing.contains(&"Shot".to_string()),
        "Shot is cached"
    );
    let wild = spec("entities:\n  - {type: Shot, fields: [\"*\"]}\n");
    assert!(link_gaps(&wild, &site).is_empty());
}
