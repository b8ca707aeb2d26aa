//! One small layer over PostgreSQL and SQLite: a statement builder whose identifiers are
//! validated and quoted and whose values are always bound, a value type both drivers bind and
//! decode, and a pool/transaction pair that runs statements on either database.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use std::sync::Arc;
use std::time::Duration;

use crate::pg_server;
pub use crate::pg_server::PgLimits;

mod cells;
pub use cells::{Cell, Rows};

/// Which SQL dialect a statement is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// The placeholder of the `n`th (1-based) bound value.
    pub fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("${n}"),
            Dialect::Sqlite => format!("?{n}"),
        }
    }
}

/// A value bound to, or read from, a statement.
#[derive(Clone, Debug, PartialEq)]
pub enum SqlValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    /// JSON: `jsonb` on PostgreSQL, text on SQLite.
    Json(serde_json::Value),
    /// `date` on PostgreSQL, `YYYY-MM-DD` text on SQLite.
    Date(NaiveDate),
    /// `timestamptz` on PostgreSQL, `YYYY-MM-DDTHH:MM:SSZ` text on SQLite.
    DateTime(DateTime<Utc>),
}

/// A statement under construction: SQL text plus its bound values, for one dialect.
#[derive(Clone, Debug)]
pub struct Sql {
    pub dialect: Dialect,
    pub text: String,
    pub binds: Vec<SqlValue>,
}

impl Sql {
    pub fn new(dialect: Dialect) -> Sql {
        Sql {
            dialect,
            text: String::new(),
            binds: Vec::new(),
        }
    }

    /// Appends literal SQL written by us (never user input).
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.text.push_str(sql);
        self
    }

    /// Appends a quoted identifier. Callers validate names against the schema first; quoting
    /// is the second line of defence.
    pub fn push_ident(&mut self, ident: &str) -> &mut Self {
        self.text.push_str(&crate::ident::quote(ident));
        self
    }

    /// Appends `a, b, c` with every id bound, for `IN (...)` lists.
    pub fn push_id_list(&mut self, ids: &[i64]) -> &mut Self {
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.push_bind(SqlValue::Int(*id));
        }
        self
    }

    /// Appends a placeholder and binds the value to it. NULL is written as a literal instead:
    /// sqlx types a bound NULL as `text`, which PostgreSQL refuses to compare with or assign to
    /// a column of another type.
    pub fn push_bind(&mut self, value: SqlValue) -> &mut Self {
        if value == SqlValue::Null {
            self.text.push_str("NULL");
            return self;
        }
        self.binds.push(value);
        let p = self.dialect.placeholder(self.binds.len());
        self.text.push_str(&p);
        self
    }
}

/// PostgreSQL keeps the statements sqlx prepares per connection. When `migrate` rebuilds a
/// column for another data type (a field the site retyped), a kept statement reading it fails
/// for good on that connection ("cached plan must not change result type", SQLSTATE 0A000):
/// sqlx does not prepare it again. The first such failure in this process marks every
/// connection opened before it stale; the pool closes those instead of handing them out, and a
/// statement run on the pool (not in a transaction) is tried once more on a fresh connection.
/// A transaction that met it fails as any database error does; its caller's retry gets a fresh
/// connection.
mod stale_plans {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    /// Time base of [`STALE_BEFORE`].
    fn base() -> Instant {
        static BASE: OnceLock<Instant> = OnceLock::new();
        *BASE.get_or_init(Instant::now)
    }

    /// Connections opened before this (nanoseconds after [`base`]) are stale; 0: none.
    static STALE_BEFORE: AtomicU64 = AtomicU64::new(0);

    fn since_base(at: Instant) -> u64 {
        at.saturating_duration_since(base()).as_nanos() as u64
    }

    /// True for the error of a kept statement whose result columns changed type.
    pub fn is_stale_plan(e: &sqlx::Error) -> bool {
        matches!(e, sqlx::Error::Database(d)
            if d.code().as_deref() == Some("0A000") && d.message().contains("cached plan"))
    }

    /// Marks every connection open now stale: the pools close them instead of reusing them.
    pub fn mark_all() {
        // +1: a connection opened in this very nanosecond is stale too.
        STALE_BEFORE.fetch_max(since_base(Instant::now()) + 1, Ordering::Relaxed);
    }

    /// Marks the connections open now stale when `e` says a kept statement is; true if so.
    pub fn noted(e: &sqlx::Error) -> bool {
        if !is_stale_plan(e) {
            return false;
        }
        mark_all();
        tracing::info!(
            "a column changed type under kept statements (a migrate rebuilt it): reconnecting"
        );
        true
    }

