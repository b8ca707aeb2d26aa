//! `sgcache-worker trust`: what each trust class has earned, and a person's reset of a class
//! a difference turned off (see `proxy::trust`). Proxies pick a reset up at their next
//! refresh (5 s).

use std::process::ExitCode;

use serde_json::json;
use sgcache::spec::process_env;
use sgcache::sql::Db;
use sgcache::storage::redact_url;
use sgcache::storage::{self, TrustState};
use sgcache::trust::TrustClass;
use sgcache::ShotgunCacheSpec;

use crate::cli::EXIT_BAD_CONFIG;

#[derive(Debug, clap::Subcommand)]
pub enum TrustAction {
    /// Print every class: its state, samples of those needed, checks, differences, reads
    /// served, its last check and why checks were skipped.
    List {
        /// Print JSON (for scripts) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Put a class back to learning (after the difference that turned it off is understood).
    Reset {
        /// The class, e.g. `sort:text`.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        class: Option<String>,
        /// Reset every class.
        #[arg(long)]
        all: bool,
    },
}

pub async fn run(spec: &ShotgunCacheSpec, action: TrustAction) -> ExitCode {
    let class = match &action {
        TrustAction::Reset {
            class: Some(name), ..
        } => match name.parse::<TrustClass>() {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
        },
        _ => None,
    };
    let url = spec.database_url(&process_env);
    let db = match Db::connect(&url, 1).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!(
                "error: cannot connect to the database {}: {e}",
                redact_url(&url)
            );
            return ExitCode::FAILURE;
        }
    };
    let result = match action {
        TrustAction::List { json } => list(&db, spec, json).await,
        TrustAction::Reset { .. } => reset(&db, class).await,
    };
    db.close().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn list(db: &Db, spec: &ShotgunCacheSpec, as_json: bool) -> anyhow::Result<()> {
    let records = storage::read_trust(db).await?;
    let needed = spec.trust.samples;
    let rows: Vec<_> = TrustClass::ALL
        .iter()
        .map(|c| {
            let r = records.get(c).cloned().unwrap_or_default();
            let pin = spec.trust.pin(*c).map(|p| format!("{p:?}").to_lowercase());
            (c, r, pin)
        })
        .collect();
    if as_json {
        let out: Vec<_> = rows
            .iter()
            .map(|(c, r, pin)| {
                json!({
                    "class": c.name(), "state": r.state.name(), "pinned": pin,
                    "samples": r.samples, "needed": needed, "checks": r.checks,
                    "differences": r.differences, "served": r.served,
                    "last_check": r.last_check_ms.and_then(time_of).map(|t| t.to_rfc3339()),
                    "skipped": {"busy": r.skipped_busy, "site_budget": r.skipped_budget},
                    "detail": r.detail,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{:<26} {:<10} {:>9} {:>7} {:>6} {:>9}  {:<10} {:<18} detail",
        "class", "state", "samples", "checks", "diffs", "served", "last check", "skipped"
    );
    let now = chrono::Utc::now();
    for (c, r, pin) in rows {
        let state = match pin {
            Some(p) => format!("pinned {p}"),
            None => r.state.name().to_string(),
        };
        let last = r
            .last_check_ms
            .and_then(time_of)
            .map(|t| format!("{} ago", age(now - t)))
            .unwrap_or_else(|| "never".into());
        println!(
            "{:<26} {:<10} {:>9} {:>7} {:>6} {:>9}  {:<10} {:<18} {}",
            c.name(),
            state,
            format!("{}/{needed}", r.samples),
            r.checks,
            r.differences,
            r.served,
            last,
            skipped(&r),
            r.detail.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

fn time_of(ms: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_millis(ms)
}

/// `3m`, `2h`, `5d`: how long ago, roughly.
fn age(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Why checks were not run: `busy 3, budget 12`, or `-`.
fn skipped(r: &storage::TrustRecord) -> String {
    let mut parts = Vec::new();
    if r.skipped_busy > 0 {
        parts.push(format!("busy {}", r.skipped_busy));
    }
    if r.skipped_budget > 0 {
        parts.push(format!("budget {}", r.skipped_budget));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

async fn reset(db: &Db, class: Option<TrustClass>) -> anyhow::Result<()> {
    let before = storage::read_trust(db).await?;
    let n = storage::reset_trust(db, class).await?;
    let was_off = |c: &TrustClass| before.get(c).is_some_and(|r| r.state == TrustState::Off);
    match class {
        Some(c) if was_off(&c) => println!("{c}: off → learning"),
        Some(c) => println!("{c}: learning (samples counted afresh)"),
        None => println!("{n} classes back to learning"),
    }
    Ok(())
}
