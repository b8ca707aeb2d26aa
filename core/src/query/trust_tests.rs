//! Which trust classes a plan carries: the inferred shapes (relative dates, paths of more than
//! one hop, deep lists through multi-entity links, negations whose null rule is inferred) and
//! none for the shapes the protocol reference documents.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::tests::catalog;
use super::*;
use crate::api3::ReadRequest;
use crate::trust::TrustClass::{self, *};

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-05-15T10:30:00Z")
        .unwrap()
        .to_utc()
}

fn classes(payload: Value) -> BTreeSet<TrustClass> {
    let req = ReadRequest::parse(&payload).unwrap();
    plan_read_at(&req, &catalog(), Dialect::Sqlite, now())
        .unwrap_or_else(|e| panic!("{payload}: {e}"))
        .classes
}

/// The wire filter of one condition.
fn one(path: &str, rel: &str, values: &Value) -> Value {
    json!({"logical_operator": "and", "conditions": [{"path": path, "relation": rel, "values": values}]})
}

fn filtered(path: &str, rel: &str, values: Value) -> BTreeSet<TrustClass> {
    classes(json!({"type": "Shot", "filters": one(path, rel, &values)}))
}

#[test]
fn documented_shapes_carry_no_class() {
    for (path, rel, values) in [
        ("code", "is", json!(["a"])),
        ("code", "not_contains", json!(["a"])),
        ("code", "is_not", json!([null])),
        ("code", "not_in", json!([null, "a"])),
        ("id", "is_not", json!([3])),
        ("id", "not_in", json!([3])),
        ("id", "not_between", json!([1, 3])),
        (
            "sg_sequence",
            "is_not",
            json!([{"type": "Sequence", "id": 1}]),
        ),
        ("sg_sequence", "type_is_not", json!([null])),
        ("assets", "is_not", json!([null])),
        ("assets", "type_is_not", json!([null])),
        ("assets", "is", json!([{"type": "Asset", "id": 1}])),
        ("sg_sequence.Sequence.code", "is", json!(["a"])),
        ("sg_sequence.Sequence.code", "contains", json!(["a"])),
        ("assets.Asset.code", "contains", json!(["a"])),
        (
            "created_at",
            "between",
            json!(["2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"]),
        ),
    ] {
        assert_eq!(
            filtered(path, rel, values.clone()),
            BTreeSet::new(),
            "{path} {rel} {values}"
        );
    }
    assert_eq!(
        classes(json!({"type": "Shot", "return_fields": ["sg_sequence.Sequence.code", "assets"]})),
        BTreeSet::new()
    );
}