    /// False for a connection (opened `age` ago) that predates the last stale mark.
    pub fn connected_after(age: Duration) -> bool {
        let stale_before = STALE_BEFORE.load(Ordering::Relaxed);
        if stale_before == 0 {
            return true;
        }
        let opened = Instant::now().checked_sub(age).unwrap_or_else(base);
        since_base(opened) >= stale_before
    }
}

/// Closes every pooled connection of this process at its next use (or return) instead of
/// reusing it: the database did not answer one in time, refused a write as read-only, or
/// dropped one, so the others may be on a server that is gone or no longer the primary (its
/// address moved). Each pool opens new ones, which are checked ([`crate::pg_server`]).
pub fn reconnect_all() {
    stale_plans::mark_all();
}

/// A pool on either database.
#[derive(Clone, Debug)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// A transaction on either database. Dropping it rolls back.
pub enum Tx {
    /// With how each call is bounded and where its failures are noted.
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>, PgCall),
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

impl Db {
    /// Connects to `postgres://…` or `sqlite://…` (the SQLite file is created if missing).
    /// Waiting for a connection gives up after 10 s.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, sqlx::Error> {
        Self::connect_with_timeout(url, max_connections, std::time::Duration::from_secs(10)).await
    }

    /// Like [`Db::connect`], giving up on a connection after `acquire_timeout`. sqlx keeps
    /// retrying a refused connection (a restarting server) until then, so this is how long a
    /// statement can wait while PostgreSQL is down. PostgreSQL sessions get the limits of
    /// long work ([`PgLimits::MIGRATE`]); workers use [`Db::connect_limited`].
    pub async fn connect_with_timeout(
        url: &str,
        max_connections: u32,
        acquire_timeout: std::time::Duration,
    ) -> Result<Db, sqlx::Error> {
        Self::connect_limited(url, max_connections, acquire_timeout, &PgLimits::MIGRATE).await
    }

    /// Like [`Db::connect_with_timeout`], PostgreSQL sessions bounded by `limits`. Only a
    /// writable primary is connected to (see [`crate::pg_server`]).
    pub async fn connect_limited(
        url: &str,
        max_connections: u32,
        acquire_timeout: std::time::Duration,
        limits: &PgLimits,
    ) -> Result<Db, sqlx::Error> {
        if url.starts_with("sqlite:") {
            let options: SqliteConnectOptions = url.parse()?;
            let options = options
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(std::time::Duration::from_secs(30))
                .foreign_keys(true)
                // Case-insensitive text as the site compares it (`crate::query::text`).
                .collation(
                    crate::query::text::COLLATION,
                    crate::query::text::cmp_folded,
                );
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .connect_with(options)
                .await?;
            Ok(Db::Sqlite(pool))
        } else {
            let options = pg_server::connect_options(url, limits)?;
            let gate = pg_server::Gate::of(&options);
            gate.admit(&options).await?;
            let pool = pg_pool_options(max_connections, acquire_timeout, limits, gate)
                .connect_with(options)
                .await?;
            Ok(Db::Postgres(pool))
        }
    }

    /// A check outside the pools found this database is not a writable primary: its address
    /// is closed to every pool of the process until a probe finds one there again.
    pub fn refuse_not_writable(&self, why: pg_server::NotWritable) {
        if let Db::Postgres(p) = self {
            pg_server::Gate::of(&p.connect_options()).close(why);
        }
    }

    /// How often the server or database behind this pool's address changed (0 on SQLite).
    pub fn server_changes(&self) -> u64 {
        match self {
            Db::Postgres(p) => pg_server::Gate::of(&p.connect_options()).changes(),
            Db::Sqlite(_) => 0,
        }
    }

    /// How often this pool's address was closed as not a writable primary (0 on SQLite).
    pub fn closings(&self) -> u64 {
        match self {
            Db::Postgres(p) => pg_server::Gate::of(&p.connect_options()).closings(),
            Db::Sqlite(_) => 0,
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Postgres(_) => Dialect::Postgres,
            Db::Sqlite(_) => Dialect::Sqlite,
        }
    }

    pub fn sql(&self) -> Sql {
        Sql::new(self.dialect())
    }

    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Postgres(p) => {
                let call = PgCall::on(p).await?;
                // BEGIN changes nothing: safe to send again on a fresh connection.
                let tx = match call.run(p.begin()).await {
                    Err(e) if call.retry_on_fresh(p, &e) => call.run(p.begin()).await?,
                    other => other?,
                };
                Tx::Postgres(tx, call)
            }
            // IMMEDIATE: a deferred transaction that reads and then writes while another
            // connection wrote meanwhile fails at once with "database is locked" (its WAL
            // snapshot is stale; the busy timeout does not apply), which stopped a backfill
            // 100 ms in. Taking the write lock up front makes writers wait their turn instead.
            Db::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
        })
    }

    /// Runs a statement, returning the number of rows affected.
    pub async fn execute(&self, sql: &Sql) -> Result<u64, sqlx::Error> {
        match self {
            Db::Postgres(p) => {
                let call = PgCall::on(p).await?;
                let first = call.run(pg_query(sql).execute(p)).await;
                // Sent again only when it cannot have taken effect: a session the server
                // ended rolled the statement back; a connection lost some other way may have
                // committed it.
                let done = match first {
                    Err(e)
                        if stale_plans::noted(&e)
                            || (session_ended(&e) && call.retry_on_fresh(p, &e)) =>
                    {
                        call.run(pg_query(sql).execute(p)).await?
                    }
                    other => other?,
                };
                Ok(done.rows_affected())
            }
            Db::Sqlite(p) => Ok(sqlite_query(sql).execute(p).await?.rows_affected()),
        }
    }

    /// Runs a query and decodes every column of every row.
    pub async fn fetch_all(&self, sql: &Sql) -> Result<Vec<Vec<SqlValue>>, sqlx::Error> {
        match self {
            Db::Postgres(p) => Ok(cells::pg_rows(&pg_fetch(p, sql).await?)?.to_values()),
            Db::Sqlite(p) => sqlite_query(sql)
                .fetch_all(p)
                .await?
                .iter()
                .map(cells::sqlite_row)
                .collect(),
        }
    }

    /// Runs a query and hands its rows to `read` with every value borrowed from them: no
    /// owned value per cell (see [`cells`]).
    pub async fn fetch_rows<T>(
        &self,
        sql: &Sql,
        read: impl FnOnce(&Rows<'_>) -> T,
    ) -> Result<T, sqlx::Error> {
        match self {
            Db::Postgres(p) => Ok(read(&cells::pg_rows(&pg_fetch(p, sql).await?)?)),
            Db::Sqlite(_) => {
                let values = self.fetch_all(sql).await?;
                Ok(read(&Rows::of_values(&values)))
            }
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Postgres(p) => p.close().await,
            Db::Sqlite(p) => p.close().await,
        }
    }
}

