//! `cargo run --release -p sgcache-tests --bin storm-bench [-- --connections 16,1000,5000
//!  --seconds 15 --latency-ms 100 --only a,b,c,d --worker <sgcache-worker binary>
//!  --client conn|reqwest|wrk --gzip --proxy-cpus 0 --think-ms 0]`
//!
//! `--think-ms N` makes each connection wait N ms after each answer before its next read (a
//! job working between its reads) instead of sending back to back: the connections still
//! start at the same instant, so with no other spread they send in waves, every connection at
//! once, as a farm's jobs do when they start together. 0 (the default) is the closed loop
//! that keeps the two cores saturated. Built-in generators only.
//!
//! `--client wrk` drives the storm with `wrk` (Debian's package; far less CPU per request than
//! a Rust client sharing the machine's cores): see [`sgcache_tests::wrk`]. `--gzip` makes it
//! ask for compressed answers (`accept-encoding: gzip`), as `shotgun_api3` does.
//!
//! `--proxy-cpus` pins the proxy to those CPUs (`taskset -c`); run the benchmark itself under
//! `taskset -c` on the others, so the load generator and the site do not take the proxy's
//! cores and the figures say how the proxy scales with connections.
//!
//! The crowd benchmark of issue #20: a render farm's storm of identical reads. The test site
//! (its own runtime, `--latency-ms` added to every answer) and the release `sgcache-worker
//! proxy` (its own process, PostgreSQL cache filled from the site) are started once; then for
//! each scenario and each connection count, that many connections send reads back to back
//! for `--seconds`:
//!
//! * (a) one cached read (Shot, three cached fields), from one principal;
//! * (b) one read the cache passes through (an uncached type, `Playlist`), from one principal;
//! * (c) the cached read of (a) while a writer updates the very shot it returns through the
//!   proxy every 250 ms (each write drops the kept answer: the crowd re-runs one statement);
//! * (d) a mix of 20 distinct reads (10 cached, 10 passed through) from 5 principals.
//!
//! Each line gives throughput, p50/p99, client errors (transport errors, non-200 answers, API3
//! errors) and what the site received: requests in all, and the reads among them per distinct
//! passed-through read, beside the target `seconds / site round trip + 1`. Prints figures; the
//! only assertion is that the proxy answers as the site does before the storm starts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sgcache::plan::PlanOptions;
use sgcache::ShotgunCacheSpec;
use sgcache_tests::cpu;
use sgcache_tests::pg::TestDb;
use sgcache_tests::worker::BenchProxy;
use shotgun_sim::{ScriptCredential, SimConfig, SimHandle};

const ENTITIES: &str = "
entities:
  - type: Project
    fields: [name, archived]
  - type: Shot
    fields: [code, sg_status_list, description, project]
";

/// Principals of scenario (d) (and `storm_0` for the others).
const PRINCIPALS: usize = 5;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn auth(p: usize) -> Value {
    json!({"script_name": format!("storm_{p}"), "script_key": format!("storm_key_{p}")})
}

fn read_body(p: usize, payload: &Value) -> String {
    json!({"method_name": "read", "params": [auth(p), payload]}).to_string()
}

/// `find(ty, [["id", "is", id]] or [], fields, limit=page)` as `shotgun_api3` sends it.
fn find(ty: &str, fields: &[&str], conditions: Value, page: u64) -> Value {
    json!({
        "type": ty,
        "return_fields": fields,
        "filters": {"logical_operator": "and", "conditions": conditions},
        "return_only": "active",
        "paging": {"entities_per_page": page, "current_page": 1},
        "api_return_image_urls": true,
        "return_paging_info_without_counts": false,
    })
}

fn cached_read(shot: i64) -> Value {
    find(
        "Shot",
        &["code", "sg_status_list", "description"],
        json!([{"path": "id", "relation": "is", "values": [shot]}]),
        50,
    )
}

fn passed_read(n: u64) -> Value {
    find("Playlist", &["code"], json!([]), 10 + n)
}

