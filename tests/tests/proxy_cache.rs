//! The proxy with a PostgreSQL cache filled from the test site: cached reads are identical to
//! the site's answers and never reach the site; credentials are still checked; writes are
//! visible to the next read.

use serde_json::{json, Value};
use sgcache::plan::PlanOptions;
use sgcache::spec::CacheForSpec;
use sgcache::sql::Db;
use sgcache::ShotgunCacheSpec;
use sgcache_tests::pg::TestDb;
use sgcache_tests::proxy::{script_auth, site_client, Harness};
use sgcache_tests::relay::Relay;
use sgcache_worker::proxy::ProxyConfig;
use shotgun_sim::SimConfig;

const SPEC: &str = "
entities:
  - type: Project
    fields: [name, archived]
  - type: Sequence
    fields: [code, project]
  - type: Asset
    fields: [code, project, sg_status_list, shots]
  - type: Shot
    fields: [code, project, sg_sequence, sg_status_list, sg_cut_in, sg_cut_out, assets, description, created_at]
";

struct Setup {
    h: Harness,
    db: TestDb,
}

async fn setup() -> Setup {
    setup_with(true, 0.0).await
}

/// `attached: false` starts the proxy without a database (as when it was unreachable at
/// start); the caller attaches it later.
async fn setup_with(attached: bool, verify_sample_rate: f64) -> Setup {
    let db = TestDb::create("sgcache_proxy").await.unwrap();
    let proxy_db = attached.then(|| db.db.clone());
    setup_on(db, proxy_db, |c| c.verify_sample_rate = verify_sample_rate).await
}

/// A fresh PostgreSQL cache used by the proxy, with the proxy's settings adjusted by `tweak`.
async fn setup_tweaked(tweak: impl FnOnce(&mut ProxyConfig)) -> Setup {
    let db = TestDb::create("sgcache_proxy").await.unwrap();
    let proxy_db = Some(db.db.clone());
    setup_on(db, proxy_db, tweak).await
}

/// Fills `db` from a fresh test site; the proxy uses `proxy_db` (a pool on `db`, or none) and
/// the settings `tweak` gives it.
async fn setup_on(db: TestDb, proxy_db: Option<Db>, tweak: impl FnOnce(&mut ProxyConfig)) -> Setup {
    let h = Harness::start_with(SimConfig::default(), proxy_db, tweak)
        .await
        .unwrap();
    let site = site_client(h.sim.url());
    let spec = ShotgunCacheSpec::from_yaml(SPEC, "test").unwrap();
    let schema = site.schema().await.unwrap();
    sgcache::storage::migrate(&db.db, &spec, &schema, PlanOptions::default())
        .await
        .unwrap();
    let n = sgcache_tests::loader::load_all(&db.db, &site)
        .await
        .unwrap();
    assert!(n > 100, "loaded {n} rows");
    h.state.refresh_catalog().await;
    Setup { h, db }
}

fn all() -> Value {
    json!({"logical_operator": "and", "conditions": []})
}

fn cond(path: &str, rel: &str, values: Value) -> Value {
    json!({"logical_operator": "and", "conditions": [{"path": path, "relation": rel, "values": values}]})
}

fn shots(filters: Value) -> Value {
    json!({"type": "Shot", "filters": filters,
           "return_fields": ["code", "sg_sequence", "assets", "sg_status_list", "sg_cut_in", "created_at", "project", "sg_sequence.Sequence.code"],
           "paging": {"entities_per_page": 50, "current_page": 1},
           "return_paging_info_without_counts": true})
}

