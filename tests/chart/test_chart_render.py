"""The chart as Helm renders it: `helm install` (helm-sdkpy, no wait) against a fake API server
(fake_apiserver.py), then every object Helm sent is validated with kubernetes-validate (strict)
and checked for consistency; the samples are validated against the CRD Helm installed."""

import asyncio
import json
import pathlib
import tempfile

import jsonschema
import kubernetes_validate
import pytest
import yaml
from helm_sdkpy import Configuration
from helm_sdkpy.actions import Install

from fake_apiserver import FakeApiServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "sgcache-operator"
K8S = "1.33.0"
# Kinds kubernetes-validate has no schema for; checked by hand below.
CUSTOM = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def install(values=None):
    """Installs the chart into a fresh fake cluster; returns (release, objects sent)."""
    with FakeApiServer() as api, tempfile.NamedTemporaryFile("w", suffix=".yaml") as kc:
        kc.write(api.kubeconfig())
        kc.flush()
        config = Configuration(namespace="sgcache-system", kubeconfig=kc.name)
        release = asyncio.run(
            Install(config).run("sgc", str(CHART), values=values, wait=False, timeout=60)
        )
        sent = [
            obj for _, obj in api.created
            if not obj["metadata"]["name"].startswith("sh.helm.release.")  # Helm's storage
        ]
    return release, sent


def by_kind(objs):
    out = {}
    for o in objs:
        out.setdefault(o["kind"], []).append(o)
    return out


@pytest.fixture(scope="module")
def default_install():
    return install()


def test_install_creates_the_crd_and_every_template(default_install):
    release, sent = default_install
    assert release["info"]["status"] == "deployed"
    kinds = sorted(o["kind"] for o in sent)
    assert kinds == sorted([
        "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
        "Role", "RoleBinding", "Service", "Deployment",
    ])
    # What Helm recorded as the release manifest is exactly what reached the cluster.
    manifest = [d for d in yaml.safe_load_all(release["manifest"]) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in manifest) == sorted(
        (o["kind"], o["metadata"]["name"]) for o in sent if o["kind"] != "CustomResourceDefinition"
    )


def test_every_rendered_object_is_valid_for_kubernetes(default_install):
    _, sent = default_install
    for obj in sent:
        kubernetes_validate.validate(obj, K8S, strict=True)


