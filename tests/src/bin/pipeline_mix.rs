//! `cargo run --release -p sgcache-tests --bin pipeline-mix [-- --scale N --seconds N
//!  --warmup N --clients 1,16 --result-cache-mb N --site-latency-ms N]`
//!
//! The "pipeline mix" benchmark of issue #14: the reads pipeline tools send all day, through
//! the proxy, over a seeded test site and the cache of `examples/studio.yaml`.
//!
//! 1. Seeds the test site (scale N, default 2000) in this process, and adds a few Versions
//!    created now (for "versions created in the last 7 days"; the seed's dates end in 2025).
//! 2. Runs the real `sgcache-worker all` (migrate, proxy, event follower, scanner) with the
//!    entities of `examples/studio.yaml` against a fresh PostgreSQL database, and waits until
//!    every type is backfilled (`/readyz` `types_ready`). The worker is the binary beside this
//!    one (build both with the same profile) or `SGCACHE_WORKER_BIN`.
//! 3. Sends every variant of every read shape once to the site and once through the proxy
//!    (shotgun_api3's JSON payloads over HTTP) and counts the answers that differ.
//! 4. For each client count: a warm-up phase (the same mix, not measured: the proxy learns
//!    credentials and, once earned trust lands, checks its classes), then a measured phase.
//!    Reports the share of reads answered from the cache (from the proxy's
//!    `sgcache_proxy_requests_total{method="read"}` by path and reason), p50/p99 per read
//!    shape, the site's requests during the phase (`/control/stats`) and the proxy's
//!    `sgcache_proxy_trust_*` series ("n/a" while the proxy has none).
//!
//! Prints markdown tables. Exits non-zero when a proxy answer differs from the site's.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sgcache_tests::pg::TestDb;
use sgcache_tests::proxy::script_auth;
use shotgun_sim::{SeedConfig, SimConfig, SimHandle};

/// The studio's cache spec; only its `entities` are used (site, database and workers are
/// this benchmark's).
const STUDIO: &str = include_str!("../../../examples/studio.yaml");

