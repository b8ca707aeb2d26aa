//! What the event follower and the scanner share: reading the site, writing what it returns,
//! where following starts, the leader lock and retry pacing.

pub mod backoff;
pub mod leader;
pub mod schema_follow;
pub mod site_reader;
pub mod start;
pub mod write;

use std::time::Duration;

use sgcache::sql::{Db, PgLimits};
use sgcache::storage::redact_url;
use tokio_util::sync::CancellationToken;

use self::backoff::Backoff;

/// How long a worker's call waits for a database connection.
pub const DB_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to the database, retrying (with backoff) until it answers or `stop` fires. Its
/// sessions are bounded for the workers' short statements ([`PgLimits::WORKER`]), and only a
/// writable primary is used.
pub async fn connect_db(url: &str, max: u32, stop: &CancellationToken) -> Option<Db> {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        match Db::connect_limited(url, max, DB_ACQUIRE_TIMEOUT, &PgLimits::WORKER).await {
            Ok(db) => return Some(db),
            Err(e) => {
                // Once per outage at WARN; the retries at DEBUG.
                if backoff.failures == 0 {
                    tracing::warn!(database = %redact_url(url), error = %e, "cannot connect to the database; retrying with backoff");
                } else {
                    tracing::debug!(database = %redact_url(url), error = %e, "cannot connect to the database");
                }
                if !backoff.wait(stop).await {
                    return None;
                }
            }
        }
    }
}
