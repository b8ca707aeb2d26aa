//! Test builders: `ShotgunCache::test()` and friends.

use kube::api::ObjectMeta;
use sgcache::ShotgunCacheSpec;

use crate::crd::FINALIZER;
use crate::{ShotgunCache, ShotgunCacheResourceSpec};

/// A valid spec for Kubernetes: site and database from the Secret `site`, two entity types.
pub const TEST_SPEC: &str = r#"
site:
  url: https://studio.example.com
  scriptName: {value: sgcache}
  apiKey: {secretKeyRef: {name: site, key: apiKey}}
database:
  url: {secretKeyRef: {name: db, key: url}}
entities:
  - type: Shot
    fields: [code, sg_status_list]
  - type: Asset
    fields: [code]
deletionPolicy: Retain
"#;

impl ShotgunCache {
    /// `default/cache` with [`TEST_SPEC`], a uid and generation 1.
    pub fn test() -> Self {
        let spec = ShotgunCacheSpec::from_yaml(TEST_SPEC, "test").expect("valid test spec");
        let mut c = ShotgunCache::new("cache", ShotgunCacheResourceSpec(spec));
        c.metadata = ObjectMeta {
            name: Some("cache".into()),
            namespace: Some("default".into()),
            uid: Some("6e0c2f1a-0000-4000-8000-000000000001".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        };
        c
    }

    /// With the finalizer already added.
    pub fn finalized(mut self) -> Self {
        self.metadata.finalizers = Some(vec![FINALIZER.into()]);
        self
    }

    /// Marked for deletion.
    pub fn deleting(mut self) -> Self {
        let ts = "2026-01-01T00:00:00Z".parse().expect("timestamp");
        self.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts));
        self
    }

    /// Edits the spec.
    pub fn with_spec(mut self, edit: impl FnOnce(&mut ShotgunCacheSpec)) -> Self {
        edit(&mut self.spec.0);
        let g = self.metadata.generation.unwrap_or(1);
        self.metadata.generation = Some(g + 1);
        self
    }
}

// ---- mocked API server and fake database ----

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

use crate::db::{CacheDatabase, Connection, DbError, DbSnapshot, MigrationOutcome};
use crate::metrics::Metrics;
use crate::reconcile::Context;
use crate::resources::WorkerSettings;

/// Everything that happened, API calls and database calls, in order.
pub type Log = Arc<Mutex<Vec<Call>>>;

#[derive(Clone, Debug)]
pub struct Call {
    /// `PATCH /apis/apps/v1/...` or `db:migrate`.
    pub what: String,
    pub query: String,
    pub body: Value,
}

/// How the mock answers one expected request.
pub enum Reply {
    /// Echo the request body back (what apply/create return).
    Echo,
    /// A JSON body with status 200.
    Json(Value),
    /// A `Status` error with this code and reason.
    Status(u16, &'static str),
}

/// One expected request: method, path (a trailing `*` matches by prefix), reply.
pub struct Expect(pub Method, pub String, pub Reply);

pub fn expect(method: Method, path: &str, reply: Reply) -> Expect {
    Expect(method, path.to_string(), reply)
}

/// Serves the expected requests in order, asserting each, and records them in the log.
pub fn serve(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    log: Log,
    expected: Vec<Expect>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for Expect(method, path, reply) in expected {
            let (req, send) = handle
                .next_request()
                .await
                .expect("an API call was expected");
            let uri = req.uri().clone();
            // A path ending in `*` matches by prefix (names the server or kube generates).
            let path = match path.strip_suffix('*') {
                Some(prefix) if uri.path().starts_with(prefix) => uri.path().to_string(),
                _ => path,
            };
            assert_eq!(
                (req.method(), uri.path()),
                (&method, path.as_str()),
                "unexpected call {uri}"
            );
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            log.lock().unwrap().push(Call {
                what: format!("{method} {path}"),
                query: uri.query().unwrap_or("").to_string(),
                body: body.clone(),
            });
            let (code, out) = match reply {
                Reply::Echo => (200, body),
                Reply::Json(v) => (200, v),
                Reply::Status(code, reason) => (
                    code,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "message": format!("mock {reason}"), "reason": reason, "code": code}),
                ),
            };
            let resp = Response::builder()
                .status(StatusCode::from_u16(code).unwrap())
                .body(Body::from(serde_json::to_vec(&out).unwrap()))
                .unwrap();
            send.send_response(resp);
        }
    })
}