/// Reads the cache should answer, with the reason each exercises.
fn battery() -> Vec<(&'static str, Value)> {
    let mut page2 = shots(all());
    page2["paging"]["current_page"] = json!(2);
    let mut counted = shots(all());
    counted
        .as_object_mut()
        .unwrap()
        .remove("return_paging_info_without_counts");
    counted["return_paging_info"] = json!(true);
    counted["paging"]["current_page"] = json!(2);
    let mut sorted = shots(all());
    sorted["sorts"] = json!([{"field_name": "sg_cut_in", "direction": "desc"}, {"field_name": "created_at", "direction": "asc"}]);
    let mut archived = shots(all());
    archived["include_archived_projects"] = json!(false);
    let mut retired = shots(all());
    retired["return_only"] = json!("retired");
    retired["return_fields"] = json!(["code", "sg_cut_in"]);
    vec![
        ("page 1", shots(all())),
        ("page 2", page2),
        ("entity_count", counted),
        ("sorted", sorted),
        ("archived projects", archived),
        ("retired", retired),
        (
            "status in",
            shots(cond("sg_status_list", "in", json!(["ip", "fin"]))),
        ),
        (
            "status is_not",
            shots(cond("sg_status_list", "is_not", json!(["ip"]))),
        ),
        (
            "cut_in between",
            shots(cond("sg_cut_in", "between", json!([1010, 1040]))),
        ),
        ("cut_in null", shots(cond("sg_cut_in", "is", json!([null])))),
        (
            "code contains",
            shots(cond("code", "contains", json!(["0"]))),
        ),
        (
            "code starts_with",
            shots(cond("code", "starts_with", json!(["SH"]))),
        ),
        (
            "sequence type_is",
            shots(cond("sg_sequence", "type_is", json!(["Sequence"]))),
        ),
        (
            "sequence name",
            shots(cond("sg_sequence", "name_contains", json!(["1"]))),
        ),
        (
            "deep code",
            shots(cond("sg_sequence.Sequence.code", "ends_with", json!(["2"]))),
        ),
        ("assets empty", shots(cond("assets", "is", json!([null])))),
        (
            "assets name",
            shots(cond("assets", "name_contains", json!(["HERO"]))),
        ),
        (
            "deep assets",
            shots(cond("assets.Asset.sg_status_list", "is_not", json!(["ip"]))),
        ),
        ("id range", shots(cond("id", "greater_than", json!([20])))),
        (
            "find_one",
            json!({"type": "Asset", "filters": cond("id", "is", json!([3])), "return_fields": ["code", "project"],
                            "paging": {"entities_per_page": 1, "current_page": 1}}),
        ),
    ]
}

#[tokio::test]
async fn cached_reads_match_the_site_and_do_not_reach_it() {
    cached_reads_match(setup().await).await;
}

#[tokio::test]
async fn cached_reads_match_the_site_on_sqlite_too() {
    let db = TestDb::sqlite().await.unwrap();
    let proxy_db = Some(db.db.clone());
    cached_reads_match(setup_on(db, proxy_db, |_| {}).await).await;
}

