//! The test site over real HTTP: envelopes, auth, batch rollback, paging, faults, control.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shotgun_sim::{SimConfig, SimHandle};

const AUTH: &str = r#"{"script_name": "sgcache_test", "script_key": "test_key"}"#;

async fn start(f: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut c = SimConfig::default();
    c.seed.scale = 60;
    f(&mut c);
    shotgun_sim::start(c, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn auth() -> Value {
    serde_json::from_str(AUTH).unwrap()
}

async fn post(h: &SimHandle, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", h.url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn rpc(h: &SimHandle, method: &str, params: Value) -> Value {
    let r = post(
        h,
        "/api3/json",
        json!({"method_name": method, "params": params}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    r.json().await.unwrap()
}

async fn control(h: &SimHandle, path: &str) -> Value {
    reqwest::get(format!("{}/control/{path}", h.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn put_faults(h: &SimHandle, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .put(format!("{}/control/faults", h.url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn empty() -> Value {
    json!({"logical_operator": "and", "conditions": []})
}

#[tokio::test]
async fn envelopes_and_auth() {
    let h = start(|_| {}).await;
    let info = rpc(&h, "info", json!([])).await;
    assert!(info.get("results").is_none(), "info is unwrapped");
    assert_eq!(info["api_max_entities_per_page"], 500);
    assert!(info["version"][0].as_u64().unwrap() >= 8);
    let r = rpc(&h, "read", json!([auth(), {"type": "Shot", "filters": empty(), "return_fields": ["code"],
        "paging": {"entities_per_page": 2, "current_page": 1}, "return_paging_info_without_counts": true}])).await;
    assert_eq!(r["results"]["entities"].as_array().unwrap().len(), 2);
    assert_eq!(r["results"]["paging_info"]["has_next_page"], true);
    // A base path before /api3/json is accepted.
    let r = post(
        &h,
        "/some/site/api3/json",
        json!({"method_name": "info", "params": []}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let bad = rpc(
        &h,
        "read",
        json!([{"script_name": "sgcache_test", "script_key": "nope"}, {"type": "Shot"}]),
    )
    .await;
    assert_eq!(
        bad,
        json!({"exception": true, "error_code": 102, "message": bad["message"]})
    );
    let unknown = rpc(&h, "no_such_method", json!([auth(), {}])).await;
    assert_eq!(unknown["exception"], true);
    assert!(unknown["message"]
        .as_str()
        .unwrap()
        .contains("no_such_method"));
    let garbage = post(&h, "/api3/json", json!([1, 2]))
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(garbage["exception"], true);
    let r = reqwest::get(format!("{}/api3/json", h.url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    h.shutdown().await;
}

async fn count(h: &SimHandle) -> u64 {
    let r = rpc(
        h,
        "read",
        json!([auth(), {"type": "EventLogEntry", "filters": empty(),
        "paging": {"entities_per_page": 500, "current_page": 1}, "return_paging_info": true}]),
    )
    .await;
    r["results"]["paging_info"]["entity_count"]
        .as_u64()
        .unwrap()
}

async fn visible(h: &SimHandle) -> Vec<u64> {
    let r = rpc(
        h,
        "read",
        json!([auth(), {"type": "EventLogEntry", "filters": empty(),
        "sorts": [{"field_name": "id", "direction": "asc"}]}]),
    )
    .await;
    r["results"]["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn batch_rollback_over_http() {
    let h = start(|_| {}).await;
    let before = count(&h).await;
    let r = rpc(&h, "batch", json!([auth(), [
        {"request_type": "create", "type": "Shot", "fields": [{"field_name": "code", "value": "will_vanish"}]},
        {"request_type": "update", "type": "Shot", "id": 999999, "fields": [{"field_name": "code", "value": "x"}]}]])).await;
    assert_eq!(r["exception"], true);
    assert_eq!(count(&h).await, before);
    let found = rpc(
        &h,
        "read",
        json!([auth(), {"type": "Shot", "filters": {"logical_operator": "and", "conditions": [
        {"path": "code", "relation": "is", "values": ["will_vanish"]}]}}]),
    )
    .await;
    assert_eq!(found["results"]["entities"], json!([]));
    h.shutdown().await;
}

/// The client's paging loop in both styles collects every row exactly once.
#[tokio::test]
async fn paging_loops_in_both_styles() {
    let h = start(|c| c.version = vec![7, 3, 0]).await;
    let all = rpc(
        &h,
        "read",
        json!([auth(), {"type": "Task", "filters": empty()}]),
    )
    .await["results"]["entities"]
        .as_array()
        .unwrap()
        .len();
    for flag in ["return_paging_info", "return_paging_info_without_counts"] {
        let mut seen = Vec::new();
        for page in 1.. {
            let r = rpc(
                &h,
                "read",
                json!([auth(), {"type": "Task", "filters": empty(), "return_fields": ["content"],
                "sorts": [{"field_name": "content", "direction": "asc"}],
                "paging": {"entities_per_page": 17, "current_page": page}, flag: true}]),
            )
            .await;
            let ents = r["results"]["entities"].as_array().unwrap().clone();
            seen.extend(ents.iter().map(|e| e["id"].as_u64().unwrap()));
            let info = &r["results"]["paging_info"];
            let done = match flag {
                "return_paging_info" => {
                    ents.is_empty() || seen.len() as u64 == info["entity_count"].as_u64().unwrap()
                }
                _ => !info["has_next_page"].as_bool().unwrap(),
            };
            if done {
                break;
            }
        }
        let mut uniq = seen.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!((seen.len(), uniq.len()), (all, all), "{flag}");
    }
    assert_eq!(
        rpc(&h, "info", json!([])).await["version"],
        json!([7, 3, 0])
    );
    h.shutdown().await;
}

#[tokio::test]
async fn faults_down_503_timeout_latency() {
    let h = start(|_| {}).await;
    let info = json!({"method_name": "info", "params": []});
    assert_eq!(put_faults(&h, json!({"down": true})).await.status(), 200);
    assert_eq!(post(&h, "/api3/json", info.clone()).await.status(), 503);
    assert_eq!(control(&h, "faults").await["down"], true);
    assert_eq!(
        control(&h, "health").await["status"],
        "ok",
        "control stays up"
    );
    put_faults(&h, json!({"down": false, "fail_503_rate": 1.0})).await;
    assert_eq!(post(&h, "/api3/json", info.clone()).await.status(), 503);
    put_faults(
        &h,
        json!({"fail_503_rate": 0.0, "timeout_rate": 1.0, "timeout_ms": 200}),
    )
    .await;
    let t = Instant::now();
    assert_eq!(post(&h, "/api3/json", info.clone()).await.status(), 504);
    assert!(t.elapsed() >= Duration::from_millis(200));
    put_faults(
        &h,
        json!({"timeout_rate": 0.0, "latency_ms": 150, "jitter_ms": 50}),
    )
    .await;
    let t = Instant::now();
    assert_eq!(post(&h, "/api3/json", info.clone()).await.status(), 200);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_millis(2000),
        "{took:?}"
    );
    assert_eq!(
        put_faults(&h, json!({"no_such_fault": 1})).await.status(),
        400
    );
    assert_eq!(h.stats().faulted, 3);
    h.shutdown().await;
}

#[tokio::test]
async fn event_gaps_and_drops() {
    let h = start(|_| {}).await;
    let update = |status: &'static str| json!([auth(), {"type": "Shot", "id": 1, "fields": [{"field_name": "description", "value": status}]}]);
    put_faults(
        &h,
        json!({"event_gap_rate": 1.0, "event_gap_delay_ms": 400}),
    )
    .await;
    rpc(&h, "update", update("gap")).await;
    put_faults(&h, json!({"event_gap_rate": 0.0})).await;
    rpc(&h, "update", update("fin")).await;
    let early = visible(&h).await;
    assert_eq!(
        early,
        vec![2],
        "the later event is visible before the delayed one"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(visible(&h).await, vec![1, 2]);
    put_faults(&h, json!({"event_drop_rate": 1.0})).await;
    rpc(&h, "update", update("drop")).await;
    put_faults(&h, json!({"event_drop_rate": 0.0})).await;
    rpc(&h, "update", update("after")).await;
    assert_eq!(visible(&h).await, vec![1, 2, 4], "id 3 never appears");
    h.shutdown().await;
}

#[tokio::test]
async fn control_counts_and_logs_requests() {
    let h = start(|_| {}).await;
    rpc(&h, "info", json!([])).await;
    rpc(
        &h,
        "read",
        json!([auth(), {"type": "Shot", "filters": empty()}]),
    )
    .await;
    rpc(&h, "batch", json!([auth(), [{"request_type": "create", "type": "Asset", "fields": [{"field_name": "code", "value": "a"}]},
        {"request_type": "create", "type": "Shot", "fields": [{"field_name": "code", "value": "s"}]}]])).await;
    let s = control(&h, "stats").await;
    assert_eq!(s["requests_total"], 3);
    assert_eq!(s["by_method"], json!({"info": 1, "read": 1, "batch": 1}));
    assert_eq!(s["by_entity_type"], json!({"Shot": 2, "Asset": 1}));
    let log = control(&h, "requests?limit=2").await;
    assert_eq!(log.as_array().unwrap().len(), 2);
    assert_eq!(log[1]["method"], "batch");
    assert_eq!(log[1]["entity_type"], "Asset,Shot");
    assert!(log[1]["seq"].as_u64().unwrap() > log[0]["seq"].as_u64().unwrap());
    let r = reqwest::Client::new()
        .post(format!("{}/control/stats/reset", h.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(control(&h, "stats").await["requests_total"], 0);
    assert_eq!(h.stats().requests_total, 0);
    h.shutdown().await;
}

#[tokio::test]
async fn binary_prints_its_url_and_stops_on_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_shotgun-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--seed-scale",
            "20",
            "--site-version",
            "7.3.1",
            "--sort-collation",
            "byte",
            "--week-start",
            "sunday",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = serde_json::from_str::<Value>(&first).unwrap()["listening"]
        .as_str()
        .unwrap()
        .to_string();
    let info: Value = reqwest::Client::new()
        .post(format!("{url}/api3/json"))
        .json(&json!({"method_name": "info", "params": []}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["version"], json!([7, 3, 1]));
    let quirks: Value = reqwest::get(format!("{url}/control/quirks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        quirks,
        json!({"null_checkboxes": false, "text_case": "insensitive",
               "sort_collation": "byte", "week_start": "sunday", "null_hop": "null"})
    );
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

async fn put_control(h: &SimHandle, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .put(format!("{}/control/{path}", h.url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn date_header(r: &reqwest::Response) -> String {
    let dates: Vec<_> = r.headers().get_all("date").iter().collect();
    assert_eq!(dates.len(), 1, "one Date header");
    dates[0].to_str().unwrap().to_string()
}

async fn info_date(h: &SimHandle) -> String {
    let r = post(
        h,
        "/api3/json",
        json!({"method_name": "info", "params": []}),
    )
    .await;
    date_header(&r)
}

/// Shots with this id created in the last day, as the site's clock sees it.
async fn created_today(h: &SimHandle, id: u64) -> usize {
    let filters = json!({"logical_operator": "and", "conditions": [
        {"path": "id", "relation": "is", "values": [id]},
        {"path": "created_at", "relation": "in_last", "values": [1, "DAY"]}]});
    let r = rpc(
        h,
        "read",
        json!([auth(), {"type": "Shot", "filters": filters, "return_fields": ["code"]}]),
    )
    .await;
    r["results"]["entities"].as_array().unwrap().len()
}

#[tokio::test]
async fn date_header_and_relative_dates_follow_the_site_clock() {
    let h = start(|c| c.clock = Some("2024-11-20T12:00:00Z".into())).await;
    assert_eq!(info_date(&h).await, "Wed, 20 Nov 2024 12:00:00 GMT");
    let r = reqwest::get(format!("{}/control/health", h.url()))
        .await
        .unwrap();
    assert_eq!(date_header(&r), "Wed, 20 Nov 2024 12:00:00 GMT");
    assert_eq!(
        control(&h, "clock").await,
        json!({"now": "2024-11-20T12:00:00Z", "fixed": true})
    );
    let created = rpc(
        &h,
        "create",
        json!([auth(), {"type": "Shot", "fields": [{"field_name": "code", "value": "clocked"}],
                        "return_fields": ["created_at"]}]),
    )
    .await;
    assert_eq!(created["results"]["created_at"], "2024-11-20T12:00:00Z");
    let id = created["results"]["id"].as_u64().unwrap();
    assert_eq!(created_today(&h, id).await, 1);
    // Two days later the shot is no longer "created in the last day", and the header says so.
    let r = put_control(&h, "clock", json!({"advance_seconds": 2 * 86_400})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"now": "2024-11-22T12:00:00Z", "fixed": true})
    );
    assert_eq!(info_date(&h).await, "Fri, 22 Nov 2024 12:00:00 GMT");
    assert_eq!(created_today(&h, id).await, 0);
    assert_eq!(h.now(), 1_732_276_800);
    // Set, then bad input is refused without changing the clock.
    let r = put_control(&h, "clock", json!({"clock": "2024-11-21T00:00:00Z"})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(created_today(&h, id).await, 1);
    for bad in [
        json!({"clock": "yesterday"}),
        json!({"advance_seconds": "1"}),
        json!({"tick": 1}),
    ] {
        assert_eq!(put_control(&h, "clock", bad).await.status(), 400);
    }
    assert_eq!(info_date(&h).await, "Thu, 21 Nov 2024 00:00:00 GMT");
    // Back to real time, shifted a year ahead: the header follows the site, not the machine.
    let r = put_control(
        &h,
        "clock",
        json!({"clock": null, "advance_seconds": 366 * 86_400}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(control(&h, "clock").await["fixed"], false);
    let header = info_date(&h).await;
    let site_now = chrono::DateTime::parse_from_rfc2822(&header)
        .unwrap()
        .timestamp();
    assert!(site_now > chrono::Utc::now().timestamp() + 365 * 86_400);
    h.shutdown().await;
}

async fn codes_sorted(h: &SimHandle, prefix: &str) -> Vec<String> {
    let filters = json!({"logical_operator": "and", "conditions": [
        {"path": "code", "relation": "starts_with", "values": [prefix]}]});
    let r = rpc(
        h,
        "read",
        json!([auth(), {"type": "Asset", "filters": filters, "return_fields": ["code"],
                        "sorts": [{"field_name": "code", "direction": "asc"}]}]),
    )
    .await;
    r["results"]["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn quirks_switch_semantics_over_http() {
    let h = start(|_| {}).await;
    for code in ["hqB", "hqa"] {
        rpc(
            &h,
            "create",
            json!([auth(), {"type": "Asset", "fields": [{"field_name": "code", "value": code}]}]),
        )
        .await;
    }
    assert_eq!(
        control(&h, "quirks").await,
        json!({"null_checkboxes": false, "text_case": "insensitive",
               "sort_collation": "folded", "week_start": "monday", "null_hop": "null"})
    );
    assert_eq!(codes_sorted(&h, "HQ").await, ["hqa", "hqB"]);
    let r = put_control(&h, "quirks", json!({"sort_collation": "byte"})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["sort_collation"], "byte");
    assert_eq!(codes_sorted(&h, "HQ").await, ["hqB", "hqa"]);
    let r = put_control(&h, "quirks", json!({"text_case": "sensitive"})).await;
    assert_eq!(r.status(), 200);
    assert!(codes_sorted(&h, "HQ").await.is_empty());
    assert_eq!(codes_sorted(&h, "hq").await, ["hqB", "hqa"]);
    for bad in [json!({"text_case": "upper"}), json!({"collation": "byte"})] {
        assert_eq!(put_control(&h, "quirks", bad).await.status(), 400);
    }
    assert_eq!(
        h.semantics().sort_collation,
        shotgun_sim::SortCollation::Byte
    );
    h.shutdown().await;
}

#[test]
fn binary_refuses_an_unknown_semantic_switch() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shotgun-sim"))
        .args(["--seed-scale", "1", "--text-case", "upper"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--text-case \"upper\""), "{stderr}");
}
