//! Property tests: arbitrary payloads never panic the parser or the translator, every
//! statement the translator produces runs without a SQL error, and only catalog names
//! appear in it as identifiers.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

use super::tests::{catalog, fixture_db};
use super::*;
use crate::api3::{ReadRequest, Request};
use crate::ident;

const PATHS: &[&str] = &[
    "id",
    "code",
    "sg_cut_in",
    "sg_status_list",
    "description",
    "created_at",
    "sg_sequence",
    "assets",
    "project",
    "image",
    "nope",
    "Code\"; DROP TABLE shot; --",
    "sg_sequence.Sequence.code",
    "sg_sequence.Sequence.id",
    "sg_sequence.Asset.code",
    "assets.Asset.code",
    "assets.Asset.id",
    "project.Project.archived",
    "project.Project.name",
    "sg_sequence.Sequence.project.Project.name",
    "sg_sequence.Sequence.project.Project.archived",
    "assets.Asset.project.Project.name",
    "assets.Asset.shots.Shot.code",
    "assets.Asset.shots.Shot.sg_sequence.Sequence.code",
    "assets.Asset.project",
    "assets.Asset.shots.Shot.assets",
    "sg_sequence.Sequence.project.Project",
    "tag_list",
    "sg_sequence.Sequence.tag_list",
    "a.b",
    "$FROM$EventLogEntry.entity.id",
];

const RELATIONS: &[&str] = &[
    "is",
    "is_not",
    "in",
    "not_in",
    "less_than",
    "greater_than",
    "between",
    "not_between",
    "contains",
    "not_contains",
    "starts_with",
    "ends_with",
    "type_is",
    "type_is_not",
    "name_is",
    "name_contains",
    "name_not_contains",
    "name_starts_with",
    "name_ends_with",
    "in_last",
    "not_in_last",
    "in_next",
    "not_in_next",
    "in_calendar_day",
    "in_calendar_week",
    "in_calendar_month",
    "in_calendar_year",
    "not_in_calendar_day",
    "bogus",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-5i64..40).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-zA-Z0-9_%\\\\' ]{0,8}".prop_map(Value::from),
        "\\PC{0,6}".prop_map(Value::from),
        Just(json!("2024-03-05")),
        // U+0000: PostgreSQL text cannot hold it; the read must pass through, not fail.
        Just(json!("a\u{0}b")),
        Just(json!("2024-03-05T17:04:09Z")),
        (
            prop::sample::select(vec!["Shot", "Asset", "Sequence", "Project", "X\"y"]),
            -2i64..25
        )
            .prop_map(|(t, id)| json!({"type": t, "id": id})),
        Just(json!({"type": "Shot"})),
        Just(json!([1, 2])),
    ]
}

fn hostile_condition() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(PATHS),
        prop::sample::select(RELATIONS),
        prop::collection::vec(leaf(), 0..4),
    )
        .prop_map(|(p, r, v)| json!({"path": p, "relation": r, "values": v}))
}

fn ascii() -> impl Strategy<Value = Value> {
    "[a-zA-Z0-9_%\\' ]{0,5}".prop_map(Value::from)
}

