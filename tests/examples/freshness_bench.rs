//! Issue 6 benchmarks (figures go in BENCHMARKS.md). Build the worker first:
//!   cargo build --release -p sgcache-worker
//!   cargo run --release -p sgcache-tests --example freshness_bench -- backfill 100000
//!   cargo run --release -p sgcache-tests --example freshness_bench -- events 20000
//!   cargo run --release -p sgcache-tests --example freshness_bench -- lag 30
//! The test site runs in this process; the cache worker runs as the real release binary in a
//! child process, whose resident memory is sampled from /proc every 50 ms.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sgcache::plan::PlanOptions;
use sgcache::site::SiteClient;
use sgcache::spec::SiteConnection;
use sgcache::sql::SqlValue;
use sgcache::ShotgunCacheSpec;
use sgcache_tests::pg::TestDb;
use shotgun_sim::{SeedConfig, SimConfig, SimHandle};

const FIELDS: &str =
    "[code, sg_status_list, sg_sequence, sg_cut_in, description, project, assets, updated_at]";

struct Bench {
    sim: SimHandle,
    db: TestDb,
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

async fn setup(shots: usize, poll: &str) -> anyhow::Result<Bench> {
    let t = Instant::now();
    let sim = shotgun_sim::start(
        SimConfig {
            seed: SeedConfig {
                scale: 1000,
                shots: Some(shots),
                ..SeedConfig::default()
            },
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    eprintln!(
        "site seeded with {shots} shots in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let db = TestDb::create("bench6").await?;
    let dir = tempfile::tempdir()?;
    let yaml = format!(
        "site:\n  url: {}\n  scriptName: {{value: sgcache_test}}\n  apiKey: {{value: test_key}}\n\
         database:\n  url: {{value: \"{}\"}}\n  maxConnections: 4\n\
         entities:\n  - type: Shot\n    fields: {FIELDS}\n\
         workers:\n  events:\n    pollInterval: {poll}\n  scanner:\n    pageSize: 500\n",
        sim.url(),
        db.url
    );
    let config = dir.path().join("sgcache.yaml");
    std::fs::write(&config, &yaml)?;
    let spec = ShotgunCacheSpec::from_yaml(&yaml, "bench")?; // validates the YAML
    let site = client(&sim).schema().await?;
    sgcache::storage::migrate(&db.db, &spec, &site, PlanOptions::default()).await?;
    Ok(Bench {
        sim,
        db,
        _dir: dir,
        config,
    })
}

fn client(sim: &SimHandle) -> SiteClient {
    SiteClient::new(SiteConnection {
        url: sim.url(),
        script_name: "sgcache_test".into(),
        api_key: "test_key".into(),
        timeout: Duration::from_secs(60),
    })
    .expect("client")
}

fn worker(b: &Bench, args: &[&str]) -> Child {
    let bin = std::env::var("SGCACHE_WORKER_BIN")
        .unwrap_or_else(|_| "target/release/sgcache-worker".into());
    Command::new(bin)
        .arg("--config")
        .arg(&b.config)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("BENCH_WORKER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("run target/release/sgcache-worker (cargo build --release -p sgcache-worker)")
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used so far, from /proc.
fn cpu_secs(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) start at the last ')'.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

/// Records the CPU seconds used so far by each PostgreSQL process (the server runs on this
/// machine) into `seen`; backends exit with their connection, so sample while they live.
fn sample_postgres_cpu(seen: &mut BTreeMap<String, f64>) {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in dir.filter_map(Result::ok) {
        if std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.starts_with("postgres")) {
            let pid = e.file_name().to_string_lossy().into_owned();
            let cpu = cpu_secs(&pid);
            let v = seen.entry(pid).or_insert(0.0);
            *v = v.max(cpu);
        }
    }
}

async fn count(b: &Bench, sql: &str) -> i64 {
    let mut s = b.db.db.sql();
    s.push(sql);
    match b
        .db
        .db
        .fetch_all(&s)
        .await
        .ok()
        .and_then(|r| r.first().and_then(|r| r.first().cloned()))
    {
        Some(SqlValue::Int(n)) => n,
        _ => 0,
    }
}

async fn backfill(shots: usize) -> anyhow::Result<()> {
    let b = setup(shots, "1s").await?;
    let site_cpu0 = cpu_secs("self");
    let mut pg_before = BTreeMap::new();
    sample_postgres_cpu(&mut pg_before);
    let mut pg = pg_before.clone();
    let t = Instant::now();
    let mut child = worker(&b, &["scanner", "--full", "--types", "Shot"]);
    let pid = child.id();
    let mut peak = 0;
    let mut samples = Vec::new();
    let mut worker_cpu = 0.0;
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(status.success(), "scanner failed: {status}");
            break;
        }
        worker_cpu = cpu_secs(&pid.to_string()).max(worker_cpu);
        sample_postgres_cpu(&mut pg);
        let r = rss_kb(pid);
        peak = peak.max(r);
        samples.push(r);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    sample_postgres_cpu(&mut pg);
    let site_cpu = cpu_secs("self") - site_cpu0;
    let pg_cpu: f64 = pg
        .iter()
        .map(|(pid, cpu)| cpu - pg_before.get(pid).copied().unwrap_or(0.0))
        .sum();
    let rows = count(&b, "SELECT count(*) FROM shot").await;
    let links = count(&b, "SELECT count(*) FROM shot_assets").await;
    let median = {
        samples.sort();
        samples.get(samples.len() / 2).copied().unwrap_or(0)
    };
    println!(
        "backfill: {rows} shots ({links} asset links) in {secs:.1} s = {:.0} entities/s; worker RSS peak {} MB, median {} MB",
        rows as f64 / secs, peak / 1024, median / 1024
    );
    println!(
        "cpu seconds: test site (bench process) {site_cpu:.1}, worker {worker_cpu:.1} (last 50 ms sample), postgres {pg_cpu:.1}; wall {secs:.1} s x 2 cores"
    );
    b.db.drop().await;
    b.sim.shutdown().await;
    Ok(())
}

async fn events(n: usize) -> anyhow::Result<()> {
    let b = setup(n.max(1000), "100ms").await?;
    let status = worker(&b, &["scanner", "--full", "--types", "Shot"]).wait()?;
    anyhow::ensure!(status.success());
    // Record the start position, then write n updates on distinct shots in-process.
    let mut ev = worker(&b, &["events"]);
    let pos = |b: &Bench| {
        let db = b.db.db.clone();
        async move {
            sgcache::storage::read_event_position(&db)
                .await
                .ok()
                .flatten()
                .and_then(|p| p.last_event_id)
                .unwrap_or(-1)
        }
    };
    while pos(&b).await < 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = ev.kill();
    let _ = ev.wait();
    let auth = json!({"script_name": "sgcache_test", "script_key": "test_key"});
    let t = Instant::now();
    // Shots the seed retired refuse updates (no event): count the writes that took.
    let mut written = 0;
    for i in 0..n {
        let payload = json!({"type": "Shot", "id": i as i64 + 1, "fields": [{"field_name": "sg_cut_in", "value": i as i64 + 7}]});
        written += b.sim.call("update", auth.clone(), payload).is_ok() as usize;
    }
    eprintln!(
        "{written} events written in {:.1} s ({} updates refused: retired shots)",
        t.elapsed().as_secs_f64(),
        n - written
    );
    let newest = b.sim.call("read", auth.clone(), json!({"type": "EventLogEntry", "filters": {"logical_operator": "and", "conditions": []},
        "return_fields": ["id"], "sorts": [{"field_name": "id", "direction": "desc"}], "paging": {"entities_per_page": 1, "current_page": 1}}))
        .map_err(|e| anyhow::anyhow!(e.message))?["results"]["entities"][0]["id"].as_i64().unwrap_or(0);
    let start = pos(&b).await;
    let t = Instant::now();
    let mut ev = worker(&b, &["events"]);
    let mut first_move = None;
    loop {
        let p = pos(&b).await;
        if p > start && first_move.is_none() {
            first_move = Some(t.elapsed());
        }
        if p >= newest {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = t.elapsed();
    let _ = ev.kill();
    let _ = ev.wait();
    let applied = (newest - start) as f64;
    let ok = count(
        &b,
        &format!("SELECT count(*) FROM shot WHERE id <= {n} AND sg_cut_in = id + 6"),
    )
    .await;
    println!(
        "events: {applied} events applied in {:.2} s incl. start-up = {:.0} events/s ({:.0} events/s from the first commit); {ok}/{written} updated rows verified in the cache",
        total.as_secs_f64(),
        applied / total.as_secs_f64(),
        applied / (total - first_move.unwrap_or_default()).as_secs_f64().max(1e-3),
    );
    b.db.drop().await;
    b.sim.shutdown().await;
    Ok(())
}

async fn lag(secs: u64) -> anyhow::Result<()> {
    let b = setup(5000, "1s").await?;
    let status = worker(&b, &["scanner", "--full", "--types", "Shot"]).wait()?;
    anyhow::ensure!(status.success());
    let mut ev = worker(&b, &["events"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let site = client(&b.sim);
    let mut pending: BTreeMap<i64, (String, Instant)> = BTreeMap::new();
    let mut lags = Vec::new();
    let t = Instant::now();
    let mut i = 0u64;
    let mut next = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) || !pending.is_empty() {
        if t.elapsed() < Duration::from_secs(secs) && Instant::now() >= next {
            // 100 writes/s through the site's HTTP API, on distinct shots.
            let id = (i % 5000) as i64 + 1;
            let code = format!("lag{i}");
            let r = site.call("update", json!({"type": "Shot", "id": id, "fields": [{"field_name": "code", "value": code}]})).await;
            // Retired shots refuse updates; the rest are timed.
            if r.is_ok() {
                pending.insert(id, (code, Instant::now()));
            }
            i += 1;
            next += Duration::from_millis(10);
            continue;
        }
        let mut s = b.db.db.sql();
        s.push("SELECT id, code FROM shot WHERE id IN (");
        for (k, id) in pending.keys().enumerate() {
            s.push(if k == 0 { "" } else { ", " })
                .push_bind(SqlValue::Int(*id));
        }
        s.push(")");
        if !pending.is_empty() {
            let rows = match b.db.db.fetch_all(&s).await {
                Ok(rows) => rows,
                Err(e) => {
                    let _ = ev.kill();
                    let _ = ev.wait();
                    return Err(e.into());
                }
            };
            for r in rows {
                if let [SqlValue::Int(id), SqlValue::Text(c)] = r.as_slice() {
                    if pending.get(id).is_some_and(|(want, _)| want == c) {
                        let (_, at) = pending.remove(id).unwrap();
                        lags.push(at.elapsed());
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _ = ev.kill();
    let _ = ev.wait();
    lags.sort();
    let p = |q: f64| lags[((lags.len() as f64 * q) as usize).min(lags.len() - 1)].as_millis();
    println!(
        "lag: {} writes at 100/s, poll 1 s: p50 {} ms, p99 {} ms, max {} ms",
        lags.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
    b.db.drop().await;
    b.sim.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n = |d: u64| args.get(2).and_then(|s| s.parse().ok()).unwrap_or(d);
    match args.get(1).map(String::as_str) {
        Some("backfill") => backfill(n(100_000) as usize).await,
        Some("events") => events(n(20_000) as usize).await,
        Some("lag") => lag(n(30)).await,
        _ => anyhow::bail!("usage: freshness_bench backfill [SHOTS] | events [N] | lag [SECONDS]"),
    }
}
