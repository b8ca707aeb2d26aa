//! The translator's sorts, case-insensitive text (non-ASCII included) and tag-list relations
//! against the test site's own evaluator: generated data (nulls, mixed case, non-ASCII, equal
//! sort keys, retired link targets) is written to the site over HTTP and loaded into a
//! PostgreSQL and a SQLite cache; generated reads are planned on each cache at the site's clock
//! and must give exactly the site's `results` (order included), or pass through.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use sgcache::api3::ReadRequest;
use sgcache::plan::PlanOptions;
use sgcache::query::{plan_read_at, Catalog};
use sgcache::site::SiteClient;
use sgcache::sql::Db;
use sgcache::ShotgunCacheSpec;
use sgcache_tests::pg::TestDb;
use sgcache_tests::proxy::site_client;
use shotgun_sim::{SeedConfig, SimConfig};

const SPEC: &str = "
entities:
  - type: Project
    fields: [name, archived]
  - type: Sequence
    fields: [code]
  - type: Asset
    fields: [code]
  - type: Shot
    fields: [code, description, sg_status_list, sg_sequence, assets, tag_list, sg_cut_in, project]
";

/// The site's fixed clock (the translator plans at the site's time).
const CLOCK: &str = "2026-03-04T05:06:07Z";

const STATUSES: &[&str] = &["cbb", "fin", "ip", "omt", "hld", "rdy", "wtg"];

/// Text where case folding and code point order matter: mixed case, `ß`, final sigma, `İ`
/// (lower case `i̇`), KELVIN SIGN (lower case `k`), LIKE wildcards.
const WORDS: &[&str] = &[
    "sh010",
    "SH010",
    "Sh020",
    "éclair",
    "Éclair",
    "ÉCLAIR",
    "straße",
    "STRASSE",
    "ΟΔΟΣ",
    "οδος",
    "οδός",
    "İstanbul",
    "istanbul",
    "\u{212A}elvin",
    "kelvin",
    "Åland",
    "_x",
    "a b",
    "zebra",
    "Zebra",
    "ab%",
    "ä",
    "Z",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(WORDS).prop_map(str::to_string),
        2 => "[aAbBzZéÉΣσςİ\u{212A}kK_ %]{1,4}",
    ]
}

fn text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![4 => word().prop_map(Some), 1 => Just(Some(String::new())), 2 => Just(None)]
}

#[derive(Clone, Debug)]
struct ShotData {
    code: Option<String>,
    description: Option<String>,
    status: Option<&'static str>,
    sequence: Option<usize>,
    assets: Vec<usize>,
    tags: Vec<String>,
    cut_in: Option<i64>,
}

#[derive(Clone, Debug)]
struct Data {
    sequences: Vec<Option<String>>,
    assets: Vec<Option<String>>,
    shots: Vec<ShotData>,
    retired_sequences: Vec<usize>,
    retired_assets: Vec<usize>,
    retired_shots: Vec<usize>,
}

fn data() -> impl Strategy<Value = Data> {
    let shot = (
        text(),
        text(),
        prop::option::of(prop::sample::select(STATUSES)),
        prop::option::of(0usize..6),
        prop::collection::vec(0usize..6, 0..4),
        prop::collection::vec(word(), 0..3),
        prop::option::of(0i64..4),
    )
        .prop_map(
            |(code, description, status, sequence, assets, tags, cut_in)| ShotData {
                code,
                description,
                status,
                sequence,
                assets,
                tags,
                cut_in,
            },
        );
    (
        prop::collection::vec(text(), 6),
        prop::collection::vec(text(), 6),
        prop::collection::vec(shot, 10..24),
        prop::collection::vec(0usize..6, 1..3),
        prop::collection::vec(0usize..6, 1..3),
        prop::collection::vec(0usize..24, 0..3),
    )
        .prop_map(|(sequences, assets, shots, rs, ra, rsh)| Data {
            sequences,
            assets,
            shots,
            retired_sequences: rs,
            retired_assets: ra,
            retired_shots: rsh,
        })
}

/// A filter value in any case, sometimes null.
fn needle() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => word().prop_map(Value::from),
        2 => (word(), any::<bool>()).prop_map(|(w, up)| Value::from(if up { w.to_uppercase() } else { w.to_lowercase() })),
        1 => Just(Value::Null),
    ]
}

