//! `sgcache-worker proxy`: resolve settings, connect, serve until SIGTERM.

use std::net::SocketAddr;

use sgcache::spec::process_env;
use sgcache::sql::Db;
use sgcache::ShotgunCacheSpec;
use tokio_util::sync::CancellationToken;

use super::{serve, AppState, ProxyConfig};

/// Runs the proxy on `spec.workers.proxy.port` (all interfaces) until `stop`.
pub async fn run(spec: &ShotgunCacheSpec, stop: CancellationToken) -> anyhow::Result<()> {
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
    // Without its database the proxy still passes everything through; it retries the
    // connection in the background through the catalog refresh.
    let db = match Db::connect(&url, spec.database.max_connections).await {
        Ok(db) => Some(db),
        Err(e) => {
            tracing::error!(error = %e, "cache database unavailable at start; passing everything through");
            None
        }
    };
    let state = AppState::new(&config, db)?;
    let addr = SocketAddr::from(([0, 0, 0, 0], spec.workers.proxy.port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve(state, config, listener, stop).await
}
