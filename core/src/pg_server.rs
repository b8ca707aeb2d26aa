//! Connections to PostgreSQL that notice a failover: bounded sessions (statement, lock and
//! idle-in-transaction timeouts, server-side TCP keepalives, a lifetime), and a server that is
//! not the writable primary (a standby, or a primary set read-only) never used.
//!
//! In production the cache's database is a primary with standbys behind one address that
//! moves on failover. What a connection meets there, and what answers it:
//!
//! - the server dies silently (no reset): every call is bounded on the client
//!   ([`call_bound`]: the session's `statement_timeout` plus the wait for a connection plus a
//!   margin); sqlx has no TCP keepalive of its own, so this bound is what notices;
//! - the address points at a standby, or at a primary that is read-only: each new connection
//!   is checked ([`check_writable`]) and refused, and the address is closed to every pool of
//!   this process ([`Gate`]) until a probe finds a writable primary there again; a write
//!   refused with SQLSTATE 25006 on an older connection closes it too;
//! - a connection stays on the old server after the address moved: it is closed within the
//!   pool's lifetime ([`PgLimits::max_lifetime`]), or at once when any call of the process
//!   timed out or was refused ([`crate::sql::reconnect_all`]).
//!
//! sqlx gives no access to the client socket, so keepalives are set on the server side
//! (`tcp_keepalives_*`, `tcp_user_timeout`): the server drops the session of a client that
//! vanished (and with it the advisory locks it held) within about a minute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

/// Per-session limits of one pool, sized to its work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgLimits {
    /// The server cancels a statement running longer (`ZERO`: never).
    pub statement_timeout: Duration,
    /// The server gives up waiting for a lock after this (`ZERO`: never).
    pub lock_timeout: Duration,
    /// The server ends a session idle inside a transaction this long (a client that froze
    /// holding locks).
    pub idle_in_transaction: Duration,
    /// A pooled connection is closed after this, so none outlives a move of the address by
    /// more than that.
    pub max_lifetime: Duration,
    /// Whether an idle connection is pinged (one round trip) each time it is taken from the
    /// pool. The proxy does not: a cached read is one statement, and the ping cost it a
    /// round trip and a wake-up on both sides of the socket; a connection found dead by its
    /// statement instead makes every connection reconnect and the read is run once more on
    /// a fresh one ([`crate::sql::Db::fetch_all`]).
    pub ping_idle: bool,
}

impl PgLimits {
    /// Workers and the proxy: short statements, short lock waits.
    pub const WORKER: PgLimits = PgLimits {
        statement_timeout: Duration::from_secs(60),
        lock_timeout: Duration::from_secs(15),
        idle_in_transaction: Duration::from_secs(300),
        max_lifetime: Duration::from_secs(180),
        ping_idle: true,
    };

    /// The proxy: its reads of the cache take milliseconds; one that takes seconds is better
    /// sent to the site, and a silent server must be noticed while clients wait.
    pub const PROXY: PgLimits = PgLimits {
        statement_timeout: Duration::from_secs(15),
        lock_timeout: Duration::from_secs(5),
        idle_in_transaction: Duration::from_secs(60),
        max_lifetime: Duration::from_secs(180),
        ping_idle: false,
    };

    /// `migrate` and the operator: a column rebuilt or an index built on a large table may
    /// take long, so no statement timeout; a lock wait is bounded, so a migration never
    /// queues every read behind a lock it cannot get.
    pub const MIGRATE: PgLimits = PgLimits {
        statement_timeout: Duration::ZERO,
        lock_timeout: Duration::from_secs(120),
        idle_in_transaction: Duration::from_secs(600),
        max_lifetime: Duration::from_secs(180),
        ping_idle: true,
    };
}

/// Server-side TCP keepalive: first probe after 30 s idle, then every 10 s, 3 lost probes
/// (about a minute) or 30 s of unacknowledged data end the session.
const KEEPALIVES: [(&str, &str); 4] = [
    ("tcp_keepalives_idle", "30"),
    ("tcp_keepalives_interval", "10"),
    ("tcp_keepalives_count", "3"),
    ("tcp_user_timeout", "30000"),
];

/// Extra time, past the statement timeout and the wait for a connection, before the client
/// gives up on a call the server should have answered or cancelled.
const CALL_MARGIN: Duration = Duration::from_secs(5);

