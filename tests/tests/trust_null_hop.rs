//! The null-through-hop reading (doc 5.4, inferred) earns trust like any other: with every
//! field of ten types cached, random reads through entity hops whose links are null, of
//! another type (rows created by a script: `created_by` is an ApiUser) or to a retired row go
//! through the real proxy with earned trust. On a site that reads the far value as null (the
//! cache's reading) the class `path:null_hop` learns and is then answered from the cache; on
//! a site that reads the far field's default (`null_hop: "default"`: a checkbox is `false`)
//! it is turned off. On both, every answer the proxy gives is the site's answer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use sgcache::api3::ReadRequest;
use sgcache::plan::PlanOptions;
use sgcache::query::plan_read_at;
use sgcache::storage::{self, TrustState};
use sgcache::trust::TrustClass;
use sgcache_tests::pg::TestDb;
use sgcache_tests::proxy::{script_auth, site_client, Harness};
use sgcache_worker::proxy::trust::TrustConfig;
use shotgun_sim::{NullHop, SimConfig};

const SPEC: &str = r#"
entities:
  - {type: Project, fields: ["*"]}
  - {type: Sequence, fields: ["*"]}
  - {type: Shot, fields: ["*"]}
  - {type: Asset, fields: ["*"]}
  - {type: Task, fields: ["*"]}
  - {type: Version, fields: ["*"]}
  - {type: Note, fields: ["*"]}
  - {type: Step, fields: ["*"]}
  - {type: HumanUser, fields: ["*"]}
  - {type: ApiUser, fields: ["*"]}
"#;

const SAMPLES: u32 = 20;

fn learning() -> TrustConfig {
    TrustConfig {
        samples: SAMPLES,
        max_site_rate: 100.0,
        recheck_rate: 0.0,
        pins: BTreeMap::new(),
        confirm_delay: Duration::from_millis(100),
    }
}

/// Conditions through entity hops (type, path, relation, values): checkboxes behind a user
/// link (rows created by the test's script have an ApiUser there), a number and text behind
/// a link to another type (tasks of assets) or none (shots without a sequence), two hops.
fn conditions() -> Vec<(&'static str, &'static str, &'static str, Value)> {
    let mut out = Vec::new();
    for ty in ["Shot", "Task", "Version", "Asset"] {
        for path in [
            "created_by.HumanUser.email_all_notes",
            "updated_by.HumanUser.email_all_tasks",
        ] {
            for (rel, v) in [
                ("is", json!([false])),
                ("is", json!([true])),
                ("is_not", json!([true])),
                ("is_not", json!([false])),
            ] {
                out.push((ty, path, rel, v));
            }
        }
    }
    for (rel, v) in [
        ("is", json!([null])),
        ("is_not", json!([7])),
        ("not_in", json!([1, 2, 3])),
        ("greater_than", json!([10])),
    ] {
        out.push(("Task", "entity.Shot.sg_cut_in", rel, v));
    }
    for (rel, v) in [
        ("is", json!([null])),
        ("not_contains", json!(["1"])),
        ("contains", json!(["sq"])),
        ("is_not", json!(["sq001"])),
    ] {
        out.push(("Shot", "sg_sequence.Sequence.code", rel, v.clone()));
        out.push(("Version", "entity.Shot.sg_sequence.Sequence.code", rel, v));
    }
    out.push(("Version", "sg_task.Task.milestone", "is", json!([false])));
    out.push(("Version", "sg_task.Task.milestone", "is_not", json!([true])));
    out.push((
        "Version",
        "user.HumanUser.email_all_versions",
        "is",
        json!([false]),
    ));
    out
}

fn read() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(conditions()),
        prop::sample::subsequence(
            vec!["created_at", "updated_at", "project", "created_by"],
            0..3,
        ),
        prop_oneof![Just(None), Just(Some("id")), Just(Some("created_at"))],
    )
        .prop_map(|((ty, path, rel, values), fields, sort)| {
            let mut p = json!({
                "type": ty,
                "filters": {"logical_operator": "and", "conditions": [
                    {"path": path, "relation": rel, "values": values}]},
                "return_fields": fields,
                "return_paging_info_without_counts": true,
            });
            if let Some(f) = sort {
                p["sorts"] = json!([{"field_name": f, "direction": "desc"}]);
            }
            p
        })
}

#[derive(Default)]
struct Tally {
    reads: AtomicUsize,
    /// Reads carrying `path:null_hop`, and those of them the cache answered.
    null_hop: AtomicUsize,
    null_hop_cached: AtomicUsize,
}

