//! `cargo run --release -p sgcache-tests --bin event-log-bench [-- --seconds N --rate N
//!  --storage-events N]`
//!
//! Issue 23's figures. The test site takes writes (events) at `--rate` per second (default 20)
//! while 1, 10 and 50 event daemons poll `EventLogEntry` every second with the shotgunEvents
//! daemon's requests (newest-id `find_one`, then `id greater_than N`, id ascending, limit 500,
//! its nine fields), for `--seconds` each (default 30):
//!
//! * directly against the site (no cache at all);
//! * through the proxy, with the event follower keeping the log in a fresh PostgreSQL cache.
//!
//! Prints the site's EventLogEntry requests per minute each way, as the test site counts them
//! (the follower's own polls included on the proxy side), and checks every daemon saw the same
//! events. Then the storage per million events: `--storage-events` (default 100,000) events,
//! copies of the site's real events under new ids, stored through the follower's write path;
//! the table's size on disk (PostgreSQL `pg_total_relation_size`, SQLite `dbstat`) per event.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sgcache::plan::PlanOptions;
use sgcache::sql::{Db, SqlValue};
use sgcache::storage::{self, event_log};
use sgcache::ShotgunCacheSpec;
use sgcache_tests::pg::TestDb;
use sgcache_worker::proxy::{serve, AppState};
use shotgun_sim::{SeedConfig, SimConfig, SimHandle};
use tokio_util::sync::CancellationToken;

const FIELDS: [&str; 9] = [
    "id",
    "event_type",
    "attribute_name",
    "meta",
    "entity",
    "user",
    "project",
    "session_uuid",
    "created_at",
];

const ENTITIES: &str = "
entities:
  - {type: Project, fields: [name]}
  - {type: HumanUser, fields: [name]}
  - {type: ApiUser, fields: [firstname]}
  - {type: Sequence, fields: [code, shots, project]}
  - {type: Shot, fields: [code, sg_status_list, sg_sequence, assets, project]}
  - {type: Asset, fields: [code, shots, project]}
workers:
  events: {pollInterval: 1s}
";

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn call(http: &reqwest::Client, base: &str, method: &str, payload: Value) -> Value {
    let body = json!({"method_name": method, "params": [
        {"script_name": "sgcache_test", "script_key": "test_key"}, payload]});
    let r: Value = http
        .post(format!("{base}/api3/json"))
        .json(&body)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    r["results"].clone()
}

