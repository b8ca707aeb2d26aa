//! Earned trust: reads whose shape relies on an inferred semantic (a [`TrustClass`]) are
//! answered from the cache only once the class has proven itself against the site.
//!
//! * **learning**: the read goes to the site, as it would without a cache; in the background
//!   the cache answers the same read and the two answers are compared (no extra site request).
//!   `trust.samples` identical answers, order included, make the class trusted.
//! * **trusted**: the read is answered from the cache; `trust.recheckRate` of them are re-run
//!   against the site in the background, since a difference may show only with some data.
//! * **off**: a difference was confirmed; the reads go to the site until a person resets the
//!   class (`sgcache-worker trust reset`).
//!
//! A difference may come from the cache being a moment behind the site rather than from the
//! semantics, so it is confirmed before it counts: after `confirm_delay` (time for the event
//! follower to catch up) both answers are taken again, twice; only a difference every time
//! turns the class off. One confirmation runs per class at a time, and while it runs the
//! class's matches are not counted (they could otherwise make it trusted just before the
//! difference is confirmed).
//!
//! Bounds, so that learning is never starved: learning checks (the site's answer in hand, one
//! cache query each) have their own slots and queue, and never wait behind checks that ask
//! the site.
//! Checks that send a request to the site (re-checks, confirmations, and the sampled
//! verification of `verifySampleRate`, see [`spawn_site_task`]) share other slots, held only
//! while they run, never while a confirmation sleeps. The requests trust checks add are
//! limited to `trust.maxSiteRate` per second, a token taken only when a request is sent. A
//! check without a slot or budget is dropped (counted per class and reason), never queued.
//! The states live in the cache database (`_sgcache_trust`), so replicas share them and a
//! restart keeps them; pins in the spec override them.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::Value;
use sgcache::api3::is_error_body;
use sgcache::query::ReadPlan;
use sgcache::spec::{TrustPin, TrustSpec};
use sgcache::sql::Db;
use sgcache::storage::{self, TrustProgress, TrustRecord, TrustState};
use sgcache::trust::TrustClass;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use super::upstream::{Kind, SiteCall};
use super::AppState;

/// The event log's entity type (its reads are answered from the kept log).
const EVENT_LOG: &str = sgcache::query::event_log::ENTITY_TYPE;

/// Learning checks running at once (one cache query each; more would only queue for the
/// database's connections).
const MAX_LEARNING_CHECKS: usize = 8;

/// Learning checks waiting for one of those slots (each holds the site's answer); past it a
/// learning read is not sampled (counted `busy`).
const MAX_QUEUED_LEARNING_CHECKS: usize = 256;

/// Checks sending a request to the site at once (re-checks, confirmations, sampled
/// verifications); a slot is held only while the check runs.
const MAX_SITE_CHECKS: usize = 4;

/// Comparisons a difference must survive before it turns a class off.
const CONFIRMATIONS: u32 = 2;

/// Why a check was not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Every slot of its kind was taken on this replica.
    Busy,
    /// The site budget (`trust.maxSiteRate`) was spent.
    Budget,
}

impl Skip {
    pub fn label(self) -> &'static str {
        match self {
            Skip::Busy => "busy",
            Skip::Budget => "site_budget",
        }
    }
}

/// The proxy's trust settings (`spec.trust`).
#[derive(Clone, Debug)]
pub struct TrustConfig {
    pub samples: u32,
    pub max_site_rate: f64,
    pub recheck_rate: f64,
    pub pins: BTreeMap<TrustClass, TrustPin>,
    /// Wait before a difference is compared again.
    pub confirm_delay: Duration,
}

impl TrustConfig {
    pub fn from_spec(spec: &TrustSpec) -> Self {
        TrustConfig {
            samples: spec.samples,
            max_site_rate: spec.max_site_rate,
            recheck_rate: spec.recheck_rate,
            // The spec was validated: every key names a class.
            pins: spec
                .classes
                .iter()
                .filter_map(|(k, p)| Some((k.parse().ok()?, *p)))
                .collect(),
            confirm_delay: Duration::from_secs(3),
        }
    }

    /// Every class pinned `on`: reads are answered as if every class were proven (tests of
    /// the answers themselves, which compare with the site on their own).
    pub fn all_on() -> Self {
        TrustConfig {
            pins: TrustClass::ALL.iter().map(|c| (*c, TrustPin::On)).collect(),
            ..TrustConfig::from_spec(&TrustSpec::default())
        }
    }
}

