//! Shared by the operator's integration tests: a scratch PostgreSQL database and a mocked
//! Kubernetes API that answers by route (not by a fixed script), so a whole reconcile against
//! the real database step can run without pinning every call's order.

#![allow(dead_code)] // each test binary uses a part

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::ByteString;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use sgcache::sql::{Db, SqlValue};
use sgcache_operator::db::CacheDatabase;
use sgcache_operator::metrics::Metrics;
use sgcache_operator::reconcile::Context;
use sgcache_operator::resources::WorkerSettings;
use sgcache_operator::{ShotgunCache, ShotgunCacheStatus};

// ---- PostgreSQL ----

fn server_url() -> String {
    std::env::var("SGCACHE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn admin_url() -> String {
    let db = std::env::var("SGCACHE_TEST_ADMIN_DB").unwrap_or_else(|_| "postgres".into());
    format!("{}/{db}", server_url())
}

/// A uniquely named PostgreSQL database; [`PgDb::drop`] removes it.
pub struct PgDb {
    pub name: String,
    pub url: String,
}

impl PgDb {
    pub async fn create(prefix: &str) -> PgDb {
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let name = format!("{prefix}_{}_{nanos}", std::process::id());
        let admin = Db::connect(&admin_url(), 1).await.expect("admin database");
        let mut s = admin.sql();
        s.push("CREATE DATABASE ").push_ident(&name);
        admin.execute(&s).await.expect("create database");
        admin.close().await;
        let url = format!("{}/{name}", server_url());
        PgDb { name, url }
    }

    /// Names of the tables in the public schema, sorted.
    pub async fn tables(&self) -> Vec<String> {
        let db = Db::connect(&self.url, 1).await.unwrap();
        let mut s = db.sql();
        s.push(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' ORDER BY 1",
        );
        let rows = db.fetch_all(&s).await.unwrap();
        db.close().await;
        rows.into_iter()
            .filter_map(|r| match r.into_iter().next() {
                Some(SqlValue::Text(t)) => Some(t),
                _ => None,
            })
            .collect()
    }

    pub async fn drop(self) {
        let admin = Db::connect(&admin_url(), 1).await.expect("admin database");
        let mut s = admin.sql();
        s.push("DROP DATABASE IF EXISTS ")
            .push_ident(&self.name)
            .push(" WITH (FORCE)");
        let _ = admin.execute(&s).await;
        admin.close().await;
    }
}

// ---- mocked Kubernetes API ----

/// One request the mock served.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub body: Value,
}

/// The mocked API's state: Secrets it serves, the object it returns, what it received.
#[derive(Default)]
pub struct ApiState {
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// Returned by status and finalizer patches (kube parses the answer as a ShotgunCache).
    pub cache: Option<ShotgunCache>,
    pub calls: Vec<Call>,
    /// Requests no route matched (answered 404); a test expects none.
    pub unexpected: Vec<String>,
    /// The object's resourceVersion, bumped by the test per reconcile.
    pub resource_version: u64,
}

pub type Api = Arc<Mutex<ApiState>>;

const CACHES: &str = "/apis/sgcache.io/v1alpha1/namespaces/default/shotguncaches/";

fn secret_json(name: &str, pairs: &BTreeMap<String, String>) -> Value {
    let data: BTreeMap<&String, ByteString> = pairs
        .iter()
        .map(|(k, v)| (k, ByteString(v.as_bytes().to_vec())))
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": name, "namespace": "default"}, "data": data})
}

fn not_found(what: &str) -> (u16, Value) {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                      "message": format!("{what} not found"), "reason": "NotFound", "code": 404});
    (404, body)
}

/// Answers one request as a small API server would.
fn answer(state: &mut ApiState, method: &Method, path: &str, body: &Value) -> (u16, Value) {
    if method == Method::GET {
        if let Some(name) = path.strip_prefix("/api/v1/namespaces/default/secrets/") {
            return match state.secrets.get(name) {
                Some(pairs) => (200, secret_json(name, pairs)),
                None => not_found(path),
            };
        }
    }
    if method == Method::PATCH && path.starts_with(CACHES) {
        let mut cache = serde_json::to_value(state.cache.as_ref().expect("cache set")).unwrap();
        if path.ends_with("/status") {
            cache["status"] = body["status"].clone();
        } else if body.is_array() {
            // The finalizer's JSON patch on removal: answer without finalizers.
            cache["metadata"]["finalizers"] = json!([]);
        }
        return (200, cache);
    }
    if method == Method::PATCH && path.contains("/deployments/") {
        // A cluster where every replica becomes available at once.
        let mut d = body.clone();
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        d["status"] = json!({"replicas": replicas, "availableReplicas": replicas});
        return (200, d);
    }
    let applied = ["/configmaps/", "/services/", "/poddisruptionbudgets/"];
    if method == Method::PATCH && applied.iter().any(|p| path.contains(p))
        || path.starts_with("/apis/events.k8s.io/v1/namespaces/default/events")
    {
        return (200, body.clone());
    }
    state.unexpected.push(format!("{method} {path}"));
    not_found(path)
}

/// Serves requests until the client is dropped.
pub fn serve(mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>, api: Api) {
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().clone();
            let path = req.uri().path().to_string();
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (code, out) = {
                let mut st = api.lock().unwrap();
                let out = answer(&mut st, &method, &path, &body);
                st.calls.push(Call { method, path, body });
                out
            };
            let resp = Response::builder()
                .status(StatusCode::from_u16(code).unwrap())
                .body(Body::from(serde_json::to_vec(&out).unwrap()))
                .unwrap();
            send.send_response(resp);
        }
    });
}

/// A reconcile context over the mocked API and the given database step.
pub fn context(db: Arc<dyn CacheDatabase>) -> (Arc<Context>, Api) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let api: Api = Arc::default();
    serve(handle, api.clone());
    let client = Client::new(svc, "default");
    let settings = WorkerSettings {
        image: "sgcache-worker:test".into(),
        ..WorkerSettings::default()
    };
    let ctx = Context::new(client, db, settings, Arc::new(Metrics::default()));
    (Arc::new(ctx), api)
}

impl ApiState {
    /// Bodies of the status patches, in order.
    pub fn statuses(&self) -> Vec<ShotgunCacheStatus> {
        self.calls
            .iter()
            .filter(|c| c.method == Method::PATCH && c.path.ends_with("/status"))
            .map(|c| serde_json::from_value(c.body["status"].clone()).expect("a status"))
            .collect()
    }

    /// Reasons of the Events posted, in order.
    pub fn event_reasons(&self) -> Vec<String> {
        self.calls
            .iter()
            .filter(|c| c.method == Method::POST && c.path.contains("/events"))
            .map(|c| c.body["reason"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Event notes with this reason.
    pub fn event_notes(&self, reason: &str) -> Vec<String> {
        self.calls
            .iter()
            .filter(|c| c.method == Method::POST && c.path.contains("/events"))
            .filter(|c| c.body["reason"] == reason)
            .map(|c| c.body["note"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// The config-hash annotation of the last proxy Deployment applied.
    pub fn proxy_hash(&self) -> String {
        let call = self
            .calls
            .iter()
            .rev()
            .find(|c| c.path.ends_with("/deployments/cache-proxy"))
            .expect("the proxy Deployment was applied");
        call.body["spec"]["template"]["metadata"]["annotations"]["sgcache.io/config-hash"]
            .as_str()
            .expect("a config hash")
            .to_string()
    }

    /// Forgets the calls so far.
    pub fn clear(&mut self) {
        self.calls.clear();
    }
}
