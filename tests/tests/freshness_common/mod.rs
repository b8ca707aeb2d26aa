//! Shared by the freshness tests (events, scanner, crash): a test site, a fresh PostgreSQL
//! database migrated for a small studio spec, site writers with and without events, and a
//! field-by-field comparison of every cached type between the cache and the site.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sgcache::plan::{FieldState, PlanOptions};
use sgcache::schema::Storage;
use sgcache::site::SiteClient;
use sgcache::spec::SiteConnection;
use sgcache::storage;
use sgcache::ShotgunCacheSpec;
use sgcache_tests::pg::TestDb;
use sgcache_worker::proxy::{serve, AppState, ProxyConfig};
use sgcache_worker::scanner::ScannerArgs;
use shotgun_sim::{SeedConfig, SimConfig, SimHandle};
use tokio_util::sync::CancellationToken;

pub const ENTITIES: &str = r#"
  - type: Shot
    fields: [code, description, sg_status_list, sg_cut_in, sg_sequence, assets, tasks, tag_list, created_at, updated_by, project]
  - type: Asset
    fields: [code, sg_status_list, shots, project, description]
  - type: Sequence
    fields: [code, shots, project]
  - type: Task
    fields: [content, entity, sg_status_list, milestone, due_date, est_in_mins, project]
"#;

pub struct Env {
    pub sim: SimHandle,
    pub db: TestDb,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub spec: ShotgunCacheSpec,
    /// Writes as `sgcache_test` (generates events).
    pub writer: SiteClient,
    /// Writes as `silent_script` (no events).
    pub silent: SiteClient,
}

pub fn client(url: &str, script: &str, key: &str) -> SiteClient {
    SiteClient::new(SiteConnection {
        url: url.into(),
        script_name: script.into(),
        api_key: key.into(),
        timeout: Duration::from_secs(30),
    })
    .expect("client")
}

impl Env {
    /// A site seeded at `scale`, a fresh database, the spec written to a file, migrated.
    pub async fn start(prefix: &str, scale: usize, entities: &str, workers: &str) -> Env {
        let config = SimConfig {
            seed: SeedConfig {
                scale,
                ..SeedConfig::default()
            },
            ..SimConfig::default()
        };
        Env::start_site(prefix, config, entities, workers).await
    }

    /// As [`Env::start`], with a SQLite cache (`prefix` unused) when `sqlite`.
    pub async fn start_on(
        prefix: &str,
        scale: usize,
        entities: &str,
        workers: &str,
        sqlite: bool,
    ) -> Env {
        let config = SimConfig {
            seed: SeedConfig {
                scale,
                ..SeedConfig::default()
            },
            ..SimConfig::default()
        };
        let db = if sqlite {
            TestDb::sqlite().await
        } else {
            TestDb::create(prefix).await
        };
        Env::start_with_db(db.expect("database"), config, entities, workers).await
    }

    /// As [`Env::start`], with a site configured by the caller.
    pub async fn start_site(prefix: &str, config: SimConfig, entities: &str, workers: &str) -> Env {
        let db = TestDb::create(prefix).await.expect("database");
        Env::start_with_db(db, config, entities, workers).await
    }

