//! `sgcache-worker status`: the cache's state in one screen (or JSON with `--json`).
//!
//! Exit codes: 0 printed; 1 the database cannot be read (or holds no cache yet). A site or
//! proxy that does not answer is shown as such, not a failure: the cache's own state is what
//! the command is for.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::time::Duration;

use sgcache::site::SiteClient;
use sgcache::spec::{process_env, ShotgunCacheSpec};
use sgcache::sql::Db;
use sgcache::storage::redact_url;

use super::{gather, ProxyFigures};

/// The longest the command waits for the database, the site or the proxy.
const WAIT: Duration = Duration::from_secs(5);

/// The options of `status`.
#[derive(Clone, Debug, Default)]
pub struct StatusArgs {
    /// Print JSON instead of the table.
    pub json: bool,
    /// The proxy's base URL; by default where the spec (and `SGCACHE_BIND`/`SGCACHE_PORT`)
    /// says it listens.
    pub proxy: Option<String>,
}

pub async fn run(spec: &ShotgunCacheSpec, args: StatusArgs) -> ExitCode {
    match status(spec, &args).await {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(out.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn status(spec: &ShotgunCacheSpec, args: &StatusArgs) -> Result<String, String> {
    let url = spec.database_url(&process_env);
    if crate::commands::migrate::sqlite_file_missing(&url) {
        return Err(format!("no cache database at {}", redact_url(&url)));
    }
    let db = Db::connect_with_timeout(&url, 2, WAIT)
        .await
        .map_err(|e| format!("cannot connect to the database {}: {e}", redact_url(&url)))?;
    // Without site credentials the site's figures are left out, not an error.
    let site = spec.site_connection(&process_env).ok().and_then(|mut c| {
        c.timeout = c.timeout.min(WAIT);
        SiteClient::new(c).ok()
    });
    let gathered = gather(&db, site.as_ref(), Some(spec)).await;
    db.close().await;
    let mut status = gathered.map_err(|e| format!("{} ({})", e, redact_url(&url)))?;
    super::trust::apply_settings(&mut status.trust, spec.trust.samples, |c| spec.trust.pin(c));
    let proxy = args.proxy.clone().unwrap_or_else(|| proxy_url(spec));
    match ProxyFigures::fetch(&proxy).await {
        Ok(figures) => status.proxy = Some(figures),
        Err(e) => status.proxy_error = Some(e),
    }
    if args.json {
        let mut out = serde_json::to_string_pretty(&status).map_err(|e| e.to_string())?;
        out.push('\n');
        return Ok(out);
    }
    Ok(super::text::render(&status))
}

/// Where the proxy of this spec listens, as a URL this machine can reach.
fn proxy_url(spec: &ShotgunCacheSpec) -> String {
    let bind = process_env("SGCACHE_BIND")
        .and_then(|b| b.parse::<IpAddr>().ok())
        .or(spec.workers.proxy.bind)
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let port = process_env("SGCACHE_PORT")
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(spec.workers.proxy.port);
    match bind {
        IpAddr::V6(ip) => format!("http://[{ip}]:{port}"),
        IpAddr::V4(ip) => format!("http://{ip}:{port}"),
    }
}
