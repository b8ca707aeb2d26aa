//! `sgcache-worker`: the proxy, the event follower, the scanner and migrations.

use std::process::ExitCode;

use clap::Parser;

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
