//! The cache's PostgreSQL fails over (issue 24), with the event follower, the scanner and the
//! proxy running against the test site and a real PostgreSQL reached through a fault proxy
//! ([`Relay`]). Each case ends with a field-by-field comparison of every cached type with the
//! site, and none restarts a worker:
//!
//! * the old primary comes back read-only behind the address (a restart with
//!   `default_transaction_read_only`): no read is answered from the frozen copy, a write
//!   through the proxy is read back, `/readyz` says why; once writable again the cache
//!   catches up by itself;
//! * the primary dies silently (open connections frozen, new ones hang) and a working server
//!   takes the address 10 s later while the old connections stay silent: the workers notice
//!   within their bounds and the cache catches up;
//! * a failover with loss (the database goes back to an older copy): answers from the
//!   rolled-back copy are never given; they resume once the follower replayed past it.

use crate::freshness_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use freshness_common::*;
use serde_json::{json, Value};
use sgcache::spec::ValueSource;
use sgcache::sql::{Db, PgLimits};
use sgcache_tests::relay::Relay;
use sgcache_worker::proxy::{serve, AppState, ProxyConfig};
use tokio_util::sync::CancellationToken;

const WORKERS: &str = "  events:\n    pollInterval: 200ms\n    gapWindow: 30s\n  scanner:\n    interval: 2s\n    overlap: 2s\n    pageSize: 100";

/// A backfilled cache with the workers and a proxy reaching the database through a relay.
struct Rig {
    env: Env,
    relay: Relay,
    proxy: String,
    state: Arc<AppState>,
    http: reqwest::Client,
    stop_workers: CancellationToken,
    stop_proxy: CancellationToken,
    spec_via_relay: sgcache::ShotgunCacheSpec,
}

impl Rig {
    async fn start(prefix: &str) -> Rig {
        let env = Env::start(prefix, 1, ENTITIES, WORKERS).await;
        let (relay, url) = Relay::for_postgres(&env.db.url).await.unwrap();
        let mut spec = env.spec.clone();
        spec.database.url = Some(ValueSource {
            value: Some(url.clone()),
            ..ValueSource::default()
        });
        let stop_workers = CancellationToken::new();
        start_workers(&spec, &stop_workers);
        assert_backfilled(&env).await;
        let stop_proxy = CancellationToken::new();
        let (state, proxy) = proxy_via(&env, &url, &stop_proxy).await;
        Rig {
            env,
            relay,
            proxy,
            state,
            http: reqwest::Client::new(),
            stop_workers,
            stop_proxy,
            spec_via_relay: spec,
        }
    }

    async fn read(&self, id: i64) -> (String, Value) {
        read_field(&self.http, &self.proxy, "Shot", id, "description").await
    }

    /// Waits until the proxy answers `id`'s description from the cache with `want`.
    async fn served(&self, id: i64, want: &Value, within: Duration) -> Option<Duration> {
        eventually(within, || async {
            let (path, v) = self.read(id).await;
            path == "cache" && &v == want
        })
        .await
    }

    async fn readyz(&self) -> Value {
        let r = self
            .http
            .get(format!("{}/readyz", self.proxy))
            .send()
            .await
            .unwrap();
        r.json().await.unwrap_or(Value::Null)
    }

