//! The proxy under attack, over real HTTP with the test site and PostgreSQL: what an attacker
//! on the studio network (or a buggy client) sends must get a clear API3 error or the site's
//! own answer, leave the process serving, never give cached data to credentials the site has
//! not accepted or has refused, and never move another client's reads off the cache.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sgcache_tests::proxy::{script_auth, Harness};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SPEC: &str = "
entities:
  - type: Project
    fields: [name, archived]
  - type: Sequence
    fields: [code, project]
  - type: Asset
    fields: [code, project, sg_status_list, shots]
  - type: Shot
    fields: [code, project, sg_sequence, sg_status_list, sg_cut_in, assets, description]
";

/// A second script of the test site, the one whose key gets revoked.
fn victim() -> Value {
    json!({"script_name": "silent_script", "script_key": "silent_key"})
}

fn shots() -> Value {
    json!({"type": "Shot",
           "filters": {"logical_operator": "and", "conditions": []},
           "return_fields": ["code", "sg_status_list", "sg_sequence"],
           "paging": {"entities_per_page": 20, "current_page": 1},
           "return_paging_info_without_counts": true})
}

fn filtered(path: &str, relation: &str, values: Value) -> Value {
    let mut p = shots();
    p["filters"]["conditions"] = json!([{"path": path, "relation": relation, "values": values}]);
    p
}

/// A read the proxy plans like any other (the padding is outside the payload) but that the
/// site drops: 3 MB, over the test site's 2 MB body limit, under the proxy's.
fn padded(auth: Value, payload: Value) -> String {
    format!(
        r#"{{"method_name":"read","params":[{auth},{payload}],"padding":"{}"}}"#,
        "x".repeat(3 << 20)
    )
}

fn has_results(body: &Value) -> bool {
    body.get("results").is_some()
}

/// The proxy still serves: `/healthz` answers and a verified read comes from the cache.
async fn alive_and_caching(h: &Harness) {
    let health = h
        .http
        .get(format!("{}/healthz", h.proxy_url))
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(health.status(), 200);
    let before = h.site_requests();
    let (status, path, body) = h.proxy("read", script_auth(), shots()).await;
    assert_eq!((status, path.as_deref()), (200, Some("cache")), "{body}");
    assert_eq!(
        h.site_requests(),
        before,
        "a cached read does not reach the site"
    );
}