/// What the proxy does with a read that relies on some classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Answer from the cache; `recheck`: also compare with the site in the background.
    Serve { recheck: bool },
    /// Send to the site and compare its answer with the cache's.
    Learn,
    /// Send to the site.
    Off,
}

/// Requests per second the checks may add to the site.
struct Budget {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Budget {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let burst = self.rate.max(1.0);
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(burst);
        self.at = now;
        if self.rate > 0.0 && self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub struct Trust {
    config: TrustConfig,
    records: RwLock<BTreeMap<TrustClass, TrustRecord>>,
    /// When this replica turned a class off (unix ms). A refresh that read the database just
    /// before the difference was recorded must not turn it back on; a reset recorded after
    /// it (a later `changed_ms`) does.
    turned_off: Mutex<BTreeMap<TrustClass, i64>>,
    /// What this replica saw per class since the last flush to the database.
    progress: Mutex<BTreeMap<TrustClass, TrustProgress>>,
    budget: Mutex<Budget>,
    /// Slots of learning checks, and places in the queue for them.
    learning: Arc<Semaphore>,
    learning_queue: Arc<Semaphore>,
    /// Slots of checks that ask the site.
    site_checks: Arc<Semaphore>,
    /// Classes with a confirmation under way.
    confirming: Mutex<BTreeSet<TrustClass>>,
}

impl Trust {
    pub fn new(config: TrustConfig) -> Trust {
        Trust {
            budget: Mutex::new(Budget {
                rate: config.max_site_rate,
                tokens: config.max_site_rate.min(1.0),
                at: Instant::now(),
            }),
            config,
            records: RwLock::new(BTreeMap::new()),
            turned_off: Mutex::new(BTreeMap::new()),
            progress: Mutex::new(BTreeMap::new()),
            learning: Arc::new(Semaphore::new(MAX_LEARNING_CHECKS)),
            learning_queue: Arc::new(Semaphore::new(MAX_QUEUED_LEARNING_CHECKS)),
            site_checks: Arc::new(Semaphore::new(MAX_SITE_CHECKS)),
            confirming: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn config(&self) -> &TrustConfig {
        &self.config
    }

    /// A class's state as the proxy acts on it (pins first).
    pub fn state(&self, class: TrustClass) -> (TrustState, Option<TrustPin>) {
        let pin = self.config.pins.get(&class).copied();
        let state = match pin {
            Some(TrustPin::On) => TrustState::Trusted,
            Some(TrustPin::Off) => TrustState::Off,
            None => self.record(class).state,
        };
        (state, pin)
    }

    fn record(&self, class: TrustClass) -> TrustRecord {
        let mut r = self
            .records
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&class)
            .cloned()
            .unwrap_or_default();
        let off_at = self
            .turned_off
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&class)
            .copied();
        if off_at.is_some_and(|at| r.changed_ms.unwrap_or(0) < at) {
            r.state = TrustState::Off;
        }
        r
    }

    /// Whether every class of `classes` is in `state`.
    fn state_of_all(&self, classes: &[TrustClass], state: TrustState) -> bool {
        classes.iter().all(|c| self.state(*c).0 == state)
    }

    /// How to answer a read relying on `classes`.
    pub fn gate<'a>(&self, classes: impl IntoIterator<Item = &'a TrustClass>) -> Gate {
        let (mut learning, mut proven) = (false, false);
        for c in classes {
            match self.state(*c) {
                (TrustState::Off, _) => return Gate::Off,
                (TrustState::Learning, _) => learning = true,
                (TrustState::Trusted, None) => proven = true,
                (TrustState::Trusted, Some(_)) => {}
            }
        }
        if learning {
            return Gate::Learn;
        }
        // The budget is taken when the re-check sends its request, not here.
        let recheck = proven
            && self.config.recheck_rate > 0.0
            && rand::random::<f64>() < self.config.recheck_rate;
        Gate::Serve { recheck }
    }

    /// A slot for a check that asks the site, and a token of the site budget, taken in that
    /// order (a token is never spent on a check that cannot run).
    fn site_slot(&self) -> Result<OwnedSemaphorePermit, Skip> {
        let permit = self
            .site_checks
            .clone()
            .try_acquire_owned()
            .map_err(|_| Skip::Busy)?;
        if !self.budget.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Err(Skip::Budget);
        }
        Ok(permit)
    }

