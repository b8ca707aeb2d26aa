//! The proxy's status page under `/_sgcache/`, rendered by a real headless browser (Debian's
//! chromium) against a PostgreSQL cache of the test site, its text asserted; and the page as
//! served: one file with no external assets (issue 13).

use crate::freshness_common;
use crate::status_common;

use std::time::Duration;

use freshness_common::*;
use serde_json::{json, Value};
use sgcache_tests::proxy::post;
use status_common::*;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
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
        let data: Value =
            sgcache_tests::proxy::get_json(&http, &format!("{proxy}/_sgcache/status.json")).await;
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