async fn cached_reads_match(Setup { h, db }: Setup) {
    // First read verifies the credentials with the site.
    let (_, path, _) = h.proxy("read", script_auth(), shots(all())).await;
    assert_eq!(path.as_deref(), Some("site"));

    let before = h.site_requests();
    let mut proxied = Vec::new();
    let mut cached = 0;
    for (name, payload) in battery() {
        let (status, path, body) = h.proxy("read", script_auth(), payload.clone()).await;
        assert_eq!(status, 200, "{name}");
        if path.as_deref() == Some("cache") {
            cached += 1;
        } else {
            eprintln!("{name}: answered by {path:?}");
        }
        proxied.push((name, payload, body));
    }
    let site_calls = h.site_requests() - before;
    for (name, payload, body) in proxied {
        let (_, _, direct) = h.direct("read", script_auth(), payload).await;
        assert!(direct["results"]["entities"].is_array(), "{name}: {direct}");
        assert_eq!(body, direct, "{name}");
        // Every case selects something, so equality is not between two empty lists.
        assert!(
            !direct["results"]["entities"].as_array().unwrap().is_empty(),
            "{name}"
        );
    }
    let total = battery().len();
    assert_eq!(
        cached, total,
        "every battery read is answerable from the cache"
    );
    assert_eq!(site_calls, 0, "cached reads never reach the site");
    h.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn credentials_are_checked_before_cached_data_is_served() {
    let Setup { h, db } = setup().await;
    let wrong = json!({"script_name": "sgcache_test", "script_key": "wrong"});
    let (_, path, body) = h.proxy("read", wrong.clone(), shots(all())).await;
    assert_eq!(
        (path.as_deref(), &body["error_code"]),
        (Some("site"), &json!(102))
    );
    // A valid credential, verified once.
    let (_, _, good) = h.proxy("read", script_auth(), shots(all())).await;
    assert!(good["results"]["entities"].as_array().unwrap().len() > 1);

    // No credentials at all: never served from the cache, the site's answer comes back.
    let (_, path, body) = h.proxy("read", json!({}), shots(all())).await;
    let (_, _, direct) = h.direct("read", json!({}), shots(all())).await;
    assert_eq!((path.as_deref(), &body), (Some("site"), &direct));
    assert!(body.get("results").is_none(), "{body}");

    h.faults(json!({"down": true}));
    // While the site is down the verified principal still reads from the cache ...
    let (status, path, body) = h.proxy("read", script_auth(), shots(all())).await;
    assert_eq!((status, path.as_deref()), (200, Some("cache")));
    assert_eq!(body, good);
    // ... and an unverified one gets no data.
    let (status, _, body) = h.proxy("read", wrong, shots(all())).await;
    assert_ne!(status, 200);
    assert!(body.get("results").is_none(), "{body}");
    let sudo =
        json!({"script_name": "sgcache_test", "script_key": "test_key", "sudo_as_login": "artist"});
    let (_, _, body) = h.proxy("read", sudo, shots(all())).await;
    assert!(
        body.get("results").is_none(),
        "a different auth object is a different principal"
    );
    h.stop().await;
    db.drop().await;
}

/// Reads `payload` through the proxy and directly; they must agree. Returns the proxy's path
/// and the entities.
async fn agree(h: &Harness, payload: Value) -> (Option<String>, Vec<Value>) {
    let (_, path, proxied) = h.proxy("read", script_auth(), payload.clone()).await;
    let (_, _, direct) = h.direct("read", script_auth(), payload.clone()).await;
    assert_eq!(proxied, direct, "{payload}");
    let entities = direct["results"]["entities"].as_array().cloned().unwrap();
    (path, entities)
}

fn by_id(ty: &str, id: i64, fields: Value, retired: bool) -> Value {
    json!({"type": ty, "filters": cond("id", "is", json!([id])), "return_fields": fields,
           "return_only": if retired { "retired" } else { "active" },
           "paging": {"entities_per_page": 1, "current_page": 1}})
}

#[tokio::test]
async fn reads_through_the_proxy_see_its_writes() {
    let Setup { h, db } = setup().await;
    let _ = h.proxy("read", script_auth(), shots(all())).await; // verifies the credentials
    let shot_fields = json!([
        "code",
        "sg_sequence",
        "assets",
        "sg_cut_in",
        "project",
        "sg_status_list"
    ]);

    // create
    let (_, _, created) = h
        .proxy(
            "create",
            script_auth(),
            json!({"type": "Shot", "fields": [
            {"field_name": "code", "value": "ryw_010"},
            {"field_name": "project", "value": {"type": "Project", "id": 1}},
            {"field_name": "sg_sequence", "value": {"type": "Sequence", "id": 1}},
            {"field_name": "assets", "value": [{"type": "Asset", "id": 2}]}],
            "return_fields": ["code"]}),
        )
        .await;
    let id = created["results"]["id"].as_i64().expect("created id");
    let (path, rows) = agree(&h, by_id("Shot", id, shot_fields.clone(), false)).await;
    assert_eq!(path.as_deref(), Some("cache"));
    assert_eq!(rows[0]["code"], "ryw_010");
    // The other side of the link was refreshed too.
    let (path, rows) = agree(&h, by_id("Asset", 2, json!(["code", "shots"]), false)).await;
    assert_eq!(path.as_deref(), Some("cache"));
    assert!(rows[0]["shots"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == id));

    // update
    let (_, _, updated) = h
        .proxy(
            "update",
            script_auth(),
            json!({"type": "Shot", "id": id, "fields": [
            {"field_name": "code", "value": "ryw_020"},
            {"field_name": "sg_cut_in", "value": 42},
            {"field_name": "assets", "value": [{"type": "Asset", "id": 3}]}]}),
        )
        .await;
    assert!(updated["results"].is_object(), "{updated}");
    let (path, rows) = agree(&h, by_id("Shot", id, shot_fields.clone(), false)).await;
    assert_eq!(path.as_deref(), Some("cache"));
    assert_eq!(
        (&rows[0]["code"], &rows[0]["sg_cut_in"]),
        (&json!("ryw_020"), &json!(42))
    );
    // Asset 2 lost the shot, asset 3 gained it: both refreshed.
    for asset in [2, 3] {
        let (path, _) = agree(&h, by_id("Asset", asset, json!(["code", "shots"]), false)).await;
        assert_eq!(path.as_deref(), Some("cache"), "asset {asset}");
    }

    // delete, then revive
    let (_, _, deleted) = h
        .proxy("delete", script_auth(), json!({"type": "Shot", "id": id}))
        .await;
    assert_eq!(deleted["results"], true);
    let (path, rows) = agree(&h, by_id("Shot", id, shot_fields.clone(), false)).await;
    assert_eq!((path.as_deref(), rows.len()), (Some("cache"), 0));
    let (path, rows) = agree(&h, by_id("Shot", id, json!(["code"]), true)).await;
    assert_eq!((path.as_deref(), rows.len()), (Some("cache"), 1));
    let (_, _, revived) = h
        .proxy("revive", script_auth(), json!({"type": "Shot", "id": id}))
        .await;
    assert_eq!(revived["results"], true);
    let (path, rows) = agree(&h, by_id("Shot", id, shot_fields.clone(), false)).await;
    assert_eq!((path.as_deref(), rows.len()), (Some("cache"), 1));

    // batch: create + update + delete in one call
    let (_, _, batch) = h
        .proxy(
            "batch",
            script_auth(),
            json!([
            {"request_type": "create", "type": "Sequence", "fields": [
                {"field_name": "code", "value": "ryw_seq"},
                {"field_name": "project", "value": {"type": "Project", "id": 1}}],
             "return_fields": ["code"]},
            {"request_type": "update", "type": "Shot", "id": id, "fields": [
                {"field_name": "sg_status_list", "value": "fin"}]},
            {"request_type": "delete", "type": "Shot", "id": 1}]),
        )
        .await;
    let results = batch["results"].as_array().expect("batch results");
    let seq = results[0]["id"].as_i64().unwrap();
    let (path, rows) = agree(
        &h,
        by_id("Sequence", seq, json!(["code", "project"]), false),
    )
    .await;
    assert_eq!(
        (path.as_deref(), &rows[0]["code"]),
        (Some("cache"), &json!("ryw_seq"))
    );
    let (path, rows) = agree(&h, by_id("Shot", id, shot_fields.clone(), false)).await;
    assert_eq!(
        (path.as_deref(), &rows[0]["sg_status_list"]),
        (Some("cache"), &json!("fin"))
    );
    let (path, rows) = agree(&h, by_id("Shot", 1, json!(["code"]), false)).await;
    assert_eq!((path.as_deref(), rows.len()), (Some("cache"), 0));
    assert_eq!(h.state.telemetry.metrics.write_through_failures.get(), 0);
    h.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn without_its_database_the_proxy_passes_everything_through() {
    // Closing the pool stands in for losing the database; the notification listener has its
    // own connection and would keep answers kept in memory valid, so none are kept here.
    let Setup { h, db } = setup_tweaked(|c| c.result_cache_bytes = 0).await;
    let (_, path, _) = h.proxy("read", script_auth(), shots(all())).await;
    assert_eq!(path.as_deref(), Some("site"));
    let (_, path, _) = h.proxy("read", script_auth(), shots(all())).await;
    assert_eq!(path.as_deref(), Some("cache"));
    // The pool is shared with the proxy: closing it makes every query fail.
    db.db.close().await;
    for (name, payload) in battery().into_iter().take(5) {
        let (status, path, proxied) = h.proxy("read", script_auth(), payload.clone()).await;
        let (_, _, direct) = h.direct("read", script_auth(), payload).await;
        assert_eq!((status, path.as_deref()), (200, Some("site")), "{name}");
        assert_eq!(proxied, direct, "{name}");
    }
    // The database guard says so too once its next check (each catalog refresh) has run.
    let mut ready: Value = h.get_json("/readyz").await;
    for _ in 0..50 {
        if ready["database_guard"]["state"] == "unknown" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        ready = h.get_json("/readyz").await;
    }
    assert_eq!(ready["database_guard"]["state"], "unknown", "{ready}");
    ready.as_object_mut().unwrap().remove("database_guard");
    assert_eq!(
        ready,
        json!({"database": "unavailable", "site": "ok", "types_ready": 4, "types_planned": 4,
            "stale_types": [], "unservable_fields": []})
    );
    let metrics = h.state.telemetry.metrics.encode();
    assert!(
        metrics.contains(r#"path="site",reason="database"}"#),
        "{metrics}"
    );
    h.stop().await;
    db.drop().await;
}

/// A repeated read is answered from memory without a query, and any change to the cache's
/// tables (here an UPDATE behind the proxy's back, as the event follower makes) drops it: the
/// next read has the new value.
#[tokio::test]
async fn kept_answers_are_dropped_by_any_change_to_the_cache() {
    let Setup { h, db } = setup().await;
    let hits = |h: &Harness| {
        let m = h.state.telemetry.metrics.encode();
        m.lines()
            .find(|l| l.starts_with("sgcache_proxy_result_cache_hits_total "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (_, path, _) = h.proxy("read", script_auth(), shots(all())).await;
    assert_eq!(
        path.as_deref(),
        Some("site"),
        "the first read verifies the credentials"
    );
    let (_, path, first) = h.proxy("read", script_auth(), shots(all())).await;
    assert_eq!(path.as_deref(), Some("cache"));
    assert_eq!(hits(&h), 0.0);
    let site_before = h.site_requests();
    let (_, path, again) = h.proxy("read", script_auth(), shots(all())).await;
    assert_eq!(path.as_deref(), Some("cache"));
    assert_eq!(again, first);
    assert_eq!(hits(&h), 1.0);
    assert_eq!(h.site_requests(), site_before);
    // A kept answer is sent gzipped as kept to clients that accept gzip, plain to others.
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let body = json!({"method_name": "read", "params": [script_auth(), shots(all())]}).to_string();
    for gzip in [true, false] {
        let mut post = raw
            .post(format!("{}/api3/json", h.proxy_url))
            .body(body.clone());
        if gzip {
            post = post.header("accept-encoding", "gzip");
        }
        let resp = post.send().await.unwrap();
        assert_eq!(resp.headers()["x-sgcache-path"], "cache");
        let encoding = resp.headers().get("content-encoding").cloned();
        let bytes = resp.bytes().await.unwrap();
        let text = if gzip {
            assert_eq!(encoding.unwrap(), "gzip");
            let mut t = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut t)
                .unwrap();
            t
        } else {
            assert!(encoding.is_none());
            String::from_utf8(bytes.to_vec()).unwrap()
        };
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), first);
    }
    assert_eq!(hits(&h), 3.0);

    let target = first["results"]["entities"][0]["id"].as_i64().unwrap();
    let mut sql = db.db.sql();
    sql.push("UPDATE \"shot\" SET \"code\" = ")
        .push_bind(sgcache::sql::SqlValue::Text(
            "changed behind the proxy".into(),
        ))
        .push(" WHERE \"id\" = ")
        .push_bind(sgcache::sql::SqlValue::Int(target));
    db.db.execute(&sql).await.unwrap();
    let mut fresh = None;
    for _ in 0..100 {
        let (_, _, body) = h.proxy("read", script_auth(), shots(all())).await;
        if body["results"]["entities"][0]["code"] == "changed behind the proxy" {
            fresh = Some(body);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        fresh.is_some(),
        "a kept answer outlived the change of its rows"
    );
    // Other answers are kept again afterwards.
    let before = hits(&h);
    let (_, path, _) = h.proxy("read", script_auth(), shots(all())).await;
    assert_eq!(path.as_deref(), Some("cache"));
    assert_eq!(hits(&h), before + 1.0);

    // A change drops only the answers that read its table: a read of shot codes alone
    // survives a change to the asset table, not one to the shot table.
    let codes = json!({"type": "Shot", "filters": all(), "return_fields": ["code"],
        "paging": {"entities_per_page": 5, "current_page": 1}});
    let (_, path, kept) = h.proxy("read", script_auth(), codes.clone()).await;
    assert_eq!(path.as_deref(), Some("cache"));
    let change = |table: &str, value: &str| {
        let mut sql = db.db.sql();
        sql.push("UPDATE ")
            .push_ident(table)
            .push(" SET \"code\" = ")
            .push_bind(sgcache::sql::SqlValue::Text(value.into()))
            .push(" WHERE \"id\" = ")
            .push_bind(sgcache::sql::SqlValue::Int(target));
        sql
    };
    db.db
        .execute(&change("asset", "asset changed"))
        .await
        .unwrap();
    // Give the notification time to arrive; the answer must still be served from memory.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = hits(&h);
    let (_, _, again) = h.proxy("read", script_auth(), codes.clone()).await;
    assert_eq!(again, kept);
    assert_eq!(
        hits(&h),
        before + 1.0,
        "a change to another table dropped the answer"
    );
    db.db
        .execute(&change("shot", "shot changed"))
        .await
        .unwrap();
    let mut dropped = false;
    for _ in 0..100 {
        let (_, _, body) = h.proxy("read", script_auth(), codes.clone()).await;
        if body["results"]["entities"][0]["code"] == "shot changed" {
            dropped = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        dropped,
        "a change to the shot table did not drop the answer"
    );
    h.stop().await;
    db.drop().await;
}

/// With `cacheFor` set, only the listed principals (and scripts acting as listed users) are
/// answered from the cache; another principal the site accepts always gets the site's answer.
#[tokio::test]
async fn only_listed_principals_are_answered_from_the_cache() {
    let Setup { h, db } = setup_tweaked(|c| {
        c.cache_for = Some(CacheForSpec {
            scripts: vec!["sgcache_test".into()],
            logins: vec!["artist".into()],
        })
    })
    .await;
    let listed = [
        script_auth(),
        json!({"user_login": "artist", "user_password": "artist_password"}),
        json!({"script_name": "sgcache_test", "script_key": "test_key", "sudo_as_login": "artist"}),
    ];
    for auth in listed {
        let (_, path, _) = h.proxy("read", auth.clone(), shots(all())).await;
        assert_eq!(path.as_deref(), Some("site"), "first read verifies {auth}");
        let (_, path, body) = h.proxy("read", auth.clone(), shots(all())).await;
        assert_eq!(path.as_deref(), Some("cache"), "{auth}");
        let (_, _, direct) = h.direct("read", auth.clone(), shots(all())).await;
        assert_eq!(body, direct, "{auth}");
    }
    let unlisted = json!({"script_name": "silent_script", "script_key": "silent_key"});
    let before = h.site_requests();
    for (name, payload) in battery().into_iter().take(3) {
        let (status, path, proxied) = h.proxy("read", unlisted.clone(), payload.clone()).await;
        assert_eq!((status, path.as_deref()), (200, Some("site")), "{name}");
        let (_, _, direct) = h.direct("read", unlisted.clone(), payload).await;
        assert_eq!(proxied, direct, "{name}");
    }
    // Three reads through the proxy and three direct ones, all at the site.
    assert_eq!(h.site_requests() - before, 6);
    let metrics = h.state.telemetry.metrics.encode();
    assert!(
        metrics.contains(r#"method="read",path="site",reason="principal"} 3"#),
        "{metrics}"
    );
    h.stop().await;
    db.drop().await;
}

/// A proxy whose database connections go through a relay the test can break, with the
/// credentials verified and a first read answered from the cache.
async fn setup_relayed() -> (Relay, Setup) {
    let db = TestDb::create("sgcache_proxy").await.unwrap();
    let (relay, url) = Relay::for_postgres(&db.url).await.unwrap();
    let timeout = sgcache_worker::proxy::run::DB_ACQUIRE_TIMEOUT;
    let through = Db::connect_with_timeout(&url, 4, timeout).await.unwrap();
    let setup = setup_on(db, Some(through), |_| {}).await;
    let (_, path, _) = setup.h.proxy("read", script_auth(), shots(all())).await;
    assert_eq!(
        path.as_deref(),
        Some("site"),
        "the first read verifies the credentials"
    );
    let (_, path, _) = setup.h.proxy("read", script_auth(), shots(all())).await;
    assert_eq!(path.as_deref(), Some("cache"));
    (relay, setup)
}

/// PostgreSQL going away under a running proxy (as in a server restart: connections cut, new
/// ones refused) and coming back: reads keep getting the site's answers meanwhile, without
/// hanging on the database, and come from the cache again once it is back.
#[tokio::test]
async fn a_database_outage_passes_reads_through_until_it_is_back() {
    let (relay, Setup { h, db }) = setup_relayed().await;

    assert!(
        h.state.cache.results.is_live(),
        "answers are kept while notifications arrive"
    );
    relay.down();
    // The notification connection goes too: answers kept in memory are no longer trusted.
    let mut waited = 0;
    while h.state.cache.results.is_live() && waited < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waited += 1;
    }
    assert!(
        !h.state.cache.results.is_live(),
        "kept answers outlived the database connection"
    );
    for (name, payload) in battery().into_iter().take(4) {
        let started = std::time::Instant::now();
        let (status, path, proxied) = h.proxy("read", script_auth(), payload.clone()).await;
        eprintln!(
            "{name}: answered in {:?} during the outage",
            started.elapsed()
        );
        // A bound on hanging, not a speed target: well under sqlx's default 10 s of retrying.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(6),
            "{name}: a read waited {:?} for the database",
            started.elapsed()
        );
        let (_, _, direct) = h.direct("read", script_auth(), payload).await;
        assert_eq!((status, path.as_deref()), (200, Some("site")), "{name}");
        assert_eq!(proxied, direct, "{name}");
    }
    let ready: Value = h.get_json("/readyz").await;
    assert_eq!(ready["database"], "unavailable", "{ready}");

    relay.up().await.unwrap();
    let mut back = false;
    for _ in 0..100 {
        let (_, path, body) = h.proxy("read", script_auth(), shots(all())).await;
        if path.as_deref() == Some("cache") {
            let (_, _, direct) = h.direct("read", script_auth(), shots(all())).await;
            assert_eq!(body, direct);
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(back, "reads never came from the cache again");
    let ready: Value = h.get_json("/readyz").await;
    assert_eq!(ready["database"], "ok", "{ready}");
    h.stop().await;
    drop(relay);
    db.drop().await;
}

/// The network to PostgreSQL fails silently (nothing refused or reset, nothing arrives): a read
/// that needs a query stops waiting and goes to the site, and answers kept in memory stop
/// being trusted once the listener no longer hears its own heartbeat.
#[tokio::test]
async fn a_silent_network_failure_to_the_database_passes_reads_through() {
    let (relay, Setup { h, db }) = setup_relayed().await;
    assert!(h.state.cache.results.is_live());

    relay.freeze();
    let (name, payload) = battery().into_iter().nth(1).unwrap();
    let started = std::time::Instant::now();
    let (status, path, proxied) = h.proxy("read", script_auth(), payload.clone()).await;
    let waited = started.elapsed();
    eprintln!("{name}: answered in {waited:?} with the database unreachable");
    assert_eq!((status, path.as_deref()), (200, Some("site")), "{name}");
    let (_, _, direct) = h.direct("read", script_auth(), payload).await;
    assert_eq!(proxied, direct, "{name}");
    // A bound on hanging, not a speed target: the read timeout (5 s) and the site's answer.
    assert!(
        waited < std::time::Duration::from_secs(15),
        "{name} waited {waited:?}"
    );

    let mut stopped = false;
    for _ in 0..150 {
        if !h.state.cache.results.is_live() {
            stopped = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        stopped,
        "kept answers were still trusted 30 s into the partition"
    );
    let (_, path, _) = h.proxy("read", script_auth(), shots(all())).await;
    assert_eq!(path.as_deref(), Some("site"));
    relay.down();
    h.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn a_database_attached_after_start_serves_reads() {
    let Setup { h, db } = setup_with(false, 0.0).await;
    h.state
        .cache
        .pending
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (_, path, _) = h.proxy("read", script_auth(), shots(all())).await;
    assert_eq!(path.as_deref(), Some("site"));
    let ready: Value = h.get_json("/readyz").await;
    assert_eq!(ready["database"], "unavailable");
    h.state.cache.attach(db.db.clone());
    h.state.refresh_catalog().await;
    let (_, path, body) = h.proxy("read", script_auth(), shots(all())).await;
    assert_eq!(path.as_deref(), Some("cache"));
    let (_, _, direct) = h.direct("read", script_auth(), shots(all())).await;
    assert_eq!(body, direct);
    h.stop().await;
    db.drop().await;
}

/// Waits until the proxy's metrics contain `needle` (verification runs in the background).
async fn wait_for_metric(h: &Harness, needle: &str) {
    for _ in 0..100 {
        if h.state.telemetry.metrics.encode().contains(needle) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!(
        "metric {needle} never appeared:\n{}",
        h.state.telemetry.metrics.encode()
    );
}

#[tokio::test]
async fn sampled_cached_reads_are_checked_against_the_site() {
    let Setup { h, db } = setup_with(true, 1.0).await;
    let one = by_id("Shot", 5, json!(["code", "sg_cut_in"]), false);
    let _ = h.proxy("read", script_auth(), one.clone()).await; // verifies the credentials
    let (_, path, _) = h.proxy("read", script_auth(), one.clone()).await;
    assert_eq!(path.as_deref(), Some("cache"));
    wait_for_metric(&h, r#"sgcache_proxy_verify_total{outcome="match"} 1"#).await;
    // A change made straight on the site (no event follower here): the cache is stale, and
    // the check says so.
    let (_, _, updated) = h
        .direct(
            "update",
            script_auth(),
            json!({"type": "Shot", "id": 5, "fields": [
            {"field_name": "sg_cut_in", "value": 777}]}),
        )
        .await;
    assert!(updated["results"].is_object(), "{updated}");
    let (_, path, _) = h.proxy("read", script_auth(), one).await;
    assert_eq!(path.as_deref(), Some("cache"));
    wait_for_metric(&h, r#"sgcache_proxy_verify_total{outcome="mismatch"} 1"#).await;
    h.stop().await;
    db.drop().await;
}

/// The proxy's pool does not ping a connection before each statement (a round trip per read):
/// a connection the server ended (a restart, `pg_terminate_backend`) is found dead by the
/// statement itself, and the read is run again on a fresh connection, still answered from
/// the cache, not sent to the site.
#[tokio::test]
async fn a_read_on_a_connection_the_server_ended_is_run_again_on_a_fresh_one() {
    let db = TestDb::create("sgcache_proxy").await.unwrap();
    let proxy_db = db.proxy_pool(2).await;
    let Setup { h, db } = setup_on(db, Some(proxy_db), |c| c.result_cache_bytes = 0).await;
    let read = |status: &str| shots(cond("sg_status_list", "is", json!(status)));
    // The principal's first read verifies its credentials at the site.
    h.proxy("read", script_auth(), read("ip")).await;
    // Both connections of the pool open and idle.
    let (a, b) = tokio::join!(
        h.proxy("read", script_auth(), read("ip")),
        h.proxy("read", script_auth(), read("fin"))
    );
    assert_eq!(
        (a.1.as_deref(), b.1.as_deref()),
        (Some("cache"), Some("cache"))
    );

    let ended = sgcache_tests::pg::terminate_sessions(&db.name).await;
    assert!(ended >= 2, "ended {ended} sessions");
    for status in ["ip", "fin", "wtg"] {
        let (status_code, path, proxied) = h.proxy("read", script_auth(), read(status)).await;
        let (_, _, direct) = h.direct("read", script_auth(), read(status)).await;
        assert_eq!(
            (status_code, path.as_deref()),
            (200, Some("cache")),
            "{status}"
        );
        assert_eq!(proxied, direct, "{status}");
    }
    let ready: Value = h.get_json("/readyz").await;
    assert_eq!(ready["database"], "ok", "{ready}");
    h.stop().await;
    db.drop().await;
}
