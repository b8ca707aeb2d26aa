//! Graceful shutdown: SIGTERM or SIGINT cancels a token every worker watches; in-flight work
//! finishes, then the process exits 0. Whatever a worker is waiting on (a database that went
//! away, a retry loop), the process is gone [`STOP_WITHIN`] after the signal: Kubernetes
//! would otherwise wait out the grace period and kill it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The longest a worker takes to stop after SIGTERM or SIGINT: the proxy's own grace for
/// requests in progress (10 s) and a margin; well inside Kubernetes' 30 s grace period.
pub const STOP_WITHIN: Duration = Duration::from_secs(12);
/// The exit code when the graceful stop did not finish in time (128 + SIGTERM).
const EXIT_STOP_TIMEOUT: i32 = 143;
/// The exit code when the process cannot handle signals (sysexits' EX_SOFTWARE).
const EXIT_SOFTWARE: i32 = 70;

/// A token cancelled on the first SIGTERM or SIGINT.
///
/// The signals are taken by a thread of their own, not a task: the request is logged, the
/// token cancelled and the deadline kept even when the runtime cannot run tasks (a stuck or
/// starved runtime must not turn SIGTERM into a hang), and the handlers are in place when this
/// returns, so no signal arrives before anyone listens.
pub fn on_signal() -> CancellationToken {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let token = CancellationToken::new();
    let cancel = token.clone();
    let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            // Left to the default action (the process ends at once, without a graceful stop).
            tracing::warn!(error = %e, "cannot handle SIGTERM and SIGINT; they end the process at once");
            return token;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("sgcache-signals".into())
        .spawn(move || {
            if signals.forever().next().is_none() {
                return;
            }
            tracing::info!("shutdown requested; finishing in-flight work");
            cancel.cancel();
            std::thread::sleep(STOP_WITHIN);
            tracing::warn!(
                within_s = STOP_WITHIN.as_secs(),
                "in-flight work did not finish in time after the shutdown request; exiting"
            );
            std::process::exit(EXIT_STOP_TIMEOUT);
        });
    if let Err(e) = spawned {
        // The handlers are in place already: without their thread the signals would be
        // swallowed and the process could only be killed.
        tracing::error!(error = %e, "cannot start the thread that handles SIGTERM and SIGINT");
        std::process::exit(EXIT_SOFTWARE);
    }
    token
}
