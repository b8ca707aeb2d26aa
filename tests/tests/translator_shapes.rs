//! The translator's inferred shapes (relative dates, paths of several hops, deep lists through
//! multi-entity links, negations over nulls and empty lists) answer exactly as the test site,
//! on PostgreSQL and SQLite: the site, on a fixed clock, holds rows with nulls, empty link
//! lists, links to retired rows and dates on both sides of every window edge; a cache is
//! filled from it; generated reads are planned for the cache with the site's clock and sent
//! to the site, and every read the cache answers must give the site's `results`, order
//! included.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use sgcache::api3::ReadRequest;
use sgcache::plan::PlanOptions;
use sgcache::query::{plan_read_at, Catalog};
use sgcache::site::SiteClient;
use sgcache::sql::Db;
use sgcache::trust::TrustClass;
use sgcache::ShotgunCacheSpec;
use sgcache_tests::pg::TestDb;
use sgcache_tests::proxy::site_client;
use shotgun_sim::{SimConfig, SimHandle};

/// The site's clock: a Wednesday, mid-month.
const CLOCK: &str = "2024-05-15T10:30:00Z";

const SPEC: &str = "
entities:
  - type: Project
    fields: [name, archived, created_at]
  - type: Sequence
    fields: [code, project, sg_due_1, created_at]
  - type: Asset
    fields: [code, project, shots, created_at]
  - type: Shot
    fields: [code, project, sg_sequence, sg_cut_in, assets, description, created_at]
  - type: Task
    fields: [content, entity, project, start_date, due_date, created_at]
";

/// Instants on both sides of the edges of the windows the reads ask for.
const INSTANTS: &[&str] = &[
    "2024-05-15T10:30:00Z",
    "2024-05-15T10:29:59Z",
    "2024-05-15T10:30:01Z",
    "2024-05-15T09:30:00Z",
    "2024-05-15T09:29:59Z",
    "2024-05-14T10:30:00Z",
    "2024-05-14T10:29:59Z",
    "2024-05-16T10:30:00Z",
    "2024-05-16T10:30:01Z",
    "2024-05-08T10:30:00Z",
    "2024-05-08T10:29:59Z",
    "2024-05-15T00:00:00Z",
    "2024-05-14T23:59:59Z",
    "2024-05-15T23:59:59Z",
    "2024-05-16T00:00:00Z",
    "2024-05-13T00:00:00Z",
    "2024-05-12T23:59:59Z",
    "2024-05-20T00:00:00Z",
    "2024-05-01T00:00:00Z",
    "2024-04-30T23:59:59Z",
    "2024-04-15T10:30:00Z",
    "2024-04-15T10:29:59Z",
    "2024-06-15T10:30:00Z",
    "2024-06-01T00:00:00Z",
    "2024-01-01T00:00:00Z",
    "2023-12-31T23:59:59Z",
    "2023-05-15T10:30:00Z",
    "2025-01-01T00:00:00Z",
];

/// Calendar dates around the same edges; `None` is a null date.
const DAYS: &[Option<&str>] = &[
    Some("2024-05-15"),
    Some("2024-05-14"),
    Some("2024-05-16"),
    Some("2024-05-13"),
    Some("2024-05-12"),
    Some("2024-05-08"),
    Some("2024-05-07"),
    Some("2024-05-22"),
    Some("2024-05-19"),
    Some("2024-05-20"),
    Some("2024-04-30"),
    Some("2024-05-01"),
    Some("2024-06-01"),
    Some("2024-04-15"),
    Some("2024-06-15"),
    Some("2023-12-31"),
    Some("2024-01-01"),
    Some("2025-01-01"),
    None,
];

struct Env {
    site: SiteClient,
    db: Db,
    cat: Catalog,
    now: DateTime<Utc>,
}

/// Creates a row with the given fields (`created_at` included: the site keeps a given one)
/// and checks that the site kept them.
async fn create(site: &SiteClient, ty: &str, data: Value) -> i64 {
    let fields: Vec<Value> = data
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| json!({"field_name": k, "value": v}))
        .collect();
    let out = site
        .call(
            "create",
            json!({"type": ty, "fields": fields, "return_fields": ["id"]}),
        )
        .await
        .unwrap_or_else(|e| panic!("create {ty} {data}: {e}"));
    for (k, v) in data.as_object().unwrap() {
        if !v.is_object() && !v.is_array() {
            assert_eq!(&out[k], v, "{ty}.{k} kept as given");
        }
    }
    out["id"].as_i64().unwrap()
}

