//! The cache follows the site's schema while it runs (issue 11): a field created on the site
//! (a `Shotgun_DisplayColumn_New` event) under read load is added to a `"*"` type, backfilled
//! and then served from the cache, with every answer equal to the site's meanwhile; a field
//! deleted on the site (no event) stops being served within one `schemaInterval`, whether `"*"`
//! chose it or the spec named it, and the rest of the type is still served from the cache.

use crate::freshness_common;

use std::time::{Duration, Instant};

use freshness_common::*;
use serde_json::{json, Value};
use sgcache::plan::FieldState;
use sgcache_tests::proxy::post;
use tokio_util::sync::CancellationToken;

const STAR: &str = "\n  - type: Shot\n    fields: [\"*\"]\n";

/// Creates a text field on the site; returns its name.
async fn create_field(env: &Env, ty: &str, display: &str) -> String {
    let r = call(
        &env.writer,
        "schema_field_create",
        json!({"type": ty, "data_type": "text",
               "properties": [{"property_name": "name", "value": display}]}),
    )
    .await;
    r.as_str().expect("the new field's name").to_string()
}

async fn delete_field(env: &Env, ty: &str, field: &str) {
    let r = call(
        &env.writer,
        "schema_field_delete",
        json!({"type": ty, "field_name": field}),
    )
    .await;
    assert_eq!(r, json!(true));
}

fn read_body(ty: &str, fields: &[&str]) -> String {
    json!({"method_name": "read", "params": [
        {"script_name": "sgcache_test", "script_key": "test_key"},
        {"type": ty, "filters": {"logical_operator": "and", "conditions": []},
         "return_fields": fields, "sorts": [{"field_name": "id", "direction": "asc"}],
         "paging": {"entities_per_page": 50, "current_page": 1}}]})
    .to_string()
}

