//! "Exactly one active follower (or scanner) per cache": a PostgreSQL session advisory lock
//! held on a dedicated connection. A second instance waits as a hot standby and takes over
//! when the first one's connection goes away (crash, SIGKILL, database restart).

use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

use super::backoff::sleep_or_stop;
use crate::observe::{Heartbeat, Role};

/// Lock keys ("sgevents", "sgscannr" in ASCII): distinct from the migration lock.
pub const EVENTS_LOCK_KEY: i64 = 0x7367_6576_656e_7473;
pub const SCANNER_LOCK_KEY: i64 = 0x7367_7363_616e_6e72;

/// A held lock, or nothing on SQLite (one local process; there is no one to exclude).
pub struct Leader {
    conn: Option<PgConnection>,
}

impl Leader {
    /// Waits until this process holds the lock `key`, or `stop` fires (None). Each attempt the
    /// database answers beats `beat` (a standby is alive) and sets its role.
    pub async fn acquire(
        url: &str,
        key: i64,
        beat: &Heartbeat,
        stop: &CancellationToken,
    ) -> Option<Leader> {
        let role = beat.name();
        if url.starts_with("sqlite:") {
            beat.beat();
            beat.set_role(Role::Leader);
            return Some(Leader { conn: None });
        }
        let mut standby_logged = false;
        loop {
            if stop.is_cancelled() {
                return None;
            }
            match try_lock(url, key).await {
                Ok(Some(conn)) => {
                    beat.beat();
                    beat.set_role(Role::Leader);
                    tracing::info!(role, "holding the leader lock; active");
                    return Some(Leader { conn: Some(conn) });
                }
                Ok(None) => {
                    beat.beat();
                    beat.set_role(Role::Standby);
                    if !standby_logged {
                        tracing::info!(role, "another instance is active; waiting as standby");
                        standby_logged = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(role, error = %e, "cannot reach the database for the leader lock")
                }
            }
            if !sleep_or_stop(Duration::from_secs(1), stop).await {
                return None;
            }
        }
    }

    /// True while the lock's connection is alive (so the lock is still ours).
    pub async fn alive(&mut self) -> bool {
        match &mut self.conn {
            None => true,
            Some(c) => c.ping().await.is_ok(),
        }
    }

    /// Releases the lock (closing the connection releases it too).
    pub async fn release(self) {
        if let Some(c) = self.conn {
            let _ = c.close().await;
        }
    }
}

async fn try_lock(url: &str, key: i64) -> Result<Option<PgConnection>, sqlx::Error> {
    let mut conn = PgConnection::connect(url).await?;
    // Keyed per cache schema: caches sharing a database have a leader each.
    let sql = format!(
        "SELECT pg_try_advisory_lock({})",
        sgcache::storage::CACHE_LOCK_KEY_SQL
    );
    let got: bool = sqlx::query_scalar(&sql)
        .bind(key)
        .fetch_one(&mut conn)
        .await?;
    if got {
        Ok(Some(conn))
    } else {
        let _ = conn.close().await;
        Ok(None)
    }
}
