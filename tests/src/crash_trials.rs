//! Crash trials (issue 24): the real workers are SIGKILLed again and again while the site takes
//! writes with events, writes without events (scanner only) and writes through the proxy.
//! Rounds alternate between `sgcache-worker all` (one process: proxy, follower and scanner) and
//! `events` + `scanner` as separate processes (each killed, at separate moments), beside a
//! standalone `proxy` that is never killed. After the last kill an undisturbed `all` catches
//! up, and then nothing may be lost or repeated:
//!
//! - the cache equals the site field by field for every cached type ([`crate::compare`]);
//! - the kept event log holds exactly the site's event ids in its window, each once;
//! - the follower's committed batches, from every process's JSON log, never cover an event
//!   twice (ranges never overlap, no late event applied twice).
//!
//! Run by the `crash-trials` benchmark (100 kills) and by a shorter test.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sgcache::plan::PlanOptions;
use sgcache::site::SiteClient;
use sgcache::spec::SiteConnection;
use sgcache::sql::SqlValue;
use sgcache::storage::{self, event_log};
use sgcache::ShotgunCacheSpec;
use shotgun_sim::{SeedConfig, SimConfig};

use crate::pg::TestDb;
use crate::worker::free_port;

const ENTITIES: &str = r#"
  - type: Shot
    fields: [code, description, sg_status_list, sg_cut_in, assets, project]
  - type: Asset
    fields: [code, shots, project]
"#;

const WORKERS: &str = "  events:\n    pollInterval: 300ms\n    gapWindow: 20s\n  scanner:\n    interval: 1s\n    overlap: 3s\n    pageSize: 40";

/// What a run found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub seed: u64,
    pub kills: usize,
    pub kills_all: usize,
    pub kills_events: usize,
    pub kills_scanner: usize,
    pub site_writes: usize,
    pub silent_writes: usize,
    pub proxy_writes: usize,
    /// Cache values differing from the site.
    pub differences: Vec<String>,
    /// Event ids kept in the log but not the site's, or the site's but not kept.
    pub log_differences: Vec<String>,
    pub events_kept: usize,
    /// Events applied twice (overlapping committed ranges, late ids repeated).
    pub applied_twice: Vec<String>,
    pub batches: usize,
    /// From the last kill to the undisturbed run having caught up.
    pub catch_up: Duration,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn clean(&self) -> bool {
        self.differences.is_empty()
            && self.log_differences.is_empty()
            && self.applied_twice.is_empty()
    }
}

/// A small xorshift generator; the seed is printed for replay.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn client(url: &str, script: &str, key: &str) -> SiteClient {
    SiteClient::new(SiteConnection {
        url: url.into(),
        script_name: script.into(),
        api_key: key.into(),
        timeout: Duration::from_secs(30),
    })
    .expect("site client")
}

