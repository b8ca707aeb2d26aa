//! Engine tests through the in-process dispatcher: filters against a deliberately simple
//! reference evaluator (including property tests), events, writes, errors, paging.

mod events;
mod filters;
mod quirks;
mod reference;
mod semantics;
mod writes;

use serde_json::{json, Map, Value};
use sgcache::api3::{Api3Error, Request};

use crate::config::SimConfig;
use crate::site::Site;

pub const CLOCK: &str = "2024-11-20T12:00:00Z";

pub fn site_with(f: impl FnOnce(&mut SimConfig)) -> Site {
    let mut c = SimConfig {
        clock: Some(CLOCK.into()),
        ..SimConfig::default()
    };
    c.seed.scale = 120;
    f(&mut c);
    Site::new(&c).expect("site starts")
}

pub fn site() -> Site {
    site_with(|_| {})
}

pub fn auth_of(name: &str, key: &str) -> Map<String, Value> {
    match json!({"script_name": name, "script_key": key}) {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

pub fn call_as(
    site: &Site,
    auth: Map<String, Value>,
    method: &str,
    payload: Value,
) -> Result<Value, Api3Error> {
    site.call(&Request {
        method_name: method.into(),
        auth,
        payload,
    })
    .map(|v| v["results"].clone())
}

pub fn call(site: &Site, method: &str, payload: Value) -> Result<Value, Api3Error> {
    call_as(site, auth_of("sgcache_test", "test_key"), method, payload)
}

pub fn and(conds: Value) -> Value {
    json!({"logical_operator": "and", "conditions": conds})
}

/// Every matching row (no paging), with the given return fields.
pub fn read_all(site: &Site, ty: &str, filters: Value, fields: &[&str]) -> Vec<Value> {
    read_with(
        site,
        json!({"type": ty, "filters": filters, "return_fields": fields}),
    )
}

pub fn read_with(site: &Site, payload: Value) -> Vec<Value> {
    let r = call(site, "read", payload).expect("read succeeds");
    r["entities"].as_array().cloned().unwrap_or_default()
}

pub fn ids(rows: &[Value]) -> Vec<u64> {
    rows.iter().filter_map(|r| r["id"].as_u64()).collect()
}

pub fn err_of(r: Result<Value, Api3Error>) -> Api3Error {
    match r {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e,
    }
}