/// One read through the proxy: its answer must be the site's.
async fn check(h: &Harness, tally: &Tally, payload: Value) -> Result<(), TestCaseError> {
    let (_, path, via) = h.proxy("read", script_auth(), payload.clone()).await;
    let (_, _, site) = h.direct("read", script_auth(), payload.clone()).await;
    prop_assert!(
        site.get("results").is_some(),
        "{payload}: the site refused: {site}"
    );
    prop_assert_eq!(&via, &site, "{} answered from {:?}", payload, path);
    tally.reads.fetch_add(1, Ordering::Relaxed);
    let req = ReadRequest::parse(&payload).unwrap();
    let db = h.state.cache.db().unwrap();
    let plan = plan_read_at(
        &req,
        &h.state.cache.catalog(),
        db.dialect(),
        h.state.upstream.clock.now(),
    );
    if plan.is_ok_and(|p| p.classes.contains(&TrustClass::NullHop)) {
        tally.null_hop.fetch_add(1, Ordering::Relaxed);
        if path.as_deref() == Some("cache") {
            tally.null_hop_cached.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Rows created by the test's script: their `created_by` / `updated_by` are an ApiUser.
async fn script_rows(h: &Harness) {
    for (ty, code) in [("Shot", "code"), ("Asset", "code"), ("Version", "code")] {
        for i in 0..3 {
            let (_, _, r) = h
                .direct(
                    "create",
                    script_auth(),
                    json!({"type": ty, "fields": [
                        {"field_name": code, "value": format!("by_script_{i}")},
                        {"field_name": "project", "value": {"type": "Project", "id": 1}}],
                        "return_fields": ["id"]}),
                )
                .await;
            assert!(r["results"]["id"].is_i64(), "{r}");
        }
    }
}

async fn null_hop_state(db: &TestDb) -> (TrustState, i64) {
    let r = storage::read_trust(&db.db)
        .await
        .unwrap()
        .remove(&TrustClass::NullHop)
        .unwrap_or_default();
    (r.state, r.samples)
}

/// Runs the battery on a site reading missing links as `reading`; returns the tally and the
/// class's final state.
fn battery(reading: NullHop, cases: u32) -> (Tally, TrustState, i64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (h, db) = rt.block_on(async {
        let db = TestDb::create("sgcache_null_hop").await.unwrap();
        let h = Harness::start_with(SimConfig::default(), Some(db.db.clone()), |c| {
            c.trust = learning()
        })
        .await
        .unwrap();
        script_rows(&h).await;
        let site = site_client(h.sim.url());
        let spec = sgcache::ShotgunCacheSpec::from_yaml(SPEC, "test").unwrap();
        let schema = site.schema().await.unwrap();
        storage::migrate(&db.db, &spec, &schema, PlanOptions::default())
            .await
            .unwrap();
        sgcache_tests::loader::load_all(&db.db, &site)
            .await
            .unwrap();
        h.state.refresh_catalog().await;
        h.sim.set_semantics(shotgun_sim::Semantics {
            null_hop: reading,
            ..h.sim.semantics()
        });
        (h, db)
    });
    let tally = Tally::default();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&read(), |payload| rt.block_on(check(&h, &tally, payload)));
    // The last checks end in the background.
    let (state, samples) = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = null_hop_state(&db).await;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = null_hop_state(&db).await;
            if now == last {
                break;
            }
            last = now;
        }
        last
    });
    rt.block_on(async {
        h.stop().await;
        db.drop().await;
    });
    result.unwrap();
    (tally, state, samples)
}

#[test]
fn a_site_reading_missing_links_as_null_earns_the_class() {
    let (tally, state, samples) = battery(NullHop::Null, 200);
    let (reads, hop, cached) = (
        tally.reads.load(Ordering::Relaxed),
        tally.null_hop.load(Ordering::Relaxed),
        tally.null_hop_cached.load(Ordering::Relaxed),
    );
    eprintln!("{reads} reads, {hop} carrying path:null_hop, {cached} of them from the cache; {state} with {samples} samples");
    assert!(
        hop >= 2 * SAMPLES as usize,
        "only {hop} reads carried the class"
    );
    assert_eq!(state, TrustState::Trusted);
    assert!(samples >= SAMPLES as i64);
    assert!(
        cached > 0,
        "the trusted class was never answered from the cache"
    );
}

#[test]
fn a_site_reading_the_far_default_turns_the_class_off() {
    let (tally, state, _) = battery(NullHop::Default, 200);
    let (reads, hop, cached) = (
        tally.reads.load(Ordering::Relaxed),
        tally.null_hop.load(Ordering::Relaxed),
        tally.null_hop_cached.load(Ordering::Relaxed),
    );
    eprintln!(
        "{reads} reads, {hop} carrying path:null_hop, {cached} of them from the cache; {state}"
    );
    assert!(
        hop >= 2 * SAMPLES as usize,
        "only {hop} reads carried the class"
    );
    assert_eq!(state, TrustState::Off);
}
