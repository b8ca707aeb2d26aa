//! `cargo run --release -p sgcache-tests --bin proxy-bench [-- --shots N --requests N --concurrency N]`
//!
//! Starts the test site seeded with N shots, fills a fresh PostgreSQL cache from it, puts the
//! proxy in front and times reads over loopback HTTP: each read through the proxy (from the
//! cache), the same read straight to the test site, and the translator + database alone.
//! Then a throughput run with concurrent clients. Prints a table; nothing is asserted.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sgcache::api3::ReadRequest;
use sgcache::plan::PlanOptions;
use sgcache::query::plan_read;
use sgcache::site::SiteClient;
use sgcache::spec::SiteConnection;
use sgcache::ShotgunCacheSpec;
use sgcache_tests::pg::TestDb;
use sgcache_tests::proxy::{script_auth, Harness};
use shotgun_sim::{SeedConfig, SimConfig};

const SPEC: &str = "
entities:
  - type: Project
    fields: [name, archived]
  - type: Sequence
    fields: [code, project]
  - type: Asset
    fields: [code, project, sg_status_list]
  - type: Shot
    fields: [code, project, sg_sequence, sg_status_list, sg_cut_in, sg_cut_out, assets, description, created_at, updated_at]
";

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cond(path: &str, rel: &str, values: Value) -> Value {
    json!({"logical_operator": "and", "conditions": [{"path": path, "relation": rel, "values": values}]})
}

fn reads(shots: usize) -> Vec<(&'static str, Value)> {
    let fields = json!([
        "code",
        "sg_sequence",
        "assets",
        "sg_status_list",
        "sg_cut_in",
        "project"
    ]);
    vec![
        (
            "find_one by id",
            json!({"type": "Shot", "filters": cond("id", "is", json!([shots / 2])),
                   "return_fields": fields, "paging": {"entities_per_page": 1, "current_page": 1}}),
        ),
        (
            "page of 50, links + multi-entity",
            json!({"type": "Shot", "filters": cond("id", "greater_than", json!([shots / 3])),
                   "return_fields": fields, "paging": {"entities_per_page": 50, "current_page": 1},
                   "return_paging_info_without_counts": true}),
        ),
        (
            "filtered (status in, cut_in >), page of 50",
            json!({"type": "Shot", "filters": {"logical_operator": "and", "conditions": [
                      {"path": "sg_status_list", "relation": "in", "values": ["ip", "rev"]},
                      {"path": "sg_cut_in", "relation": "greater_than", "values": [1020]}]},
                   "return_fields": fields, "paging": {"entities_per_page": 50, "current_page": 3},
                   "return_paging_info_without_counts": true}),
        ),
        (
            "deep filter + sort, page of 50",
            json!({"type": "Shot", "filters": cond("sg_sequence.Sequence.code", "ends_with", json!(["1"])),
                   "return_fields": fields, "sorts": [{"field_name": "sg_cut_in", "direction": "desc"}],
                   "paging": {"entities_per_page": 50, "current_page": 1},
                   "return_paging_info_without_counts": true}),
        ),
        (
            "page of 500 (client default)",
            json!({"type": "Shot", "filters": {"logical_operator": "and", "conditions": []},
                   "return_fields": fields, "paging": {"entities_per_page": 500, "current_page": 2},
                   "return_paging_info_without_counts": true}),
        ),
    ]
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn summary(mut d: Vec<Duration>) -> String {
    d.sort();
    format!(
        "{:.2} / {:.2} / {:.2}",
        percentile(&d, 0.5),
        percentile(&d, 0.9),
        percentile(&d, 0.99)
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let shots = arg("--shots", 20_000);
    let requests = arg("--requests", 200);
    let concurrency = arg("--concurrency", 8);
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
    let h = Harness::start(sim, Some(db.db.clone())).await?;
    let site = SiteClient::new(SiteConnection {
        url: h.sim.url(),
        script_name: "sgcache_test".into(),
        api_key: "test_key".into(),
        timeout: Duration::from_secs(120),
    })?;
    let spec = ShotgunCacheSpec::from_yaml(SPEC, "bench")?;
    sgcache::storage::migrate(&db.db, &spec, &site.schema().await?, PlanOptions::default()).await?;
    let rows = sgcache_tests::loader::load_all(&db.db, &site).await?;
    h.state.refresh_catalog().await;
    println!(
        "setup: {shots} shots, {rows} rows cached in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let _ = h
        .proxy("read", script_auth(), reads(shots)[0].1.clone())
        .await; // verifies auth

    println!("\nms per read, p50 / p90 / p99 over {requests} sequential requests");
    println!("| read | rows | proxy (cache) | site direct | translate + SQL only |");
    println!("|---|---|---|---|---|");
    let catalog = h.state.catalog();
    if std::env::args().any(|a| a == "--explain") {
        for (name, payload) in reads(shots) {
            let plan = plan_read(&ReadRequest::parse(&payload)?, &catalog, db.db.dialect())
                .expect("cacheable");
            let mut sql = plan.sql.clone();
            sql.text = format!("EXPLAIN (ANALYZE, COSTS OFF) {}", sql.text);
            println!("\n-- {name}\n{}", plan.sql.text);
            for row in db.db.fetch_all(&sql).await? {
                if let Some(sgcache::sql::SqlValue::Text(line)) = row.first() {
                    println!("{line}");
                }
            }
        }
    }
    for (name, payload) in reads(shots) {
        let mut via = Vec::new();
        let mut direct = Vec::new();
        let mut sql = Vec::new();
        let mut n = 0;
        for _ in 0..requests {
            let t = Instant::now();
            let (_, path, body) = h.proxy("read", script_auth(), payload.clone()).await;
            via.push(t.elapsed());
            assert_eq!(path.as_deref(), Some("cache"), "{name} was not cached");
            n = body["results"]["entities"].as_array().map_or(0, Vec::len);
            let t = Instant::now();
            let _ = h.direct("read", script_auth(), payload.clone()).await;
            direct.push(t.elapsed());
            let t = Instant::now();
            let read = ReadRequest::parse(&payload)?;
            let plan = plan_read(&read, &catalog, db.db.dialect()).expect("cacheable");
            plan.run(&db.db).await.expect("runs");
            sql.push(t.elapsed());
        }
        println!(
            "| {name} | {n} | {} | {} | {} |",
            summary(via),
            summary(direct),
            summary(sql)
        );
    }

    let before = h.site_requests();
    let duration = Duration::from_secs(5);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let url = h.proxy_url.clone();
        let http = h.http.clone();
        let body = json!({"method_name": "read", "params": [script_auth(), reads(shots)[c % 2].1.clone()]}).to_string();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < duration {
                let r = http
                    .post(format!("{url}/api3/json"))
                    .body(body.clone())
                    .send()
                    .await;
                if let Ok(r) = r {
                    let _ = r.bytes().await;
                    n += 1;
                }
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await?;
    }
    println!(
        "\nthroughput: {concurrency} concurrent clients (find_one / page of 50 alternating), {:.0} reads/s from the cache; site requests during the run: {}",
        total as f64 / start.elapsed().as_secs_f64(),
        h.site_requests() - before
    );
    h.stop().await;
    db.drop().await;
    Ok(())
}