/// The connect options of `url` with `limits`.
pub fn connect_options(url: &str, limits: &PgLimits) -> Result<PgConnectOptions, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let ms = |d: Duration| d.as_millis().to_string();
    let mut settings: Vec<(&str, String)> = KEEPALIVES
        .iter()
        .map(|(k, v)| (*k, v.to_string()))
        .collect();
    settings.push(("statement_timeout", ms(limits.statement_timeout)));
    settings.push(("lock_timeout", ms(limits.lock_timeout)));
    settings.push((
        "idle_in_transaction_session_timeout",
        ms(limits.idle_in_transaction),
    ));
    Ok(options.options(settings))
}

/// How long a call on a pool with `options` may take before the client gives up: the
/// statement timeout the session has, plus `acquire` and a margin. None without a statement
/// timeout (`migrate`).
pub fn call_bound(options: &PgConnectOptions, acquire: Duration) -> Option<Duration> {
    let text = options.get_options()?;
    // The last setting wins on the server too.
    let ms: u64 = text
        .rsplit("statement_timeout=")
        .next()
        .filter(|_| text.contains("statement_timeout="))?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    (ms > 0).then(|| Duration::from_millis(ms) + acquire + CALL_MARGIN)
}

/// Why a server is not used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotWritable {
    #[error("the database server is a standby (in recovery), not the primary")]
    InRecovery,
    #[error("the database server is read-only (transaction_read_only is on)")]
    ReadOnly,
}

impl From<NotWritable> for sqlx::Error {
    fn from(e: NotWritable) -> sqlx::Error {
        sqlx::Error::Configuration(Box::new(e))
    }
}

/// Checks the connection is on a writable primary; returns what identifies the server and
/// database it reached (the server's start time and the database's oid: a failover or a
/// restored copy changes it).
pub async fn check_writable(conn: &mut PgConnection) -> Result<String, sqlx::Error> {
    let (recovery, read_only, ident): (bool, String, String) = sqlx::query_as(
        "SELECT pg_is_in_recovery(), current_setting('transaction_read_only'), \
         pg_postmaster_start_time()::text || '/' || \
         (SELECT oid FROM pg_database WHERE datname = current_database())::text",
    )
    .fetch_one(&mut *conn)
    .await?;
    if recovery {
        return Err(NotWritable::InRecovery.into());
    }
    if read_only == "on" {
        return Err(NotWritable::ReadOnly.into());
    }
    Ok(ident)
}

/// True for an error saying the server is not a writable primary: ours, or PostgreSQL's
/// `read_only_sql_transaction` (25006) for a write on a read-only session or a standby.
pub fn is_not_writable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.code().as_deref() == Some("25006"),
        sqlx::Error::Configuration(c) => c.downcast_ref::<NotWritable>().is_some(),
        _ => false,
    }
}

/// The error of a call the server did not answer within its bound.
pub fn timed_out(bound: Duration) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("the database did not answer within {bound:?}"),
    ))
}

