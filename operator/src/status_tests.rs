use chrono::{TimeZone, Utc};

use super::*;
use crate::db::{EventsRow, FieldRow, SiteLag};

fn row(t: &str, f: &str, state: &str, done: i64, total: Option<i64>) -> FieldRow {
    FieldRow {
        entity_type: t.into(),
        field_name: f.into(),
        state: state.into(),
        backfill_done: done,
        backfill_total: total,
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 30).unwrap()
}

fn healthy(snapshot: DbSnapshot) -> Observed {
    Observed {
        generation: Some(3),
        inputs: Some(Ok(())),
        database: Some(Ok(())),
        schema: Some(Ok(())),
        snapshot: Some(snapshot),
        workers: Some(Ok(vec![
            ("cache-proxy".into(), 2, 2),
            ("cache-events".into(), 1, 1),
        ])),
        config_hash: Some("abc".into()),
        declared: None,
        proxy_selector: Some("app=proxy".into()),
        gone_from_site: Some(vec![]),
        uncovered: Some(vec![]),
        implied: vec![],
    }
}

fn cond<'a>(s: &'a ShotgunCacheStatus, t: &str) -> &'a Condition {
    s.condition(t).unwrap()
}

#[test]
fn counts_fields_per_type_and_backfill_progress() {
    let snap = DbSnapshot {
        trust: Vec::new(),
        reads: None,
        fields: vec![
            row("Shot", "code", "ready", 0, None),
            row("Shot", "description", "backfilling", 40, Some(100)),
            row("Shot", "sg_cut_in", "pending", 0, None),
            row("Shot", "old", "dropped", 0, None),
            row("Shot", "sg_status_list", "unservable", 0, None),
            row("Asset", "code", "ready", 0, None),
        ],
        events: Some(EventsRow {
            last_event_id: Some(912),
            backlog: 2,
            lag: SiteLag::Behind {
                since: Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 26).unwrap(),
                pending: true,
            },
        }),
    };
    let s = build(&healthy(snap), None, now());
    assert_eq!(s.type_count, 2);
    assert_eq!(s.types[0].entity_type, "Asset");
    let shot = &s.types[1];
    assert_eq!(
        (
            shot.pending,
            shot.backfilling,
            shot.ready,
            shot.dropped,
            shot.unservable
        ),
        (1, 1, 1, 1, 1)
    );
    assert_eq!((shot.backfill_done, shot.backfill_total), (40, 100));
    assert_eq!((s.fields_ready, s.fields_total), (2, 5));
    assert_eq!(s.fields_summary, "2/5");
    let ev = s.events.as_ref().unwrap();
    assert_eq!((ev.last_event_id, ev.lag_seconds, ev.backlog), (912, 4, 2));
    assert_eq!(
        ev.lag, "4s+",
        "the oldest unapplied event is 4 s old, more wait"
    );
    let b = cond(&s, condition::BACKFILLED);
    assert_eq!(
        (b.status.as_str(), b.reason.as_str()),
        ("False", "Backfilling")
    );
    assert!(
        b.message.contains("2 field(s)") && b.message.contains("Shot"),
        "{}",
        b.message
    );
    assert_eq!(s.phase, "Backfilling");
    let r = cond(&s, condition::READY);
    assert_eq!(
        (r.status.as_str(), r.reason.as_str()),
        ("False", "Backfilling")
    );
}

#[test]
fn all_ready_means_ready_with_observed_generation() {
    let snap = DbSnapshot {
        trust: Vec::new(),
        reads: None,
        fields: vec![row("Shot", "code", "ready", 0, None)],
        events: None,
    };
    let s = build(&healthy(snap), None, now());
    for t in condition::ALL {
        let c = cond(&s, t);
        assert_eq!(c.status, "True", "{t}: {c:?}");
        assert_eq!(c.observed_generation, Some(3));
    }
    assert_eq!(s.phase, "Ready");
    assert_eq!(s.observed_generation, Some(3));
    assert_eq!(s.config_hash.as_deref(), Some("abc"));
    assert!(s.events.is_none());
    assert_eq!(s.proxy_replicas, Some(2), "the scale subresource's status");
    assert_eq!(s.proxy_selector.as_deref(), Some("app=proxy"));
}

#[test]
fn a_failed_step_leaves_later_conditions_unknown() {
    let obs = Observed {
        generation: Some(1),
        inputs: Some(Err((
            "SecretNotFound".into(),
            "Secret default/db not found".into(),
        ))),
        ..Observed::default()
    };
    let s = build(&obs, None, now());
    let d = cond(&s, condition::DATABASE_READY);
    assert_eq!(
        (d.status.as_str(), d.reason.as_str()),
        ("False", "SecretNotFound")
    );
    assert_eq!(cond(&s, condition::SCHEMA_READY).status, "Unknown");
    assert_eq!(cond(&s, condition::WORKERS_AVAILABLE).status, "Unknown");
    let r = cond(&s, condition::READY);
    assert_eq!(
        (r.status.as_str(), r.reason.as_str()),
        ("False", "SecretNotFound")
    );
    assert_eq!(r.message, "Secret default/db not found");
    assert_eq!(s.phase, "Degraded");
}

