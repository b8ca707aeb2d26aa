use proptest::prelude::*;
use serde_json::{json, Value};
use sgcache::api3::ErrorCode;

use super::reference::eval;
use super::*;

const FIELDS: &[&str] = &[
    "code",
    "sg_status_list",
    "sg_cut_in",
    "sg_cut_out",
    "description",
    "sg_sequence",
    "assets",
    "tag_list",
    "created_at",
    "project",
    "sg_sequence.Sequence.code",
];

fn all_shots(site: &Site) -> Vec<Value> {
    read_all(site, "Shot", and(json!([])), FIELDS)
}

/// Engine result vs reference over every active shot.
fn check(site: &Site, rows: &[Value], filter: &Value) {
    let got = ids(&read_all(site, "Shot", filter.clone(), &["id"]));
    let want: Vec<u64> = rows
        .iter()
        .filter(|r| eval(filter, r))
        .filter_map(|r| r["id"].as_u64())
        .collect();
    assert_eq!(got, want, "filter {filter}");
}

fn cond(path: &str, rel: &str, values: Value) -> Value {
    json!({"path": path, "relation": rel, "values": values})
}

/// Conditions over every data type the seed fills, with values drawn from small domains
/// so that matches and misses both happen.
fn arb_cond() -> impl Strategy<Value = Value> {
    let status = prop::sample::select(vec!["wtg", "ip", "fin", "IP", "hld", "nope"]);
    let text = prop::sample::select(vec!["sh0000", "SH00001", "hero", "é", "镜头", "", "4"]);
    let num = 990i64..1060;
    let date = prop::sample::select(vec![
        "2023-11-01T00:00:00Z",
        "2024-03-15T12:00:00Z",
        "2024-08-01T00:00:00Z",
    ]);
    let link_id = 0u64..70;
    prop_oneof![
        (prop::sample::select(vec!["is", "is_not"]), status.clone()).prop_map(|(r, s)| cond(
            "sg_status_list",
            r,
            json!([s])
        )),
        (
            prop::sample::select(vec!["in", "not_in"]),
            prop::collection::vec(status, 0..3),
            any::<bool>()
        )
            .prop_map(|(r, mut v, null)| {
                let mut v: Vec<Value> = v.drain(..).map(Value::from).collect();
                if null {
                    v.push(Value::Null);
                }
                cond("sg_status_list", r, Value::Array(v))
            }),
        (
            prop::sample::select(vec![
                "contains",
                "not_contains",
                "starts_with",
                "ends_with",
                "is",
                "is_not"
            ]),
            prop::sample::select(vec!["code", "description"]),
            text.clone()
        )
            .prop_map(|(r, f, t)| cond(f, r, json!([t]))),
        (
            prop::sample::select(vec!["is", "is_not", "less_than", "greater_than"]),
            prop::sample::select(vec!["sg_cut_in", "sg_cut_out"]),
            num.clone()
        )
            .prop_map(|(r, f, n)| cond(f, r, json!([n]))),
        (
            prop::sample::select(vec!["between", "not_between"]),
            num.clone(),
            num,
            any::<bool>()
        )
            .prop_map(|(r, a, b, open)| {
                let lo = if open { Value::Null } else { json!(a.min(b)) };
                cond("sg_cut_in", r, json!([lo, a.max(b)]))
            }),
        prop::sample::select(vec!["is", "is_not"]).prop_map(|r| cond(
            "sg_cut_in",
            r,
            json!([null])
        )),
        (
            prop::sample::select(vec!["is", "is_not", "in", "not_in"]),
            link_id.clone()
        )
            .prop_map(|(r, id)| cond(
                "sg_sequence",
                r,
                json!([{"type": "Sequence", "id": id % 13}])
            )),
        (prop::sample::select(vec!["is", "is_not"]), link_id).prop_map(|(r, id)| cond(
            "assets",
            r,
            json!([{"type": "Asset", "id": id}])
        )),
        prop::sample::select(vec!["is", "is_not"]).prop_map(|r| cond("assets", r, json!([null]))),
        (
            prop::sample::select(vec!["name_contains", "name_not_contains", "name_is"]),
            text.clone()
        )
            .prop_map(|(r, t)| cond("sg_sequence", r, json!([t]))),
        (
            prop::sample::select(vec!["name_contains", "name_not_contains"]),
            text.clone()
        )
            .prop_map(|(r, t)| cond("assets", r, json!([t]))),
        (
            prop::sample::select(vec!["type_is", "type_is_not"]),
            prop::sample::select(vec![json!("Asset"), json!("Shot"), Value::Null])
        )
            .prop_map(|(r, t)| cond("assets", r, json!([t]))),
        (
            prop::sample::select(vec!["is", "is_not"]),
            prop::sample::select(vec!["hero", "FX", "night", "x"])
        )
            .prop_map(|(r, t)| cond("tag_list", r, json!([t]))),
        (
            prop::sample::select(vec!["greater_than", "less_than"]),
            date
        )
            .prop_map(|(r, d)| cond("created_at", r, json!([d]))),
        (
            prop::sample::select(vec![
                "is",
                "is_not",
                "contains",
                "not_contains",
                "starts_with"
            ]),
            prop::sample::select(vec!["sq001", "SQ00", "q003", "x"])
        )
            .prop_map(|(r, t)| cond("sg_sequence.Sequence.code", r, json!([t]))),
        (
            prop::sample::select(vec![
                "is",
                "is_not",
                "contains",
                "not_contains",
                "ends_with"
            ]),
            prop::sample::select(vec!["hero_00010", "PROP", "5", "env_0002"])
        )
            .prop_map(|(r, t)| cond("assets.Asset.code", r, json!([t]))),
    ]
}

