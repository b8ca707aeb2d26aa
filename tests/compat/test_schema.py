"""schema_read / schema_entity_read / schema_field_read (doc section 7), checked against the
real site's schema in sim/fixtures/shotgun-schema (the simulator's default schema)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import shotgun_api3

import support

FIXTURE_DIR = Path(
    os.environ.get("SG_COMPAT_SCHEMA_DIR", support.REPO_ROOT / "sim" / "fixtures" / "shotgun-schema")
)


def _fixture(name):
    return json.loads((FIXTURE_DIR / name).read_text())


@pytest.fixture(scope="module")
def fixture_schema():
    return _fixture("schema.json")


@pytest.fixture(scope="module")
def fixture_entities():
    return _fixture("schema_entity.json")


@pytest.fixture(scope="module")
def schema(sg):
    return sg.schema_read()


def _wrapped(prop):
    return isinstance(prop, dict) and "value" in prop and "editable" in prop


def test_schema_read_matches_fixture(schema, fixture_schema):
    assert set(schema) == set(fixture_schema)
    for entity_type, fields in fixture_schema.items():
        assert set(schema[entity_type]) == set(fields), entity_type
        for name, rec in fields.items():
            got = schema[entity_type][name]
            for key in ("data_type", "entity_type", "mandatory", "unique", "editable", "name"):
                assert got[key]["value"] == rec[key]["value"], f"{entity_type}.{name}.{key}"
            for prop in ("valid_types", "valid_values", "default_value"):
                if prop in rec["properties"]:
                    assert got["properties"][prop]["value"] == rec["properties"][prop]["value"], f"{entity_type}.{name}.{prop}"


def test_schema_record_shape(schema):
    rec = schema["Shot"]["sg_sequence"]
    for key in ("name", "description", "data_type", "entity_type", "editable", "mandatory", "unique", "properties"):
        assert key in rec
        if key != "properties":
            assert _wrapped(rec[key]), key
    assert rec["data_type"]["value"] == "entity"
    assert rec["properties"]["valid_types"]["value"] == ["Sequence"]
    assert all(_wrapped(p) for p in rec["properties"].values())


def test_schema_entity_read(sg, fixture_entities):
    ents = sg.schema_entity_read()
    assert set(ents) == set(fixture_entities)
    for t, rec in fixture_entities.items():
        assert ents[t]["name"]["value"] == rec["name"]["value"]
        assert _wrapped(ents[t]["name"])
        if "visible" in ents[t]:
            assert ents[t]["visible"]["value"] is True


def test_schema_field_read_one(sg, fixture_schema):
    res = sg.schema_field_read("Shot", "sg_status_list")
    assert list(res) == ["sg_status_list"]
    assert res["sg_status_list"]["data_type"]["value"] == "status_list"
    assert res["sg_status_list"]["properties"]["valid_values"]["value"] == \
        fixture_schema["Shot"]["sg_status_list"]["properties"]["valid_values"]["value"]


def test_schema_field_read_all(sg, fixture_schema):
    res = sg.schema_field_read("Task")
    assert set(res) == set(fixture_schema["Task"])
    assert res["entity"]["properties"]["valid_types"]["value"] == fixture_schema["Task"]["entity"]["properties"]["valid_types"]["value"]


def test_schema_with_project(sg, project, fixture_schema):
    # With a project only visibility may change (doc 7); the set of fields is the same.
    res = sg.schema_field_read("Shot", project_entity=support.link(project))
    assert set(res) == set(fixture_schema["Shot"])
    full = sg.schema_read(project_entity=support.link(project))
    assert set(full) == set(fixture_schema)
    ents = sg.schema_entity_read(project_entity=support.link(project))
    assert set(ents) == set(fixture_schema)


def test_schema_field_read_unknown_type(sg):
    with pytest.raises(shotgun_api3.Fault) as exc:
        sg.schema_field_read("NoSuchEntityZz")
    assert "NoSuchEntityZz" in str(exc.value)


def test_schema_field_read_unknown_field(sg):
    with pytest.raises(shotgun_api3.Fault) as exc:
        sg.schema_field_read("Shot", "no_such_field_zz")
    assert "no_such_field_zz" in str(exc.value)