#[test]
fn inferred_shapes_carry_their_class() {
    let cases: &[(&str, &str, Value, &[TrustClass])] = &[
        ("created_at", "in_last", json!([7, "DAY"]), &[InLast]),
        (
            "created_at",
            "not_in_last",
            json!([7, "DAY"]),
            &[InLast, NegationNull],
        ),
        ("created_at", "in_next", json!([1, "WEEK"]), &[InNext]),
        (
            "created_at",
            "not_in_next",
            json!([1]),
            &[InNext, NegationNull],
        ),
        (
            "created_at",
            "in_calendar_day",
            json!([0]),
            &[InCalendarDay],
        ),
        (
            "created_at",
            "in_calendar_week",
            json!([-1]),
            &[InCalendarWeek],
        ),
        (
            "created_at",
            "in_calendar_month",
            json!([1]),
            &[InCalendarMonth],
        ),
        (
            "created_at",
            "in_calendar_year",
            json!([0]),
            &[InCalendarYear],
        ),
        ("code", "is_not", json!(["a"]), &[NegationNull]),
        ("code", "not_in", json!(["a"]), &[NegationNull]),
        ("sg_cut_in", "not_between", json!([1, 3]), &[NegationNull]),
        (
            "sg_sequence",
            "not_in",
            json!([{"type": "Sequence", "id": 1}]),
            &[NegationNull],
        ),
        (
            "sg_sequence",
            "type_is_not",
            json!(["Sequence"]),
            &[NegationNull],
        ),
        (
            "sg_sequence",
            "name_not_contains",
            json!(["a"]),
            &[NegationNull, LinkName],
        ),
        // `id` behind a hop is null when the link is.
        (
            "sg_sequence.Sequence.id",
            "is_not",
            json!([3]),
            &[NegationNull, NullHop],
        ),
        (
            "sg_sequence.Sequence.code",
            "is_not",
            json!(["a"]),
            &[NegationNull, NullHop],
        ),
        (
            "assets",
            "is_not",
            json!([{"type": "Asset", "id": 1}]),
            &[NegationMultiEntity],
        ),
        (
            "assets",
            "not_in",
            json!([{"type": "Asset", "id": 1}]),
            &[NegationMultiEntity],
        ),
        (
            "assets",
            "type_is_not",
            json!(["Asset"]),
            &[NegationMultiEntity],
        ),
        (
            "assets",
            "name_not_contains",
            json!(["a"]),
            &[NegationMultiEntity, LinkName],
        ),
        (
            "assets.Asset.code",
            "not_contains",
            json!(["a"]),
            &[NegationMultiEntity],
        ),
        (
            "assets.Asset.code",
            "is_not",
            json!(["a"]),
            &[NegationMultiEntity],
        ),
        (
            "sg_sequence.Sequence.project.Project.name",
            "is",
            json!(["a"]),
            &[MultiHop],
        ),
        (
            "sg_sequence.Sequence.project.Project.name",
            "is_not",
            json!(["a"]),
            &[MultiHop, NegationNull, NullHop],
        ),
        (
            "assets.Asset.shots.Shot.code",
            "contains",
            json!(["a"]),
            &[MultiHop],
        ),
        (
            "assets.Asset.shots.Shot.code",
            "not_contains",
            json!(["a"]),
            &[MultiHop, NegationMultiEntity],
        ),
        // A missing link on an entity hop: the far value is null (doc 5.4, inferred).
        (
            "sg_sequence.Sequence.code",
            "not_contains",
            json!(["a"]),
            &[NullHop],
        ),
        ("sg_sequence.Sequence.code", "is", json!([null]), &[NullHop]),
        (
            "sg_sequence.Sequence.code",
            "in",
            json!(["a", null]),
            &[NullHop],
        ),
        ("sg_sequence", "name_contains", json!(["a"]), &[LinkName]),
        (
            "assets.Asset.project.Project.created_at",
            "not_in_calendar_month",
            json!([0]),
            &[],
        ),
    ];
    for (path, rel, values, want) in cases {
        let req = ReadRequest::parse(&json!({"type": "Shot", "filters": one(path, rel, values)}))
            .unwrap();
        let got = plan_read_at(&req, &catalog(), Dialect::Sqlite, now()).map(|p| p.classes);
        if rel.starts_with("not_in_calendar") {
            // The site takes no negation of the calendar relations: it answers (refuses) them.
            assert_eq!(got.unwrap_err().reason, Reason::Relation);
            continue;
        }
        let want: BTreeSet<TrustClass> = want.iter().copied().collect();
        assert_eq!(got.unwrap(), want, "{path} {rel} {values}");
    }
}

#[test]
fn deep_return_fields_carry_their_class() {
    let r = |f: &str| classes(json!({"type": "Shot", "return_fields": [f]}));
    assert_eq!(
        r("sg_sequence.Sequence.project.Project.name"),
        [MultiHop].into()
    );
    assert_eq!(r("assets.Asset.code"), [MultiEntityReturn].into());
    assert_eq!(r("assets.Asset.project"), [MultiEntityReturn].into());
    assert_eq!(
        r("assets.Asset.project.Project.name"),
        [MultiHop, MultiEntityReturn].into()
    );
    let req = ReadRequest::parse(&json!({"type": "Shot", "return_fields": ["assets.Asset.shots"]}))
        .unwrap();
    let err = plan_read_at(&req, &catalog(), Dialect::Sqlite, now()).unwrap_err();
    assert_eq!(err.reason, Reason::Path);
}