/// Waits for the mock to have served every expected request.
pub async fn finished(server: tokio::task::JoinHandle<()>) {
    tokio::time::timeout(std::time::Duration::from_secs(2), server)
        .await
        .expect("the reconcile made every expected call")
        .expect("every call was as expected");
}

/// A fake cache database recording its calls in the shared log.
pub struct FakeDb {
    pub log: Log,
    pub migrate: Mutex<Result<MigrationOutcome, DbError>>,
    pub snapshot: Mutex<DbSnapshot>,
    /// What `backfill_progressed` answers (at once).
    pub progressed: Mutex<bool>,
}

impl FakeDb {
    fn record(&self, what: &str, body: Value) {
        let call = Call {
            what: format!("db:{what}"),
            query: String::new(),
            body,
        };
        self.log.lock().unwrap().push(call);
    }
}

impl CacheDatabase for FakeDb {
    fn migrate<'a>(
        &'a self,
        conn: &'a Connection,
        spec: &'a ShotgunCacheSpec,
    ) -> BoxFuture<'a, Result<MigrationOutcome, DbError>> {
        let body = json!({"url": conn.database_url, "spec": spec});
        self.record("migrate", body);
        let out = self.migrate.lock().unwrap().clone();
        Box::pin(async move { out })
    }
    fn snapshot<'a>(&'a self, _: &'a Connection) -> BoxFuture<'a, Result<DbSnapshot, DbError>> {
        self.record("snapshot", Value::Null);
        let out = self.snapshot.lock().unwrap().clone();
        Box::pin(async move { Ok(out) })
    }
    fn backfill_progressed<'a>(
        &'a self,
        _: &'a Connection,
        pending: usize,
        _: std::time::Duration,
    ) -> BoxFuture<'a, Result<bool, DbError>> {
        self.record("backfill_progressed", json!({ "pending": pending }));
        let out = *self.progressed.lock().unwrap();
        Box::pin(async move { Ok(out) })
    }
    fn drop_cache<'a>(&'a self, conn: &'a Connection) -> BoxFuture<'a, Result<(), DbError>> {
        self.record(
            "drop",
            json!({"url": conn.database_url, "schema": conn.schema}),
        );
        Box::pin(async { Ok(()) })
    }
}

/// A test harness: context over a mocked API server and a fake database.
pub struct Harness {
    pub ctx: Arc<Context>,
    pub db: Arc<FakeDb>,
    pub log: Log,
    pub handle: Option<tower_test::mock::Handle<Request<Body>, Response<Body>>>,
}

impl Harness {
    pub fn new() -> Self {
        let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let log: Log = Arc::default();
        let db = Arc::new(FakeDb {
            log: log.clone(),
            migrate: Mutex::new(Ok(MigrationOutcome::default())),
            snapshot: Mutex::new(DbSnapshot::default()),
            progressed: Mutex::new(false),
        });
        let settings = WorkerSettings {
            image: "sgcache-worker:test".into(),
            ..WorkerSettings::default()
        };
        let ctx = Context::new(client, db.clone(), settings, Arc::new(Metrics::default()));
        Harness {
            ctx: Arc::new(ctx),
            db,
            log,
            handle: Some(handle),
        }
    }

    /// Starts serving the expected calls.
    pub fn serve(&mut self, expected: Vec<Expect>) -> tokio::task::JoinHandle<()> {
        serve(
            self.handle.take().expect("one scenario per harness"),
            self.log.clone(),
            expected,
        )
    }

    /// The recorded calls' names, in order.
    pub fn calls(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.what.clone())
            .collect()
    }

    pub fn call(&self, what: &str) -> Call {
        let log = self.log.lock().unwrap();
        log.iter()
            .find(|c| c.what == what)
            .cloned()
            .unwrap_or_else(|| panic!("no call {what}"))
    }
}

/// A Secret as the API returns it, values base64-encoded.
pub fn secret_json(name: &str, pairs: &[(&str, &str)]) -> Value {
    use k8s_openapi::ByteString;
    let data: std::collections::BTreeMap<String, ByteString> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": name, "namespace": "default"}, "data": data})
}
