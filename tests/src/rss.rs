//! The proxy as a real process under memory attacks, its resident memory read from `/proc`:
//! shared by the `proxy-rss` measurement binary (figures in BENCHMARKS.md) and the generous
//! bound asserted by the adversarial tests.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

/// How often resident memory is sampled during an attack.
const SAMPLE_EVERY: Duration = Duration::from_millis(5);

/// Resident memory of a process in KiB (`VmRSS` of `/proc/<pid>/status`), 0 when gone.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A `sgcache-worker proxy` child process in front of `site_url`, with no cache database
/// (every request is handled the way an unauthenticated attacker's is: parsed, then
/// forwarded), and `limits` as the `workers.proxy.limits` YAML block (indented 6 spaces).
pub struct ProxyProcess {
    pub child: Child,
    pub url: String,
    dir: tempfile::TempDir,
}

impl ProxyProcess {
    pub async fn start(site_url: &str, limits: &str) -> anyhow::Result<ProxyProcess> {
        let dir = tempfile::tempdir()?;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let yaml = format!(
            "site:\n  url: {site_url}\n  scriptName: {{value: sgcache_test}}\n  apiKey: {{value: test_key}}\n\
             database:\n  url: {{value: \"sqlite://{}?mode=rwc\"}}\n  maxConnections: 2\n\
             entities:\n  - type: Shot\n    fields: [code]\n\
             workers:\n  proxy:\n    port: {port}\n    limits:\n{limits}\n",
            dir.path().join("cache.db").display()
        );
        let config = dir.path().join("sgcache.yaml");
        std::fs::write(&config, yaml)?;
        let log = std::fs::File::create(dir.path().join("proxy.log"))?;
        let child = Command::new(worker_binary())
            .arg("--config")
            .arg(&config)
            .arg("proxy")
            .env("RUST_LOG", "warn")
            .env_remove("SHOTGUN_URL")
            .env_remove("DATABASE_URL")
            .env_remove("SHOTGUN_SCRIPT_NAME")
            .env_remove("SHOTGUN_API_KEY")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let url = format!("http://127.0.0.1:{port}");
        let p = ProxyProcess { child, url, dir };
        let http = reqwest::Client::new();
        let start = Instant::now();
        while http.get(format!("{}/healthz", p.url)).send().await.is_err() {
            if start.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("the proxy did not start: {}", p.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(p)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// Still running (not exited, not killed by the OOM killer).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The worker binary: beside this executable when it is a binary of this package (same
/// profile), else where [`crate::worker::binary`] finds it for tests.
fn worker_binary() -> std::path::PathBuf {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("sgcache-worker")));
    match sibling {
        Some(bin) if std::env::var_os("SGCACHE_WORKER_BIN").is_none() && bin.exists() => bin,
        _ => crate::worker::binary(),
    }
}

/// Samples a process's resident memory until dropped; [`Sampler::peak_kib`] is the highest.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    std::thread::sleep(SAMPLE_EVERY);
                }
            })
        };
        Sampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the highest resident memory seen, in KiB.
    pub fn peak_kib(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// `clients` concurrent clients each POST `rounds` bodies of `[0,0,…]` of `mb` MB without
/// credentials to the proxy, with a length (`chunked: false`) or streamed without one.
/// Returns how many got an answer (any HTTP answer).
pub async fn body_attack(
    url: &str,
    mb: usize,
    clients: usize,
    rounds: usize,
    chunked: bool,
) -> usize {
    let body = bytes_of_zeros(mb);
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, body, url) = (http.clone(), body.clone(), format!("{url}/api3/json"));
        tasks.push(tokio::spawn(async move {
            let mut answered = 0;
            for _ in 0..rounds {
                let req = if chunked {
                    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                        body.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
                    http.post(&url)
                        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
                } else {
                    http.post(&url).body(body.clone())
                };
                if let Ok(resp) = req.send().await {
                    let _ = resp.bytes().await;
                    answered += 1;
                }
            }
            answered
        }));
    }
    let mut answered = 0;
    for t in tasks {
        answered += t.await.unwrap_or(0);
    }
    answered
}

fn bytes_of_zeros(mb: usize) -> Vec<u8> {
    let n = mb * 1_000_000 / 2;
    let mut body = Vec::with_capacity(mb * 1_000_000 + 2);
    body.push(b'[');
    for i in 0..n {
        if i > 0 {
            body.push(b',');
        }
        body.push(b'0');
    }
    body.push(b']');
    body
}

/// Opens `n` connections that send half a request's headers and then nothing; returns the
/// streams (kept open by the caller).
pub async fn slow_connections(url: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    let addr = url.trim_start_matches("http://");
    let mut out = Vec::new();
    for _ in 0..n {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            let _ = s
                .write_all(b"POST /api3/json HTTP/1.1\r\nHost: x\r\nContent-Le")
                .await;
            out.push(s);
        }
    }
    out
}

/// How many of `conns` the proxy has closed (a read returns EOF or an error at once).
pub async fn closed(conns: &mut [tokio::net::TcpStream]) -> usize {
    use tokio::io::AsyncReadExt;
    let mut n = 0;
    for s in conns {
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => n += 1,
            Err(_) => {}
        }
    }
    n
}