    /// The cache equals the site within `within` (the direct pool may need to reconnect).
    async fn assert_equal_to_site(&self, within: Duration) {
        let t0 = Instant::now();
        let mut last = vec!["the database never answered".to_string()];
        while t0.elapsed() < within {
            if direct_db_answers(&self.env.db.db).await {
                last = compare(&self.env).await;
                if last.is_empty() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("cache differs from the site: {last:#?}");
    }

    async fn stop(self) {
        self.stop_proxy.cancel();
        self.stop_workers.cancel();
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(self.relay);
        self.env.stop().await;
    }
}

fn start_workers(spec: &sgcache::ShotgunCacheSpec, stop: &CancellationToken) {
    let (s, t) = (spec.clone(), stop.clone());
    tokio::spawn(async move { sgcache_worker::events::run(&s, t).await.expect("events") });
    let (s, t) = (spec.clone(), stop.clone());
    tokio::spawn(async move {
        sgcache_worker::scanner::run(&s, Default::default(), t)
            .await
            .expect("scanner")
    });
}

/// A proxy whose cache is reached at `url` (through the relay), with the production limits.
async fn proxy_via(env: &Env, url: &str, stop: &CancellationToken) -> (Arc<AppState>, String) {
    let config = ProxyConfig {
        site_timeout: Duration::from_secs(10),
        result_cache_bytes: 0,
        ..sgcache_tests::proxy::test_config(env.sim.url())
    };
    let db = Db::connect_limited(url, 4, Duration::from_secs(2), &PgLimits::PROXY)
        .await
        .unwrap();
    let state = AppState::new(&config, Some(db)).unwrap();
    state.refresh_catalog().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(state.clone(), config, listener, stop.clone()));
    (state, proxy)
}

async fn direct_db_answers(db: &Db) -> bool {
    let mut q = db.sql();
    q.push("SELECT 1");
    db.fetch_all(&q).await.is_ok()
}

/// Runs `sql` on the server's admin database (never through the relay).
async fn admin(sql: &str) {
    let url = format!("{}/postgres", sgcache_tests::pg::server_url());
    let db = Db::connect(&url, 1).await.unwrap();
    let mut q = db.sql();
    q.push(sql);
    db.execute(&q)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    db.close().await;
}

/// Ends every session on database `name`, as a server restart does.
async fn cut_sessions(name: &str) {
    admin(&format!(
        "SELECT pg_terminate_backend(pid)::text FROM pg_stat_activity \
         WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    ))
    .await;
}

/// Reads `id` through the proxy for `span`, asserting that no answer from the cache is one of
/// `frozen` (values the site no longer has); returns how many reads went to the site.
async fn never_frozen(rig: &Rig, id: i64, frozen: &[Value], span: Duration) -> (usize, usize) {
    let t0 = Instant::now();
    let (mut site, mut total) = (0, 0);
    while t0.elapsed() < span {
        let (path, v) = rig.read(id).await;
        total += 1;
        if path == "cache" {
            assert!(
                !frozen.contains(&v),
                "answered {v} from a copy the proxy cannot vouch for"
            );
        } else {
            site += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (site, total)
}

/// Updates `id`'s description through the proxy as `sgcache_test`.
async fn update_through_proxy(rig: &Rig, id: i64, value: &str) {
    let body = json!({"method_name": "update", "params": [
        {"script_name": "sgcache_test", "script_key": "test_key"},
        {"type": "Shot", "id": id, "fields": [{"field_name": "description", "value": value}]}]});
    let (status, _, answer) = sgcache_tests::proxy::post(
        &rig.http,
        &format!("{}/api3/json", rig.proxy),
        "application/json",
        body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "update through the proxy: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_only_old_primary_behind_the_address_is_never_served_and_the_cache_recovers() {
    let rig = Rig::start("fo_readonly").await;
    let id = live_shots(&rig.env).await[0];
    update(
        &rig.env.writer,
        "Shot",
        id,
        json!({"description": "before"}),
    )
    .await;
    let before = json!("before");
    assert!(
        rig.served(id, &before, Duration::from_secs(20))
            .await
            .is_some(),
        "the write never reached the cache"
    );

    // The old primary restarts read-only behind the address.
    let name = rig.env.db.name.clone();
    admin(&format!(
        "ALTER DATABASE \"{name}\" SET default_transaction_read_only = on"
    ))
    .await;
    cut_sessions(&name).await;
    let t0 = Instant::now();
    update(
        &rig.env.writer,
        "Shot",
        id,
        json!({"description": "during"}),
    )
    .await;
    let (site, total) = never_frozen(
        &rig,
        id,
        std::slice::from_ref(&before),
        Duration::from_secs(4),
    )
    .await;
    assert!(site > 0, "no read went to the site ({total} reads)");
    let ready = rig.readyz().await;
    assert_eq!(
        ready["database"], "unavailable",
        "readyz while read-only: {ready}"
    );
    assert_eq!(
        ready["database_guard"]["state"], "not_writable",
        "readyz while read-only: {ready}"
    );
    // Read-your-writes through the proxy while the cache cannot store the write.
    update_through_proxy(&rig, id, "by proxy").await;
    let (_, v) = rig.read(id).await;
    assert_eq!(
        v,
        json!("by proxy"),
        "the writer's next read is older than its write"
    );
    let metrics = rig.state.telemetry.metrics.encode();
    assert!(
        metrics.contains("sgcache_proxy_database_state{state=\"not_writable\"} 1"),
        "metrics while read-only"
    );

    // Writable again: the workers and the proxy recover by themselves.
    admin(&format!(
        "ALTER DATABASE \"{name}\" RESET default_transaction_read_only"
    ))
    .await;
    cut_sessions(&name).await;
    let back = Instant::now();
    let recovered = rig
        .served(id, &json!("by proxy"), Duration::from_secs(60))
        .await;
    assert!(recovered.is_some(), "the cache never served again");
    eprintln!(
        "read-only for {:?}; cache answering again {:?} after the database was writable",
        back - t0,
        recovered.unwrap()
    );
    rig.assert_equal_to_site(Duration::from_secs(30)).await;
    assert_eq!(rig.readyz().await["database_guard"]["state"], "ok");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silently_dead_primary_is_noticed_and_the_workers_recover_without_a_restart() {
    let rig = Rig::start("fo_silent").await;
    let id = live_shots(&rig.env).await[0];
    update(&rig.env.writer, "Shot", id, json!({"description": "alive"})).await;
    assert!(rig
        .served(id, &json!("alive"), Duration::from_secs(20))
        .await
        .is_some());

    // The primary goes silent: open connections stay open and answer nothing, new ones hang.
    rig.relay.freeze();
    let t0 = Instant::now();
    update(&rig.env.writer, "Shot", id, json!({"description": "after"})).await;
    let shots = live_shots(&rig.env).await;
    update(
        &rig.env.silent,
        "Shot",
        shots[0],
        json!({"sg_cut_in": 1234}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    // A standby takes the address; the old connections stay silent on the client side. The
    // new server has none of the old sessions (nor their advisory locks).
    rig.relay.thaw_new();
    cut_sessions(&rig.env.db.name).await;
    let recovered = rig
        .served(id, &json!("after"), Duration::from_secs(120))
        .await;
    assert!(recovered.is_some(), "the cache never caught up");
    eprintln!(
        "silent primary: cache serving the new value {:?} after the address moved ({:?} after the failure)",
        recovered.unwrap(),
        t0.elapsed()
    );
    rig.assert_equal_to_site(Duration::from_secs(30)).await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_failover_with_loss_no_answer_comes_from_the_rolled_back_copy() {
    let rig = Rig::start("fo_loss").await;
    let id = live_shots(&rig.env).await[0];
    update(&rig.env.writer, "Shot", id, json!({"description": "old"})).await;
    assert!(rig
        .served(id, &json!("old"), Duration::from_secs(20))
        .await
        .is_some());

    // A copy of the database as the standby had it.
    let name = rig.env.db.name.clone();
    let copy = format!("{name}_standby");
    rig.relay.down();
    cut_sessions(&name).await;
    admin(&format!("CREATE DATABASE \"{copy}\" TEMPLATE \"{name}\"")).await;
    rig.relay.up().await.unwrap();

    // Writes the standby never receives.
    update(&rig.env.writer, "Shot", id, json!({"description": "new"})).await;
    assert!(rig
        .served(id, &json!("new"), Duration::from_secs(30))
        .await
        .is_some());
    // Let the proxy see the follower's position past the copy's.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Failover with loss, the follower kept away for a while (it replays at once otherwise).
    rig.stop_workers.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    rig.relay.down();
    admin(&format!("DROP DATABASE \"{name}\" WITH (FORCE)")).await;
    admin(&format!("ALTER DATABASE \"{copy}\" RENAME TO \"{name}\"")).await;
    rig.relay.up().await.unwrap();
    let (site, total) = never_frozen(&rig, id, &[json!("old")], Duration::from_secs(4)).await;
    assert_eq!(site, total, "a read was answered from the rolled-back copy");
    let ready = rig.readyz().await;
    assert_eq!(
        ready["database_guard"]["state"], "rolled_back",
        "readyz: {ready}"
    );

    let stop = CancellationToken::new();
    start_workers(&rig.spec_via_relay, &stop);
    let replayed = rig.served(id, &json!("new"), Duration::from_secs(60)).await;
    assert!(replayed.is_some(), "answers never resumed after the replay");
    eprintln!(
        "rolled back: answering again {:?} after the follower restarted",
        replayed.unwrap()
    );
    rig.assert_equal_to_site(Duration::from_secs(30)).await;
    stop.cancel();
    rig.stop().await;
}
