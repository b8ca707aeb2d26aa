//! What the event follower and the scanner share: reading the site, writing what it returns,
//! where following starts, the leader lock and retry pacing.

pub mod backoff;
pub mod leader;
pub mod schema_follow;
pub mod site_reader;
pub mod start;
pub mod write;

use std::time::Duration;

use sgcache::sql::Db;
use sgcache::storage::redact_url;
use tokio_util::sync::CancellationToken;

use self::backoff::Backoff;

/// Connects to the database, retrying (with backoff) until it answers or `stop` fires.
pub async fn connect_db(url: &str, max: u32, stop: &CancellationToken) -> Option<Db> {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        match Db::connect(url, max).await {
            Ok(db) => return Some(db),
            Err(e) => {
                tracing::warn!(database = %redact_url(url), error = %e, "cannot connect to the database; retrying");
                if !backoff.wait(stop).await {
                    return None;
                }
            }
        }
    }
}
