//! `shotgun-sim`: a test Shotgun site speaking the API3 JSON protocol, in memory.
//!
//! Start it in-process with [`start`] (tests, on port 0) or as the `shotgun-sim` binary.
//! See `sim/README.md` for the seeded data, the control endpoint and the semantic choices.

mod auth;
mod codec;
pub mod config;
mod dates;
mod events;
pub mod faults;
mod filter;
mod http;
mod inverse;
mod presets;
mod read;
mod schema_methods;
mod schema_writes;
pub mod seed;
pub mod semantics;
mod site;
pub mod stats;
mod store;
mod summarize;
mod txn;
mod value;
mod write;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Map, Value};
use sgcache::api3::{Api3Error, Request};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{ScriptCredential, SimConfig, UserCredential};
pub use faults::Faults;
pub use seed::{SeedConfig, SeedCounts};
pub use semantics::{NullHop, Semantics, SortCollation, TextCase, WeekStart};
pub use stats::{RequestLogEntry, Stats};

/// A running test site.
pub struct SimHandle {
    site: Arc<site::Site>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Loads the schema, seeds the data and serves on `listen` (port 0 picks a free port).
pub async fn start(config: SimConfig, listen: SocketAddr) -> anyhow::Result<SimHandle> {
    let site = tokio::task::spawn_blocking(move || site::Site::new(&config)).await??;
    let site = Arc::new(site);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let app = http::router(site.clone());
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "test site server failed");
        }
    });
    tracing::info!(%addr, "test site listening");
    Ok(SimHandle {
        site,
        addr,
        stop: Some(stop),
        task: Some(task),
    })
}

impl SimHandle {
    /// `http://127.0.0.1:PORT` (the client appends `/api3/json`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting requests and waits for the server to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    pub fn stats(&self) -> Stats {
        self.site
            .recorder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats
            .clone()
    }

    pub fn reset_stats(&self) {
        self.site
            .recorder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reset();
    }

    pub fn requests(&self, limit: usize) -> Vec<RequestLogEntry> {
        self.site
            .recorder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recent(limit)
    }

    pub fn faults(&self) -> Faults {
        self.site.faults()
    }

    pub fn set_faults(&self, faults: Faults) {
        self.site.set_faults(faults);
    }

    /// Rotates a script's key (its old key is rejected from now on); false for an unknown
    /// script.
    pub fn set_script_key(&self, script_name: &str, script_key: &str) -> bool {
        self.site.auth.set_script_key(script_name, script_key)
    }

    /// Whether unset checkboxes read as null (`SimConfig::null_checkboxes`).
    pub fn null_checkboxes(&self) -> bool {
        self.site.null_checkboxes()
    }

    pub fn set_null_checkboxes(&self, on: bool) {
        self.site.set_null_checkboxes(on);
    }

    /// Text case, sort collation and week start (`SimConfig::semantics`).
    pub fn semantics(&self) -> Semantics {
        self.site.semantics()
    }

    /// Makes the site compare text, sort or count weeks differently from now on, without
    /// events (`PUT /control/quirks`).
    pub fn set_semantics(&self, semantics: Semantics) {
        self.site.set_semantics(semantics);
    }

    /// The site's time in seconds (fixed, real or advanced), as its `Date` header says.
    pub fn now(&self) -> i64 {
        self.site.now()
    }

    /// Fixes the site clock at `at` (seconds since the epoch), or back to real time (`None`).
    pub fn set_clock(&self, at: Option<i64>) {
        self.site.set_clock(at);
    }

    /// Moves the site clock by `secs` (negative goes back).
    pub fn advance_clock(&self, secs: i64) {
        self.site.advance_clock(secs);
    }

    /// Gives `entity_type.field` the data type `data_type` (an API name such as `text`) with
    /// every value cleared, as deleting the field for good and creating it again with another
    /// type does on a real site. No event, no `updated_at`.
    pub fn retype_field(
        &self,
        entity_type: &str,
        field: &str,
        data_type: &str,
    ) -> Result<(), Api3Error> {
        self.site.retype_field(entity_type, field, data_type)
    }

    pub fn seed_counts(&self) -> SeedCounts {
        self.site.counts.clone()
    }

    /// Runs one API3 call in-process (no HTTP, no faults, not counted): the response body
    /// (`info` unwrapped, everything else as `{"results": ...}`) or the API3 error.
    pub fn call(&self, method: &str, auth: Value, payload: Value) -> Result<Value, Api3Error> {
        let auth = match auth {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        self.site.call(&Request {
            method_name: method.to_string(),
            auth,
            payload,
        })
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
