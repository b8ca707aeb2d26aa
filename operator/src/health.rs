//! What the operator's probes report: `/health` (liveness: the process serves) and `/readyz`
//! (readiness: leader with working watches, standby, or broken watches).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;

/// How long a watch error keeps the operator unready. A failing watch is retried with a
/// backoff and errors again at each retry; reconciles of the other watches succeed
/// meanwhile, so they cannot be the sign it works again: no error for this long is.
pub const WATCH_ERROR_HOLD: Duration = Duration::from_secs(60);

/// This replica's role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Starting up: the CRD check and the first election attempt.
    Starting,
    /// Waiting for the leader Lease; healthy, not acting.
    Standby,
    /// Holding the Lease (or election disabled) and reconciling.
    Leader,
}

/// Shared by the probes, the election and the controller loop.
#[derive(Debug)]
pub struct Health {
    /// The role, and the last watch error with when it happened.
    state: Mutex<(Role, Option<(String, Instant)>)>,
    /// Why the last attempt to take or renew the leader Lease failed (403, API server down).
    lease_error: Mutex<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: Mutex::new((Role::Starting, None)),
            lease_error: Mutex::new(None),
        }
    }
}

impl Health {
    pub fn set_role(&self, role: Role) {
        self.state.lock().expect("health lock").0 = role;
    }

    /// A watch failed (`Some(why)`), or is known to work again (`None`).
    pub fn set_watch_error(&self, error: Option<String>) {
        self.state.lock().expect("health lock").1 = error.map(|e| (e, Instant::now()));
    }

    /// The last attempt on the leader Lease failed (`Some(why)`) or worked (`None`).
    pub fn set_lease_error(&self, error: Option<String>) {
        *self.lease_error.lock().expect("health lock") = error;
    }

    /// The readiness answer: 200 `leader` / `standby`, 503 while starting, while a watch
    /// fails (a leader that cannot see its resources acts on nothing) or while the Lease
    /// cannot be taken or renewed (a standby refused the Lease would never take over).
    pub fn readiness(&self) -> (StatusCode, String) {
        self.readiness_at(Instant::now())
    }

    /// [`Self::readiness`] as of `now`.
    pub fn readiness_at(&self, now: Instant) -> (StatusCode, String) {
        let (role, error) = self.state.lock().expect("health lock").clone();
        let error = error
            .filter(|(_, at)| now.saturating_duration_since(*at) < WATCH_ERROR_HOLD)
            .map(|(e, _)| e);
        if let Some(e) = self.lease_error.lock().expect("health lock").clone() {
            let role = match role {
                Role::Leader => "leader",
                Role::Standby => "standby",
                Role::Starting => "starting",
            };
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{role}, leader Lease failing: {e}"),
            );
        }
        match (role, error) {
            (Role::Leader, None) => (StatusCode::OK, "leader".into()),
            (Role::Leader, Some(e)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("leader, watch failing: {e}"),
            ),
            (Role::Standby, _) => (StatusCode::OK, "standby".into()),
            (Role::Starting, _) => (StatusCode::SERVICE_UNAVAILABLE, "starting".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_tells_leader_standby_and_broken_watch_apart() {
        let h = Health::default();
        assert_eq!(h.readiness().0, StatusCode::SERVICE_UNAVAILABLE);
        h.set_role(Role::Standby);
        assert_eq!(h.readiness(), (StatusCode::OK, "standby".into()));
        h.set_role(Role::Leader);
        assert_eq!(h.readiness(), (StatusCode::OK, "leader".into()));
        h.set_watch_error(Some("403 listing secrets".into()));
        let (code, body) = h.readiness();
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("403 listing secrets"), "{body}");
        // Still failing a while later (a reconcile of another watch proves nothing); clear once
        // no error came for the hold period.
        let soon = Instant::now() + Duration::from_secs(10);
        assert_eq!(h.readiness_at(soon).0, StatusCode::SERVICE_UNAVAILABLE);
        let later = Instant::now() + WATCH_ERROR_HOLD + Duration::from_secs(1);
        assert_eq!(h.readiness_at(later), (StatusCode::OK, "leader".into()));
        h.set_watch_error(None);
        assert_eq!(h.readiness().0, StatusCode::OK);
        h.set_role(Role::Standby);
        h.set_lease_error(Some("403 leases is forbidden".into()));
        let (code, body) = h.readiness();
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.starts_with("standby") && body.contains("403"),
            "{body}"
        );
        h.set_lease_error(None);
        assert_eq!(h.readiness(), (StatusCode::OK, "standby".into()));
    }
}