/// Whether one database address (host, port, database) may be used by this process: closed
/// once a connection there turned out not to be a writable primary, until a probe finds one
/// again. Shared by every pool of the process on that address, so the proxy, the follower
/// and the scanner of `all` learn it once, and retried with backoff: while it is closed no
/// call touches the pool (whose own retries would log an error per attempt).
#[derive(Debug)]
pub struct Gate {
    state: Mutex<GateState>,
    /// The server and database new connections reach, and how often that changed.
    server: Mutex<Option<String>>,
    changes: std::sync::atomic::AtomicU64,
    /// How often the address was closed.
    closings: std::sync::atomic::AtomicU64,
    /// One probe at a time.
    probing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct GateState {
    closed: Option<Closed>,
}

#[derive(Debug)]
struct Closed {
    why: NotWritable,
    retry_at: Instant,
    wait: Duration,
}

/// First and longest wait between probes of a closed address: a probe is one connection, and
/// the longest wait is how long after the primary is back the cache may still pass reads
/// through.
const PROBE_FIRST: Duration = Duration::from_secs(1);
const PROBE_MAX: Duration = Duration::from_secs(5);
/// Longest a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

impl Gate {
    /// The gate of the address `options` connect to.
    pub fn of(options: &PgConnectOptions) -> Arc<Gate> {
        static GATES: OnceLock<Mutex<HashMap<String, Arc<Gate>>>> = OnceLock::new();
        let key = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        );
        let mut gates = GATES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        gates
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Gate {
                    state: Mutex::new(GateState::default()),
                    server: Mutex::new(None),
                    changes: Default::default(),
                    closings: Default::default(),
                    probing: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// A new connection reached `ident` ([`check_writable`]); a change from the last one is
    /// counted: answers read before it may come from another copy than those after.
    pub fn note_server(&self, ident: String) {
        let mut known = self.server.lock().unwrap_or_else(|e| e.into_inner());
        if known.as_ref().is_some_and(|k| *k != ident) {
            self.changes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!("the cache database's address now reaches another server or database");
            crate::sql::reconnect_all();
        }
        *known = Some(ident);
    }

    /// How often the server behind the address changed (see [`Gate::note_server`]).
    pub fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How often the address was closed (see [`Gate::close`]).
    pub fn closings(&self) -> u64 {
        self.closings.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why the address is closed now, if it is.
    pub fn closed(&self) -> Option<NotWritable> {
        self.lock().closed.as_ref().map(|c| c.why.clone())
    }

    /// Closes the address: the server is not a writable primary. Logged once per change.
    pub fn close(&self, why: NotWritable) {
        let mut state = self.lock();
        let wait = state
            .closed
            .as_ref()
            .map_or(PROBE_FIRST, |c| (c.wait * 2).min(PROBE_MAX));
        if state.closed.is_none() {
            self.closings
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(reason = %why,
                "the cache database is not a writable primary: not using it until it is");
            crate::sql::reconnect_all();
        }
        state.closed = Some(Closed {
            why,
            retry_at: Instant::now() + wait,
            wait,
        });
    }

    fn open(&self) {
        if self.lock().closed.take().is_some() {
            tracing::info!("the cache database is a writable primary again");
        }
    }

    /// Ok when calls may go to the pool: the address is open, or a probe (at most one per
    /// backoff step) just found a writable primary there.
    pub async fn admit(&self, options: &PgConnectOptions) -> Result<(), sqlx::Error> {
        match self.probe_due() {
            None => return Ok(()),
            Some(false) => return Err(self.refusal()),
            Some(true) => {}
        }
        let _one = self.probing.lock().await;
        // While this caller waited, another's probe may have opened the address, or found it
        // still closed and put the next probe off.
        match self.probe_due() {
            None => return Ok(()),
            Some(false) => return Err(self.refusal()),
            Some(true) => {}
        }
        match tokio::time::timeout(PROBE_TIMEOUT, probe(options)).await {
            Ok(Ok(())) => {
                self.open();
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "the cache database is still not a writable primary");
                // Unreachable says nothing new: it stays closed for the last reason.
                let why = match &e {
                    sqlx::Error::Configuration(c) => c.downcast_ref::<NotWritable>().cloned(),
                    _ => None,
                };
                self.close(
                    why.or_else(|| self.closed())
                        .unwrap_or(NotWritable::ReadOnly),
                );
                Err(e)
            }
            Err(_) => {
                if let Some(why) = self.closed() {
                    self.close(why);
                }
                Err(timed_out(PROBE_TIMEOUT))
            }
        }
    }

    /// None while the address is open; otherwise whether a probe is due. The state's lock is
    /// released when this returns. (A `match` on `self.lock()` keeps the lock for its arms,
    /// and [`Gate::refusal`] in an arm took it a second time, which a `std` mutex never
    /// grants: two callers meeting in `admit` during a failover froze every runtime thread of
    /// `sgcache-worker all`.)
    fn probe_due(&self) -> Option<bool> {
        self.lock()
            .closed
            .as_ref()
            .map(|c| c.retry_at <= Instant::now())
    }

    fn refusal(&self) -> sqlx::Error {
        self.closed()
            .map_or_else(|| timed_out(PROBE_TIMEOUT), sqlx::Error::from)
    }
}

/// Connects once, outside any pool, and checks the server is a writable primary.
async fn probe(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    let mut conn = options.connect().await?;
    let checked = check_writable(&mut conn).await;
    let _ = conn.close().await;
    checked.map(|_| ())
}

/// What identifies the server a connection is on: its cluster (the system identifier, kept
/// by standbys made from it), its timeline (a promotion starts a new one) and when it started
/// (two servers never share it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerIdentity {
    /// None where the role may not read `pg_control_system()`.
    pub system_identifier: Option<i64>,
    pub timeline: Option<i64>,
    pub started: String,
    pub in_recovery: bool,
    pub read_only: bool,
}

impl ServerIdentity {
    pub const SQL: &'static str = "SELECT pg_is_in_recovery(), \
        current_setting('transaction_read_only') = 'on', pg_postmaster_start_time()::text";
    pub const CONTROL_SQL: &'static str = "SELECT (SELECT system_identifier FROM \
        pg_control_system())::bigint, (SELECT timeline_id FROM pg_control_checkpoint())::bigint";