/// Rows with the shapes the reads probe: nulls, empty lists, links of other types, links to
/// rows retired afterwards, mixed-case codes and dates around every window edge.
async fn seed(site: &SiteClient) {
    let link = |t: &str, id: i64| json!({"type": t, "id": id});
    let p1 = create(
        site,
        "Project",
        json!({"name": "Shapes", "created_at": INSTANTS[3]}),
    )
    .await;
    let p2 = create(
        site,
        "Project",
        json!({"name": "Other", "created_at": INSTANTS[20]}),
    )
    .await;
    let projects = [Some(p1), Some(p2), None];
    let mut seqs = Vec::new();
    for i in 0..5 {
        let mut d = json!({"code": format!("{}q{i:02}", if i % 2 == 0 { "S" } else { "s" }),
                           "created_at": INSTANTS[(i * 5) % INSTANTS.len()]});
        if let Some(p) = projects[i % 3] {
            d["project"] = link("Project", p);
        }
        if let Some(day) = DAYS[(i * 4) % DAYS.len()] {
            d["sg_due_1"] = json!(day);
        }
        seqs.push(create(site, "Sequence", d).await);
    }
    let mut assets = Vec::new();
    for i in 0..6 {
        let mut d = json!({"code": format!("{}sset{i}", if i % 2 == 0 { "A" } else { "a" }),
                           "created_at": INSTANTS[(i * 7 + 2) % INSTANTS.len()]});
        if let Some(p) = projects[(i + 1) % 3] {
            d["project"] = link("Project", p);
        }
        assets.push(create(site, "Asset", d).await);
    }
    let asset_lists: [&[usize]; 6] = [&[], &[0], &[0, 1], &[5, 2], &[3, 1, 0], &[4]];
    let mut shots = Vec::new();
    for (i, at) in INSTANTS.iter().enumerate() {
        let mut d = json!({
            "code": format!("{}h{i:03}", if i % 3 == 0 { "S" } else { "s" }),
            "created_at": at,
            "assets": asset_lists[i % 6].iter().map(|&a| link("Asset", assets[a])).collect::<Vec<_>>(),
        });
        if i % 6 != 5 {
            d["sg_sequence"] = link("Sequence", seqs[i % 5]);
        }
        if i % 4 != 3 {
            d["sg_cut_in"] = json!((i as i64 * 7) % 20);
        }
        if let Some(p) = projects[i % 3] {
            d["project"] = link("Project", p);
        }
        if i % 5 == 0 {
            d["description"] = json!(format!("Take {i}"));
        }
        shots.push(create(site, "Shot", d).await);
    }
    for (i, day) in DAYS.iter().enumerate() {
        let mut d = json!({"content": format!("{}ask {i}", if i % 2 == 0 { "T" } else { "t" }),
                           "created_at": INSTANTS[(i * 3 + 1) % INSTANTS.len()]});
        match i % 4 {
            0 => d["entity"] = link("Shot", shots[i % shots.len()]),
            1 => d["entity"] = link("Asset", assets[i % assets.len()]),
            2 => d["entity"] = link("Sequence", seqs[i % seqs.len()]),
            _ => {}
        }
        if let Some(day) = day {
            d["due_date"] = json!(day);
        }
        if let Some(start) = DAYS[(i + 3) % DAYS.len()] {
            d["start_date"] = json!(start);
        }
        if let Some(p) = projects[(i + 2) % 3] {
            d["project"] = link("Project", p);
        }
        create(site, "Task", d).await;
    }
    // Retired link targets: a sequence, an asset and a shot that others still link to.
    for (ty, id) in [
        ("Sequence", seqs[4]),
        ("Asset", assets[5]),
        ("Shot", shots[0]),
    ] {
        site.call("delete", json!({"type": ty, "id": id}))
            .await
            .unwrap_or_else(|e| panic!("delete {ty} {id}: {e}"));
    }
}

