//! An in-process test site with the proxy in front of it, over real HTTP.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sgcache::sql::Db;
use sgcache_worker::proxy::{serve, AppState, ProxyConfig};
use shotgun_sim::{SimConfig, SimHandle};
use tokio_util::sync::CancellationToken;

/// The proxy's settings in tests: short refreshes, the test site's script as the cache's own
/// credentials, every trust class pinned on.
pub fn test_config(site_url: String) -> ProxyConfig {
    ProxyConfig {
        site_url,
        site_timeout: Duration::from_secs(5),
        auth_ttl: Duration::from_secs(300),
        auth_grace: Duration::from_secs(3600),
        catalog_refresh: Duration::from_millis(200),
        service_auth: script_auth().as_object().cloned(),
        verify_sample_rate: 0.0,
        cache_for: None,
        result_cache_bytes: 16 << 20,
        result_cache_ttl: Duration::from_secs(60),
        intake: Default::default(),
        listener: Default::default(),
        max_lag: Duration::from_secs(300),
        // The answers themselves are what these tests compare with the site's; how a
        // class earns trust is tests/trust.rs's subject.
        trust: sgcache_worker::proxy::trust::TrustConfig::all_on(),
        site_gate: Default::default(),
        access_log: false,
    }
}

/// A client of the test site at `url` with its default script (the cache's own credentials
/// in these tests).
pub fn site_client(url: String) -> sgcache::site::SiteClient {
    sgcache::site::SiteClient::new(sgcache::spec::SiteConnection {
        url,
        script_name: "sgcache_test".into(),
        api_key: "test_key".into(),
        timeout: Duration::from_secs(30),
    })
    .expect("a client of the test site")
}

/// The default script of the test site.
pub fn script_auth() -> Value {
    json!({"script_name": "sgcache_test", "script_key": "test_key"})
}

pub struct Harness {
    pub sim: SimHandle,
    pub proxy_url: String,
    pub state: Arc<AppState>,
    pub http: reqwest::Client,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// Starts the test site and a proxy in front of it (with `db` as its cache, if any).
    pub async fn start(sim: SimConfig, db: Option<Db>) -> anyhow::Result<Harness> {
        Self::start_with(sim, db, |_| {}).await
    }

    /// Like [`Harness::start`], with the proxy's settings adjusted by `tweak`.
    pub async fn start_with(
        sim: SimConfig,
        db: Option<Db>,
        tweak: impl FnOnce(&mut ProxyConfig),
    ) -> anyhow::Result<Harness> {
        let sim = shotgun_sim::start(sim, "127.0.0.1:0".parse()?).await?;
        let mut config = test_config(sim.url());
        tweak(&mut config);
        let state = AppState::new(&config, db)?;
        state.refresh_catalog().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let proxy_url = format!("http://{}", listener.local_addr()?);
        let stop = CancellationToken::new();
        let task = {
            let (state, stop) = (state.clone(), stop.clone());
            tokio::spawn(async move {
                if let Err(e) = serve(state, config, listener, stop).await {
                    panic!("proxy failed: {e}");
                }
            })
        };
        Ok(Harness {
            sim,
            proxy_url,
            state,
            http: reqwest::Client::new(),
            stop,
            task,
        })
    }

    /// POSTs an API3 call to `base` (the proxy or the site): status, path header and body.
    pub async fn call_at(
        &self,
        base: &str,
        method: &str,
        auth: Value,
        payload: Value,
    ) -> (u16, Option<String>, Value) {
        let mut params = vec![auth];
        if !payload.is_null() {
            params.push(payload);
        }
        let body = json!({"method_name": method, "params": params});
        self.post_raw(base, "/api3/json", body.to_string()).await
    }

    pub async fn post_raw(
        &self,
        base: &str,
        path: &str,
        body: String,
    ) -> (u16, Option<String>, Value) {
        post(
            &self.http,
            &format!("{base}{path}"),
            "application/json; charset=utf-8",
            body,
        )
        .await
    }

    /// GETs `path` from the proxy and reads its JSON answer.
    pub async fn get_json(&self, path: &str) -> Value {
        get_json(&self.http, &format!("{}{path}", self.proxy_url)).await
    }

    /// Through the proxy.
    pub async fn proxy(
        &self,
        method: &str,
        auth: Value,
        payload: Value,
    ) -> (u16, Option<String>, Value) {
        let base = self.proxy_url.clone();
        self.call_at(&base, method, auth, payload).await
    }

    /// Straight to the site.
    pub async fn direct(
        &self,
        method: &str,
        auth: Value,
        payload: Value,
    ) -> (u16, Option<String>, Value) {
        let base = self.sim.url();
        self.call_at(&base, method, auth, payload).await
    }

    /// A PostgreSQL cache of `entities` (spec YAML) filled from a fresh test site, and a
    /// proxy in front of the site using it, with its settings adjusted by `tweak`.
    pub async fn with_cache(
        prefix: &str,
        entities: &str,
        tweak: impl FnOnce(&mut ProxyConfig),
    ) -> anyhow::Result<(Harness, crate::pg::TestDb)> {
        let db = crate::pg::TestDb::create(prefix).await?;
        let h = Harness::start_with(SimConfig::default(), Some(db.db.clone()), tweak).await?;
        let site = site_client(h.sim.url());
        let spec = sgcache::ShotgunCacheSpec::from_yaml(entities, "test")?;
        let schema = site.schema().await?;
        sgcache::storage::migrate(
            &db.db,
            &spec,
            &schema,
            sgcache::plan::PlanOptions::default(),
        )
        .await?;
        crate::loader::load_all(&db.db, &site).await?;
        h.state.refresh_catalog().await;
        Ok((h, db))
    }

    /// GETs the proxy's `/metrics` text.
    pub async fn metrics(&self) -> String {
        metrics(&self.http, &self.proxy_url).await
    }

    /// Requests the site has answered so far.
    pub fn site_requests(&self) -> u64 {
        self.sim.stats().requests_total
    }

    /// Sets the site's faults (`{"down": true}` ...).
    pub fn faults(&self, patch: Value) {
        let f = self.sim.faults().merged(&patch).expect("valid faults");
        self.sim.set_faults(f);
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
        self.sim.shutdown().await;
    }
}

/// POSTs `body` to `url` as `content_type`: status, `x-sgcache-path` header and body (JSON, or
/// the text as a JSON string when it is not JSON).
pub async fn post(
    http: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: String,
) -> (u16, Option<String>, Value) {
    let resp = http
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request sent");
    let status = resp.status().as_u16();
    let path = resp
        .headers()
        .get("x-sgcache-path")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().await.expect("body read");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, path, body)
}

/// The `/metrics` text of the proxy at `proxy_url`.
pub async fn metrics(http: &reqwest::Client, proxy_url: &str) -> String {
    http.get(format!("{proxy_url}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// GETs `url` and parses its JSON body (`/readyz`, `/_sgcache/status.json`).
pub async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url)
        .send()
        .await
        .expect("GET answered")
        .json()
        .await
        .expect("a JSON body")
}