/// shotgunEvents' loop: the newest id, then polls every second; the ids it processed.
async fn daemon(
    http: reqwest::Client,
    base: String,
    start: i64,
    stop: Arc<AtomicBool>,
) -> Vec<i64> {
    let _newest = call(
        &http,
        &base,
        "read",
        json!({"type": "EventLogEntry",
        "filters": {"logical_operator": "and", "conditions": []}, "return_fields": ["id"],
        "sorts": [{"field_name": "id", "direction": "desc"}],
        "paging": {"entities_per_page": 1, "current_page": 1}}),
    )
    .await;
    let (mut next, mut seen, mut backlog) = (start + 1, Vec::new(), BTreeSet::new());
    let mut done = BTreeSet::new();
    while !stop.load(Ordering::Relaxed) {
        let from = backlog.first().copied().unwrap_or(next).min(next);
        let r = call(
            &http,
            &base,
            "read",
            json!({"type": "EventLogEntry",
            "filters": {"logical_operator": "and", "conditions": [
                {"path": "id", "relation": "greater_than", "values": [from - 1]}]},
            "return_fields": FIELDS, "return_only": "active",
            "sorts": [{"field_name": "id", "direction": "asc"}],
            "paging": {"entities_per_page": 500, "current_page": 1}}),
        )
        .await;
        let rows = r["entities"].as_array().cloned().unwrap_or_default();
        for e in &rows {
            let id = e["id"].as_i64().unwrap_or(0);
            if done.contains(&id) || (id < next && !backlog.contains(&id)) {
                continue;
            }
            backlog.extend(next..id);
            backlog.remove(&id);
            done.insert(id);
            seen.push(id);
            next = next.max(id + 1);
        }
        if rows.len() < 500 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    seen
}

/// Writes with events at `rate` per second until `stop`.
async fn writes(http: reqwest::Client, site: String, rate: usize, stop: Arc<AtomicBool>) {
    let shots = call(
        &http,
        &site,
        "read",
        json!({"type": "Shot",
        "filters": {"logical_operator": "and", "conditions": []}, "return_fields": ["id"],
        "paging": {"entities_per_page": 50, "current_page": 1}}),
    )
    .await["entities"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut n = 0usize;
    let pause = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    while !stop.load(Ordering::Relaxed) {
        let id = &shots[n % shots.len()]["id"];
        call(
            &http,
            &site,
            "update",
            json!({"type": "Shot", "id": id, "fields": [
            {"field_name": "code", "value": format!("b{n}")}]}),
        )
        .await;
        n += 1;
        tokio::time::sleep(pause).await;
    }
}

fn site_log_reads(sim: &SimHandle) -> u64 {
    sim.stats()
        .by_entity_type
        .get("EventLogEntry")
        .copied()
        .unwrap_or(0)
}

/// One run: `n` daemons against `base` for `secs`; the site's EventLogEntry reads per minute
/// and what each daemon saw.
async fn run(sim: &SimHandle, base: &str, n: usize, secs: u64) -> (f64, Vec<Vec<i64>>) {
    let http = reqwest::Client::new();
    let start = call(
        &http,
        &sim.url(),
        "read",
        json!({"type": "EventLogEntry",
        "filters": {"logical_operator": "and", "conditions": []}, "return_fields": ["id"],
        "sorts": [{"field_name": "id", "direction": "desc"}],
        "paging": {"entities_per_page": 1, "current_page": 1}}),
    )
    .await["entities"][0]["id"]
        .as_i64()
        .unwrap_or(0);
    let stop = Arc::new(AtomicBool::new(false));
    sim.reset_stats();
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(daemon(http.clone(), base.to_string(), start, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let reads = site_log_reads(sim);
    let per_min = reads as f64 * 60.0 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.expect("daemon"));
    }
    (per_min, seen)
}

async fn storage_per_event(db: &Db, sample: &[Value], events: usize) -> f64 {
    let mut tx = db.begin().await.unwrap();
    storage::ensure_state_tables(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    let mut id = 1_000_000_000i64;
    let mut stored = 0;
    while stored < events {
        let batch: Vec<Value> = (0..500)
            .map(|i| {
                let mut e = sample[(stored + i) % sample.len()].clone();
                e["id"] = json!(id + i as i64);
                e
            })
            .collect();
        let refs: Vec<&Value> = batch.iter().collect();
        let mut tx = db.begin().await.unwrap();
        event_log::store(&mut tx, &refs, id - 1, id + 499)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        id += 500;
        stored += 500;
    }
    let mut sql = db.sql();
    match db.dialect() {
        sgcache::sql::Dialect::Postgres => {
            sql.push("VACUUM ANALYZE \"_sgcache_event_log\"");
            db.execute(&sql).await.unwrap();
            sql = db.sql();
            sql.push("SELECT pg_total_relation_size('\"_sgcache_event_log\"')::bigint")
        }
        sgcache::sql::Dialect::Sqlite => {
            sql.push("SELECT sum(pgsize) FROM dbstat WHERE name = '_sgcache_event_log'")
        }
    };
    let bytes = match db.fetch_all(&sql).await {
        Ok(rows) => match rows.first().and_then(|r| r.first()) {
            Some(SqlValue::Int(b)) => *b as f64,
            _ => f64::NAN,
        },
        Err(e) => {
            eprintln!("size query failed: {e}");
            f64::NAN
        }
    };
    bytes / stored as f64
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs = arg("--seconds", 30) as u64;
    let rate = arg("--rate", 20);
    let storage_events = arg("--storage-events", 100_000);
    let sim = shotgun_sim::start(
        SimConfig {
            seed: SeedConfig {
                scale: 200,
                ..SeedConfig::default()
            },
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let site = sim.url();
    let db = TestDb::create("evlog_bench").await?;
    let yaml = format!(
        "site:\n  url: {site}\n  scriptName: {{value: sgcache_test}}\n  apiKey: {{value: test_key}}\n\
         database:\n  url: {{value: \"{}\"}}\n{ENTITIES}",
        db.url
    );
    let spec = ShotgunCacheSpec::from_yaml(&yaml, "bench")?;
    let http = reqwest::Client::new();
    let writer_stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(writes(
        http.clone(),
        site.clone(),
        rate,
        writer_stop.clone(),
    ));

    println!("site EventLogEntry requests per minute, {rate} events/s, daemons polling every 1 s, {secs} s per run");
    println!("daemons  direct  via proxy (follower's polls included)");
    let mut direct = Vec::new();
    for n in [1, 10, 50] {
        direct.push(run(&sim, &site, n, secs).await);
    }
    // The cache: migrate, follow, serve.
    let schema =
        sgcache::site::SiteClient::new(spec.site_connection(&sgcache::spec::process_env)?)?
            .schema()
            .await?;
    storage::migrate(&db.db, &spec, &schema, PlanOptions::default()).await?;
    let stop = CancellationToken::new();
    let (s1, s2, t) = (spec.clone(), spec.clone(), stop.clone());
    let follower = tokio::spawn(async move { sgcache_worker::events::run(&s1, t).await });
    let t = stop.clone();
    let scanner =
        tokio::spawn(async move { sgcache_worker::scanner::run(&s2, Default::default(), t).await });
    let config = sgcache_tests::proxy::test_config(site.clone());
    let state = AppState::new(&config, Some(Db::connect(&db.url, 4).await?))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let proxy = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(serve(state.clone(), config, listener, stop.clone()));
    // Until the proxy answers EventLogEntry from the kept log.
    let t0 = Instant::now();
    loop {
        state.refresh_catalog().await;
        if state.cache.catalog().types.contains_key("EventLogEntry")
            && state.cache.catalog().ready_type("Shot").is_some()
        {
            break;
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(300),
            "the cache never got ready"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (i, n) in [1, 10, 50].into_iter().enumerate() {
        let (per_min, seen) = run(&sim, &proxy, n, secs).await;
        println!("{n:>7}  {:>6.0}  {per_min:>9.0}", direct[i].0);
        // Every daemon of a run saw the same events, through the proxy as directly: a daemon
        // through the proxy may end a poll behind.
        let shortest = seen.iter().map(Vec::len).min().unwrap_or(0);
        for s in &seen {
            anyhow::ensure!(s[..shortest] == seen[0][..shortest], "daemons disagree");
            anyhow::ensure!(
                s.windows(2).all(|w| w[0] < w[1]),
                "out of order through the proxy"
            );
        }
        anyhow::ensure!(shortest > 0, "no events seen");
    }
    let metrics = state.telemetry.metrics.encode();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("sgcache_proxy_event_log_reads_total"))
    {
        println!("{line}");
    }
    writer_stop.store(true, Ordering::Relaxed);
    let _ = writer.await;
    stop.cancel();
    let _ = follower.await;
    let _ = scanner.await;
    let _ = server.await;

    // Storage: the site's real events, copied under new ids.
    let sample = call(
        &http,
        &site,
        "read",
        json!({"type": "EventLogEntry",
        "filters": {"logical_operator": "and", "conditions": []}, "return_fields": FIELDS,
        "paging": {"entities_per_page": 500, "current_page": 1}}),
    )
    .await["entities"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    anyhow::ensure!(!sample.is_empty(), "no events to copy");
    let pg = TestDb::create("evlog_bench_size").await?;
    let sqlite = TestDb::sqlite().await?;
    let per_pg = storage_per_event(&pg.db, &sample, storage_events).await;
    let per_sqlite = storage_per_event(&sqlite.db, &sample, storage_events).await;
    println!(
        "storage, {storage_events} events (sample of {} real events): PostgreSQL {per_pg:.0} B/event \
         ({:.0} MB per million), SQLite {per_sqlite:.0} B/event ({:.0} MB per million)",
        sample.len(),
        per_pg,
        per_sqlite
    );
    pg.drop().await;
    sqlite.drop().await;
    db.drop().await;
    sim.shutdown().await;
    Ok(())
}
