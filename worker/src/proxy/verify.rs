//! Verification of sampled cached reads (`workers.proxy.verifySampleRate`): the read is re-run
//! against the site in the background; when the answers differ, the differing fields are
//! logged (names only: values may be secrets) and every entity of the read's type that either
//! answer holds is re-read from the site by id and written into the cache (entities the site
//! no longer returns are retired), so the next read of them is right. Entities linked from a
//! differing field are re-read too: a link's `name` comes from the target's display field, so
//! a stale name is repaired only by refreshing the target.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::{Map, Value};
use sgcache::api3::{self, is_error_body};

use super::refresh::{refresh, service_auth, Missing};
use super::upstream::{Kind, SiteCall};
use super::AppState;

/// How a cached answer differs from the site's.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Difference {
    /// Names of the fields whose values differ on an entity both answers hold.
    pub fields: BTreeSet<String>,
    /// Ids whose entity differs, or that only one answer holds.
    pub ids: BTreeSet<i64>,
    /// Something else differs (order, paging information, entities without ids).
    pub other: bool,
    /// Entities linked from a differing field in either answer, by type.
    pub linked: BTreeMap<String, BTreeSet<i64>>,
}

impl Difference {
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.ids.is_empty() && !self.other
    }
}

fn entities(results: &Value) -> Option<BTreeMap<i64, &Map<String, Value>>> {
    let list = results.get("entities")?.as_array()?;
    let mut out = BTreeMap::new();
    for e in list {
        let obj = e.as_object()?;
        out.insert(obj.get("id")?.as_i64()?, obj);
    }
    Some(out)
}

/// Adds the `{type, id}` links in a field value (a link or a list of links) to `out`.
fn collect_links(value: Option<&Value>, out: &mut BTreeMap<String, BTreeSet<i64>>) {
    match value {
        Some(Value::Array(items)) => items.iter().for_each(|v| collect_links(Some(v), out)),
        Some(Value::Object(link)) => {
            if let (Some(ty), Some(id)) = (
                link.get("type").and_then(Value::as_str),
                link.get("id").and_then(Value::as_i64),
            ) {
                out.entry(ty.to_string()).or_default().insert(id);
            }
        }
        _ => {}
    }
}

/// Compares the `results` of a cached read with the site's, entity by entity.
pub fn difference(cached: &Value, site: &Value) -> Difference {
    let mut d = Difference::default();
    if cached == site {
        return d;
    }
    let (Some(c), Some(s)) = (entities(cached), entities(site)) else {
        d.other = true;
        return d;
    };
    for (id, ce) in &c {
        let Some(se) = s.get(id) else {
            d.ids.insert(*id);
            continue;
        };
        let names: BTreeSet<&String> = ce.keys().chain(se.keys()).collect();
        for name in names {
            if ce.get(name) != se.get(name) {
                d.fields.insert(name.clone());
                d.ids.insert(*id);
                collect_links(ce.get(name), &mut d.linked);
                collect_links(se.get(name), &mut d.linked);
            }
        }
    }
    d.ids.extend(s.keys().filter(|id| !c.contains_key(id)));
    if d.ids.is_empty() {
        // Same entities with the same values: order or paging information differ.
        d.other = true;
    }
    d
}

