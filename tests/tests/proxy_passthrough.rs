//! The proxy without a cache database: everything goes to the site and comes back exactly as
//! the site answered; credentials, site outages and the operational endpoints.

use serde_json::{json, Value};
use sgcache_tests::proxy::{script_auth, Harness};
use shotgun_sim::SimConfig;

fn shots() -> Value {
    json!({"type": "Shot", "filters": {"logical_operator": "and", "conditions": []},
           "return_fields": ["code", "sg_sequence", "assets", "sg_status_list"],
           "paging": {"entities_per_page": 20, "current_page": 1},
           "return_paging_info_without_counts": true})
}

#[tokio::test]
async fn answers_are_the_sites_answers() {
    let h = Harness::start(SimConfig::default(), None).await.unwrap();
    let cases = [
        ("info", json!({}), Value::Null),
        ("read", script_auth(), shots()),
        (
            "schema_field_read",
            script_auth(),
            json!({"type": "Shot", "field_name": "code"}),
        ),
        ("read", script_auth(), json!({"type": "NoSuchType"})),
        ("no_such_method", script_auth(), json!({})),
        (
            "read",
            json!({"script_name": "sgcache_test", "script_key": "wrong"}),
            shots(),
        ),
    ];
    for (method, auth, payload) in cases {
        let direct = h.direct(method, auth.clone(), payload.clone()).await;
        let proxied = h.proxy(method, auth, payload).await;
        assert_eq!(proxied.0, direct.0, "{method} status");
        assert_eq!(proxied.2, direct.2, "{method} body");
        assert_eq!(proxied.1.as_deref(), Some("site"), "{method}");
    }
    // A body that is not API3 at all: the site's own answer, whatever it is.
    let direct = h
        .post_raw(&h.sim.url(), "/api3/json", "not json".into())
        .await;
    let proxied = h
        .post_raw(&h.proxy_url.clone(), "/api3/json", "not json".into())
        .await;
    assert_eq!((proxied.0, &proxied.2), (direct.0, &direct.2));
    h.stop().await;
}

#[tokio::test]
async fn bad_credentials_get_the_sites_authentication_fault() {
    let h = Harness::start(SimConfig::default(), None).await.unwrap();
    let (status, _, body) = h
        .proxy(
            "read",
            json!({"script_name": "sgcache_test", "script_key": "nope"}),
            shots(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["exception"], true);
    assert_eq!(body["error_code"], 102);
    assert!(body.get("results").is_none());
    h.stop().await;
}

#[tokio::test]
async fn site_outages_keep_the_sites_status_and_info_is_replayed() {
    let h = Harness::start(SimConfig::default(), None).await.unwrap();
    let (_, _, info) = h.proxy("info", json!({}), Value::Null).await;
    assert!(info["version"].is_array());
    h.faults(json!({"down": true}));
    // The client sees the site's own 503 (ProtocolError), not a made-up answer.
    let direct = h.direct("read", script_auth(), shots()).await;
    let proxied = h.proxy("read", script_auth(), shots()).await;
    assert_eq!(direct.0, 503);
    assert_eq!((proxied.0, &proxied.2), (direct.0, &direct.2));
    // `info` is replayed from the last good answer so clients can still connect.
    let (status, path, replay) = h.proxy("info", json!({}), Value::Null).await;
    assert_eq!((status, path.as_deref()), (200, Some("cache")));
    assert_eq!(replay, info);
    let ready: Value = h.get_json("/readyz").await;
    assert_eq!(
        ready,
        json!({"database": "disabled", "site": "unavailable", "types_ready": 0, "types_planned": 0,
            "stale_types": [], "unservable_fields": []})
    );
    h.stop().await;
}

#[tokio::test]
async fn an_unreachable_site_gets_an_api3_error() {
    let h = Harness::start(SimConfig::default(), None).await.unwrap();
    // A proxy pointing at a closed port.
    let config = sgcache_worker::proxy::ProxyConfig {
        site_timeout: std::time::Duration::from_secs(2),
        auth_ttl: std::time::Duration::from_secs(60),
        auth_grace: std::time::Duration::from_secs(60),
        catalog_refresh: std::time::Duration::from_secs(60),
        service_auth: None,
        result_cache_bytes: 0,
        ..sgcache_tests::proxy::test_config("http://127.0.0.1:9".into())
    };
    let state = sgcache_worker::proxy::AppState::new(&config, None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(sgcache_worker::proxy::serve(
        state,
        config.clone(),
        listener,
        stop.clone(),
    ));
    let (status, path, body) = h.call_at(&url, "read", script_auth(), shots()).await;
    assert_eq!((status, path.as_deref()), (200, Some("error")));
    assert_eq!(body["exception"], true);
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("unavailable"), "{message}");
    assert!(!message.contains("test_key"));
    stop.cancel();
    let _ = task.await;
    h.stop().await;
}

#[tokio::test]
async fn other_paths_stream_through_and_operational_endpoints_answer() {
    let h = Harness::start(SimConfig::default(), None).await.unwrap();
    // Any non-API3 path is passed through: the site's control endpoint answers through us.
    let through: Value = h.get_json("/control/stats").await;
    assert!(through["requests_total"].is_u64(), "{through}");
    let missing = h
        .http
        .get(format!("{}/no/such/page", h.proxy_url))
        .send()
        .await
        .unwrap();
    let direct = h
        .http
        .get(format!("{}/no/such/page", h.sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), direct.status());

    let _ = h.proxy("read", script_auth(), shots()).await;
    let health = h
        .http
        .get(format!("{}/healthz", h.proxy_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(
            r#"sgcache_proxy_requests_total{method="read",path="site",reason="database"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("sgcache_proxy_request_duration_seconds_bucket"));
    h.stop().await;
}

#[tokio::test]
async fn json_answers_are_gzipped_for_clients_that_ask() {
    let h = Harness::start(SimConfig::default(), None).await.unwrap();
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let body = json!({"method_name": "read", "params": [script_auth(), shots()]}).to_string();
    let resp = raw
        .post(format!("{}/api3/json", h.proxy_url))
        .header("accept-encoding", "gzip")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    // Without the header the body is plain JSON, identical to the site's.
    let plain: Value = raw
        .post(format!("{}/api3/json", h.proxy_url))
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (_, _, direct) = h.direct("read", script_auth(), shots()).await;
    assert_eq!(plain, direct);
    h.stop().await;
}