    pub async fn start_with_db(
        db: TestDb,
        config: SimConfig,
        entities: &str,
        workers: &str,
    ) -> Env {
        let sim = shotgun_sim::start(config, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("sim");
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = format!(
            "site:\n  url: {}\n  scriptName: {{value: sgcache_test}}\n  apiKey: {{value: test_key}}\n\
             database:\n  url: {{value: \"{}\"}}\n  maxConnections: 4\nentities:{entities}\nworkers:\n{workers}\n",
            sim.url(),
            db.url
        );
        let config = dir.path().join("sgcache.yaml");
        std::fs::write(&config, &yaml).unwrap();
        let spec = ShotgunCacheSpec::from_yaml(&yaml, "test").expect("spec");
        let writer = client(&sim.url(), "sgcache_test", "test_key");
        let silent = client(&sim.url(), "silent_script", "silent_key");
        let env = Env {
            sim,
            db,
            dir,
            config,
            spec,
            writer,
            silent,
        };
        env.migrate(&env.spec).await;
        env
    }

    pub async fn migrate(&self, spec: &ShotgunCacheSpec) {
        let site = self.writer.schema().await.expect("schema");
        storage::migrate(&self.db.db, spec, &site, PlanOptions::default())
            .await
            .expect("migrate");
    }

    /// Rewrites the spec file and the in-memory spec with other entities.
    pub fn respec(&mut self, entities: &str, workers: &str) -> ShotgunCacheSpec {
        let yaml = format!(
            "site:\n  url: {}\n  scriptName: {{value: sgcache_test}}\n  apiKey: {{value: test_key}}\n\
             database:\n  url: {{value: \"{}\"}}\n  maxConnections: 4\nentities:{entities}\nworkers:\n{workers}\n",
            self.sim.url(),
            self.db.url
        );
        std::fs::write(&self.config, &yaml).unwrap();
        self.spec = ShotgunCacheSpec::from_yaml(&yaml, "test").expect("spec");
        self.spec.clone()
    }

    /// Every cached field of every type is `ready`.
    pub async fn all_ready(&self) -> bool {
        let fields = storage::list_fields(&self.db.db).await.unwrap();
        !fields.is_empty()
            && fields
                .iter()
                .all(|f| matches!(f.state, FieldState::Ready | FieldState::Dropped))
    }

    pub async fn stop(self) {
        self.sim.shutdown().await;
        self.db.drop().await;
    }
}

/// Calls the site and returns the results.
pub async fn call(c: &SiteClient, method: &str, payload: Value) -> Value {
    c.call(method, payload)
        .await
        .unwrap_or_else(|e| panic!("{method}: {e}"))
}

pub async fn create(c: &SiteClient, ty: &str, fields: Value) -> i64 {
    let fields: Vec<Value> = fields
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| json!({"field_name": k, "value": v}))
        .collect();
    let r = call(
        c,
        "create",
        json!({"type": ty, "fields": fields, "return_fields": ["id"]}),
    )
    .await;
    r["id"].as_i64().expect("created id")
}

pub async fn update(c: &SiteClient, ty: &str, id: i64, fields: Value) {
    let fields: Vec<Value> = fields
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| json!({"field_name": k, "value": v}))
        .collect();
    call(c, "update", json!({"type": ty, "id": id, "fields": fields})).await;
}

pub async fn update_multi(
    c: &SiteClient,
    ty: &str,
    id: i64,
    field: &str,
    links: Value,
    mode: &str,
) {
    let fields = json!([{"field_name": field, "value": links, "multi_entity_update_mode": mode}]);
    call(c, "update", json!({"type": ty, "id": id, "fields": fields})).await;
}

pub async fn retire(c: &SiteClient, ty: &str, id: i64) {
    call(c, "delete", json!({"type": ty, "id": id})).await;
}

pub async fn revive(c: &SiteClient, ty: &str, id: i64) {
    call(c, "revive", json!({"type": ty, "id": id})).await;
}

/// All rows of `ty` on the site (active and retired) with `fields`, by id, and whether retired.
pub async fn site_rows(
    c: &SiteClient,
    ty: &str,
    fields: &[String],
) -> BTreeMap<i64, (bool, Value)> {
    sgcache_tests::compare::site_rows(c, ty, fields).await
}

/// Every difference between the cache and the site, field by field (see
/// `sgcache_tests::compare`). Empty when they agree.
pub async fn compare(env: &Env) -> Vec<String> {
    sgcache_tests::compare::compare(&env.db.db, &env.writer).await
}

/// Polls `check` until it returns true or `timeout` passes; returns the time it took.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if check().await {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// One cached row of `ty` in API form (None when absent).
pub async fn cached(
    env: &Env,
    ty: &str,
    id: i64,
) -> Option<(bool, serde_json::Map<String, Value>)> {
    let state = storage::read_state(&env.db.db).await.unwrap();
    let fields: Vec<(String, Storage)> = state
        .live_fields(ty)
        .map(|(n, r)| (n.clone(), r.storage()))
        .filter(|(n, s)| n != "id" && !matches!(s, Storage::Uncacheable(_)))
        .collect();
    sgcache_tests::compare::cache_rows(&env.db.db, ty, &fields)
        .await
        .remove(&id)
}

/// Runs the in-process scanner for `env`'s spec until `stop` is cancelled.
pub fn spawn_scanner(env: &Env, stop: &CancellationToken) -> tokio::task::JoinHandle<()> {
    let (spec, stop) = (env.spec.clone(), stop.clone());
    tokio::spawn(async move {
        sgcache_worker::scanner::run(&spec, ScannerArgs::default(), stop)
            .await
            .expect("scanner")
    })
}

