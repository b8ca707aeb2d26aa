//! `read`: answered from the cache when the whole request is answerable and the principal
//! verified; otherwise forwarded.
//!
//! The cache answers a principal the site accepted within `authTtl`, or within `authGrace`
//! when the proxy's own probe says the site is down (never because a client's request
//! failed: see [`super::site_health`]). A read that fails in the database goes to the site;
//! the database is marked unavailable for everyone only when the proxy's own probe of it
//! fails too (see [`AppState::db_failed`]), so one client's bad read never switches the
//! cache off for the others.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::Value;
use sgcache::api3::ReadRequest;
use sgcache::query::{self, plan_read_at, PassThrough, ReadPlan};
use sgcache::sql::Db;
use sha2::{Digest, Sha256};

use super::answer::{Outcome, Path};
use super::answer_cache::{self, Kept};
use super::api3::{failed, forward_seen, site_call, Call};
use super::auth::{CredentialKey, Verdict};
use super::envelope::{Envelope, MAX_READ_PAYLOAD};
use super::reason::Reason;
use super::trust::{self, Check, Gate};
use super::upstream::Kind;
use super::AppState;

/// Longest wait for the cache database on a read before it goes to the site.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn read(state: &Arc<AppState>, call: &Call, env: &Envelope<'_>) -> Outcome {
    let (Some(auth), Some(key)) = (env.auth_map(), env.principal()) else {
        return to_site(state, call, None, Reason::Credentials).await;
    };
    if !state
        .policy
        .cache_for
        .as_ref()
        .is_none_or(|c| c.allows(auth))
    {
        return to_site(state, call, Some(&key), Reason::Principal).await;
    }
    let plan = match plan(state, env) {
        Ok(p) => p,
        Err(pt) => {
            tracing::debug!(reason = %pt, "read passed through");
            return to_site(state, call, Some(&key), pt.reason.into()).await;
        }
    };
    let recheck = match state.policy.trust.gate(&plan.classes) {
        Gate::Off => return to_site(state, call, Some(&key), Reason::TrustOff).await,
        Gate::Learn => return learn(state, call, &key, plan).await,
        Gate::Serve { recheck } => recheck,
    };
    let plan = Served { plan, recheck };
    let db = state.cache.db().expect("a plan implies a database");
    let verdict = state.upstream.auth.verdict(&key);
    let grace = verdict == Verdict::Grace;
    if verdict == Verdict::Fresh || (grace && !state.upstream.health.is_up()) {
        return cached(state, call, env, &key, db, plan).await;
    }
    // Not verified (recently enough): the request itself verifies the credentials.
    let answer = state
        .upstream
        .send(site_call(call, Kind::Read, Some(&key)))
        .await;
    if let Ok(a) = &answer {
        if !a.response.is_unavailable() {
            let wants_gzip = super::gzip::accepted(&call.headers);
            return Outcome::new(
                answer.unwrap().response.for_client(wants_gzip),
                Path::Site,
                Reason::VerifyAuth,
            );
        }
    }
    // The site did not answer. Grace only if the proxy's own probe (run by the upstream on
    // that failure) says it is down: this failure may be the client's own doing.
    if grace && !state.upstream.health.is_up() {
        return cached(state, call, env, &key, db, plan).await;
    }
    match answer {
        Ok(a) => {
            let wants_gzip = super::gzip::accepted(&call.headers);
            Outcome::new(
                a.response.for_client(wants_gzip),
                Path::Site,
                Reason::VerifyAuth,
            )
        }
        Err(failure) => failed(failure, Reason::VerifyAuth),
    }
}

/// Sends the read to the site as it came; its answer may show cached rows are stale
/// ([`super::stale_rows`]).
async fn to_site(
    state: &Arc<AppState>,
    call: &Call,
    key: Option<&CredentialKey>,
    reason: Reason,
) -> Outcome {
    forward_seen(state, call, key, reason, |resp| {
        super::stale_rows::observe(state, resp)
    })
    .await
}