/// Versions created on the site just before the worker starts, so that "created in the
/// last 7 days" finds some.
const RECENT_VERSIONS: usize = 40;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(name: &str, default: usize) -> usize {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One kind of read a pipeline sends, with the concrete payloads it is measured with.
struct Shape {
    name: &'static str,
    variants: Vec<Value>,
}

fn link(ty: &str, id: u64) -> Value {
    json!({"type": ty, "id": id})
}

fn cond(path: &str, relation: &str, values: Value) -> Value {
    json!({"path": path, "relation": relation, "values": values})
}

/// The payload `shotgun_api3` 3.x sends for `find(ty, filters, fields, order, limit)`
/// (`per_page` is `limit`, or the site's page size for an unlimited find).
fn find(ty: &str, conds: Value, fields: &[&str], sorts: Value, per_page: u64) -> Value {
    let mut p = json!({
        "type": ty,
        "return_fields": fields,
        "filters": {"logical_operator": "and", "conditions": conds},
        "return_only": "active",
        "paging": {"entities_per_page": per_page, "current_page": 1},
        "api_return_image_urls": true,
        "return_paging_info_without_counts": false,
    });
    if sorts.as_array().is_some_and(|s| !s.is_empty()) {
        p["sorts"] = sorts;
    }
    p
}

fn asc(field: &str) -> Value {
    json!([{"field_name": field, "direction": "asc"}])
}

fn desc(field: &str) -> Value {
    json!([{"field_name": field, "direction": "desc"}])
}

fn body(payload: &Value) -> String {
    json!({"method_name": "read", "params": [script_auth(), payload]}).to_string()
}

/// A read answered by the site in-process (not counted in its stats): the entities.
fn site_entities(sim: &SimHandle, payload: Value) -> anyhow::Result<Vec<Value>> {
    let r = sim
        .call("read", script_auth(), payload)
        .map_err(|e| anyhow::anyhow!("site read: {}", e.message))?;
    Ok(r["results"]["entities"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn all(sim: &SimHandle, ty: &str, conds: Value, fields: &[&str]) -> anyhow::Result<Vec<Value>> {
    site_entities(
        sim,
        json!({"type": ty, "filters": {"logical_operator": "and", "conditions": conds},
               "return_fields": fields, "sorts": asc("id")}),
    )
}

fn ids(rows: &[Value]) -> Vec<u64> {
    rows.iter().filter_map(|r| r["id"].as_u64()).collect()
}

/// `n` items spread evenly over `items`.
fn spread<T: Clone>(items: &[T], n: usize) -> Vec<T> {
    if items.is_empty() {
        return Vec::new();
    }
    let step = (items.len() / n.max(1)).max(1);
    items.iter().step_by(step).take(n).cloned().collect()
}

/// Distinct string values of `field` in `rows`, in first-seen order.
fn distinct(rows: &[Value], field: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in rows.iter().filter_map(|r| r[field].as_str()) {
        if !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
    }
    out
}

/// The read shapes of the issue, with variants taken from the seeded site.
fn shapes(sim: &SimHandle) -> anyhow::Result<Vec<Shape>> {
    let projects = ids(&all(
        sim,
        "Project",
        json!([cond("archived", "is", json!([false]))]),
        &["name"],
    )?);
    let project_of = |p: &u64| link("Project", *p);
    let shot_rows = all(
        sim,
        "Shot",
        json!([cond(
            "project",
            "in",
            json!(projects.iter().map(project_of).collect::<Vec<_>>())
        )]),
        &["code"],
    )?;
    let shots = spread(&ids(&shot_rows), 12);
    let sequences = all(sim, "Sequence", json!([]), &["code"])?;
    let sequence_ids = spread(&ids(&sequences), 10);
    let sequence_codes = spread(&distinct(&sequences, "code"), 10);
    let logins = spread(
        &distinct(&all(sim, "HumanUser", json!([]), &["login"])?, "login"),
        10,
    );
    let tasks = all(
        sim,
        "Task",
        json!([]),
        &["task_assignees", "sg_status_list"],
    )?;
    let assignees: Vec<u64> = {
        let mut seen: Vec<u64> = tasks
            .iter()
            .flat_map(|t| t["task_assignees"].as_array().cloned().unwrap_or_default())
            .filter_map(|u| u["id"].as_u64())
            .collect();
        seen.sort_unstable();
        seen.dedup();
        spread(&seen, 10)
    };
    let statuses = distinct(&tasks, "sg_status_list");
    let done = if statuses.iter().any(|s| s == "fin") {
        "fin".to_string()
    } else {
        statuses.first().cloned().unwrap_or_else(|| "fin".into())
    };
    let asset_types = distinct(
        &all(sim, "Asset", json!([]), &["sg_asset_type"])?,
        "sg_asset_type",
    );
    let id_lists: Vec<Vec<u64>> = (0..8usize)
        .map(|k| spread(ids(&shot_rows).get(k * 7..).unwrap_or(&[]), 20))
        .collect();
    let non_ascii = ["übergang", "séquence", "naïve", "镜头"];

    let per_shot = |f: &dyn Fn(u64) -> Value| shots.iter().map(|s| f(*s)).collect::<Vec<_>>();
    let per_project = |f: &dyn Fn(u64) -> Value| projects.iter().map(|p| f(*p)).collect();
    let mut out = vec![
        Shape {
            name: "shots of a project by code",
            variants: per_project(&|p| {
                find(
                    "Shot",
                    json!([cond("project", "is", json!([link("Project", p)]))]),
                    &[
                        "code",
                        "sg_status_list",
                        "sg_sequence",
                        "description",
                        "sg_cut_in",
                        "sg_cut_out",
                    ],
                    asc("code"),
                    500,
                )
            }),
        },
        Shape {
            name: "tasks of an entity",
            variants: per_shot(&|s| {
                find(
                    "Task",
                    json!([cond("entity", "is", json!([link("Shot", s)]))]),
                    &[
                        "content",
                        "step",
                        "sg_status_list",
                        "task_assignees",
                        "start_date",
                        "due_date",
                    ],
                    json!([]),
                    500,
                )
            }),
        },
        Shape {
            name: "latest versions of a shot",
            variants: per_shot(&|s| {
                find(
                    "Version",
                    json!([cond("entity", "is", json!([link("Shot", s)]))]),
                    &["code", "sg_status_list", "user", "sg_task", "created_at"],
                    desc("created_at"),
                    5,
                )
            }),
        },
        Shape {
            name: "publishes of an entity",
            variants: per_shot(&|s| {
                find(
                    "PublishedFile",
                    json!([cond("entity", "is", json!([link("Shot", s)]))]),
                    &[
                        "code",
                        "path",
                        "version_number",
                        "published_file_type",
                        "task",
                        "version",
                    ],
                    desc("created_at"),
                    500,
                )
            }),
        },
        Shape {
            name: "notes on an entity",
            variants: per_shot(&|s| {
                find(
                    "Note",
                    json!([cond("note_links", "in", json!([link("Shot", s)]))]),
                    &["subject", "content", "user", "addressings_to", "created_at"],
                    desc("created_at"),
                    500,
                )
            }),
        },
        Shape {
            name: "a user by login",
            variants: logins
                .iter()
                .map(|l| {
                    find(
                        "HumanUser",
                        json!([cond("login", "is", json!([l]))]),
                        &["name", "login", "email", "sg_status_list"],
                        json!([]),
                        1,
                    )
                })
                .collect(),
        },
        Shape {
            name: "my open tasks",
            variants: assignees
                .iter()
                .map(|u| {
                    find(
                        "Task",
                        json!([
                            cond("task_assignees", "is", json!([link("HumanUser", *u)])),
                            cond("sg_status_list", "is_not", json!([done]))
                        ]),
                        &["content", "entity", "step", "due_date", "sg_status_list"],
                        asc("due_date"),
                        500,
                    )
                })
                .collect(),
        },
        Shape {
            name: "a sequence's shots",
            variants: sequence_ids
                .iter()
                .map(|q| {
                    find(
                        "Shot",
                        json!([cond("sg_sequence", "is", json!([link("Sequence", *q)]))]),
                        &["code", "sg_status_list", "sg_cut_in", "sg_cut_out"],
                        asc("code"),
                        500,
                    )
                })
                .collect(),
        },
        Shape {
            name: "assets of a project by type, by code",
            variants: projects
                .iter()
                .flat_map(|p| asset_types.iter().map(move |t| (*p, t.clone())))
                .map(|(p, t)| {
                    find(
                        "Asset",
                        json!([
                            cond("project", "is", json!([link("Project", p)])),
                            cond("sg_asset_type", "is", json!([t]))
                        ]),
                        &["code", "sg_status_list", "description"],
                        asc("code"),
                        500,
                    )
                })
                .collect(),
        },
        Shape {
            name: "steps",
            variants: vec![find(
                "Step",
                json!([]),
                &["code", "short_name", "entity_type", "color", "list_order"],
                json!([]),
                500,
            )],
        },
        Shape {
            name: "shots by id list",
            variants: id_lists
                .iter()
                .map(|l| {
                    find(
                        "Shot",
                        json!([cond("id", "in", json!(l))]),
                        &["code", "sg_status_list", "project"],
                        json!([]),
                        500,
                    )
                })
                .collect(),
        },
        Shape {
            name: "versions created in the last 7 days",
            variants: per_project(&|p| {
                find(
                    "Version",
                    json!([
                        cond("project", "is", json!([link("Project", p)])),
                        cond("created_at", "in_last", json!([7, "DAY"]))
                    ]),
                    &["code", "entity", "user", "created_at"],
                    desc("created_at"),
                    500,
                )
            }),
        },
        Shape {
            name: "tasks of a sequence (2 hops)",
            variants: sequence_codes
                .iter()
                .map(|c| {
                    find(
                        "Task",
                        json!([cond(
                            "entity.Shot.sg_sequence.Sequence.code",
                            "is",
                            json!([c])
                        )]),
                        &["content", "entity", "sg_status_list"],
                        json!([]),
                        500,
                    )
                })
                .collect(),
        },
        Shape {
            name: "versions with their sequence (2-hop field)",
            variants: per_shot(&|s| {
                find(
                    "Version",
                    json!([cond("entity", "is", json!([link("Shot", s)]))]),
                    &["code", "entity", "entity.Shot.sg_sequence.Sequence.code"],
                    json!([]),
                    500,
                )
            }),
        },
        Shape {
            name: "shots by non-ASCII text",
            variants: projects
                .iter()
                .flat_map(|p| non_ascii.iter().map(move |w| (*p, *w)))
                .map(|(p, w)| {
                    find(
                        "Shot",
                        json!([
                            cond("project", "is", json!([link("Project", p)])),
                            cond("description", "contains", json!([w.to_uppercase()]))
                        ]),
                        &["code", "description"],
                        json!([]),
                        500,
                    )
                })
                .collect(),
        },
    ];
    out.retain(|s| !s.variants.is_empty());
    Ok(out)
}

/// Versions created now on a few shots (in-process, so they are events too).
fn create_recent_versions(sim: &SimHandle) -> anyhow::Result<()> {
    let shots = all(sim, "Shot", json!([]), &["project"])?;
    for (i, shot) in spread(&shots, RECENT_VERSIONS).iter().enumerate() {
        sim.call(
            "create",
            script_auth(),
            json!({"type": "Version", "fields": [
                {"field_name": "code", "value": format!("recent_v{i:03}")},
                {"field_name": "entity", "value": link("Shot", shot["id"].as_u64().unwrap_or(1))},
                {"field_name": "project", "value": shot["project"]},
            ]}),
        )
        .map_err(|e| anyhow::anyhow!("create Version: {}", e.message))?;
    }
    Ok(())
}

/// The `entities:` section of `examples/studio.yaml`, verbatim.
fn studio_entities() -> anyhow::Result<&'static str> {
    let start = STUDIO
        .find("\nentities:")
        .ok_or_else(|| anyhow::anyhow!("examples/studio.yaml has no entities"))?;
    let end = STUDIO[start + 1..]
        .find("\nworkers:")
        .map(|e| start + 1 + e)
        .unwrap_or(STUDIO.len());
    Ok(&STUDIO[start + 1..end])
}

fn entity_count(entities: &str) -> usize {
    entities.matches("- type:").count()
}

struct Worker {
    child: Child,
    url: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_worker(
    sim: &SimHandle,
    db_url: &str,
    entities: &str,
    result_cache_mb: usize,
) -> anyhow::Result<Worker> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = tempfile::tempdir()?;
    // The scanner's periodic rescan is pushed past the run so that the site requests of a
    // measured phase are the proxy's (pass-through and trust checks) and the follower's polls.
    let yaml = format!(
        "site:\n  url: {}\n  scriptName: {{value: sgcache_test}}\n  apiKey: {{value: test_key}}\n  timeout: 30s\n\
         database:\n  url: {{value: \"{db_url}\"}}\n  maxConnections: 10\n\
         {entities}\n\
         workers:\n  proxy:\n    port: {port}\n    resultCacheMb: {result_cache_mb}\n  events:\n    pollInterval: 1s\n  scanner:\n    interval: 3600s\n    pageSize: 500\n",
        sim.url()
    );
    let config = dir.path().join("sgcache.yaml");
    std::fs::write(&config, yaml)?;
    let log = dir.path().join("worker.log");
    let child = Command::new(sgcache_tests::worker::beside_this_binary())
        .arg("--config")
        .arg(&config)
        .arg("all")
        .env(
            "RUST_LOG",
            std::env::var("BENCH_WORKER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env_remove("DATABASE_URL")
        .env_remove("SHOTGUN_URL")
        .env_remove("SHOTGUN_SCRIPT_NAME")
        .env_remove("SHOTGUN_API_KEY")
        .env_remove("SGCACHE_CONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    Ok(Worker {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
        _dir: dir,
    })
}

/// Waits until `/readyz` reports every type backfilled.
async fn wait_backfilled(
    w: &mut Worker,
    http: &reqwest::Client,
    types: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if let Some(status) = w.child.try_wait()? {
            anyhow::bail!(
                "the worker exited ({status}):\n{}",
                std::fs::read_to_string(&w.log).unwrap_or_default()
            );
        }
        if let Ok(r) = http.get(format!("{}/readyz", w.url)).send().await {
            let v: Value = r.json().await.unwrap_or_default();
            if v["types_ready"].as_u64().unwrap_or(0) as usize >= types {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!(
        "not every type was backfilled within {timeout:?}; worker log:\n{}",
        std::fs::read_to_string(&w.log).unwrap_or_default()
    )
}

/// POSTs a read: the `x-sgcache-path` header and the parsed body, if it answered.
async fn post(http: &reqwest::Client, url: &str, body: String) -> Option<(String, Value)> {
    let posted = sgcache_tests::worker::post_api3(http, url, body).await?;
    let v: Value = serde_json::from_slice(&posted.body.ok()?).ok()?;
    posted.success.then(|| (posted.path.unwrap_or_default(), v))
}

/// The proxy's `/metrics` as `name{labels}` → value (comments skipped).
async fn metrics(http: &reqwest::Client, base: &str) -> BTreeMap<String, f64> {
    let text = match http.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn label<'a>(series: &'a str, name: &str) -> Option<&'a str> {
    let start = series.find(&format!("{name}=\""))? + name.len() + 2;
    let len = series[start..].find('"')?;
    Some(&series[start..start + len])
}

/// Reads counted by the proxy between two snapshots, by (path, reason).
fn read_counts(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for (k, v) in after {
        if !k.starts_with("sgcache_proxy_requests_total{") || label(k, "method") != Some("read") {
            continue;
        }
        let d = v - before.get(k).copied().unwrap_or(0.0);
        if d > 0.0 {
            let key = (
                label(k, "path").unwrap_or("?").to_string(),
                label(k, "reason").unwrap_or("?").to_string(),
            );
            *out.entry(key).or_insert(0) += d as u64;
        }
    }
    out
}

/// The `sgcache_proxy_trust_*` series that changed between two snapshots, or "n/a" when the
/// proxy has none.
fn trust_delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> String {
    let series: Vec<_> = after
        .iter()
        .filter(|(k, _)| k.starts_with("sgcache_proxy_trust_"))
        .collect();
    if series.is_empty() {
        return "n/a".into();
    }
    let changed: Vec<String> = series
        .iter()
        .filter_map(|(k, v)| {
            let d = **v - before.get(*k).copied().unwrap_or(0.0);
            (d != 0.0).then(|| format!("`{k}` +{d}"))
        })
        .collect();
    if changed.is_empty() {
        "unchanged".into()
    } else {
        changed.join(", ")
    }
}

fn counter_delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, name: &str) -> u64 {
    let at = |m: &BTreeMap<String, f64>| m.get(name).copied().unwrap_or(0.0);
    (at(after) - at(before)).max(0.0) as u64
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// What one shape saw during a phase.
#[derive(Default, Clone)]
struct ShapeRun {
    lat: Vec<Duration>,
    cache: u64,
    errors: u64,
}

/// `clients` tasks sending the mix for `secs`: per shape, latencies and paths.
async fn drive(
    http: &reqwest::Client,
    api: &str,
    bodies: &Arc<Vec<Vec<String>>>,
    clients: usize,
    secs: f64,
) -> (Vec<ShapeRun>, f64) {
    let runs = Arc::new(Mutex::new(vec![ShapeRun::default(); bodies.len()]));
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let dur = Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, api, bodies, runs, next) = (
            http.clone(),
            api.to_string(),
            bodies.clone(),
            runs.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut mine = vec![ShapeRun::default(); bodies.len()];
            while start.elapsed() < dur {
                // Round robin over the shapes, then over each shape's variants.
                let i = next.fetch_add(1, Ordering::Relaxed);
                let shape = i % bodies.len();
                let variants = &bodies[shape];
                let b = variants[(i / bodies.len()) % variants.len()].clone();
                let t = Instant::now();
                let r = post(&http, &api, b).await;
                let run = &mut mine[shape];
                match r {
                    Some((path, _)) => {
                        run.lat.push(t.elapsed());
                        run.cache += u64::from(path == "cache");
                    }
                    None => run.errors += 1,
                }
            }
            let mut all = runs.lock().unwrap_or_else(|e| e.into_inner());
            for (a, m) in all.iter_mut().zip(mine) {
                a.lat.extend(m.lat);
                a.cache += m.cache;
                a.errors += m.errors;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut runs = std::mem::take(&mut *runs.lock().unwrap_or_else(|e| e.into_inner()));
    for r in &mut runs {
        r.lat.sort();
    }
    (runs, elapsed)
}

/// Figures of one measured phase.
struct Phase {
    clients: usize,
    runs: Vec<ShapeRun>,
    secs: f64,
    reads: BTreeMap<(String, String), u64>,
    site_reads: u64,
    follower_reads: u64,
    /// Cached reads answered from the answers the proxy keeps in memory (no query).
    kept_hits: u64,
    trust: String,
}

impl Phase {
    fn total(&self) -> u64 {
        self.reads.values().sum()
    }

    fn cached(&self) -> u64 {
        self.reads
            .iter()
            .filter(|((p, _), _)| p == "cache")
            .map(|(_, n)| n)
            .sum()
    }

    fn passed_through(&self) -> u64 {
        self.reads
            .iter()
            .filter(|((p, _), _)| p == "site")
            .map(|(_, n)| n)
            .sum()
    }

    fn reasons(&self) -> String {
        let r: Vec<String> = self
            .reads
            .iter()
            .filter(|((p, _), _)| p != "cache")
            .map(|((p, reason), n)| format!("{p}/{reason} {n}"))
            .collect();
        if r.is_empty() {
            "none".into()
        } else {
            r.join(", ")
        }
    }
}

fn site_reads(sim: &SimHandle) -> (u64, u64) {
    let s = sim.stats();
    let reads = s.by_method.get("read").copied().unwrap_or(0);
    let events = s.by_entity_type.get("EventLogEntry").copied().unwrap_or(0);
    (reads, events)
}

async fn measure(
    sim: &SimHandle,
    http: &reqwest::Client,
    base: &str,
    bodies: &Arc<Vec<Vec<String>>>,
    clients: usize,
    secs: f64,
) -> Phase {
    let api = format!("{base}/api3/json");
    let before = metrics(http, base).await;
    let (reads0, events0) = site_reads(sim);
    let (runs, elapsed) = drive(http, &api, bodies, clients, secs).await;
    let (reads1, events1) = site_reads(sim);
    let after = metrics(http, base).await;
    Phase {
        clients,
        runs,
        secs: elapsed,
        reads: read_counts(&before, &after),
        site_reads: reads1 - reads0,
        follower_reads: events1 - events0,
        kept_hits: counter_delta(&before, &after, "sgcache_proxy_result_cache_hits_total"),
        trust: trust_delta(&before, &after),
    }
}

/// The reason the proxy gives for one read of each shape (sent alone, between two metric
/// snapshots).
async fn reasons_by_shape(
    http: &reqwest::Client,
    base: &str,
    bodies: &[Vec<String>],
) -> Vec<String> {
    let api = format!("{base}/api3/json");
    let mut out = Vec::new();
    for variants in bodies {
        let before = metrics(http, base).await;
        let _ = post(http, &api, variants[0].clone()).await;
        let after = metrics(http, base).await;
        let r: Vec<String> = read_counts(&before, &after)
            .into_keys()
            .map(|(p, reason)| {
                if p == "cache" {
                    p
                } else {
                    format!("{p}: {reason}")
                }
            })
            .collect();
        out.push(if r.is_empty() {
            "?".into()
        } else {
            r.join(", ")
        });
    }
    out
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "n/a".into();
    }
    format!("{:.1} %", 100.0 * part as f64 / whole as f64)
}

fn print_tables(shapes: &[Shape], reasons: &[String], phases: &[Phase]) {
    println!("\n### Per read shape (measured phases)\n");
    let mut head = "| read shape | variants | passes through because |".to_string();
    let mut rule = "|---|---:|---|".to_string();
    for p in phases {
        head.push_str(&format!(
            " from cache, {c} cl. | p50 ms, {c} cl. | p99 ms, {c} cl. |",
            c = p.clients
        ));
        rule.push_str("---:|---:|---:|");
    }
    println!("{head}\n{rule}");
    for (i, s) in shapes.iter().enumerate() {
        let mut row = format!("| {} | {} | {} |", s.name, s.variants.len(), reasons[i]);
        for p in phases {
            let r = &p.runs[i];
            row.push_str(&format!(
                " {} | {:.2} | {:.2} |",
                pct(r.cache, r.lat.len() as u64),
                percentile(&r.lat, 0.5),
                percentile(&r.lat, 0.99)
            ));
        }
        println!("{row}");
    }
    println!("\n### Per phase\n");
    println!(
        "| clients | reads | reads/s | from cache | of which kept answers | passed through | errors | site reads | of which follower polls | other site reads (trust checks, auth) | `sgcache_proxy_trust_*` |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for p in phases {
        let errors: u64 = p.runs.iter().map(|r| r.errors).sum();
        let other = p
            .site_reads
            .saturating_sub(p.follower_reads)
            .saturating_sub(p.passed_through());
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.clients,
            p.total(),
            p.total() as f64 / p.secs,
            pct(p.cached(), p.total()),
            p.kept_hits,
            p.passed_through(),
            errors,
            p.site_reads,
            p.follower_reads,
            other,
            p.trust
        );
    }
    for p in phases {
        println!(
            "\nreads not from the cache, {} client(s) (path/reason count): {}",
            p.clients,
            p.reasons()
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let scale = num("--scale", 2000);
    let secs = num("--seconds", 20) as f64;
    let warmup = num("--warmup", 10) as f64;
    // Answers kept in memory by the proxy (`workers.proxy.resultCacheMb`; 64 is the product's
    // default, 0 makes every cached read run its query).
    let result_cache_mb = num("--result-cache-mb", 64);
    // Latency the site adds to every answer once the cache is backfilled (the test site runs
    // in this process and answers in well under a millisecond; a real site takes 50-300 ms).
    let site_latency_ms = num("--site-latency-ms", 0) as u64;
    let ready_timeout = Duration::from_secs(num("--ready-timeout", 900) as u64);
    let clients: Vec<usize> = arg("--clients")
        .unwrap_or_else(|| "1,16".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();

    let t = Instant::now();
    let sim = shotgun_sim::start(
        SimConfig {
            seed: SeedConfig {
                scale,
                ..SeedConfig::default()
            },
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    create_recent_versions(&sim)?;
    let shapes = shapes(&sim)?;
    let db = TestDb::create("sgcache_pipeline_mix").await?;
    let entities = studio_entities()?;
    let mut worker = start_worker(&sim, &db.url, entities, result_cache_mb)?;
    let http = reqwest::Client::new();
    wait_backfilled(&mut worker, &http, entity_count(entities), ready_timeout).await?;
    let faults = sim
        .faults()
        .merged(&json!({ "latency_ms": site_latency_ms }))
        .map_err(|e| anyhow::anyhow!(e))?;
    sim.set_faults(faults);
    println!(
        "setup: test site at scale {scale} ({:?}), {} types of examples/studio.yaml backfilled, {:.1} s",
        sim.seed_counts(),
        entity_count(entities),
        t.elapsed().as_secs_f64()
    );

    // Every variant answered by the site and by the proxy: the answers must be identical.
    let bodies: Arc<Vec<Vec<String>>> = Arc::new(
        shapes
            .iter()
            .map(|s| s.variants.iter().map(body).collect())
            .collect(),
    );
    let api = format!("{}/api3/json", worker.url);
    let site_api = format!("{}/api3/json", sim.url());
    let mut differ = 0;
    let mut compared = 0;
    for (shape, variants) in shapes.iter().zip(bodies.iter()) {
        for b in variants {
            let site = post(&http, &site_api, b.clone()).await.map(|r| r.1);
            let proxy = post(&http, &api, b.clone()).await;
            compared += 1;
            if site.is_none() || proxy.as_ref().map(|p| &p.1) != site.as_ref() {
                differ += 1;
                eprintln!(
                    "DIFFERS ({}, path {:?}): {b}",
                    shape.name,
                    proxy.map(|p| p.0)
                );
            }
        }
    }
    println!("correctness: {compared} reads compared with the site, {differ} differ");

    let mut phases = Vec::new();
    let mut reasons = Vec::new();
    for c in &clients {
        let _ = drive(&http, &api, &bodies, *c, warmup).await;
        if reasons.is_empty() {
            reasons = reasons_by_shape(&http, &worker.url, &bodies).await;
        }
        phases.push(measure(&sim, &http, &worker.url, &bodies, *c, secs).await);
    }
    println!(
        "\nwarm-up {warmup} s then {secs} s measured per client count; site latency {site_latency_ms} ms; \
         answers kept {result_cache_mb} MiB; worker: {}",
        sgcache_tests::worker::beside_this_binary().display()
    );
    print_tables(&shapes, &reasons, &phases);

    drop(worker);
    sim.shutdown().await;
    db.drop().await;
    anyhow::ensure!(differ == 0, "{differ} proxy answers differ from the site's");
    Ok(())
}