/// A condition whose path and relation fit, with values of (mostly) the right kind.
fn sane_condition() -> impl Strategy<Value = Value> {
    const TEXT: &[&str] = &[
        "is",
        "is_not",
        "in",
        "not_in",
        "contains",
        "not_contains",
        "starts_with",
        "ends_with",
    ];
    const NUM: &[&str] = &[
        "is",
        "is_not",
        "in",
        "not_in",
        "less_than",
        "greater_than",
        "between",
        "not_between",
    ];
    const LINK: &[&str] = &[
        "is",
        "is_not",
        "in",
        "not_in",
        "type_is",
        "type_is_not",
        "name_is",
        "name_contains",
        "name_not_contains",
        "name_starts_with",
        "name_ends_with",
    ];
    const MULTI: &[&str] = &[
        "is",
        "is_not",
        "in",
        "not_in",
        "type_is",
        "type_is_not",
        "name_contains",
        "name_not_contains",
    ];
    const DATES: &[&str] = &[
        "in_last",
        "not_in_last",
        "in_next",
        "not_in_next",
        "in_calendar_day",
        "in_calendar_week",
        "in_calendar_month",
        "in_calendar_year",
    ];
    let num = prop_oneof![4 => (-5i64..40).prop_map(Value::from), 1 => Just(Value::Null)];
    let link = prop_oneof![
        4 => (prop::sample::select(vec!["Sequence", "Asset", "Shot"]), 0i64..25).prop_map(|(t, id)| json!({"type": t, "id": id})),
        1 => Just(Value::Null),
        1 => ascii(),
    ];
    let dt = prop_oneof![
        Just(json!("2024-03-05T17:04:09Z")),
        Just(json!("2023-01-01T00:00:00Z")),
        Just(Value::Null)
    ];
    prop_oneof![
        (
            prop::sample::select(vec![
                "code",
                "description",
                "sg_status_list",
                "sg_sequence.Sequence.code",
                "assets.Asset.code",
                "project.Project.name",
                "sg_sequence.Sequence.project.Project.name",
                "assets.Asset.project.Project.name",
                "assets.Asset.shots.Shot.code",
                "assets.Asset.shots.Shot.sg_sequence.Sequence.code"
            ]),
            prop::sample::select(TEXT),
            prop::collection::vec(prop_oneof![4 => ascii(), 1 => Just(Value::Null)], 1..3)
        ),
        (
            prop::sample::select(vec![
                "id",
                "sg_cut_in",
                "sg_sequence.Sequence.id",
                "assets.Asset.id"
            ]),
            prop::sample::select(NUM),
            prop::collection::vec(num, 1..3)
        ),
        (
            prop::sample::select(vec!["created_at", "assets.Asset.shots.Shot.created_at"]),
            prop::sample::select(NUM),
            prop::collection::vec(dt, 1..3)
        ),
        (
            prop::sample::select(vec![
                "created_at",
                "sg_sequence.Sequence.project.Project.created_at",
                "assets.Asset.shots.Shot.created_at"
            ]),
            prop::sample::select(DATES),
            prop_oneof![
                (
                    -3i64..4,
                    prop::sample::select(vec!["HOUR", "day", "WEEK", "MONTH", "YEAR", "EON"])
                )
                    .prop_map(|(n, u)| vec![json!(n), json!(u)]),
                (-3i64..4).prop_map(|k| vec![json!(k)]),
            ]
        ),
        (
            prop::sample::select(vec!["sg_sequence", "project"]),
            prop::sample::select(LINK),
            prop::collection::vec(link.clone(), 1..3)
        ),
        (
            prop::sample::select(vec![
                "assets",
                "sg_sequence.Sequence.project",
                "assets.Asset.project"
            ]),
            prop::sample::select(LINK),
            prop::collection::vec(link.clone(), 1..3)
        ),
        (
            prop::sample::select(vec![
                "assets",
                "assets.Asset.shots",
                "assets.Asset.shots.Shot.assets"
            ]),
            prop::sample::select(MULTI),
            prop::collection::vec(link, 1..3)
        ),
        (
            prop::sample::select(vec!["tag_list", "assets.Asset.tag_list"]),
            prop::sample::select(vec!["is", "is_not", "name_contains", "name_not_contains", "in"]),
            prop::collection::vec(prop_oneof![4 => ascii(), 1 => Just(Value::Null), 1 => Just(json!({"type": "Tag", "name": "Hé"}))], 1..3)
        ),
        (
            prop::sample::select(vec!["code", "sg_sequence", "assets"]),
            prop::sample::select(vec!["is", "in", "contains", "name_is", "name_contains"]),
            prop::collection::vec(prop::sample::select(vec!["Éclair", "ΟΔΟΣ", "İ", "\u{212A}"]).prop_map(Value::from), 1..3)
        ),
        (
            Just("project.Project.archived"),
            prop::sample::select(vec!["is", "is_not"]),
            prop::collection::vec(any::<bool>().prop_map(Value::from), 1..2)
        ),
    ]
    .prop_map(|(p, r, mut v)| {
        // Most relations take one value; between takes two.
        match r {
            "in" | "not_in" => {}
            "in_last" | "not_in_last" | "in_next" | "not_in_next" => {}
            "between" | "not_between" => v.resize(2, json!(3)),
            _ => v.truncate(1),
        }
        json!({"path": p, "relation": r, "values": v})
    })
}

