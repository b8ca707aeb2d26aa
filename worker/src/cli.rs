//! Command line: `sgcache-worker [--config F] [--log-format json|text] <command>`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use sgcache::ShotgunCacheSpec;

use crate::observe::{self, Probes};
use crate::telemetry::LogFormat;

/// Exit code for a bad spec or bad arguments, and for a cache filled from another site.
pub const EXIT_BAD_CONFIG: u8 = 2;

/// Every environment variable the worker reads, for `--help`.
const ENVIRONMENT: &str = "\
Environment:
  SHOTGUN_URL           the site's URL (overrides site.url)
  SHOTGUN_SCRIPT_NAME   the script the cache authenticates as (overrides site.scriptName)
  SHOTGUN_API_KEY       that script's key (overrides site.apiKey)
  DATABASE_URL          postgres://… or sqlite://… (overrides database.url; default: SQLite
                        file database.sqlitePath)
  SGCACHE_CONFIG        the spec file (--config)
  SGCACHE_LOG_FORMAT    json or text (--log-format)
  SGCACHE_BIND          address the proxy listens on (--bind; default 127.0.0.1)
  SGCACHE_PORT          port the proxy listens on (--port; default workers.proxy.port, 8010)
  RUST_LOG              log filter, e.g. info or sgcache_worker=debug";

/// Where the proxy listens (`proxy` and `all`); flags and variables win over the spec.
#[derive(Clone, Copy, Debug, Default, Args)]
pub struct ListenArgs {
    /// Address to listen on (default: workers.proxy.bind, else 127.0.0.1).
    #[arg(long, env = "SGCACHE_BIND")]
    pub bind: Option<IpAddr>,
    /// Port to listen on (default: workers.proxy.port, else 8010).
    #[arg(long, env = "SGCACHE_PORT")]
    pub port: Option<u16>,
}