async fn setup(db: TestDb) -> (SimHandle, TestDb, Env) {
    let sim_config = SimConfig {
        clock: Some(CLOCK.into()),
        seed: shotgun_sim::SeedConfig {
            scale: 10,
            ..Default::default()
        },
        ..Default::default()
    };
    let sim = shotgun_sim::start(sim_config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let site = site_client(sim.url());
    seed(&site).await;
    let spec = ShotgunCacheSpec::from_yaml(SPEC, "test").unwrap();
    let schema = site.schema().await.unwrap();
    sgcache::storage::migrate(&db.db, &spec, &schema, PlanOptions::default())
        .await
        .unwrap();
    sgcache_tests::loader::load_all(&db.db, &site)
        .await
        .unwrap();
    let cat = Catalog::load(&db.db).await.unwrap();
    let env = Env {
        site,
        db: db.db.clone(),
        cat,
        now: DateTime::parse_from_rfc3339(CLOCK).unwrap().to_utc(),
    };
    (sim, db, env)
}

// ---- generated reads ----------------------------------------------------------------------

fn pick<T: Clone + std::fmt::Debug + 'static>(v: &[T]) -> impl Strategy<Value = T> {
    prop::sample::select(v.to_vec())
}

fn text_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => pick(&["sq00", "SQ01", "s", "q0", "asset1", "ASSET", "sh00", "h01", "shapes", "other", "task 1", "take", ""]).prop_map(Value::from),
        1 => Just(Value::Null),
    ]
}

fn link_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (pick(&["Sequence", "Asset", "Shot", "Project"]), 1i64..12).prop_map(|(t, id)| json!({"type": t, "id": id})),
        1 => Just(Value::Null),
    ]
}

fn relative_date() -> impl Strategy<Value = (String, Value)> {
    let count_unit = (
        pick(&["in_last", "not_in_last", "in_next", "not_in_next"]),
        -1i64..3,
        pick(&["HOUR", "DAY", "day", "WEEK", "MONTH", "YEAR"]),
        any::<bool>(),
    )
        .prop_map(|(r, n, u, short)| {
            let v = if short { json!([n]) } else { json!([n, u]) };
            (r.to_string(), v)
        });
    let calendar = (
        pick(&[
            "in_calendar_day",
            "in_calendar_week",
            "in_calendar_month",
            "in_calendar_year",
        ]),
        -2i64..3,
    )
        .prop_map(|(r, k)| (r.to_string(), json!([k])));
    prop_oneof![count_unit, calendar]
}

/// Date and date_time paths per type, one hop or more.
fn date_paths(ty: &str) -> Vec<&'static str> {
    match ty {
        "Shot" => vec![
            "created_at",
            "sg_sequence.Sequence.sg_due_1",
            "sg_sequence.Sequence.created_at",
            "sg_sequence.Sequence.project.Project.created_at",
            "assets.Asset.created_at",
            "assets.Asset.project.Project.created_at",
        ],
        "Task" => vec![
            "due_date",
            "start_date",
            "created_at",
            "entity.Shot.created_at",
            "entity.Shot.sg_sequence.Sequence.sg_due_1",
            "entity.Asset.shots.Shot.created_at",
        ],
        "Asset" => vec![
            "created_at",
            "shots.Shot.created_at",
            "shots.Shot.sg_sequence.Sequence.sg_due_1",
        ],
        _ => vec!["created_at", "sg_due_1", "project.Project.created_at"],
    }
}

fn text_paths(ty: &str) -> Vec<&'static str> {
    match ty {
        "Shot" => vec![
            "code",
            "description",
            "sg_sequence.Sequence.code",
            "sg_sequence.Sequence.project.Project.name",
            "assets.Asset.code",
            "assets.Asset.project.Project.name",
            "assets.Asset.shots.Shot.code",
        ],
        "Task" => vec![
            "content",
            "entity.Shot.code",
            "entity.Shot.sg_sequence.Sequence.code",
            "entity.Asset.shots.Shot.sg_sequence.Sequence.code",
            "entity.Sequence.project.Project.name",
        ],
        "Asset" => vec![
            "code",
            "shots.Shot.code",
            "shots.Shot.sg_sequence.Sequence.code",
        ],
        _ => vec!["code", "project.Project.name"],
    }
}