    fn note<'a>(
        &self,
        classes: impl IntoIterator<Item = &'a TrustClass>,
        f: impl Fn(&mut TrustProgress),
    ) {
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        for c in classes {
            f(progress.entry(*c).or_default());
        }
    }

    /// Counts a read answered from the cache for each of its classes.
    pub fn served<'a>(
        &self,
        classes: impl IntoIterator<Item = &'a TrustClass> + Clone,
        metrics: &super::metrics::Metrics,
    ) {
        self.note(classes.clone(), |p| p.served += 1);
        for c in classes {
            metrics.trust.served(*c);
        }
    }

    /// Counts a check of `classes` not run, and why.
    fn skipped(
        &self,
        classes: &BTreeSet<TrustClass>,
        why: Skip,
        metrics: &super::metrics::Metrics,
    ) {
        self.note(classes, |p| match why {
            Skip::Busy => p.skipped_busy += 1,
            Skip::Budget => p.skipped_budget += 1,
        });
        metrics.trust.checked(classes, "skipped");
        metrics.trust.skipped(classes, why.label());
    }

    /// A check of `classes` ended with `outcome`.
    fn ended(
        &self,
        classes: &BTreeSet<TrustClass>,
        outcome: &str,
        metrics: &super::metrics::Metrics,
    ) {
        let now = chrono::Utc::now().timestamp_millis();
        self.note(classes, |p| p.last_check_ms = Some(now));
        metrics.trust.checked(classes, outcome);
    }

    /// Marks `classes` as being confirmed; false when one of them already is (one
    /// confirmation per class at a time, so they do not spend the budget on each other).
    fn start_confirming(&self, classes: &[TrustClass]) -> bool {
        let mut busy = self.confirming.lock().unwrap_or_else(|e| e.into_inner());
        if classes.iter().any(|c| busy.contains(c)) {
            return false;
        }
        busy.extend(classes.iter().copied());
        true
    }

    /// Of `classes`, those without a difference under confirmation: a match says nothing
    /// while a difference of the same class may yet be confirmed, and counting it could make
    /// the class trusted (its reads answered from the cache) just before it is turned off.
    fn not_confirming(&self, classes: &[TrustClass]) -> Vec<TrustClass> {
        let busy = self.confirming.lock().unwrap_or_else(|e| e.into_inner());
        classes
            .iter()
            .copied()
            .filter(|c| !busy.contains(c))
            .collect()
    }

    fn stop_confirming(&self, classes: &[TrustClass]) {
        let mut busy = self.confirming.lock().unwrap_or_else(|e| e.into_inner());
        for c in classes {
            busy.remove(c);
        }
    }

    fn set_state(&self, class: TrustClass, state: TrustState) {
        if state == TrustState::Off {
            let now = chrono::Utc::now().timestamp_millis();
            let mut off = self.turned_off.lock().unwrap_or_else(|e| e.into_inner());
            off.insert(class, now);
        }
        let mut records = self.records.write().unwrap_or_else(|e| e.into_inner());
        records.entry(class).or_default().state = state;
    }

    /// Flushes the served counts and re-reads every class's state (other replicas' checks
    /// and a person's resets show here).
    pub async fn refresh(&self, db: &Db, metrics: &super::metrics::Metrics) {
        let progress: Vec<(TrustClass, TrustProgress)> =
            std::mem::take(&mut *self.progress.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .collect();
        if let Err(e) = storage::add_progress(db, &progress).await {
            tracing::warn!(error = %e, "could not record the trust classes' progress");
            let mut kept = self.progress.lock().unwrap_or_else(|e| e.into_inner());
            for (c, p) in progress {
                let k = kept.entry(c).or_default();
                k.served += p.served;
                k.skipped_busy += p.skipped_busy;
                k.skipped_budget += p.skipped_budget;
                k.last_check_ms = k.last_check_ms.max(p.last_check_ms);
            }
        }
        match storage::read_trust(db).await {
            Ok(records) => {
                *self.records.write().unwrap_or_else(|e| e.into_inner()) = records;
            }
            Err(e) => tracing::warn!(error = %e, "could not read the trust classes"),
        }
        for c in TrustClass::ALL {
            let (state, _) = self.state(c);
            let r = self.record(c);
            metrics.trust.set(c, state, r.samples);
        }
    }
}

/// One comparison of a read's answers, run in the background.
pub struct Check {
    pub plan: ReadPlan,
    /// The request as the client sent it (re-sent for re-checks and confirmations).
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The site's `results`, when the read went to the site.
    pub site: Option<Value>,
    /// The cache's `results`, when the read was answered from the cache.
    pub cache: Option<Value>,
}

