//! Command line: `sgcache-worker [--config F] [--log-format json|text] <command>`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sgcache::ShotgunCacheSpec;

use crate::telemetry::LogFormat;

/// Exit code for a bad spec or bad arguments.
pub const EXIT_BAD_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "sgcache-worker",
    version,
    about = "sgcache: a caching proxy for the Shotgun API"
)]
pub struct Cli {
    /// The ShotgunCache spec as YAML (the same document as the resource's spec).
    #[arg(
        long,
        global = true,
        env = "SGCACHE_CONFIG",
        default_value = "sgcache.yaml"
    )]
    pub config: PathBuf,
    /// Log format: json for containers, text for people.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "SGCACHE_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring the database to the layout the spec asks for, printing the plan.
    Migrate {
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also drop columns and tables of fields no longer in the spec.
        #[arg(long)]
        prune: bool,
        /// Read the site schema from this folder (schema.json, schema_entity.json) instead of
        /// asking the site.
        #[arg(long)]
        schema_dir: Option<PathBuf>,
    },
    /// Serve the API3 protocol, answering reads from the cache.
    Proxy,
    /// Follow EventLogEntry and apply changes to the cache.
    Events,
    /// Scan for entities whose updated_at moved; backfill new fields and types.
    Scanner {
        /// Run one full scan (every row of the selected types) and exit.
        #[arg(long)]
        full: bool,
        /// Only these entity types (comma-separated).
        #[arg(long, value_delimiter = ',')]
        types: Vec<String>,
        /// Only rows of these project ids (comma-separated; with --full).
        #[arg(long, value_delimiter = ',')]
        projects: Vec<i64>,
    },
    /// Migrate, then run the proxy, event follower and scanner in one process (local use).
    All,
}

/// Runs a command and maps the outcome to the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let spec = match ShotgunCacheSpec::from_file(&cli.config) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let shutdown = crate::shutdown::on_signal();
    let result: anyhow::Result<()> = match cli.command {
        Command::Migrate {
            dry_run,
            prune,
            ref schema_dir,
        } => {
            let args = crate::commands::migrate::MigrateArgs {
                dry_run,
                prune,
                schema_dir: schema_dir.as_deref(),
            };
            return crate::commands::migrate::run(&spec, args).await;
        }
        Command::Proxy => crate::proxy::run::run(&spec, shutdown.clone()).await,
        Command::Events => crate::events::run(&spec, shutdown.clone()).await,
        Command::Scanner {
            full,
            ref types,
            ref projects,
        } => {
            let args = crate::scanner::ScannerArgs {
                full,
                types: types.clone(),
                projects: projects.clone(),
            };
            crate::scanner::run(&spec, args, shutdown.clone()).await
        }
        Command::All => {
            let migrated = crate::commands::migrate::run(&spec, Default::default()).await;
            if migrated != ExitCode::SUCCESS {
                return migrated;
            }
            // One process, three parts; the first failure stops the others.
            let stop = shutdown.clone();
            let fail = |r: anyhow::Result<()>| {
                if r.is_err() {
                    stop.cancel();
                }
                r
            };
            let (p, e, s) = tokio::join!(
                async { fail(crate::proxy::run::run(&spec, shutdown.clone()).await) },
                async { fail(crate::events::run(&spec, shutdown.clone()).await) },
                async {
                    let args = crate::scanner::ScannerArgs::default();
                    fail(crate::scanner::run(&spec, args, shutdown.clone()).await)
                },
            );
            p.and(e).and(s)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
