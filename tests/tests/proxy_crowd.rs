//! The crowd (issue #20): identical reads in flight reach the site once, credentials never
//! share an answer, read-your-writes holds, a waiter that leaves cancels nothing, failures
//! reach every waiter as they would a lone request, and the site's queue is fair and bounded.
//! Real HTTP clients, the real proxy, the test site (its latency and faults set per test).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sgcache_tests::proxy::{script_auth, Harness};
use sgcache_worker::proxy::upstream::gate::GateLimits;
use shotgun_sim::SimConfig;

fn other_auth() -> Value {
    json!({"script_name": "silent_script", "script_key": "silent_key"})
}

/// A page of shots (the test site has thousands; the proxy here has no cache, so every read
/// goes to the site).
fn shots(page: u64) -> Value {
    json!({"type": "Shot", "filters": {"logical_operator": "and", "conditions": []},
           "return_fields": ["code"],
           "paging": {"entities_per_page": page, "current_page": 1},
           "return_paging_info_without_counts": true})
}

fn playlist(id: i64) -> Value {
    json!({"type": "Playlist",
           "filters": {"logical_operator": "and", "conditions": [
               {"path": "id", "relation": "is", "values": [id]}]},
           "return_fields": ["code"],
           "paging": {"entities_per_page": 1, "current_page": 1},
           "return_paging_info_without_counts": true})
}

fn body(method: &str, auth: &Value, payload: &Value) -> String {
    json!({"method_name": method, "params": [auth, payload]}).to_string()
}

