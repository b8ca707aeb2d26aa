//! The chart's RBAC, enforced as a real API server's authorizer does: the rules are read from
//! `charts/sgcache-operator/templates/rbac.yaml` (its template lines dropped: the rules are
//! literal YAML, and `tests/chart` checks they equal what Helm renders), and every request is
//! mapped to the verb a real API server authorizes.

use std::path::PathBuf;

use serde_json::{json, Value};

/// The chart's release namespace in these tests (where the leader Lease Role applies).
pub const RELEASE_NAMESPACE: &str = "sgcache-system";
/// The user the chart's ServiceAccount authenticates as.
pub const SERVICE_ACCOUNT: &str = "system:serviceaccount:sgcache-system:sgcache-operator";

/// One `rules[]` entry.
#[derive(Clone, Debug)]
pub struct Rule {
    pub groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
}

impl Rule {
    fn allows(&self, verb: &str, group: &str, resource: &str) -> bool {
        let any = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
        any(&self.groups, group) && any(&self.resources, resource) && any(&self.verbs, verb)
    }
}

/// The ClusterRole's rules (every namespace) and the Role's (the release namespace only).
#[derive(Clone, Debug, Default)]
pub struct Rbac {
    pub cluster: Vec<Rule>,
    pub release_namespace: Vec<Rule>,
}

/// What a request asks for, in the authorizer's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    /// `configmaps`, or `shotguncaches/status` for a subresource.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

fn rules_of(doc: &Value) -> Vec<Rule> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    doc["rules"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .map(|r| Rule {
                    groups: strings(&r["apiGroups"]),
                    resources: strings(&r["resources"]),
                    verbs: strings(&r["verbs"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Rbac {
    /// The rules of the chart in this repository.
    pub fn from_chart() -> Rbac {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../charts/sgcache-operator/templates/rbac.yaml");
        let text = std::fs::read_to_string(&path).expect("the chart's rbac.yaml");
        Rbac::from_template(&text)
    }

    /// Parses the template's literal YAML (lines holding `{{` are dropped).
    pub fn from_template(text: &str) -> Rbac {
        let literal: String = text
            .lines()
            .filter(|l| !l.contains("{{"))
            .map(|l| format!("{l}\n"))
            .collect();
        let mut rbac = Rbac::default();
        for doc in literal.split("\n---\n") {
            let doc: Value = serde_saphyr::from_str(doc).expect("rbac.yaml parses");
            match doc["kind"].as_str() {
                Some("ClusterRole") => rbac.cluster.extend(rules_of(&doc)),
                Some("Role") => rbac.release_namespace.extend(rules_of(&doc)),
                _ => {}
            }
        }
        assert!(!rbac.cluster.is_empty(), "no ClusterRole in the chart");
        rbac
    }

    pub fn allows(&self, a: &Attributes) -> bool {
        let cluster = self.cluster.iter();
        let ns_rules = self
            .release_namespace
            .iter()
            .filter(|_| a.namespace.as_deref() == Some(RELEASE_NAMESPACE));
        cluster
            .chain(ns_rules)
            .any(|r| r.allows(&a.verb, &a.group, &a.resource))
    }
}

/// The authorizer's attributes of a request: verb from the method (`list`/`watch` for
/// collections), group, resource with subresource, namespace and name.
pub fn attributes(method: &http::Method, path: &str, query: &str) -> Option<Attributes> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => (group.to_string(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (resource, name, sub) = match rest {
        [r] => (*r, None, None),
        [r, n] => (*r, Some(n.to_string()), None),
        [r, n, s] => (*r, Some(n.to_string()), Some(*s)),
        _ => return None,
    };
    let verb = match (method.as_str(), name.is_some()) {
        ("GET", false) if query.contains("watch=true") => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    let resource = match sub {
        Some(s) => format!("{resource}/{s}"),
        None => resource.to_string(),
    };
    Some(Attributes {
        verb: verb.into(),
        group,
        resource,
        namespace,
        name,
    })
}

/// The 403 a real API server answers, in the `Status` format.
pub fn forbidden(a: &Attributes) -> Value {
    let (base, _) = a.resource.split_once('/').unwrap_or((&a.resource, ""));
    let what = match &a.name {
        Some(n) => format!("{} {n:?}", a.resource),
        None => a.resource.clone(),
    };
    let scope = match &a.namespace {
        Some(ns) => format!(" in the namespace {ns:?}"),
        None => " at the cluster scope".into(),
    };
    let message = format!(
        "{what} is forbidden: User {SERVICE_ACCOUNT:?} cannot {} resource {:?} in API group {:?}{scope}",
        a.verb, a.resource, a.group
    );
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": "Forbidden", "code": 403,
           "details": {"name": a.name, "group": a.group, "kind": base}})
}