fn number_paths(ty: &str) -> Vec<&'static str> {
    match ty {
        "Shot" => vec![
            "id",
            "sg_cut_in",
            "sg_sequence.Sequence.id",
            "assets.Asset.id",
            "assets.Asset.shots.Shot.sg_cut_in",
        ],
        "Task" => vec![
            "id",
            "entity.Shot.sg_cut_in",
            "entity.Shot.sg_sequence.Sequence.id",
            "entity.Asset.shots.Shot.sg_cut_in",
        ],
        "Asset" => vec![
            "id",
            "shots.Shot.sg_cut_in",
            "shots.Shot.sg_sequence.Sequence.id",
        ],
        _ => vec!["id", "project.Project.id"],
    }
}

fn link_paths(ty: &str) -> Vec<&'static str> {
    match ty {
        "Shot" => vec![
            "sg_sequence",
            "project",
            "assets",
            "sg_sequence.Sequence.project",
            "assets.Asset.project",
            "assets.Asset.shots",
        ],
        "Task" => vec![
            "entity",
            "project",
            "entity.Shot.sg_sequence",
            "entity.Shot.assets",
            "entity.Asset.shots.Shot.sg_sequence",
        ],
        "Asset" => vec![
            "shots",
            "project",
            "shots.Shot.sg_sequence",
            "shots.Shot.sg_sequence.Sequence.project",
        ],
        _ => vec!["project", "project.Project.archived"],
    }
}

fn condition(ty: &'static str) -> BoxedStrategy<Value> {
    let cond = |p: &str, r: &str, v: Value| json!({"path": p, "relation": r, "values": v});
    let dates =
        (pick(&date_paths(ty)), relative_date()).prop_map(move |(p, (r, v))| cond(p, &r, v));
    let date_cmp = (
        pick(&date_paths(ty)),
        pick(&[
            "is",
            "is_not",
            "less_than",
            "greater_than",
            "between",
            "not_between",
        ]),
        pick(INSTANTS),
    )
        .prop_map(move |(p, r, at)| {
            let day = &at[..10];
            let v = if p.ends_with("date") || p.ends_with("sg_due_1") {
                day
            } else {
                at
            };
            match r {
                "between" | "not_between" => cond(
                    p,
                    r,
                    json!([
                        v,
                        if v.len() == 10 {
                            "2024-05-16"
                        } else {
                            "2024-05-16T00:00:00Z"
                        }
                    ]),
                ),
                _ => cond(p, r, json!([v])),
            }
        });
    let texts = (
        pick(&text_paths(ty)),
        pick(&[
            "is",
            "is_not",
            "in",
            "not_in",
            "contains",
            "not_contains",
            "starts_with",
            "ends_with",
        ]),
        prop::collection::vec(text_value(), 1..3),
    )
        .prop_map(move |(p, r, mut v)| {
            if !r.ends_with("in") {
                v.truncate(1);
            }
            cond(p, r, json!(v))
        });
    let numbers = (
        pick(&number_paths(ty)),
        pick(&[
            "is",
            "is_not",
            "in",
            "not_in",
            "less_than",
            "greater_than",
            "between",
            "not_between",
        ]),
        prop::collection::vec(
            prop_oneof![5 => (0i64..20).prop_map(Value::from), 1 => Just(Value::Null)],
            1..3,
        ),
    )
        .prop_map(move |(p, r, mut v)| {
            match r {
                "in" | "not_in" => {}
                "between" | "not_between" => {
                    v.resize(2, json!(10));
                    if v.iter().any(Value::is_null) {
                        v = vec![json!(3), json!(12)];
                    }
                }
                // Both refuse a null bound; a number gets the read compared.
                "less_than" | "greater_than" if v[0].is_null() => v = vec![json!(5)],
                _ => v.truncate(1),
            }
            cond(p, r, json!(v))
        });
    let links = (
        pick(&link_paths(ty)),
        pick(&[
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
        ]),
        prop::collection::vec(link_value(), 1..3),
        text_value(),
        pick(&["Sequence", "Asset", "Shot", "Project"]),
    )
        .prop_map(move |(p, r, mut v, text, t)| {
            if p.ends_with("archived") {
                return cond(
                    p,
                    if r.contains("not") { "is_not" } else { "is" },
                    json!([true]),
                );
            }
            match r {
                "in" | "not_in" => cond(p, r, json!(v)),
                "type_is" | "type_is_not" => cond(
                    p,
                    r,
                    json!([if text.is_null() {
                        Value::Null
                    } else {
                        json!(t)
                    }]),
                ),
                r if r.starts_with("name_") => cond(p, r, json!([text])),
                _ => {
                    v.truncate(1);
                    cond(p, r, json!(v))
                }
            }
        });
    prop_oneof![4 => dates, 2 => date_cmp, 2 => texts, 2 => numbers, 3 => links].boxed()
}