fn condition() -> impl Strategy<Value = Value> {
    prop_oneof![12 => sane_condition(), 1 => hostile_condition()]
}

fn filter() -> impl Strategy<Value = Value> {
    condition().prop_recursive(3, 12, 4, |inner| {
        (
            prop::sample::select(vec!["and", "or"]),
            prop::collection::vec(inner, 0..4),
        )
            .prop_map(|(op, c)| json!({"logical_operator": op, "conditions": c}))
    })
}

fn payload() -> impl Strategy<Value = Value> {
    (
        prop_oneof![20 => Just("Shot"), 1 => prop::sample::select(vec!["Asset", "Sequence", "Project", "Version", "Sh\"ot"])],
        filter(),
        prop::collection::vec(
            prop_oneof![
                12 => prop::sample::select(vec!["code", "sg_cut_in", "sg_sequence", "assets", "project", "created_at", "description", "sg_sequence.Sequence.code", "project.Project.archived", "id",
                    "sg_sequence.Sequence.project.Project.name", "assets.Asset.code", "assets.Asset.project",
                    "assets.Asset.shots.Shot.code", "assets.Asset.project.Project.created_at", "sg_sequence.Sequence.project"]),
                1 => prop::sample::select(PATHS),
            ],
            0..5,
        ),
        prop::collection::vec(
            (
                prop_oneof![12 => prop::sample::select(vec!["sg_cut_in", "id", "created_at", "code", "sg_status_list", "sg_sequence", "assets", "project", "description"]), 1 => prop::sample::select(PATHS)],
                prop::sample::select(vec!["asc", "desc"]),
            ),
            0..3,
        ),
        prop::option::of((1u64..8, 1u64..5)),
        any::<(bool, bool, bool)>(),
    )
        .prop_map(|(t, f, rf, sorts, paging, (counted, retired, archived))| {
            let mut p = json!({"type": t, "filters": f, "return_fields": rf,
                "sorts": sorts.iter().map(|(f, d)| json!({"field_name": f, "direction": d})).collect::<Vec<_>>()});
            if let Some((per, page)) = paging {
                p["paging"] = json!({"entities_per_page": per, "current_page": page});
            }
            p[if counted { "return_paging_info" } else { "return_paging_info_without_counts" }] = json!(true);
            if retired {
                p["return_only"] = json!("retired");
            }
            if archived {
                p["include_archived_projects"] = json!(false);
            }
            p
        })
}

/// Every name the catalog allows in SQL, plus the cache's own columns.
fn allowed_identifiers(cat: &Catalog) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = [
        "id",
        "_retired",
        "_entity_id",
        "_position",
        "_target_type",
        "_target_id",
        // Collations of case-insensitive text on PostgreSQL (`super::text`).
        "und-x-icu",
        "C",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for t in cat.types.values() {
        out.insert(t.table.clone());
        for f in t.fields.values() {
            out.insert(f.name.clone());
            out.insert(format!("{}__type", f.name));
            out.insert(format!("{}__id", f.name));
            out.insert(ident::assoc_table_name(&t.entity_type, &f.name));
        }
    }
    out
}

fn quoted_identifiers(sql: &str) -> Vec<String> {
    // Identifiers are the only double-quoted tokens: values are never inlined.
    let mut out = Vec::new();
    let mut rest = sql;
    while let Some(start) = rest.find('"') {
        let after = &rest[start + 1..];
        let end = after.find('"').expect("balanced quotes");
        out.push(after[..end].to_string());
        rest = &after[end + 1..];
    }
    out
}

