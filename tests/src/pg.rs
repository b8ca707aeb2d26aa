//! Fresh, uniquely named PostgreSQL databases (or SQLite files) for tests, dropped afterwards.

use sgcache::sql::Db;

/// Server URL without a database name; `SGCACHE_TEST_PG` overrides it.
pub fn server_url() -> String {
    std::env::var("SGCACHE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// The database the test databases are created from: `SGCACHE_TEST_ADMIN_DB` (CI sets it to a
/// fresh database made for the run), else `postgres`.
fn admin_url() -> String {
    let db = std::env::var("SGCACHE_TEST_ADMIN_DB").unwrap_or_else(|_| "postgres".into());
    format!("{}/{db}", server_url())
}

/// Ends every session on database `name` but the caller's, as a server restart does; how
/// many it ended.
pub async fn terminate_sessions(name: &str) -> usize {
    let admin = Db::connect(&admin_url(), 1)
        .await
        .expect("the admin database");
    let mut q = admin.sql();
    q.push("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ")
        .push_bind(sgcache::sql::SqlValue::Text(name.to_string()))
        .push(" AND pid <> pg_backend_pid()");
    let ended = admin
        .fetch_all(&q)
        .await
        .expect("pg_terminate_backend")
        .len();
    admin.close().await;
    ended
}

/// A database created for one test. Call [`TestDb::drop`] at the end.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub db: Db,
    /// The database it was created from (and is dropped from).
    admin: String,
    /// The folder of a SQLite database; `None` on PostgreSQL.
    dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn create(prefix: &str) -> anyhow::Result<TestDb> {
        Self::create_on(&server_url(), &admin_url(), prefix).await
    }

    /// A database on the server at `server` (a URL without a database), created from the
    /// database `admin` (a full URL).
    pub async fn create_on(server: &str, admin: &str, prefix: &str) -> anyhow::Result<TestDb> {
        // The clock alone is not unique: tests running side by side read the same tick.
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "{prefix}_{}_{}_{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let admin_db = Db::connect(admin, 1).await?;
        let mut s = admin_db.sql();
        s.push("CREATE DATABASE ").push_ident(&name);
        admin_db.execute(&s).await?;
        admin_db.close().await;
        let url = format!("{server}/{name}");
        let db = Db::connect(&url, 5).await?;
        Ok(TestDb {
            name,
            url,
            db,
            admin: admin.to_string(),
            dir: None,
        })
    }

    /// A pool on this database opened as the proxy opens its own (its session limits, no
    /// ping before use, its wait for a connection).
    pub async fn proxy_pool(&self, max_connections: u32) -> Db {
        Db::connect_limited(
            &self.url,
            max_connections,
            sgcache_worker::proxy::run::DB_ACQUIRE_TIMEOUT,
            &sgcache::pg_server::PgLimits::PROXY,
        )
        .await
        .expect("a pool with the proxy's settings")
    }

    /// A SQLite database in a temporary folder.
    pub async fn sqlite() -> anyhow::Result<TestDb> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("cache.db").display());
        let db = Db::connect(&url, 5).await?;
        Ok(TestDb {
            name: "cache.db".into(),
            url,
            db,
            admin: String::new(),
            dir: Some(dir),
        })
    }

    pub async fn drop(self) {
        self.db.close().await;
        if self.dir.is_some() {
            return; // the folder goes with it
        }
        if let Ok(admin) = Db::connect(&self.admin, 1).await {
            let mut s = admin.sql();
            s.push("DROP DATABASE IF EXISTS ")
                .push_ident(&self.name)
                .push(" WITH (FORCE)");
            let _ = admin.execute(&s).await;
            admin.close().await;
        }
    }
}
