//! `summarize` (doc 3.3): record_count, count, sum, minimum, maximum, average, earliest,
//! latest, checked, unchecked; grouping `exact` only (other groupings are a clear error).

use std::time::Instant;

use serde_json::{json, Map, Value};
use sgcache::api3::{Api3Error, Filter};

use crate::filter::{compile, resolve_path, Path};
use crate::read::{project, scan, Scope};
use crate::store::{Row, Store};

struct Summary {
    field: String,
    kind: String,
    path: Path,
}

struct Grouping {
    path: Path,
    desc: bool,
}

fn list<'a>(p: &'a Value, key: &str) -> Result<&'a [Value], Api3Error> {
    match p.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(Api3Error::bad_request(format!("{key} must be a list"))),
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Result<&'a str, Api3Error> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| Api3Error::bad_request(format!("summarize: missing '{key}' in {v}")))
}

pub fn summarize(
    store: &Store,
    payload: &Value,
    now: i64,
    instant: Instant,
) -> Result<Value, Api3Error> {
    let ty = store.ty(str_of(payload, "type")?)?;
    let filter = Filter::parse(payload.get("filters").unwrap_or(&Value::Null))?;
    let filter = compile(store, ty, &filter, now)?;
    const KINDS: &[&str] = &[
        "record_count",
        "count",
        "sum",
        "minimum",
        "maximum",
        "average",
        "earliest",
        "latest",
        "checked",
        "unchecked",
    ];
    let summaries = list(payload, "summaries")?
        .iter()
        .map(|s| {
            let (field, kind) = (str_of(s, "field")?, str_of(s, "type")?);
            if !KINDS.contains(&kind) {
                return Err(Api3Error::bad_request(format!(
                    "summary type '{kind}' is not supported by the test site ({KINDS:?})"
                )));
            }
            Ok(Summary {
                field: field.into(),
                kind: kind.into(),
                path: resolve_path(store, ty, field)?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let groupings = list(payload, "grouping")?
        .iter()
        .map(|g| {
            let kind = str_of(g, "type")?;
            if kind != "exact" {
                return Err(Api3Error::bad_request(format!(
                    "grouping type '{kind}' is not supported by the test site (exact only)"
                )));
            }
            Ok(Grouping {
                path: resolve_path(store, ty, str_of(g, "field")?)?,
                desc: g.get("direction").and_then(Value::as_str) == Some("desc"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let include = payload
        .get("include_archived_projects")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let scope = Scope::new(store, ty, false, include);
    let rows: Vec<(u32, &Row)> = scan(store, &scope, &filter, false, instant).collect();
    let mut out = json!({ "summaries": compute(store, &summaries, &rows) });
    if !groupings.is_empty() {
        out["groups"] = groups(store, &summaries, &groupings, &rows);
    }
    Ok(out)
}

fn values(store: &Store, path: &Path, rows: &[(u32, &Row)]) -> Vec<Value> {
    rows.iter()
        .map(|(id, r)| project(store, path, *id, r, 0))
        .collect()
}

fn compute(store: &Store, summaries: &[Summary], rows: &[(u32, &Row)]) -> Value {
    let mut m = Map::new();
    for s in summaries {
        let vals = values(store, &s.path, rows);
        let set = vals.iter().filter(|v| !v.is_null() && *v != &json!([]));
        let nums: Vec<&Value> = vals.iter().filter(|v| v.is_number()).collect();
        let sum_f: f64 = nums.iter().filter_map(|v| v.as_f64()).sum();
        let all_int = nums.iter().all(|v| v.is_i64());
        let v = match s.kind.as_str() {
            "record_count" => json!(rows.len()),
            "count" => json!(set.count()),
            "sum" if all_int => json!(nums.iter().filter_map(|v| v.as_i64()).sum::<i64>()),
            "sum" => json!(sum_f),
            "average" if nums.is_empty() => Value::Null,
            "average" => json!(sum_f / nums.len() as f64),
            "minimum" | "earliest" => extreme(&vals, false),
            "maximum" | "latest" => extreme(&vals, true),
            "checked" => json!(vals.iter().filter(|v| **v == json!(true)).count()),
            _ => json!(vals.iter().filter(|v| **v == json!(false)).count()),
        };
        m.insert(s.field.clone(), v);
    }
    Value::Object(m)
}

/// Numbers compare numerically; date strings compare as text, which is chronological.
fn extreme(vals: &[Value], max: bool) -> Value {
    let mut best: Option<&Value> = None;
    for v in vals.iter().filter(|v| v.is_number() || v.is_string()) {
        let better = match best {
            None => true,
            Some(b) => {
                let o = match (v.as_f64(), b.as_f64()) {
                    (Some(x), Some(y)) => x.partial_cmp(&y),
                    _ => v.as_str().partial_cmp(&b.as_str()),
                };
                o == Some(if max {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Less
                })
            }
        };
        if better {
            best = Some(v);
        }
    }
    best.cloned().unwrap_or(Value::Null)
}

fn group_name(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        other => other.to_string(),
    }
}

fn groups(
    store: &Store,
    summaries: &[Summary],
    groupings: &[Grouping],
    rows: &[(u32, &Row)],
) -> Value {
    let Some((g, rest)) = groupings.split_first() else {
        return json!([]);
    };
    let mut buckets: Vec<(Value, Vec<(u32, &Row)>)> = Vec::new();
    for (row, v) in rows.iter().zip(values(store, &g.path, rows)) {
        match buckets.iter_mut().find(|(k, _)| *k == v) {
            Some((_, b)) => b.push(*row),
            None => buckets.push((v, vec![*row])),
        }
    }
    buckets.sort_by(|a, b| {
        let o = group_name(&a.0)
            .to_lowercase()
            .cmp(&group_name(&b.0).to_lowercase());
        if g.desc {
            o.reverse()
        } else {
            o
        }
    });
    let out = buckets
        .into_iter()
        .map(|(v, rows)| {
            let mut value = v.clone();
            if let Value::Object(o) = &mut value {
                o.insert("valid".into(), json!("valid"));
            }
            let mut m = json!({
                "group_name": group_name(&v), "group_value": value,
                "summaries": compute(store, summaries, &rows),
            });
            if !rest.is_empty() {
                m["groups"] = groups(store, summaries, rest, &rows);
            }
            m
        })
        .collect();
    Value::Array(out)
}
