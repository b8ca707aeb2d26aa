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
        // The clock alone is not unique: tests running side by side read the same tick.
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let name = format!("{prefix}_{}_{nanos}_{seq}", std::process::id());
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
        self.tables_in("public").await
    }

    /// Names of the tables in a schema, sorted (from information_schema).
    pub async fn tables_in(&self, schema: &str) -> Vec<String> {
        self.texts(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = $1 ORDER BY 1",
            schema,
        )
        .await
    }

    /// Whether the schema exists (information_schema.schemata).
    pub async fn schema_exists(&self, schema: &str) -> bool {
        let found = self
            .texts(
                "SELECT schema_name::text FROM information_schema.schemata WHERE schema_name = $1",
                schema,
            )
            .await;
        !found.is_empty()
    }

    /// The schemas holding a function of this name (pg_proc).
    pub async fn function_schemas(&self, function: &str) -> Vec<String> {
        self.texts(
            "SELECT n.nspname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE p.proname = $1 ORDER BY 1",
            function,
        )
        .await
    }

    async fn texts(&self, query: &str, arg: &str) -> Vec<String> {
        let db = Db::connect(&self.url, 1).await.unwrap();
        let mut s = db.sql();
        let (head, tail) = query.split_once("$1").expect("one argument");
        s.push(head)
            .push_bind(SqlValue::Text(arg.into()))
            .push(tail);
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

pub mod rbac;

/// One request the mock served.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub body: Value,
    /// The authorizer's verb (`create` for a server-side apply that created the object).
    pub verb: String,
    /// The HTTP status answered.
    pub code: u16,
}

/// The mocked API's state: Secrets it serves, the objects it holds, what it received. It
/// behaves as a real API server where the reconcile can tell: server-side apply creates a
/// missing object and patches an existing one, status is its own subresource, finalizers are
/// JSON patches, deleting the cache garbage-collects what it owns; and it enforces the chart's
/// RBAC (`rbac`), answering 403 in the `Status` format.
pub struct ApiState {
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// The ShotgunCache the API holds (status and finalizer patches apply to it).
    pub cache: Option<ShotgunCache>,
    /// Every other object, by item path.
    pub objects: BTreeMap<String, Value>,
    pub calls: Vec<Call>,
    /// Requests no route matched (answered 404); a test expects none.
    pub unexpected: Vec<String>,
    /// Requests the RBAC refused.
    pub forbidden: Vec<String>,
    /// The object's resourceVersion, bumped by the test per reconcile.
    pub resource_version: u64,
    /// The rules enforced; `None` lets everything through (cluster admin).
    pub rbac: Option<rbac::Rbac>,
}

