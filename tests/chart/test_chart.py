"""Chart checks: helm lint through helm-sdkpy, the CRD validated with kubernetes-validate,
the sample resources validated against the CRD's schema, and the chart's CRD copy in sync."""

import asyncio
import json
import pathlib
import shutil

import jsonschema
import kubernetes_validate
import yaml
from helm_sdkpy import Configuration
from helm_sdkpy.chart import Lint

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "sgcache-operator"
CRD = ROOT / "crds" / "shotguncache.yaml"
K8S = "1.33.0"


def lint(path):
    return asyncio.run(Lint(Configuration()).run(str(path)))


def crd():
    return yaml.safe_load(CRD.read_text())


def cache_schema():
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_helm_lint_passes():
    result = lint(CHART)
    assert result["TotalChartsLinted"] == 1
    assert not result["Errors"], result
    worst = max((m["Severity"] for m in result["Messages"]), default=0)
    assert worst <= 1, result["Messages"]  # info only (e.g. "icon is recommended")


def test_helm_lint_catches_a_broken_template(tmp_path):
    broken = tmp_path / "chart"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "broken.yaml").write_text("kind: {{ .Values.nope.missing }\n")
    result = lint(broken)
    assert result["Errors"] or any(m["Severity"] >= 3 for m in result["Messages"]), result


def test_crd_is_a_valid_custom_resource_definition():
    kubernetes_validate.validate(crd(), K8S, strict=True)


def test_chart_ships_the_generated_crd():
    assert (CHART / "crds" / "shotguncache.yaml").read_text() == CRD.read_text(), (
        "charts/sgcache-operator/crds/ is stale: cp crds/shotguncache.yaml charts/sgcache-operator/crds/"
    )


def test_every_example_matches_the_crd_schema():
    """Every ShotgunCache in examples/ (the invalid one aside); their fields are checked
    against the site schema in operator/tests/examples.rs."""
    seen = 0
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        if "invalid" in path.name:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "ShotgunCache":
                assert doc["apiVersion"] == "sgcache.io/v1alpha1"
                jsonschema.validate(doc, cache_schema())
                seen += 1
    assert seen >= 1


def test_spec_without_site_or_entities_is_rejected():
    doc = {"apiVersion": "sgcache.io/v1alpha1", "kind": "ShotgunCache",
           "metadata": {"name": "x"}, "spec": {}}
    errors = [e.message for e in jsonschema.Draft7Validator(cache_schema()).iter_errors(doc)]
    assert any("'site' is a required property" in m for m in errors), errors
    assert any("'entities' is a required property" in m for m in errors), errors


def test_crd_uses_only_formats_the_api_server_knows():
    text = CRD.read_text()
    for bad in ("uint32", "uint16", "uint8", "sqlitePath"):
        assert bad not in text, bad


def test_invalid_example_is_rejected_by_the_crd_schema():
    doc = yaml.safe_load((ROOT / "examples" / "shotguncache-invalid.yaml").read_text())
    errors = list(jsonschema.Draft7Validator(cache_schema()).iter_errors(doc))
    messages = " ".join(e.message for e in errors)
    assert "does not match" in messages  # field name pattern
    assert "Forget" in messages  # deletionPolicy enum
    assert any(e.validator == "minItems" for e in errors)  # empty field list


def cel_rules():
    """(path in the spec, rule, message) of every x-kubernetes-validations in the spec."""
    spec = cache_schema()["properties"]["spec"]
    out = [((), r["rule"], r["message"]) for r in spec["x-kubernetes-validations"]]
    for parent, field in [("site", "scriptName"), ("site", "apiKey"), ("database", "url")]:
        for r in spec["properties"][parent]["properties"][field]["x-kubernetes-validations"]:
            out.append(((parent, field), r["rule"], r["message"]))
    return out


def failing_rules(spec):
    """Messages of the CEL rules (evaluated with cel-python) the spec breaks."""
    import celpy

    env = celpy.Environment()
    broken = []
    for path, rule, message in cel_rules():
        target = spec
        for key in path:
            target = target.get(key) if isinstance(target, dict) else None
        if target is None:
            continue  # the rule sits on an absent optional value
        result = env.program(env.compile(rule)).evaluate({"self": celpy.json_to_cel(target)})
        if not result:
            broken.append(message)
    return broken


def test_cel_rules_hold_for_the_examples_and_catch_what_they_say():
    doc = yaml.safe_load((ROOT / "examples" / "shotguncache.yaml").read_text())
    spec = doc["spec"]
    assert failing_rules(spec) == []
    inline = json.loads(json.dumps(spec))
    inline["site"]["apiKey"] = {"value": "s3cret"}
    assert failing_rules(inline) == ["site.apiKey must be a secretKeyRef on Kubernetes"]
    dup = json.loads(json.dumps(spec))
    dup["entities"].append(dup["entities"][0])
    assert failing_rules(dup) == ["each entity type may be listed once"]
    both = json.loads(json.dumps(spec))
    both["database"]["url"]["value"] = "postgres://x"
    assert failing_rules(both) == ["give exactly one of value, env, secretKeyRef"]
    no_url = json.loads(json.dumps(spec))
    del no_url["site"]["url"]
    assert failing_rules(no_url) == ["site.url is required"]