/// The answer of the site and of the proxy to the same read, and the proxy's path.
async fn both(env: &Env, proxy: &str, body: &str) -> (Value, Value, String) {
    let http = reqwest::Client::new();
    let site = format!("{}/api3/json", env.sim.url());
    let (_, _, direct) = post(&http, &site, "application/json", body.to_string()).await;
    let via = format!("{proxy}/api3/json");
    let (status, path, proxied) = post(&http, &via, "application/json", body.to_string()).await;
    assert_eq!(status, 200, "the proxy failed a read: {proxied}");
    (direct, proxied, path.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_created_on_the_site_is_backfilled_and_served_without_a_restart() {
    // A long schemaInterval: the DisplayColumn event is what makes the cache follow.
    let workers = "  scanner:\n    interval: 1s\n    overlap: 2s\n    pageSize: 25\n    schemaInterval: 10m\n  events:\n    pollInterval: 200ms";
    let env = Env::start("schema_add", 15, STAR, workers).await;
    let stop = CancellationToken::new();
    let tasks = run_workers(&env, &stop);
    assert_backfilled(&env).await;
    let (_state, proxy, proxy_task) = start_proxy(&env, None, 0.0, &stop).await;

    let field = create_field(&env, "Shot", "Cut Note").await;
    assert_eq!(field, "sg_cut_note");
    let shots = call(
        &env.writer,
        "read",
        json!({"type": "Shot", "filters": {"logical_operator": "and", "conditions": []},
               "return_fields": ["id"], "paging": {"entities_per_page": 5, "current_page": 1}}),
    )
    .await;
    for (i, s) in shots["entities"].as_array().unwrap().iter().enumerate() {
        let id = s["id"].as_i64().unwrap();
        update(
            &env.writer,
            "Shot",
            id,
            json!({"sg_cut_note": format!("note {i}")}),
        )
        .await;
    }

    // Reads of the new field, from the moment it exists: every answer is the site's.
    let body = read_body("Shot", &["code", "sg_cut_note"]);
    let t0 = Instant::now();
    let mut paths = Vec::new();
    loop {
        let (direct, proxied, path) = both(&env, &proxy, &body).await;
        assert_eq!(
            proxied,
            direct,
            "answer #{} (path {path}) differs",
            paths.len()
        );
        assert!(
            direct["results"]["entities"]
                .as_array()
                .is_some_and(|e| e.iter().any(|r| r["sg_cut_note"] == "note 0")),
            "the site's answer lacks the new values: {direct}"
        );
        paths.push(path.clone());
        if path == "cache" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the new field was never served from the cache: {paths:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{} reads until the first from the cache, {:?}",
        paths.len(),
        t0.elapsed()
    );
    assert_eq!(
        field_state(&env, "Shot", "sg_cut_note")
            .await
            .map(|f| f.state),
        Some(FieldState::Ready)
    );
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    proxy_task.await.unwrap().unwrap();
    let diffs = compare(&env).await;
    assert!(diffs.is_empty(), "cache differs from the site: {diffs:?}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_deleted_on_the_site_stop_being_served_within_one_interval() {
    let workers = "  scanner:\n    interval: 1s\n    overlap: 2s\n    pageSize: 25\n    schemaInterval: 2s\n  events:\n    pollInterval: 200ms";
    let mut env = Env::start("schema_delete", 15, STAR, workers).await;
    // One field `"*"` picks up, one the spec names: both exist before the cache is filled.
    let starred = create_field(&env, "Shot", "Delivery Note").await;
    let named = create_field(&env, "Asset", "Cut Tag").await;
    let entities = format!("{STAR}  - type: Asset\n    fields: [code, {named}]\n");
    let spec = env.respec(&entities, workers);
    env.migrate(&spec).await;
    let stop = CancellationToken::new();
    let tasks = run_workers(&env, &stop);
    assert_backfilled(&env).await;
    let (_state, proxy, proxy_task) = start_proxy(&env, None, 0.0, &stop).await;

    // The first read of a credential goes to the site, which checks it.
    let (_, _, first) = both(&env, &proxy, &read_body("Shot", &["code"])).await;
    assert_eq!(first, "site");
    let shot_read = read_body("Shot", &["code", &starred]);
    let asset_read = read_body("Asset", &["code", &named]);
    for body in [&shot_read, &asset_read] {
        let (direct, proxied, path) = both(&env, &proxy, body).await;
        assert_eq!(proxied, direct);
        if path != "cache" {
            let m = sgcache_tests::proxy::metrics(&reqwest::Client::new(), &proxy).await;
            let reasons: Vec<&str> = m.lines().filter(|l| l.contains("reason")).collect();
            panic!("not served from the cache before the deletion: {reasons:#?}");
        }
    }

    delete_field(&env, "Shot", &starred).await;
    delete_field(&env, "Asset", &named).await;
    let t0 = Instant::now();
    let gone = eventually(Duration::from_secs(15), || async {
        field_state(&env, "Shot", &starred).await.map(|f| f.state) == Some(FieldState::Dropped)
            && field_state(&env, "Asset", &named).await.map(|f| f.state)
                == Some(FieldState::Dropped)
    })
    .await;
    assert!(gone.is_some(), "the deleted fields are still served");
    eprintln!("deleted fields dropped after {:?}", t0.elapsed());

    // Reads naming a deleted field get the site's answer (an error), others the cache's.
    for body in [&shot_read, &asset_read] {
        let (direct, proxied, path) = both(&env, &proxy, body).await;
        assert_eq!(proxied, direct);
        assert_eq!(path, "site", "a deleted field was answered by the cache");
        assert!(
            direct.get("exception").is_some(),
            "the site still has it: {direct}"
        );
    }
    for body in [read_body("Shot", &["code"]), read_body("Asset", &["code"])] {
        let (direct, proxied, path) = both(&env, &proxy, &body).await;
        assert_eq!(proxied, direct);
        assert_eq!(path, "cache", "the rest of the type is no longer served");
    }
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    proxy_task.await.unwrap().unwrap();
    env.stop().await;
}
