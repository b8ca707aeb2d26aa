//! The site: store, auth, faults, counters, and the API3 method dispatcher.

use std::sync::{Mutex, RwLock};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Map, Value};
use sgcache::api3::{Api3Error, ReadRequest, Request};

use crate::auth::{Auth, Principal};
use crate::config::SimConfig;
use crate::faults::Faults;
use crate::read::{read, ReadEnv};
use crate::seed::{seed, SeedCounts};
use crate::semantics::Semantics;
use crate::stats::Recorder;
use crate::store::Store;
use crate::txn::Txn;
use crate::value::parse_date_time;
use crate::write::Writer;

/// The site's clock: a fixed instant (relative-date tests), or real time shifted by an offset
/// (what `PUT /control/clock` with `advance_seconds` makes of the real clock).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Clock {
    Fixed(i64),
    Real { offset: i64 },
}

pub struct Site {
    pub store: RwLock<Store>,
    pub auth: Auth,
    pub faults: RwLock<Faults>,
    pub recorder: Mutex<Recorder>,
    pub counts: SeedCounts,
    version: Vec<u32>,
    max_per_page: u64,
    clock: Mutex<Clock>,
    rng: Mutex<StdRng>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Site {
    pub fn new(config: &SimConfig) -> anyhow::Result<Site> {
        let schema = config.load_schema()?;
        let mut store = Store::new(&schema);
        store.null_checkboxes = config.null_checkboxes;
        store.semantics = config.semantics;
        let started = Instant::now();
        let seeded = seed(&mut store, &config.seed, &config.scripts, &config.users);
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, counts = ?seeded.counts, "seeded");
        let clock = match &config.clock {
            Some(c) => Clock::Fixed(
                parse_date_time(c).ok_or_else(|| anyhow::anyhow!("invalid clock {c:?}"))?,
            ),
            None => Clock::Real { offset: 0 },
        };
        Ok(Site {
            store: RwLock::new(store),
            auth: Auth::new(seeded.scripts, seeded.users),
            faults: RwLock::new(config.faults.clone()),
            recorder: Mutex::new(Recorder::new(config.request_log_size)),
            counts: seeded.counts,
            version: config.version.clone(),
            max_per_page: config.max_entities_per_page,
            clock: Mutex::new(clock),
            rng: Mutex::new(StdRng::seed_from_u64(config.seed.rng_seed ^ 0x5eed)),
        })
    }

    /// The site's time in seconds: what its relative dates, `created_at`/`updated_at` and the
    /// `Date` header of its answers use.
    pub fn now(&self) -> i64 {
        match *lock(&self.clock) {
            Clock::Fixed(t) => t,
            Clock::Real { offset } => chrono::Utc::now().timestamp() + offset,
        }
    }

    pub fn clock(&self) -> Clock {
        *lock(&self.clock)
    }

    /// Fixes the clock at `at` (seconds), or back to real time (`None`).
    pub fn set_clock(&self, at: Option<i64>) {
        *lock(&self.clock) = match at {
            Some(t) => Clock::Fixed(t),
            None => Clock::Real { offset: 0 },
        };
    }

    /// Moves the clock by `secs` (negative goes back), fixed or real.
    pub fn advance_clock(&self, secs: i64) {
        let mut c = lock(&self.clock);
        *c = match *c {
            Clock::Fixed(t) => Clock::Fixed(t.saturating_add(secs)),
            Clock::Real { offset } => Clock::Real {
                offset: offset.saturating_add(secs),
            },
        };
    }

    pub fn semantics(&self) -> Semantics {
        self.store
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .semantics
    }

    /// Switches text case, sort collation or week start. Like [`Site::set_null_checkboxes`],
    /// existing data reads differently at once, without events.
    pub fn set_semantics(&self, semantics: Semantics) {
        self.store
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .semantics = semantics;
    }

