//! The semantic switches (`SimConfig::semantics`, `PUT /control/quirks`): each one changes
//! the answers of the reads it is about, and only those, so a test can make the site disagree
//! on purpose with what a cache learned from it.

use serde_json::{json, Value};

use super::*;
use crate::semantics::{NullHop, Semantics, SortCollation, TextCase, WeekStart};

fn create(s: &Site, ty: &str, fields: Value) -> u64 {
    let fields: Vec<Value> = fields
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| json!({"field_name": k, "value": v}))
        .collect();
    call(s, "create", json!({"type": ty, "fields": fields})).unwrap()["id"]
        .as_u64()
        .unwrap()
}

fn assets(s: &Site, codes: &[&str]) -> Vec<u64> {
    codes
        .iter()
        .map(|c| create(s, "Asset", json!({ "code": c })))
        .collect()
}

fn cond(path: &str, relation: &str, values: Value) -> Value {
    json!({"path": path, "relation": relation, "values": values})
}

/// Ids of the Assets matching `conds`, sorted by `code` ascending (then id).
fn by_code(s: &Site, conds: Value) -> Vec<u64> {
    ids(&read_with(
        s,
        json!({"type": "Asset", "filters": and(conds), "return_fields": ["code"],
               "sorts": [{"field_name": "code", "direction": "asc"}]}),
    ))
}

fn with(s: &Site, f: impl FnOnce(&mut Semantics)) {
    let mut sem = s.semantics();
    f(&mut sem);
    s.set_semantics(sem);
}

#[test]
fn defaults_are_the_documented_choices() {
    let s = site();
    assert_eq!(s.semantics(), Semantics::default());
    assert_eq!(
        serde_json::to_value(s.semantics()).unwrap(),
        json!({"text_case": "insensitive", "sort_collation": "folded", "week_start": "monday",
               "null_hop": "null"})
    );
}

#[test]
fn null_hop_default_reads_a_missing_links_checkbox_as_false() {
    let s = site();
    let task = create(&s, "Task", json!({"content": "nh_task"}));
    let linked = create(
        &s,
        "Version",
        json!({"code": "nh_linked", "sg_task": {"type": "Task", "id": task}}),
    );
    let unlinked = create(&s, "Version", json!({"code": "nh_unlinked"}));
    let matching = |rel: &str, v: Value| {
        let mut found = ids(&read_with(
            &s,
            json!({"type": "Version", "filters": and(json!([
                cond("code", "starts_with", json!(["nh_"])),
                cond("sg_task.Task.milestone", rel, json!([v]))]))}),
        ));
        found.sort();
        found
    };
    // Default: the far value behind no link is null, so `is false` does not match it.
    assert_eq!(matching("is", json!(false)), vec![linked]);
    assert_eq!(matching("is_not", json!(true)), vec![linked, unlinked]);
    assert_eq!(matching("is_not", json!(false)), vec![unlinked]);
    with(&s, |m| m.null_hop = NullHop::Default);
    assert_eq!(matching("is", json!(false)), vec![linked, unlinked]);
    assert_eq!(matching("is_not", json!(true)), vec![linked, unlinked]);
    assert!(matching("is_not", json!(false)).is_empty());
    assert!(matching("is", json!(true)).is_empty());
}

#[test]
fn case_sensitive_text_changes_text_relations() {
    let s = site();
    let [lower, upper, other, accented]: [u64; 4] =
        assets(&s, &["zqcase", "ZQCASE", "zqcase_b", "ÉZQ"])
            .try_into()
            .unwrap();
    let matching = |rel: &str, v: Value| by_code(&s, json!([cond("code", rel, json!([v]))]));
    let among = |rel: &str, vs: Value| by_code(&s, json!([cond("code", rel, vs)]));
    // Default: case folded on both sides, non-ASCII included.
    assert_eq!(matching("is", json!("zqCase")), vec![lower, upper]);
    assert_eq!(
        matching("starts_with", json!("ZQ")),
        vec![lower, upper, other]
    );
    assert_eq!(matching("contains", json!("éz")), vec![accented]);
    assert_eq!(among("in", json!(["ZQCASE_B", "nothing"])), vec![other]);
    with(&s, |m| m.text_case = TextCase::Sensitive);
    assert!(matching("is", json!("zqCase")).is_empty());
    assert_eq!(matching("is", json!("ZQCASE")), vec![upper]);
    assert_eq!(matching("starts_with", json!("ZQ")), vec![upper]);
    assert!(matching("contains", json!("éz")).is_empty());
    assert_eq!(matching("contains", json!("ÉZ")), vec![accented]);
    assert!(among("in", json!(["ZQCASE_B", "nothing"])).is_empty());
    // Negations stay the exact negation: `is_not` now keeps the other spelling.
    let not_lower = by_code(
        &s,
        json!([
            cond("code", "starts_with", json!(["zq"])),
            cond("code", "is_not", json!(["zqcase"]))
        ]),
    );
    assert_eq!(not_lower, vec![other]);
    // Back to the default, the old answers come back.
    with(&s, |m| m.text_case = TextCase::Insensitive);
    assert_eq!(matching("is", json!("zqCase")), vec![lower, upper]);
}