/// Starts a check in the background, unless its slots (or, for a re-check, the site budget)
/// are spent: a learning check takes a learning slot (the site's answer is in hand), a
/// re-check a site slot and a token.
pub fn spawn_check(state: &Arc<AppState>, check: Check) {
    let trust = &state.policy.trust;
    if check.site.is_some() {
        // A learning check waits its turn among the learning checks only.
        let Ok(place) = trust.learning_queue.clone().try_acquire_owned() else {
            trust.skipped(&check.plan.classes, Skip::Busy, &state.telemetry.metrics);
            return;
        };
        let (state, slots) = (state.clone(), trust.learning.clone());
        let task = async move {
            let Ok(permit) = slots.acquire_owned().await else {
                return;
            };
            drop(place);
            run_check(&state, check, permit).await
        };
        tokio::spawn(task.instrument(tracing::Span::current()));
        return;
    }
    let permit = match trust.site_slot() {
        Ok(p) => p,
        Err(why) => {
            trust.skipped(&check.plan.classes, why, &state.telemetry.metrics);
            return;
        }
    };
    let state = state.clone();
    let task = async move { run_check(&state, check, permit).await };
    tokio::spawn(task.instrument(tracing::Span::current()));
}

/// Runs `task`, a background request to the site (a sampled verification), in one of the
/// site-check slots; false (and nothing run) when every slot is taken.
pub fn spawn_site_task<F>(state: &AppState, task: F) -> bool
where
    F: Future<Output = ()> + Send + 'static,
{
    let Ok(permit) = state.policy.trust.site_checks.clone().try_acquire_owned() else {
        return false;
    };
    tokio::spawn(
        async move {
            task.await;
            drop(permit);
        }
        .instrument(tracing::Span::current()),
    );
    true
}

/// The classes a check speaks for: pinned ones need no proof and are never turned off.
fn unpinned(state: &AppState, plan: &ReadPlan) -> Vec<TrustClass> {
    plan.classes
        .iter()
        .copied()
        .filter(|c| !state.policy.trust.config.pins.contains_key(c))
        .collect()
}

/// How one comparison came out.
enum Compared {
    Same,
    Different(Value, Value),
    /// The site or the cache gave no answer.
    Missing,
}

/// Takes the answers a check lacks (the site's with `permit`'s slot already held) and
/// compares them; the slot is released before the comparison's outcome is acted on.
async fn compare(
    state: &AppState,
    db: &Db,
    check: &Check,
    site: Option<Value>,
    cache: Option<Value>,
    permit: OwnedSemaphorePermit,
) -> Compared {
    let site = match site {
        Some(v) => Some(v),
        None => site_results(state, check).await,
    };
    let cache = match cache {
        Some(v) => Some(v),
        None => cache_results(db, &check.plan).await,
    };
    drop(permit);
    let (site, cache) = match (site, cache) {
        (Some(s), Some(c)) if check.plan.entity_type() == EVENT_LOG => {
            let (s, c) = event_log_common(s, c);
            (Some(s), Some(c))
        }
        other => other,
    };
    match (site, cache) {
        (Some(s), Some(c)) if s == c => Compared::Same,
        (Some(s), Some(c)) => Compared::Different(c, s),
        _ => Compared::Missing,
    }
}

/// The event log answered from the cache is by design the log up to the follower's
/// contiguous position, while the site's answer to the same poll also holds the events
/// committed since: their completeness and order come from that window (docs/storage.md), not
/// from a class. What a check proves for the event log is how the records both answers hold
/// render (link names above all), so only those are compared.
fn event_log_common(site: Value, cache: Value) -> (Value, Value) {
    let ids = |v: &Value| -> std::collections::BTreeSet<i64> {
        v["entities"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["id"].as_i64())
            .collect()
    };
    let both: std::collections::BTreeSet<i64> =
        ids(&site).intersection(&ids(&cache)).copied().collect();
    let keep = |v: Value| -> Value {
        let entities: Vec<Value> = v["entities"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["id"].as_i64().is_some_and(|id| both.contains(&id)))
            .cloned()
            .collect();
        serde_json::json!({ "entities": entities })
    };
    (keep(site), keep(cache))
}

