//! Link targets implied by links, through the real proxy: a declared link to a type the spec
//! does not list is answered from the cache (the type is cached with its display field), kept
//! current by the follower like a listed type, and passes through when the spec opts out. And
//! every example in `examples/` is served: each listed type's declared fields, read through
//! the proxy from a cache the examples' spec made, come from the cache and equal the site's.

use crate::freshness_common;

use std::path::PathBuf;
use std::time::Duration;

use freshness_common::*;
use serde_json::{json, Value};
use sgcache::plan::{DbState, PlanOptions};
use sgcache::ShotgunCacheSpec;
use sgcache_tests::pg::TestDb;
use sgcache_tests::proxy::{script_auth, site_client, Harness};
use shotgun_sim::SimConfig;
use tokio_util::sync::CancellationToken;

const WORKERS: &str = "  events:\n    pollInterval: 500ms\n    gapWindow: 30s\n  scanner:\n    interval: 2s\n    overlap: 5s\n    pageSize: 200";

fn shots_with_sequences() -> Value {
    json!({"type": "Shot", "filters": {"logical_operator": "and", "conditions": []},
           "return_fields": ["code", "sg_sequence"],
           "sorts": [{"field_name": "id", "direction": "asc"}],
           "paging": {"entities_per_page": 100, "current_page": 1}})
}

/// A cache of `yaml` (a spec) filled from a fresh test site, and a proxy using it.
async fn cache_of(prefix: &str, yaml: &str) -> (Harness, TestDb) {
    Harness::with_cache(prefix, yaml, |_| {}).await.unwrap()
}

