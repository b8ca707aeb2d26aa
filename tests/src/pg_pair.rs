//! A PostgreSQL primary and a streaming standby of its own, for the failover tests: a fresh
//! cluster (`initdb`, `wal_level = replica`) in a temporary folder on a free port, a standby
//! made from it with `pg_basebackup -R` and a replication slot, and the moves of a failover
//! (promote the standby, stop or kill the primary). The shared test server is never touched.
//!
//! The servers run as the `postgres` user when the tests run as root (PostgreSQL refuses to
//! run as root); `SGCACHE_PG_BIN` names the folder of the PostgreSQL programs (default
//! `/usr/lib/postgresql/15/bin`). Every server is stopped (immediately) and its folder removed
//! when the pair is dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// One server of the pair.
#[derive(Clone, Debug)]
pub struct PgNode {
    pub name: String,
    pub dir: PathBuf,
    pub port: u16,
}

impl PgNode {
    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The server URL without a database.
    pub fn server_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }
}

/// A primary and its standbys under one temporary folder.
pub struct PgPair {
    root: tempfile::TempDir,
    bin: PathBuf,
    pub primary: PgNode,
    pub standby: PgNode,
    /// Every server started, stopped on drop.
    started: Vec<PgNode>,
    standbys: usize,
}

impl PgPair {
    /// Starts a fresh primary and a streaming standby of it (slot `standby_1`); returns once
    /// the standby is streaming.
    pub async fn start() -> anyhow::Result<PgPair> {
        let bin = std::env::var_os("SGCACHE_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/usr/lib/postgresql/15/bin".into());
        if !bin.join("initdb").exists() {
            bail!(
                "{} has no initdb: set SGCACHE_PG_BIN to the PostgreSQL programs' folder",
                bin.display()
            );
        }
        let root = tempfile::Builder::new().prefix("sgcache-pair-").tempdir()?;
        let mut pair = PgPair {
            bin,
            primary: PgNode {
                name: "primary".into(),
                dir: root.path().join("primary"),
                port: free_port()?,
            },
            standby: PgNode {
                name: String::new(),
                dir: PathBuf::new(),
                port: 0,
            },
            root,
            started: Vec::new(),
            standbys: 0,
        };
        give_to_postgres(pair.root.path())?;
        pair.run(
            "initdb",
            &[
                "-D",
                &pair.primary.dir.display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )?;
        let conf = format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             wal_level = replica\nmax_wal_senders = 8\nmax_replication_slots = 8\n\
             hot_standby = on\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             shared_buffers = 32MB\nmax_connections = 100\nwal_keep_size = 64MB\n",
            pair.primary.port,
            pair.root.path().display()
        );
        append(&pair.primary.dir.join("postgresql.conf"), &conf)?;
        let primary = pair.primary.clone();
        pair.pg_ctl_start(&primary)?;
        pair.standby = pair.make_standby(&primary).await?;
        Ok(pair)
    }

    /// The temporary folder holding the servers.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// A new streaming standby of `from` (`pg_basebackup -R` with a slot of its own), started
    /// and streaming.
    pub async fn make_standby(&mut self, from: &PgNode) -> anyhow::Result<PgNode> {
        self.make_standby_via(from, None).await
    }

    /// As [`PgPair::make_standby`], the standby streaming through `via` (a port on this
    /// machine forwarding to `from`, such as a [`crate::relay::Relay`] that can freeze the
    /// replication: writes the standby then never receives are lost at a failover).
    pub async fn make_standby_via(
        &mut self,
        from: &PgNode,
        via: Option<u16>,
    ) -> anyhow::Result<PgNode> {
        self.standbys += 1;
        let node = PgNode {
            name: format!("standby_{}", self.standbys),
            dir: self.root.path().join(format!("standby_{}", self.standbys)),
            port: free_port()?,
        };
        self.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &from.port.to_string(),
                "-U",
                "postgres",
                "-D",
                &node.dir.display().to_string(),
                "-R",
                "-C",
                "-S",
                &node.name,
                "-X",
                "stream",
                "--no-sync",
            ],
        )?;
        append(
            &node.dir.join("postgresql.conf"),
            &format!("port = {}\n", node.port),
        )?;
        if let Some(via) = via {
            // Later lines win: the one `-R` wrote is overridden.
            append(
                &node.dir.join("postgresql.auto.conf"),
                &format!(
                    "primary_conninfo = 'host=127.0.0.1 port={via} user=postgres application_name={}'\n",
                    node.name
                ),
            )?;
        }
        self.pg_ctl_start(&node)?;
        // Streaming: its slot is in use.
        let admin = sgcache::sql::Db::connect(&from.url("postgres"), 1).await?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let mut q = admin.sql();
            q.push("SELECT count(*) FROM pg_replication_slots WHERE active AND slot_name = ")
                .push_bind(sgcache::sql::SqlValue::Text(node.name.clone()));
            let rows = admin.fetch_all(&q).await?;
            if matches!(rows.first().and_then(|r| r.first()), Some(sgcache::sql::SqlValue::Int(n)) if *n >= 1)
            {
                break;
            }
            if std::time::Instant::now() > deadline {
                bail!("{} never started streaming", node.name);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        admin.close().await;
        Ok(node)
    }

    /// Promotes `node` (a standby) to a primary; returns once it accepts writes.
    pub fn promote(&self, node: &PgNode) -> anyhow::Result<()> {
        self.run(
            "pg_ctl",
            &["-D", &node.dir.display().to_string(), "-w", "promote"],
        )
    }

    /// Stops `node` cleanly (`-m fast`: sessions are ended, the standbys receive all of the
    /// WAL first: a planned switchover loses nothing).
    pub fn stop(&self, node: &PgNode) -> anyhow::Result<()> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &node.dir.display().to_string(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )
    }

    /// Stops `node` at once, as a crash does (`-m immediate`).
    pub fn kill(&self, node: &PgNode) -> anyhow::Result<()> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &node.dir.display().to_string(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
    }

    /// Creates `database` on the primary.
    pub async fn create_database(&self, database: &str) -> anyhow::Result<()> {
        let admin = sgcache::sql::Db::connect(&self.primary.url("postgres"), 1).await?;
        let mut q = admin.sql();
        q.push("CREATE DATABASE ").push_ident(database);
        admin.execute(&q).await?;
        admin.close().await;
        Ok(())
    }

    fn pg_ctl_start(&mut self, node: &PgNode) -> anyhow::Result<()> {
        let log = self.root.path().join(format!("{}.log", node.name));
        self.run(
            "pg_ctl",
            &[
                "-D",
                &node.dir.display().to_string(),
                "-l",
                &log.display().to_string(),
                "-w",
                "start",
            ],
        )?;
        self.started.push(node.clone());
        Ok(())
    }

    /// Runs one PostgreSQL program (as `postgres` when running as root).
    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let path = self.bin.join(program);
        let mut cmd = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = cmd
            .args(args)
            .current_dir(self.root.path())
            .output()
            .with_context(|| format!("running {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for PgPair {
    fn drop(&mut self) {
        for node in self.started.clone() {
            let _ = self.kill(&node);
        }
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The folder becomes the `postgres` user's when running as root (the servers write there).
fn give_to_postgres(dir: &Path) -> anyhow::Result<()> {
    if running_as_root() {
        let st = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir)
            .status()?;
        if !st.success() {
            bail!("chown postgres {} failed", dir.display());
        }
    }
    Ok(())
}

fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// A port free now (the server binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