#[test]
fn links_to_types_not_cached_are_named_and_ready_does_not_claim_them() {
    let mut obs = healthy(DbSnapshot::default());
    let s = build(&obs, None, now());
    assert_eq!(cond(&s, condition::COVERAGE).status, "True");
    assert_eq!(
        cond(&s, condition::READY).message,
        "reads are served from the cache"
    );
    obs.uncovered = Some(vec!["Shot.sg_sequence -> Sequence".into()]);
    let s = build(&obs, None, now());
    let c = cond(&s, condition::COVERAGE);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "LinkTargetsNotCached")
    );
    assert!(
        c.message.contains("Shot.sg_sequence -> Sequence"),
        "{}",
        c.message
    );
    let r = cond(&s, condition::READY);
    assert_eq!(r.status, "True");
    assert!(
        r.message.contains("except") && r.message.contains("Shot.sg_sequence"),
        "{}",
        r.message
    );
}

#[test]
fn a_proxy_scaled_to_zero_is_not_ready() {
    let mut obs = healthy(DbSnapshot::default());
    obs.workers = Some(Ok(vec![
        ("cache-proxy".into(), 0, 0),
        ("cache-events".into(), 1, 1),
    ]));
    let s = build(&obs, None, now());
    let w = cond(&s, condition::WORKERS_AVAILABLE);
    assert_eq!(
        (w.status.as_str(), w.reason.as_str()),
        ("False", "ScaledToZero")
    );
    let r = cond(&s, condition::READY);
    assert_eq!(
        (r.status.as_str(), r.reason.as_str()),
        ("False", "ScaledToZero")
    );
    assert!(
        !r.message.contains("served from the cache"),
        "{}",
        r.message
    );
}

#[test]
fn unavailable_workers_are_named() {
    let mut obs = healthy(DbSnapshot::default());
    obs.workers = Some(Ok(vec![
        ("cache-proxy".into(), 3, 1),
        ("cache-events".into(), 1, 1),
    ]));
    let s = build(&obs, None, now());
    let w = cond(&s, condition::WORKERS_AVAILABLE);
    assert_eq!(
        (w.status.as_str(), w.reason.as_str()),
        ("False", "Progressing")
    );
    assert_eq!(w.message, "waiting for replicas: cache-proxy 1/3");
}

#[test]
fn transition_time_is_kept_while_status_holds() {
    let first = build(&healthy(DbSnapshot::default()), None, now());
    let later = now() + chrono::Duration::minutes(5);
    let second = build(&healthy(DbSnapshot::default()), Some(&first), later);
    assert_eq!(
        cond(&second, condition::READY).last_transition_time,
        cond(&first, condition::READY).last_transition_time
    );
    let mut broken = healthy(DbSnapshot::default());
    broken.schema = Some(Err(("MigrationFailed".into(), "boom".into())));
    let third = build(&broken, Some(&second), later);
    assert_eq!(
        cond(&third, condition::SCHEMA_READY)
            .last_transition_time
            .as_deref(),
        Some("2026-03-01T12:05:30Z")
    );
}

#[test]
fn a_caught_up_cache_has_no_lag_however_quiet_the_site() {
    let snap = |lag| DbSnapshot {
        trust: Vec::new(),
        reads: None,
        fields: vec![row("Shot", "code", "ready", 0, None)],
        events: Some(EventsRow {
            last_event_id: Some(7),
            backlog: 0,
            lag,
        }),
    };
    let s = build(&healthy(snap(SiteLag::CaughtUp)), None, now());
    let ev = s.events.unwrap();
    assert_eq!((ev.lag.as_str(), ev.lag_seconds), ("0s", 0));
    let one = SiteLag::Behind {
        since: now() - chrono::Duration::seconds(90),
        pending: false,
    };
    let ev = build(&healthy(snap(one)), None, now()).events.unwrap();
    assert_eq!((ev.lag.as_str(), ev.lag_seconds), ("90s", 90));
    let ev = build(&healthy(snap(SiteLag::Unknown)), None, now())
        .events
        .unwrap();
    assert_eq!((ev.lag.as_str(), ev.lag_seconds), ("unknown", -1));
}

#[test]
fn fields_count_what_the_spec_declares_not_the_cache_own_fields() {
    let snap = DbSnapshot {
        trust: Vec::new(),
        reads: None,
        fields: vec![
            row("Shot", "id", "ready", 0, None),
            row("Shot", "updated_at", "ready", 0, None),
            row("Shot", "code", "ready", 0, None),
            row("Shot", "description", "pending", 0, None),
            row("Shot", "old", "dropped", 0, None),
            row("Asset", "id", "ready", 0, None),
            row("Asset", "code", "ready", 0, None),
        ],
        events: None,
    };
    let spec = crate::ShotgunCache::test()
        .with_spec(|s| {
            s.entities[0].fields = vec!["code".into(), "description".into()];
            s.entities[1].fields = vec!["*".into()];
        })
        .spec
        .0;
    let mut obs = healthy(snap);
    obs.declared = Some(Declared::of(&spec));
    let s = build(&obs, None, now());
    // Shot: code and description declared (id, updated_at are the cache's own); Asset: `*`.
    assert_eq!((s.fields_ready, s.fields_total), (3, 4));
    assert_eq!(s.fields_summary, "3/4");
    let shot = s.types.iter().find(|t| t.entity_type == "Shot").unwrap();
    assert_eq!((shot.ready, shot.pending, shot.dropped), (1, 1, 1));
}

