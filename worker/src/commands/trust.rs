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
    /// Print every class: its state, samples, checks, differences and reads served.
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
                    "samples": r.samples, "checks": r.checks, "differences": r.differences,
                    "served": r.served, "detail": r.detail,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{:<28} {:<9} {:>7} {:>7} {:>6} {:>9}  detail",
        "class", "state", "samples", "checks", "diffs", "served"
    );
    for (c, r, pin) in rows {
        let state = match pin {
            Some(p) => format!("pinned {p}"),
            None => r.state.name().to_string(),
        };
        println!(
            "{:<28} {:<9} {:>7} {:>7} {:>6} {:>9}  {}",
            c.name(),
            state,
            r.samples,
            r.checks,
            r.differences,
            r.served,
            r.detail.as_deref().unwrap_or("")
        );
    }
    Ok(())
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