impl Default for ApiState {
    fn default() -> Self {
        ApiState {
            secrets: BTreeMap::new(),
            cache: None,
            objects: BTreeMap::new(),
            calls: Vec::new(),
            unexpected: Vec::new(),
            forbidden: Vec::new(),
            resource_version: 0,
            rbac: Some(rbac::Rbac::from_chart()),
        }
    }
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

/// A request as the mock sees it.
pub struct ApiRequest {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

impl ApiRequest {
    fn is_apply(&self) -> bool {
        self.content_type.starts_with("application/apply-patch")
    }
}

/// The verb the authorizer checks; server-side apply of a missing object also needs `create`.
fn authorize(state: &ApiState, req: &ApiRequest) -> Result<String, (u16, Value)> {
    let Some(mut attrs) = rbac::attributes(&req.method, &req.path, &req.query) else {
        return Ok(String::new());
    };
    let creates = req.is_apply() && !exists(state, &req.path);
    let mut verbs = vec![attrs.verb.clone()];
    if creates {
        verbs.push("create".into());
    }
    let Some(rules) = &state.rbac else {
        return Ok(verbs.last().cloned().unwrap_or_default());
    };
    for verb in &verbs {
        attrs.verb = verb.clone();
        if !rules.allows(&attrs) {
            return Err((403, rbac::forbidden(&attrs)));
        }
    }
    Ok(attrs.verb)
}

fn exists(state: &ApiState, path: &str) -> bool {
    if path.starts_with(CACHES) {
        return state.cache.is_some();
    }
    state.objects.contains_key(path)
}

/// Applies the finalizer's JSON patch (`test`, `add`, `remove` on `/metadata/finalizers`).
fn json_patch_finalizers(cache: &mut ShotgunCache, ops: &Value) {
    for op in ops.as_array().into_iter().flatten() {
        let path = op["path"].as_str().unwrap_or("");
        let finalizers = cache.metadata.finalizers.get_or_insert_with(Vec::new);
        match op["op"].as_str() {
            Some("add") if path == "/metadata/finalizers" => {
                *finalizers = serde_json::from_value(op["value"].clone()).unwrap_or_default();
            }
            Some("add") => finalizers.push(op["value"].as_str().unwrap_or("").into()),
            Some("remove") => {
                let i: usize = path.rsplit('/').next().unwrap_or("").parse().unwrap_or(0);
                if i < finalizers.len() {
                    finalizers.remove(i);
                }
            }
            _ => {}
        }
    }
}

/// The garbage collector: objects owned by `uid` go with their owner.
fn collect_garbage(state: &mut ApiState, uid: &str) {
    state.objects.retain(|_, o| {
        let owners = o["metadata"]["ownerReferences"].as_array();
        !owners.is_some_and(|os| os.iter().any(|r| r["uid"] == uid))
    });
}

/// The ShotgunCache routes: the object, its finalizers (JSON patch) and status subresource.
fn answer_cache(state: &mut ApiState, req: &ApiRequest) -> (u16, Value) {
    let Some(cache) = state.cache.as_mut() else {
        return not_found(&req.path);
    };
    if req.method == Method::GET {
        return (200, serde_json::to_value(&*cache).unwrap());
    }
    if req.path.ends_with("/status") {
        cache.status = serde_json::from_value(req.body["status"].clone()).ok();
    } else if req.body.is_array() {
        json_patch_finalizers(cache, &req.body);
    }
    let out = serde_json::to_value(&*cache).unwrap();
    let gone = cache.metadata.deletion_timestamp.is_some()
        && cache.metadata.finalizers.as_ref().is_none_or(Vec::is_empty);
    if gone {
        let uid = cache.metadata.uid.clone().unwrap_or_default();
        state.cache = None;
        collect_garbage(state, &uid);
    }
    (200, out)
}

/// Answers one request as a real API server would (for what the reconcile calls).
fn answer(state: &mut ApiState, req: &ApiRequest) -> (u16, Value) {
    if req.method == Method::GET {
        if let Some(name) = req.path.strip_prefix("/api/v1/namespaces/default/secrets/") {
            return match state.secrets.get(name) {
                Some(pairs) => (200, secret_json(name, pairs)),
                None => not_found(&req.path),
            };
        }
        // A cluster whose pods go with their Deployment at once: none is ever left.
        if req.path == "/api/v1/namespaces/default/pods" {
            return (
                200,
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                       "metadata": {}, "items": []}),
            );
        }
        if req.path == "/api/v1/namespaces/default" {
            return (
                200,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
            );
        }
    }
    if req.path.starts_with(CACHES) {
        return answer_cache(state, req);
    }
    if req
        .path
        .starts_with("/apis/events.k8s.io/v1/namespaces/default/events")
    {
        return (
            if req.method == Method::POST { 201 } else { 200 },
            req.body.clone(),
        );
    }
    let owned = [
        "/configmaps/",
        "/services/",
        "/poddisruptionbudgets/",
        "/deployments/",
    ];
    if !owned.iter().any(|p| req.path.contains(p)) {
        state
            .unexpected
            .push(format!("{} {}", req.method, req.path));
        return not_found(&req.path);
    }
    match req.method.as_str() {
        "PATCH" if req.is_apply() => {
            let mut obj = req.body.clone();
            if req.path.contains("/deployments/") {
                // A cluster where every replica becomes available at once.
                let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
                obj["status"] = json!({"replicas": replicas, "availableReplicas": replicas});
            }
            let created = !state.objects.contains_key(&req.path);
            state.objects.insert(req.path.clone(), obj.clone());
            (if created { 201 } else { 200 }, obj)
        }
        "DELETE" => match state.objects.remove(&req.path) {
            Some(o) => (200, o),
            None => not_found(&req.path),
        },
        _ => {
            state
                .unexpected
                .push(format!("{} {}", req.method, req.path));
            not_found(&req.path)
        }
    }
}

/// Serves requests until the client is dropped.
pub fn serve(mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>, api: Api) {
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let content_type = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let method = req.method().clone();
            let path = req.uri().path().to_string();
            let query = req.uri().query().unwrap_or("").to_string();
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let request = ApiRequest {
                method,
                path,
                query,
                content_type,
                body,
            };
            let (code, out) = {
                let mut st = api.lock().unwrap();
                let (verb, (code, out)) = match authorize(&st, &request) {
                    Ok(verb) => (verb, answer(&mut st, &request)),
                    Err(denied) => {
                        let what = format!("{} {}", request.method, request.path);
                        st.forbidden.push(what);
                        (String::new(), denied)
                    }
                };
                st.calls.push(Call {
                    method: request.method,
                    path: request.path,
                    body: request.body,
                    verb,
                    code,
                });
                (code, out)
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

    /// The authorized verbs of the calls on a resource (`configmaps`), in order.
    pub fn verbs_on(&self, resource: &str) -> Vec<String> {
        let part = format!("/{resource}/");
        self.calls
            .iter()
            .filter(|c| c.path.contains(&part))
            .map(|c| c.verb.clone())
            .collect()
    }

    /// No call was refused or unknown.
    pub fn assert_clean(&self) {
        assert!(self.forbidden.is_empty(), "forbidden: {:?}", self.forbidden);
        assert!(
            self.unexpected.is_empty(),
            "unexpected calls {:?}",
            self.unexpected
        );
    }

    /// Forgets the calls so far.
    pub fn clear(&mut self) {
        self.calls.clear();
    }
}
