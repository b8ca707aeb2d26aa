//! Leader election against a mocked API server that keeps one Lease with optimistic
//! concurrency (create conflicts when it exists, replace conflicts on a stale resourceVersion),
//! shared by two contenders with their own clients.

use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use sgcache_operator::lease::{LeaderElection, LEASE_SECONDS};

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/sgcache-operator";

#[derive(Default)]
struct Store {
    lease: Option<Lease>,
    version: u64,
    /// After the next GET, another replica takes the lease (a lost race).
    steal_after_get: bool,
    /// The next requests answered 500 (an API server blip).
    fail_next: u32,
}

type Shared = Arc<Mutex<Store>>;

fn conflict() -> (u16, Value) {
    (
        409,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                 "reason": "Conflict", "code": 409, "message": "mock conflict"}),
    )
}

fn save(st: &mut Store, mut lease: Lease) -> (u16, Value) {
    st.version += 1;
    lease.metadata.resource_version = Some(st.version.to_string());
    st.lease = Some(lease.clone());
    (200, serde_json::to_value(lease).unwrap())
}

fn answer(st: &mut Store, method: &Method, path: &str, body: Value) -> (u16, Value) {
    if st.fail_next > 0 {
        st.fail_next -= 1;
        return (
            500,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "reason": "InternalError", "code": 500, "message": "mock blip"}),
        );
    }
    match (method.clone(), path) {
        (Method::GET, PATH) => {
            let out = match &st.lease {
                Some(l) => (200, serde_json::to_value(l).unwrap()),
                None => (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                     "reason": "NotFound", "code": 404, "message": "none"}),
                ),
            };
            if std::mem::take(&mut st.steal_after_get) {
                let mut l = st.lease.clone().expect("a lease to steal");
                let spec = l.spec.as_mut().unwrap();
                spec.holder_identity = Some("c".into());
                spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
                save(st, l);
            }
            out
        }
        (Method::POST, p) if PATH.starts_with(p) => {
            if st.lease.is_some() {
                return conflict();
            }
            save(st, serde_json::from_value(body).unwrap())
        }
        (Method::PUT, PATH) => {
            let lease: Lease = serde_json::from_value(body).unwrap();
            let current = st
                .lease
                .as_ref()
                .and_then(|l| l.metadata.resource_version.clone());
            if lease.metadata.resource_version != current {
                return conflict();
            }
            save(st, lease)
        }
        _ => panic!("unexpected call {method} {path}"),
    }
}

/// A contender with its own client on the shared store.
fn contender(store: &Shared, identity: &str) -> LeaderElection {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let store = store.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (method, path) = (req.method().clone(), req.uri().path().to_string());
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (code, out) = answer(&mut store.lock().unwrap(), &method, &path, body);
            let resp = Response::builder()
                .status(StatusCode::from_u16(code).unwrap())
                .body(Body::from(serde_json::to_vec(&out).unwrap()))
                .unwrap();
            send.send_response(resp);
        }
    });
    LeaderElection::new(Client::new(svc, "ops"), "ops", "sgcache-operator", identity)
}

fn holder(store: &Shared) -> (String, i32) {
    let st = store.lock().unwrap();
    let spec = st.lease.as_ref().unwrap().spec.clone().unwrap();
    (
        spec.holder_identity.unwrap(),
        spec.lease_transitions.unwrap(),
    )
}

/// Moves the lease's last renewal this many seconds into the past.
fn age(store: &Shared, secs: i64) {
    let mut st = store.lock().unwrap();
    let spec = st.lease.as_mut().unwrap().spec.as_mut().unwrap();
    let t =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(secs);
    spec.renew_time = Some(MicroTime(t));
}

#[tokio::test]
async fn one_holds_the_other_waits_and_takes_over_on_expiry() {
    let store = Shared::default();
    let (a, b) = (contender(&store, "a"), contender(&store, "b"));

    assert!(
        a.try_acquire().await.unwrap(),
        "the first creates the lease"
    );
    assert!(!b.try_acquire().await.unwrap(), "a live lease is not taken");
    assert!(a.try_acquire().await.unwrap(), "the holder renews");
    assert_eq!(holder(&store), ("a".into(), 0));

    // Renewed recently enough: still a's.
    age(&store, i64::from(LEASE_SECONDS) - 5);
    assert!(!b.try_acquire().await.unwrap());

    // a stopped renewing: b takes over, counting a transition; a is now refused.
    age(&store, i64::from(LEASE_SECONDS) + 5);
    assert!(b.try_acquire().await.unwrap(), "an expired lease is taken");
    assert_eq!(holder(&store), ("b".into(), 1));
    assert!(
        !a.try_acquire().await.unwrap(),
        "the old holder does not take it back"
    );
}