#[test]
fn case_sensitive_text_changes_name_relations_and_tags() {
    let s = site();
    let asset = assets(&s, &["NameCaseTarget"])[0];
    let task = create(
        &s,
        "Task",
        json!({"content": "name case", "entity": {"type": "Asset", "id": asset}}),
    );
    let named = |v: &str| {
        ids(&read_all(
            &s,
            "Task",
            and(json!([cond("entity", "name_contains", json!([v]))])),
            &["entity"],
        ))
    };
    assert_eq!(named("namecasetarget"), vec![task]);
    with(&s, |m| m.text_case = TextCase::Sensitive);
    assert!(named("namecasetarget").is_empty());
    assert_eq!(named("NameCase"), vec![task]);
}

#[test]
fn byte_collation_sorts_upper_case_first() {
    let s = site();
    let [b, a, c]: [u64; 3] = assets(&s, &["qxB", "qxa", "qxC"]).try_into().unwrap();
    let sorted = |s: &Site| by_code(s, json!([cond("code", "starts_with", json!(["qx"]))]));
    assert_eq!(sorted(&s), vec![a, b, c]);
    with(&s, |m| m.sort_collation = SortCollation::Byte);
    assert_eq!(sorted(&s), vec![b, c, a]);
    // Filters are untouched by the collation: still case-insensitive.
    assert_eq!(
        by_code(&s, json!([cond("code", "is", json!(["QXA"]))])),
        vec![a]
    );
}

#[test]
fn case_sensitive_folded_sort_orders_case_variants_by_code_point() {
    let s = site();
    let [lower, title, upper]: [u64; 3] =
        assets(&s, &["wvabc", "Wvabc", "WVABC"]).try_into().unwrap();
    let sorted = |s: &Site| {
        by_code(
            s,
            json!([cond("code", "in", json!(["wvabc", "Wvabc", "WVABC"]))]),
        )
    };
    // Default: the three spellings are equal, so the id tiebreak orders them.
    assert_eq!(sorted(&s), vec![lower, title, upper]);
    with(&s, |m| m.text_case = TextCase::Sensitive);
    // Case-sensitive, `in` matches the spellings one by one; the sort then orders them by
    // code point after folding (upper case first), no longer by id.
    let any_spelling = |s: &Site| {
        ids(&read_with(
            s,
            json!({"type": "Asset",
                   "filters": {"logical_operator": "or", "conditions": [
                       cond("code", "is", json!(["wvabc"])),
                       cond("code", "is", json!(["Wvabc"])),
                       cond("code", "is", json!(["WVABC"]))]},
                   "return_fields": ["code"],
                   "sorts": [{"field_name": "code", "direction": "asc"}]}),
        ))
    };
    assert_eq!(any_spelling(&s), vec![upper, title, lower]);
}

#[test]
fn sunday_weeks_move_in_calendar_week() {
    // CLOCK is Wednesday 2024-11-20: the Monday week is 11-18..11-24, the Sunday one 11-17..11-23.
    let s = site();
    let sunday_before = create(
        &s,
        "Task",
        json!({"content": "wk a", "due_date": "2024-11-17"}),
    );
    let sunday_after = create(
        &s,
        "Task",
        json!({"content": "wk b", "due_date": "2024-11-24"}),
    );
    let monday = create(
        &s,
        "Task",
        json!({"content": "wk c", "due_date": "2024-11-18"}),
    );
    let this_week = |s: &Site| {
        ids(&read_all(
            s,
            "Task",
            and(json!([
                cond("id", "in", json!([sunday_before, sunday_after, monday])),
                cond("due_date", "in_calendar_week", json!([0]))
            ])),
            &["due_date"],
        ))
    };
    assert_eq!(this_week(&s), vec![sunday_after, monday]);
    with(&s, |m| m.week_start = WeekStart::Sunday);
    assert_eq!(this_week(&s), vec![sunday_before, monday]);
}

#[test]
fn config_sets_the_switches() {
    let s = site_with(|c| {
        c.semantics = Semantics {
            text_case: TextCase::Sensitive,
            sort_collation: SortCollation::Byte,
            week_start: WeekStart::Sunday,
            null_hop: NullHop::Default,
        }
    });
    assert_eq!(s.semantics().null_hop, NullHop::Default);
    assert_eq!(s.semantics().week_start, WeekStart::Sunday);
    let [b, a]: [u64; 2] = assets(&s, &["cfgB", "cfga"]).try_into().unwrap();
    assert_eq!(
        by_code(&s, json!([cond("code", "starts_with", json!(["cfg"]))])),
        vec![b, a]
    );
    assert!(by_code(&s, json!([cond("code", "is", json!(["CFGA"]))])).is_empty());
}
