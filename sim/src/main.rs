//! The `shotgun-sim` binary: prints `{"listening": URL}` as its first stdout line, logs to
//! stderr, stops on SIGTERM/SIGINT.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use shotgun_sim::SimConfig;

#[derive(Parser, Debug)]
#[command(
    name = "shotgun-sim",
    about = "A test Shotgun site (API3 JSON protocol, in memory)"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Schema directory (schema.json [+ schema_entity.json]) or a schema_read JSON file.
    #[arg(long)]
    schema_dir: Option<PathBuf>,
    /// YAML or JSON config file (see sim/README.md); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seed scale N: shots ≈ N, assets ≈ N/2, tasks ≈ 2N, versions ≈ N.
    #[arg(long)]
    seed_scale: Option<usize>,
    #[arg(long)]
    rng_seed: Option<u64>,
    #[arg(long)]
    seed_shots: Option<usize>,
    #[arg(long)]
    seed_assets: Option<usize>,
    #[arg(long)]
    seed_tasks: Option<usize>,
    #[arg(long)]
    seed_versions: Option<usize>,
    /// `info.version`, e.g. 7.3.0 to make the client page with entity_count.
    #[arg(long)]
    site_version: Option<String>,
    /// Fixed site clock, YYYY-MM-DDTHH:MM:SSZ.
    #[arg(long)]
    clock: Option<String>,
    #[arg(long)]
    latency_ms: Option<u64>,
    #[arg(long)]
    jitter_ms: Option<u64>,
    #[arg(long)]
    fail_503_rate: Option<f64>,
    #[arg(long)]
    timeout_rate: Option<f64>,
    #[arg(long)]
    timeout_ms: Option<u64>,
    #[arg(long)]
    down: bool,
    #[arg(long)]
    event_gap_rate: Option<f64>,
    #[arg(long)]
    event_gap_delay_ms: Option<u64>,
    #[arg(long)]
    event_drop_rate: Option<f64>,
    /// Unset checkbox fields read as null (see sim/README.md, "Ugly data").
    #[arg(long)]
    null_checkboxes: bool,
    /// `insensitive` (default) or `sensitive` (sim/README.md, "Semantic choices").
    #[arg(long)]
    text_case: Option<String>,
    /// `folded` (default) or `byte`.
    #[arg(long)]
    sort_collation: Option<String>,
    /// `monday` (default) or `sunday`.
    #[arg(long)]
    week_start: Option<String>,
    /// `null` (default) or `default`: the far value of a filter behind a missing link.
    #[arg(long)]
    null_hop: Option<String>,
}

/// A semantic switch given on the command line, read with its config-file names.
fn switch<T: serde::de::DeserializeOwned>(
    flag: &str,
    v: Option<String>,
) -> anyhow::Result<Option<T>> {
    v.map(|v| {
        serde_json::from_value(serde_json::Value::String(v.clone()))
            .map_err(|e| anyhow::anyhow!("--{flag} {v:?}: {e}"))
    })
    .transpose()
}

fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}

fn config(a: Args) -> anyhow::Result<SimConfig> {
    let mut c = match &a.config {
        Some(p) => SimConfig::from_file(p)?,
        None => SimConfig::default(),
    };
    if a.schema_dir.is_some() {
        c.schema_path = a.schema_dir;
    }
    set(&mut c.seed.scale, a.seed_scale);
    set(&mut c.seed.rng_seed, a.rng_seed);
    c.seed.shots = a.seed_shots.or(c.seed.shots);
    c.seed.assets = a.seed_assets.or(c.seed.assets);
    c.seed.tasks = a.seed_tasks.or(c.seed.tasks);
    c.seed.versions = a.seed_versions.or(c.seed.versions);
    if let Some(v) = a.site_version {
        c.version = v
            .split('.')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("--site-version {v:?}: {e}"))?;
    }
    c.clock = a.clock.or(c.clock);
    c.null_checkboxes |= a.null_checkboxes;
    set(
        &mut c.semantics.text_case,
        switch("text-case", a.text_case)?,
    );
    set(
        &mut c.semantics.sort_collation,
        switch("sort-collation", a.sort_collation)?,
    );
    set(
        &mut c.semantics.week_start,
        switch("week-start", a.week_start)?,
    );
    set(&mut c.semantics.null_hop, switch("null-hop", a.null_hop)?);
    let f = &mut c.faults;
    set(&mut f.latency_ms, a.latency_ms);
    set(&mut f.jitter_ms, a.jitter_ms);
    set(&mut f.fail_503_rate, a.fail_503_rate);
    set(&mut f.timeout_rate, a.timeout_rate);
    set(&mut f.timeout_ms, a.timeout_ms);
    f.down |= a.down;
    set(&mut f.event_gap_rate, a.event_gap_rate);
    set(&mut f.event_gap_delay_ms, a.event_gap_delay_ms);
    set(&mut f.event_drop_rate, a.event_drop_rate);
    c.faults = c
        .faults
        .merged(&serde_json::json!({}))
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(c)
}

/// SIGTERM and SIGINT, listened for from the moment this is built: a signal that comes
/// right after the URL is printed (what a supervisor or test does) must stop the site, not
/// kill it before the handler exists.
struct StopSignals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = signal(SignalKind::terminate())
                .and_then(|t| Ok((t, signal(SignalKind::interrupt())?)))
                .ok();
            StopSignals { streams }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    async fn wait(self) {
        #[cfg(unix)]
        match self.streams {
            Some((mut term, mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            None => std::future::pending().await,
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let listen = args.listen;
    let stop = StopSignals::install();
    let handle = shotgun_sim::start(config(args)?, listen).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::json!({ "listening": handle.url() }))?;
        out.flush()?;
    }
    stop.wait().await;
    tracing::info!("stopping");
    handle.shutdown().await;
    Ok(())
}