def test_rendered_objects_refer_to_each_other(default_install):
    _, sent = default_install
    k = by_kind(sent)
    (deploy,), (sa,), (svc,) = k["Deployment"], k["ServiceAccount"], k["Service"]
    pod = deploy["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    for binding in k["ClusterRoleBinding"] + k["RoleBinding"]:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                        "namespace": "sgcache-system"}]
    labels = pod["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports
    for o in sent:
        if o["kind"] not in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            assert o["metadata"]["namespace"] == "sgcache-system", o["kind"]


def template_rules():
    """The rules as operator/tests/common/rbac.rs reads them: the template's literal YAML with
    its `{{ }}` lines dropped. The Rust reconcile tests enforce these on a mock API server."""
    text = (CHART / "templates" / "rbac.yaml").read_text()
    literal = "\n".join(l for l in text.splitlines() if "{{" not in l)
    out = {}
    for doc in yaml.safe_load_all(literal):
        if doc and doc.get("kind") in ("ClusterRole", "Role"):
            out[doc["kind"]] = doc["rules"]
    return out


def test_the_rbac_the_reconcile_tests_enforce_is_what_helm_renders(default_install):
    _, sent = default_install
    k = by_kind(sent)
    (cluster,), (role,) = k["ClusterRole"], k["Role"]
    assert template_rules() == {"ClusterRole": cluster["rules"], "Role": role["rules"]}


def test_the_operator_may_do_what_it_does(default_install):
    """The ClusterRole grants what the reconcile calls: server-side apply of a missing object
    is a `create` (a real API server refuses it with `patch` alone), status is its own
    resource, Secrets are watched. The exact set is asserted in operator/tests/rbac.rs."""
    _, sent = default_install
    (role,) = by_kind(sent)["ClusterRole"]
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    for need in [("sgcache.io", "shotguncaches", "watch"), ("sgcache.io", "shotguncaches/status", "patch"),
                 ("", "secrets", "get"), ("", "secrets", "watch"),
                 ("apps", "deployments", "create"), ("apps", "deployments", "patch"),
                 ("", "configmaps", "create"), ("", "configmaps", "patch"),
                 ("", "services", "create"), ("policy", "poddisruptionbudgets", "create"),
                 ("policy", "poddisruptionbudgets", "delete"), ("events.k8s.io", "events", "create"),
                 ("events.k8s.io", "events", "patch")]:
        assert need in granted, need
    for never in [("", "secrets", "create"), ("", "secrets", "update"), ("", "pods", "create"),
                  ("sgcache.io", "shotguncaches", "delete")]:
        assert never not in granted, never


def test_samples_match_the_installed_crd(default_install):
    _, sent = default_install
    (crd,) = by_kind(sent)["CustomResourceDefinition"]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        if "invalid" in path.name:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "ShotgunCache":
                jsonschema.validate(doc, schema)
    bad = yaml.safe_load((ROOT / "examples" / "shotguncache-invalid.yaml").read_text())
    assert list(jsonschema.Draft7Validator(schema).iter_errors(bad))


def test_options_render_valid_objects_too():
    values = {"leaderElection": {"enabled": False}, "replicaCount": 2,
              "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
              "serviceAccount": {"create": False, "name": "existing"}}
    _, sent = install(values)
    k = by_kind(sent)
    assert "Role" not in k and "RoleBinding" not in k and "ServiceAccount" not in k
    (deploy,) = k["Deployment"]
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == "existing"
    (sm,) = k["ServiceMonitor"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["endpoints"][0]["port"] == "http"
    for obj in sent:
        if obj["kind"] not in CUSTOM:
            kubernetes_validate.validate(obj, K8S, strict=True)


def test_monitoring_ships_a_pod_monitor_the_dashboard_and_the_alerts():
    values = {"monitoring": {
        "podMonitor": {"enabled": True, "labels": {"release": "prom"}},
        "dashboard": {"enabled": True},
        "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
    }}
    _, sent = install(values)
    k = by_kind(sent)
    (pm,) = k["PodMonitor"]
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert pm["metadata"]["labels"]["release"] == "prom"
    # The labels the operator gives every worker pod (operator/src/resources/mod.rs).
    selector = pm["spec"]["selector"]
    assert selector["matchLabels"] == {
        "app.kubernetes.io/name": "sgcache",
        "app.kubernetes.io/managed-by": "sgcache-operator",
    }
    (components,) = selector["matchExpressions"]
    assert components["key"] == "app.kubernetes.io/component"
    assert sorted(components["values"]) == ["events", "proxy", "scanner"]
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    # The proxy's API port and the follower's and scanner's metrics port, as the operator
    # names them in its Deployments.
    assert sorted(e["port"] for e in pm["spec"]["podMetricsEndpoints"]) == ["http", "metrics"]
    assert all(e["path"] == "/metrics" for e in pm["spec"]["podMetricsEndpoints"])

    dashboards = [c for c in k["ConfigMap"] if c["metadata"]["name"].endswith("-dashboard")]
    (cm,) = dashboards
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["sgcache.json"])
    assert dashboard == json.loads((CHART / "files" / "dashboard.json").read_text())
    assert dashboard["uid"] == "sgcache" and len(dashboard["panels"]) >= 10

    (rule,) = k["PrometheusRule"]
    alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"] == alerts
    names = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"SgcacheFollowerStuck", "SgcacheEventLagHigh", "SgcacheBackfillStalled",
            "SgcacheVerificationMismatch", "SgcacheSiteUnreachable",
            "SgcacheHitRatioCollapsed", "SgcacheNoLeader"} <= names
    for obj in sent:
        if obj["kind"] not in CUSTOM:
            kubernetes_validate.validate(obj, K8S, strict=True)


def test_monitoring_is_off_by_default(default_install):
    _, sent = default_install
    kinds = {o["kind"] for o in sent}
    assert not kinds & {"PodMonitor", "PrometheusRule", "ConfigMap"}


def test_pod_monitor_can_watch_only_some_namespaces():
    _, sent = install({"monitoring": {"podMonitor": {"enabled": True,
                                                     "namespaces": ["studio", "vfx"]}}})
    (pm,) = by_kind(sent)["PodMonitor"]
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["studio", "vfx"]}