fn condition() -> impl Strategy<Value = Value> {
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
    const NAME: &[&str] = &[
        "name_is",
        "name_contains",
        "name_not_contains",
        "name_starts_with",
        "name_ends_with",
    ];
    const TAG: &[&str] = &["is", "is_not", "name_contains", "name_not_contains"];
    let status = prop_oneof![
        4 => prop::sample::select(STATUSES).prop_map(|s| Value::from(s.to_uppercase())),
        4 => prop::sample::select(STATUSES).prop_map(Value::from),
        1 => Just(Value::Null),
    ];
    prop_oneof![
        (
            prop::sample::select(vec!["code", "description"]),
            prop::sample::select(TEXT),
            prop::collection::vec(needle(), 1..3)
        ),
        (
            Just("sg_status_list"),
            prop::sample::select(vec!["is", "is_not", "in", "not_in"]),
            prop::collection::vec(status, 1..3)
        ),
        (
            prop::sample::select(vec!["sg_sequence", "assets"]),
            prop::sample::select(NAME),
            prop::collection::vec(word().prop_map(Value::from), 1..2)
        ),
        (
            Just("tag_list"),
            prop::sample::select(TAG),
            prop::collection::vec(needle(), 1..2)
        ),
        (
            Just("sg_cut_in"),
            prop::sample::select(vec!["is", "greater_than", "not_in"]),
            prop::collection::vec((0i64..4).prop_map(Value::from), 1..2)
        ),
    ]
    .prop_map(|(p, r, mut v)| {
        if !matches!(r, "in" | "not_in") {
            v.truncate(1);
        }
        json!({"path": p, "relation": r, "values": v})
    })
}

fn read() -> impl Strategy<Value = Value> {
    let sort = (
        prop::sample::select(vec![
            "code",
            "description",
            "sg_status_list",
            "sg_sequence",
            "assets",
            "sg_cut_in",
            "id",
            "sg_sequence.Sequence.code",
            "sg_sequence.Sequence.id",
        ]),
        prop::sample::select(vec!["asc", "desc"]),
    )
        .prop_map(|(f, d)| json!({"field_name": f, "direction": d}));
    (
        prop::collection::vec(condition(), 0..3),
        any::<bool>(),
        prop::collection::vec(sort, 0..3),
        prop::option::of((1u64..6, 1u64..4)),
        any::<(bool, bool)>(),
    )
        .prop_map(|(conds, or, sorts, paging, (counted, links))| {
            let mut fields = vec!["code", "description", "sg_status_list", "tag_list", "sg_cut_in"];
            if links {
                fields.extend(["sg_sequence", "assets"]);
            }
            let mut p = json!({
                "type": "Shot",
                // An empty "or" group is the site's to judge; the cache passes it through.
                "filters": {"logical_operator": if or && !conds.is_empty() { "or" } else { "and" }, "conditions": conds},
                "return_fields": fields,
                "sorts": sorts,
            });
            if let Some((per, page)) = paging {
                p["paging"] = json!({"entities_per_page": per, "current_page": page});
            }
            p[if counted {
                "return_paging_info"
            } else {
                "return_paging_info_without_counts"
            }] = json!(true);
            p
        })
}

async fn create(site: &SiteClient, ty: &str, fields: Vec<(&str, Value)>) -> i64 {
    let fields: Vec<Value> = fields
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| json!({"field_name": k, "value": v}))
        .collect();
    let out = site
        .call(
            "create",
            json!({"type": ty, "fields": fields, "return_fields": ["id"]}),
        )
        .await
        .unwrap_or_else(|e| panic!("create {ty}: {e}"));
    out["id"].as_i64().unwrap()
}

/// Writes the data to the site, in a project of its own, then retires some of it.
async fn seed(site: &SiteClient, d: &Data) {
    let project = create(site, "Project", vec![("name", json!("Sorts"))]).await;
    let project = json!({"type": "Project", "id": project});
    let mut sequences = Vec::new();
    for code in &d.sequences {
        let id = create(
            site,
            "Sequence",
            vec![("code", json!(code)), ("project", project.clone())],
        )
        .await;
        sequences.push(id);
    }
    let mut assets = Vec::new();
    for code in &d.assets {
        let id = create(
            site,
            "Asset",
            vec![("code", json!(code)), ("project", project.clone())],
        )
        .await;
        assets.push(id);
    }
    let mut shots = Vec::new();
    for s in &d.shots {
        let mut linked: Vec<usize> = Vec::new();
        for a in &s.assets {
            if !linked.contains(a) {
                linked.push(*a);
            }
        }
        let id = create(
            site,
            "Shot",
            vec![
                ("code", json!(s.code)),
                ("description", json!(s.description)),
                ("sg_status_list", json!(s.status)),
                (
                    "sg_sequence",
                    s.sequence
                        .map(|i| json!({"type": "Sequence", "id": sequences[i]}))
                        .unwrap_or(Value::Null),
                ),
                (
                    "assets",
                    Value::Array(
                        linked
                            .iter()
                            .map(|i| json!({"type": "Asset", "id": assets[*i]}))
                            .collect(),
                    ),
                ),
                ("tag_list", json!(s.tags)),
                ("sg_cut_in", json!(s.cut_in)),
                ("project", project.clone()),
            ],
        )
        .await;
        shots.push(id);
    }
    let mut done = std::collections::BTreeSet::new();
    for i in &d.retired_sequences {
        if done.insert(("Sequence", sequences[*i])) {
            retire(site, "Sequence", sequences[*i]).await;
        }
    }
    for i in &d.retired_assets {
        if done.insert(("Asset", assets[*i])) {
            retire(site, "Asset", assets[*i]).await;
        }
    }
    for i in &d.retired_shots {
        if let Some(id) = shots.get(*i) {
            if done.insert(("Shot", *id)) {
                retire(site, "Shot", *id).await;
            }
        }
    }
}