impl Tx {
    pub fn dialect(&self) -> Dialect {
        match self {
            Tx::Postgres(..) => Dialect::Postgres,
            Tx::Sqlite(_) => Dialect::Sqlite,
        }
    }

    pub fn sql(&self) -> Sql {
        Sql::new(self.dialect())
    }

    pub async fn execute(&mut self, sql: &Sql) -> Result<u64, sqlx::Error> {
        match self {
            Tx::Postgres(t, call) => Ok(call
                .run(pg_query(sql).execute(&mut **t))
                .await
                .inspect_err(|e| {
                    stale_plans::noted(e);
                })?
                .rows_affected()),
            Tx::Sqlite(t) => Ok(sqlite_query(sql).execute(&mut **t).await?.rows_affected()),
        }
    }

    pub async fn fetch_all(&mut self, sql: &Sql) -> Result<Vec<Vec<SqlValue>>, sqlx::Error> {
        match self {
            Tx::Postgres(t, call) => call
                .run(pg_query(sql).fetch_all(&mut **t))
                .await
                .inspect_err(|e| {
                    stale_plans::noted(e);
                })
                .map(|rows| cells::pg_rows(&rows).map(|r| r.to_values()))?,
            Tx::Sqlite(t) => sqlite_query(sql)
                .fetch_all(&mut **t)
                .await?
                .iter()
                .map(cells::sqlite_row)
                .collect(),
        }
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Postgres(t, call) => call.run(t.commit()).await,
            Tx::Sqlite(t) => t.commit().await,
        }
    }
}

