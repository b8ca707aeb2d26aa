//! Field by field, the cache against the site: every cached type's rows (retired flag
//! included) read from the cache's tables and from the site's API. Shared by the freshness
//! and failover tests and the crash trials.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sgcache::schema::Storage;
use sgcache::site::SiteClient;
use sgcache::sql::{format_datetime, Db, SqlValue};
use sgcache::storage;

/// All rows of `ty` on the site (active and retired) with `fields`, by id, and whether retired.
pub async fn site_rows(
    c: &SiteClient,
    ty: &str,
    fields: &[String],
) -> BTreeMap<i64, (bool, Value)> {
    let mut out = BTreeMap::new();
    for (retired, only) in [(false, "active"), (true, "retired")] {
        let mut after = 0;
        loop {
            let r = c
                .call(
                    "read",
                    json!({"type": ty, "filters": {"logical_operator": "and", "conditions": [
                        {"path": "id", "relation": "greater_than", "values": [after]}]},
                       "return_fields": fields, "return_only": only,
                       "sorts": [{"field_name": "id", "direction": "asc"}],
                       "paging": {"entities_per_page": 500, "current_page": 1}}),
                )
                .await
                .unwrap_or_else(|e| panic!("read {ty} from the site: {e}"));
            let rows = r["entities"].as_array().cloned().unwrap_or_default();
            for row in &rows {
                let id = row["id"].as_i64().unwrap();
                after = id;
                out.insert(id, (retired, row.clone()));
            }
            // Only an empty page ends the scan: the site may cap pages below 500.
            if rows.is_empty() {
                break;
            }
        }
    }
    out
}

/// A cached value as the site would spell it.
fn api_value(v: &SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Bool(b) => json!(b),
        SqlValue::Int(i) => json!(i),
        SqlValue::Float(f) => json!(f),
        SqlValue::Text(s) => json!(s),
        SqlValue::Json(j) => j.clone(),
        SqlValue::Date(d) => json!(d.format("%Y-%m-%d").to_string()),
        SqlValue::DateTime(t) => json!(format_datetime(t)),
    }
}

/// The site's value reduced to what the cache keeps (links: type and id).
fn site_value(storage: Storage, v: &Value) -> Value {
    let link = |l: &Value| json!({"type": l["type"], "id": l["id"]});
    match storage {
        Storage::EntityLink if !v.is_null() => link(v),
        Storage::MultiEntity => Value::Array(
            v.as_array()
                .map(|a| a.iter().map(link).collect())
                .unwrap_or_default(),
        ),
        _ => v.clone(),
    }
}

/// Every difference between the cache and the site, for every cached type, field by field
/// (retired flag included). Empty when they agree. Links to retired entities are hidden on the
/// site's reads (the link itself is kept and comes back on revival), so they are hidden here
/// too, using the cache's own retired flags, as the proxy's reads do.
pub async fn compare(db: &Db, site: &SiteClient) -> Vec<String> {
    let state = storage::read_state(db).await.unwrap();
    let mut diffs = Vec::new();
    let mut caches = BTreeMap::new();
    for ty in state.types.keys() {
        let fields: Vec<(String, Storage)> = state
            .live_fields(ty)
            .map(|(n, r)| (n.clone(), r.storage()))
            .filter(|(n, s)| n != "id" && !matches!(s, Storage::Uncacheable(_)))
            .collect();
        let rows = cache_rows(db, ty, &fields).await;
        caches.insert(ty.clone(), (fields, rows));
    }
    let retired_in_cache = |l: &Value| {
        let (Some(t), Some(id)) = (l["type"].as_str(), l["id"].as_i64()) else {
            return false;
        };
        caches
            .get(t)
            .and_then(|(_, rows)| rows.get(&id))
            .is_some_and(|(r, _)| *r)
    };
    let visible = |st: Storage, v: Value| match (st, v) {
        (Storage::EntityLink, l) if retired_in_cache(&l) => Value::Null,
        (Storage::MultiEntity, Value::Array(a)) => {
            Value::Array(a.into_iter().filter(|l| !retired_in_cache(l)).collect())
        }
        (_, v) => v,
    };
    for (ty, (fields, cache)) in &caches {
        let names: Vec<String> = fields.iter().map(|(n, _)| n.clone()).collect();
        let site_now = site_rows(site, ty, &names).await;
        for (id, (retired, row)) in &site_now {
            let Some((c_retired, c_row)) = cache.get(id) else {
                diffs.push(format!("{ty} {id}: missing from the cache"));
                continue;
            };
            if retired != c_retired {
                diffs.push(format!(
                    "{ty} {id}: retired site={retired} cache={c_retired}"
                ));
            }
            for (name, st) in fields {
                let s = site_value(*st, row.get(name).unwrap_or(&Value::Null));
                let c = visible(*st, c_row.get(name).cloned().unwrap_or(Value::Null));
                let same = match (&s, &c) {
                    (Value::Number(a), Value::Number(b)) => {
                        (a.as_f64().unwrap_or(0.0) - b.as_f64().unwrap_or(0.0)).abs() < 1e-9
                    }
                    _ => s == c,
                };
                if !same {
                    diffs.push(format!("{ty} {id}.{name}: site={s} cache={c}"));
                }
            }
        }
        for (id, (retired, _)) in cache {
            if !site_now.contains_key(id) && !retired {
                diffs.push(format!("{ty} {id}: live in the cache, unknown to the site"));
            }
        }
    }
    diffs
}