/// Re-runs a read answered from the cache against the site, counts whether they agree and
/// repairs the cache when they do not. The log names the type, fields and ids, never values
/// or credentials.
pub async fn verify(
    state: Arc<AppState>,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    cached: Value,
) {
    let call = SiteCall {
        kind: Kind::Background,
        principal: None,
        path: &path,
        headers: &headers,
        body: body.clone(),
    };
    let answer = state.upstream.send(call).await;
    let site = answer
        .ok()
        .map(|a| a.response)
        .filter(|r| r.status.is_success())
        .and_then(|r| r.json())
        .filter(|b| !is_error_body(b));
    let Some(site) = site else {
        state.telemetry.metrics.verified("error");
        return;
    };
    let site_results = site.get("results").cloned().unwrap_or(Value::Null);
    let diff = difference(&cached, &site_results);
    if diff.is_empty() {
        state.telemetry.metrics.verified("match");
        return;
    }
    state.telemetry.metrics.verified("mismatch");
    let req = api3::Request::parse(&body).ok();
    let entity_type = req
        .as_ref()
        .and_then(|r| r.payload.get("type"))
        .and_then(Value::as_str)
        .map(str::to_string);
    tracing::warn!(
        entity_type = entity_type.as_deref().unwrap_or("?"),
        fields = ?diff.fields,
        ids = ?diff.ids.iter().take(20).collect::<Vec<_>>(),
        entities = diff.ids.len(),
        other = diff.other,
        "cached read differs from the site; refreshing the entities"
    );
    let Some(ty) = entity_type else {
        return;
    };
    // Refreshed with the cache's own credentials only (see `super::refresh`).
    let (Some(db), Some(_)) = (state.cache.db(), service_auth(&state)) else {
        return;
    };
    let mut targets = diff.linked;
    targets.entry(ty).or_default().extend(diff.ids);
    for (ty, ids) in targets.into_iter().filter(|(_, ids)| !ids.is_empty()) {
        let ids: Vec<i64> = ids.into_iter().collect();
        match refresh(&state, db, &ty, &ids, Missing::Retire).await {
            Ok(n) => {
                state.cache.results.invalidate();
                state.telemetry.metrics.verify_refreshed.inc_by(n as u64);
                tracing::info!(entity_type = %ty, entities = n, "refreshed entities after a verification mismatch");
            }
            Err(e) => {
                tracing::warn!(entity_type = %ty, error = %e, "refresh after a verification mismatch failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_name_fields_and_ids_only() {
        let cached = json!({"entities": [
            {"type": "Shot", "id": 1, "code": "a", "description": "secret-x"},
            {"type": "Shot", "id": 2, "code": "b", "description": null},
            {"type": "Shot", "id": 3, "code": "c", "description": null}]});
        let site = json!({"entities": [
            {"type": "Shot", "id": 1, "code": "a", "description": "secret-y"},
            {"type": "Shot", "id": 2, "code": "b", "description": null},
            {"type": "Shot", "id": 4, "code": "d", "description": null}]});
        let d = difference(&cached, &site);
        assert_eq!(d.fields, BTreeSet::from(["description".to_string()]));
        assert_eq!(d.ids, BTreeSet::from([1, 3, 4]));
        assert!(!d.other);
        assert!(d.linked.is_empty());
        assert!(!format!("{d:?}").contains("secret"));
        assert!(difference(&cached, &cached).is_empty());
        // Same entities in another order: a difference, but no entity to refresh.
        let swapped = json!({"entities": [cached["entities"][1], cached["entities"][0], cached["entities"][2]]});
        let d = difference(&cached, &swapped);
        assert!(d.other && d.ids.is_empty() && !d.is_empty());
    }

    #[test]
    fn links_in_differing_fields_are_collected_from_both_answers() {
        let cached = json!({"entities": [
            {"type": "Shot", "id": 1, "sg_sequence": {"type": "Sequence", "id": 7, "name": "old"},
             "assets": [{"type": "Asset", "id": 3, "name": "a"}],
             "project": {"type": "Project", "id": 9, "name": "p"}}]});
        let site = json!({"entities": [
            {"type": "Shot", "id": 1, "sg_sequence": {"type": "Sequence", "id": 7, "name": "new"},
             "assets": [{"type": "Asset", "id": 3, "name": "a"}, {"type": "Asset", "id": 4, "name": "b"}],
             "project": {"type": "Project", "id": 9, "name": "p"}}]});
        let d = difference(&cached, &site);
        assert_eq!(
            d.fields,
            BTreeSet::from(["assets".into(), "sg_sequence".into()])
        );
        assert_eq!(d.ids, BTreeSet::from([1]));
        // The unchanged project link is not refreshed.
        assert_eq!(
            d.linked,
            BTreeMap::from([
                ("Asset".to_string(), BTreeSet::from([3, 4])),
                ("Sequence".to_string(), BTreeSet::from([7])),
            ])
        );
    }
}