/// The pool settings every PostgreSQL pool of the cache uses (the change listener's too);
/// `gate` is the address's (see [`pg_server::Gate`]).
pub fn pg_pool_options(
    max_connections: u32,
    acquire_timeout: Duration,
    limits: &PgLimits,
    gate: Arc<pg_server::Gate>,
) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .max_lifetime(limits.max_lifetime)
        .test_before_acquire(limits.ping_idle)
        // `CREATE … IF NOT EXISTS` of what exists is a NOTICE, which sqlx logs: one line per
        // statement on every start, saying nothing anyone must act on. And only a writable
        // primary is used: a standby or a read-only server behind the address closes it.
        .after_connect(move |conn, _| {
            let gate = gate.clone();
            Box::pin(async move {
                sqlx::Executor::execute(&mut *conn, "SET client_min_messages = warning").await?;
                match pg_server::check_writable(conn).await {
                    Ok(ident) => gate.note_server(ident),
                    Err(e) => {
                        note_pg_error(&gate, &e);
                        return Err(e);
                    }
                }
                Ok(())
            })
        })
        // A connection whose prepared statements predate a column's change of type, or that
        // predates a sign of failover (`reconnect_all`), is closed instead of reused.
        .before_acquire(|_, meta| {
            let fresh = stale_plans::connected_after(meta.age);
            Box::pin(async move { Ok(fresh) })
        })
        // Such a connection given back is closed without sqlx's ping, which on a server that
        // went silent would hang, holding a slot of the pool.
        .after_release(|_, meta| {
            let fresh = stale_plans::connected_after(meta.age);
            Box::pin(async move { Ok(fresh) })
        })
}

/// How the calls on one pool are run: refused at once while its address is closed, each
/// bounded in time ([`pg_server::call_bound`]), failures noted.
#[derive(Clone, Debug)]
pub struct PgCall {
    bound: Option<Duration>,
    gate: Arc<pg_server::Gate>,
    /// The gate's server changes when the call (or transaction) began.
    changes: u64,
}

impl PgCall {
    /// Waits until `p`'s address may be used (a writable primary).
    async fn on(p: &PgPool) -> Result<PgCall, sqlx::Error> {
        let options = p.connect_options();
        let gate = pg_server::Gate::of(&options);
        gate.admit(&options).await?;
        Ok(PgCall {
            bound: pg_server::call_bound(&options, p.options().get_acquire_timeout()),
            changes: gate.changes(),
            gate,
        })
    }

    /// Whether a call that failed with `e` is worth one more try: on a pool that does not
    /// ping its idle connections, a connection the server closed (a restart, a terminated
    /// session) is only found dead by the statement sent on it. Every connection
    /// of that time was marked for reconnecting when the error was noted, so the retry runs
    /// on a fresh one. Never after a timeout: a silent server would be waited for twice.
    fn retry_on_fresh(&self, p: &PgPool, e: &sqlx::Error) -> bool {
        !p.options().get_test_before_acquire() && connection_dropped(e)
    }

    /// Runs one call within the bound; a call that overruns it, or fails in a way that says
    /// the server went away or is no longer the primary, makes every connection reconnect.
    async fn run<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        let result = match self.bound {
            None => call.await,
            Some(limit) => {
                tokio::pin!(call);
                tokio::select! {
                    r = &mut call => r,
                    _ = tokio::time::sleep(limit) => {
                        // Marked before the call is dropped: its connection is closed unpinged.
                        reconnect_all();
                        Err(pg_server::timed_out(limit))
                    }
                }
            }
        };
        if let Err(e) = &result {
            note_pg_error(&self.gate, e);
        }
        if result.is_ok() && self.gate.changes() != self.changes {
            // Its connection reached another server or database than the caller's earlier
            // calls: the caller must not take the answer as a continuation of theirs.
            return Err(sqlx::Error::Protocol(
                "the database behind the address changed during the call".into(),
            ));
        }
        result
    }
}

/// A query's rows, once more on a fresh connection when the statement was prepared before a
/// migrate changed a column it reads, or its connection was found closed.
async fn pg_fetch(p: &PgPool, sql: &Sql) -> Result<Vec<PgRow>, sqlx::Error> {
    let call = PgCall::on(p).await?;
    match call.run(pg_query(sql).fetch_all(p)).await {
        Err(e) if stale_plans::noted(&e) || call.retry_on_fresh(p, &e) => {
            call.run(pg_query(sql).fetch_all(p)).await
        }
        other => other,
    }
}

/// What an error says about the server: not the writable primary (its address is closed to
/// this process until it is again), or a connection lost (every connection is renewed).
fn note_pg_error(gate: &pg_server::Gate, e: &sqlx::Error) {
    if pg_server::is_not_writable(e) {
        let why = match e {
            sqlx::Error::Configuration(c) => c.downcast_ref::<pg_server::NotWritable>().cloned(),
            _ => None,
        };
        gate.close(why.unwrap_or(pg_server::NotWritable::ReadOnly));
    } else if connection_dropped(e)
        || matches!(
            e,
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_)
        )
    {
        reconnect_all();
    }
}

