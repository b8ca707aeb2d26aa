//! Refreshing entities of the cache from the site, by id: after a write (write-through) and
//! after a verification mismatch.
//!
//! Always with the cache's own credentials (`SHOTGUN_SCRIPT_NAME`/`SHOTGUN_API_KEY` or the
//! spec): the cache holds what its own script sees, and a client may see less (permission
//! groups, per-project visibility), so a re-read with a client's credentials could overwrite
//! or retire, for everyone, what that client cannot see. Without them nothing is refreshed.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::{json, Map, Value};
use sgcache::api3::is_error_body;
use sgcache::sql::Db;
use sgcache::storage::{self, WriteSource};

use super::upstream::{Kind, SiteCall};
use super::AppState;

/// Largest `id in [...]` list per refresh read.
const REFRESH_PAGE: usize = 500;

/// What to do with ids the site does not return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Leave them (a write-through: the write's own answer said they exist).
    Keep,
    /// Retire them (verification: the site no longer has them, for the cache's script).
    Retire,
}

/// The cache's own credentials, without which nothing is refreshed (counted in
/// `sgcache_proxy_refreshes_skipped_total`).
pub fn service_auth(state: &AppState) -> Option<&Map<String, Value>> {
    let auth = state.policy.service_auth.as_ref();
    if auth.is_none() {
        state.telemetry.metrics.refreshes_skipped.inc();
        tracing::warn!(
            "no credentials of the cache's own (SHOTGUN_SCRIPT_NAME/SHOTGUN_API_KEY): entities are not refreshed from the site"
        );
    }
    auth
}

/// Re-reads `ids` of `ty` from the site with every cached field and writes them; returns how
/// many were asked for. `Ok(0)` when the type is not cached or there are no service
/// credentials.
pub async fn refresh(
    state: &AppState,
    db: &Db,
    ty: &str,
    ids: &[i64],
    missing: Missing,
) -> anyhow::Result<usize> {
    let Some(auth) = service_auth(state) else {
        return Ok(0);
    };
    let dbstate = storage::read_state(db).await?;
    if !dbstate.types.contains_key(ty) {
        return Ok(0);
    }
    let fields: Vec<String> = dbstate
        .live_fields(ty)
        .map(|(n, _)| n.clone())
        .filter(|n| n != "id")
        .collect();
    let mut n = 0;
    for chunk in ids.chunks(REFRESH_PAGE) {
        // A refresh read overtaken by a delete or revive answered meanwhile leaves its flag.
        let at = storage::read_mark(db).await?;
        let rows = read_from_site(state, auth, ty, &fields, chunk).await?;
        let seen: BTreeSet<i64> = rows.iter().filter_map(|r| r["id"].as_i64()).collect();
        let gone: Vec<i64> = chunk
            .iter()
            .copied()
            .filter(|i| !seen.contains(i))
            .collect();
        let mut tx = db.begin().await?;
        let live = WriteSource::Read { at, retired: false };
        let out = storage::upsert_entities(&mut tx, &dbstate, ty, &rows, live).await?;
        if missing == Missing::Retire && !gone.is_empty() {
            let gone_source = WriteSource::Read { at, retired: true };
            storage::retire(&mut tx, &dbstate, ty, &gone, gone_source).await?;
        }
        tx.commit().await?;
        if out.unstorable > 0 {
            // A field just became unservable: stop serving it now, not at the next refresh.
            state.refresh_catalog().await;
        }
        n += chunk.len();
    }
    Ok(n)
}

/// Reads entities by id from the site with the given fields.
pub async fn read_from_site(
    state: &AppState,
    auth: &Map<String, Value>,
    ty: &str,
    fields: &[String],
    ids: &[i64],
) -> anyhow::Result<Vec<Value>> {
    let body = json!({"method_name": "read", "params": [auth, {
        "type": ty,
        "filters": {"logical_operator": "and", "conditions": [
            {"path": "id", "relation": "in", "values": ids}]},
        "return_fields": fields,
        "paging": {"entities_per_page": ids.len(), "current_page": 1},
        "return_paging_info_without_counts": true,
    }]});
    let call = SiteCall {
        kind: Kind::Background,
        principal: None,
        path: "/api3/json",
        headers: &HeaderMap::new(),
        body: Bytes::from(body.to_string()),
    };
    let resp = state
        .upstream
        .send(call)
        .await
        .map_err(|f| anyhow::anyhow!("refresh read of {ty} failed: {f:?}"))?
        .response;
    let answer = resp
        .json()
        .filter(|b| resp.status.is_success() && !is_error_body(b))
        .ok_or_else(|| {
            anyhow::anyhow!("refresh read of {ty} failed with status {}", resp.status)
        })?;
    Ok(answer["results"]["entities"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}
