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

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; finishing in-flight work");
        cancel.cancel();
        // On its own thread: a runtime too busy or stuck to run tasks still stops in time.
        std::thread::spawn(|| {
            std::thread::sleep(STOP_WITHIN);
            tracing::warn!(
                within_s = STOP_WITHIN.as_secs(),
                "in-flight work did not finish in time after the shutdown request; exiting"
            );
            std::process::exit(EXIT_STOP_TIMEOUT);
        });
    });
    token
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