async fn run_check(state: &Arc<AppState>, check: Check, permit: OwnedSemaphorePermit) {
    let classes = unpinned(state, &check.plan);
    let Some(db) = state.cache.db() else { return };
    if classes.is_empty() {
        return;
    }
    let all = &check.plan.classes;
    let metrics = &state.telemetry.metrics;
    let first = compare(
        state,
        db,
        &check,
        check.site.clone(),
        check.cache.clone(),
        permit,
    )
    .await;
    let (cache, site) = match first {
        Compared::Same => {
            let counted = state.policy.trust.not_confirming(&classes);
            matched(state, db, &counted).await;
            let outcome = if counted.len() == classes.len() {
                "match"
            } else {
                "inconclusive"
            };
            state.policy.trust.ended(all, outcome, metrics);
            return;
        }
        Compared::Missing => return state.policy.trust.ended(all, "inconclusive", metrics),
        Compared::Different(c, s) => (c, s),
    };
    if !state.policy.trust.start_confirming(&classes) {
        // Another check is confirming one of these classes already.
        return state.policy.trust.ended(all, "inconclusive", metrics);
    }
    let outcome = confirm(state, db, &check, &classes).await;
    state.policy.trust.stop_confirming(&classes);
    match outcome {
        Ok(true) => {
            turn_off(state, db, &classes, &check.plan, &cache, &site).await;
            state.policy.trust.ended(all, "difference", metrics);
        }
        // It differed, then agreed: the cache was behind, not wrong.
        Ok(false) => state.policy.trust.ended(all, "inconclusive", metrics),
        Err(why) => state.policy.trust.skipped(all, why, metrics),
    }
}

/// Takes both answers again [`CONFIRMATIONS`] times, `confirm_delay` apart, holding no slot
/// while it waits: true when they differed every time.
async fn confirm(
    state: &AppState,
    db: &Db,
    check: &Check,
    classes: &[TrustClass],
) -> Result<bool, Skip> {
    for _ in 0..CONFIRMATIONS {
        tokio::time::sleep(state.policy.trust.config.confirm_delay).await;
        if state.policy.trust.state_of_all(classes, TrustState::Off) {
            return Ok(false); // another replica or check turned them off meanwhile
        }
        let permit = state.policy.trust.site_slot()?;
        match compare(state, db, check, None, None, permit).await {
            Compared::Different(..) => {}
            Compared::Same | Compared::Missing => return Ok(false),
        }
    }
    Ok(true)
}

async fn matched(state: &AppState, db: &Db, classes: &[TrustClass]) {
    for c in classes {
        match storage::record_match(db, *c, state.policy.trust.config.samples).await {
            Ok(now) => {
                if now == TrustState::Trusted
                    && state.policy.trust.record(*c).state == TrustState::Learning
                {
                    tracing::info!(class = %c, "trust class earned: its reads are now answered from the cache");
                }
                state.policy.trust.set_state(*c, now);
            }
            Err(e) => tracing::warn!(class = %c, error = %e, "could not record a trust check"),
        }
    }
}