/// The test site on a runtime (and thread) of its own, so the load generator cannot delay
/// its answers.
fn start_site(latency_ms: u64) -> anyhow::Result<SimHandle> {
    let mut config = SimConfig::default();
    for p in 0..PRINCIPALS {
        config.scripts.push(ScriptCredential {
            script_name: format!("storm_{p}"),
            script_key: format!("storm_key_{p}"),
            events: true,
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the site's runtime");
        rt.block_on(async move {
            let started = shotgun_sim::start(config, "127.0.0.1:0".parse().expect("address")).await;
            let _ = tx.send(started);
            std::future::pending::<()>().await
        });
    });
    let handle = rx.recv()??;
    let mut faults = handle.faults();
    faults.latency_ms = latency_ms;
    handle.set_faults(faults);
    Ok(handle)
}

async fn start_proxy(site_url: &str, db_url: &str) -> anyhow::Result<BenchProxy> {
    let config = |port| {
        format!(
            "site:\n  url: {site_url}\n  scriptName: {{value: sgcache_test}}\n  apiKey: {{value: test_key}}\n\
             database:\n  url:\n    value: {db_url}\n\
             workers:\n  proxy:\n    port: {port}\n    authTtl: 600s\n{ENTITIES}"
        )
    };
    BenchProxy::start(config, 2).await
}

/// One request: the answer's path header, or `None` for a client error.
async fn call(http: &reqwest::Client, url: &str, body: String) -> Option<String> {
    let posted = sgcache_tests::worker::post_api3(http, url, body).await?;
    if !posted.success {
        return None;
    }
    let body = posted.body.ok()?;
    // An API3 error (`"exception": true`) is a client error too.
    let error = body.windows(17).any(|w| w == b"\"exception\":true");
    posted.path.filter(|_| !error)
}

struct Run {
    /// Each connection's first read, its connect included (a farm's jobs connecting at once).
    first: Vec<Duration>,
    /// Every read after each connection's first.
    later: Vec<Duration>,
    errors: u64,
    cache: u64,
    secs: f64,
}

/// What a run's line reports, from either load generator.
struct Figures {
    reads: u64,
    secs: f64,
    p50: f64,
    p99: f64,
    errors: u64,
    cache: u64,
    /// The connections' first reads against the later ones (the built-in generator only).
    first: Option<String>,
}

impl Run {
    fn figures(&self) -> Figures {
        let mut all: Vec<Duration> = self.first.iter().chain(&self.later).copied().collect();
        all.sort();
        Figures {
            reads: all.len() as u64,
            secs: self.secs,
            p50: percentile(&all, 0.5),
            p99: percentile(&all, 0.99),
            errors: self.errors,
            cache: self.cache,
            first: Some(format!(
                "first read of each connection (connect included): p50 {:.1} ms, p99 {:.1} ms, \
                 max {:.1} ms; the reads after it: p99 {:.1} ms",
                percentile(&self.first, 0.5),
                percentile(&self.first, 0.99),
                percentile(&self.first, 1.0),
                percentile(&self.later, 0.99),
            )),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// The load generator's HTTP client.
#[derive(Clone, Copy, PartialEq)]
enum Client {
    /// One HTTP/1.1 connection per job, requests written on it back to back (hyper's
    /// connection API: no pool, no timers): the least CPU per request, so that on this
    /// machine, whose two cores the generator shares with the proxy, the figures are the
    /// proxy's rather than the generator's. No `accept-encoding`.
    Conn,
    /// One `reqwest::Client` per job (a pool of one connection, gzip accepted and decoded):
    /// as the figures before 2026-12-06 were measured.
    Reqwest,
    /// `wrk` (a C load generator on epoll, far less CPU per request than either of the
    /// above): what the proxy does for a crowd when the generator is not the one waiting for
    /// CPU. The connections send the scenario's reads in turn rather than one each.
    Wrk,
}

/// Answers the proxy gave from the cache, and as errors (counted by the proxy: `--client
/// wrk` does not read bodies).
const CACHE_ANSWERS: &str = "sgcache_proxy_requests_total{method=\"read\",path=\"cache\"";
const ALL_READS: &str = "sgcache_proxy_requests_total{method=\"read\"";
const ERROR_ANSWERS: &str = "sgcache_proxy_requests_total{method=\"read\",path=\"error\"";

/// One HTTP/1.1 connection to `addr` (`host:port`).
async fn connect(
    addr: &str,
) -> Option<hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(send)
}

/// One request on `conn`: the answer's path header, or `None` for a client error (the
/// connection is then dropped: the next request opens another).
async fn call_on(
    conn: &mut Option<
        hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>>,
    >,
    addr: &str,
    body: String,
) -> Option<String> {
    use http_body_util::BodyExt;
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn = connect(addr).await;
    }
    let send = conn.as_mut()?;
    let request = hyper::Request::post("/api3/json")
        .header("host", addr)
        .header("content-type", "application/json; charset=utf-8")
        .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
        .ok()?;
    let answered = async {
        send.ready().await.ok()?;
        let r = send.send_request(request).await.ok()?;
        let path = r
            .headers()
            .get("x-sgcache-path")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let ok = r.status().is_success();
        let body = r.into_body().collect().await.ok()?.to_bytes();
        let error = body.windows(17).any(|w| w == b"\"exception\":true");
        Some(path.filter(|_| ok && !error))
    };
    match tokio::time::timeout(Duration::from_secs(120), answered).await {
        Ok(Some(path)) => path,
        _ => {
            *conn = None;
            None
        }
    }
}

/// `connections` clients, each on its own connection, sending `body(i)` back to back.
async fn storm(
    url: &str,
    connections: usize,
    secs: f64,
    body: Arc<dyn Fn(usize) -> String + Send + Sync>,
    client: Client,
    think: Duration,
) -> Run {
    let start = Instant::now();
    let until = Duration::from_secs_f64(secs);
    let cache = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (url, body, cache) = (url.to_string(), body.clone(), cache.clone());
        tasks.push(tokio::spawn(async move {
            // One client per connection: a render farm's jobs are separate processes.
            let http = (client == Client::Reqwest).then(|| {
                reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .timeout(Duration::from_secs(120))
                    .build()
                    .expect("client")
            });
            let addr = url
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let mut conn = None;
            let (mut errors, mut first, mut later) = (0u64, None, Vec::new());
            while start.elapsed() < until {
                let t = Instant::now();
                let answer = match &http {
                    None => call_on(&mut conn, &addr, body(c)).await,
                    Some(http) => call(http, &url, body(c)).await,
                };
                match answer {
                    Some(path) => {
                        if first.is_none() {
                            first = Some(t.elapsed());
                        } else {
                            later.push(t.elapsed());
                        }
                        if path == "cache" {
                            cache.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => errors += 1,
                }
                if !think.is_zero() {
                    tokio::time::sleep(think).await;
                }
            }
            (errors, first, later)
        }));
    }
    let mut run = Run {
        first: Vec::new(),
        later: Vec::new(),
        errors: 0,
        cache: 0,
        secs: 0.0,
    };
    for t in tasks {
        let (e, f, later) = t.await.expect("client task");
        run.first.extend(f);
        run.later.extend(later);
        run.errors += e;
    }
    run.secs = start.elapsed().as_secs_f64();
    run.cache = cache.load(Ordering::Relaxed);
    run.first.sort();
    run.later.sort();
    run
}

/// What the site received during a run: requests in all, and reads of each type.
fn site_counts(site: &SimHandle) -> (u64, u64, u64) {
    let s = site.stats();
    let of = |t: &str| s.by_entity_type.get(t).copied().unwrap_or(0);
    (s.requests_total, of("Playlist"), of("Shot"))
}

/// The proxy's counters a run reports, from one read of its metrics.
#[derive(Clone, Copy)]
struct ProxyCounts {
    coalesced: f64,
    reads: f64,
    cached: f64,
    errors: f64,
}

impl ProxyCounts {
    async fn read(http: &reqwest::Client, proxy: &str) -> ProxyCounts {
        let text = sgcache_tests::proxy::metrics(http, proxy).await;
        let sum = |name: &str| {
            text.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        ProxyCounts {
            coalesced: sum("sgcache_proxy_coalesced_requests_total"),
            reads: sum(ALL_READS),
            cached: sum(CACHE_ANSWERS),
            errors: sum(ERROR_ANSWERS),
        }
    }

    fn since(self, before: ProxyCounts) -> ProxyCounts {
        ProxyCounts {
            coalesced: self.coalesced - before.coalesced,
            reads: self.reads - before.reads,
            cached: self.cached - before.cached,
            errors: self.errors - before.errors,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let connections: Vec<usize> = arg("--connections")
        .unwrap_or_else(|| "16,1000,5000".into())
        .split(',')
        .filter_map(|c| c.parse().ok())
        .collect();
    let secs: f64 = arg("--seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(15.0);
    let latency: u64 = arg("--latency-ms")
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let only = arg("--only").unwrap_or_else(|| "a,b,c,d".into());
    let think = Duration::from_millis(arg("--think-ms").and_then(|s| s.parse().ok()).unwrap_or(0));
    let generator = match arg("--client").as_deref() {
        Some("reqwest") => Client::Reqwest,
        Some("wrk") => Client::Wrk,
        _ => Client::Conn,
    };
    anyhow::ensure!(
        think.is_zero() || generator != Client::Wrk,
        "--think-ms needs a built-in generator (--client conn or reqwest)"
    );
    // As `shotgun_api3` asks: `accept-encoding: gzip` (the reqwest client always does).
    let gzip = std::env::args().any(|a| a == "--gzip");
    anyhow::ensure!(
        !gzip || generator == Client::Wrk,
        "--gzip is for --client wrk (reqwest always asks; conn reads answers as JSON)"
    );
    let opts = Options {
        connections,
        secs,
        latency,
        only,
        think,
        generator,
        gzip,
    };
    if let Some(cpus) = arg("--proxy-cpus") {
        std::env::set_var("SGCACHE_BENCH_PROXY_CPUS", cpus);
    }
    // Another build of the worker (the code before a change, for before/after figures).
    if let Some(bin) = arg("--worker") {
        std::env::set_var("SGCACHE_WORKER_BIN", bin);
    }

    let t = Instant::now();
    let site = start_site(latency)?;
    let db = TestDb::create("sgcache_storm_bench").await?;
    // The database is dropped whatever the storms do (a missing wrk, a refused setup).
    let storms = storms(opts, &site, &db, t).await;
    db.drop().await;
    storms
}

/// The benchmark's settings, from its arguments.
struct Options {
    connections: Vec<usize>,
    secs: f64,
    latency: u64,
    only: String,
    think: Duration,
    generator: Client,
    gzip: bool,
}

/// Fills the cache from the test site, starts the proxy and runs every storm the options ask
/// for, printing their figures.
async fn storms(opts: Options, site: &SimHandle, db: &TestDb, t: Instant) -> anyhow::Result<()> {
    let Options {
        connections,
        secs,
        latency,
        only,
        think,
        generator,
        gzip,
    } = opts;
    let site_url = site.url();
    let client = sgcache_tests::proxy::site_client(site_url.clone());
    let spec = ShotgunCacheSpec::from_yaml(ENTITIES, "storm")?;
    sgcache::storage::migrate(
        &db.db,
        &spec,
        &client.schema().await?,
        PlanOptions::default(),
    )
    .await?;
    let rows = sgcache_tests::loader::load_all(&db.db, &client).await?;
    let proxy = start_proxy(&site_url, &db.url).await?;
    let api = format!("{}/api3/json", proxy.url);
    let http = reqwest::Client::new();
    println!(
        "setup: {rows} rows cached, site latency {latency} ms, {secs} s per run, in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    if !think.is_zero() {
        println!(
            "each connection waits {} ms after each answer (reads in waves)",
            think.as_millis()
        );
    }

    // The shots the cached reads return, and the proxy answering them as the site does.
    let shots: Vec<i64> = {
        let body = read_body(0, &find("Shot", &["code"], json!([]), 10));
        let v: Value = http.post(&api).body(body).send().await?.json().await?;
        v["results"]["entities"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["id"].as_i64())
            .collect()
    };
    anyhow::ensure!(shots.len() == 10, "the site has 10 shots to read");
    for p in 0..PRINCIPALS {
        for payload in [cached_read(shots[0]), passed_read(0)] {
            let site_answer: Value = http
                .post(format!("{site_url}/api3/json"))
                .body(read_body(p, &payload))
                .send()
                .await?
                .json()
                .await?;
            let proxied: Value = http
                .post(&api)
                .body(read_body(p, &payload))
                .send()
                .await?
                .json()
                .await?;
            anyhow::ensure!(
                proxied == site_answer,
                "the proxy's answer differs: {payload}"
            );
        }
    }
    println!("proxy answers == site answers for every principal; storms follow\n");
    println!(
        "scenario conns | reads/s    p50 ms   p99 ms  errors  from cache | site: requests  reads/distinct pass-through read (target) | coalesced"
    );

    let rtt = latency.max(1) as f64 / 1000.0;
    for scenario in only.split(',') {
        for &conns in &connections {
            // Connection `c` sends `bodies[c % bodies.len()]` back to back.
            let (bodies, distinct_passed): (Vec<String>, u64) = match scenario {
                "a" | "c" => (vec![read_body(0, &cached_read(shots[0]))], 0),
                "b" => (vec![read_body(0, &passed_read(0))], 1),
                // 20 distinct reads, each always from the same one of 5 principals.
                _ => (
                    (0..20)
                        .map(|i| {
                            let p = i % PRINCIPALS;
                            if i % 2 == 0 {
                                read_body(p, &cached_read(shots[i / 2]))
                            } else {
                                read_body(p, &passed_read(i as u64))
                            }
                        })
                        .collect(),
                    10,
                ),
            };
            let writer = (scenario == "c").then(|| {
                let (api, http, shot) = (api.clone(), http.clone(), shots[0]);
                tokio::spawn(async move {
                    let mut n = 0u64;
                    loop {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        n += 1;
                        let body = json!({"method_name": "update", "params": [auth(0), {
                            "type": "Shot", "id": shot,
                            "fields": [{"field_name": "description", "value": format!("storm {n}")}],
                        }]});
                        let _ = http.post(&api).body(body.to_string()).send().await;
                    }
                })
            });
            let before = site_counts(site);
            let counts_before = ProxyCounts::read(&http, &proxy.url).await;
            let meter = cpu::Meter::start([proxy.child.id(), std::process::id()]);
            let mut wrk_cpu = None;
            let mut fig = match generator {
                Client::Wrk => {
                    let w = sgcache_tests::wrk::run(&api, conns, secs, &bodies, gzip).await?;
                    wrk_cpu = Some(w.cpu_secs);
                    Figures {
                        reads: w.requests,
                        secs: w.secs,
                        p50: w.p50_ms,
                        p99: w.p99_ms,
                        errors: w.errors,
                        cache: 0,
                        first: None,
                    }
                }
                _ => {
                    let body = Arc::new(move |c: usize| bodies[c % bodies.len()].clone());
                    storm(&api, conns, secs, body, generator, think)
                        .await
                        .figures()
                }
            };
            let mut used = meter.stop(vec![
                ("proxy", vec![proxy.child.id()]),
                ("load generator + site", vec![std::process::id()]),
            ]);
            if let Some(secs) = wrk_cpu {
                used.groups[1].0 = "site";
                used.groups.push(("wrk", secs));
            }
            if let Some(w) = writer {
                w.abort();
            }
            let after = site_counts(site);
            let counts = ProxyCounts::read(&http, &proxy.url)
                .await
                .since(counts_before);
            let coalesced = counts.coalesced;
            if generator == Client::Wrk {
                // wrk cannot read the answers' bodies at this rate: the proxy says which
                // answers came from the cache and which were errors (the proxy's count of
                // reads includes those still in flight when wrk stopped counting).
                fig.cache =
                    (counts.cached / counts.reads.max(1.0) * fig.reads as f64).round() as u64;
                fig.errors += counts.errors as u64;
            }
            let passed_reads = after.1 - before.1;
            let per_distinct = if distinct_passed > 0 {
                format!(
                    "{:.1} ({:.0})",
                    passed_reads as f64 / distinct_passed as f64,
                    fig.secs / rtt + 1.0
                )
            } else {
                "-".into()
            };
            println!(
                "({scenario}) {conns:>5} | {:>8.0} {:>8.1} {:>8.1} {:>7} {:>10.1}% | {:>14} {:>32} | {:>9.0}",
                fig.reads as f64 / fig.secs,
                fig.p50,
                fig.p99,
                fig.errors,
                100.0 * fig.cache as f64 / fig.reads.max(1) as f64,
                after.0 - before.0,
                per_distinct,
                coalesced,
            );
            println!(
                "          CPU per read: {}",
                used.per_request(fig.reads + fig.errors)
            );
            if let Some(first) = &fig.first {
                println!("          {first}");
            }
            // Let connections close and the proxy settle between runs.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    drop(proxy);
    Ok(())
}
