//! Shared by the status view tests: a PostgreSQL cache of the test site where Shot is
//! backfilled (ready) and Asset is not (pending), the real `sgcache-worker` binary, and a proxy
//! that answered one read from the site and three from the cache.

#![allow(dead_code)]

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::{json, Value};
use sgcache_tests::proxy::{post, script_auth};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::freshness_common::*;

pub const ENTITIES: &str = r#"
  - type: Shot
    fields: [code, sg_status_list]
  - type: Asset
    fields: [code, description]
"#;

/// `sgcache-worker --config <config> <args>` with logs off and no site or database from the
/// environment; fails the test if it runs longer than 60 s.
pub async fn worker(config: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(sgcache_tests::worker::binary());
    cmd.arg("--config").arg(config).args(args);
    cmd.env("RUST_LOG", "off").kill_on_drop(true);
    for var in [
        "SHOTGUN_URL",
        "SHOTGUN_SCRIPT_NAME",
        "SHOTGUN_API_KEY",
        "DATABASE_URL",
        "SGCACHE_CONFIG",
        "SGCACHE_BIND",
        "SGCACHE_PORT",
    ] {
        cmd.env_remove(var);
    }
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("sgcache-worker {args:?} still running after 60 s"))
        .expect("run sgcache-worker")
}

pub fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// The site (with one event) and a migrated cache with Shot backfilled by the real scanner
/// (`--full --types Shot`, which also starts the event position at the site's newest event);
/// Asset stays pending.
pub async fn shot_backfilled(prefix: &str) -> Env {
    let env = Env::start(prefix, 10, ENTITIES, "  events: {pollInterval: 1s}").await;
    rename_a_shot(&env).await;
    let out = worker(&env.config, &["scanner", "--full", "--types", "Shot"]).await;
    assert!(out.status.success(), "scanner: {}", text(&out.stderr));
    env
}

/// A proxy in front of the site with the cache; one read of Asset (pending) sent to the site
/// and three of Shot answered from the cache.
pub async fn proxy_with_reads(env: &Env, stop: &CancellationToken) -> (String, CancellationToken) {
    let (state, url, _task) = start_proxy(env, script_auth().as_object().cloned(), 0.0, stop).await;
    state.refresh_catalog().await;
    let http = reqwest::Client::new();
    let read = |ty: &str| {
        json!({"method_name": "read", "params": [script_auth(), {
            "type": ty, "filters": {"logical_operator": "and", "conditions": []},
            "return_fields": ["code"], "paging": {"entities_per_page": 5, "current_page": 1},
            "return_only": "active"}]})
        .to_string()
    };
    let api = format!("{url}/api3/json");
    // Asset first: the site's answer also verifies the credentials, so the Shot reads that
    // follow are answered from the cache.
    for (ty, expected) in [
        ("Asset", "site"),
        ("Shot", "cache"),
        ("Shot", "cache"),
        ("Shot", "cache"),
    ] {
        let (status, path, body) = post(&http, &api, "application/json", read(ty)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(path.as_deref(), Some(expected), "read of {ty}: {body}");
    }
    (url, stop.clone())
}

/// Renames a Shot on the site as a script whose writes make events.
pub async fn rename_a_shot(env: &Env) {
    let shots = call(
        &env.writer,
        "read",
        json!({"type": "Shot", "filters": {"logical_operator": "and", "conditions": []},
               "return_fields": ["id"], "paging": {"entities_per_page": 1, "current_page": 1}}),
    )
    .await;
    let id = shots["entities"][0]["id"].as_i64().expect("a Shot");
    let code = format!("renamed {}", chrono::Utc::now().timestamp_micros());
    update(&env.writer, "Shot", id, json!({ "code": code })).await;
}

pub fn type_of<'a>(status: &'a Value, ty: &str) -> &'a Value {
    status["types"]
        .as_array()
        .expect("types")
        .iter()
        .find(|t| t["entity_type"] == ty)
        .unwrap_or_else(|| panic!("{ty} missing: {status}"))
}