async fn turn_off(
    state: &AppState,
    db: &Db,
    classes: &[TrustClass],
    plan: &ReadPlan,
    cache: &Value,
    site: &Value,
) {
    let diff = super::verify::difference(cache, site);
    let mut detail = format!("{}: ", plan.entity_type());
    if diff.fields.is_empty() {
        detail.push_str(if diff.ids.is_empty() {
            "order or paging"
        } else {
            "which entities match"
        });
    } else {
        detail.push_str(&diff.fields.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    for c in classes {
        tracing::warn!(
            class = %c,
            entity_type = plan.entity_type(),
            differs = %detail,
            "trust class turned off: the cache's answer differed from the site's; its reads go to the site until it is reset"
        );
        state.policy.trust.set_state(*c, TrustState::Off);
        if let Err(e) = storage::record_difference(db, *c, &detail).await {
            tracing::warn!(class = %c, error = %e, "could not record a trust difference");
        }
    }
}

/// The read re-run against the site: with the cache's own credentials when it has them (the
/// cache holds what its script sees), else with the client's.
async fn site_results(state: &AppState, check: &Check) -> Option<Value> {
    let body = match &state.policy.service_auth {
        Some(auth) => {
            let mut req: Value = serde_json::from_slice(&check.body).ok()?;
            *req.get_mut("params")?.get_mut(0)? = Value::Object(auth.clone());
            Bytes::from(req.to_string())
        }
        None => check.body.clone(),
    };
    state.telemetry.metrics.trust.site_requests.inc();
    let resp = send(state, &check.path, &check.headers, body).await?;
    if !resp.status.is_success() {
        return None;
    }
    results_of(resp.json()?)
}

/// The one way a check's request reaches the site.
async fn send(
    state: &AppState,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Option<super::site::SiteResponse> {
    let call = SiteCall {
        kind: Kind::Background,
        principal: None,
        path,
        headers,
        body,
    };
    Some(state.upstream.send(call).await.ok()?.response)
}

/// The `results` of a successful API3 answer.
pub fn results_of(mut answer: Value) -> Option<Value> {
    if is_error_body(&answer) {
        return None;
    }
    answer.get_mut("results").map(Value::take)
}

async fn cache_results(db: &Db, plan: &ReadPlan) -> Option<Value> {
    let body = plan.run_response(db).await.ok()?;
    results_of(serde_json::from_slice(&body).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_log_is_compared_on_the_records_both_answers_hold() {
        let e = |id: i64, name: &str| serde_json::json!({"id": id, "user": {"name": name}});
        // The site has committed event 7 since the follower's position; event 3 renders
        // the same in both.
        let site = serde_json::json!({"entities": [e(3, "a"), e(7, "b")], "paging_info": {}});
        let cache = serde_json::json!({"entities": [e(3, "a")], "paging_info": {}});
        let (s, c) = event_log_common(site, cache);
        assert_eq!(s, c);
        // A record both hold that renders differently still differs.
        let site = serde_json::json!({"entities": [e(3, "a"), e(7, "b")]});
        let cache = serde_json::json!({"entities": [e(3, "renamed")]});
        let (s, c) = event_log_common(site, cache);
        assert_ne!(s, c);
    }

    #[test]
    fn the_budget_refills_at_its_rate() {
        let mut b = Budget {
            rate: 2.0,
            tokens: 1.0,
            at: Instant::now(),
        };
        assert!(b.take());
        assert!(!b.take(), "one request, then the budget is spent");
        b.at -= Duration::from_secs(1);
        assert!(b.take() && b.take());
        assert!(!b.take(), "two per second, no more");
        let mut none = Budget {
            rate: 0.0,
            tokens: 0.0,
            at: Instant::now() - Duration::from_secs(100),
        };
        assert!(!none.take());
    }

    #[test]
    fn pins_override_the_recorded_state() {
        let mut config = TrustConfig::from_spec(&TrustSpec::default());
        config.pins.insert(TrustClass::SortText, TrustPin::On);
        config.pins.insert(TrustClass::InLast, TrustPin::Off);
        let trust = Trust::new(config);
        assert_eq!(trust.gate(&[]), Gate::Serve { recheck: false });
        assert_eq!(
            trust.gate(&[TrustClass::SortText]),
            Gate::Serve { recheck: false }
        );
        assert_eq!(trust.gate(&[TrustClass::SortList]), Gate::Learn);
        assert_eq!(
            trust.gate(&[TrustClass::SortText, TrustClass::InLast]),
            Gate::Off
        );
        trust.set_state(TrustClass::SortList, TrustState::Trusted);
        assert!(matches!(
            trust.gate(&[TrustClass::SortList]),
            Gate::Serve { .. }
        ));
        trust.set_state(TrustClass::SortList, TrustState::Off);
        assert_eq!(
            trust.gate(&[TrustClass::SortList, TrustClass::SortText]),
            Gate::Off
        );
    }

    #[test]
    fn a_refresh_older_than_a_local_difference_does_not_turn_the_class_back_on() {
        let trust = Trust::new(TrustConfig::from_spec(&TrustSpec::default()));
        let c = TrustClass::SortText;
        let stale = |state, changed_ms| TrustRecord {
            state,
            changed_ms: Some(changed_ms),
            ..Default::default()
        };
        let before = chrono::Utc::now().timestamp_millis() - 1_000;
        trust.set_state(c, TrustState::Off);
        // A refresh that read the database before the difference was written.
        *trust.records.write().unwrap() = BTreeMap::from([(c, stale(TrustState::Trusted, before))]);
        assert_eq!(trust.gate(&[c]), Gate::Off);
        // A person's reset, written after the difference, is taken.
        let after = chrono::Utc::now().timestamp_millis() + 1_000;
        *trust.records.write().unwrap() = BTreeMap::from([(c, stale(TrustState::Learning, after))]);
        assert_eq!(trust.gate(&[c]), Gate::Learn);
    }
}