async fn site_state(h: &Harness) -> String {
    h.get_json("/readyz").await["site"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits (up to `limit`) until `/readyz` says the site is `want`.
async fn wait_site(h: &Harness, want: &str, limit: Duration) {
    let start = Instant::now();
    while site_state(h).await != want {
        assert!(start.elapsed() < limit, "site never became {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_revoked_key_never_reads_the_cache_after_the_site_said_102() {
    let (h, db) = Harness::with_cache("sgcache_adv_auth", SPEC, |c| {
        c.auth_ttl = Duration::from_millis(300);
        c.auth_grace = Duration::from_secs(3600);
    })
    .await
    .unwrap();
    // Both scripts verified once, then read from the cache.
    let _ = h.proxy("read", script_auth(), shots()).await;
    let (_, path, good) = h.proxy("read", victim(), shots()).await;
    assert_eq!(path.as_deref(), Some("site"));
    let (_, path, cached) = h.proxy("read", victim(), shots()).await;
    assert_eq!((path.as_deref(), &cached), (Some("cache"), &good));

    // Past the TTL, within the grace: while the site is down (its own probe says so) the
    // verified key keeps reading from the cache.
    tokio::time::sleep(Duration::from_millis(400)).await;
    h.faults(json!({"down": true}));
    let (status, path, body) = h.proxy("read", victim(), shots()).await;
    assert_eq!(
        (status, path.as_deref(), &body),
        (200, Some("cache"), &good)
    );
    h.faults(json!({"down": false}));
    wait_site(&h, "ok", Duration::from_secs(15)).await;

    // The key is revoked on the site; the next read asks the site (past the TTL) and gets 102.
    assert!(h.sim.set_script_key("silent_script", "rotated"));
    let (_, path, body) = h.proxy("read", victim(), shots()).await;
    assert_eq!(
        (path.as_deref(), &body["error_code"]),
        (Some("site"), &json!(102)),
        "{body}"
    );

    // A client provokes transport errors: an API3 body the site drops (over its 2 MB limit,
    // under the proxy's) and a large upload the site refuses.
    let _ = post_bytes(&h, padded(json!({}), shots()).into_bytes(), &[]).await;
    let _ = h
        .http
        .post(format!("{}/upload/10mb", h.proxy_url))
        .body(vec![b'u'; 10 << 20])
        .send()
        .await;
    assert_eq!(
        site_state(&h).await,
        "ok",
        "a client's failure is not the site's"
    );
    let before = h.site_requests();
    let (_, path, body) = h.proxy("read", victim(), shots()).await;
    assert!(!has_results(&body), "revoked key got data: {body}");
    assert_eq!(
        (path.as_deref(), &body["error_code"]),
        (Some("site"), &json!(102))
    );
    assert!(h.site_requests() > before, "the site judged the key");

    // The site goes down: still nothing for the revoked key, grace or not.
    h.faults(json!({"down": true}));
    let start = Instant::now();
    loop {
        let (_, path, body) = h.proxy("read", victim(), shots()).await;
        assert!(
            !has_results(&body),
            "revoked key got data while the site was down: {body}"
        );
        assert_ne!(path.as_deref(), Some("cache"));
        // Until the proxy's own probe has found the site down (a probe is reused for a
        // second), and a few times after.
        if site_state(&h).await == "unavailable" && start.elapsed() > Duration::from_secs(2) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the site was never found down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The other, valid principal is unaffected (fresh: its reads never needed the site).
    let (_, path, body) = h.proxy("read", script_auth(), shots()).await;
    assert_eq!((path.as_deref(), &body), (Some("cache"), &good));
    h.faults(json!({"down": false}));
    h.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn a_client_provoked_failure_does_not_open_the_grace_window() {
    let (h, db) = Harness::with_cache("sgcache_adv_grace", SPEC, |c| {
        c.auth_ttl = Duration::from_millis(300);
        c.auth_grace = Duration::from_secs(3600);
    })
    .await
    .unwrap();
    let _ = h.proxy("read", victim(), shots()).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The key is revoked on the site but not yet known to be: it is in its grace period.
    assert!(h.sim.set_script_key("silent_script", "rotated"));
    // A read by the revoked key with a body the site drops: the proxy's probe finds the
    // site up, so the failure is the client's and the cache stays closed to the key.
    let (_, path, answer) = sgcache_tests::proxy::post(
        &h.http,
        &format!("{}/api3/json", h.proxy_url),
        "application/json",
        padded(victim(), shots()),
    )
    .await;
    assert_ne!(path.as_deref(), Some("cache"), "{answer}");
    assert!(!has_results(&answer));
    assert_eq!(site_state(&h).await, "ok");
    // And its next ordinary read gets the site's 102, not cached data.
    let (_, path, answer) = h.proxy("read", victim(), shots()).await;
    assert_eq!(
        (path.as_deref(), &answer["error_code"]),
        (Some("site"), &json!(102))
    );
    h.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn a_failing_read_does_not_move_other_clients_off_the_cache() {
    let (h, db) = Harness::with_cache("sgcache_adv_db", SPEC, |_| {})
        .await
        .unwrap();
    let _ = h.proxy("read", script_auth(), shots()).await;
    alive_and_caching(&h).await;
    let ids: Vec<i64> = (1..=100_000).collect();
    let cases = [
        ("100k-value in", filtered("id", "in", json!(ids))),
        (
            "U+0000 in a filter value",
            filtered("code", "is", json!(["a\u{0}b"])),
        ),
        (
            "U+0000 in contains",
            filtered("code", "contains", json!(["\u{0}"])),
        ),
    ];
    for (name, payload) in cases {
        let (status, path, proxied) = h.proxy("read", script_auth(), payload.clone()).await;
        let (_, _, direct) = h.direct("read", script_auth(), payload).await;
        assert_eq!((status, path.as_deref()), (200, Some("site")), "{name}");
        assert_eq!(proxied, direct, "{name}");
        // Every other read still comes from the cache, without the site.
        alive_and_caching(&h).await;
    }
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(
            r#"sgcache_proxy_requests_total{method="read",path="site",reason="database_limit"} 3"#
        ),
        "{metrics}"
    );
    assert_eq!(h.get_json("/readyz").await["database"], "ok");
    h.stop().await;
    db.drop().await;
}

/// POSTs raw bytes to the proxy's API3 endpoint with extra headers.
async fn post_bytes(h: &Harness, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = h.http.post(format!("{}/api3/json", h.proxy_url)).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("an answer");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn is_api3_error(body: &Value, words: &str) -> bool {
    body["exception"] == true
        && body["message"]
            .as_str()
            .is_some_and(|m| m.to_lowercase().contains(words))
}

#[tokio::test]
async fn oversized_bodies_and_gzip_bombs_get_an_api3_error_before_being_read() {
    let (h, db) = Harness::with_cache("sgcache_adv_body", SPEC, |_| {})
        .await
        .unwrap();
    let _ = h.proxy("read", script_auth(), shots()).await;
    // 16 MB of `[0,0,…]`, no credentials, with a length ...
    let zeros = format!("[{}0]", "0,".repeat(8 << 20));
    let (status, body) = post_bytes(&h, zeros.clone().into_bytes(), &[]).await;
    assert_eq!(status, 200);
    assert!(
        is_api3_error(&body, "larger than sgcache accepts"),
        "{body}"
    );
    // ... and streamed without one.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = zeros
        .as_bytes()
        .chunks(64 << 10)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let resp = h
        .http
        .post(format!("{}/api3/json", h.proxy_url))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await;
    if let Ok(resp) = resp {
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(
            is_api3_error(&body, "larger than sgcache accepts"),
            "{body}"
        );
    }
    // A gzip bomb: a few KB that decode to 64 MB.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..64 {
        e.write_all(&vec![b' '; 1 << 20]).unwrap();
    }
    let bomb = e.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    let (_, body) = post_bytes(&h, bomb, &[("content-encoding", "gzip")]).await;
    assert!(
        is_api3_error(&body, "larger than sgcache accepts"),
        "{body}"
    );
    // A gzip body within the limit is read like any other.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(
        json!({"method_name": "read", "params": [script_auth(), shots()]})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let (status, body) = post_bytes(&h, e.finish().unwrap(), &[("content-encoding", "gzip")]).await;
    assert_eq!(status, 200);
    assert!(body["results"]["entities"].is_array(), "{body}");
    alive_and_caching(&h).await;
    h.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn past_the_in_flight_limit_requests_get_a_busy_error() {
    let (h, db) = Harness::with_cache("sgcache_adv_busy", SPEC, |c| {
        c.intake.max_in_flight = 2;
    })
    .await
    .unwrap();
    h.faults(json!({"latency_ms": 1500}));
    let slow = || h.proxy("info", json!({}), Value::Null);
    let (a, b, c) = tokio::join!(slow(), slow(), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.proxy("info", json!({}), Value::Null).await
    });
    let busy: Vec<_> = [a, b, c]
        .into_iter()
        .filter(|(s, _, _)| *s == 503)
        .collect();
    assert_eq!(busy.len(), 1, "exactly the third request is refused");
    assert!(is_api3_error(&busy[0].2, "busy"), "{:?}", busy[0].2);
    h.faults(json!({"latency_ms": 0}));
    // Slots come back.
    let (status, _, _) = h.proxy("info", json!({}), Value::Null).await;
    assert_eq!(status, 200);
    h.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_do_not_hold_the_proxy() {
    let (h, db) = Harness::with_cache("sgcache_adv_slow", SPEC, |c| {
        c.listener.header_read_timeout = Duration::from_millis(500);
        c.listener.max_connections = 20;
        c.intake.body_read_timeout = Duration::from_millis(500);
    })
    .await
    .unwrap();
    let _ = h.proxy("read", script_auth(), shots()).await;
    let addr = h.proxy_url.trim_start_matches("http://").to_string();
    // 20 connections that never finish their headers (all the slots).
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"POST /api3/json HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        stalled.push(s);
    }
    // They are closed by the header timeout ...
    for s in &mut stalled {
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("closed by the header timeout")
            .unwrap_or(0);
        let _ = n; // a 408 or nothing, then EOF
    }
    // ... so other clients are served again.
    alive_and_caching(&h).await;
    // A body that stops half-way gets an error, not a stuck request.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        b"POST /api3/json HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"method_name\"",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("answered or closed after the body timeout");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.contains("\"exception\":true"),
        "{text}"
    );
    alive_and_caching(&h).await;
    h.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn malformed_requests_get_the_sites_error_and_the_proxy_keeps_serving() {
    let (h, db) = Harness::with_cache("sgcache_adv_malformed", SPEC, |_| {})
        .await
        .unwrap();
    let _ = h.proxy("read", script_auth(), shots()).await;
    let nested = "[".repeat(100_000) + &"]".repeat(100_000);
    let deep = format!(
        r#"{{"method_name":"read","params":[{},{nested}]}}"#,
        script_auth()
    );
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("not json", b"{\"method_name\": \"read\", ".to_vec()),
        (
            "bad utf-8",
            b"{\"method_name\": \"re\xff\xfead\", \"params\": []}".to_vec(),
        ),
        ("deep nesting", deep.into_bytes()),
        ("array", b"[1, 2, 3]".to_vec()),
        (
            "params not a list",
            br#"{"method_name": "read", "params": 5}"#.to_vec(),
        ),
        (
            "three params",
            format!(
                r#"{{"method_name":"read","params":[{},{},{{}}]}}"#,
                script_auth(),
                shots()
            )
            .into_bytes(),
        ),
        (
            "auth not an object",
            br#"{"method_name": "read", "params": ["x", {}]}"#.to_vec(),
        ),
        ("empty", Vec::new()),
    ];
    for (name, body) in bodies {
        let (status, answer) = post_bytes(&h, body, &[]).await;
        assert_eq!(status, 200, "{name}: {answer}");
        assert_eq!(answer["exception"], true, "{name}: {answer}");
        assert!(!has_results(&answer), "{name}");
    }
    alive_and_caching(&h).await;
    h.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn odd_paging_and_injection_attempts_get_the_sites_answer() {
    let (h, db) = Harness::with_cache("sgcache_adv_inject", SPEC, |_| {})
        .await
        .unwrap();
    let _ = h.proxy("read", script_auth(), shots()).await;
    let evil = "x\"; DROP TABLE \"shot\"; --";
    let mut cases: Vec<(String, Value)> = Vec::new();
    for paging in [
        json!({"entities_per_page": 0, "current_page": 1}),
        json!({"entities_per_page": -5, "current_page": 1}),
        json!({"entities_per_page": 10, "current_page": 0}),
        json!({"entities_per_page": 10, "current_page": -1}),
        json!({"entities_per_page": 1_000_000_000_000u64, "current_page": 1}),
        json!({"entities_per_page": 500, "current_page": 9_223_372_036_854_775_807u64}),
        json!({"entities_per_page": "10", "current_page": 1}),
        json!({"entities_per_page": 1.5, "current_page": 1}),
        json!("all"),
    ] {
        let mut p = shots();
        p["paging"] = paging.clone();
        cases.push((format!("paging {paging}"), p));
    }
    let mut typ = shots();
    typ["type"] = json!(evil);
    cases.push(("entity type".into(), typ));
    let mut field = shots();
    field["return_fields"] = json!(["code", evil, "sg_sequence.Sequence.x\" OR 1=1 --"]);
    cases.push(("return field".into(), field));
    let mut sort = shots();
    sort["sorts"] = json!([{"field_name": evil, "direction": "asc"}]);
    cases.push(("sort field".into(), sort));
    let mut dir = shots();
    dir["sorts"] = json!([{"field_name": "sg_cut_in", "direction": "asc; DROP TABLE shot"}]);
    cases.push(("sort direction".into(), dir));
    cases.push(("filter path".into(), filtered(evil, "is", json!(["a"]))));
    cases.push((
        "deep filter path".into(),
        filtered(&format!("sg_sequence.Sequence.{evil}"), "is", json!(["a"])),
    ));
    cases.push((
        "deep filter type".into(),
        filtered(&format!("sg_sequence.{evil}.code"), "is", json!(["a"])),
    ));
    cases.push(("relation".into(), filtered("code", evil, json!(["a"]))));
    cases.push(("value".into(), filtered("code", "is", json!([evil]))));
    let mut op = shots();
    op["filters"] = json!({"logical_operator": evil, "conditions": []});
    cases.push(("logical operator".into(), op));
    for (name, payload) in cases {
        let (status, _, proxied) = h.proxy("read", script_auth(), payload.clone()).await;
        let (_, _, direct) = h.direct("read", script_auth(), payload).await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(proxied, direct, "{name}: the proxy's answer is the site's");
    }
    // The tables are intact and the cache still answers.
    alive_and_caching(&h).await;
    let (_, path, body) = h.proxy("read", script_auth(), shots()).await;
    assert_eq!(path.as_deref(), Some("cache"));
    assert!(!body["results"]["entities"].as_array().unwrap().is_empty());
    h.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn malformed_or_invented_credentials_are_judged_by_the_site_and_never_remembered() {
    let (h, db) = Harness::with_cache("sgcache_adv_creds", SPEC, |_| {})
        .await
        .unwrap();
    let _ = h.proxy("read", script_auth(), shots()).await;
    let odd = [
        json!({"script_name": "sgcache_test", "script_key": "test_key", "sudo_as_login": 7}),
        json!({"script_name": "sgcache_test", "script_key": "test_key", "session_token": "t"}),
        json!({"script_name": "sgcache_test", "script_key": "test_key", "extra": "1"}),
        json!({"script_name": ["sgcache_test"], "script_key": "test_key"}),
    ];
    for auth in odd {
        for _ in 0..2 {
            let before = h.site_requests();
            let (_, path, proxied) = h.proxy("read", auth.clone(), shots()).await;
            let (_, _, direct) = h.direct("read", auth.clone(), shots()).await;
            assert_eq!(
                path.as_deref(),
                Some("site"),
                "{auth}: never from the cache"
            );
            assert_eq!(proxied, direct, "{auth}");
            assert!(h.site_requests() > before);
        }
    }
    // A client inventing a key per request costs the proxy nothing it keeps.
    for i in 0..200 {
        let mut auth = script_auth();
        auth[format!("x{i}")] = json!("y");
        let (_, path, _) = h.proxy("read", auth, shots()).await;
        assert_eq!(path.as_deref(), Some("site"));
    }
    alive_and_caching(&h).await;
    h.stop().await;
    db.drop().await;
}

/// The issue's target is under 100 MiB above idle (BENCHMARKS.md has the figures measured by
/// `proxy-rss` on a release build); a test only guards against the old behaviour (tens of
/// times the body, gigabytes) with a generous bound on a debug build.
const RSS_BOUND_MIB: u64 = 256;

#[tokio::test]
async fn the_proxy_process_stays_small_under_a_16mb_body_attack() {
    use sgcache_tests::rss::{body_attack, rss_kib, ProxyProcess, Sampler};
    let sim = shotgun_sim::start(
        shotgun_sim::SimConfig::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let mut proxy = ProxyProcess::start(&sim.url(), "      headerReadTimeout: 2s")
        .await
        .unwrap();
    let http = reqwest::Client::new();
    for _ in 0..10 {
        let _ = http
            .post(format!("{}/api3/json", proxy.url))
            .body(r#"{"method_name":"info","params":[]}"#)
            .send()
            .await;
    }
    let idle = rss_kib(proxy.pid());
    let sampler = Sampler::start(proxy.pid());
    body_attack(&proxy.url, 16, 8, 2, false).await;
    body_attack(&proxy.url, 16, 8, 2, true).await;
    let peak = sampler.peak_kib();
    assert!(proxy.alive(), "{}", proxy.log());
    let above = peak.saturating_sub(idle) / 1024;
    eprintln!("idle {} MiB, peak {} MiB", idle / 1024, peak / 1024);
    assert!(above < RSS_BOUND_MIB, "{above} MiB above idle");
    let resp = http
        .post(format!("{}/api3/json", proxy.url))
        .body(r#"{"method_name":"info","params":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(proxy);
    sim.shutdown().await;
}
