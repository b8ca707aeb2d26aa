//! A cache answers for one site only: the first migration records the site it fills the cache
//! from (`sgcache::storage::bind_site`), and every command refuses to start against a cache
//! filled from another site, so one site's data is never served as another's.

use serde_json::Value;
use sgcache::site::SiteClient;
use sgcache::spec::{process_env, SiteConnection};
use sgcache::sql::Db;
use sgcache::storage::{self, normalize_site_url, SiteBinding};
use sgcache::ShotgunCacheSpec;

/// The cache was filled from another site than the one configured. Exit code 2.
#[derive(Debug, thiserror::Error)]
#[error(
    "this cache was filled from {cached}, not from the configured site {configured}; to start \
     fresh, run `sgcache-worker migrate --reset` (drops the cache's tables) or use another \
     database (DATABASE_URL, or database.sqlitePath for SQLite)"
)]
pub struct OtherSite {
    pub cached: String,
    pub configured: String,
}

/// The configured site's URL (`SHOTGUN_URL`, then `site.url`), if any.
pub fn configured_url(spec: &ShotgunCacheSpec) -> Option<String> {
    process_env(sgcache::spec::env::SHOTGUN_URL).or_else(|| spec.site.url.clone())
}

/// Fails with [`OtherSite`] when the cache is bound to another site than `site_url`. A cache
/// not bound yet passes: its first migration binds it.
pub async fn check(db: &Db, site_url: &str) -> anyhow::Result<()> {
    match storage::read_binding(db).await? {
        Some(bound) => same_site(&bound, site_url),
        None => Ok(()),
    }
}

/// Binds the cache to `conn`'s site (with what the site's `info` says) unless it is bound,
/// and fails with [`OtherSite`] when it is bound to another site.
pub async fn bind(db: &Db, conn: SiteConnection) -> anyhow::Result<()> {
    let site_url = conn.url.clone();
    let binding = SiteBinding {
        url: normalize_site_url(&site_url),
        info: site_info(conn).await,
    };
    let bound = storage::bind_site(db, &binding).await?;
    same_site(&bound, &site_url)
}

/// The connection to bind with when only the site's URL is known (`migrate --schema-dir`
/// without credentials): `info` needs none.
pub fn anonymous(spec: &ShotgunCacheSpec) -> Option<SiteConnection> {
    Some(SiteConnection {
        url: configured_url(spec)?.trim_end_matches('/').to_string(),
        script_name: String::new(),
        api_key: String::new(),
        timeout: spec.site.timeout.duration(),
    })
}

fn same_site(bound: &SiteBinding, site_url: &str) -> anyhow::Result<()> {
    let configured = normalize_site_url(site_url);
    if bound.url == configured {
        return Ok(());
    }
    Err(OtherSite {
        cached: bound.url.clone(),
        configured,
    }
    .into())
}

/// The site's `info` answer, `Null` when it gives none (it is kept for people; the URL is
/// what binds).
async fn site_info(conn: SiteConnection) -> Value {
    let answer = match SiteClient::new(conn) {
        Ok(client) => client.call("info", Value::Null).await,
        Err(e) => Err(e),
    };
    answer.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the site's info is unavailable; binding the cache by URL only");
        Value::Null
    })
}