impl ListenArgs {
    fn apply(self, spec: &mut ShotgunCacheSpec) {
        if let Some(bind) = self.bind {
            spec.workers.proxy.bind = Some(bind);
        }
        if let Some(port) = self.port {
            spec.workers.proxy.port = port;
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "sgcache-worker",
    version,
    about = "sgcache: a caching proxy for the Shotgun API",
    after_help = ENVIRONMENT
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
        /// Drop every table of the cache first and fill it afresh (a cache of another site).
        #[arg(long, conflicts_with = "dry_run")]
        reset: bool,
    },
    /// Serve the API3 protocol, answering reads from the cache.
    Proxy(ListenArgs),
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
    /// Print the cache's state: field states and backfill progress per type, the event
    /// follower's lag, the proxy's hit ratio and why reads pass through.
    Status {
        /// Print JSON (for scripts) instead of the table.
        #[arg(long)]
        json: bool,
        /// The proxy's base URL (default: where workers.proxy.bind/port, or SGCACHE_BIND /
        /// SGCACHE_PORT, say it listens).
        #[arg(long)]
        proxy: Option<String>,
    },
    /// The trust classes: read shapes whose semantics on the site are inferred, answered from
    /// the cache once proven (`list`), and a person's `reset` of one a difference turned off.
    Trust {
        #[command(subcommand)]
        action: crate::commands::trust::TrustAction,
    },
    /// Wait for this container's worker to listen, then ask its `/healthz`: exit 0 when it
    /// answers 2xx (the pods' startup probe; reads no spec).
    Probe {
        /// The port the worker serves its probes on.
        #[arg(long)]
        port: u16,
        /// Host to connect to.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value = "/healthz")]
        path: String,
        /// How long to wait for the worker to listen, in seconds.
        #[arg(long, default_value_t = 3)]
        wait_seconds: u64,
    },
    /// Migrate, then run the proxy, event follower and scanner in one process (local use).
    All {
        #[command(flatten)]
        listen: ListenArgs,
        /// Drop every table of the cache first and fill it afresh (a cache of another site).
        #[arg(long)]
        reset: bool,
    },
}

/// Runs a command and maps the outcome to the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    if let Command::Probe {
        port,
        ref host,
        ref path,
        wait_seconds,
    } = cli.command
    {
        let args = crate::commands::probe::ProbeArgs {
            host: host.clone(),
            port,
            path: path.clone(),
            wait: std::time::Duration::from_secs(wait_seconds),
        };
        return crate::commands::probe::run(&args).await;
    }
    let mut spec = match ShotgunCacheSpec::from_file(&cli.config) {
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
            reset,
        } => {
            let args = crate::commands::migrate::MigrateArgs {
                dry_run,
                prune,
                schema_dir: schema_dir.as_deref(),
                reset,
            };
            return crate::commands::migrate::run(&spec, args).await;
        }
        Command::Status { json, ref proxy } => {
            let args = crate::status::command::StatusArgs {
                json,
                proxy: proxy.clone(),
            };
            return crate::status::command::run(&spec, args).await;
        }
        Command::Trust { action } => {
            return crate::commands::trust::run(&spec, action).await;
        }
        Command::Proxy(listen) => {
            listen.apply(&mut spec);
            crate::proxy::run::run(&spec, shutdown.clone()).await
        }
        Command::Events => {
            let obs = Arc::new(crate::events::metrics::EventsMetrics::for_spec(&spec));
            let probes = Probes::default().with(obs.clone());
            let port = spec.workers.events.metrics_port;
            observe::server::spawn(spec.workers.proxy.bind, port, probes, shutdown.clone()).await;
            crate::events::run_observed(&spec, shutdown.clone(), obs).await
        }
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
            let obs = Arc::new(crate::scanner::metrics::ScannerMetrics::for_spec(&spec));
            // A one-off `--full` run is not a service: no probes.
            let port = if full {
                0
            } else {
                spec.workers.scanner.metrics_port
            };
            let probes = Probes::default().with(obs.clone());
            observe::server::spawn(spec.workers.proxy.bind, port, probes, shutdown.clone()).await;
            crate::scanner::run_observed(&spec, args, shutdown.clone(), obs).await
        }
        Command::Probe { .. } => unreachable!("answered before the spec is read"),
        Command::All { listen, reset } => {
            listen.apply(&mut spec);
            let args = crate::commands::migrate::MigrateArgs {
                reset,
                ..Default::default()
            };
            let migrated = crate::commands::migrate::run(&spec, args).await;
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
            // The follower's and the scanner's metrics and probes are served on the proxy's port.
            let events = Arc::new(crate::events::metrics::EventsMetrics::for_spec(&spec));
            let scanner = Arc::new(crate::scanner::metrics::ScannerMetrics::for_spec(&spec));
            let probes = Probes::default().with(events.clone()).with(scanner.clone());
            let (p, e, s) = tokio::join!(
                async { fail(crate::proxy::run::run_with(&spec, probes, shutdown.clone()).await) },
                async { fail(crate::events::run_observed(&spec, shutdown.clone(), events).await) },
                async {
                    let args = crate::scanner::ScannerArgs::default();
                    fail(crate::scanner::run_observed(&spec, args, shutdown.clone(), scanner).await)
                },
            );
            p.and(e).and(s)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<crate::site_binding::OtherSite>() => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
        Err(e) if tables_gone(&e) => {
            eprintln!(
                "error: the cache's tables are gone (the cache was deleted with deletionPolicy \
                 Delete, or its schema dropped by hand); nothing to serve, exiting: {}",
                describe(&e)
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: a context that already quotes its cause (as
/// sqlx's errors do) does not repeat it.
pub fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain().map(|c| c.to_string()) {
        if !out.contains(&cause) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&cause);
        }
    }
    out
}

/// True when PostgreSQL said a table or schema of the cache does not exist.
fn tables_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let code = c
            .downcast_ref::<sqlx::Error>()
            .and_then(|s| s.as_database_error())
            .and_then(|d| d.code().map(|c| c.into_owned()));
        // undefined_table, invalid_schema_name; or the same said by an error that wraps the
        // database's without exposing it as its source.
        let text = c.to_string();
        matches!(code.as_deref(), Some("42P01") | Some("3F000"))
            || (text.contains("does not exist")
                && (text.contains("relation \"") || text.contains("schema \"")))
    })
}

#[cfg(test)]
mod tests {
    use super::{describe, tables_gone};

    #[test]
    fn a_dropped_schema_is_told_apart_from_other_failures() {
        let dropped = anyhow::anyhow!(
            "error returned from database: relation \"_sgcache_site\" does not exist"
        )
        .context("checking the site binding");
        assert!(tables_gone(&dropped));
        let schema = anyhow::anyhow!("error returned from database: schema \"sgc\" does not exist");
        assert!(tables_gone(&schema));
        let refused = anyhow::anyhow!("error communicating with database: Connection refused");
        assert!(!tables_gone(&refused));
        let site = anyhow::anyhow!("the site answered: entity type Foo does not exist");
        assert!(!tables_gone(&site));
    }

    #[test]
    fn an_error_chain_is_said_once() {
        let root = anyhow::anyhow!("relation \"_sgcache_site\" does not exist");
        let e = root
            .context("reading the site binding: relation \"_sgcache_site\" does not exist")
            .context("starting the proxy");
        assert_eq!(
            describe(&e),
            "starting the proxy: reading the site binding: relation \"_sgcache_site\" does not exist"
        );
    }
}