#[tokio::test]
async fn a_lost_race_is_not_leadership() {
    let store = Shared::default();
    let (a, b) = (contender(&store, "a"), contender(&store, "b"));
    assert!(a.try_acquire().await.unwrap());
    age(&store, i64::from(LEASE_SECONDS) + 5);
    // b reads the expired lease, but another replica replaces it before b writes.
    store.lock().unwrap().steal_after_get = true;
    assert!(!b.try_acquire().await.unwrap(), "the stale write conflicts");
    assert_eq!(holder(&store).0, "c");
}

#[tokio::test]
async fn two_creating_at_once_get_one_leader() {
    let store = Shared::default();
    let (a, b) = (contender(&store, "a"), contender(&store, "b"));
    let (ra, rb) = tokio::join!(a.try_acquire(), b.try_acquire());
    let won = [ra.unwrap(), rb.unwrap()];
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    let expected = if won[0] { "a" } else { "b" };
    assert_eq!(holder(&store).0, expected);
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once_not_at_expiry() {
    let store = Shared::default();
    let (a, b) = (contender(&store, "a"), contender(&store, "b"));
    assert!(a.try_acquire().await.unwrap());
    assert!(!b.try_acquire().await.unwrap(), "held and fresh");
    assert!(a.release().await.unwrap(), "the holder releases it");
    assert!(b.try_acquire().await.unwrap(), "free at once");
    assert_eq!(holder(&store), ("b".into(), 1));
    assert!(
        !a.release().await.unwrap(),
        "a no longer holds it: nothing to release"
    );
    assert_eq!(holder(&store).0, "b");
}

#[tokio::test]
async fn a_failed_renewal_is_retried_within_the_lease_duration() {
    let store = Shared::default();
    let a = contender(&store, "a");
    assert!(a.try_acquire().await.unwrap());
    store.lock().unwrap().fail_next = 1;
    // hold() returns only when leadership is lost: over two renewal periods, one failing, it
    // must keep holding (and renewing) instead.
    let two_periods = sgcache_operator::lease::RENEW_EVERY * 2 + std::time::Duration::from_secs(1);
    let held = tokio::time::timeout(two_periods, a.hold()).await;
    assert!(held.is_err(), "leadership kept through one failed renewal");
    assert_eq!(
        store.lock().unwrap().fail_next,
        0,
        "the failing renewal happened"
    );
    assert_eq!(holder(&store).0, "a");
}

#[test]
fn default_identities_are_unique_per_process() {
    use sgcache_operator::lease::default_identity;
    let (x, y) = (
        default_identity(Some("op-0")),
        default_identity(Some("op-0")),
    );
    assert!(x.starts_with("op-0-") && y.starts_with("op-0-"), "{x} {y}");
    assert_ne!(x, y, "two operators on one host never share an identity");
    assert!(!default_identity(None).is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_api_server_outage_longer_than_the_lease_costs_no_restart() {
    let store = Shared::default();
    let health = std::sync::Arc::new(sgcache_operator::health::Health::default());
    let a = contender(&store, "a").with_health(health.clone());
    assert!(a.try_acquire().await.unwrap());
    health.set_role(sgcache_operator::health::Role::Leader);
    // 30 failing renewals, retried every second: twice the lease's 15 s.
    store.lock().unwrap().fail_next = 30;
    let hold = a.hold();
    tokio::pin!(hold);
    let during = tokio::time::timeout(std::time::Duration::from_secs(20), &mut hold).await;
    assert!(during.is_err(), "still leading during the outage");
    let (code, body) = health.readiness();
    assert_eq!(code.as_u16(), 503, "{body}");
    assert!(body.contains("Lease failing"), "{body}");
    let after = tokio::time::timeout(std::time::Duration::from_secs(30), &mut hold).await;
    assert!(after.is_err(), "and after it: renewed, not restarted");
    assert_eq!(
        store.lock().unwrap().fail_next,
        0,
        "every failing renewal happened"
    );
    assert_eq!(holder(&store).0, "a");
    assert_eq!(health.readiness().0.as_u16(), 200);
}
