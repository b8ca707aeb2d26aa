//! Refreshes from the site only with the cache's own credentials (issue 15, item 6): the cache
//! holds what its own script sees, so a re-read with a client's credentials could retire or
//! overwrite, for everyone, what that client cannot see. Without the cache's credentials
//! (`service_auth: None`) a verification mismatch and a write-through change no cached row
//! (a confirmed `delete` still retires its row: the site itself retired it for everyone);
//! with them, the same mismatch and the same write repair and rewrite the rows.
//!
//! The client here is the test site's script. A re-read with its credentials would see what
//! the cache's script sees, so any rewrite in the tests without `service_auth` can only come
//! from a refresh that fell back to the client's credentials. (The test site has no
//! permission groups or per-project visibility, so a client the site accepts but shows less
//! cannot be staged; the guard this proves is the same for such a client.)
//!
//! No event follower or scanner runs: the proxy is the only thing writing into the cache.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use sgcache::sql::SqlValue;
use sgcache_tests::pg::TestDb;
use sgcache_tests::proxy::{script_auth, Harness};

const SPEC: &str = "
entities:
  - type: Project
    fields: [name]
  - type: Sequence
    fields: [code, project]
  - type: Shot
    fields: [code, project, sg_sequence, sg_cut_in]
";

/// The value of the sample `name` (with its labels) in the proxy's metrics; 0 when absent.
fn metric(h: &Harness, name: &str) -> f64 {
    h.state
        .telemetry
        .metrics
        .encode()
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

const SKIPPED: &str = "sgcache_proxy_refreshes_skipped_total";
const REFRESHED: &str = "sgcache_proxy_verify_refreshed_entities_total";
const MISMATCH: &str = r#"sgcache_proxy_verify_total{outcome="mismatch"}"#;
const MATCH: &str = r#"sgcache_proxy_verify_total{outcome="match"}"#;

/// Polls the proxy's metrics until `done` holds for them.
async fn wait_for(h: &Harness, what: &str, done: impl Fn(&Harness) -> bool) {
    for _ in 0..250 {
        if done(h) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!(
        "{what} never happened:\n{}",
        h.state.telemetry.metrics.encode()
    );
}

/// Every row of the cache table of `ty`, whole (data and bookkeeping columns such as
/// `_retired` and `_cached_at`), by id.
async fn rows(h: &Harness, db: &TestDb, ty: &str) -> BTreeMap<i64, Value> {
    let table = h.state.cache.catalog().types[ty].table.clone();
    let mut sql = db.db.sql();
    sql.push("SELECT t.id, to_jsonb(t)::text FROM ")
        .push_ident(&table)
        .push(" t ORDER BY t.id");
    db.db
        .fetch_all(&sql)
        .await
        .unwrap()
        .into_iter()
        .map(|r| match (&r[0], &r[1]) {
            (SqlValue::Int(id), SqlValue::Text(row)) => (*id, serde_json::from_str(row).unwrap()),
            other => panic!("unexpected row {other:?}"),
        })
        .collect()
}

/// The cached Shot and Sequence tables.
async fn snapshot(h: &Harness, db: &TestDb) -> Snapshot {
    let mut out = BTreeMap::new();
    for ty in ["Shot", "Sequence"] {
        out.insert(ty, rows(h, db, ty).await);
    }
    out
}

type Snapshot = BTreeMap<&'static str, BTreeMap<i64, Value>>;

/// The rows that differ between two snapshots (new, gone or changed), with the names of the
/// columns that differ.
fn changes(before: &Snapshot, after: &Snapshot) -> BTreeMap<(&'static str, i64), BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for (ty, rows) in after {
        let old = &before[ty];
        let ids: BTreeSet<i64> = rows.keys().chain(old.keys()).copied().collect();
        for id in ids {
            let (a, b) = (old.get(&id), rows.get(&id));
            if a == b {
                continue;
            }
            let cols = |r: Option<&Value>| {
                r.and_then(Value::as_object)
                    .map(|o| o.keys().cloned().collect::<BTreeSet<_>>())
                    .unwrap_or_default()
            };
            let differing = cols(a)
                .union(&cols(b))
                .filter(|c| a.map(|r| &r[c.as_str()]) != b.map(|r| &r[c.as_str()]))
                .cloned()
                .collect();
            out.insert((*ty, id), differing);
        }
    }
    out
}

fn by_ids(ids: &[i64]) -> Value {
    json!({"type": "Shot",
        "filters": {"logical_operator": "and", "conditions": [
            {"path": "id", "relation": "in", "values": ids}]},
        "return_fields": ["code", "sg_cut_in", "sg_sequence"],
        "sorts": [{"field_name": "id", "direction": "asc"}],
        "paging": {"entities_per_page": 50, "current_page": 1},
        "return_paging_info_without_counts": true})
}

/// Two shots of the site linked to a sequence, read straight from the site.
async fn two_shots_with_a_sequence(h: &Harness) -> (Value, Value) {
    let (_, _, answer) = h
        .direct(
            "read",
            script_auth(),
            json!({"type": "Shot",
                "filters": {"logical_operator": "and", "conditions": [
                    {"path": "sg_sequence", "relation": "is_not", "values": [null]}]},
                "return_fields": ["code", "sg_cut_in", "sg_sequence"],
                "sorts": [{"field_name": "id", "direction": "asc"}],
                "paging": {"entities_per_page": 2, "current_page": 1}}),
        )
        .await;
    let shots = answer["results"]["entities"].as_array().unwrap().clone();
    assert_eq!(shots.len(), 2, "{answer}");
    (shots[0].clone(), shots[1].clone())
}

/// Calls `method` straight on the site and checks it succeeded.
async fn on_site(h: &Harness, method: &str, payload: Value) -> Value {
    let (status, _, answer) = h.direct(method, script_auth(), payload).await;
    assert!(
        status == 200 && answer.get("exception").is_none(),
        "{method}: {answer}"
    );
    answer["results"].clone()
}

/// What a verification mismatch did to the cache.
struct Verified {
    before: Snapshot,
    after: Snapshot,
    /// The shot changed on the site, the shot retired on the site, the renamed sequence.
    changed: i64,
    retired: i64,
    sequence: i64,
    new_cut_in: i64,
}

/// A cached read whose entities changed on the site behind the cache (a field, the display
/// field of a linked entity, a retirement), verified with `verifySampleRate` 1; returns the
/// cache before and after the verification ran. `own_credentials: false` starts the proxy
/// without credentials of its own.
async fn verify_a_stale_read(prefix: &str, own_credentials: bool) -> (Harness, TestDb, Verified) {
    let (h, db) = Harness::with_cache(prefix, SPEC, |c| {
        c.verify_sample_rate = 1.0;
        if !own_credentials {
            c.service_auth = None;
        }
    })
    .await
    .unwrap();
    let (a, b) = two_shots_with_a_sequence(&h).await;
    let (changed, retired) = (a["id"].as_i64().unwrap(), b["id"].as_i64().unwrap());
    let sequence = a["sg_sequence"]["id"].as_i64().unwrap();
    let read = by_ids(&[changed, retired]);

    // The first read verifies the client's credentials at the site; the next ones are
    // answered from the cache, and the cache agrees with the site.
    let (_, _, first) = h.proxy("read", script_auth(), read.clone()).await;
    let (_, path, cached) = h.proxy("read", script_auth(), read.clone()).await;
    assert_eq!(path.as_deref(), Some("cache"));
    assert_eq!(cached, first);
    wait_for(&h, "a matching verification", |h| metric(h, MATCH) >= 1.0).await;
    assert_eq!(metric(&h, MISMATCH), 0.0);
    let before = snapshot(&h, &db).await;

    // Changes made straight on the site; nothing tells the cache.
    let new_cut_in = a["sg_cut_in"].as_i64().unwrap_or(0) + 777;
    on_site(
        &h,
        "update",
        json!({"type": "Shot", "id": changed, "fields": [
            {"field_name": "sg_cut_in", "value": new_cut_in}]}),
    )
    .await;
    on_site(
        &h,
        "update",
        json!({"type": "Sequence", "id": sequence, "fields": [
            {"field_name": "code", "value": "renamed on the site"}]}),
    )
    .await;
    assert_eq!(
        on_site(&h, "delete", json!({"type": "Shot", "id": retired})).await,
        json!(true)
    );

    // The cache still answers with what it holds, and the check finds the difference.
    let (_, path, stale) = h.proxy("read", script_auth(), read).await;
    assert_eq!(path.as_deref(), Some("cache"));
    assert_eq!(stale, first);
    wait_for(&h, "the mismatch", |h| metric(h, MISMATCH) >= 1.0).await;
    // The check is over once it either refreshed every entity it names (the two shots and
    // the renamed sequence) or gave up for want of credentials.
    wait_for(&h, "the end of the refresh decision", |h| {
        metric(h, SKIPPED) >= 1.0 || metric(h, REFRESHED) >= 3.0
    })
    .await;
    assert_eq!(metric(&h, MISMATCH), 1.0);
    let after = snapshot(&h, &db).await;
    let v = Verified {
        before,
        after,
        changed,
        retired,
        sequence,
        new_cut_in,
    };
    (h, db, v)
}

#[tokio::test]
async fn without_its_own_credentials_a_verification_mismatch_changes_nothing() {
    let (h, db, v) = verify_a_stale_read("sgcache_refresh_auth_v0", false).await;
    // Counted and logged, nothing retired or rewritten: no row changed, not even its
    // `_cached_at`.
    assert_eq!(
        changes(&v.before, &v.after),
        BTreeMap::new(),
        "the cache was written without its own credentials"
    );
    assert_eq!(v.before["Shot"][&v.retired]["_retired"], json!(false));
    assert_eq!(metric(&h, REFRESHED), 0.0);
    assert_eq!(metric(&h, SKIPPED), 1.0);
    h.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn with_its_own_credentials_the_same_mismatch_repairs_the_cache() {
    let (h, db, v) = verify_a_stale_read("sgcache_refresh_auth_v1", true).await;
    let changed = changes(&v.before, &v.after);
    assert_eq!(
        changed.keys().collect::<Vec<_>>(),
        vec![
            &("Sequence", v.sequence),
            &("Shot", v.changed),
            &("Shot", v.retired)
        ],
        "{changed:?}"
    );
    let (shots, sequences) = (&v.after["Shot"], &v.after["Sequence"]);
    assert_eq!(shots[&v.changed]["sg_cut_in"], json!(v.new_cut_in));
    assert_eq!(shots[&v.changed]["_retired"], json!(false));
    assert_eq!(shots[&v.retired]["_retired"], json!(true));
    assert_eq!(sequences[&v.sequence]["code"], json!("renamed on the site"));
    assert_eq!(metric(&h, REFRESHED), 3.0);
    assert_eq!(metric(&h, SKIPPED), 0.0);
    h.stop().await;
    db.drop().await;
}

/// What writes through the proxy did to the cache.
struct Written {
    before: Snapshot,
    after: Snapshot,
    /// The updated shot (new cut in, moved to `to_sequence`), the deleted shot, the created one.
    updated: i64,
    deleted: i64,
    created: i64,
    to_sequence: i64,
    new_cut_in: i64,
}

/// A client's `update` (a number and a link), `create` and `delete` through the proxy, each
/// accepted by the site; returns the cache before and after.
async fn write_through_the_proxy(
    prefix: &str,
    own_credentials: bool,
) -> (Harness, TestDb, Written) {
    let (h, db) = Harness::with_cache(prefix, SPEC, |c| {
        if !own_credentials {
            c.service_auth = None;
        }
    })
    .await
    .unwrap();
    let (a, b) = two_shots_with_a_sequence(&h).await;
    let (updated, deleted) = (a["id"].as_i64().unwrap(), b["id"].as_i64().unwrap());
    let from_sequence = a["sg_sequence"]["id"].as_i64().unwrap();
    let (_, _, seqs) = h
        .direct(
            "read",
            script_auth(),
            json!({"type": "Sequence",
                "filters": {"logical_operator": "and", "conditions": [
                    {"path": "id", "relation": "is_not", "values": [from_sequence]}]},
                "return_fields": ["code", "project"],
                "paging": {"entities_per_page": 1, "current_page": 1}}),
        )
        .await;
    let to = seqs["results"]["entities"][0].clone();
    let to_sequence = to["id"].as_i64().expect("a second sequence");
    let before = snapshot(&h, &db).await;

    let new_cut_in = a["sg_cut_in"].as_i64().unwrap_or(0) + 555;
    let (status, path, answer) = h
        .proxy(
            "update",
            script_auth(),
            json!({"type": "Shot", "id": updated, "fields": [
                {"field_name": "sg_cut_in", "value": new_cut_in},
                {"field_name": "sg_sequence", "value": {"type": "Sequence", "id": to_sequence}}]}),
        )
        .await;
    assert_eq!((status, path.as_deref()), (200, Some("site")), "{answer}");
    assert_eq!(
        answer["results"]["sg_cut_in"],
        json!(new_cut_in),
        "{answer}"
    );
    let (status, _, answer) = h
        .proxy(
            "create",
            script_auth(),
            json!({"type": "Shot", "fields": [
                {"field_name": "code", "value": "created through the proxy"},
                {"field_name": "project", "value": to["project"]},
                {"field_name": "sg_sequence", "value": {"type": "Sequence", "id": to_sequence}}]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let created = answer["results"]["id"].as_i64().expect("a created id");
    let (status, _, answer) = h
        .proxy(
            "delete",
            script_auth(),
            json!({"type": "Shot", "id": deleted}),
        )
        .await;
    assert_eq!(
        (status, &answer["results"]),
        (200, &json!(true)),
        "{answer}"
    );

    // The site took every write.
    let (_, _, site) = h
        .direct("read", script_auth(), by_ids(&[updated, deleted, created]))
        .await;
    let site = &site["results"]["entities"];
    assert_eq!(site.as_array().map(Vec::len), Some(2), "{site}");
    assert_eq!(site[0]["id"], json!(updated));
    assert_eq!(site[0]["sg_cut_in"], json!(new_cut_in));
    assert_eq!(site[0]["sg_sequence"]["id"], json!(to_sequence));
    assert_eq!(site[1]["id"], json!(created));
    assert_eq!(
        metric(&h, "sgcache_proxy_write_through_failures_total"),
        0.0
    );

    let after = snapshot(&h, &db).await;
    let w = Written {
        before,
        after,
        updated,
        deleted,
        created,
        to_sequence,
        new_cut_in,
    };
    (h, db, w)
}

#[tokio::test]
async fn without_its_own_credentials_a_write_rewrites_nothing_but_retires_what_it_deleted() {
    let (h, db, w) = write_through_the_proxy("sgcache_refresh_auth_w0", false).await;
    // The confirmed delete retires its row (the site retired it for everyone); nothing is
    // re-read: the updated shot, both sequences and the created shot are as they were.
    let changed = changes(&w.before, &w.after);
    assert_eq!(
        changed.keys().collect::<Vec<_>>(),
        vec![&("Shot", w.deleted)],
        "the cache was rewritten without its own credentials: {changed:?}"
    );
    assert!(changed[&("Shot", w.deleted)].contains("_retired"));
    assert_eq!(w.before["Shot"][&w.deleted]["_retired"], json!(false));
    assert_eq!(w.after["Shot"][&w.deleted]["_retired"], json!(true));
    assert!(!w.after["Shot"].contains_key(&w.created));
    // One refresh skipped per type each write would have re-read: the update's Shot and
    // Sequences (old and new link), the create's Shot, Project and Sequence; a delete
    // re-reads nothing.
    assert_eq!(metric(&h, SKIPPED), 5.0);
    h.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn with_its_own_credentials_the_same_writes_are_read_back_into_the_cache() {
    let (h, db, w) = write_through_the_proxy("sgcache_refresh_auth_w1", true).await;
    let shots = &w.after["Shot"];
    assert_eq!(shots[&w.updated]["sg_cut_in"], json!(w.new_cut_in));
    assert_eq!(shots[&w.deleted]["_retired"], json!(true));
    assert_eq!(
        shots[&w.created]["code"],
        json!("created through the proxy")
    );
    assert_ne!(
        w.after["Sequence"][&w.to_sequence]["_cached_at"],
        w.before["Sequence"][&w.to_sequence]["_cached_at"],
        "the newly linked sequence was not re-read"
    );
    assert_eq!(metric(&h, SKIPPED), 0.0);
    h.stop().await;
    db.drop().await;
}
