//! `cargo run --release -p shotgun-sim --bin sim-bench [-- --shots N]`: seeds the test site
//! with N shots (default 1,000,000) and measures `read` pages of 500 over loopback HTTP.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shotgun_sim::{SeedConfig, SimConfig};

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    async fn read(&self, payload: Value) -> anyhow::Result<Value> {
        let body = json!({"method_name": "read", "params": [
            {"script_name": "sgcache_test", "script_key": "test_key"}, payload]});
        let v: Value = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        if v.get("exception").is_some() {
            anyhow::bail!("read failed: {v}");
        }
        Ok(v["results"].clone())
    }
}

fn report(name: &str, pages: usize, rows: usize, took: Duration) {
    let s = took.as_secs_f64();
    println!(
        "{name:<48} pages={pages:>5} rows={rows:>8} total={s:>7.2}s  per_page={:>7.2}ms  rows/s={:>9.0}",
        s * 1000.0 / pages.max(1) as f64,
        rows as f64 / s
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let shots: usize = std::env::args()
        .skip_while(|a| a != "--shots")
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let config = SimConfig {
        seed: SeedConfig {
            scale: 1000,
            shots: Some(shots),
            ..SeedConfig::default()
        },
        ..SimConfig::default()
    };
    let rss0 = rss_mb();
    let t = Instant::now();
    let handle = shotgun_sim::start(config, "127.0.0.1:0".parse()?).await?;
    println!(
        "seed: {} shots (+ {:?}) in {:.2}s, RSS {:.0} MB -> {:.0} MB",
        shots,
        handle.seed_counts(),
        t.elapsed().as_secs_f64(),
        rss0,
        rss_mb()
    );
    let c = Client {
        http: reqwest::Client::new(),
        url: format!("{}/api3/json", handle.url()),
    };
    let fields = json!([
        "code",
        "sg_status_list",
        "sg_sequence",
        "sg_cut_in",
        "updated_at"
    ]);
    let page = |filters: Value, page: u64, sorts: Value| {
        json!({
        "type": "Shot", "filters": filters, "return_fields": fields.clone(),
        "paging": {"entities_per_page": 500, "current_page": page},
        "return_paging_info_without_counts": true, "sorts": sorts})
    };
    let id_asc = json!([{"field_name": "id", "direction": "asc"}]);

    // 1. Full scan, keyset paging by id (the scanner's pattern).
    let (t, mut last, mut pages, mut rows) = (Instant::now(), 0u64, 0, 0);
    loop {
        let f = json!({"logical_operator": "and", "conditions": [
            {"path": "id", "relation": "greater_than", "values": [last]}]});
        let r = c.read(page(f, 1, id_asc.clone())).await?;
        let ents = r["entities"].as_array().cloned().unwrap_or_default();
        pages += 1;
        rows += ents.len();
        match ents.last() {
            Some(e) => last = e["id"].as_u64().unwrap_or(last),
            None => break,
        }
        if !r["paging_info"]["has_next_page"].as_bool().unwrap_or(false) {
            break;
        }
    }
    report(
        "full scan, id > last, sorted id asc",
        pages,
        rows,
        t.elapsed(),
    );

    // 2. Client-style offset paging: a sample of pages across the table.
    let empty = json!({"logical_operator": "and", "conditions": []});
    let total_pages = (shots / 500).max(1) as u64;
    let (t, mut rows) = (Instant::now(), 0);
    let sample: Vec<u64> = (0..50).map(|i| 1 + i * total_pages / 50).collect();
    for p in &sample {
        rows += c.read(page(empty.clone(), *p, json!([]))).await?["entities"]
            .as_array()
            .map_or(0, Vec::len);
    }
    report(
        "offset paging (current_page across table)",
        sample.len(),
        rows,
        t.elapsed(),
    );

    // 3. Filtered reads (full table evaluated per page).
    let filtered = json!({"logical_operator": "and", "conditions": [
        {"path": "sg_status_list", "relation": "in", "values": ["ip", "rev"]},
        {"path": "sg_cut_in", "relation": "greater_than", "values": [1020]}]});
    let (t, mut rows) = (Instant::now(), 0);
    for p in 1..=20 {
        rows += c.read(page(filtered.clone(), p, json!([]))).await?["entities"]
            .as_array()
            .map_or(0, Vec::len);
    }
    report(
        "filtered (status in, cut_in >), pages 1-20",
        20,
        rows,
        t.elapsed(),
    );

    let deep = json!({"logical_operator": "and", "conditions": [
        {"path": "sg_sequence.Sequence.code", "relation": "starts_with", "values": ["sq00"]},
        {"path": "description", "relation": "contains", "values": ["hero"]}]});
    let (t, mut rows) = (Instant::now(), 0);
    for p in 1..=10 {
        rows += c.read(page(deep.clone(), p, json!([]))).await?["entities"]
            .as_array()
            .map_or(0, Vec::len);
    }
    report("deep filter + contains, pages 1-10", 10, rows, t.elapsed());

    let sorted = json!([{"field_name": "code", "direction": "desc"}]);
    let (t, mut rows) = (Instant::now(), 0);
    for p in 1..=5 {
        rows += c.read(page(filtered.clone(), p, sorted.clone())).await?["entities"]
            .as_array()
            .map_or(0, Vec::len);
    }
    report(
        "filtered + sorted by code desc, pages 1-5",
        5,
        rows,
        t.elapsed(),
    );
    println!("final RSS {:.0} MB", rss_mb());
    handle.shutdown().await;
    Ok(())
}