fn filter(ty: &'static str) -> impl Strategy<Value = Value> {
    let leaf = condition(ty);
    prop_oneof![
        3 => leaf.clone().prop_map(|c| json!({"logical_operator": "and", "conditions": [c]})),
        2 => (pick(&["and", "or"]), prop::collection::vec(leaf, 1..4))
            .prop_map(|(op, c)| json!({"logical_operator": op, "conditions": c})),
    ]
}

fn return_fields(ty: &str) -> Vec<&'static str> {
    match ty {
        "Shot" => vec![
            "code",
            "created_at",
            "sg_cut_in",
            "sg_sequence",
            "assets",
            "sg_sequence.Sequence.code",
            "sg_sequence.Sequence.project.Project.name",
            "sg_sequence.Sequence.project",
            "assets.Asset.code",
            "assets.Asset.project",
            "assets.Asset.created_at",
            "assets.Asset.project.Project.name",
            "assets.Asset.id",
        ],
        "Task" => vec![
            "content",
            "due_date",
            "start_date",
            "entity",
            "entity.Shot.code",
            "entity.Shot.sg_sequence.Sequence.code",
            "entity.Shot.sg_sequence.Sequence.sg_due_1",
            "entity.Asset.project.Project.created_at",
        ],
        "Asset" => vec![
            "code",
            "shots",
            "shots.Shot.code",
            "shots.Shot.created_at",
            "shots.Shot.sg_sequence",
            "shots.Shot.sg_sequence.Sequence.code",
            "project.Project.name",
        ],
        _ => vec![
            "code",
            "sg_due_1",
            "project",
            "project.Project.name",
            "project.Project.archived",
        ],
    }
}

fn read_for(ty: &'static str) -> impl Strategy<Value = Value> {
    (
        filter(ty),
        prop::sample::subsequence(return_fields(ty), 0..4),
        prop_oneof![
            3 => Just(vec![]),
            1 => Just(vec![("created_at", "desc")]),
            1 => Just(vec![("id", "desc")]),
        ],
        prop::option::of((1u64..6, 1u64..4)),
    )
        .prop_map(move |(filters, fields, sorts, paging)| {
            let mut p = json!({
                "type": ty,
                "filters": filters,
                "return_fields": fields,
                "sorts": sorts.iter().map(|(f, d)| json!({"field_name": f, "direction": d})).collect::<Vec<_>>(),
                "return_paging_info_without_counts": true,
            });
            if let Some((per, page)) = paging {
                p["paging"] = json!({"entities_per_page": per, "current_page": page});
            }
            p
        })
}

fn read() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => read_for("Shot"),
        3 => read_for("Task"),
        2 => read_for("Asset"),
        1 => read_for("Sequence"),
    ]
}

// ---- the comparison -----------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    answered: AtomicUsize,
    /// Answers with at least one entity (and how many entities those held).
    non_empty: AtomicUsize,
    entities: AtomicUsize,
    passed: AtomicUsize,
    classes: std::sync::Mutex<BTreeMap<TrustClass, usize>>,
}