#[test]
fn relative_dates_bind_the_window_of_the_given_clock() {
    let req = ReadRequest::parse(
        &json!({"type": "Shot", "filters": one("created_at", "in_last", &json!([2, "DAY"]))}),
    )
    .unwrap();
    let p = plan_read_at(&req, &catalog(), Dialect::Postgres, now()).unwrap();
    let lo = DateTime::parse_from_rfc3339("2024-05-13T10:30:00Z")
        .unwrap()
        .to_utc();
    assert!(p.sql.binds.contains(&SqlValue::DateTime(lo)));
    assert!(p.sql.binds.contains(&SqlValue::DateTime(now())));
    assert!(!p.sql.text.to_lowercase().contains("now()"));
}

// ---- answers on both databases --------------------------------------------------------------

async fn answer(db: &Db, cat: &Catalog, payload: Value) -> Value {
    let req = ReadRequest::parse(&payload).unwrap();
    let plan = plan_read_at(&req, cat, db.dialect(), now()).unwrap_or_else(|e| panic!("{e}"));
    plan.run(db)
        .await
        .unwrap_or_else(|e| panic!("{payload}: {e}"))
}

/// Deep lists keep the list's order; a negation after a multi_entity hop matches rows with no
/// linked entity; a link to a retired row is a null far value in filters.
async fn deep_shapes_answer_as_the_site(dialect: Dialect) {
    let (scratch, db, cat) = super::tests::fixture_db(dialect).await;
    let out = answer(
        &db,
        &cat,
        json!({"type": "Shot", "return_fields": ["assets.Asset.code", "assets.Asset.id"],
               "filters": one("id", "is", &json!([1]))}),
    )
    .await;
    assert_eq!(
        out["entities"],
        json!([{"type": "Shot", "id": 1, "assets.Asset.code": ["prop_a", "hero"], "assets.Asset.id": [21, 20]}])
    );
    let ids = |v: Value| -> Vec<i64> {
        v["entities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect()
    };
    let filtered = |path: &str, rel: &str, values: Value| json!({"type": "Shot", "filters": one(path, rel, &values)});
    let got = answer(
        &db,
        &cat,
        filtered("assets.Asset.code", "is_not", json!(["hero"])),
    )
    .await;
    assert_eq!(ids(got), vec![2, 3]);
    let got = answer(
        &db,
        &cat,
        filtered("assets.Asset.code", "contains", json!(["A"])),
    )
    .await;
    assert_eq!(ids(got), vec![1]);
    // Shot 3's sequence is retired: its far code is null, as for shot 2, which has none.
    let got = answer(
        &db,
        &cat,
        filtered("sg_sequence.Sequence.code", "is", json!([null])),
    )
    .await;
    assert_eq!(ids(got), vec![2, 3]);
    let got = answer(
        &db,
        &cat,
        filtered("created_at", "in_calendar_year", json!([0])),
    )
    .await;
    assert_eq!(ids(got), vec![1]);
    let got = answer(
        &db,
        &cat,
        filtered("created_at", "not_in_last", json!([1, "MONTH"])),
    )
    .await;
    assert_eq!(ids(got), vec![1, 2, 3]);
    scratch.drop().await;
}

#[tokio::test]
async fn deep_shapes_answer_as_the_site_sqlite() {
    deep_shapes_answer_as_the_site(Dialect::Sqlite).await;
}

#[tokio::test]
async fn deep_shapes_answer_as_the_site_postgres() {
    deep_shapes_answer_as_the_site(Dialect::Postgres).await;
}