/// Runs the in-process event follower and scanner for `env`'s spec until `stop` is cancelled.
pub fn run_workers(env: &Env, stop: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    let (spec, t) = (env.spec.clone(), stop.clone());
    vec![
        tokio::spawn(async move { sgcache_worker::events::run(&spec, t).await.expect("events") }),
        spawn_scanner(env, stop),
    ]
}

/// Asserts that every cached field becomes ready within 40 s (the initial backfill ends).
pub async fn assert_backfilled(env: &Env) {
    assert!(
        eventually(Duration::from_secs(40), || env.all_ready())
            .await
            .is_some(),
        "initial backfill never finished"
    );
}

/// Starts the real `sgcache-worker <role>` with `env`'s config file, logging JSON at `info`
/// to `log`.
pub fn spawn_worker(env: &Env, role: &str, log: &Path) -> Child {
    spawn_worker_via(env, role, log, None)
}

/// Like [`spawn_worker`], with `DATABASE_URL` set to `database_url` when given (to reach the
/// database through a [`sgcache_tests::relay::Relay`]).
pub fn spawn_worker_via(env: &Env, role: &str, log: &Path, database_url: Option<&str>) -> Child {
    let file = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(sgcache_tests::worker::binary());
    cmd.env_remove("DATABASE_URL");
    if let Some(url) = database_url {
        cmd.env("DATABASE_URL", url);
    }
    cmd.arg("--config")
        .arg(&env.config)
        .args(["--log-format", "json", role])
        .env("RUST_LOG", "info")
        .env_remove("SHOTGUN_URL")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn sgcache-worker {role}: {e}"))
}

/// (after, through] ranges and late ids of every committed batch in a JSON log.
pub fn committed(log: &str) -> Vec<(i64, i64, Vec<i64>)> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "events committed")
        .map(|v| {
            let late = v["late"]
                .as_str()
                .unwrap_or("{}")
                .trim_matches(|c| c == '{' || c == '}')
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .collect();
            (
                v["after"].as_i64().unwrap(),
                v["through"].as_i64().unwrap(),
                late,
            )
        })
        .collect()
}

/// A proxy in front of `env`'s site with `env`'s database as its cache (a pool of 4), served
/// until `stop`: its state, its URL and its task.
pub async fn start_proxy(
    env: &Env,
    service_auth: Option<serde_json::Map<String, Value>>,
    verify_sample_rate: f64,
    stop: &CancellationToken,
) -> (
    Arc<AppState>,
    String,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    start_proxy_with(env, service_auth, verify_sample_rate, stop, |_| {}).await
}

/// [`start_proxy`] with the proxy's settings adjusted by `tweak`.
pub async fn start_proxy_with(
    env: &Env,
    service_auth: Option<serde_json::Map<String, Value>>,
    verify_sample_rate: f64,
    stop: &CancellationToken,
    tweak: impl FnOnce(&mut ProxyConfig),
) -> (
    Arc<AppState>,
    String,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let mut config = ProxyConfig {
        site_timeout: Duration::from_secs(10),
        service_auth,
        verify_sample_rate,
        ..sgcache_tests::proxy::test_config(env.sim.url())
    };
    tweak(&mut config);
    let db = sgcache::sql::Db::connect(&env.db.url, 4).await.unwrap();
    let state = AppState::new(&config, Some(db)).unwrap();
    state.refresh_catalog().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(serve(state.clone(), config, listener, stop.clone()));
    (state, proxy, task)
}

/// Reads one field of one entity through the proxy (as `sgcache_test`): the path taken and the
/// value.
pub async fn read_field(
    http: &reqwest::Client,
    proxy: &str,
    ty: &str,
    id: i64,
    field: &str,
) -> (String, Value) {
    let payload = json!({"type": ty, "filters": {"logical_operator": "and", "conditions": [
        {"path": "id", "relation": "is", "values": [id]}]}, "return_fields": [field],
        "return_only": "active", "paging": {"current_page": 1, "entities_per_page": 10}});
    let body = json!({"method_name": "read", "params": [
        {"script_name": "sgcache_test", "script_key": "test_key"}, payload]});
    let url = format!("{proxy}/api3/json");
    let (_, path, answer) =
        sgcache_tests::proxy::post(http, &url, "application/json", body.to_string()).await;
    let value = answer["results"]["entities"][0][field].clone();
    (path.unwrap_or_default(), value)
}

