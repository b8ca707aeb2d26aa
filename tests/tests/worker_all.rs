//! `sgcache-worker all` (migrate, then proxy + event follower + scanner in one process) as a
//! real process against the test site: on PostgreSQL and on a SQLite file it becomes ready,
//! answers reads through the proxy the way the site does, and on SIGTERM (PostgreSQL) or
//! SIGINT (SQLite) finishes the request it is answering and exits 0 within a deadline.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sgcache_tests::pg::TestDb;
use sgcache_tests::worker::free_port;
use shotgun_sim::{SeedConfig, SimConfig, SimHandle};

const ENTITIES: &str = "\n  - type: Shot\n    fields: [code, sg_status_list, project]\n";
const WORKERS: &str =
    "  proxy:\n    port: PORT\n  events:\n    pollInterval: 300ms\n  scanner:\n    interval: 2s\n";

/// Starts `all` with a spec for `sim` and `database_url`, logging to a file in `dir`.
fn start_all(sim: &SimHandle, database_url: &str, dir: &std::path::Path, port: u16) -> Child {
    let yaml = format!(
        "site:\n  url: {}\n  scriptName: {{value: sgcache_test}}\n  apiKey: {{value: test_key}}\n\
         database:\n  url: {{value: \"{database_url}\"}}\n  maxConnections: 4\nentities:{ENTITIES}workers:\n{}",
        sim.url(),
        WORKERS.replace("PORT", &port.to_string())
    );
    let config = dir.join("sgcache.yaml");
    std::fs::write(&config, yaml).unwrap();
    let log = std::fs::File::create(dir.join("all.log")).unwrap();
    Command::new(sgcache_tests::worker::binary())
        .arg("--config")
        .arg(&config)
        .arg("all")
        .env("RUST_LOG", "info")
        .env_remove("SHOTGUN_URL")
        .env_remove("DATABASE_URL")
        .env_remove("SHOTGUN_SCRIPT_NAME")
        .env_remove("SHOTGUN_API_KEY")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn sgcache-worker all")
}

async fn post(http: &reqwest::Client, base: &str, body: &Value) -> (u16, Option<String>, Value) {
    sgcache_tests::proxy::post(
        http,
        &format!("{base}/api3/json"),
        "application/json",
        body.to_string(),
    )
    .await
}

fn read(ty: &str, fields: &[&str]) -> Value {
    json!({"method_name": "read", "params": [
        {"script_name": "sgcache_test", "script_key": "test_key"},
        {"type": ty, "filters": {"logical_operator": "and", "conditions": []},
         "return_fields": fields, "sorts": [{"field_name": "id", "direction": "asc"}],
         "paging": {"entities_per_page": 20, "current_page": 1}}]})
}

/// Polls until the child exits; its status, or None after `deadline`.
fn wait_exit(child: &mut Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    while t0.elapsed() < deadline {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

async fn run_case(database_url: &str, dir: &std::path::Path, signal: &str) {
    let sim = shotgun_sim::start(
        SimConfig {
            seed: SeedConfig {
                scale: 30,
                ..SeedConfig::default()
            },
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("sim");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = start_all(&sim, database_url, dir, port);
    let log = || std::fs::read_to_string(dir.join("all.log")).unwrap_or_default();
    let http = reqwest::Client::new();

    // Ready, and the cached type is served from the cache once the backfill is done.
    let shots = read("Shot", &["code", "sg_status_list"]);
    let (_, _, direct) = post(&http, &sim.url(), &shots).await;
    assert!(direct["results"]["entities"]
        .as_array()
        .is_some_and(|a| a.len() == 20));
    let t0 = Instant::now();
    let mut ready = false;
    let mut from_cache = false;
    while t0.elapsed() < Duration::from_secs(40) && !(ready && from_cache) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "all exited early:\n{}",
            log()
        );
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            ready = r.status().as_u16() == 200;
        }
        if ready {
            let (status, path, body) = post(&http, &base, &shots).await;
            assert_eq!(status, 200);
            assert_eq!(
                body["results"], direct["results"],
                "proxy answer differs from the site"
            );
            from_cache = path.as_deref() == Some("cache");
        }
        if !(ready && from_cache) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        ready && from_cache,
        "never ready and served from the cache (ready={ready}):\n{}",
        log()
    );

    // The follower's and the scanner's metrics and probes are served on the proxy's port.
    let metrics = sgcache_tests::proxy::metrics(&http, &base).await;
    for line in [
        "sgcache_events_leader 1",
        "sgcache_scanner_leader 1",
        "sgcache_proxy_requests_total{",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    assert_eq!(
        metrics.matches("# EOF").count(),
        1,
        "one OpenMetrics document"
    );
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let health = health.text().await.unwrap();
    assert!(
        health.contains("events: ok") && health.contains("scanner: ok"),
        "{health}"
    );
    let ready: Value = sgcache_tests::proxy::get_json(&http, &format!("{base}/readyz")).await;
    assert_eq!(
        ready["workers"],
        json!({"events": "leader", "scanner": "leader"})
    );

    // A pass-through read held 1.5 s by the site is in flight when the signal arrives.
    let assets = read("Asset", &["code"]);
    let (_, _, direct_assets) = post(&http, &sim.url(), &assets).await;
    sim.set_faults(shotgun_sim::Faults {
        latency_ms: 1500,
        ..sim.faults()
    });
    let before = sim
        .stats()
        .by_entity_type
        .get("Asset")
        .copied()
        .unwrap_or(0);
    let in_flight = {
        let (http, base, assets) = (http.clone(), base.clone(), assets.clone());
        tokio::spawn(async move { post(&http, &base, &assets).await })
    };
    let t0 = Instant::now();
    while sim
        .stats()
        .by_entity_type
        .get("Asset")
        .copied()
        .unwrap_or(0)
        == before
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the read never reached the site"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let signalled = Instant::now();
    let (status, path, body) = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the in-flight read was answered")
        .unwrap();
    assert_eq!(status, 200, "in-flight read: {body}");
    assert_eq!(path.as_deref(), Some("site"));
    assert_eq!(body["results"], direct_assets["results"]);
    let code = wait_exit(&mut child, Duration::from_secs(20));
    let code = code.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("all still running 20 s after {signal}:\n{}", log())
    });
    assert!(
        code.success(),
        "all exited with {code} after {signal}:\n{}",
        log()
    );
    assert!(log().contains("shutdown requested"), "{}", log());
    eprintln!("{signal}: exited 0 after {:?}", signalled.elapsed());
    // Nothing listens any more.
    assert!(http.get(format!("{base}/healthz")).send().await.is_err());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_on_postgres_stops_cleanly_on_sigterm() {
    let db = TestDb::create("all_pg").await.expect("database");
    let dir = tempfile::tempdir().unwrap();
    run_case(&db.url, dir.path(), "-TERM").await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_on_sqlite_stops_cleanly_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let url = sgcache_tests::worker::sqlite_url(dir.path());
    run_case(&url, dir.path(), "-INT").await;
}
