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
        "+ create table asset for Asset (display field code)\n\
         + add field Asset.code (text), pending backfill\n\
         + add field Asset.id (number), pending backfill\n\
         + add field Asset.updated_at (date_time), pending backfill\n\
         + create table shot for Shot (display field code)\n\
         + add field Shot.assets (multi_entity), pending backfill\n\
         + add field Shot.code (text), pending backfill\n\
         + add field Shot.id (number), pending backfill\n\
         + add field Shot.sg_status_list (status_list), pending backfill\n\
         + add field Shot.updated_at (date_time), pending backfill\n\
         = pass through Shot.image (declared, image): image URLs are signed and expire\n\
         = implied by links: Asset (code) for Shot.assets\n"
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
        "- prune table asset of Asset\n\
         - prune field Shot.assets (multi_entity): storage dropped\n\
         - prune table step of Step\n",
        "Asset was implied by Shot.assets only"
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
fn a_link_target_not_listed_is_implied_with_its_display_field_only() {
    let site = fixture();
    let s = spec("entities:\n  - {type: Shot, fields: [code, sg_sequence, sg_status_list]}\n");
    let p = plan(&s, &site, &DbState::default(), NO_PRUNE).unwrap();
    assert_eq!(
        p.implied,
        [ImpliedType {
            entity_type: "Sequence".into(),
            display_field: "code".into(),
            linked_from: vec!["Shot.sg_sequence".into()],
        }]
    );
    assert!(p.uncovered.is_empty(), "{:?}", p.uncovered);
    let text = p.to_string();
    assert!(
        text.contains("+ create table sequence for Sequence (display field code)\n"),
        "{text}"
    );
    assert!(
        text.ends_with("= implied by links: Sequence (code) for Shot.sg_sequence\n"),
        "{text}"
    );
    let after = DbState::default().after(&p);
    let seq: BTreeSet<&str> = after.fields["Sequence"]
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        seq,
        BTreeSet::from(["code", "id", "updated_at"]),
        "what a link needs"
    );
    let again = plan(&s, &site, &after, NO_PRUNE).unwrap();
    assert!(again.is_empty(), "{again}");
    assert_eq!(again.implied, p.implied, "still implied, shown every time");
    // The cache as it stands says the same as the plan.
    let standing = state_coverage(&s, &after);
    assert_eq!(standing.implied, p.implied);
    assert!(standing.gaps.is_empty());
}

#[test]
fn opting_out_leaves_the_link_to_the_site_and_drops_what_was_implied() {
    let site = fixture();
    let on = spec("entities:\n  - {type: Shot, fields: [code, sg_sequence, assets]}\n  - {type: Asset, fields: [code]}\n");
    let cached =
        DbState::default().after(&plan(&on, &site, &DbState::default(), NO_PRUNE).unwrap());
    let off = spec("implyLinkTargets: false\nentities:\n  - {type: Shot, fields: [code, sg_sequence, assets]}\n  - {type: Asset, fields: [code]}\n");
    let p = plan(&off, &site, &cached, NO_PRUNE).unwrap();
    assert!(p.implied.is_empty());
    assert_eq!(
        p.uncovered,
        ["Shot.sg_sequence -> Sequence (not listed; implyLinkTargets is false)"],
        "assets links to Asset, listed"
    );
    assert_eq!(
        p.changes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [
            "- drop field Sequence.code (no longer served; storage kept)",
            "- drop field Sequence.id (no longer served; storage kept)",
            "- drop field Sequence.updated_at (no longer served; storage kept)",
        ]
    );
    assert!(p.to_string().contains(
        "! reads returning Shot.sg_sequence -> Sequence (not listed; implyLinkTargets is false) go to the site"
    ));
    let dropped = cached.after(&p);
    assert_eq!(link_gaps(&off, &site).len(), 1);
    assert_eq!(
        state_coverage(&off, &dropped).gaps.len(),
        1,
        "the standing cache agrees"
    );
    let pruned = plan(&off, &site, &cached, PRUNE).unwrap();
    assert_eq!(
        pruned
            .changes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["- prune table sequence of Sequence"]
    );
    // Back on: the kept columns are revived and backfilled.
    let back = plan(&on, &site, &dropped, NO_PRUNE).unwrap();
    assert!(
        back.changes
            .iter()
            .all(|c| matches!(c, Change::ReviveField(_))),
        "{back}"
    );
}

