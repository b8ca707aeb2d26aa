//! A cache belongs to the site it was filled from. Every command of the real `sgcache-worker`
//! pointed at a second site refuses the first site's cache (exit code 2, one line naming both
//! sites and how to start fresh) on PostgreSQL and SQLite, until `migrate --reset` starts it
//! afresh for the second site. An event position ahead of the site's newest event (a restored
//! site) makes the follower rescan every cached type, and the cache converges to the site.

use crate::freshness_common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use freshness_common::*;
use serde_json::json;
use sgcache::sql::SqlValue;
use sgcache::storage::{self, normalize_site_url, EventPosition};
use sgcache_tests::pg::TestDb;
use shotgun_sim::{SeedConfig, SimConfig, SimHandle};
use tokio_util::sync::CancellationToken;

async fn small_site() -> SimHandle {
    let config = SimConfig {
        seed: SeedConfig {
            scale: 10,
            ..SeedConfig::default()
        },
        ..SimConfig::default()
    };
    shotgun_sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("sim")
}

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port().to_string()
}

/// A spec file for `site` and `database_url` in `dir`.
fn spec_file(dir: &Path, name: &str, site: &SimHandle, database_url: &str) -> std::path::PathBuf {
    let yaml = format!(
        "site:\n  url: {}\n  scriptName: {{value: sgcache_test}}\n  apiKey: {{value: test_key}}\n\
         database:\n  url: {{value: \"{database_url}\"}}\n  maxConnections: 2\n\
         entities:\n  - type: Shot\n    fields: [code, sg_status_list]\n",
        site.url()
    );
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Runs `sgcache-worker --config <config> <args>` with logs off; (exit code, stderr). Fails
/// the test if it is still running after 30 s.
fn worker(config: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(sgcache_tests::worker::binary());
    cmd.arg("--config").arg(config).args(args);
    cmd.env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
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
    let mut child = cmd.spawn().expect("spawn sgcache-worker");
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("sgcache-worker {args:?} still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn refuses_another_sites_cache(database_url: &str, db: &sgcache::sql::Db, dir: &Path) {
    let (first, second) = (small_site().await, small_site().await);
    let a = spec_file(dir, "a.yaml", &first, database_url);
    let b = spec_file(dir, "b.yaml", &second, database_url);
    let (code, err) = worker(&a, &["migrate"]);
    assert_eq!(code, Some(0), "{err}");
    let bound = storage::read_binding(db).await.unwrap().expect("bound");
    assert_eq!(bound.url, normalize_site_url(&first.url()));
    assert!(bound.info["version"].is_array(), "{:?}", bound.info);

    let (port, port2) = (free_port(), free_port());
    for args in [
        vec!["migrate"],
        vec!["migrate", "--dry-run"],
        vec!["proxy", "--port", &port],
        vec!["events"],
        vec!["scanner"],
        vec!["all", "--port", &port2],
    ] {
        let (code, err) = worker(&b, &args);
        assert_eq!(code, Some(2), "{args:?} must refuse: {err}");
        let line = err.trim();
        assert_eq!(line.lines().count(), 1, "{args:?}: one line: {err}");
        let expected = format!(
            "error: this cache was filled from {}, not from the configured site {}",
            normalize_site_url(&first.url()),
            normalize_site_url(&second.url())
        );
        assert!(line.starts_with(&expected), "{args:?}: {line}");
        assert!(line.contains("migrate --reset"), "{line}");
    }
    // The refusals changed nothing: the cache is still the first site's.
    let still = storage::read_binding(db).await.unwrap().expect("bound");
    assert_eq!(still.url, normalize_site_url(&first.url()));

    // Starting fresh for the second site works, and then the first site is refused.
    let (code, err) = worker(&b, &["migrate", "--reset"]);
    assert_eq!(code, Some(0), "{err}");
    let bound = storage::read_binding(db).await.unwrap().expect("bound");
    assert_eq!(bound.url, normalize_site_url(&second.url()));
    let (code, err) = worker(&a, &["events"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&normalize_site_url(&second.url())), "{err}");
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_pointed_at_a_second_site_refuses_the_first_sites_cache_postgres() {
    let db = TestDb::create("bind_pg").await.expect("database");
    let dir = tempfile::tempdir().unwrap();
    refuses_another_sites_cache(&db.url, &db.db, dir.path()).await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_pointed_at_a_second_site_refuses_the_first_sites_cache_sqlite() {
    let db = TestDb::sqlite().await.expect("database");
    let dir = tempfile::tempdir().unwrap();
    refuses_another_sites_cache(&db.url, &db.db, dir.path()).await;
    db.drop().await;
}

const WORKERS: &str =
    "  events:\n    pollInterval: 300ms\n  scanner:\n    interval: 1h\n    pageSize: 50";

/// The ids of the first two shots.
async fn two_shots(env: &Env) -> (i64, i64) {
    let r = call(
        &env.writer,
        "read",
        json!({"type": "Shot", "filters": {"logical_operator": "and", "conditions": []},
        "return_fields": ["id"], "sorts": [{"field_name": "id", "direction": "asc"}],
        "paging": {"entities_per_page": 2, "current_page": 1}}),
    )
    .await;
    let id = |i: usize| r["entities"][i]["id"].as_i64().expect("a shot");
    (id(0), id(1))
}

async fn stop_workers(stop: CancellationToken, tasks: Vec<tokio::task::JoinHandle<()>>) {
    stop.cancel();
    for t in tasks {
        t.await.expect("worker task");
    }
}

async fn position(env: &Env) -> Option<i64> {
    storage::read_event_position(&env.db.db)
        .await
        .unwrap()
        .and_then(|p| p.last_event_id)
}

async fn site_newest_event(env: &Env) -> i64 {
    let r = call(
        &env.writer,
        "read",
        json!({"type": "EventLogEntry", "filters": {"logical_operator": "and", "conditions": []},
               "return_fields": ["id"], "sorts": [{"field_name": "id", "direction": "desc"}],
               "paging": {"entities_per_page": 1, "current_page": 1}}),
    )
    .await;
    r["entities"][0]["id"]
        .as_i64()
        .expect("the site has events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_behind_the_stored_event_position_is_rescanned_and_the_cache_converges() {
    let env = Env::start("bind_behind", 15, ENTITIES, WORKERS).await;
    let stop = CancellationToken::new();
    let tasks = run_workers(&env, &stop);
    assert_backfilled(&env).await;
    let (shot, untouched) = two_shots(&env).await;
    update(&env.writer, "Shot", shot, json!({"code": "before_restore"})).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            cached(&env, "Shot", shot)
                .await
                .is_some_and(|(_, m)| m["code"] == "before_restore")
        })
        .await
        .is_some(),
        "the update never reached the cache"
    );
    // The scanner may bring the update before the follower reads its event: wait until the
    // follower stands at the site's newest event, which the restart below must return to.
    let newest = site_newest_event(&env).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            position(&env).await.is_some_and(|p| p >= newest)
        })
        .await
        .is_some(),
        "the follower never reached the site's newest event {newest}"
    );
    stop_workers(stop, tasks).await;

    // The site is "restored" to an earlier state: its newest event is now far behind the
    // cache's position, and the cache holds a row the site no longer has as it is, last
    // updated on the site before the last scan: no event and no incremental scan (which
    // reads rows whose `updated_at` moved) will ever tell the cache so, only a full rescan.
    let mut tx = env.db.db.begin().await.unwrap();
    let ahead = EventPosition {
        last_event_id: Some(newest + 1000),
        backlog: json!([]),
    };
    storage::write_event_position(&mut tx, &ahead)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut sql = env.db.db.sql();
    sql.push("UPDATE \"shot\" SET \"code\" = ")
        .push_bind(SqlValue::Text("from_before_the_restore".into()))
        .push(" WHERE \"id\" = ")
        .push_bind(SqlValue::Int(untouched));
    env.db.db.execute(&sql).await.unwrap();
    assert!(!compare(&env).await.is_empty(), "the tampering shows");

    let stop = CancellationToken::new();
    let tasks = run_workers(&env, &stop);
    let converged = eventually(Duration::from_secs(60), || async {
        position(&env).await.is_some_and(|p| p <= newest)
            && env.all_ready().await
            && compare(&env).await.is_empty()
    })
    .await;
    assert!(
        converged.is_some(),
        "the cache never converged: {:?}",
        compare(&env).await
    );
    // Following goes on from the site's newest event: a new edit arrives within seconds.
    update(&env.writer, "Shot", shot, json!({"code": "after_restore"})).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            cached(&env, "Shot", shot)
                .await
                .is_some_and(|(_, m)| m["code"] == "after_restore")
        })
        .await
        .is_some(),
        "events are not followed after the rescan"
    );
    stop_workers(stop, tasks).await;
    env.stop().await;
}
