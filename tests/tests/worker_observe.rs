//! Every worker observable: the event follower's and the scanner's `/metrics`, `/healthz` and
//! `/readyz` (served by `sgcache_worker::observe` as the binary serves them), against the test
//! site and a real PostgreSQL. Each metric family moves with what the worker does; liveness
//! fails while a loop is stuck (a hung site, an event that cannot be applied) and recovers;
//! and every metric the chart's dashboard and alert rules name is exported by a running worker.

use crate::freshness_common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use freshness_common::*;
use serde_json::{json, Value};
use sgcache::ShotgunCacheSpec;
use sgcache_tests::worker::free_port;
use sgcache_worker::events::metrics::EventsMetrics;
use sgcache_worker::observe::{self, Probes};
use sgcache_worker::scanner::metrics::ScannerMetrics;
use sgcache_worker::scanner::ScannerArgs;
use tokio_util::sync::CancellationToken;

const WORKERS: &str = "  events:\n    pollInterval: 200ms\n    gapWindow: 30s\n  scanner:\n    interval: 1s\n    overlap: 5s\n    pageSize: 50";

/// The follower and the scanner running in-process, each serving its probes on a port of its
/// own, as `sgcache-worker events` / `scanner` do.
struct Workers {
    events: Arc<EventsMetrics>,
    scanner: Arc<ScannerMetrics>,
    events_url: String,
    scanner_url: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn serve(probes: Probes, stop: &CancellationToken) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(observe::server::serve(listener, probes, stop.clone()));
    (url, task)
}

async fn start_workers(spec: &ShotgunCacheSpec, stop: &CancellationToken) -> Workers {
    let events = Arc::new(EventsMetrics::for_spec(spec));
    let scanner = Arc::new(ScannerMetrics::for_spec(spec));
    let (events_url, t1) = serve(Probes::default().with(events.clone()), stop).await;
    let (scanner_url, t2) = serve(Probes::default().with(scanner.clone()), stop).await;
    let (s1, s2) = (spec.clone(), spec.clone());
    let (o1, o2) = (events.clone(), scanner.clone());
    let (c1, c2) = (stop.clone(), stop.clone());
    let t3 = tokio::spawn(async move {
        sgcache_worker::events::run_observed(&s1, c1, o1)
            .await
            .expect("events")
    });
    let t4 = tokio::spawn(async move {
        sgcache_worker::scanner::run_observed(&s2, ScannerArgs::default(), c2, o2)
            .await
            .expect("scanner")
    });
    Workers {
        events,
        scanner,
        events_url,
        scanner_url,
        tasks: vec![t1, t2, t3, t4],
    }
}