fn arb_filter() -> impl Strategy<Value = Value> {
    let leaf = arb_cond();
    leaf.prop_recursive(3, 12, 4, |inner| {
        (
            prop::sample::select(vec!["and", "or"]),
            prop::collection::vec(inner, 0..4),
        )
            .prop_map(|(op, c)| json!({"logical_operator": op, "conditions": c}))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_reference(filter in arb_filter()) {
        thread_local! {
            static FIXTURE: (Site, Vec<Value>) = {
                let s = site();
                let rows = all_shots(&s);
                (s, rows)
            };
        }
        FIXTURE.with(|(s, rows)| check(s, rows, &and(json!([filter]))));
    }

    /// Sorting by one or two fields: pages concatenate to the reference order.
    #[test]
    fn sorted_pages_match_reference(
        f1 in prop::sample::select(vec!["sg_cut_in", "code", "sg_status_list", "sg_sequence", "created_at"]),
        d1 in prop::sample::select(vec!["asc", "desc"]),
        f2 in prop::sample::select(vec!["sg_cut_out", "sg_status_list"]),
        per in 7u64..40,
    ) {
        let s = site();
        let sorts = json!([{"field_name": f1, "direction": d1}, {"field_name": f2, "direction": "asc"}]);
        let mut got = Vec::new();
        for page in 1.. {
            let rows = read_with(&s, json!({"type": "Shot", "filters": and(json!([])), "return_fields": [f1, f2],
                "sorts": sorts, "paging": {"entities_per_page": per, "current_page": page}}));
            if rows.is_empty() { break; }
            got.extend(rows);
        }
        let mut want = all_shots(&s);
        let key = |v: &Value| -> (u8, Value) {
            let v = if v.is_object() { v["name"].clone() } else { v.clone() };
            match v {
                Value::Null => (1, Value::Null),
                Value::String(t) => (0, Value::String(t.to_lowercase())),
                other => (0, other),
            }
        };
        let cmp = |a: &Value, b: &Value| -> std::cmp::Ordering {
            let (ka, kb) = (key(a), key(b));
            ka.0.cmp(&kb.0).then_with(|| match (&ka.1, &kb.1) {
                (Value::Number(x), Value::Number(y)) => x.as_f64().partial_cmp(&y.as_f64()).unwrap(),
                (Value::String(x), Value::String(y)) => x.cmp(y),
                _ => std::cmp::Ordering::Equal,
            })
        };
        want.sort_by(|a, b| {
            let o = cmp(&a[f1], &b[f1]);
            // Descending reverses the whole key, so nulls come first.
            let o = if d1 == "desc" { o.reverse() } else { o };
            o.then_with(|| cmp(&a[f2], &b[f2])).then_with(|| a["id"].as_u64().cmp(&b["id"].as_u64()))
        });
        prop_assert_eq!(ids(&got), ids(&want));
    }
}

#[test]
fn deep_return_fields_follow_links() {
    let s = site();
    let rows = read_all(
        &s,
        "Task",
        and(json!([])),
        &[
            "entity",
            "entity.Shot.code",
            "entity.Shot.sg_sequence.Sequence.code",
        ],
    );
    let mut seen_shot = false;
    let mut seen_other = false;
    for r in &rows {
        let e = &r["entity"];
        if e["type"] == "Shot" {
            seen_shot = true;
            assert_eq!(r["entity.Shot.code"], e["name"], "{r}");
            let shot = read_all(
                &s,
                "Shot",
                and(json!([{"path": "id", "relation": "is", "values": [e["id"]]}])),
                &["sg_sequence"],
            );
            assert_eq!(
                r["entity.Shot.sg_sequence.Sequence.code"],
                shot[0]["sg_sequence"]
                    .get("name")
                    .cloned()
                    .unwrap_or(Value::Null)
            );
        } else {
            seen_other = true;
            assert!(r["entity.Shot.code"].is_null(), "{r}");
        }
    }
    assert!(seen_shot && seen_other);
}

#[test]
fn deep_filters_through_entity_fields_and_multi_hops() {
    let s = site();
    let shots = read_all(&s, "Shot", and(json!([])), &["code", "sg_sequence"]);
    let target = shots.iter().find(|r| !r["sg_sequence"].is_null()).unwrap();
    let seq_name = target["sg_sequence"]["name"].clone();
    let tasks = read_all(
        &s,
        "Task",
        and(
            json!([{"path": "entity.Shot.sg_sequence.Sequence.code", "relation": "is", "values": [seq_name]}]),
        ),
        &["entity"],
    );
    let shot_ids: Vec<u64> = shots
        .iter()
        .filter(|r| r["sg_sequence"]["name"] == seq_name)
        .filter_map(|r| r["id"].as_u64())
        .collect();
    let all_tasks = read_all(&s, "Task", and(json!([])), &["entity"]);
    let want: Vec<u64> = all_tasks
        .iter()
        .filter(|t| {
            t["entity"]["type"] == "Shot" && shot_ids.contains(&t["entity"]["id"].as_u64().unwrap())
        })
        .filter_map(|t| t["id"].as_u64())
        .collect();
    assert!(!want.is_empty());
    assert_eq!(ids(&tasks), want);
}

#[test]
fn null_semantics() {
    let s = site();
    let all = ids(&read_all(&s, "Shot", and(json!([])), &["id"]));
    let null_cut = ids(&read_all(
        &s,
        "Shot",
        and(json!([cond("sg_cut_in", "is", json!([null]))])),
        &["id"],
    ));
    let not_1010 = ids(&read_all(
        &s,
        "Shot",
        and(json!([cond("sg_cut_in", "is_not", json!([1010]))])),
        &["id"],
    ));
    assert!(!null_cut.is_empty());
    assert!(
        null_cut.iter().all(|i| not_1010.contains(i)),
        "is_not matches nulls"
    );
    let no_desc = ids(&read_all(
        &s,
        "Shot",
        and(json!([cond(
            "description",
            "not_contains",
            json!(["Shot"])
        )])),
        &["id"],
    ));
    let null_desc = ids(&read_all(
        &s,
        "Shot",
        and(json!([cond("description", "is", json!([null]))])),
        &["id"],
    ));
    assert!(!null_desc.is_empty() && null_desc.iter().all(|i| no_desc.contains(i)));
    let set = ids(&read_all(
        &s,
        "Shot",
        and(json!([cond("sg_cut_in", "is_not", json!([null]))])),
        &["id"],
    ));
    assert_eq!(set.len() + null_cut.len(), all.len());
}

#[test]
fn relative_dates_use_the_site_clock() {
    let s = site();
    let rows = read_all(&s, "Task", and(json!([])), &["due_date"]);
    for (rel, vals) in [
        ("in_last", json!([30, "DAY"])),
        ("in_next", json!([2, "WEEK"])),
        ("in_calendar_month", json!([-1])),
        ("in_calendar_week", json!([0])),
        ("in_calendar_year", json!([0])),
    ] {
        // Clock 2024-11-20 (a Wednesday), windows computed independently here.
        let (lo, hi) = match rel {
            "in_last" => ("2024-10-21", "2024-11-20"),
            "in_next" => ("2024-11-20", "2024-12-04"),
            "in_calendar_month" => ("2024-10-01", "2024-10-31"),
            "in_calendar_week" => ("2024-11-18", "2024-11-24"),
            _ => ("2024-01-01", "2024-12-31"),
        };
        let got = ids(&read_all(
            &s,
            "Task",
            and(json!([cond("due_date", rel, vals.clone())])),
            &["id"],
        ));
        let want: Vec<u64> = rows
            .iter()
            .filter(|r| r["due_date"].as_str().is_some_and(|d| d >= lo && d <= hi))
            .filter_map(|r| r["id"].as_u64())
            .collect();
        assert_eq!(got, want, "{rel} {vals}");
        if rel == "in_last" || rel == "in_next" {
            let neg = ids(&read_all(
                &s,
                "Task",
                and(json!([cond(
                    "due_date",
                    &format!("not_{rel}"),
                    vals.clone()
                )])),
                &["id"],
            ));
            assert_eq!(neg.len() + got.len(), rows.len());
            assert!(neg.iter().all(|i| !got.contains(i)));
        }
    }
}

#[test]
fn invalid_filters_are_clear_faults() {
    let s = site();
    let bad = |ty: &str, c: Value, needle: &str| {
        let e = err_of(call(
            &s,
            "read",
            json!({"type": ty, "filters": and(json!([c])), "return_fields": ["id"]}),
        ));
        assert_eq!(e.code, ErrorCode::Fault);
        assert!(
            e.message.contains(needle),
            "{} does not mention {needle}",
            e.message
        );
    };
    bad(
        "Shot",
        cond("code", "less_than", json!(["a"])),
        "not valid for a text field",
    );
    bad(
        "Shot",
        cond("code", "is", json!(["a", "b"])),
        "exactly one value",
    );
    bad("Project", cond("archived", "is", json!([null])), "checkbox");
    bad("Task", cond("splits", "is", json!([null])), "serializable");
    bad(
        "HumanUser",
        cond("password_proxy", "is", json!(["x"])),
        "password",
    );
    bad(
        "Version",
        cond("sg_uploaded_movie", "is", json!([null])),
        "url",
    );
    bad(
        "Shot",
        cond("nope", "is", json!([1])),
        "'nope' does not exist",
    );
    bad(
        "Shot",
        cond("sg_cut_in", "is", json!(["ten"])),
        "not a number",
    );
    bad(
        "Shot",
        cond("sg_sequence.Nope.code", "is", json!(["x"])),
        "'Nope' does not exist",
    );
    bad(
        "Shot",
        cond("created_at", "in_last", json!([3, "EON"])),
        "unknown unit",
    );
    bad("Nope", cond("id", "is", json!([1])), "Entity type 'Nope'");
}

#[test]
fn retired_and_archived_scopes() {
    let s = site();
    let retired = read_with(
        &s,
        json!({"type": "Shot", "filters": and(json!([])), "return_only": "retired"}),
    );
    assert!(!retired.is_empty() && ids(&retired).iter().all(|i| i % 97 == 0));
    let active = ids(&read_all(&s, "Shot", and(json!([])), &["id"]));
    assert!(active.iter().all(|i| i % 97 != 0));
    let projects = read_all(&s, "Project", and(json!([])), &["archived"]);
    let archived: Vec<Value> = projects
        .iter()
        .filter(|p| p["archived"] == true)
        .map(|p| json!({"type": "Project", "id": p["id"]}))
        .collect();
    assert!(!archived.is_empty());
    let hidden = read_with(
        &s,
        json!({"type": "Shot", "filters": and(json!([])), "return_fields": ["project"], "include_archived_projects": false}),
    );
    assert!(hidden
        .iter()
        .all(|r| !archived.iter().any(|a| a["id"] == r["project"]["id"])));
    let in_archived = read_all(
        &s,
        "Shot",
        and(json!([cond("project", "in", Value::Array(archived))])),
        &["id"],
    );
    assert_eq!(hidden.len() + in_archived.len(), active.len());
}

#[test]
fn paging_info_in_both_styles() {
    let s = site();
    let total = read_all(&s, "Shot", and(json!([])), &["id"]).len();
    let page = |p: u64, flag: &str| {
        call(
            &s,
            "read",
            json!({"type": "Shot", "filters": and(json!([])),
        "paging": {"entities_per_page": 50, "current_page": p}, flag: true}),
        )
        .unwrap()
    };
    assert_eq!(
        page(1, "return_paging_info")["paging_info"],
        json!({"entity_count": total})
    );
    assert_eq!(
        page(1, "return_paging_info_without_counts")["paging_info"],
        json!({"has_next_page": true})
    );
    let last = total.div_ceil(50) as u64;
    assert_eq!(
        page(last, "return_paging_info_without_counts")["paging_info"],
        json!({"has_next_page": false})
    );
    assert!(page(last + 1, "return_paging_info")["entities"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn summarize_counts_match_reads() {
    let s = site();
    let r = call(&s, "summarize", json!({"type": "Shot", "filters": and(json!([])),
        "summaries": [{"field": "id", "type": "record_count"}, {"field": "sg_cut_in", "type": "sum"},
                      {"field": "sg_cut_in", "type": "maximum"}],
        "grouping": [{"field": "sg_status_list", "type": "exact", "direction": "asc"}]})).unwrap();
    let rows = read_all(&s, "Shot", and(json!([])), &["sg_status_list", "sg_cut_in"]);
    assert_eq!(r["summaries"]["id"], json!(rows.len()));
    let sum: i64 = rows.iter().filter_map(|r| r["sg_cut_in"].as_i64()).sum();
    assert_eq!(
        r["summaries"]["sg_cut_in"],
        json!(rows.iter().filter_map(|r| r["sg_cut_in"].as_i64()).max())
    );
    let groups = r["groups"].as_array().unwrap();
    let mut n = 0;
    for g in groups {
        let members: Vec<&Value> = rows
            .iter()
            .filter(|r| r["sg_status_list"] == g["group_value"])
            .collect();
        assert_eq!(g["summaries"]["id"], json!(members.len()));
        n += members.len();
    }
    assert_eq!(n, rows.len());
    let r = call(
        &s,
        "summarize",
        json!({"type": "Shot", "filters": and(json!([])),
        "summaries": [{"field": "sg_cut_in", "type": "sum"}]}),
    )
    .unwrap();
    assert_eq!(r["summaries"]["sg_cut_in"], json!(sum));
}

#[test]
fn latest_preset_keeps_the_newest_version_per_entity() {
    let s = site();
    let read = |presets: Value| {
        call(
            &s,
            "read",
            json!({"type": "Version", "filters": and(json!([])),
            "return_fields": ["entity", "created_at"], "additional_filter_presets": presets}),
        )
    };
    for code in ["latest_a", "latest_b", "latest_c"] {
        call(
            &s,
            "create",
            json!({"type": "Version", "fields": [
                {"field_name": "code", "value": code},
                {"field_name": "entity", "value": {"type": "Shot", "id": 1}}]}),
        )
        .unwrap();
    }
    let all = read(json!([])).unwrap()["entities"]
        .as_array()
        .unwrap()
        .clone();
    let mut newest: std::collections::BTreeMap<String, (String, i64)> = Default::default();
    let mut expected = Vec::new();
    for v in &all {
        let (id, created) = (v["id"].as_i64().unwrap(), v["created_at"].to_string());
        if v["entity"].is_null() {
            expected.push(id);
            continue;
        }
        let group = format!("{}:{}", v["entity"]["type"], v["entity"]["id"]);
        let slot = newest.entry(group).or_insert((created.clone(), id));
        if (created.clone(), id) > slot.clone() {
            *slot = (created, id);
        }
    }
    expected.extend(newest.values().map(|(_, id)| *id));
    expected.sort();
    let presets = json!([{"preset_name": "LATEST", "latest_by": "ENTITIES_CREATED_AT"}]);
    let got: Vec<i64> = read(presets).unwrap()["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_i64().unwrap())
        .collect();
    assert!(got.len() < all.len(), "three versions of Shot 1 leave one");
    assert_eq!(got, expected);
    // Presets whose rules are not modelled are refused, never answered unfiltered.
    for p in [
        json!([{"preset_name": "CUT_SHOT_VERSIONS", "cut_id": 1}]),
        json!([{}]),
    ] {
        let err = read(p).unwrap_err();
        assert!(
            err.message.contains("additional_filter_presets"),
            "{}",
            err.message
        );
    }
}
