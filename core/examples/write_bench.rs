//! Measures the entity write path: upserts scan-shaped Shot records into a database and
//! prints entities per second. Not a test: a figure to compare changes against.
//!
//!   cargo run -p sgcache --example write_bench -- postgres://postgres@127.0.0.1:5432/bench 100000
//!
//! The database is migrated for the bench's spec first; use a scratch database.

use std::time::Instant;

use serde_json::json;
use sgcache::plan::PlanOptions;
use sgcache::schema::{fixture_dir, SiteSchema};
use sgcache::sql::Db;
use sgcache::storage::{self, WriteSource};
use sgcache::ShotgunCacheSpec;

const SPEC: &str = "entities:
  - type: Shot
    fields: [code, description, sg_status_list, sg_cut_in, sg_cut_out, project, sg_sequence,
             created_at, assets]
";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "sqlite://bench.db?mode=rwc".into());
    let total: i64 = args.next().map_or(Ok(100_000), |n| n.parse())?;
    let page = 500;
    let db = Db::connect(&url, 2).await?;
    let spec = ShotgunCacheSpec::from_yaml(SPEC, "bench")?;
    let site = SiteSchema::load_dir(&fixture_dir())?;
    storage::migrate(&db, &spec, &site, PlanOptions::default()).await?;
    let state = storage::read_state(&db).await?;
    let start = Instant::now();
    for first in (1..=total).step_by(page) {
        let records: Vec<_> = (first..(first + page as i64).min(total + 1))
            .map(|id| {
                json!({"type": "Shot", "id": id, "code": format!("sh{id:06}"),
                    "description": "a shot of moderate length description text",
                    "sg_status_list": "ip", "sg_cut_in": 1001, "sg_cut_out": 1100,
                    "project": {"type": "Project", "id": 70, "name": "demo"},
                    "sg_sequence": {"type": "Sequence", "id": id / 50, "name": "sq"},
                    "created_at": "2024-03-05T17:04:09Z",
                    "updated_at": "2024-03-05T17:04:09Z",
                    "assets": [{"type": "Asset", "id": id % 97, "name": "a"}]})
            })
            .collect();
        let at = storage::read_mark(&db).await?;
        let mut tx = db.begin().await?;
        storage::upsert_entities(
            &mut tx,
            &state,
            "Shot",
            &records,
            WriteSource::Read { at, retired: false },
        )
        .await?;
        tx.commit().await?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{total} entities in {secs:.2}s: {:.0} entities/s ({})",
        total as f64 / secs,
        storage::redact_url(&url)
    );
    db.close().await;
    Ok(())
}