/// The statement answering the read, or why the cache does not answer it; what was kept for
/// the same payload and catalog when there is one ([`super::plans`]).
fn plan(state: &AppState, env: &Envelope<'_>) -> Result<Arc<ReadPlan>, PassThrough> {
    let Some(db) = state.cache.db() else {
        return Err(sgcache::query::pass(
            query::Reason::Database,
            "no cache database",
        ));
    };
    if !state.cache.ok() {
        return Err(sgcache::query::pass(
            query::Reason::Database,
            "cache database unavailable",
        ));
    }
    if env.payload_text().len() > MAX_READ_PAYLOAD {
        return Err(sgcache::query::pass(
            query::Reason::Payload,
            "payload too large to plan",
        ));
    }
    let catalog = state.cache.catalog();
    if let Some(verdict) = state.cache.plans.get(env.payload_text(), &catalog) {
        return verdict;
    }
    let verdict = env
        .payload_value()
        .ok_or_else(|| sgcache::query::pass(query::Reason::Payload, "payload nested too deeply"))
        .and_then(|payload| {
            ReadRequest::parse(&payload)
                .map_err(|e| sgcache::query::pass(query::Reason::Payload, e.message))
        })
        .and_then(|read| plan_read_at(&read, &catalog, db.dialect(), state.upstream.clock.now()))
        .map(Arc::new);
    state
        .cache
        .plans
        .put(env.payload_text(), &catalog, &verdict);
    verdict
}

/// A plan the cache may answer, and whether its answer is also to be re-checked.
struct Served {
    plan: Arc<ReadPlan>,
    recheck: bool,
}

/// A read of a learning class: the site answers it, and the cache's answer is compared with
/// the site's in the background (see [`super::trust`]).
async fn learn(
    state: &Arc<AppState>,
    call: &Call,
    key: &CredentialKey,
    plan: Arc<ReadPlan>,
) -> Outcome {
    forward_seen(state, call, Some(key), Reason::TrustLearning, |resp| {
        super::stale_rows::observe(state, resp);
        let site = resp
            .status
            .is_success()
            .then(|| resp.json())
            .flatten()
            .and_then(trust::results_of);
        if let Some(site) = site {
            trust::spawn_check(state, check(call, &plan, Some(site), None));
        }
    })
    .await
}

fn check(call: &Call, plan: &ReadPlan, site: Option<Value>, cache: Option<Value>) -> Check {
    Check {
        plan: plan.clone(),
        path: call.path.clone(),
        headers: call.headers.clone(),
        body: call.body.clone(),
        site,
        cache,
    }
}

async fn cached(
    state: &Arc<AppState>,
    call: &Call,
    env: &Envelope<'_>,
    key: &CredentialKey,
    db: &Db,
    served: Served,
) -> Outcome {
    let plan = &served.plan;
    // Keyed by the payload only: every principal allowed here gets the same answer. Not kept
    // when it depends on the time (a relative-date window moves on without any change).
    let timeless = !plan.classes.iter().any(|c| c.is_relative_date());
    let kept_key =
        (state.cache.results.enabled() && timeless).then(|| env.payload_text().to_string());
    let wants_gzip = super::gzip::accepted(&call.headers);
    let hit = kept_key.as_deref().and_then(|k| state.cache.results.get(k));
    if hit.is_some() {
        state.telemetry.metrics.result_hits.inc();
    }
    let answer = match hit {
        Some(kept) => Ok(kept),
        None if timeless => {
            let payload = env.payload_text();
            run_shared(state, plan, db, payload, kept_key, wants_gzip).await
        }
        None => run_and_keep(state, plan, db, None, wants_gzip).await,
    };
    match answer {
        Ok(kept) => {
            maybe_verify(state, call, &kept.body);
            state
                .policy
                .trust
                .served(&plan.classes, &state.telemetry.metrics);
            if served.recheck {
                let cache = serde_json::from_slice(&kept.body)
                    .ok()
                    .and_then(trust::results_of);
                trust::spawn_check(state, check(call, plan, None, cache));
            }
            Outcome::new(kept_response(kept, wants_gzip), Path::Cache, Reason::None)
        }
        Err(pt) => {
            let mut reason = Reason::Query(pt.reason);
            if pt.reason == query::Reason::Database && state.cache.recheck().await {
                // The database answers the proxy's own probe: the statement was the problem.
                state.telemetry.metrics.read_statement_failures.inc();
                reason = Reason::Statement;
            }
            tracing::debug!(reason = %pt, "cached read fell back to the site");
            to_site(state, call, Some(key), reason).await
        }
    }
}

