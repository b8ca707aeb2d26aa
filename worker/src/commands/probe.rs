//! `sgcache-worker probe`: the pods' startup probe. An HTTP probe sent before the process
//! listens fails, and each failure is a Warning Event on a healthy start; a probe that only
//! starts after a fixed delay makes every pod a second late. This one runs in the container
//! as soon as it starts, waits (bounded) for the worker's port to accept a connection, then
//! asks its `/healthz`: the pod is started the moment the worker is.

use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Pause between two connection attempts while the worker is not listening yet.
const RETRY: Duration = Duration::from_millis(20);

/// What to probe and for how long.
#[derive(Clone, Debug)]
pub struct ProbeArgs {
    pub host: String,
    pub port: u16,
    pub path: String,
    /// How long a refused connection is retried (the worker still starting).
    pub wait: Duration,
}

/// Exit 0 when `path` answers 2xx within the wait; 1 (with the reason on stderr) otherwise.
pub async fn run(args: &ProbeArgs) -> ExitCode {
    match probe(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("probe: {why}");
            ExitCode::FAILURE
        }
    }
}

async fn probe(args: &ProbeArgs) -> Result<(), String> {
    let url = url(args);
    let client = reqwest::Client::builder()
        .timeout(args.wait.max(Duration::from_secs(1)))
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + args.wait;
    loop {
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            // Listening but not well: that is the probe's answer, not something to wait out.
            Ok(r) => return Err(format!("{url} answered {}", r.status())),
            Err(e) if e.is_connect() && Instant::now() < deadline => {
                tokio::time::sleep(RETRY).await
            }
            Err(e) => return Err(format!("{url}: {e}")),
        }
    }
}

/// `http://host:port/path`, an IPv6 address in brackets.
fn url(args: &ProbeArgs) -> String {
    let host = match args.host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
        _ => args.host.clone(),
    };
    format!("http://{host}:{}{}", args.port, args.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(port: u16, wait_ms: u64) -> ProbeArgs {
        ProbeArgs {
            host: "127.0.0.1".into(),
            port,
            path: "/healthz".into(),
            wait: Duration::from_millis(wait_ms),
        }
    }

    /// A port that nothing listens on (bound, then released).
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    async fn serve(port: u16, status: u16) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let app = axum::Router::new().route(
            "/healthz",
            axum::routing::get(
                move || async move { axum::http::StatusCode::from_u16(status).unwrap() },
            ),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    #[test]
    fn an_ipv6_host_is_bracketed() {
        let mut a = args(8010, 0);
        assert_eq!(url(&a), "http://127.0.0.1:8010/healthz");
        a.host = "::1".into();
        assert_eq!(url(&a), "http://[::1]:8010/healthz");
    }

    #[tokio::test]
    async fn waits_for_a_listener_that_comes_late_then_passes() {
        let port = free_port();
        let started = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            serve(port, 200).await;
        });
        assert_eq!(probe(&args(port, 3_000)).await, Ok(()));
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn fails_when_nothing_listens_within_the_wait() {
        let port = free_port();
        let err = probe(&args(port, 200)).await.unwrap_err();
        assert!(err.contains(&format!("127.0.0.1:{port}/healthz")), "{err}");
    }

    #[tokio::test]
    async fn fails_at_once_on_an_unhealthy_answer() {
        let port = free_port();
        serve(port, 503).await;
        let started = Instant::now();
        let err = probe(&args(port, 5_000)).await.unwrap_err();
        assert!(err.contains("503"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
