//! Writes: forwarded to the site; on success the touched entities are refreshed in the cache
//! so reads through the proxy see their own writes.
//!
//! A write's answer holds only the fields written, and writes have effects the answer does
//! not show (defaults, `updated_at`, the other side of links). So instead of storing the
//! answer, the proxy re-reads from the site every cached field of the written entity and of
//! every entity linked from the written link fields, before and after the write, and stores
//! that through the storage write path ([`super::refresh`], with the cache's own credentials
//! only). The event follower's later copy of the same change is a no-op there (its guards
//! skip data that is not newer).

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde_json::Value;
use sgcache::api3::{self, is_error_body};
use sgcache::query::Catalog;
use sgcache::schema::Storage;
use sgcache::sql::Db;
use sgcache::storage::{self, WriteSource};

use super::answer::{Outcome, Path};
use super::api3::failed;
use super::envelope::Envelope;
use super::reason::Reason;
use super::refresh::{refresh, Missing};
use super::upstream::{Kind, SiteCall};
use super::AppState;

pub async fn write(
    state: &AppState,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
    env: &Envelope<'_>,
) -> Outcome {
    let key = env.principal();
    let call = SiteCall {
        kind: Kind::Write,
        principal: key,
        path,
        headers,
        body,
    };
    // Never retried or synthesised as 502/504: the write may have reached the site.
    let resp = match state.upstream.send(call).await {
        Ok(answer) => answer.response,
        Err(failure) => return failed(failure, Reason::Write),
    };
    let answer = resp
        .json()
        .filter(|b| resp.status.is_success() && !is_error_body(b));
    // The payload is built only now that the site accepted the write.
    if let (Some(answer), Some(db), Some(req)) = (answer, state.cache.db(), env.to_request()) {
        if let Err(e) = write_through(state, db, &req, &answer).await {
            // The cache may now be older than the write: its types pass through until the
            // follower or a scan has brought it in (read-your-writes, `db_guard`).
            state.telemetry.metrics.write_through_failures.inc();
            let types = super::db_guard::written_types(&req);
            // Once per spell (every write fails while the database is out; the counter
            // counts them).
            if state.cache.guard.write_failed(types, chrono::Utc::now()) {
                tracing::warn!(error = %e, "write-through failed; the written types pass through until the cache has the write");
            } else {
                tracing::debug!(error = %e, "write-through failed");
            }
            state.refresh_catalog().await;
        }
        // Before the writer hears back: its next read must not get an answer kept from before
        // (the change notification is on its way, but may arrive after that read).
        state.cache.results.invalidate();
    }
    Outcome::new(resp.into_response(), Path::Site, Reason::Write)
}

/// Entities to re-read, by type.
type Touched = BTreeMap<String, BTreeSet<i64>>;

async fn write_through(
    state: &AppState,
    db: &Db,
    req: &api3::Request,
    answer: &Value,
) -> anyhow::Result<()> {
    let results = answer.get("results").cloned().unwrap_or(Value::Null);
    let ops: Vec<(String, Value, Value)> = if req.method_name == "batch" {
        let subs = req.payload.as_array().cloned().unwrap_or_default();
        let res = results.as_array().cloned().unwrap_or_default();
        subs.into_iter()
            .zip(res)
            .map(|(s, r)| {
                let m = s["request_type"].as_str().unwrap_or_default().to_string();
                (m, s, r)
            })
            .collect()
    } else {
        vec![(req.method_name.clone(), req.payload.clone(), results)]
    };
    let cat = state.cache.catalog();
    let dbstate = storage::read_state(db).await?;
    let mut touched = Touched::new();
    let mut retired: Vec<(String, i64)> = Vec::new();
    let mut revived: Vec<(String, i64)> = Vec::new();
    for (method, op, result) in ops {
        let Some(ty) = op["type"]
            .as_str()
            .filter(|t| dbstate.types.contains_key(*t))
        else {
            continue;
        };
        let id = match method.as_str() {
            "create" => {
                // The client takes the first element when the site answers with a list.
                let r = result.as_array().and_then(|a| a.first()).unwrap_or(&result);
                r["id"].as_i64()
            }
            _ => op["id"].as_i64(),
        };
        let Some(id) = id else { continue };
        match method.as_str() {
            "create" | "update" => {
                touched.entry(ty.to_string()).or_default().insert(id);
                link_targets(db, &cat, ty, id, &op, &mut touched).await?;
            }
            "delete" => retired.push((ty.to_string(), id)),
            "revive" if result == Value::Bool(true) => {
                revived.push((ty.to_string(), id));
                touched.entry(ty.to_string()).or_default().insert(id);
            }
            _ => {}
        }
    }
    if !retired.is_empty() || !revived.is_empty() {
        let mut tx = db.begin().await?;
        for (ty, id) in &retired {
            storage::retire(&mut tx, &dbstate, ty, &[*id], WriteSource::WriteThrough).await?;
        }
        for (ty, id) in &revived {
            storage::revive(&mut tx, &dbstate, ty, &[*id], WriteSource::WriteThrough).await?;
        }
        tx.commit().await?;
    }
    for (ty, ids) in touched {
        let ids: Vec<i64> = ids.into_iter().collect();
        refresh(state, db, &ty, &ids, Missing::Keep).await?;
    }
    Ok(())
}

/// Adds the entities linked from the written link fields: the new values from the request
/// and the old ones still in the cache (their other side may have changed).
async fn link_targets(
    db: &Db,
    cat: &Catalog,
    ty: &str,
    id: i64,
    op: &Value,
    touched: &mut Touched,
) -> anyhow::Result<()> {
    let Some(ct) = cat.types.get(ty) else {
        return Ok(());
    };
    let mut add = |t: &str, i: i64| {
        if cat.types.contains_key(t) {
            touched.entry(t.to_string()).or_default().insert(i);
        }
    };
    for f in op["fields"].as_array().into_iter().flatten() {
        let Some(cf) = f["field_name"].as_str().and_then(|n| ct.fields.get(n)) else {
            continue;
        };
        if !matches!(cf.storage, Storage::EntityLink | Storage::MultiEntity) {
            continue;
        }
        let value = &f["value"];
        let links = value
            .as_array()
            .cloned()
            .unwrap_or_else(|| vec![value.clone()]);
        for l in links {
            if let (Some(t), Some(i)) = (l["type"].as_str(), l["id"].as_i64()) {
                add(t, i);
            }
        }
        // Old values: the cached row has not been refreshed yet.
        let multi = cf.storage == Storage::MultiEntity;
        for (t, i) in storage::cached_links(db, &ct.table, ty, &cf.name, multi, id).await? {
            add(&t, i);
        }
    }
    Ok(())
}