/// Plans the read for the cache on the site's clock; when the cache answers, the site must
/// answer the same.
async fn check(env: &Env, tally: &Tally, payload: Value) -> Result<(), TestCaseError> {
    let req = ReadRequest::parse(&payload).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    let plan = match plan_read_at(&req, &env.cat, env.db.dialect(), env.now) {
        Ok(plan) => plan,
        Err(_) => {
            tally.passed.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
    };
    let cached = match plan.run(&env.db).await {
        Ok(v) => v,
        Err(e) if e.reason == sgcache::query::Reason::Database => {
            return Err(TestCaseError::fail(format!(
                "{payload}: the statement failed: {}",
                plan.sql.text
            )));
        }
        Err(_) => {
            tally.passed.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
    };
    let site = env.site.call("read", payload.clone()).await.map_err(|e| {
        TestCaseError::fail(format!(
            "{payload}: the cache answered, the site refused: {e}"
        ))
    })?;
    prop_assert_eq!(&cached, &site, "{} (classes {:?})", payload, plan.classes);
    tally.answered.fetch_add(1, Ordering::Relaxed);
    let n = cached["entities"].as_array().map_or(0, Vec::len);
    if n > 0 {
        tally.non_empty.fetch_add(1, Ordering::Relaxed);
        tally.entities.fetch_add(n, Ordering::Relaxed);
    }
    let mut classes = tally.classes.lock().unwrap();
    for c in &plan.classes {
        *classes.entry(*c).or_default() += 1;
    }
    Ok(())
}

/// Every relative-date relation, count and unit on the date and date_time fields, so each
/// window edge of the seeded rows is compared whatever the generator draws.
fn edge_reads() -> Vec<Value> {
    let mut out = Vec::new();
    let mut push = |ty: &str, path: &str, rel: &str, values: Value| {
        out.push(json!({
            "type": ty,
            "filters": {"logical_operator": "and", "conditions": [{"path": path, "relation": rel, "values": values}]},
            "return_fields": [path],
            "sorts": [{"field_name": "id", "direction": "asc"}],
        }));
    };
    for (ty, path) in [
        ("Shot", "created_at"),
        ("Task", "due_date"),
        ("Task", "entity.Shot.created_at"),
        ("Shot", "assets.Asset.created_at"),
    ] {
        for rel in ["in_last", "not_in_last", "in_next", "not_in_next"] {
            for n in [0, 1, 2, 7] {
                for unit in ["HOUR", "DAY", "WEEK", "MONTH", "YEAR"] {
                    push(ty, path, rel, json!([n, unit]));
                }
                push(ty, path, rel, json!([n]));
            }
        }
        for rel in [
            "in_calendar_day",
            "in_calendar_week",
            "in_calendar_month",
            "in_calendar_year",
        ] {
            for k in -2..=2 {
                push(ty, path, rel, json!([k]));
            }
        }
    }
    out
}

fn run(db: impl std::future::Future<Output = anyhow::Result<TestDb>>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (sim, db, env) = rt.block_on(async { setup(db.await.unwrap()).await });
    let tally = Tally::default();
    let edges = rt.block_on(async {
        for payload in edge_reads() {
            check(&env, &tally, payload).await?;
        }
        Ok::<(), TestCaseError>(())
    });
    if let Err(e) = edges {
        rt.block_on(async {
            db.drop().await;
            sim.shutdown().await;
        });
        panic!("{e}");
    }
    let mut runner = TestRunner::new(Config {
        cases: 600,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&read(), |payload| rt.block_on(check(&env, &tally, payload)));
    rt.block_on(async {
        db.drop().await;
        sim.shutdown().await;
    });
    result.unwrap();
    let answered = tally.answered.load(Ordering::Relaxed);
    let passed = tally.passed.load(Ordering::Relaxed);
    let non_empty = tally.non_empty.load(Ordering::Relaxed);
    let entities = tally.entities.load(Ordering::Relaxed);
    let classes = tally.classes.lock().unwrap().clone();
    eprintln!(
        "answered {answered} ({non_empty} with {entities} entities), passed through {passed}; classes {classes:?}"
    );
    // The comparison must have covered the shapes, not only passed them through, and on
    // answers that hold rows.
    assert!(
        answered >= 200,
        "only {answered} reads answered by the cache"
    );
    assert!(
        non_empty >= answered / 3,
        "only {non_empty} answers hold rows"
    );
    for class in [
        TrustClass::InLast,
        TrustClass::InNext,
        TrustClass::InCalendarDay,
        TrustClass::InCalendarWeek,
        TrustClass::InCalendarMonth,
        TrustClass::InCalendarYear,
        TrustClass::MultiHop,
        TrustClass::MultiEntityReturn,
        TrustClass::NegationNull,
        TrustClass::NegationMultiEntity,
    ] {
        assert!(
            classes.get(&class).copied().unwrap_or(0) >= 3,
            "{class} compared {classes:?}"
        );
    }
}

#[test]
fn shapes_answer_as_the_site_on_postgres() {
    run(TestDb::create("sgcache_shapes"));
}

#[test]
fn shapes_answer_as_the_site_on_sqlite() {
    run(TestDb::sqlite());
}
