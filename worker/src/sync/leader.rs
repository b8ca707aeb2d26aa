//! "Exactly one active follower (or scanner) per cache": a PostgreSQL session advisory lock
//! held on a dedicated connection. A second instance waits as a hot standby and takes over
//! when the first one's connection goes away (crash, SIGKILL, database restart).
//!
//! A lock is only worth something on the server the work writes to. Advisory locks can be
//! taken on a standby, and a lock connection outlives a move of the database address, so:
//! the lock is only taken on a writable primary, and while it is held a watcher checks every
//! [`LOCK_CHECK`] that its connection answers, is still on a writable primary, and is on the
//! same server as the work's pool. When any of that fails the lock counts as lost: the
//! connection is dropped (releasing the lock if the server is still there) and the work is
//! stopped at once ([`Leader::lost`]), before another instance can take over.

use std::time::Duration;

use sgcache::pg_server::{self, PgLimits};
use sgcache::sql::Db;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio_util::sync::CancellationToken;

use super::backoff::{sleep_or_stop, Backoff};
use crate::observe::{Heartbeat, Role};

/// Lock keys ("sgevents", "sgscannr" in ASCII): distinct from the migration lock.
pub const EVENTS_LOCK_KEY: i64 = 0x7367_6576_656e_7473;
pub const SCANNER_LOCK_KEY: i64 = 0x7367_7363_616e_6e72;

/// How often a held lock is checked.
pub const LOCK_CHECK: Duration = Duration::from_secs(2);
/// Longest a lock attempt or a check may take: a server that does not answer in that time is
/// treated as gone.
const LOCK_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A held lock, or nothing on SQLite (one local process; there is no one to exclude).
pub struct Leader {
    /// Cancelled when the lock is lost (or `stop` fired): the work must stop.
    lost: CancellationToken,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl Leader {
    /// Waits until this process holds the lock `key`, or `stop` fires (None). Each attempt the
    /// database answers beats `beat` (a standby is alive) and sets its role. The lock is then
    /// watched against `db`, the pool the work writes through.
    pub async fn acquire(
        url: &str,
        key: i64,
        db: &Db,
        beat: &Heartbeat,
        stop: &CancellationToken,
    ) -> Option<Leader> {
        let role = beat.name();
        if url.starts_with("sqlite:") {
            beat.beat();
            beat.set_role(Role::Leader);
            return Some(Leader {
                lost: stop.child_token(),
                watcher: None,
            });
        }
        let mut standby_logged = false;
        let mut failing = false;
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(15));
        loop {
            if stop.is_cancelled() {
                return None;
            }
            let attempt = tokio::time::timeout(LOCK_CALL_TIMEOUT, try_lock(url, key)).await;
            let delay = match attempt {
                Ok(Ok(Some(conn))) => {
                    beat.beat();
                    beat.set_role(Role::Leader);
                    tracing::info!(role, "holding the leader lock; active");
                    let lost = stop.child_token();
                    let watcher = tokio::spawn(watch(conn, db.clone(), role, lost.clone()));
                    return Some(Leader {
                        lost,
                        watcher: Some(watcher),
                    });
                }
                Ok(Ok(None)) => {
                    beat.beat();
                    beat.set_role(Role::Standby);
                    failing = false;
                    backoff.reset();
                    if !standby_logged {
                        tracing::info!(role, "another instance is active; waiting as standby");
                        standby_logged = true;
                    }
                    Duration::from_secs(1)
                }
                failed => {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {LOCK_CALL_TIMEOUT:?}"),
                    };
                    // Said once per outage; the pool's errors say the rest.
                    if !failing {
                        tracing::warn!(
                            role,
                            error,
                            "cannot take the leader lock; retrying with backoff"
                        );
                        failing = true;
                    } else {
                        tracing::debug!(role, error, "cannot take the leader lock");
                    }
                    backoff.next_delay()
                }
            };
            if !sleep_or_stop(delay, stop).await {
                return None;
            }
        }
    }

    /// True while the lock is ours.
    pub async fn alive(&mut self) -> bool {
        !self.lost.is_cancelled()
    }

    /// Fires when the lock is lost (or the process is stopping): the work must stop.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Releases the lock (closing the connection releases it).
    pub async fn release(mut self) {
        self.lost.cancel();
        if let Some(w) = self.watcher.take() {
            let _ = w.await;
        }
    }
}

async fn try_lock(url: &str, key: i64) -> Result<Option<PgConnection>, sqlx::Error> {
    let options = pg_server::connect_options(url, &PgLimits::WORKER)?;
    let mut conn = options.connect().await?;
    // A lock taken on a standby or a read-only server guards nothing the work writes.
    pg_server::check_writable(&mut conn).await?;
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

/// Checks the lock every [`LOCK_CHECK`] until it is lost or released; closes its connection.
async fn watch(mut conn: PgConnection, db: Db, role: &'static str, lost: CancellationToken) {
    loop {
        if !sleep_or_stop(LOCK_CHECK, &lost).await {
            break; // released
        }
        match tokio::time::timeout(LOCK_CALL_TIMEOUT, check(&mut conn, &db)).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                tracing::warn!(role, reason = %why, "lost the leader lock; stopping the work");
                lose(&lost);
                break;
            }
            Err(_) => {
                tracing::warn!(
                    role,
                    timeout_s = LOCK_CALL_TIMEOUT.as_secs(),
                    "the leader lock's connection does not answer; stopping the work"
                );
                lose(&lost);
                break;
            }
        }
    }
    // Dropped rather than closed: a close on a connection that went silent could hang.
    drop(conn);
}

/// Stops the work. The pool's connections are likely on the same lost server (a silent one
/// would hang the work's next call): every one is renewed before the work's calls are dropped.
fn lose(lost: &CancellationToken) {
    sgcache::sql::reconnect_all();
    lost.cancel();
}

#[derive(Debug, thiserror::Error)]
enum LockLost {
    #[error("its connection failed: {0}")]
    Connection(#[from] sqlx::Error),
    #[error("its server is no longer a writable primary")]
    NotWritable,
    #[error("its server is not the one the work writes to (the database address moved)")]
    OtherServer,
}

/// The lock's connection answers, is on a writable primary, and on the server the pool `db`
/// reaches now. A pool that cannot answer says nothing about the lock (its own calls fail).
async fn check(conn: &mut PgConnection, db: &Db) -> Result<(), LockLost> {
    let held = pg_server::identity(conn).await?;
    if !held.writable() {
        return Err(LockLost::NotWritable);
    }
    let mut q = db.sql();
    q.push("SELECT pg_postmaster_start_time()::text");
    if let Ok(rows) = db.fetch_all(&q).await {
        let pool_started = rows.first().and_then(|r| r.first()).cloned();
        if pool_started != Some(sgcache::sql::SqlValue::Text(held.started)) {
            return Err(LockLost::OtherServer);
        }
    }
    Ok(())
}