    /// The writable primary the workers must write to.
    pub fn writable(&self) -> bool {
        !self.in_recovery && !self.read_only
    }
}

/// The identity of the server `conn` is on.
pub async fn identity(conn: &mut PgConnection) -> Result<ServerIdentity, sqlx::Error> {
    let (in_recovery, read_only, started): (bool, bool, String) =
        sqlx::query_as(ServerIdentity::SQL)
            .fetch_one(&mut *conn)
            .await?;
    // Restricted to superusers and pg_monitor-like roles on some installations.
    let control: Option<(Option<i64>, Option<i64>)> = sqlx::query_as(ServerIdentity::CONTROL_SQL)
        .fetch_one(&mut *conn)
        .await
        .ok();
    let (system_identifier, timeline) = control.unwrap_or_default();
    Ok(ServerIdentity {
        system_identifier,
        timeline,
        started,
        in_recovery,
        read_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller that waited for another's probe, which found the address still closed, is
    /// refused at once. It used to take the gate's lock a second time while holding it (a
    /// deadlock: the thread never returned). Run on a thread of its own so that a deadlock
    /// fails the test instead of hanging it.
    #[test]
    fn a_caller_that_waited_for_a_failed_probe_is_refused() {
        let opts = connect_options(
            "postgres://u@127.0.0.1:1/gate_waiter_test",
            &PgLimits::WORKER,
        )
        .unwrap();
        let gate = Gate::of(&opts);
        gate.close(NotWritable::InRecovery);
        gate.lock().closed.as_mut().unwrap().retry_at = Instant::now();
        let (send, answer) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let refused = rt.block_on(async {
                // Another caller is probing: this one waits for it.
                let other = gate.probing.lock().await;
                let waiter = {
                    let (gate, opts) = (gate.clone(), opts.clone());
                    tokio::spawn(async move { gate.admit(&opts).await })
                };
                tokio::time::sleep(Duration::from_millis(50)).await;
                // Its probe found a standby: the next one is put off.
                gate.close(NotWritable::InRecovery);
                drop(other);
                waiter.await.unwrap()
            });
            let _ = send.send(refused.map_err(|e| e.to_string()));
        });
        let refused = answer
            .recv_timeout(Duration::from_secs(20))
            .expect("admit never returned (the gate's lock taken twice)");
        let why = refused.expect_err("refused until the next probe is due");
        assert!(why.contains("standby"), "{why}");
    }

    #[test]
    fn the_call_bound_follows_the_last_statement_timeout() {
        let opts = connect_options("postgres://u@h/db", &PgLimits::WORKER).unwrap();
        let bound = call_bound(&opts, Duration::from_secs(2)).unwrap();
        assert_eq!(bound, Duration::from_secs(60 + 2) + CALL_MARGIN);
        let opts = connect_options("postgres://u@h/db", &PgLimits::MIGRATE).unwrap();
        assert_eq!(call_bound(&opts, Duration::from_secs(2)), None);
        let none: PgConnectOptions = "postgres://u@h/db".parse().unwrap();
        assert_eq!(call_bound(&none, Duration::from_secs(2)), None);
    }

    #[test]
    fn read_only_refusals_are_recognised() {
        assert!(is_not_writable(&NotWritable::InRecovery.into()));
        assert!(!is_not_writable(&timed_out(Duration::from_secs(1))));
    }
}