#[test]
fn a_listed_target_is_not_implied_and_its_own_fields_stay_as_listed() {
    let site = fixture();
    let s = spec("entities:\n  - {type: Shot, fields: [code, sg_sequence]}\n  - {type: Sequence, fields: [code, description]}\n");
    let p = plan(&s, &site, &DbState::default(), NO_PRUNE).unwrap();
    assert!(p.implied.is_empty());
    assert!(p.uncovered.is_empty());
}

#[test]
fn targets_without_a_text_display_field_or_any_type_links_stay_gaps() {
    let site = fixture();
    // Attachment's display field is a URL, not text: a link to it cannot be named.
    let attachment_links: Vec<(String, String)> = site
        .entities
        .values()
        .flat_map(|e| e.fields.values().map(move |f| (e, f)))
        .filter(|(_, f)| f.valid_types == ["Attachment"])
        .map(|(e, f)| (e.entity_type.clone(), f.name.clone()))
        .collect();
    let (ty, field) = attachment_links.first().expect("a link to Attachment only");
    let s = spec(&format!(
        "entities:\n  - {{type: {ty}, fields: [{field}]}}\n"
    ));
    let t = link_targets(&s, &site);
    assert!(t.implied.iter().all(|i| i.entity_type != "Attachment"));
    assert_eq!(t.gaps.len(), 1);
    assert_eq!(t.gaps[0].missing_types(), ["Attachment"]);
    assert!(
        t.gaps[0].to_string().contains("is not text"),
        "{}",
        t.gaps[0]
    );
}

#[test]
fn links_through_a_wildcard_imply_their_targets_too_but_only_declared_links_are_gaps() {
    let site = fixture();
    let s = spec("entities:\n  - {type: Version, fields: [\"*\"], exclude: [viewed_by_current_user, viewed_by_current_user_at]}\n");
    let t = link_targets(&s, &site);
    let implied: BTreeSet<&str> = t.implied.iter().map(|i| i.entity_type.as_str()).collect();
    for ty in ["Playlist", "Note", "Task", "HumanUser", "Project", "Shot"] {
        assert!(implied.contains(ty), "{ty} in {implied:?}");
    }
    assert!(t.gaps.is_empty(), "no field named explicitly: {:?}", t.gaps);
    // Planned as the spec plus those types, and idempotent.
    let p = plan(&s, &site, &DbState::default(), NO_PRUNE).unwrap();
    let after = DbState::default().after(&p);
    assert!(implied.iter().all(|t| after.types.contains_key(*t)));
    assert!(plan(&s, &site, &after, NO_PRUNE).unwrap().is_empty());
}

#[test]
fn an_implied_type_deleted_on_the_site_is_dropped_not_an_error() {
    let mut site = fixture();
    let s = spec("entities:\n  - {type: Shot, fields: [code, sg_sequence]}\n");
    let cached = DbState::default().after(&plan(&s, &site, &DbState::default(), NO_PRUNE).unwrap());
    site.entities.remove("Sequence");
    let p = plan(&s, &site, &cached, NO_PRUNE).unwrap();
    assert!(p.implied.is_empty());
    assert_eq!(
        p.uncovered,
        ["Shot.sg_sequence -> Sequence (the site has no such type)"]
    );
    assert!(p
        .changes
        .iter()
        .all(|c| matches!(c, Change::DropField { entity_type, .. } if entity_type == "Sequence")));
}