#[tokio::test]
async fn a_declared_link_to_a_type_not_listed_is_answered_from_the_cache() {
    let (h, db) = cache_of(
        "sgcache_links_on",
        "entities:\n  - type: Shot\n    fields: [code, sg_sequence]\n",
    )
    .await;
    let state = sgcache::storage::read_state(&db.db).await.unwrap();
    assert!(
        state.types.contains_key("Sequence"),
        "Sequence is cached, implied by Shot.sg_sequence"
    );
    // The first read verifies the credentials with the site; then from the cache.
    h.proxy("read", script_auth(), shots_with_sequences()).await;
    let (status, path, body) = h.proxy("read", script_auth(), shots_with_sequences()).await;
    let (_, _, direct) = h
        .direct("read", script_auth(), shots_with_sequences())
        .await;
    assert_eq!(status, 200);
    assert_eq!(path.as_deref(), Some("cache"), "{body}");
    assert_eq!(body, direct);
    let named = direct["results"]["entities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["sg_sequence"]["name"].is_string())
        .count();
    assert!(named > 0, "some shot links a sequence by name: {direct}");
    h.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn opting_out_of_implied_targets_passes_such_reads_through() {
    let (h, db) = cache_of(
        "sgcache_links_off",
        "implyLinkTargets: false\nentities:\n  - type: Shot\n    fields: [code, sg_sequence]\n",
    )
    .await;
    h.proxy("read", script_auth(), shots_with_sequences()).await;
    let (_, path, body) = h.proxy("read", script_auth(), shots_with_sequences()).await;
    let (_, _, direct) = h
        .direct("read", script_auth(), shots_with_sequences())
        .await;
    assert_eq!(path.as_deref(), Some("site"));
    assert_eq!(body, direct);
    let metrics = h.metrics().await;
    assert!(
        metrics.lines().any(|l| l.contains("path=\"site\"")
            && l.contains("reason=\"link_name\"")
            && l.contains("method=\"read\"")),
        "counted as link_name"
    );
    h.stop().await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_implied_type_follows_the_site_like_a_listed_one() {
    let env = Env::start(
        "sgcache_links_fresh",
        20,
        "\n  - type: Shot\n    fields: [code, sg_sequence]",
        WORKERS,
    )
    .await;
    let stop = CancellationToken::new();
    let tasks = run_workers(&env, &stop);
    assert_backfilled(&env).await;
    let (_state, proxy, _task) =
        start_proxy(&env, script_auth().as_object().cloned(), 0.0, &stop).await;
    let http = reqwest::Client::new();
    // A shot linking a sequence.
    let shots = call(&env.writer, "read", shots_with_sequences()).await;
    let shot = shots["entities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sg_sequence"]["id"].is_i64())
        .expect("a shot with a sequence")
        .clone();
    let (shot_id, seq_id) = (
        shot["id"].as_i64().unwrap(),
        shot["sg_sequence"]["id"].as_i64().unwrap(),
    );
    read_field(&http, &proxy, "Shot", shot_id, "sg_sequence").await;
    let (path, link) = read_field(&http, &proxy, "Shot", shot_id, "sg_sequence").await;
    assert_eq!(path, "cache");
    assert_eq!(link["name"], shot["sg_sequence"]["name"]);

    // Renamed on the site: the follower brings the new name, served from the cache.
    update(
        &env.writer,
        "Sequence",
        seq_id,
        json!({"code": "renamed_seq"}),
    )
    .await;
    let renamed = eventually(Duration::from_secs(5), || async {
        let (path, link) = read_field(&http, &proxy, "Shot", shot_id, "sg_sequence").await;
        path == "cache" && link["name"] == "renamed_seq"
    })
    .await;
    assert!(renamed.is_some(), "the implied type followed the rename");

    // Retired on the site: the cache knows (the link is then the site's to render).
    retire(&env.writer, "Sequence", seq_id).await;
    let known = eventually(Duration::from_secs(5), || async {
        cached(&env, "Sequence", seq_id)
            .await
            .is_some_and(|(retired, _)| retired)
    })
    .await;
    assert!(known.is_some(), "the implied type's retirement followed");
    let (path, _) = read_field(&http, &proxy, "Shot", shot_id, "sg_sequence").await;
    assert_eq!(
        path, "site",
        "a link to a retired target is not rendered by the cache"
    );

    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    env.stop().await;
}

/// Every document of `examples/*.yaml` but the invalid one, as (file, spec).
fn examples() -> Vec<(String, ShotgunCacheSpec)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.to_string_lossy().contains("invalid"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in text.split("\n---\n") {
            let value: Value = serde_saphyr::from_str(doc).unwrap();
            if value.is_null() {
                continue;
            }
            let spec = match value["kind"].as_str() {
                Some("ShotgunCache") => value["spec"].clone(),
                _ => value,
            };
            let yaml = serde_saphyr::to_string(&spec).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            out.push((name, ShotgunCacheSpec::from_yaml(&yaml, "example").unwrap()));
        }
    }
    out
}

/// The fields of `ty` a read of its declared fields returns: the named ones, or every
/// stored one for `*`.
fn declared_fields(spec: &ShotgunCacheSpec, state: &DbState, ty: &str) -> Vec<String> {
    let entity = spec.entity(ty).unwrap();
    if entity.all_fields() {
        state
            .live_fields(ty)
            .map(|(n, _)| n.clone())
            .filter(|n| n != "id")
            .collect()
    } else {
        entity.fields.clone()
    }
}

#[tokio::test]
async fn every_examples_declared_reads_are_answered_from_the_cache() {
    let examples = examples();
    assert!(examples.len() >= 2, "{examples:?}");
    for (name, spec) in examples {
        let db = TestDb::create("sgcache_examples").await.unwrap();
        let h = Harness::start(SimConfig::default(), Some(db.db.clone()))
            .await
            .unwrap();
        let site = site_client(h.sim.url());
        let schema = site.schema().await.unwrap();
        let plan = sgcache::storage::migrate(&db.db, &spec, &schema, PlanOptions::default())
            .await
            .unwrap();
        let declared_passed: Vec<String> = plan
            .passed_through
            .iter()
            .filter(|p| p.declared)
            .map(|p| format!("{}.{}: {}", p.entity_type, p.field_name, p.reason))
            .collect();
        assert!(declared_passed.is_empty(), "{name}: {declared_passed:?}");
        assert!(plan.uncovered.is_empty(), "{name}: {:?}", plan.uncovered);
        sgcache_tests::loader::load_all(&db.db, &site)
            .await
            .unwrap();
        h.state.refresh_catalog().await;
        let state = sgcache::storage::read_state(&db.db).await.unwrap();
        let mut with_rows = 0;
        for entity in &spec.entities {
            let ty = &entity.entity_type;
            let read = json!({"type": ty, "filters": {"logical_operator": "and", "conditions": []},
                "return_fields": declared_fields(&spec, &state, ty),
                "sorts": [{"field_name": "id", "direction": "asc"}],
                "paging": {"entities_per_page": 500, "current_page": 1}});
            // The first read of a principal is verified with the site.
            h.proxy("read", script_auth(), read.clone()).await;
            let before = h.site_requests();
            let (status, path, body) = h.proxy("read", script_auth(), read.clone()).await;
            let site_calls = h.site_requests() - before;
            let (_, _, direct) = h.direct("read", script_auth(), read).await;
            assert_eq!(status, 200, "{name} {ty}: {body}");
            assert_eq!(path.as_deref(), Some("cache"), "{name} {ty}");
            assert_eq!(site_calls, 0, "{name} {ty}");
            assert_eq!(body, direct, "{name} {ty}");
            if direct["results"]["entities"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                with_rows += 1;
            }
        }
        assert!(
            with_rows >= 3,
            "{name}: the test site has rows of {with_rows} types"
        );
        h.stop().await;
        db.drop().await;
    }
}
