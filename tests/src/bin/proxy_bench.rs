//! `cargo run --release -p sgcache-tests --bin proxy-bench [-- --shots N --concurrency N
//!  --seconds N --pool N --latency-ms N --rounds N --explain]`
//!
//! The proxy benchmark of issue #5. Seeds the test site with N shots (default 100,000), fills a
//! fresh PostgreSQL cache from it through the storage write path, then runs the real
//! `sgcache-worker proxy` binary (release build, its own process, so its RSS is its own) in
//! front of the site and measures a typical pipeline read sent as `shotgun_api3` sends it
//! (`find("Shot", [["project", "is", P], ["sg_status_list", "is", S]], <10 fields>, limit=50)`):
//!
//! 1. one client, sequential: latency through the proxy, and of the translator + SQL alone;
//! 2. `--concurrency` clients for `--seconds`: latency percentiles and throughput through the
//!    proxy, the proxy's RSS while under that load;
//! 3. the same SQL statements (text and binds from the translator) issued directly through
//!    sqlx at the same concurrency on a pool of the same size: the ceiling for the proxy,
//!    with the rows only fetched and with every value read; then the proxy and the latter
//!    alternately in short phases (`--rounds`), the fairer ratio on a machine whose speed
//!    drifts;
//! 4. the same reads passed through to the site with `--latency-ms` of injected latency
//!    (a proxy without a cache database), at the same concurrency.
//!
//! Before measuring, every read variant is answered once by the proxy and once by the site and
//! the two answers must be identical. Prints figures; asserts only correctness.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sgcache::api3::ReadRequest;
use sgcache::plan::PlanOptions;
use sgcache::query::{plan_read, Catalog};
use sgcache::site::SiteClient;
use sgcache::spec::SiteConnection;
use sgcache::sql::{pg_query, Sql, SqlValue};
use sgcache::ShotgunCacheSpec;
use sgcache_tests::cpu;
use sgcache_tests::pg::TestDb;
use sgcache_tests::proxy::{script_auth, Harness};
use sgcache_tests::worker::BenchProxy;
use shotgun_sim::{SeedConfig, SimConfig};

const ENTITIES: &str = "
entities:
  - type: Project
    fields: [name, archived]
  - type: Sequence
    fields: [code, project]
  - type: Asset
    fields: [code, project, sg_status_list]
  - type: Shot
    fields: [code, project, sg_sequence, sg_status_list, sg_cut_in, sg_cut_out, assets, description, created_at, updated_at]
  - type: Task
    fields: [content, sg_status_list, entity, project]
";

/// The pipeline read's 10 return fields: two entity links, a multi-entity list, text, numbers,
/// date-times.
const FIELDS: &[&str] = &[
    "code",
    "description",
    "sg_status_list",
    "sg_cut_in",
    "sg_cut_out",
    "sg_sequence",
    "project",
    "assets",
    "created_at",
    "updated_at",
];

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The payload `shotgun_api3` 3.x sends for `find(type, filters, fields, limit=50)`.
fn pipeline_read(project: i64, status: &str) -> Value {
    json!({
        "type": "Shot",
        "return_fields": FIELDS,
        "filters": {"logical_operator": "and", "conditions": [
            {"path": "project", "relation": "is", "values": [{"type": "Project", "id": project}]},
            {"path": "sg_status_list", "relation": "is", "values": [status]}
        ]},
        "return_only": "active",
        "paging": {"entities_per_page": 50, "current_page": 1},
        "api_return_image_urls": true,
        "return_paging_info_without_counts": false,
    })
}

