//! `cargo run --release -p sgcache-tests --bin crash-trials [-- --kills N]`
//!
//! Issue 24's crash trials: `--kills` (default 100) SIGKILLs of the real workers (`all`, and
//! `events` + `scanner` as separate processes, in alternate rounds) while the site takes writes
//! with and without events and writes go through the proxy; then the cache must equal the
//! site, the kept event log must hold the site's ids, and no event may have been applied twice
//! (`sgcache_tests::crash_trials`). Needs PostgreSQL (`SGCACHE_TEST_PG`) and the
//! `sgcache-worker` built beside this binary. `CRASH_SEED` replays a run. Exits 1 when
//! anything was lost or repeated.

use std::process::ExitCode;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let kills = arg("--kills", 100);
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| chrono::Utc::now().timestamp_nanos_opt().unwrap_or(7) as u64);
    let worker = sgcache_tests::worker::beside_this_binary();
    match sgcache_tests::crash_trials::run(&worker, kills, seed).await {
        Ok(out) => {
            println!("{}", sgcache_tests::crash_trials::describe(&out));
            for d in out
                .differences
                .iter()
                .chain(&out.log_differences)
                .chain(&out.applied_twice)
                .take(30)
            {
                println!("  {d}");
            }
            if out.clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("crash-trials failed to run: {e:#}");
            ExitCode::FAILURE
        }
    }
}
