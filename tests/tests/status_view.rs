//! The status view for people (issue 13): `sgcache-worker status` (the real binary) and the
//! proxy's page under `/_sgcache/`, rendered by a real headless browser, against a PostgreSQL
//! cache of the test site where Shot is backfilled (ready) and Asset is not (pending), with a
//! proxy that answered three reads from the cache and sent one to the site.

mod freshness_common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use freshness_common::*;
use serde_json::{json, Value};
use sgcache::plan::FieldState;
use sgcache::storage;
use sgcache_tests::proxy::{post, script_auth};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

const ENTITIES: &str = r#"
  - type: Shot
    fields: [code, sg_status_list]
  - type: Asset
    fields: [code, description]
"#;

/// `sgcache-worker --config <config> <args>` with logs off and no site or database from the
/// environment; fails the test if it runs longer than 60 s.
async fn worker(config: &Path, args: &[&str]) -> Output {
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

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// The site (with one event) and a migrated cache with Shot backfilled by the real scanner
/// (`--full --types Shot`, which also starts the event position at the site's newest event);
/// Asset stays pending.
async fn shot_backfilled(prefix: &str) -> Env {
    let env = Env::start(prefix, 10, ENTITIES, "  events: {pollInterval: 1s}").await;
    rename_a_shot(&env).await;
    let out = worker(&env.config, &["scanner", "--full", "--types", "Shot"]).await;
    assert!(out.status.success(), "scanner: {}", text(&out.stderr));
    env
}

/// A proxy in front of the site with the cache; one read of Asset (pending) sent to the site
/// and three of Shot answered from the cache.
async fn proxy_with_reads(env: &Env, stop: &CancellationToken) -> (String, CancellationToken) {
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
async fn rename_a_shot(env: &Env) {
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

fn type_of<'a>(status: &'a Value, ty: &str) -> &'a Value {
    status["types"]
        .as_array()
        .expect("types")
        .iter()
        .find(|t| t["entity_type"] == ty)
        .unwrap_or_else(|| panic!("{ty} missing: {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_command_shows_field_states_lag_and_the_proxys_hit_ratio() {
    let env = shot_backfilled("status_cmd").await;
    let stop = CancellationToken::new();
    let (proxy, _) = proxy_with_reads(&env, &stop).await;

    // Text: one row per type, the follower caught up, the proxy's ratio and reasons.
    let out = worker(&env.config, &["status", "--proxy", &proxy]).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let row = |ty: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(ty))
            .unwrap_or_else(|| panic!("no {ty} row:\n{stdout}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    // TYPE STATE READY PENDING BACKFILLING UNSERVABLE BACKFILL ...; four fields each: the two
    // of the spec, and the id and updated_at the cache always keeps.
    assert_eq!(
        row("Shot")[..7],
        ["Shot", "ready", "4", "0", "0", "0", "-"],
        "{stdout}"
    );
    assert_eq!(
        row("Asset")[..8],
        ["Asset", "pending", "0", "4", "0", "0", "not", "started"],
        "{stdout}"
    );
    assert!(stdout.contains("caught up (lag 0 s)"), "{stdout}");
    assert!(
        stdout.contains("hit ratio 75.0% (3 reads from the cache, 1 from the site)"),
        "{stdout}"
    );
    assert!(stdout.contains("passed through: "), "{stdout}");
    assert!(!stdout.contains("test_key"), "credentials shown:\n{stdout}");

    // JSON: the same facts for scripts.
    let out = worker(&env.config, &["status", "--json", "--proxy", &proxy]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let shot = type_of(&status, "Shot");
    assert_eq!(
        (shot["ready"].as_u64(), shot["pending"].as_u64()),
        (Some(4), Some(0))
    );
    assert!(shot["last_scan"].is_string(), "{shot}");
    let asset = type_of(&status, "Asset");
    assert_eq!(
        (asset["ready"].as_u64(), asset["pending"].as_u64()),
        (Some(0), Some(4))
    );
    let events = &status["events"];
    assert!(
        events["site_newest_event_id"].as_i64() > Some(0),
        "{events}"
    );
    assert_eq!(
        events["applied_event_id"], events["site_newest_event_id"],
        "{events}"
    );
    assert_eq!(
        (
            events["events_behind"].as_i64(),
            events["lag_seconds"].as_i64()
        ),
        (Some(0), Some(0))
    );
    assert_eq!(status["proxy"]["hit_ratio"].as_f64(), Some(0.75));
    assert_eq!(status["proxy"]["reads_site"].as_u64(), Some(1));
    assert_eq!(
        status["proxy"]["pass_through"][0]["reads"].as_u64(),
        Some(1)
    );

    // A backfill of Asset under way, and a value of Shot the cache could not store, as the
    // scanner and the write path record them.
    let db = &env.db.db;
    let asset_fields: Vec<String> = ["code", "description", "id", "updated_at"]
        .map(String::from)
        .to_vec();
    let mut tx = db.begin().await.unwrap();
    storage::set_field_state(&mut tx, "Asset", &asset_fields, FieldState::Backfilling)
        .await
        .unwrap();
    storage::set_backfill_progress(&mut tx, "Asset", &asset_fields, Some(4), 4, Some(10))
        .await
        .unwrap();
    storage::mark_unservable(&mut tx, "Shot", "sg_status_list", "a value too odd", 3)
        .await
        .unwrap();
    let letter = storage::DeadLetter {
        event_id: None,
        entity_type: "Shot".into(),
        entity_id: 3,
        field_name: "sg_status_list".into(),
        reason: "a value too odd".into(),
    };
    storage::write_dead_letter(&mut tx, &letter).await.unwrap();
    tx.commit().await.unwrap();
    let out = worker(&env.config, &["status", "--proxy", &proxy]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let row = |ty: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(ty))
            .unwrap_or_else(|| panic!("no {ty} row:\n{stdout}"))
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("Asset")[..8],
        ["Asset", "backfilling", "0", "0", "4", "0", "4/10", "(40%)"],
        "{stdout}"
    );
    let shot = row("Shot");
    assert_eq!(
        shot[..6],
        ["Shot", "unservable", "3", "0", "0", "1"],
        "{stdout}"
    );
    assert_eq!(
        shot.last().map(String::as_str),
        Some("1"),
        "dead letters: {stdout}"
    );
    assert!(!stdout.contains("a value too odd"), "{stdout}");

    // A change on the site that no follower applied: one event behind, and said so. The
    // proxy is gone: its figures are missing, which is not a failure.
    stop.cancel();
    let shots = call(
        &env.writer,
        "read",
        json!({"type": "Shot", "filters": {"logical_operator": "and", "conditions": []},
               "return_fields": ["id"], "paging": {"entities_per_page": 1, "current_page": 1}}),
    )
    .await;
    let id = shots["entities"][0]["id"].as_i64().expect("a Shot");
    update(
        &env.writer,
        "Shot",
        id,
        json!({"code": "renamed by the status test"}),
    )
    .await;
    let out = worker(&env.config, &["status", "--proxy", &proxy]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains(": 1 behind, lag "), "{stdout}");
    assert!(
        stdout.contains("proxy   not reached: cannot reach the proxy"),
        "{stdout}"
    );
    let out = worker(&env.config, &["status", "--json", "--proxy", &proxy]).await;
    let status: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let events = &status["events"];
    assert_eq!(events["events_behind"].as_i64(), Some(1), "{events}");
    assert!(
        events["lag_seconds"].as_i64().is_some_and(|s| s >= 0),
        "{events}"
    );
    assert_eq!(
        events["site_newest_event_id"].as_i64(),
        events["applied_event_id"].as_i64().map(|a| a + 1)
    );

    // A database that cannot be read: exit code 1 and one line saying so.
    let broken = env.dir.path().join("broken.yaml");
    let yaml = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace(&env.db.url, &format!("{}_missing", env.db.url));
    std::fs::write(&broken, yaml).unwrap();
    let out = worker(&broken, &["status", "--proxy", &proxy]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: cannot connect to the database"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    env.stop().await;
}

/// Debian's chromium, if installed (`.ci/run` installs it).
async fn chromium() -> Option<&'static str> {
    for candidate in ["chromium", "chromium-browser"] {
        let found = Command::new(candidate)
            .arg("--version")
            .output()
            .await
            .is_ok_and(|o| o.status.success());
        if found {
            return Some(candidate);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_the_same_facts_in_a_headless_browser() {
    let Some(browser) = chromium().await else {
        eprintln!(
            "SKIPPED: chromium is not installed (apt-get install -y chromium; .ci/run installs it)"
        );
        return;
    };
    let env = shot_backfilled("status_page").await;
    let stop = CancellationToken::new();
    let (proxy, _) = proxy_with_reads(&env, &stop).await;
    let http = reqwest::Client::new();
    // The sparkline needs two samples of the read counters after the reads.
    let rates = eventually(Duration::from_secs(15), || async {
        let data: Value = http
            .get(format!("{proxy}/_sgcache/status.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        data["reads_per_second"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["cache_per_s"].as_f64() > Some(0.0)))
    })
    .await;
    assert!(rates.is_some(), "no read rate sampled");

    // The page draws everything from status.json with its script: the DOM after the script
    // ran holds the facts only if the page works.
    let profile = tempfile::tempdir().unwrap();
    let run = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("{proxy}/_sgcache/"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("chromium still running after 90 s")
        .expect("run chromium");
    let dom = text(&out.stdout);
    assert!(out.status.success(), "chromium: {}", text(&out.stderr));
    assert!(dom.contains(r#"<div id="error"></div>"#), "{dom}");
    // One row per type: name, state, ready, pending.
    assert!(
        dom.contains(r#"<td>Shot</td><td class="ready">ready</td><td class="num">4</td><td class="num">0</td>"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<td>Asset</td><td class="pending">pending</td><td class="num">0</td><td class="num">4</td>"#),
        "{dom}"
    );
    assert!(dom.contains("caught up (lag 0 s)"), "{dom}");
    assert!(
        dom.contains("hit ratio 75.0% (3 reads from the cache, 1 from the site)"),
        "{dom}"
    );
    // The sparkline: a line per path, drawn by the script.
    assert_eq!(dom.matches("<polyline").count(), 2, "{dom}");
    assert!(!dom.contains("test_key"), "credentials shown");
    // Every other path still goes to the site.
    let (status, path, _) = post(
        &http,
        &format!("{proxy}/api3/json"),
        "application/json",
        json!({"method_name": "info", "params": []}).to_string(),
    )
    .await;
    assert_eq!((status, path.as_deref()), (200, Some("site")));
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_has_no_external_assets_and_says_when_there_is_no_cache() {
    // A proxy without a cache database: it passes everything through, and says so.
    let harness = sgcache_tests::proxy::Harness::start(shotgun_sim::SimConfig::default(), None)
        .await
        .expect("proxy");
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = &harness.proxy_url;
    let moved = no_redirects
        .get(format!("{base}/_sgcache"))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status().as_u16(), 308);
    assert_eq!(moved.headers()["location"], "/_sgcache/");

    let page = harness
        .http
        .get(format!("{base}/_sgcache/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    // Everything inline: no stylesheet, script or image fetched from anywhere.
    for external in ["<link", "src=", "url(", "@import"] {
        assert!(!html.contains(external), "{external} in the page");
    }
    assert!(html.contains("fetch(\"status.json\""));

    let data = harness
        .http
        .get(format!("{base}/_sgcache/status.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(data.status().as_u16(), 503);
    let body: Value = data.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no cache database"),
        "{body}"
    );
    harness.stop().await;
}
