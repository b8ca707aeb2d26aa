//! `cargo run --release -p sgcache-tests --bin proxy-rss [-- --clients N --rounds N --mb N
//!  --slow N]`
//!
//! Peak resident memory of the real `sgcache-worker proxy` process (its own process, read
//! from `/proc/<pid>/status`, sampled every 5 ms) above its idle memory, under the attacks of
//! issue 15, in front of the test site with the default limits:
//!
//! 1. `--clients` (16) clients each POSTing `--rounds` (4) bodies of `[0,0,…]` of `--mb` (16)
//!    MB without credentials, with a `content-length`;
//! 2. the same streamed without a length (chunked);
//! 3. `--slow` (200) connections that send half their headers and stop; how many the proxy
//!    has closed after its header timeout (set to 2 s here).
//!
//! Prints one JSON object. Figures go to BENCHMARKS.md. Needs the release worker binary
//! (`cargo build --release -p sgcache-worker`; `SGCACHE_WORKER_BIN` overrides the path).

use std::time::Duration;

use serde_json::json;
use sgcache_tests::rss::{body_attack, closed, rss_kib, slow_connections, ProxyProcess, Sampler};
use shotgun_sim::SimConfig;

/// The header timeout of the measured proxy: short, so the run shows the slow connections
/// being closed without waiting the default 30 s.
const HEADER_TIMEOUT: &str = "2s";

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (clients, rounds, mb, slow) = (
        arg("--clients", 16),
        arg("--rounds", 4),
        arg("--mb", 16),
        arg("--slow", 200),
    );
    let sim = shotgun_sim::start(SimConfig::default(), "127.0.0.1:0".parse()?).await?;
    let limits = format!("      headerReadTimeout: {HEADER_TIMEOUT}");
    let mut proxy = ProxyProcess::start(&sim.url(), &limits).await?;
    let pid = proxy.pid();
    // Warm up: a few ordinary requests so the idle figure includes the HTTP stacks.
    let http = reqwest::Client::new();
    for _ in 0..20 {
        let _ = http
            .post(format!("{}/api3/json", proxy.url))
            .body(r#"{"method_name":"info","params":[]}"#)
            .send()
            .await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_kib(pid);

    let sampler = Sampler::start(pid);
    let answered_len = body_attack(&proxy.url, mb, clients, rounds, false).await;
    let peak_len = sampler.peak_kib();
    let sampler = Sampler::start(pid);
    let answered_chunked = body_attack(&proxy.url, mb, clients, rounds, true).await;
    let peak_chunked = sampler.peak_kib();

    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_slow = rss_kib(pid);
    let sampler = Sampler::start(pid);
    let mut conns = slow_connections(&proxy.url, slow).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let open_after_half_second = conns.len() - closed(&mut conns).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let closed_after_timeout = closed(&mut conns).await;
    let peak_slow = sampler.peak_kib();
    let alive = proxy.alive();
    let mib = |k: u64| (k as f64 / 1024.0 * 10.0).round() / 10.0;
    println!(
        "{}",
        json!({
            "idle_rss_mib": mib(idle),
            "body_attack": {"clients": clients, "rounds": rounds, "mb": mb,
                "with_length": {"answered": answered_len, "peak_rss_mib": mib(peak_len),
                    "above_idle_mib": mib(peak_len.saturating_sub(idle))},
                "chunked": {"answered": answered_chunked, "peak_rss_mib": mib(peak_chunked),
                    "above_idle_mib": mib(peak_chunked.saturating_sub(idle))}},
            "slow_connections": {"opened": conns.len(), "open_after_0_5s": open_after_half_second,
                "header_timeout": HEADER_TIMEOUT, "closed_after_3_5s": closed_after_timeout,
                "rss_before_mib": mib(before_slow), "peak_rss_mib": mib(peak_slow),
                "above_before_mib": mib(peak_slow.saturating_sub(before_slow))},
            "proxy_alive": alive,
        })
    );
    drop(proxy);
    sim.shutdown().await;
    Ok(())
}
