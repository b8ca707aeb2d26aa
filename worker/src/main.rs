//! `sgcache-worker`: the proxy, the event follower, the scanner and migrations.

use std::process::ExitCode;

use clap::Parser;

// mimalloc instead of glibc malloc: the proxy allocates and frees per row and per answer on
// every runtime thread, and under load glibc's per-thread arenas kept returning memory to the
// kernel and faulting it back in (a sixth of the proxy's CPU in `perf`; BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// I/O events a runtime thread takes from the kernel when it polls while it still has tasks
/// to run (tokio's default: as many as an idle poll, 1,024). Under a farm's storm, a poll that
/// wakes a thousand connections overflows the thread's local queue (256 tasks) into the shared
/// one, where the overflow waits while the local queue keeps being refilled: most reads are
/// answered at once and a few wait many times as long. A small busy batch leaves the rest in the
/// kernel's ready list, which is first come, first served. At 5,000 connections the storm's
/// p99 fell by a fifth to a half, throughput alike (BENCHMARKS.md, "Reads served in turn").
const BUSY_IO_EVENTS: usize = 16;

fn main() -> ExitCode {
    let cli = sgcache_worker::cli::Cli::parse();
    sgcache_worker::telemetry::init(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_io_events_per_busy_tick(BUSY_IO_EVENTS)
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(sgcache_worker::cli::run(cli))
}
