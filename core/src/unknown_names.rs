//! Names a person wrote that are not known — keys of a spec document, entity types and fields
//! the site lacks — found all at once (serde stops at the first) and each with a "did you
//! mean" for near misses, so one run of the command shows every typo.

use serde_json::Value;

/// How alike (Jaro-Winkler, 0–1) a known name must be to an unknown one to be suggested:
/// high enough that `feilds`→`fields` and `sg_status`→`sg_status_list` are offered, not
/// unrelated names.
const SUGGEST_SIMILARITY: f64 = 0.8;

/// Also suggested: a name one edit (or swap of neighbours) away, which Jaro-Winkler rates
/// low on short names (`ulr`→`url`).
const SUGGEST_EDITS: usize = 1;

/// The known name closest to `name`, if it is close enough to be what was meant.
pub fn did_you_mean<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = name.to_lowercase();
    known
        .into_iter()
        .filter_map(|k| {
            let k_lower = k.to_lowercase();
            let likeness = strsim::jaro_winkler(&lower, &k_lower);
            let edits = strsim::damerau_levenshtein(&lower, &k_lower);
            (likeness >= SUGGEST_SIMILARITY || edits <= SUGGEST_EDITS).then_some((likeness, k))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// `what` followed by ` (did you mean X?)` when a known name is close.
pub fn describe<'a>(what: &str, name: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    match did_you_mean(name, known) {
        Some(k) => format!("{what} (did you mean {k}?)"),
        None => what.to_string(),
    }
}

/// Every key of `doc` that `schema` (a JSON schema whose objects are closed with
/// `additionalProperties: false`, as schemars writes for `deny_unknown_fields`) does not
/// allow, as `unknown key a.b[0].c (did you mean d?)`, in document order.
pub fn unknown_keys(schema: &Value, doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(schema, schema, doc, "", &mut out);
    out
}

fn walk(root: &Value, schema: &Value, doc: &Value, path: &str, out: &mut Vec<String>) {
    let branches = branches(root, schema);
    match doc {
        Value::Object(map) => {
            let props: Vec<(&String, &Value)> = branches
                .iter()
                .filter_map(|b| b.get("properties")?.as_object())
                .flatten()
                .collect();
            let closed = branches
                .iter()
                .any(|b| b.get("additionalProperties") == Some(&Value::Bool(false)));
            for (key, value) in map {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match props.iter().find(|(k, _)| *k == key) {
                    Some((_, sub)) => walk(root, sub, value, &here, out),
                    None if closed && !props.is_empty() => out.push(describe(
                        &format!("unknown key {here}"),
                        key,
                        props.iter().map(|(k, _)| k.as_str()),
                    )),
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            for b in &branches {
                if let Some(item) = b.get("items") {
                    for (i, v) in items.iter().enumerate() {
                        walk(root, item, v, &format!("{path}[{i}]"), out);
                    }
                    return;
                }
            }
        }
        _ => {}
    }
}

/// The schema itself and the members of its `anyOf`/`oneOf`/`allOf` (an `Option` is
/// `anyOf: [T, null]`), with `$ref`s to `#/$defs/…` followed.
fn branches<'a>(root: &'a Value, schema: &'a Value) -> Vec<&'a Value> {
    let schema = resolve(root, schema);
    let mut out = vec![schema];
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(members) = schema.get(key).and_then(Value::as_array) {
            out.extend(members.iter().map(|m| resolve(root, m)));
        }
    }
    out
}

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    let mut s = schema;
    // A bounded chain: schemars never nests references, a hand-made cycle must not hang us.
    for _ in 0..8 {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
                Some(target) => s = target,
                None => break,
            },
            None => break,
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn near_misses_are_suggested_and_strangers_are_not() {
        let known = ["fields", "exclude", "type"];
        assert_eq!(did_you_mean("feilds", known), Some("fields"));
        assert_eq!(did_you_mean("Type", known), Some("type"));
        assert_eq!(did_you_mean("colour", known), None);
        assert_eq!(
            did_you_mean("sg_status", ["sg_status_list", "code"]),
            Some("sg_status_list")
        );
    }

    #[test]
    fn every_unknown_key_is_found_through_refs_options_and_arrays() {
        let schema = json!({
            "type": "object", "additionalProperties": false,
            "properties": {
                "entities": {"type": "array", "items": {"$ref": "#/$defs/E"}},
                "site": {"anyOf": [{"$ref": "#/$defs/S"}, {"type": "null"}]}
            },
            "$defs": {
                "E": {"type": "object", "additionalProperties": false,
                      "properties": {"type": {}, "fields": {}}},
                "S": {"type": "object", "additionalProperties": false,
                      "properties": {"url": {}}}
            }
        });
        let doc = json!({
            "entities": [{"type": "Shot", "feilds": []}, {"type": "Asset", "fields": []}],
            "site": {"ulr": "x"},
            "zzz": 1
        });
        assert_eq!(
            unknown_keys(&schema, &doc),
            vec![
                "unknown key entities[0].feilds (did you mean fields?)",
                "unknown key site.ulr (did you mean url?)",
                "unknown key zzz",
            ]
        );
    }
}
