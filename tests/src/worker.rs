//! Running the real `sgcache-worker` binary.
//!
//! Integration tests of this package cannot use `CARGO_BIN_EXE_*` of another package, so the
//! binary is found beside the test executable's `deps/` folder, where `cargo test --workspace`
//! (or `cargo build -p sgcache-worker`) puts it. `SGCACHE_WORKER_BIN` overrides the path.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `sgcache-worker` beside the running benchmark binary (`target/<profile>/`), or
/// `SGCACHE_WORKER_BIN`: what the benchmarks measure.
pub fn beside_this_binary() -> PathBuf {
    if let Ok(p) = std::env::var("SGCACHE_WORKER_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("own path");
    let bin = exe.with_file_name(format!("sgcache-worker{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: cargo build --release -p sgcache-worker (or set SGCACHE_WORKER_BIN)",
        bin.display()
    );
    bin
}

/// Path of the `sgcache-worker` binary.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("SGCACHE_WORKER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> → target/debug/sgcache-worker
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(format!("sgcache-worker{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p sgcache-worker` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// `sgcache-worker --config <config> migrate <args…>` against `database_url`, with no site
/// credentials in the environment.
pub fn migrate(config: &Path, database_url: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.arg("--config")
        .arg(config)
        .arg("migrate")
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn");
    for var in [
        "SHOTGUN_URL",
        "SHOTGUN_SCRIPT_NAME",
        "SHOTGUN_API_KEY",
        "SGCACHE_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    cmd.output().expect("run sgcache-worker")
}

/// The shared fixture schema folder, as a `--schema-dir` argument.
pub fn fixture_schema_dir() -> String {
    sgcache::schema::fixture_dir().display().to_string()
}

/// A fresh SQLite database URL in `dir`.
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("cache.db").display())
}

/// stdout and stderr as text.
pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A local port nothing listens on now (bound, then released), for a worker to listen on.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free local port");
    l.local_addr().expect("its address").port()
}

/// A benchmark's `sgcache-worker proxy` process ([`beside_this_binary`]), stopped when dropped.
pub struct BenchProxy {
    pub child: std::process::Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for BenchProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl BenchProxy {
    /// Starts the proxy on a free port with the config `config(port)` returns, and waits (up
    /// to 20 s) until its database answers and `types_ready` types are served.
    pub async fn start(
        config: impl FnOnce(u16) -> String,
        types_ready: u64,
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sgcache.yaml");
        std::fs::write(&path, config(port))?;
        // `SGCACHE_BENCH_PROXY_CPUS` (a `taskset` CPU list) keeps the proxy on its own cores,
        // apart from the load generator: what it measures is the proxy, not the two sharing.
        let mut cmd = match std::env::var("SGCACHE_BENCH_PROXY_CPUS") {
            Ok(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(beside_this_binary());
                c
            }
            Err(_) => Command::new(beside_this_binary()),
        };
        let child = cmd
            .arg("--config")
            .arg(&path)
            .arg("proxy")
            .env_remove("DATABASE_URL")
            .env_remove("SHOTGUN_URL")
            .env_remove("SGCACHE_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let proxy = BenchProxy {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let http = reqwest::Client::new();
        for _ in 0..400 {
            if let Ok(r) = http.get(format!("{}/readyz", proxy.url)).send().await {
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                if v["database"] == "ok" && v["types_ready"].as_u64() >= Some(types_ready) {
                    return Ok(proxy);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        anyhow::bail!("the proxy did not become ready")
    }
}

/// A benchmark's API3 POST as the proxy answered it: the `x-sgcache-path` header, whether
/// the HTTP status was a success, and the body. `None` when no answer came (a client error).
/// Each benchmark judges the answer its own way (an API3 error, an empty body, JSON to parse).
pub struct Posted {
    pub path: Option<String>,
    pub success: bool,
    pub body: reqwest::Result<hyper::body::Bytes>,
}

pub async fn post_api3(http: &reqwest::Client, url: &str, body: String) -> Option<Posted> {
    let r = http
        .post(url)
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .ok()?;
    let path = r
        .headers()
        .get("x-sgcache-path")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let success = r.status().is_success();
    Some(Posted {
        path,
        success,
        body: r.bytes().await,
    })
}
