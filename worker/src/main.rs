//! `sgcache-worker`: the proxy, the event follower, the scanner and migrations.

use std::process::ExitCode;

use clap::Parser;

// mimalloc instead of glibc malloc: the proxy allocates and frees per row and per answer on
// every runtime thread, and under load glibc's per-thread arenas kept returning memory to the
// kernel and faulting it back in (a sixth of the proxy's CPU in `perf`; BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = sgcache_worker::cli::Cli::parse();
    sgcache_worker::telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(sgcache_worker::cli::run(cli))
}