/// Cached rows of `ty` in API form, by id, with their retired flag.
pub async fn cache_rows(
    db: &Db,
    ty: &str,
    fields: &[(String, Storage)],
) -> BTreeMap<i64, (bool, serde_json::Map<String, Value>)> {
    let table = sgcache::ident::table_name(ty);
    let mut cols = vec!["id".to_string(), "_retired".to_string()];
    for (n, s) in fields {
        match s {
            Storage::EntityLink => {
                cols.push(format!("{n}__type"));
                cols.push(format!("{n}__id"));
            }
            Storage::MultiEntity => {}
            _ => cols.push(n.clone()),
        }
    }
    let mut sql = db.sql();
    sql.push("SELECT ");
    for (i, c) in cols.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push_ident(c);
    }
    sql.push(" FROM ").push_ident(&table);
    let mut out = BTreeMap::new();
    for row in db.fetch_all(&sql).await.unwrap() {
        let SqlValue::Int(id) = row[0] else { continue };
        let retired = matches!(row[1], SqlValue::Bool(true) | SqlValue::Int(1));
        let mut m = serde_json::Map::new();
        let mut i = 2;
        for (n, s) in fields {
            match s {
                Storage::EntityLink => {
                    let v = match (&row[i], &row[i + 1]) {
                        (SqlValue::Text(t), SqlValue::Int(lid)) => json!({"type": t, "id": lid}),
                        _ => Value::Null,
                    };
                    m.insert(n.clone(), v);
                    i += 2;
                }
                Storage::MultiEntity => {}
                // SQLite keeps JSON as text and booleans as 0/1.
                Storage::Json => {
                    let v = match &row[i] {
                        SqlValue::Text(t) => serde_json::from_str(t).unwrap_or(Value::Null),
                        other => api_value(other),
                    };
                    m.insert(n.clone(), v);
                    i += 1;
                }
                Storage::Boolean => {
                    let v = match &row[i] {
                        SqlValue::Int(b) => json!(*b != 0),
                        other => api_value(other),
                    };
                    m.insert(n.clone(), v);
                    i += 1;
                }
                _ => {
                    m.insert(n.clone(), api_value(&row[i]));
                    i += 1;
                }
            }
        }
        out.insert(id, (retired, m));
    }
    for (n, s) in fields {
        if *s != Storage::MultiEntity {
            continue;
        }
        let assoc = sgcache::ident::assoc_table_name(ty, n);
        let mut sql = db.sql();
        sql.push("SELECT \"_entity_id\", \"_target_type\", \"_target_id\" FROM ")
            .push_ident(&assoc)
            .push(" ORDER BY \"_entity_id\", \"_position\"");
        for (_, (_, m)) in out.iter_mut() {
            m.insert(n.clone(), json!([]));
        }
        for r in db.fetch_all(&sql).await.unwrap() {
            if let [SqlValue::Int(e), SqlValue::Text(t), SqlValue::Int(lid)] = r.as_slice() {
                if let Some((_, m)) = out.get_mut(e) {
                    if let Some(Value::Array(a)) = m.get_mut(n) {
                        a.push(json!({"type": t, "id": lid}));
                    }
                }
            }
        }
    }
    out
}