/// The state row of `ty.field`.
pub async fn field_state(env: &Env, ty: &str, field: &str) -> Option<storage::FieldStatus> {
    storage::list_fields(&env.db.db)
        .await
        .unwrap()
        .into_iter()
        .find(|f| f.entity_type == ty && f.field_name == field)
}

/// Waits (20 s at most) until `ty.field` is unservable; returns its state row.
pub async fn wait_unservable(env: &Env, ty: &str, field: &str) -> storage::FieldStatus {
    let ok = eventually(Duration::from_secs(20), || async {
        field_state(env, ty, field)
            .await
            .is_some_and(|f| f.state == FieldState::Unservable)
    })
    .await;
    assert!(ok.is_some(), "{ty}.{field} never became unservable");
    field_state(env, ty, field).await.unwrap()
}

/// The id of the site's newest EventLogEntry (0 when none).
pub async fn newest_event(c: &SiteClient) -> i64 {
    let newest = call(
        c,
        "read",
        json!({"type": "EventLogEntry", "filters": {"logical_operator": "and", "conditions": []},
               "return_fields": ["id"],
               "sorts": [{"field_name": "id", "direction": "desc"}],
               "paging": {"current_page": 1, "entities_per_page": 1}}),
    )
    .await;
    newest["entities"][0]["id"].as_i64().unwrap_or(0)
}

/// The event follower's saved position (0 when none).
pub async fn follower_position(env: &Env) -> i64 {
    storage::read_event_position(&env.db.db)
        .await
        .unwrap()
        .and_then(|p| p.last_event_id)
        .unwrap_or(0)
}

/// The ids of the site's live Shots, ascending.
pub async fn live_shots(env: &Env) -> Vec<i64> {
    site_rows(&env.writer, "Shot", &["code".into()])
        .await
        .into_iter()
        .filter(|(_, (retired, _))| !retired)
        .map(|(id, _)| id)
        .collect()
}

/// [`start_proxy`] with the spec's own script as the proxy's service credentials.
pub async fn start_script_proxy(
    env: &Env,
    stop: &CancellationToken,
) -> (
    Arc<AppState>,
    String,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let auth = sgcache_tests::proxy::script_auth().as_object().cloned();
    start_proxy(env, auth, 0.0, stop).await
}

/// Shots linked to sequences, and the sequences' `shots` (the other side of the link): the
/// spec of the tests of links to retired entities.
pub const SHOTS_IN_SEQUENCES: &str = "\n  - type: Shot\n    fields: [code, sg_sequence]\n  - type: Sequence\n    fields: [code, shots]\nimplyLinkTargets: false\n";

/// [`SHOTS_IN_SEQUENCES`] backfilled (the workers stopped again), and a live shot of the site
/// with its sequence: (env, shot, sequence).
pub async fn backfilled_shot_in_sequence(prefix: &str, workers: &str) -> (Env, i64, i64) {
    let env = Env::start(prefix, 120, SHOTS_IN_SEQUENCES, workers).await;
    let stop = CancellationToken::new();
    let tasks = run_workers(&env, &stop);
    assert_backfilled(&env).await;
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    let (shot, seq) = site_rows(&env.writer, "Shot", &["sg_sequence".into()])
        .await
        .into_iter()
        .find_map(|(id, (retired, f))| {
            let seq = f.get("sg_sequence")?.get("id")?.as_i64()?;
            (!retired).then_some((id, seq))
        })
        .expect("a live shot in a sequence");
    (env, shot, seq)
}

/// Takes `shot` out of the cached `shots` of `seq`, as a read of the sequence while the shot
/// was retired on the site would have left it.
pub async fn drop_sequence_link(env: &Env, seq: i64, shot: i64) {
    let mut sql = env.db.db.sql();
    sql.push("DELETE FROM sequence_shots WHERE _entity_id = ")
        .push_bind(sgcache::sql::SqlValue::Int(seq))
        .push(" AND _target_id = ")
        .push_bind(sgcache::sql::SqlValue::Int(shot));
    assert_eq!(
        env.db.db.execute(&sql).await.unwrap(),
        1,
        "the link to remove"
    );
}