fn body(payload: &Value) -> String {
    json!({"method_name": "read", "params": [script_auth(), payload]}).to_string()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

struct Run {
    lat: Vec<Duration>,
    per_s: f64,
    errors: u64,
}

impl Run {
    fn line(&self) -> String {
        format!(
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, {:.0} reads/s ({} reads, {} errors)",
            percentile(&self.lat, 0.5),
            percentile(&self.lat, 0.9),
            percentile(&self.lat, 0.99),
            self.per_s,
            self.lat.len(),
            self.errors
        )
    }
}

/// `clients` tasks looping `op(i)` for `secs`; latencies of the successful calls.
/// The read variant of request `i` of [`load`] (client `i % clients`, its `i / clients`-th
/// request): each client cycles through variants no other client sends (`c`, `c + clients`, …)
/// while there are as many variants as clients, so no two clients ever send the same read at
/// once and the proxy cannot share one statement between them (a flight): the proxy and the
/// direct sqlx run execute the same statements, one per read.
fn variant(i: usize, clients: usize, variants: usize) -> usize {
    let (c, k) = (i % clients, i / clients);
    let mine = variants.saturating_sub(c).div_ceil(clients);
    if mine == 0 {
        return i % variants; // more clients than variants: some must share
    }
    c + clients * (k % mine)
}

async fn load<F, Fut>(clients: usize, secs: f64, op: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let dur = Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut i) = (Vec::new(), 0u64, c);
            while start.elapsed() < dur {
                let t = Instant::now();
                if op(i).await {
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                }
                i += clients;
            }
            (lat, errors)
        }));
    }
    let mut run = Run {
        lat: Vec::new(),
        per_s: 0.0,
        errors: 0,
    };
    for t in tasks {
        let (l, e) = t.await.expect("client task");
        run.lat.extend(l);
        run.errors += e;
    }
    run.per_s = run.lat.len() as f64 / start.elapsed().as_secs_f64();
    run.lat.sort();
    run
}