impl Workers {
    async fn stop(self, stop: &CancellationToken) {
        stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// GET `url` + `path`: status and body.
async fn get(url: &str, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("{url}{path}"))
        .await
        .expect("GET probe");
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Polls `url`'s `/healthz` every 100 ms until it answers `status`: that answer's body, or
/// None when it has not within `within`.
async fn healthz_until(url: &str, status: u16, within: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (got, body) = get(url, "/healthz").await;
        if got == status {
            return Some(body);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metrics(url: &str) -> String {
    let (status, body) = get(url, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.ends_with("# EOF\n"), "one OpenMetrics document");
    body
}

/// The value of the sample `name` carrying every label of `labels` (`k="v"`).
/// Rows the scanner read again for links, summed over every linked type.
fn relinked_rows(text: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with("sgcache_scanner_rows_fetched_total{") && l.contains("scan=\"links\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        (metric == name
            && labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
        .then(|| value.parse().ok())
        .flatten()
    })
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or_else(|| panic!("no sample {name} {labels:?} in:\n{text}"))
}

/// Waits until the metrics at `url` satisfy `check`.
async fn until_metrics(url: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..400 {
        last = metrics(url).await;
        if check(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: never true; last scrape:\n{last}");
}

async fn first_shot(env: &Env) -> i64 {
    let r = call(
        &env.writer,
        "read",
        json!({"type": "Shot", "filters": {"logical_operator": "and", "conditions": []},
        "return_fields": ["id"], "paging": {"entities_per_page": 1, "current_page": 1}}),
    )
    .await;
    r["entities"][0]["id"].as_i64().expect("a shot")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_and_scanner_metrics_move_with_their_work() {
    let mut env = Env::start("obs_families", 30, ENTITIES, WORKERS).await;
    // Site calls time out after 1 s: the follower's loop may be quiet for 3 s.
    env.spec.site.timeout = "1s".into();
    let stop = CancellationToken::new();
    let w = start_workers(&env.spec, &stop).await;
    assert_backfilled(&env).await;

    // Scanner: every type backfilled, its progress complete, its scan recorded.
    let s = until_metrics(&w.scanner_url, "backfill progress complete", |m| {
        sample(
            m,
            "sgcache_scanner_backfill_done_rows",
            &[("entity_type", "Shot")],
        )
        .is_some_and(|d| {
            d > 0.0
                && Some(d)
                    == sample(
                        m,
                        "sgcache_scanner_backfill_expected_rows",
                        &[("entity_type", "Shot")],
                    )
        }) && sample(
            m,
            "sgcache_scanner_pending_fields",
            &[("entity_type", "Shot")],
        ) == Some(0.0)
    })
    .await;
    let shots = value(
        &s,
        "sgcache_scanner_backfill_done_rows",
        &[("entity_type", "Shot")],
    );
    assert!(
        value(
            &s,
            "sgcache_scanner_rows_fetched_total",
            &[("entity_type", "Shot"), ("scan", "full")]
        ) >= shots
    );
    assert!(
        value(
            &s,
            "sgcache_scanner_rows_written_total",
            &[("entity_type", "Shot"), ("scan", "full")]
        ) > 0.0
    );
    let now = chrono::Utc::now().timestamp() as f64;
    let scanned = value(
        &s,
        "sgcache_scanner_last_success_timestamp_seconds",
        &[("entity_type", "Shot")],
    );
    assert!(
        (now - scanned).abs() < 120.0,
        "last scan at {scanned}, now {now}"
    );
    assert!(
        value(
            &s,
            "sgcache_scanner_last_scan_duration_seconds",
            &[("entity_type", "Shot")]
        ) > 0.0
    );
    assert_eq!(value(&s, "sgcache_scanner_leader", &[]), 1.0);
    assert_eq!(value(&s, "sgcache_scanner_failures_total", &[]), 0.0);
    assert!((now - value(&s, "sgcache_scanner_last_progress_timestamp_seconds", &[])).abs() < 30.0);

    // A write without an event reaches the cache through the next incremental scan.
    let shot = first_shot(&env).await;
    let incremental = |m: &str| {
        sample(
            m,
            "sgcache_scanner_rows_fetched_total",
            &[("entity_type", "Shot"), ("scan", "incremental")],
        )
        .unwrap_or(0.0)
    };
    let before = incremental(&metrics(&w.scanner_url).await);
    let links_before = relinked_rows(&metrics(&w.scanner_url).await);
    update(
        &env.silent,
        "Shot",
        shot,
        json!({"description": "scanned, no event"}),
    )
    .await;
    // ...and the rows the shot links to are read again (`scan="links"`).
    until_metrics(
        &w.scanner_url,
        "incremental scan counted the silent write and read its link targets again",
        |m| incremental(m) > before && relinked_rows(m) > links_before,
    )
    .await;

    // Follower: caught up, then an update moves the position and the applied counter.
    let e = until_metrics(&w.events_url, "follower caught up", |m| {
        sample(m, "sgcache_events_backlog_events", &[]) == Some(0.0)
            && sample(m, "sgcache_events_last_applied_event_id", &[]).is_some()
    })
    .await;
    let last = value(&e, "sgcache_events_last_applied_event_id", &[]);
    let changes = sample(&e, "sgcache_events_applied_total", &[("kind", "change")]).unwrap_or(0.0);
    assert_eq!(value(&e, "sgcache_events_leader", &[]), 1.0);
    assert_eq!(value(&e, "sgcache_events_lag_seconds", &[]), 0.0);
    update(
        &env.writer,
        "Shot",
        shot,
        json!({"sg_status_list": "fin", "description": "event"}),
    )
    .await;
    let e = until_metrics(&w.events_url, "the update applied", |m| {
        sample(m, "sgcache_events_last_applied_event_id", &[]).is_some_and(|v| v > last)
            && sample(m, "sgcache_events_applied_total", &[("kind", "change")])
                .is_some_and(|v| v >= changes + 2.0)
    })
    .await;
    let applied = value(&e, "sgcache_events_last_applied_event_id", &[]);
    assert!(value(&e, "sgcache_events_site_newest_event_id", &[]) >= applied);
    assert_eq!(value(&e, "sgcache_events_apply_failures_total", &[]), 0.0);
    let (status, body) = get(&w.events_url, "/readyz").await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (200, json!({"events": "leader"}))
    );
    let (status, body) = get(&w.scanner_url, "/readyz").await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (200, json!({"scanner": "leader"}))
    );

    // A stuck event: the Shot table is gone under the follower, so the batch holding a Shot
    // change fails again and again. Failures count, the lag grows, and /healthz fails once
    // the loop has made no progress for longer than its allowance; it all recovers once the
    // table is back.
    let allowed = w.events.heartbeat.allowed();
    assert_eq!(allowed, Duration::from_secs(3));
    let db = &env.db.db;
    let mut rename = db.sql();
    rename.push("ALTER TABLE \"shot\" RENAME TO \"shot_away\"");
    db.fetch_all(&rename).await.unwrap();
    update(&env.writer, "Shot", shot, json!({"description": "stuck"})).await;
    let e = until_metrics(&w.events_url, "failures counted", |m| {
        sample(m, "sgcache_events_apply_failures_total", &[]).is_some_and(|v| v >= 2.0)
    })
    .await;
    assert_eq!(
        value(&e, "sgcache_events_last_applied_event_id", &[]),
        applied
    );
    assert!(value(&e, "sgcache_events_backlog_events", &[]) >= 1.0);
    tokio::time::sleep(allowed + Duration::from_millis(500)).await;
    let (status, body) = get(&w.events_url, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("events: stuck"), "{body}");
    assert!(
        value(
            &metrics(&w.events_url).await,
            "sgcache_events_lag_seconds",
            &[]
        ) >= allowed.as_secs_f64()
    );
    let mut back = db.sql();
    back.push("ALTER TABLE \"shot_away\" RENAME TO \"shot\"");
    db.fetch_all(&back).await.unwrap();
    until_metrics(&w.events_url, "the stuck event applied", |m| {
        sample(m, "sgcache_events_last_applied_event_id", &[]).is_some_and(|v| v > applied)
            && sample(m, "sgcache_events_lag_seconds", &[]) == Some(0.0)
    })
    .await;
    let (status, body) = get(&w.events_url, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    // The scanner may have failed on the missing table meanwhile, for less than its allowance.
    let (status, body) = get(&w.scanner_url, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(compare(&env).await.is_empty());

    // Schema checks: each incremental round compares the cached fields with the site's
    // schema. A cached field deleted on the site is drift.
    let checks = |m: &str, outcome: &str| {
        sample(
            m,
            "sgcache_scanner_schema_checks_total",
            &[("outcome", outcome)],
        )
        .unwrap_or(0.0)
    };
    let s = until_metrics(&w.scanner_url, "schema checked", |m| {
        checks(m, "unchanged") > 0.0
    })
    .await;
    assert_eq!(checks(&s, "changed"), 0.0);
    assert_eq!(
        value(
            &s,
            "sgcache_scanner_schema_drift_fields",
            &[("entity_type", "Shot")]
        ),
        0.0
    );
    call(
        &env.writer,
        "schema_field_delete",
        json!({"type": "Shot", "field_name": "sg_cut_in"}),
    )
    .await;
    until_metrics(&w.scanner_url, "the deleted field seen as drift", |m| {
        checks(m, "changed") > 0.0
            && sample(
                m,
                "sgcache_scanner_schema_drift_fields",
                &[("entity_type", "Shot")],
            ) == Some(1.0)
    })
    .await;
    w.stop(&stop).await;
    env.stop().await;
}

/// A failure count an earlier follower process saved (before a restart or a script-key
/// rotation) is cleared by the next process's first successful poll: the chart's
/// `SgcacheFollowerFailing` alert does not fire forever over a follower that is caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_count_left_by_an_earlier_process_is_cleared_by_the_next() {
    let env = Env::start("obs_old_failures", 10, ENTITIES, WORKERS).await;
    let db = &env.db.db;
    // The earlier process: its follower's state row exists, then it stops having failed.
    let first = CancellationToken::new();
    let w = start_workers(&env.spec, &first).await;
    assert_backfilled(&env).await;
    w.stop(&first).await;
    sgcache::storage::record_follower_failures(db, 6, Some("the old script key was refused"))
        .await
        .unwrap();
    let saved = sgcache::storage::read_freshness(db).await.unwrap();
    assert_eq!(saved.follower_failures, 6);
    let stop = CancellationToken::new();
    let w = start_workers(&env.spec, &stop).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = sgcache::storage::read_freshness(db).await.unwrap();
        if now.follower_failures == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the saved count stays {} while the new process polls",
            now.follower_failures
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    w.stop(&stop).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_fails_while_the_site_hangs_and_recovers_after() {
    let mut env = Env::start("obs_liveness", 10, ENTITIES, WORKERS).await;
    // Site calls time out after 1 s: the follower's loop may be quiet for 3 s (3 × 1 s, more
    // than 10 × its 200 ms poll interval).
    env.spec.site.timeout = "1s".into();
    let stop = CancellationToken::new();
    let w = start_workers(&env.spec, &stop).await;
    assert_eq!(w.events.heartbeat.allowed(), Duration::from_secs(3));
    assert_backfilled(&env).await;
    let (status, body) = get(&w.events_url, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("events: ok"), "{body}");

    // Every answer now takes 2 s, longer than the 1 s timeout: the follower's poll retries
    // forever and never completes.
    env.sim.set_faults(
        env.sim
            .faults()
            .merged(&json!({"latency_ms": 2000}))
            .unwrap(),
    );
    let body = healthz_until(&w.events_url, 503, Duration::from_secs(20))
        .await
        .expect("/healthz never failed while the site hung");
    assert!(body.contains("events: stuck: no progress for"), "{body}");
    assert!(
        w.events.heartbeat.quiet() > Duration::from_secs(3),
        "failed only past the allowance"
    );
    // Still the leader: readiness tells the role, liveness tells progress.
    let (status, body) = get(&w.events_url, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"events":"leader"}"#));

    env.sim
        .set_faults(env.sim.faults().merged(&json!({"latency_ms": 0})).unwrap());
    let healthy = healthz_until(&w.events_url, 200, Duration::from_secs(30)).await;
    assert!(
        healthy.is_some(),
        "/healthz never recovered after the site came back"
    );
    // And the follower works again: a write reaches the cache.
    let shot = first_shot(&env).await;
    update(
        &env.writer,
        "Shot",
        shot,
        json!({"description": "after the hang"}),
    )
    .await;
    assert!(eventually(Duration::from_secs(20), || async {
        cached(&env, "Shot", shot)
            .await
            .is_some_and(|(_, r)| r["description"] == "after the hang")
    })
    .await
    .is_some());
    w.stop(&stop).await;
    env.stop().await;
}

/// The scanner's liveness fails when every scan fails (here: the whole site answers 503), not
/// only when a call hangs, and it recovers by itself; a write no event announces is then
/// scanned in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanner_liveness_fails_while_every_scan_fails_and_recovers_after() {
    let workers = "  events:\n    pollInterval: 200ms\n    gapWindow: 30s\n  scanner:\n    interval: 200ms\n    overlap: 5s\n    pageSize: 50";
    let mut env = Env::start("obs_scan_liveness", 10, ENTITIES, workers).await;
    // Quiet for at most max(10 × 200 ms, 3 × 1 s) = 3 s.
    env.spec.site.timeout = "1s".into();
    let stop = CancellationToken::new();
    let w = start_workers(&env.spec, &stop).await;
    assert_eq!(w.scanner.heartbeat.allowed(), Duration::from_secs(3));
    assert_backfilled(&env).await;
    let (status, body) = get(&w.scanner_url, "/healthz").await;
    assert_eq!(status, 200, "{body}");

    env.sim
        .set_faults(env.sim.faults().merged(&json!({"down": true})).unwrap());
    let body = healthz_until(&w.scanner_url, 503, Duration::from_secs(15))
        .await
        .expect("the scanner's /healthz never failed while every scan failed");
    assert!(body.contains("scanner: stuck: no progress for"), "{body}");
    assert!(
        w.scanner.heartbeat.quiet() > w.scanner.heartbeat.allowed(),
        "failed only past the allowance"
    );
    // Still the leader: readiness tells the role, liveness tells progress.
    let (status, body) = get(&w.scanner_url, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"scanner":"leader"}"#));

    env.sim
        .set_faults(env.sim.faults().merged(&json!({"down": false})).unwrap());
    // Back within the longest backoff (10 s) and one round.
    let healthy = healthz_until(&w.scanner_url, 200, Duration::from_secs(30)).await;
    assert!(
        healthy.is_some(),
        "/healthz never recovered after the site came back"
    );
    // Every round now fails at its start (the field list is gone from the database): the
    // failures are counted, and liveness fails again, past the allowance, until it is back.
    let db = &env.db.db;
    let failed_before = value(
        &metrics(&w.scanner_url).await,
        "sgcache_scanner_failures_total",
        &[],
    );
    let mut away = db.sql();
    away.push("ALTER TABLE \"_sgcache_fields\" RENAME TO \"_sgcache_fields_away\"");
    db.fetch_all(&away).await.unwrap();
    let failing = healthz_until(&w.scanner_url, 503, Duration::from_secs(30)).await;
    let failed = value(
        &metrics(&w.scanner_url).await,
        "sgcache_scanner_failures_total",
        &[],
    );
    let mut back = db.sql();
    back.push("ALTER TABLE \"_sgcache_fields_away\" RENAME TO \"_sgcache_fields\"");
    db.fetch_all(&back).await.unwrap();
    assert!(
        failing.is_some(),
        "/healthz never failed while every round failed"
    );
    assert!(
        failed >= failed_before + 2.0,
        "{failed_before} -> {failed} failed rounds counted"
    );
    let healthy = healthz_until(&w.scanner_url, 200, Duration::from_secs(30)).await;
    assert!(
        healthy.is_some(),
        "/healthz never recovered after the database did"
    );
    let shot = first_shot(&env).await;
    update(
        &env.silent,
        "Shot",
        shot,
        json!({"description": "scanned in"}),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            cached(&env, "Shot", shot)
                .await
                .is_some_and(|(_, r)| r["description"] == "scanned in")
        })
        .await
        .is_some(),
        "a write without an event was not scanned in after the outage"
    );
    w.stop(&stop).await;
    env.stop().await;
}

/// Metric names an expression selects.
fn metric_names(expr: &promql_parser::parser::Expr, out: &mut BTreeSet<String>) {
    use promql_parser::parser::Expr;
    match expr {
        Expr::Aggregate(a) => {
            metric_names(&a.expr, out);
            if let Some(p) = &a.param {
                metric_names(p, out);
            }
        }
        Expr::Unary(u) => metric_names(&u.expr, out),
        Expr::Binary(b) => {
            metric_names(&b.lhs, out);
            metric_names(&b.rhs, out);
        }
        Expr::Paren(p) => metric_names(&p.expr, out),
        Expr::Subquery(s) => metric_names(&s.expr, out),
        Expr::VectorSelector(v) => out.extend(v.name.clone()),
        Expr::MatrixSelector(m) => out.extend(m.vs.name.clone()),
        Expr::Call(c) => c.args.args.iter().for_each(|a| metric_names(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// Grafana's variables as PromQL can read them.
fn without_grafana_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$namespace", ".*")
}

/// True when `text` (OpenMetrics) exports `name`: a sample of it, or a family whose samples
/// are so named (counters `_total`, histograms `_bucket`/`_sum`/`_count`) though none was
/// recorded yet.
fn exported(text: &str, name: &str) -> bool {
    let sampled = text
        .lines()
        .any(|l| !l.starts_with('#') && l.split(['{', ' ']).next() == Some(name));
    sampled
        || text.lines().any(|l| {
            let Some(decl) = l.strip_prefix("# TYPE ") else {
                return false;
            };
            let mut parts = decl.split(' ');
            let (Some(family), Some(kind)) = (parts.next(), parts.next()) else {
                return false;
            };
            match kind {
                "counter" => name == format!("{family}_total"),
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name == format!("{family}{s}")),
                _ => name == family,
            }
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_dashboard_and_alerts_name_only_metrics_the_workers_export() {
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/sgcache-operator/files");
    let mut names = BTreeSet::new();
    // Every alert expression parses.
    let rules: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(root.join("alerts.yaml")).unwrap())
            .unwrap();
    let mut alerts = 0;
    for group in rules["groups"].as_array().expect("rule groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let expr = rule["expr"].as_str().expect("an expr");
            let parsed = promql_parser::parser::parse(expr)
                .unwrap_or_else(|e| panic!("alert {}: {e}\n{expr}", rule["alert"]));
            metric_names(&parsed, &mut names);
            alerts += 1;
        }
    }
    assert!(
        alerts >= 7,
        "follower stuck, lag, backfill, verification, site, hit ratio, no leader"
    );
    // Every dashboard target parses.
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("dashboard.json")).unwrap())
            .unwrap();
    let mut targets = 0;
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            let expr = without_grafana_variables(t["expr"].as_str().expect("an expr"));
            let parsed = promql_parser::parser::parse(&expr)
                .unwrap_or_else(|e| panic!("panel {}: {e}\n{expr}", panel["title"]));
            metric_names(&parsed, &mut names);
            targets += 1;
        }
    }
    assert!(targets >= 16);
    assert!(names.len() >= 20, "{names:?}");

    // The real workers, against the test site and PostgreSQL.
    let env = Env::start("obs_monitoring", 10, ENTITIES, WORKERS).await;
    let stop = CancellationToken::new();
    let w = start_workers(&env.spec, &stop).await;
    let auth = json!({"script_name": "sgcache_test", "script_key": "test_key"});
    let (_state, proxy, proxy_task) =
        start_proxy(&env, auth.as_object().cloned(), 1.0, &stop).await;
    assert_backfilled(&env).await;
    let http = reqwest::Client::new();
    let read = json!({"method_name": "read", "params": [auth, {"type": "Shot",
        "filters": {"logical_operator": "and", "conditions": []}, "return_fields": ["code"],
        "paging": {"entities_per_page": 5, "current_page": 1}}]});
    for _ in 0..3 {
        sgcache_tests::proxy::post(
            &http,
            &format!("{proxy}/api3/json"),
            "application/json",
            read.to_string(),
        )
        .await;
    }
    // Per-type families appear with the first round that touches the type: wait for one
    // incremental round with its schema checks.
    let scanner = until_metrics(&w.scanner_url, "a schema check", |m| {
        sample(
            m,
            "sgcache_scanner_schema_checks_total",
            &[("outcome", "unchanged")],
        )
        .is_some_and(|v| v > 0.0)
    })
    .await;
    let exports = [
        sgcache_tests::proxy::metrics(&http, &proxy).await,
        metrics(&w.events_url).await,
        scanner,
    ];
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !exports.iter().any(|text| exported(text, n)))
        .collect();
    assert!(
        missing.is_empty(),
        "named by the chart but exported by no worker: {missing:?}"
    );
    // The check can fail: a name no worker exports is caught.
    assert!(!exports
        .iter()
        .any(|t| exported(t, "sgcache_events_no_such_metric")));
    stop.cancel();
    let _ = proxy_task.await;
    w.stop(&stop).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_and_scanner_commands_serve_probes_on_their_metrics_ports() {
    let (events_port, scanner_port) = (free_port(), free_port());
    let workers = format!(
        "{WORKERS}\n    metricsPort: {scanner_port}\n  proxy:\n    port: {}",
        free_port()
    )
    .replace(
        "gapWindow: 30s",
        &format!("gapWindow: 30s\n    metricsPort: {events_port}"),
    );
    let env = Env::start("obs_binaries", 10, ENTITIES, &workers).await;
    assert_eq!(env.spec.workers.events.metrics_port, events_port);
    assert_eq!(env.spec.workers.scanner.metrics_port, scanner_port);
    let mut children = vec![
        spawn_worker(&env, "events", &env.dir.path().join("events.log")),
        spawn_worker(&env, "scanner", &env.dir.path().join("scanner.log")),
    ];
    for (role, port) in [("events", events_port), ("scanner", scanner_port)] {
        let url = format!("http://127.0.0.1:{port}");
        let mut ready = None;
        for _ in 0..200 {
            if let Ok(r) = reqwest::get(format!("{url}/readyz")).await {
                if r.status().as_u16() == 200 {
                    ready = Some(r.json::<Value>().await.unwrap());
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(ready, Some(json!({role: "leader"})), "{role} never ready");
        let m = metrics(&url).await;
        assert_eq!(value(&m, &format!("sgcache_{role}_leader"), &[]), 1.0);
        let (status, body) = get(&url, "/healthz").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with(&format!("{role}: ok")), "{body}");
    }
    // A second follower of the same cache waits as a standby: ready and alive, not leading.
    let stop = CancellationToken::new();
    let mut spec = env.spec.clone();
    spec.site.timeout = "1s".into(); // a 3 s allowance
    let standby = Arc::new(EventsMetrics::for_spec(&spec));
    assert_eq!(standby.heartbeat.allowed(), Duration::from_secs(3));
    let (url, server) = serve(Probes::default().with(standby.clone()), &stop).await;
    let follower = {
        let (spec, stop, obs) = (spec.clone(), stop.clone(), standby.clone());
        tokio::spawn(async move { sgcache_worker::events::run_observed(&spec, stop, obs).await })
    };
    let mut body = String::new();
    for _ in 0..100 {
        let (status, b) = get(&url, "/readyz").await;
        body = b;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(body, r#"{"events":"standby"}"#);
    assert_eq!(
        value(&metrics(&url).await, "sgcache_events_leader", &[]),
        0.0
    );
    // Its loop is the lock attempt, once a second: alive past its 3 s allowance.
    tokio::time::sleep(standby.heartbeat.allowed() + Duration::from_millis(500)).await;
    let (status, health) = get(&url, "/healthz").await;
    assert_eq!(status, 200, "{health}");
    stop.cancel();
    follower.await.unwrap().expect("standby follower");
    let _ = server.await;
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    env.stop().await;
}