#[test]
fn an_apply_error_is_a_workers_condition_and_degrades() {
    let mut obs = healthy(DbSnapshot::default());
    obs.snapshot = None;
    obs.workers = Some(Err((
        "ApplyFailed".into(),
        "cannot apply the worker objects: forbidden".into(),
    )));
    let s = build(&obs, None, now());
    let w = cond(&s, condition::WORKERS_AVAILABLE);
    assert_eq!(
        (w.status.as_str(), w.reason.as_str()),
        ("False", "ApplyFailed")
    );
    assert_eq!(w.observed_generation, Some(3));
    let r = cond(&s, condition::READY);
    assert_eq!(
        (r.status.as_str(), r.reason.as_str()),
        ("False", "ApplyFailed")
    );
    assert!(r.message.contains("forbidden"), "{}", r.message);
    assert_eq!(s.phase, "Degraded");
}

#[test]
fn fields_deleted_on_the_site_show_as_drift_without_making_the_cache_unready() {
    let snap = DbSnapshot {
        trust: Vec::new(),
        reads: None,
        fields: vec![row("Shot", "code", "ready", 0, None)],
        events: None,
    };
    let obs = Observed {
        gone_from_site: Some(vec!["Shot.sg_cut_note".into()]),
        ..healthy(snap)
    };
    let s = build(&obs, None, now());
    let drift = cond(&s, condition::SITE_SCHEMA_IN_SYNC);
    assert_eq!(
        (drift.status.as_str(), drift.reason.as_str()),
        ("False", "DeletedOnSite")
    );
    assert!(drift.message.contains("Shot.sg_cut_note"), "{drift:?}");
    assert_eq!(cond(&s, condition::READY).status, "True");
    assert_eq!(s.phase, "Ready");
}

#[test]
fn types_implied_by_links_are_counted_and_marked() {
    let row = |ty: &str, f: &str| crate::db::FieldRow {
        entity_type: ty.into(),
        field_name: f.into(),
        state: "ready".into(),
        backfill_done: 0,
        backfill_total: None,
    };
    let snap = DbSnapshot {
        fields: vec![
            row("Shot", "code"),
            row("Shot", "sg_sequence"),
            row("Shot", "id"),
            row("Sequence", "code"),
            row("Sequence", "id"),
            row("Sequence", "updated_at"),
        ],
        ..DbSnapshot::default()
    };
    let spec = ShotgunCacheSpec::from_yaml(
        "entities:\n  - {type: Shot, fields: [code, sg_sequence]}\n",
        "test",
    )
    .unwrap();
    let implied = sgcache::plan::ImpliedType {
        entity_type: "Sequence".into(),
        display_field: "code".into(),
        linked_from: vec!["Shot.sg_sequence".into()],
    };
    let mut obs = healthy(snap);
    obs.declared = Some(Declared::of(&spec).with_implied(std::slice::from_ref(&implied)));
    obs.implied = vec![implied.to_string()];
    let s = build(&obs, None, now());
    let seq = s
        .types
        .iter()
        .find(|t| t.entity_type == "Sequence")
        .unwrap();
    assert_eq!(
        (seq.ready, seq.implied_by.clone()),
        (1, vec!["Shot.sg_sequence".to_string()])
    );
    let shot = s.types.iter().find(|t| t.entity_type == "Shot").unwrap();
    assert!(shot.implied_by.is_empty());
    assert_eq!(
        s.fields_summary, "3/3",
        "two declared, one display field implied"
    );
    let c = cond(&s, condition::COVERAGE);
    assert_eq!(c.status, "True");
    assert!(
        c.message
            .contains("implied by links: Sequence (code) for Shot.sg_sequence"),
        "{}",
        c.message
    );
}

#[test]
fn reads_over_every_proxy_are_shown_with_a_floored_share() {
    use sgcache::storage::read_counts::ReadShare;
    let share = ReadShare {
        minutes: 5,
        replicas: 2,
        cache: 995,
        site: 5,
        reasons: vec![("link_name".into(), 4), ("stale".into(), 1)],
    };
    let snap = DbSnapshot {
        reads: Some(share),
        ..DbSnapshot::default()
    };
    let s = build(&healthy(snap), None, now());
    let r = s.reads.expect("reads in the status");
    assert_eq!(r.cached, "99%", "99.5% is not every read");
    assert_eq!(
        (r.from_cache, r.to_site, r.replicas, r.window_minutes),
        (995, 5, 2, 5)
    );
    assert_eq!(r.pass_through[0].reason, "link_name");
    let none = reads_status(&ReadShare::default());
    assert_eq!(none.cached, "-");
}