#[test]
fn arbitrary_json_never_panics_the_parser_or_translator() {
    let cat = catalog();
    let json = prop::collection::vec(any::<u8>(), 0..64);
    let mut runner = TestRunner::new(Config::with_cases(512));
    runner
        .run(&json, |bytes| {
            if let Ok(req) = Request::parse(&bytes) {
                if let Ok(read) = ReadRequest::parse(&req.payload) {
                    let _ = plan_read(&read, &cat, Dialect::Sqlite);
                }
            }
            Ok(())
        })
        .unwrap();
}

fn run_generated(dialect: Dialect, cases: u32) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (scratch, db, cat) = rt.block_on(fixture_db(dialect));
    let allowed = allowed_identifiers(&cat);
    let mut runner = TestRunner::new(Config::with_cases(cases));
    let planned = std::cell::Cell::new(0u32);
    runner
        .run(&payload(), |p| {
            let Ok(read) = ReadRequest::parse(&p) else {
                return Ok(());
            };
            let Ok(plan) = plan_read(&read, &cat, dialect) else {
                return Ok(());
            };
            planned.set(planned.get() + 1);
            for id in quoted_identifiers(&plan.sql.text) {
                prop_assert!(
                    allowed.contains(&id),
                    "identifier {id:?} not from the catalog: {}",
                    plan.sql.text
                );
            }
            let out = rt.block_on(plan.run(&db));
            if let Err(e) = &out {
                prop_assert!(
                    e.reason != Reason::Database,
                    "SQL failed for {p}: {}",
                    plan.sql.text
                );
            }
            Ok(())
        })
        .unwrap();
    // The generator must reach the SQL path often enough to mean something.
    assert!(
        planned.get() > cases / 4,
        "only {} of {cases} payloads were planned",
        planned.get()
    );
    rt.block_on(scratch.drop());
}

/// Lists past the database's bind limit pass through before any SQL runs; lists under it run.
#[test]
fn long_lists_pass_through_past_the_bind_limit_and_run_under_it() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for dialect in [Dialect::Sqlite, Dialect::Postgres] {
        let (scratch, db, cat) = rt.block_on(fixture_db(dialect));
        let read = |n: i64, relation: &str| {
            let ids: Vec<i64> = (1..=n).collect();
            ReadRequest::parse(&json!({"type": "Shot", "return_fields": ["code"],
                "filters": {"logical_operator": "and", "conditions": [
                    {"path": "id", "relation": relation, "values": ids}]}}))
            .unwrap()
        };
        for relation in ["in", "not_in"] {
            let far = plan_read(&read(100_000, relation), &cat, dialect).map(|_| ());
            assert_eq!(far.map_err(|e| e.reason), Err(Reason::DatabaseLimit));
            let near = plan_read(&read(MAX_BINDS as i64 - 10, relation), &cat, dialect).unwrap();
            assert!(
                rt.block_on(near.run(&db)).is_ok(),
                "{relation} on {dialect:?}"
            );
        }
        let nul = ReadRequest::parse(&json!({"type": "Shot", "return_fields": ["code"],
            "filters": {"logical_operator": "and", "conditions": [
                {"path": "code", "relation": "contains", "values": ["\u{0}"]}]}}))
        .unwrap();
        let pt = plan_read(&nul, &cat, dialect)
            .map(|_| ())
            .map_err(|e| e.reason);
        assert_eq!(pt, Err(Reason::DatabaseLimit));
        rt.block_on(scratch.drop());
    }
}

#[test]
fn generated_reads_produce_valid_sql_on_sqlite() {
    run_generated(Dialect::Sqlite, 400);
}

#[test]
fn generated_reads_produce_valid_sql_on_postgres() {
    run_generated(Dialect::Postgres, 200);
}
