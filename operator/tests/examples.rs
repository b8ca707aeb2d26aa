//! Every example in `examples/` against the site schema fixture (the real site's schema, as
//! the test site serves it): each valid one plans without error, as `migrate` would, and a
//! ShotgunCache also passes the operator's Kubernetes checks. The intentionally invalid one
//! fails for the reasons its header documents. (Their CRD-schema validation is in
//! tests/chart/test_chart.py, which has a JSON-schema validator.)

use std::path::PathBuf;

use serde_json::Value;
use sgcache::plan::{plan, DbState, PlanOptions};
use sgcache::schema::{fixture_dir, SiteSchema};
use sgcache::ShotgunCacheSpec;
use sgcache_operator::resources::validate_for_kubernetes;

fn examples() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut docs = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    for path in paths {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in text.split("\n---\n") {
            let value: Value = serde_saphyr::from_str(doc).expect("valid YAML");
            if !value.is_null() {
                docs.push((name.clone(), value));
            }
        }
    }
    assert!(docs.len() >= 3, "{docs:?}");
    docs
}

/// The spec of a document: a ShotgunCache's `spec`, or a worker config file itself.
fn spec_of(doc: &Value) -> (bool, Value) {
    match doc["kind"].as_str() {
        Some("ShotgunCache") => (true, doc["spec"].clone()),
        _ => (false, doc.clone()),
    }
}

/// Every problem the example has: parsing, the operator's checks, the plan on the site schema.
fn problems(doc: &Value, site: &SiteSchema) -> Vec<String> {
    let (is_resource, spec) = spec_of(doc);
    let yaml = serde_saphyr::to_string(&spec).unwrap();
    let spec = match ShotgunCacheSpec::from_yaml(&yaml, "example") {
        Ok(s) => s,
        Err(e) => return vec![e.to_string()],
    };
    let mut found = Vec::new();
    if is_resource {
        found.extend(validate_for_kubernetes(&spec));
    }
    if let Err(e) = plan(&spec, site, &DbState::default(), PlanOptions::default()) {
        found.push(e.to_string());
    }
    found
}

#[test]
fn every_example_plans_on_the_site_schema_and_the_invalid_one_fails_as_documented() {
    let site = SiteSchema::load_dir(&fixture_dir()).expect("the site schema fixture");
    let mut checked = 0;
    for (name, doc) in examples() {
        let found = problems(&doc, &site);
        if name.contains("invalid") {
            let all = found.join("; ");
            // Its header: a field name the pattern refuses, an unknown policy, an empty list.
            assert!(
                all.contains("Forget") || all.contains("code; DROP TABLE shot"),
                "{name} fails for the documented reason: {all}"
            );
        } else {
            assert!(found.is_empty(), "{name}: {found:?}");
            checked += 1;
        }
    }
    assert!(checked >= 2, "shotguncache.yaml and studio.yaml checked");
}

#[test]
fn a_field_the_site_lacks_is_caught_like_the_old_example() {
    let site = SiteSchema::load_dir(&fixture_dir()).unwrap();
    let (_, doc) = examples()
        .into_iter()
        .find(|(n, _)| n == "shotguncache.yaml")
        .unwrap();
    let mut broken = doc.clone();
    broken["spec"]["entities"][0]["fields"]
        .as_array_mut()
        .unwrap()
        .push("entity".into());
    let found = problems(&broken, &site).join("; ");
    assert!(
        found.contains("entity"),
        "Shot.entity is not a site field: {found}"
    );
}

#[test]
fn every_link_the_examples_declare_is_served_from_the_cache() {
    // A declared link whose target type is not cached passes through (Coverage False).
    let site = SiteSchema::load_dir(&fixture_dir()).unwrap();
    for (name, doc) in examples() {
        if name.contains("invalid") {
            continue;
        }
        let (_, spec) = spec_of(&doc);
        let yaml = serde_saphyr::to_string(&spec).unwrap();
        let spec = ShotgunCacheSpec::from_yaml(&yaml, "example").unwrap();
        let gaps: Vec<String> = sgcache::plan::link_gaps(&spec, &site)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(gaps.is_empty(), "{name}: {gaps:?}");
    }
}