/// Runs the trials until at least `kills` SIGKILLs were sent; `worker` is the
/// `sgcache-worker` binary. Progress goes to stderr.
pub async fn run(worker: &Path, kills: usize, seed: u64) -> anyhow::Result<Outcome> {
    let t0 = Instant::now();
    let mut out = Outcome {
        seed,
        ..Outcome::default()
    };
    let sim = shotgun_sim::start(
        SimConfig {
            seed: SeedConfig {
                scale: 40,
                ..SeedConfig::default()
            },
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let db = TestDb::create("crash_trials").await?;
    let dir = tempfile::tempdir()?;
    let (port_all, port_proxy) = (free_port(), free_port());
    let yaml = format!(
        "site:\n  url: {}\n  scriptName: {{value: sgcache_test}}\n  apiKey: {{value: test_key}}\n\
         database:\n  url: {{value: \"{}\"}}\n  maxConnections: 4\nentities:{ENTITIES}workers:\n{WORKERS}\n",
        sim.url(),
        db.url
    );
    let config = dir.path().join("sgcache.yaml");
    std::fs::write(&config, &yaml)?;
    let spec = ShotgunCacheSpec::from_yaml(&yaml, "crash-trials")?;
    let writer = client(&sim.url(), "sgcache_test", "test_key");
    storage::migrate(
        &db.db,
        &spec,
        &writer.schema().await?,
        PlanOptions::default(),
    )
    .await?;
    let logs = dir.path().to_path_buf();
    let spawn = |role: &str, log: &str, port: Option<u16>| -> anyhow::Result<Child> {
        let file = std::fs::File::create(logs.join(log))?;
        let mut cmd = Command::new(worker);
        cmd.arg("--config")
            .arg(&config)
            .args(["--log-format", "json", role])
            .env("RUST_LOG", "info")
            .env_remove("DATABASE_URL")
            .env_remove("SHOTGUN_URL")
            .env_remove("SGCACHE_CONFIG")
            .stdout(Stdio::null())
            .stderr(file);
        if let Some(p) = port {
            cmd.env("SGCACHE_PORT", p.to_string());
        }
        Ok(cmd.spawn()?)
    };

    // The standalone proxy, never killed: the proxy writes of the split rounds go through it.
    let mut proxy = spawn("proxy", "proxy.log", Some(port_proxy))?;
    let proxy_url = Arc::new(Mutex::new(format!("http://127.0.0.1:{port_proxy}")));
    let stop = Arc::new(AtomicBool::new(false));
    let shots = live(&writer, "Shot").await;
    let assets = live(&writer, "Asset").await;
    let loads = vec![
        tokio::spawn(site_load(
            client(&sim.url(), "sgcache_test", "test_key"),
            shots.clone(),
            assets.clone(),
            stop.clone(),
            seed,
        )),
        tokio::spawn(silent_load(
            client(&sim.url(), "silent_script", "silent_key"),
            shots.clone(),
            stop.clone(),
        )),
        tokio::spawn(proxy_load(proxy_url.clone(), shots.clone(), stop.clone())),
    ];

    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut round = 0;
    while out.kills < kills {
        if round % 2 == 0 {
            *proxy_url.lock().unwrap() = format!("http://127.0.0.1:{port_all}");
            let mut all = spawn("all", &format!("all-{round}.log"), Some(port_all))?;
            tokio::time::sleep(Duration::from_millis(300 + rng.below(2_000))).await;
            all.kill()?;
            all.wait()?;
            *proxy_url.lock().unwrap() = format!("http://127.0.0.1:{port_proxy}");
            out.kills_all += 1;
        } else {
            let mut ev = spawn("events", &format!("events-{round}.log"), None)?;
            let mut sc = spawn("scanner", &format!("scanner-{round}.log"), None)?;
            tokio::time::sleep(Duration::from_millis(200 + rng.below(1_500))).await;
            ev.kill()?;
            tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
            sc.kill()?;
            ev.wait()?;
            sc.wait()?;
            out.kills_events += 1;
            out.kills_scanner += 1;
        }
        out.kills = out.kills_all + out.kills_events + out.kills_scanner;
        round += 1;
        if round % 10 == 0 {
            eprintln!("crash-trials: {} kills", out.kills);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut counts = Vec::new();
    for l in loads {
        counts.push(l.await?);
    }
    (out.site_writes, out.silent_writes, out.proxy_writes) = (counts[0], counts[1], counts[2]);
    let last_kill = Instant::now();

    // An undisturbed run catches up.
    let mut last = spawn("all", "all-final.log", Some(port_all))?;
    let newest = newest_event(&writer).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let position = storage::read_event_position(&db.db).await.ok().flatten();
        let window = event_log::read_window(&db.db).await.ok().flatten();
        let fields = storage::list_fields(&db.db).await.unwrap_or_default();
        let ready = !fields.is_empty()
            && fields.iter().all(|f| {
                matches!(
                    f.state,
                    sgcache::plan::FieldState::Ready | sgcache::plan::FieldState::Dropped
                )
            });
        if ready
            && position.is_some_and(|p| p.last_event_id >= Some(newest) && p.backlog == json!([]))
            && window.is_some_and(|w| w.through >= newest)
        {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!("the last run never caught up (newest event {newest})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Writes without events show at the next scans.
    tokio::time::sleep(Duration::from_secs(4)).await;
    out.catch_up = last_kill.elapsed();
    out.differences = crate::compare::compare(&db.db, &writer).await;
    let window = event_log::read_window(&db.db)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no kept event log"))?;
    let kept = kept_ids(&db.db).await?;
    let site: BTreeSet<i64> = site_event_ids(&writer, window.floor)
        .await
        .into_iter()
        .filter(|id| *id <= window.through)
        .collect();
    out.events_kept = kept.len();
    for id in kept.difference(&site) {
        out.log_differences
            .push(format!("event {id} kept, not the site's"));
    }
    for id in site.difference(&kept) {
        out.log_differences
            .push(format!("event {id} of the site not kept"));
    }
    let _ = last.kill();
    let _ = last.wait();
    let _ = proxy.kill();
    let _ = proxy.wait();

    let mut batches = Vec::new();
    for e in std::fs::read_dir(&logs)?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("events-") || name.starts_with("all-") {
            batches.extend(committed(&std::fs::read_to_string(e.path())?));
        }
    }
    out.batches = batches.len();
    batches.sort();
    let ranges: Vec<_> = batches.iter().filter(|(a, t, _)| t > a).collect();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            out.applied_twice.push(format!(
                "batches ({}, {}] and ({}, {}] overlap",
                w[0].0, w[0].1, w[1].0, w[1].1
            ));
        }
    }
    let mut late = BTreeSet::new();
    for (_, _, l) in &batches {
        for id in l {
            if !late.insert(*id) {
                out.applied_twice
                    .push(format!("late event {id} applied twice"));
            }
        }
    }
    if !out.clean() {
        let keep = std::env::temp_dir().join(format!("sgcache-crash-trials-{seed}"));
        let _ = std::fs::create_dir_all(&keep);
        for e in std::fs::read_dir(&logs)?.flatten() {
            let _ = std::fs::copy(e.path(), keep.join(e.file_name()));
        }
        eprintln!("crash-trials: logs kept in {}", keep.display());
    }
    sim.shutdown().await;
    db.drop().await;
    out.elapsed = t0.elapsed();
    Ok(out)
}

async fn live(c: &SiteClient, ty: &str) -> Vec<i64> {
    crate::compare::site_rows(c, ty, &["code".into()])
        .await
        .into_iter()
        .filter(|(_, (retired, _))| !retired)
        .map(|(id, _)| id)
        .collect()
}

/// Writes with events until `stop`: field changes, link edits, retire/revive, creates.
async fn site_load(
    c: SiteClient,
    shots: Vec<i64>,
    assets: Vec<i64>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> usize {
    let mut rng = Rng(seed | 1);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let shot = shots[rng.below(shots.len() as u64) as usize];
        let asset =
            json!([{"type": "Asset", "id": assets[rng.below(assets.len() as u64) as usize]}]);
        let r = match rng.below(10) {
            0..=4 => {
                c.call(
                    "update",
                    json!({"type": "Shot", "id": shot, "fields": [
                {"field_name": "description", "value": format!("w{n}")}]}),
                )
                .await
            }
            5 => {
                c.call(
                    "update",
                    json!({"type": "Shot", "id": shot, "fields": [
                {"field_name": "assets", "value": asset, "multi_entity_update_mode": "add"}]}),
                )
                .await
            }
            6 => {
                c.call(
                    "update",
                    json!({"type": "Shot", "id": shot, "fields": [
                {"field_name": "assets", "value": asset, "multi_entity_update_mode": "remove"}]}),
                )
                .await
            }
            7 => c.call("delete", json!({"type": "Shot", "id": shot})).await,
            8 => c.call("revive", json!({"type": "Shot", "id": shot})).await,
            _ => {
                c.call(
                    "create",
                    json!({"type": "Asset", "fields": [
                {"field_name": "code", "value": format!("new{n}")}]}),
                )
                .await
            }
        };
        // A retired shot refuses updates: part of the load.
        n += usize::from(r.is_ok());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    n
}

/// Writes without events (only a scan sees them) until `stop`.
async fn silent_load(c: SiteClient, shots: Vec<i64>, stop: Arc<AtomicBool>) -> usize {
    let mut n = 0;
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let shot = shots[i % shots.len()];
        i += 1;
        let r = c
            .call(
                "update",
                json!({"type": "Shot", "id": shot, "fields": [
                    {"field_name": "sg_cut_in", "value": i as i64}]}),
            )
            .await;
        n += usize::from(r.is_ok());
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    n
}

/// Writes through whichever proxy is up until `stop` (failures while it restarts count for
/// nothing: the site may or may not have taken them, the comparison says which).
async fn proxy_load(url: Arc<Mutex<String>>, shots: Vec<i64>, stop: Arc<AtomicBool>) -> usize {
    let http = reqwest::Client::new();
    let mut n = 0;
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let shot = shots[(i * 7) % shots.len()];
        i += 1;
        let body = json!({"method_name": "update", "params": [
            {"script_name": "sgcache_test", "script_key": "test_key"},
            {"type": "Shot", "id": shot, "fields": [{"field_name": "code", "value": format!("p{i}")}]}]});
        let base = url.lock().unwrap().clone();
        let r = http
            .post(format!("{base}/api3/json"))
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(10))
            .body(body.to_string())
            .send()
            .await;
        if let Ok(r) = r {
            if r.status().is_success() {
                let v: Value = r.json().await.unwrap_or_default();
                n += usize::from(v.get("exception").is_none());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    n
}

async fn newest_event(c: &SiteClient) -> i64 {
    c.call(
        "read",
        json!({"type": "EventLogEntry", "filters": {"logical_operator": "and", "conditions": []},
               "return_fields": ["id"], "sorts": [{"field_name": "id", "direction": "desc"}],
               "paging": {"current_page": 1, "entities_per_page": 1}}),
    )
    .await
    .ok()
    .and_then(|v| v["entities"][0]["id"].as_i64())
    .unwrap_or(0)
}

/// The site's event ids above `after`.
async fn site_event_ids(c: &SiteClient, after: i64) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    let mut from = after;
    loop {
        let r = c
            .call(
                "read",
                json!({"type": "EventLogEntry",
                "filters": {"logical_operator": "and", "conditions": [
                    {"path": "id", "relation": "greater_than", "values": [from]}]},
                "return_fields": ["id"], "sorts": [{"field_name": "id", "direction": "asc"}],
                "paging": {"entities_per_page": 500, "current_page": 1}}),
            )
            .await
            .unwrap_or_default();
        let rows = r["entities"].as_array().cloned().unwrap_or_default();
        if rows.is_empty() {
            return out;
        }
        for e in rows {
            if let Some(id) = e["id"].as_i64() {
                from = from.max(id);
                out.insert(id);
            }
        }
    }
}

async fn kept_ids(db: &sgcache::sql::Db) -> anyhow::Result<BTreeSet<i64>> {
    let mut q = db.sql();
    q.push("SELECT id FROM \"_sgcache_event_log\"");
    Ok(db
        .fetch_all(&q)
        .await?
        .into_iter()
        .filter_map(|r| match r.first() {
            Some(SqlValue::Int(id)) => Some(*id),
            _ => None,
        })
        .collect())
}

/// (after, through] ranges and late ids of every committed batch in a JSON log.
pub fn committed(log: &str) -> Vec<(i64, i64, Vec<i64>)> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "events committed")
        .filter_map(|v| {
            let late = v["late"]
                .as_str()
                .unwrap_or("{}")
                .trim_matches(|c| c == '{' || c == '}')
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .collect();
            Some((v["after"].as_i64()?, v["through"].as_i64()?, late))
        })
        .collect()
}

/// One line saying what a run did and found.
pub fn describe(out: &Outcome) -> String {
    format!(
        "seed {}: {} kills ({} all, {} events, {} scanner) during {} site writes with events, {} \
         without, {} through the proxy; {} batches committed, {} events kept; caught up {:.1} s \
         after the last kill; {} values different, {} event ids different, {} applied twice; \
         {:.0} s in all",
        out.seed,
        out.kills,
        out.kills_all,
        out.kills_events,
        out.kills_scanner,
        out.site_writes,
        out.silent_writes,
        out.proxy_writes,
        out.batches,
        out.events_kept,
        out.catch_up.as_secs_f64(),
        out.differences.len(),
        out.log_differences.len(),
        out.applied_twice.len(),
        out.elapsed.as_secs_f64()
    )
}