async fn retire(site: &SiteClient, ty: &str, id: i64) {
    site.call("delete", json!({"type": ty, "id": id}))
        .await
        .unwrap();
}

/// A cache of the site's current data.
async fn cache(db: &Db, site: &SiteClient) -> Catalog {
    let spec = ShotgunCacheSpec::from_yaml(SPEC, "test").unwrap();
    let schema = site.schema().await.unwrap();
    sgcache::storage::migrate(db, &spec, &schema, PlanOptions::default())
        .await
        .unwrap();
    sgcache_tests::loader::load_all(db, site).await.unwrap();
    Catalog::load(db).await.unwrap()
}

/// How many reads were answered from each cache, and per inferred class.
#[derive(Default, Debug)]
struct Tally {
    answered: BTreeMap<&'static str, u32>,
    passed: BTreeMap<String, u32>,
}

#[test]
fn sorts_text_and_tag_lists_answer_as_the_site() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let now = chrono::DateTime::parse_from_rfc3339(CLOCK)
        .unwrap()
        .with_timezone(&chrono::Utc);
    let mut tally = Tally::default();
    let mut data_runner = TestRunner::new(Config::default());
    for _ in 0..3 {
        let d = data().new_tree(&mut data_runner).unwrap().current();
        let sim = rt
            .block_on(shotgun_sim::start(
                SimConfig {
                    seed: SeedConfig {
                        scale: 10,
                        ..SeedConfig::default()
                    },
                    clock: Some(CLOCK.into()),
                    ..SimConfig::default()
                },
                "127.0.0.1:0".parse().unwrap(),
            ))
            .unwrap();
        let site = site_client(sim.url());
        rt.block_on(seed(&site, &d));
        let pg = rt.block_on(TestDb::create("sgcache_sorts")).unwrap();
        let lite = rt.block_on(TestDb::sqlite()).unwrap();
        let caches: Vec<(Db, Catalog)> = [&pg, &lite]
            .into_iter()
            .map(|t| (t.db.clone(), rt.block_on(cache(&t.db, &site))))
            .collect();
        let tally_cell = std::cell::RefCell::new(&mut tally);
        let mut runner = TestRunner::new(Config::with_cases(96));
        runner
            .run(&read(), |payload| {
                let want = rt.block_on(site.call("read", payload.clone()));
                let req = ReadRequest::parse(&payload).unwrap();
                for (db, cat) in &caches {
                    let dialect = db.dialect();
                    let plan = plan_read_at(&req, cat, dialect, now);
                    let got = match plan {
                        Ok(p) => rt.block_on(p.run(db)).map(|v| (v, p.classes.clone())),
                        Err(e) => Err(e),
                    };
                    let mut t = tally_cell.borrow_mut();
                    match (&want, got) {
                        (Ok(want), Ok((got, classes))) => {
                            prop_assert_eq!(
                                &got,
                                want,
                                "{:?} answered differently from the site: {}",
                                dialect,
                                payload
                            );
                            *t.answered.entry("all").or_default() += 1;
                            for c in classes {
                                *t.answered.entry(c.name()).or_default() += 1;
                            }
                        }
                        (Err(e), Ok(_)) => {
                            prop_assert!(
                                false,
                                "the site refused {} ({}) but {:?} answered",
                                payload,
                                e,
                                dialect
                            );
                        }
                        (_, Err(pt)) => {
                            *t.passed.entry(pt.to_string()).or_default() += 1;
                        }
                    }
                }
                Ok(())
            })
            .unwrap();
        rt.block_on(pg.drop());
        rt.block_on(lite.drop());
        rt.block_on(sim.shutdown());
    }
    eprintln!("{tally:#?}");
    // Every shape was answered from the caches, not only passed through.
    for class in [
        "all",
        "sort:text",
        "sort:list",
        "sort:entity",
        "sort:multi_entity",
        "text:non_ascii",
        "relation:tag_list",
    ] {
        let n = tally.answered.get(class).copied().unwrap_or(0);
        assert!(
            n >= 10,
            "only {n} reads of {class} were answered: {tally:#?}"
        );
    }
}