    pub fn faults(&self) -> Faults {
        self.faults
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_faults(&self, f: Faults) {
        *self.faults.write().unwrap_or_else(|e| e.into_inner()) = f;
    }

    /// Whether unset checkboxes read as null ([`Store::null_checkboxes`]).
    pub fn null_checkboxes(&self) -> bool {
        self.store
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .null_checkboxes
    }

    /// Switches how unset checkboxes read. Nothing else changes: no event, no `updated_at`
    /// (as when a site's column definition changes under its data).
    pub fn set_null_checkboxes(&self, on: bool) {
        self.store
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .null_checkboxes = on;
    }

    /// See [`crate::SimHandle::retype_field`].
    pub fn retype_field(
        &self,
        entity_type: &str,
        field: &str,
        data_type: &str,
    ) -> Result<(), Api3Error> {
        let mut store = self.store.write().unwrap_or_else(|e| e.into_inner());
        crate::schema_writes::retype(&mut store, entity_type, field, data_type)
    }

    /// Counts a request before anything else happens to it.
    pub fn record(&self, req: Option<&Request>) {
        let (method, types) = match req {
            Some(r) => (r.method_name.as_str(), entity_types(&r.payload)),
            None => ("(invalid)", Vec::new()),
        };
        lock(&self.recorder).record(method, &types);
    }

    /// The whole response body of one request (`info` unwrapped, others in `results`).
    pub fn call(&self, req: &Request) -> Result<Value, Api3Error> {
        if req.method_name == "info" {
            return Ok(self.info());
        }
        if req.method_name == "get_session_token" {
            let token = self.auth.new_session(&req.auth)?;
            return Ok(json!({"results": {"session_id": token}}));
        }
        let result = match req.method_name.as_str() {
            "read" | "summarize" | "schema_read" | "schema_entity_read" | "schema_field_read" => {
                self.call_read(req)?
            }
            "create" | "update" | "delete" | "revive" | "batch" => self.call_write(req)?,
            "schema_field_create"
            | "schema_field_update"
            | "schema_field_delete"
            | "schema_field_revive" => self.call_schema_write(req)?,
            other => {
                return Err(Api3Error::bad_request(format!(
                    "Unknown method '{other}': the test site implements info, read, summarize, \
                     create, update, delete, revive, batch, schema_read, schema_entity_read, \
                     schema_field_read, schema_field_create, schema_field_update, \
                     schema_field_delete, schema_field_revive and get_session_token"
                )))
            }
        };
        Ok(json!({ "results": result }))
    }

    fn info(&self) -> Value {
        json!({
            "version": self.version,
            "full_version": self.version.iter().chain([&0]).take(4).collect::<Vec<_>>(),
            "api_max_entities_per_page": self.max_per_page,
            "s3_direct_uploads_enabled": false,
            "s3_enabled_upload_types": {},
            "user_authentication_method": "default",
            "totp_enabled": false,
        })
    }

    fn call_read(&self, req: &Request) -> Result<Value, Api3Error> {
        let store = self.store.read().unwrap_or_else(|e| e.into_inner());
        self.auth.authenticate(&req.auth, &store)?;
        let (now, instant) = (self.now(), Instant::now());
        match req.method_name.as_str() {
            "read" => {
                let r = ReadRequest::parse(&req.payload)?;
                let env = ReadEnv {
                    now,
                    instant,
                    max_per_page: self.max_per_page,
                };
                read(&store, &r, env)
            }
            "summarize" => crate::summarize::summarize(&store, &req.payload, now, instant),
            m => crate::schema_methods::call(&store, m, &req.payload),
        }
    }

    fn call_schema_write(&self, req: &Request) -> Result<Value, Api3Error> {
        let mut store = self.store.write().unwrap_or_else(|e| e.into_inner());
        let principal = self.auth.authenticate(&req.auth, &store)?;
        let (result, action) = match req.method_name.as_str() {
            "schema_field_create" => (
                crate::schema_writes::create(&mut store, &req.payload)?,
                "New",
            ),
            "schema_field_update" => (
                crate::schema_writes::update(&mut store, &req.payload)?,
                "Change",
            ),
            "schema_field_delete" => return crate::schema_writes::delete(&mut store, &req.payload),
            _ => return crate::schema_writes::revive(&mut store, &req.payload),
        };
        let entity_type = req
            .payload
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("");
        let field = match &result {
            Value::String(created) => created.clone(),
            _ => req
                .payload
                .get("field_name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        };
        self.in_txn(&mut store, &principal, |w| {
            w.event_display_column(action, entity_type, &field);
            Ok(())
        })?;
        Ok(result)
    }

    fn call_write(&self, req: &Request) -> Result<Value, Api3Error> {
        let mut store = self.store.write().unwrap_or_else(|e| e.into_inner());
        let principal = self.auth.authenticate(&req.auth, &store)?;
        self.in_txn(&mut store, &principal, |w| match req.method_name.as_str() {
            "create" => w.create(&req.payload),
            "update" => w.update(&req.payload, None),
            "delete" => w.delete(&req.payload),
            "revive" => w.revive(&req.payload),
            _ => w.batch(&req.payload),
        })
    }

    /// Runs `f` with a writer in one transaction: committed when it succeeds, rolled back
    /// otherwise.
    fn in_txn<R>(
        &self,
        store: &mut Store,
        principal: &Principal,
        f: impl FnOnce(&mut Writer) -> Result<R, Api3Error>,
    ) -> Result<R, Api3Error> {
        let mut rng = lock(&self.rng);
        let mut w = Writer {
            txn: Txn::new(store),
            principal,
            now: self.now(),
            instant: Instant::now(),
            faults: self.faults(),
            rng: &mut rng,
        };
        let r = f(&mut w);
        match r {
            Ok(_) => w.txn.commit(),
            Err(_) => w.txn.rollback(),
        }
        r
    }
}

/// The entity types a payload names (each sub-request of a batch).
fn entity_types(payload: &Value) -> Vec<String> {
    let one = |p: &Map<String, Value>| p.get("type").and_then(Value::as_str).map(String::from);
    match payload {
        Value::Object(p) => one(p).into_iter().collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_object().and_then(one))
            .collect(),
        _ => Vec::new(),
    }
}
