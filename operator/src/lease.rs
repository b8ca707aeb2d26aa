//! Leader election with a `coordination.k8s.io/v1` Lease: only the holder reconciles, so two
//! operator replicas are safe. Optimistic concurrency (resourceVersion) settles races. A
//! renewal that fails (the API server down or unreachable) is retried every second for as
//! long as it takes: leadership ends only when the API server answers that another replica
//! holds the lease. That is safe because the operator acts only after reading from the API
//! server (the Secrets, first of all): a leader that cannot renew cannot reconcile either, and
//! a standby that took an expired lease is seen at the first answer. So an outage, of any
//! length, costs no restart. A stopping leader releases the lease so the standby takes over at
//! once. Failures to take or renew the lease show in `/readyz`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use tracing::{info, warn};

use crate::health::Health;

/// How long a lease is valid without renewal, and how often the holder renews.
pub const LEASE_SECONDS: i32 = 15;
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How often a failed renewal is retried.
pub const RETRY_FAILED: Duration = Duration::from_secs(1);

pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    health: Option<Arc<Health>>,
}

impl LeaderElection {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        LeaderElection {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            health: None,
        }
    }

    /// Reports failures to take or renew the lease to `health` (`/readyz`).
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = Some(health);
        self
    }

    fn report(&self, error: Option<String>) {
        if let Some(h) = &self.health {
            h.set_lease_error(error);
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Waits until this replica holds the lease; a standby says so, and who leads.
    pub async fn acquire(&self) {
        let mut said = None;
        loop {
            let attempt = self.try_acquire().await;
            self.report(attempt.as_ref().err().map(|e| e.to_string()));
            match attempt {
                Ok(true) => {
                    info!(identity = %self.identity, "leader lease acquired");
                    return;
                }
                Ok(false) => {
                    let holder = self.holder().await;
                    if said.as_ref() != Some(&holder) {
                        info!(identity = %self.identity, leader = %holder, lease = %self.name,
                              "standby: waiting for the leader lease");
                        said = Some(holder);
                    }
                }
                Err(e) => warn!(error = %e, "leader election failed, retrying"),
            }
            tokio::time::sleep(RENEW_EVERY).await;
        }
    }

    /// The current holder's identity, for the standby's log.
    async fn holder(&self) -> String {
        let lease = self.api.get_opt(&self.name).await.ok().flatten();
        lease
            .and_then(|l| l.spec?.holder_identity)
            .unwrap_or_else(|| "?".into())
    }

    /// Renews the lease; returns when leadership is lost: the API server answers that another
    /// replica holds it. A failed renewal is retried every [`RETRY_FAILED`], however long the
    /// API server stays away (see the module's doc for why that is safe).
    pub async fn hold(&self) {
        let mut renewed = Instant::now();
        let mut wait = RENEW_EVERY;
        loop {
            tokio::time::sleep(wait).await;
            let attempt = self.try_acquire().await;
            self.report(attempt.as_ref().err().map(|e| e.to_string()));
            match attempt {
                Ok(true) => {
                    if wait == RETRY_FAILED {
                        info!(
                            after_s = renewed.elapsed().as_secs(),
                            "leader lease renewed again"
                        );
                    }
                    renewed = Instant::now();
                    wait = RENEW_EVERY;
                }
                Ok(false) => return warn!("leader lease taken by another replica"),
                Err(e) => {
                    if wait == RENEW_EVERY {
                        warn!(error = %e, "leader lease renewal failed; retrying every second");
                    }
                    wait = RETRY_FAILED;
                }
            }
        }
    }

    /// Gives the lease up if this replica holds it (on shutdown), so a standby takes over at
    /// its next attempt instead of waiting for expiry.
    pub async fn release(&self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(false);
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(false);
        };
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        created(
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await,
        )
    }

    /// One attempt: create, renew our own, or take over an expired lease.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(jiff_now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now.clone(), now, 0)),
            };
            return created(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(&self.identity);
        if !ours && !expired(&spec) {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = if ours {
            spec.acquire_time.clone().unwrap_or(now.clone())
        } else {
            now.clone()
        };
        lease.spec = Some(self.spec(acquired, now, transitions));
        created(
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await,
        )
    }

    fn spec(&self, acquired: MicroTime, renewed: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            acquire_time: Some(acquired),
            renew_time: Some(renewed),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}

fn jiff_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// A conflict means another replica won the race.
fn created(r: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match r {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

fn expired(spec: &LeaseSpec) -> bool {
    let Some(renewed) = &spec.renew_time else {
        return true;
    };
    let ttl = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
    let renewed_ms = renewed.0.as_millisecond();
    jiff_now().as_millisecond() > renewed_ms + ttl * 1000
}

/// A default identity unique per process: the pod name (or host name) and a random suffix, so
/// two operators run outside a cluster on one host never both believe they lead.
pub fn default_identity(pod_name: Option<&str>) -> String {
    let base = pod_name
        .map(String::from)
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sgcache-operator".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{base}-{}", &suffix[..8])
}