/// The server closed the connection under the statement (as opposed to refusing the
/// statement, or not answering in time).
fn connection_dropped(e: &sqlx::Error) -> bool {
    use std::io::ErrorKind;
    match e {
        sqlx::Error::Io(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof
                | ErrorKind::NotConnected
        ),
        _ => session_ended(e),
    }
}

/// admin_shutdown, crash_shutdown: the server ended the session (a restart,
/// `pg_terminate_backend`), rolling back whatever it was running; its connection is gone.
fn session_ended(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("57P01" | "57P02")))
}

pub type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;
type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// The statement as sqlx runs it on PostgreSQL (prepared and cached per connection, values
/// bound). Public for the benchmarks, which run the proxy's statements directly.
pub fn pg_query(sql: &Sql) -> PgQuery<'_> {
    debug_assert_eq!(sql.dialect, Dialect::Postgres);
    let mut q = sqlx::query(&sql.text);
    for v in &sql.binds {
        q = match v {
            SqlValue::Null => q.bind(None::<String>),
            SqlValue::Bool(b) => q.bind(*b),
            SqlValue::Int(i) => q.bind(*i),
            SqlValue::Float(f) => q.bind(*f),
            SqlValue::Text(s) => q.bind(s.as_str()),
            SqlValue::Json(j) => q.bind(sqlx::types::Json(j)),
            SqlValue::Date(d) => q.bind(*d),
            SqlValue::DateTime(t) => q.bind(*t),
        };
    }
    q
}

fn sqlite_query(sql: &Sql) -> SqliteQuery<'_> {
    debug_assert_eq!(sql.dialect, Dialect::Sqlite);
    let mut q = sqlx::query(&sql.text);
    for v in &sql.binds {
        q = match v {
            SqlValue::Null => q.bind(None::<String>),
            SqlValue::Bool(b) => q.bind(*b),
            SqlValue::Int(i) => q.bind(*i),
            SqlValue::Float(f) => q.bind(*f),
            SqlValue::Text(s) => q.bind(s.as_str()),
            SqlValue::Json(j) => q.bind(j.to_string()),
            SqlValue::Date(d) => q.bind(d.format("%Y-%m-%d").to_string()),
            SqlValue::DateTime(t) => q.bind(format_datetime(t)),
        };
    }
    q
}

/// The API3 date-time spelling, also how SQLite stores date-times: `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_datetime(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_binds_values_with_dialect_placeholders() {
        let mut pg = Sql::new(Dialect::Postgres);
        pg.push("SELECT * FROM ")
            .push_ident("shot")
            .push(" WHERE ")
            .push_ident("code")
            .push(" = ")
            .push_bind(SqlValue::Text("x'; drop".into()))
            .push(" AND id > ")
            .push_bind(SqlValue::Int(3));
        assert_eq!(
            pg.text,
            "SELECT * FROM \"shot\" WHERE \"code\" = $1 AND id > $2"
        );
        assert_eq!(pg.binds.len(), 2);
        let mut lite = Sql::new(Dialect::Sqlite);
        lite.push_bind(SqlValue::Int(1))
            .push(", ")
            .push_bind(SqlValue::Null);
        assert_eq!(lite.text, "?1, NULL");
        assert_eq!(lite.binds, vec![SqlValue::Int(1)]);
    }

    #[tokio::test]
    async fn sqlite_round_trips_every_value_kind() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Db::connect(&url, 2).await.unwrap();
        let mut create = db.sql();
        create.push("CREATE TABLE t (a INTEGER, b REAL, c TEXT, d INTEGER)");
        db.execute(&create).await.unwrap();
        let mut insert = db.sql();
        insert.push("INSERT INTO t VALUES (");
        insert.push_bind(SqlValue::Int(7)).push(", ");
        insert.push_bind(SqlValue::Float(1.5)).push(", ");
        insert
            .push_bind(SqlValue::Json(serde_json::json!({"k": "ü"})))
            .push(", ");
        insert.push_bind(SqlValue::Null).push(")");
        assert_eq!(db.execute(&insert).await.unwrap(), 1);
        let mut select = db.sql();
        select.push("SELECT a, b, c, d FROM t");
        let rows = db.fetch_all(&select).await.unwrap();
        assert_eq!(
            rows,
            vec![vec![
                SqlValue::Int(7),
                SqlValue::Float(1.5),
                SqlValue::Text("{\"k\":\"ü\"}".into()),
                SqlValue::Null
            ]]
        );
    }
}