/// One request: status, `Retry-After`, body.
async fn send(http: &reqwest::Client, url: &str, body: String) -> (u16, Option<String>, Value) {
    let r = http
        .post(url)
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .expect("answered");
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = r.text().await.expect("body");
    (
        status,
        retry,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn api(h: &Harness) -> String {
    format!("{}/api3/json", h.proxy_url)
}

/// `n` copies of the same request at once, each on its own client (connection).
async fn at_once(url: &str, body: &str, n: usize) -> Vec<(u16, Option<String>, Value)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (url, body) = (url.to_string(), body.to_string());
            tokio::spawn(async move { send(&reqwest::Client::new(), &url, body).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn reads_of(h: &Harness, ty: &str) -> u64 {
    h.sim.stats().by_entity_type.get(ty).copied().unwrap_or(0)
}

async fn harness(faults: Value, gate: Option<GateLimits>) -> Harness {
    let h = Harness::start_with(SimConfig::default(), None, |c| {
        c.site_timeout = Duration::from_secs(2);
        if let Some(g) = gate {
            c.site_gate = g;
        }
    })
    .await
    .unwrap();
    h.faults(faults);
    h
}

async fn metric(h: &Harness, series: &str) -> f64 {
    let text = h.metrics().await;
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series}"))
}

#[tokio::test]
async fn identical_reads_in_flight_reach_the_site_once_and_writes_never_share() {
    let h = harness(json!({"latency_ms": 300}), None).await;
    let direct = h.direct("read", script_auth(), shots(5)).await;
    let before = reads_of(&h, "Shot");
    let answers = at_once(&api(&h), &body("read", &script_auth(), &shots(5)), 40).await;
    for (status, _, answer) in &answers {
        assert_eq!(*status, 200);
        assert_eq!(answer, &direct.2, "every waiter gets the site's answer");
    }
    assert_eq!(
        reads_of(&h, "Shot") - before,
        1,
        "40 identical reads, one site read"
    );
    assert_eq!(
        metric(&h, "sgcache_proxy_coalesced_requests_total{path=\"site\"}").await,
        39.0
    );

    // Two identical creates are two creates.
    let creates = h.sim.stats().by_method.get("create").copied().unwrap_or(0);
    let create = json!({"type": "Playlist", "fields": [{"field_name": "code", "value": "twin"}]});
    let made = at_once(&api(&h), &body("create", &script_auth(), &create), 2).await;
    let ids: Vec<_> = made
        .iter()
        .map(|(_, _, b)| b["results"]["id"].clone())
        .collect();
    assert_ne!(ids[0], ids[1], "each create made its own playlist: {ids:?}");
    assert_eq!(h.sim.stats().by_method["create"] - creates, 2);
    h.stop().await;
}

#[tokio::test]
async fn different_credentials_never_share_an_answer() {
    let h = harness(json!({"latency_ms": 300}), None).await;
    let bad = json!({"script_name": "sgcache_test", "script_key": "wrong"});
    let url = api(&h);
    let good_body = body("read", &script_auth(), &shots(5));
    let bad_body = body("read", &bad, &shots(5));
    let before = reads_of(&h, "Shot");
    let (good, refused) = tokio::join!(at_once(&url, &good_body, 10), at_once(&url, &bad_body, 10));
    for (_, _, answer) in good {
        assert!(answer["results"]["entities"].is_array(), "{answer}");
    }
    for (_, _, answer) in refused {
        assert_eq!(
            answer["error_code"], 102,
            "a refused key gets the refusal: {answer}"
        );
    }
    assert_eq!(reads_of(&h, "Shot") - before, 2, "one read per principal");
    h.stop().await;
}

#[tokio::test]
async fn a_read_after_the_principals_own_write_never_joins_an_older_flight() {
    // Reads are answered 800 ms after the site computed them; writes at once. So a read sent
    // before the write is still in flight, holding the old value, when the write returns.
    let h = harness(json!({"read_reply_delay_ms": 800}), None).await;
    let create = json!({"type": "Playlist", "fields": [{"field_name": "code", "value": "before"}]});
    let (_, _, made) = h.direct("create", script_auth(), create).await;
    let id = made["results"]["id"].as_i64().expect("created");
    let url = api(&h);
    let read = body("read", &script_auth(), &playlist(id));
    let first = {
        let (url, read) = (url.clone(), read.clone());
        tokio::spawn(async move { send(&reqwest::Client::new(), &url, read).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let update = json!({"type": "Playlist", "id": id,
                        "fields": [{"field_name": "code", "value": "after"}]});
    let (status, _, _) = send(&h.http, &url, body("update", &script_auth(), &update)).await;
    assert_eq!(status, 200);
    let (_, _, after) = send(&h.http, &url, read).await;
    let (_, _, before) = first.await.unwrap();
    assert_eq!(
        before["results"]["entities"][0]["code"], "before",
        "the first read was in flight across the write"
    );
    assert_eq!(
        after["results"]["entities"][0]["code"], "after",
        "the writer's next read sees its write"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_waiter_that_disconnects_leaves_the_others_answered() {
    let h = harness(json!({"latency_ms": 500}), None).await;
    let url = api(&h);
    let read = body("read", &script_auth(), &shots(7));
    let before = reads_of(&h, "Shot");
    let leader = {
        let (url, read) = (url.clone(), read.clone());
        tokio::spawn(async move { send(&reqwest::Client::new(), &url, read).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let others = {
        let (url, read) = (url.clone(), read.clone());
        tokio::spawn(async move { at_once(&url, &read, 9).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    leader.abort(); // the client that started the flight goes away
    for (status, _, answer) in others.await.unwrap() {
        assert_eq!(status, 200);
        assert_eq!(
            answer["results"]["entities"].as_array().map(Vec::len),
            Some(7)
        );
    }
    assert_eq!(reads_of(&h, "Shot") - before, 1);
    h.stop().await;
}

#[tokio::test]
async fn site_errors_and_timeouts_reach_every_waiter_as_a_lone_request_gets_them() {
    for faults in [
        json!({"latency_ms": 200, "fail_503_rate": 1.0}),
        // The site hangs past the proxy's 2 s timeout.
        json!({"timeout_rate": 1.0, "timeout_ms": 4000}),
    ] {
        let h = harness(faults.clone(), None).await;
        let url = api(&h);
        let read = body("read", &script_auth(), &shots(3));
        let lone = send(&h.http, &url, read.clone()).await;
        assert!(
            lone.0 != 200 || lone.2["exception"] == true,
            "the fault shows: {faults} {lone:?}"
        );
        for answer in at_once(&url, &read, 10).await {
            assert_eq!(answer, lone, "{faults}");
        }
        h.stop().await;
    }
}

#[tokio::test]
async fn a_storm_from_one_principal_does_not_starve_another() {
    let gate = GateLimits {
        max_concurrent: 2,
        max_queued: 1000,
        max_wait: Duration::from_secs(60),
    };
    let h = harness(json!({"latency_ms": 200}), Some(gate)).await;
    let url = Arc::new(api(&h));
    let done = Arc::new(AtomicUsize::new(0));
    // 30 distinct reads (nothing to share) from one principal: 3 s of turns at 2 at once.
    let storm: Vec<_> = (1..=30)
        .map(|page| {
            let (url, done) = (url.clone(), done.clone());
            tokio::spawn(async move {
                let r = send(
                    &reqwest::Client::new(),
                    &url,
                    body("read", &script_auth(), &shots(page)),
                )
                .await;
                done.fetch_add(1, Ordering::SeqCst);
                r.0
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let single = send(&h.http, &url, body("read", &other_auth(), &shots(2))).await;
    let storm_done_before = done.load(Ordering::SeqCst);
    assert_eq!(single.0, 200);
    assert!(
        storm_done_before <= 8,
        "the other principal's read waited for {storm_done_before} of the storm's 30"
    );
    for t in storm {
        assert_eq!(t.await.unwrap(), 200, "the storm is queued, not refused");
    }
    h.stop().await;
}

#[tokio::test]
async fn a_full_queue_or_an_expired_wait_answers_busy_with_retry_after() {
    let cases = [
        // One at the site, one waiting: the third is refused at once.
        (1, Duration::from_secs(10), 3),
        // Nobody refused for room, but the second cannot get a turn within 200 ms.
        (10, Duration::from_millis(200), 2),
    ];
    for (max_queued, max_wait, n) in cases {
        let gate = GateLimits {
            max_concurrent: 1,
            max_queued,
            max_wait,
        };
        let h = harness(json!({"latency_ms": 600}), Some(gate)).await;
        let url = api(&h);
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let url = url.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50 * i as u64)).await;
                    send(
                        &reqwest::Client::new(),
                        &url,
                        body("read", &script_auth(), &shots(i as u64 + 1)),
                    )
                    .await
                })
            })
            .collect();
        let mut busy = 0;
        for t in tasks {
            let (status, retry, answer) = t.await.unwrap();
            if status == 503 {
                busy += 1;
                assert_eq!(retry.as_deref(), Some("1"));
                assert_eq!(answer["exception"], true, "an API3 error: {answer}");
                assert!(
                    answer["message"].as_str().unwrap().contains("busy"),
                    "{answer}"
                );
            } else {
                assert_eq!(status, 200);
            }
        }
        assert_eq!(busy, 1, "queue {max_queued}, wait {max_wait:?}");
        h.stop().await;
    }
}