/// Reads the proxy answered with another read's statement (a flight), from its metrics.
async fn coalesced(http: &reqwest::Client, proxy: &str) -> u64 {
    let Ok(r) = http.get(format!("{proxy}/metrics")).send().await else {
        return 0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("sgcache_proxy_coalesced_requests_total{path=\"cache\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// `VmRSS` and `VmHWM` (peak) of a process, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
            / 1024.0
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

async fn start_proxy(
    site_url: &str,
    db_url: &str,
    pool: usize,
    result_cache_mb: usize,
) -> anyhow::Result<BenchProxy> {
    let config = |port| {
        format!(
            "site:\n  url: {site_url}\ndatabase:\n  url:\n    value: {db_url}\n  maxConnections: {pool}\n\
             workers:\n  proxy:\n    port: {port}\n    authTtl: 600s\n    resultCacheMb: {result_cache_mb}\n{ENTITIES}"
        )
    };
    BenchProxy::start(config, 4).await
}

/// The load loops' call: status 200 and the path header, the body read but not parsed (the
/// client's CPU is the proxy's and the database's CPU on this machine).
async fn post_path(http: &reqwest::Client, url: &str, body: String) -> Option<String> {
    let posted = sgcache_tests::worker::post_api3(http, url, body).await?;
    let ok = posted.success && posted.body.is_ok_and(|b| !b.is_empty());
    posted.path.filter(|_| ok)
}

async fn post(http: &reqwest::Client, url: &str, body: String) -> Option<(Option<String>, Value)> {
    let posted = sgcache_tests::worker::post_api3(http, url, body).await?;
    let v: Value = serde_json::from_slice(&posted.body.ok()?).ok()?;
    Some((posted.path, v))
}

/// Reads every value of every row into the Rust type of its column, as a program using
/// the rows would; false if one cannot be read.
fn read_every_value(rows: &[sqlx::postgres::PgRow]) -> bool {
    use sqlx::{Column, Row, TypeInfo};
    rows.iter().all(|row| {
        row.columns().iter().all(|c| {
            let i = c.ordinal();
            match c.type_info().name() {
                "BOOL" => row.try_get::<Option<bool>, _>(i).is_ok(),
                "INT4" => row.try_get::<Option<i32>, _>(i).is_ok(),
                "INT8" => row.try_get::<Option<i64>, _>(i).is_ok(),
                "FLOAT8" => row.try_get::<Option<f64>, _>(i).is_ok(),
                "DATE" => row.try_get::<Option<chrono::NaiveDate>, _>(i).is_ok(),
                "TIMESTAMPTZ" => row
                    .try_get::<Option<chrono::DateTime<chrono::Utc>>, _>(i)
                    .is_ok(),
                "JSON" | "JSONB" => row.try_get::<Option<Value>, _>(i).is_ok(),
                _ => row.try_get::<Option<String>, _>(i).is_ok(),
            }
        })
    })
}

/// A client's read through the proxy, for [`load`]: true when the cache answered it.
fn via_proxy(
    http: reqwest::Client,
    api: String,
    bodies: Arc<Vec<String>>,
    clients: usize,
) -> impl Fn(usize) -> futures::future::BoxFuture<'static, bool> + Send + Sync + 'static {
    move |i| {
        let b = bodies[variant(i, clients, bodies.len())].clone();
        let (http, api) = (http.clone(), api.clone());
        Box::pin(async move { post_path(&http, &api, b).await.as_deref() == Some("cache") })
    }
}

/// The same read's statement straight through sqlx, for [`load`]: true when it returned its
/// page (and, with `read_values`, every value could be read).
fn via_sqlx(
    pg: sqlx::PgPool,
    sqls: Arc<Vec<Sql>>,
    clients: usize,
    read_values: bool,
) -> impl Fn(usize) -> futures::future::BoxFuture<'static, bool> + Send + Sync + 'static {
    move |i| {
        let (pg, sqls) = (pg.clone(), sqls.clone());
        Box::pin(async move {
            let rows = pg_query(&sqls[variant(i, clients, sqls.len())])
                .fetch_all(&pg)
                .await;
            rows.is_ok_and(|r| r.len() == 51 && (!read_values || read_every_value(&r)))
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let shots = arg("--shots", 100_000);
    let clients = arg("--concurrency", 16);
    let secs = arg("--seconds", 10) as f64;
    let pool = arg("--pool", 10);
    let latency = arg("--latency-ms", 100) as u64;
    let sequential = arg("--requests", 300);
    // Answers kept in memory by the proxy, as `workers.proxy.resultCacheMb` (default 64, the
    // product's default; 0: every read runs its query).
    let result_cache_mb = arg("--result-cache-mb", 64);
    // With the answers kept: one shot changed directly in PostgreSQL every N ms during the
    // concurrent run (as the event follower would), each change dropping every kept answer.
    let churn_ms = arg("--churn-ms", 0) as u64;
    // `--churn-tasks`: the changes go to Tasks, which the pipeline read does not use.
    let churn_table = if std::env::args().any(|a| a == "--churn-tasks") {
        "task"
    } else {
        "shot"
    };
    println!(
        "proxy answers kept in memory: {result_cache_mb} MiB; a change to {churn_table} every {churn_ms} ms (0: none)"
    );

    // The site, with a proxy that has no cache database in front of it (pure pass-through).
    let sim = SimConfig {
        seed: SeedConfig {
            scale: 1000,
            shots: Some(shots),
            ..SeedConfig::default()
        },
        ..SimConfig::default()
    };
    let t = Instant::now();
    let db = TestDb::create("sgcache_proxy_bench").await?;
    let db_name = db.name.clone();
    let h = Harness::start(sim, None).await?;
    let site = SiteClient::new(SiteConnection {
        url: h.sim.url(),
        script_name: "sgcache_test".into(),
        api_key: "test_key".into(),
        timeout: Duration::from_secs(300),
    })?;
    let spec = ShotgunCacheSpec::from_yaml(ENTITIES, "bench")?;
    sgcache::storage::migrate(&db.db, &spec, &site.schema().await?, PlanOptions::default()).await?;
    let rows = sgcache_tests::loader::load_all(&db.db, &site).await?;
    println!(
        "setup: {shots} shots, {rows} rows cached in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    if let sgcache::sql::Db::Postgres(p) = &db.db {
        sqlx::query("ANALYZE").execute(p).await?;
    }

    // Read variants: every (active project, status) with at least 50 active shots.
    let mut q = db.db.sql();
    q.push(
        "SELECT s.project__id, s.sg_status_list FROM shot s JOIN project p ON p.id = s.project__id \
         WHERE NOT s._retired GROUP BY 1, 2 HAVING count(*) >= 50 ORDER BY 1, 2",
    );
    let variants: Vec<Value> = db
        .db
        .fetch_all(&q)
        .await?
        .into_iter()
        .filter_map(|r| match (&r[0], &r[1]) {
            (SqlValue::Int(p), SqlValue::Text(s)) => Some(pipeline_read(*p, s)),
            _ => None,
        })
        .collect();
    anyhow::ensure!(!variants.is_empty(), "no (project, status) with 50 shots");
    println!("read variants (project x status): {}", variants.len());

    let proxy = start_proxy(&h.sim.url(), &db.url, pool, result_cache_mb).await?;
    let pid = proxy.child.id();
    // The official client asks for gzip (and so does this one, by default); `--no-gzip`
    // measures what the compression it asks for costs the proxy.
    let http = if std::env::args().any(|a| a == "--no-gzip") {
        println!("the client does not ask for gzip: answers are sent uncompressed");
        reqwest::Client::builder().no_gzip().build()?
    } else {
        reqwest::Client::new()
    };
    let api = format!("{}/api3/json", proxy.url);
    let bodies: Arc<Vec<String>> = Arc::new(variants.iter().map(body).collect());

    // Correctness: the proxy's answer (from the cache) is the site's answer.
    for (payload, b) in variants.iter().zip(bodies.iter()) {
        let (_, site_answer) = post(&http, &format!("{}/api3/json", h.sim.url()), b.clone())
            .await
            .expect("site answers");
        // The first call verifies the credentials through the site; the second is cached.
        let _ = post(&http, &api, b.clone()).await;
        let (path, cached) = post(&http, &api, b.clone()).await.expect("proxy answers");
        assert_eq!(path.as_deref(), Some("cache"), "not cached: {payload}");
        assert_eq!(
            cached, site_answer,
            "cache differs from the site for {payload}"
        );
        assert_eq!(
            cached["results"]["entities"].as_array().map(Vec::len),
            Some(50)
        );
    }
    println!("every variant: proxy answer == site answer, 50 entities");
    let (rss_idle, _) = rss_mib(pid);

    let catalog = Catalog::load(&db.db).await?;
    let plans: Vec<_> = variants
        .iter()
        .map(|p| plan_read(&ReadRequest::parse(p).unwrap(), &catalog, db.db.dialect()).unwrap())
        .collect();
    if std::env::args().any(|a| a == "--explain") {
        let plan = &plans[0];
        println!("\n{}\nbinds: {:?}", plan.sql.text, plan.sql.binds);
        let mut sql = plan.sql.clone();
        sql.text = format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {}", sql.text);
        for row in db.db.fetch_all(&sql).await? {
            if let Some(SqlValue::Text(line)) = row.first() {
                println!("{line}");
            }
        }
    }

    // 1. Sequential.
    let mut via = Vec::new();
    let mut direct = Vec::new();
    for i in 0..sequential {
        let b = bodies[i % bodies.len()].clone();
        let t = Instant::now();
        let (path, _) = post(&http, &api, b).await.expect("proxy answers");
        via.push(t.elapsed());
        assert_eq!(path.as_deref(), Some("cache"));
        let t = Instant::now();
        let read = ReadRequest::parse(&variants[i % variants.len()])?;
        let plan = plan_read(&read, &catalog, db.db.dialect()).expect("cacheable");
        plan.run(&db.db).await.expect("runs");
        direct.push(t.elapsed());
    }
    via.sort();
    direct.sort();
    println!("\nsequential, 1 client, {sequential} reads:");
    println!(
        "  proxy (HTTP, cache):      p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
        percentile(&via, 0.5),
        percentile(&via, 0.9),
        percentile(&via, 0.99)
    );
    println!(
        "  translate + SQL + render: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
        percentile(&direct, 0.5),
        percentile(&direct, 0.9),
        percentile(&direct, 0.99)
    );

    // 2. Through the proxy at concurrency, sampling its RSS.
    let site_before = h.site_requests();
    let shared_before = coalesced(&http, &proxy.url).await;
    let sampler = tokio::spawn(async move {
        let mut max: f64 = 0.0;
        let end = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < end {
            max = max.max(rss_mib(pid).0);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        max
    });
    let churn = (churn_ms > 0).then(|| {
        let db = db.db.clone();
        tokio::spawn(async move {
            let end = Instant::now() + Duration::from_secs_f64(secs);
            let mut n = 0u64;
            while Instant::now() < end {
                let mut q = db.sql();
                let column = if churn_table == "task" {
                    "content"
                } else {
                    "sg_cut_in"
                };
                q.push("UPDATE ")
                    .push_ident(churn_table)
                    .push(" SET ")
                    .push_ident(column)
                    .push(" = ")
                    .push_ident(column)
                    .push(" WHERE id = ")
                    .push_bind(SqlValue::Int(1 + (n % 1000) as i64));
                let _ = db.execute(&q).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(churn_ms)).await;
            }
            n
        })
    });
    let me = std::process::id();
    let backends = |db: &sgcache::sql::Db| {
        let (db, name) = (db.clone(), db_name.clone());
        async move { cpu::pg_backends(&db, &name).await }
    };
    let meter = cpu::Meter::start([pid, me].into_iter().chain(backends(&db.db).await));
    let proxy_run = load(
        clients,
        secs,
        via_proxy(http.clone(), api.clone(), bodies.clone(), clients),
    )
    .await;
    let proxy_cpu = meter.stop(vec![
        ("proxy", vec![pid]),
        ("postgres", backends(&db.db).await),
        ("client", vec![me]),
    ]);
    let rss_load = sampler.await?;
    if let Some(churn) = churn {
        println!("changes made during the run: {}", churn.await?);
    }
    let metrics = http
        .get(format!("{}/metrics", proxy.url))
        .send()
        .await?
        .text()
        .await?;
    let hits = metrics
        .lines()
        .find(|l| l.starts_with("sgcache_proxy_result_cache_hits_total "))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("0")
        .to_string();
    let (_, rss_peak) = rss_mib(pid);
    println!(
        "\nproxy (cache), {clients} clients, {secs} s: {}",
        proxy_run.line()
    );
    println!(
        "  CPU per read: {}",
        proxy_cpu.per_request(proxy_run.lat.len() as u64)
    );
    println!(
        "  site requests during the run: {}; answered from kept answers since start: {hits}; \
         reads that shared another's statement in flight: {}",
        h.site_requests() - site_before,
        coalesced(&http, &proxy.url).await - shared_before
    );
    println!(
        "  proxy RSS: {rss_idle:.1} MiB idle, {rss_load:.1} MiB max sampled under load, {rss_peak:.1} MiB peak (VmHWM)"
    );

    // 3. The same statements straight through sqlx, same concurrency, same pool size: the
    //    rows only fetched, then fetched with every value read as a program using them
    //    would (the proxy reads every value too, to write its answer).
    let pg = sqlx::postgres::PgPoolOptions::new()
        .max_connections(pool as u32)
        .connect(&db.url)
        .await?;
    let sqls: Arc<Vec<Sql>> = Arc::new(plans.iter().map(|p| p.sql.clone()).collect());
    for read_values in [false, true] {
        let meter = cpu::Meter::start([pid, me].into_iter().chain(backends(&db.db).await));
        let sql_run = load(
            clients,
            secs,
            via_sqlx(pg.clone(), sqls.clone(), clients, read_values),
        )
        .await;
        let sql_cpu = meter.stop(vec![
            ("proxy (idle)", vec![pid]),
            ("postgres", backends(&db.db).await),
            ("client", vec![me]),
        ]);
        let what = if read_values {
            "rows fetched, every value read"
        } else {
            "rows fetched"
        };
        println!(
            "sqlx direct (same SQL, pool {pool}, {what}), {clients} clients, {secs} s: {}",
            sql_run.line()
        );
        println!(
            "  CPU per read: {}",
            sql_cpu.per_request(sql_run.lat.len() as u64)
        );
        println!(
            "  proxy throughput / sqlx throughput ({what}): {:.0}%",
            100.0 * proxy_run.per_s / sql_run.per_s
        );
    }
    // 3b. The proxy and sqlx (every value read) alternately, `--rounds` times for
    //    `--seconds` / 2 each: PostgreSQL's cost per statement drifts by ±15 % from one
    //    phase to the next on a shared machine, which alone moves a single pair's ratio by
    //    as much; alternating short phases spreads the drift over both.
    let rounds = arg("--rounds", 4);
    let (mut proxy_reads, mut sql_reads) = (0.0, 0.0);
    for _ in 0..rounds {
        let proxy_op = via_proxy(http.clone(), api.clone(), bodies.clone(), clients);
        proxy_reads += load(clients, secs / 2.0, proxy_op).await.per_s;
        let sql_op = via_sqlx(pg.clone(), sqls.clone(), clients, true);
        sql_reads += load(clients, secs / 2.0, sql_op).await.per_s;
    }
    if rounds > 0 {
        println!(
            "alternating {rounds} x ({:.1} s proxy, {:.1} s sqlx with every value read): \
             {:.0} / {:.0} reads/s, proxy / sqlx {:.0}%",
            secs / 2.0,
            secs / 2.0,
            proxy_reads / rounds as f64,
            sql_reads / rounds as f64,
            100.0 * proxy_reads / sql_reads
        );
    }
    pg.close().await;

    // 4. Passed through to the site with injected latency.
    h.faults(json!({ "latency_ms": latency }));
    let pass_api = format!("{}/api3/json", h.proxy_url);
    let pass_secs = secs.max(5.0);
    let pass_run = {
        let (http, bodies) = (http.clone(), bodies.clone());
        load(clients, pass_secs, move |i| {
            let (http, api, b) = (
                http.clone(),
                pass_api.clone(),
                bodies[i % bodies.len()].clone(),
            );
            async move { post_path(&http, &api, b).await.as_deref() == Some("site") }
        })
        .await
    };
    h.faults(json!({ "latency_ms": 0 }));
    println!(
        "pass-through to the site ({latency} ms latency), {clients} clients, {pass_secs} s: {}",
        pass_run.line()
    );
    println!(
        "  speed-up of the cache: {:.0}x at p50, {:.0}x in throughput",
        percentile(&pass_run.lat, 0.5) / percentile(&proxy_run.lat, 0.5),
        proxy_run.per_s / pass_run.per_s
    );

    drop(proxy);
    h.stop().await;
    db.drop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::variant;
    use std::collections::BTreeSet;

    #[test]
    fn clients_never_share_a_variant_while_there_are_enough() {
        let (clients, variants) = (16, 28);
        let mut seen: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); clients];
        for i in 0..clients * 10 {
            seen[i % clients].insert(variant(i, clients, variants));
        }
        let all: BTreeSet<usize> = seen.iter().flatten().copied().collect();
        assert_eq!(all.len(), variants, "every variant is read");
        let total: usize = seen.iter().map(BTreeSet::len).sum();
        assert_eq!(total, variants, "no variant is read by two clients");
    }
}