/// Re-runs a sampled cached read against the site in the background.
fn maybe_verify(state: &Arc<AppState>, call: &Call, body: &Bytes) {
    if state.policy.verify_sample_rate <= 0.0
        || rand::random::<f64>() >= state.policy.verify_sample_rate
    {
        return;
    }
    let results = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|mut v| v.get_mut("results").map(Value::take))
        .unwrap_or(Value::Null);
    let check = super::verify::verify(
        state.clone(),
        call.path.clone(),
        call.headers.clone(),
        call.body.clone(),
        results,
    );
    // Within the trust checks' bounded slots: never more at once than they allow.
    if !super::trust::spawn_site_task(state, check) {
        state.telemetry.metrics.verified("skipped");
    }
}

/// A kept or fresh answer; gzipped already when kept so (the compression layer leaves
/// answers with an encoding alone).
fn kept_response(kept: Kept, wants_gzip: bool) -> axum::response::Response {
    if let Some(gz) = kept.gz.filter(|_| wants_gzip) {
        return (
            [
                (header::CONTENT_TYPE, "application/json; charset=utf-8"),
                (header::CONTENT_ENCODING, "gzip"),
                (header::VARY, "accept-encoding"),
            ],
            gz,
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        kept.body,
    )
        .into_response()
}

/// Runs a cached read's statement, or joins the identical one in flight: after a change
/// drops a kept answer, a crowd waiting for it runs one statement. Keyed by the payload
/// (every principal allowed here gets the same answer, see [`cached`]) and the result
/// cache's generation, so no read joins a statement that began before a change it could
/// have seen (its own write through the proxy included). Not for reads whose answer depends
/// on the time.
async fn run_shared(
    state: &Arc<AppState>,
    plan: &Arc<ReadPlan>,
    db: &Db,
    payload: &str,
    kept_key: Option<String>,
    wants_gzip: bool,
) -> Result<Kept, PassThrough> {
    let mut h = Sha256::new();
    h.update(b"cache\0");
    h.update(state.cache.results.generation().to_le_bytes());
    h.update(payload.as_bytes());
    let key = h.finalize().into();
    let (state2, plan2, db2) = (state.clone(), plan.clone(), db.clone());
    let (result, shared) = state
        .cache
        .statements
        .run(key, move || async move {
            run_and_keep(&state2, &plan2, &db2, kept_key, wants_gzip).await
        })
        .await;
    if shared {
        state.telemetry.metrics.upstream.coalesced("cache");
    }
    result.unwrap_or_else(|_| {
        state.telemetry.metrics.upstream.panics.inc();
        Err(sgcache::query::pass(
            query::Reason::Database,
            "the cached read's statement failed (panic)",
        ))
    })
}

/// Runs a cached read's statement and keeps the answer in memory when it can be kept.
async fn run_and_keep(
    state: &AppState,
    plan: &ReadPlan,
    db: &Db,
    kept_key: Option<String>,
    wants_gzip: bool,
) -> Result<Kept, PassThrough> {
    // Read before the query: a change while it runs must keep its answer from being kept.
    let at = kept_key.as_ref().and_then(|_| {
        let tables = answer_cache::quoted_identifiers(&plan.sql.text);
        state.cache.results.snapshot(tables)
    });
    // The answer's JSON text is written straight from the rows (no intermediate value).
    // Bounded: over a dead connection a query may never return, and the site can answer.
    let body = tokio::time::timeout(READ_TIMEOUT, plan.run_response(db))
        .await
        .map_err(|_| {
            tracing::warn!(timeout = ?READ_TIMEOUT, "cached read timed out; passing through");
            sgcache::query::pass(
                query::Reason::Database,
                "the cache database did not answer in time",
            )
        })??;
    let body = Bytes::from(body);
    // Gzipped here rather than by the compression layer, kept or not (see `gzip`).
    let gz = wants_gzip.then(|| super::gzip::gzip(&body)).flatten();
    if let (Some(key), Some(at)) = (kept_key, at) {
        state.cache.results.put(key, at, body.clone(), gz.clone());
    }
    Ok(Kept { body, gz })
}
