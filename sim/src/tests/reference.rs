//! A deliberately naive filter evaluator over the JSON rows `read` returns. It shares no
//! code with the engine: values are compared as JSON, text by `to_lowercase`, deep paths
//! through `sg_sequence` / `assets` via the link `name` (their display field is `code`).

use serde_json::Value;

fn lc(v: &Value) -> String {
    v.as_str().unwrap_or("").to_lowercase()
}

/// The list of candidate values for a path on a row, and whether the path is existential.
fn values(row: &Value, path: &str) -> (Vec<Value>, bool) {
    match path {
        "sg_sequence.Sequence.code" => {
            let link = &row["sg_sequence"];
            (
                vec![link.get("name").cloned().unwrap_or(Value::Null)],
                false,
            )
        }
        "assets.Asset.code" => (
            row["assets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["name"].clone())
                .collect(),
            true,
        ),
        _ => (vec![row[path].clone()], false),
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.to_lowercase() == y.to_lowercase(),
        (Value::Object(_), Value::Object(_)) => a["type"] == b["type"] && a["id"] == b["id"],
        (Value::Number(_), Value::Number(_)) => num(a) == num(b),
        _ => a == b,
    }
}

fn is_empty(v: &Value) -> bool {
    v.is_null() || v.as_array().is_some_and(|a| a.is_empty())
}

/// `v` less than / greater than `x`: numbers numerically, dates as their text.
fn order(v: &Value, x: &Value) -> Option<std::cmp::Ordering> {
    match (v, x) {
        (Value::Number(_), Value::Number(_)) => num(v)?.partial_cmp(&num(x)?),
        (Value::String(a), Value::String(b)) => Some(a.as_str().cmp(b.as_str())),
        _ => None,
    }
}

fn positive(rel: &str, v: &Value, vals: &[Value]) -> bool {
    let items: Vec<Value> = match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    let list = v.is_array();
    let any = |f: &dyn Fn(&Value) -> bool| items.iter().any(f);
    match rel {
        "is" if vals[0].is_null() => is_empty(v),
        "is" => any(&|i| same(i, &vals[0])),
        "in" => vals.iter().any(|x| {
            if x.is_null() {
                is_empty(v)
            } else {
                any(&|i| same(i, x))
            }
        }),
        "less_than" => order(v, &vals[0]) == Some(std::cmp::Ordering::Less),
        "greater_than" => order(v, &vals[0]) == Some(std::cmp::Ordering::Greater),
        "between" => {
            !v.is_null()
                && (vals[0].is_null() || order(v, &vals[0]) != Some(std::cmp::Ordering::Less))
                && (vals[1].is_null() || order(v, &vals[1]) != Some(std::cmp::Ordering::Greater))
        }
        "contains" => lc(v).contains(&lc(&vals[0])),
        "starts_with" => lc(v).starts_with(&lc(&vals[0])),
        "ends_with" => lc(v).ends_with(&lc(&vals[0])),
        // A null link has no name: name relations never match it.
        "name_contains" => any(&|i| !i.is_null() && lc(&i["name"]).contains(&lc(&vals[0]))),
        "name_is" => any(&|i| !i.is_null() && lc(&i["name"]) == lc(&vals[0])),
        "type_is" if vals[0].is_null() => is_empty(v),
        "type_is" => any(&|i| i["type"] == vals[0]),
        _ => panic!("reference does not know {rel} (list={list})"),
    }
}

fn negated(rel: &str) -> Option<&'static str> {
    Some(match rel {
        "is_not" => "is",
        "not_in" => "in",
        "not_contains" => "contains",
        "not_between" => "between",
        "type_is_not" => "type_is",
        "name_not_contains" => "name_contains",
        _ => return None,
    })
}

/// Evaluates a wire filter on one row.
pub fn eval(filter: &Value, row: &Value) -> bool {
    if let Some(conds) = filter.get("conditions") {
        let conds = conds.as_array().unwrap();
        return if filter["logical_operator"] == "or" {
            conds.iter().any(|c| eval(c, row))
        } else {
            conds.iter().all(|c| eval(c, row))
        };
    }
    let path = filter["path"].as_str().unwrap();
    let rel = filter["relation"].as_str().unwrap();
    let vals = filter["values"].as_array().unwrap();
    let (base, neg) = match negated(rel) {
        Some(b) => (b, true),
        None => (rel, false),
    };
    let (cands, existential) = values(row, path);
    let hit = if existential {
        cands.iter().any(|c| positive(base, c, vals))
    } else {
        positive(base, &cands[0], vals)
    };
    hit != neg
}
