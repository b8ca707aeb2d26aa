//! `sgcache-worker proxy`: resolve settings, connect, serve until SIGTERM.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sgcache::spec::process_env;
use sgcache::sql::{Db, PgLimits};
use sgcache::ShotgunCacheSpec;
use tokio_util::sync::CancellationToken;

use super::{serve, AppState, ProxyConfig};

/// How long a read waits for a database connection before it goes to the site instead. sqlx
/// retries refused connections until then, so while PostgreSQL restarts this bounds the delay
/// of the reads that find it down (after the first failure they pass through at once).
pub const DB_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the proxy on `spec.workers.proxy.bind`:`port` until `stop`.
pub async fn run(spec: &ShotgunCacheSpec, stop: CancellationToken) -> anyhow::Result<()> {
    run_with(spec, crate::observe::Probes::default(), stop).await
}

/// [`run`], also serving the metrics and probes of `workers` (the follower and the scanner
/// of `all`, running in this process).
pub async fn run_with(
    spec: &ShotgunCacheSpec,
    workers: crate::observe::Probes,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let site_url = process_env(sgcache::spec::env::SHOTGUN_URL)
        .or_else(|| spec.site.url.clone())
        .ok_or_else(|| anyhow::anyhow!("site url is not set (set SHOTGUN_URL or site.url)"))?;
    let mut config = ProxyConfig::from_spec(spec, site_url);
    config.service_auth = spec.site_connection(&process_env).ok().map(|c| {
        let mut m = serde_json::Map::new();
        m.insert("script_name".into(), c.script_name.into());
        m.insert("script_key".into(), c.api_key.into());
        m
    });
    let url = spec.database_url(&process_env);
    let max = spec.database.max_connections;
    // Without its database the proxy still passes everything through, and keeps trying to
    // connect in the background.
    let state = match Db::connect_limited(&url, max, DB_ACQUIRE_TIMEOUT, &PgLimits::PROXY).await {
        Ok(db) => AppState::new(&config, Some(db))?,
        Err(e) => {
            tracing::error!(error = %e, "cache database unavailable at start; passing everything through");
            let state = AppState::new(&config, None)?;
            state.cache.pending.store(true, Ordering::Relaxed);
            tokio::spawn(connect_later(state.clone(), url, max, stop.clone()));
            state
        }
    };
    if !workers.is_empty() {
        let _ = state.telemetry.workers.set(workers);
    }
    state.telemetry.status_page.set_spec(spec);
    if let Some(db) = state.cache.db() {
        crate::site_binding::check(db, &config.site_url).await?;
    }
    let listener = listen(spec).await?;
    serve(state, config, listener, stop).await
}

/// Binds `workers.proxy.bind` (this machine only unless set) and `workers.proxy.port`.
async fn listen(spec: &ShotgunCacheSpec) -> anyhow::Result<tokio::net::TcpListener> {
    let ip = spec
        .workers
        .proxy
        .bind
        .unwrap_or(Ipv4Addr::LOCALHOST.into());
    let addr = SocketAddr::new(ip, spec.workers.proxy.port);
    bind_with_backlog(addr, backlog(spec.workers.proxy.limits.max_connections)).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr}: {e} (choose another with --port/SGCACHE_PORT or \
             --bind/SGCACHE_BIND)"
        )
    })
}

/// The accept queue's length: room for a render farm's connections arriving at once.
/// `TcpListener::bind` asks for 128 (the standard library's figure); when thousands of jobs
/// connect in the same instant the kernel drops what does not fit, and each dropped
/// connection waits a whole SYN retransmission (1 s, then 3 s) before it is even accepted
/// (BENCHMARKS.md, the crowd: p99 at 5,000 connections). The kernel caps it at
/// `net.core.somaxconn` (4,096 on current kernels, per network namespace).
fn backlog(max_connections: u32) -> u32 {
    max_connections.clamp(128, 65_535)
}

fn bind_with_backlog(addr: SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted proxy rebinds while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Retries the database connection until it works (or the proxy stops).
async fn connect_later(state: Arc<AppState>, url: String, max: u32, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        match Db::connect_limited(&url, max, DB_ACQUIRE_TIMEOUT, &PgLimits::PROXY).await {
            Ok(db) => {
                if let Err(e) = crate::site_binding::check(&db, state.upstream.base()).await {
                    // Never serve another site's data: keep passing everything through.
                    tracing::error!(error = %e, "cache database not used");
                    return;
                }
                tracing::info!("cache database connected");
                state.cache.attach(db);
                state.refresh_catalog().await;
                return;
            }
            Err(e) => tracing::debug!(error = %e, "cache database still unavailable"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of connections nobody has accepted yet all complete their handshake: they fit
    /// in the accept queue instead of waiting for SYN retransmissions (with the standard
    /// 128, the 130th connection's SYN is dropped and its `connect` hangs for a second).
    #[tokio::test]
    async fn a_burst_of_connections_fits_in_the_accept_queue() {
        let listener =
            bind_with_backlog("127.0.0.1:0".parse().unwrap(), backlog(10_000)).expect("bind");
        let addr = listener.local_addr().expect("address");
        let connects = (0..400).map(|_| {
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        });
        let streams = futures::future::join_all(connects).await;
        let connected = streams.iter().filter(|s| matches!(s, Ok(Ok(_)))).count();
        assert_eq!(
            connected, 400,
            "every connection fits in the queue, none accepted yet"
        );
        drop(listener);
    }

    #[test]
    fn the_backlog_follows_max_connections_within_bounds() {
        assert_eq!(backlog(10_000), 10_000);
        assert_eq!(backlog(16), 128);
        assert_eq!(backlog(u32::MAX), 65_535);
    }
}
