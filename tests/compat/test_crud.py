"""create / update (incl. multi_entity_update_mode) / delete / revive / find_one, and value
encoding round trips (doc sections 3.4, 4, 6)."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import shotgun_api3

import support
from support import link, link_key, unique

UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def seq(sg, project):
    return sg.create("Sequence", {"project": link(project), "code": "crud_seq"})


@pytest.fixture(scope="module")
def assets(sg, project):
    return [sg.create("Asset", {"project": link(project), "code": f"crud_asset_{i}"}) for i in range(4)]


def test_create_returns_set_fields_and_links_with_names(sg, project, seq, assets):
    data = {
        "project": link(project),
        "code": "crud_sh010",
        "description": "created by the compat suite",
        "sg_status_list": "ip",
        "sg_cut_in": 1001,
        "sg_sequence": link(seq),
        "assets": [link(assets[0]), link(assets[1])],
    }
    shot = sg.create("Shot", data)
    assert shot["type"] == "Shot" and isinstance(shot["id"], int)
    for key in ("code", "description", "sg_status_list", "sg_cut_in"):
        assert shot[key] == data[key]
    assert link_key(shot["sg_sequence"]) == link_key(seq)
    assert shot["sg_sequence"]["name"] == "crud_seq"
    assert [link_key(a) for a in shot["assets"]] == [link_key(a) for a in assets[:2]]
    assert [a["name"] for a in shot["assets"]] == ["crud_asset_0", "crud_asset_1"]
    assert link_key(shot["project"]) == link_key(project)


def test_create_return_fields(sg, project):
    shot = sg.create("Shot", {"project": link(project), "code": "crud_rf"}, return_fields=["created_at", "updated_at", "created_by", "sg_status_list"])
    assert isinstance(shot["created_at"], dt.datetime) and shot["created_at"].tzinfo is not None
    assert isinstance(shot["updated_at"], dt.datetime)
    assert shot["created_by"]["type"] == "ApiUser"
    # Schema default for Shot.sg_status_list is "wtg" (fixture default_value).
    assert shot["sg_status_list"] == "wtg"


def test_create_defaults(sg, project):
    shot = sg.create("Shot", {"project": link(project), "code": "crud_defaults"})
    row = sg.find_one("Shot", [["id", "is", shot["id"]]], ["assets", "tag_list", "description", "sg_cut_in", "sg_sequence"])
    assert row["assets"] == [] and row["tag_list"] == []
    assert row["description"] is None and row["sg_cut_in"] is None and row["sg_sequence"] is None
    task = sg.create("Task", {"project": link(project), "content": "crud_default_task"})
    trow = sg.find_one("Task", [["id", "is", task["id"]]], ["milestone", "pinned"])
    assert trow["milestone"] is False and trow["pinned"] is False


def test_find_one_none_and_find_empty(sg, project):
    assert sg.find_one("Shot", [["project", "is", link(project)], ["code", "is", "does-not-exist"]]) is None
    assert sg.find("Shot", [["project", "is", link(project)], ["code", "is", "does-not-exist"]]) == []


def test_find_one_returns_type_id_and_requested_only(sg, project):
    shot = sg.create("Shot", {"project": link(project), "code": "crud_shape", "description": "x"})
    row = sg.find_one("Shot", [["id", "is", shot["id"]]], ["code"])
    assert row == {"type": "Shot", "id": shot["id"], "code": "crud_shape"}
    row = sg.find_one("Shot", [["id", "is", shot["id"]]])
    assert row == {"type": "Shot", "id": shot["id"]}


@pytest.mark.parametrize(
    "entity_type,field,value",
    [
        ("Shot", "description", "plain ascii"),
        ("Shot", "description", "ünïcödé — 日本語 ✓ emoji 🎬"),
        ("Shot", "description", "a < b & c > d \"quoted\""),
        ("Shot", "description", "line1\nline2\ttab"),
        ("Shot", "sg_cut_in", 0),
        ("Shot", "sg_cut_in", -42),
        ("Shot", "sg_cut_in", 2147483647),
        ("Shot", "tag_list", ["a", "b"]),
        ("Version", "sg_frames_aspect_ratio", 1.85),
        ("Version", "sg_frames_aspect_ratio", -0.5),
        ("Version", "flagged", True),
        ("Version", "media_center_import_time", dt.datetime(2021, 12, 31, 23, 59, 58, tzinfo=UTC)),
        ("Task", "due_date", dt.date(1999, 1, 2)),
        ("Task", "color", "pipeline_step"),
        ("Task", "color", "12,34,56"),
        ("Task", "duration", 480),
        ("Step", "entity_type", "Asset"),
    ],
)
def test_value_round_trip(sg, project, entity_type, field, value):
    display = {"Task": "content"}.get(entity_type, "code")
    data = {display: unique("rt"), field: value}
    if entity_type != "Step":
        data["project"] = link(project)
    created = sg.create(entity_type, data)
    row = sg.find_one(entity_type, [["id", "is", created["id"]]], [field])
    expected = value.isoformat() if type(value) is dt.date else value  # dates come back as strings
    assert row[field] == expected
    # ...and the value filters back to the row.
    if field not in ("tag_list",):
        found = sg.find(entity_type, [["id", "is", created["id"]], [field, "is", value]])
        assert support.ids(found) == [created["id"]]


def test_update_returns_updated_fields(sg, project, seq):
    shot = sg.create("Shot", {"project": link(project), "code": "crud_upd"})
    res = sg.update("Shot", shot["id"], {"description": "new", "sg_sequence": link(seq), "sg_cut_in": 7})
    assert res["type"] == "Shot" and res["id"] == shot["id"]
    assert res["description"] == "new" and res["sg_cut_in"] == 7
    assert link_key(res["sg_sequence"]) == link_key(seq) and res["sg_sequence"]["name"] == "crud_seq"
    row = sg.find_one("Shot", [["id", "is", shot["id"]]], ["description", "sg_sequence", "sg_cut_in"])
    assert row["description"] == "new" and row["sg_cut_in"] == 7 and link_key(row["sg_sequence"]) == link_key(seq)
    res = sg.update("Shot", shot["id"], {"description": None, "sg_sequence": None})
    row = sg.find_one("Shot", [["id", "is", shot["id"]]], ["description", "sg_sequence"])
    assert row["description"] is None and row["sg_sequence"] is None


def test_update_bumps_updated_at(sg, project):
    shot = sg.create("Shot", {"project": link(project), "code": "crud_bump"}, return_fields=["updated_at"])
    time.sleep(1.1)  # date_time values have one-second resolution
    sg.update("Shot", shot["id"], {"description": "bump"})
    row = sg.find_one("Shot", [["id", "is", shot["id"]]], ["updated_at", "created_at"])
    assert row["updated_at"] > shot["updated_at"]
    assert row["created_at"] <= shot["updated_at"]


def _asset_keys(sg, shot_id):
    row = sg.find_one("Shot", [["id", "is", shot_id]], ["assets"])
    return [link_key(a) for a in row["assets"]]


def test_multi_entity_update_modes(sg, project, assets):
    a0, a1, a2, a3 = (link(a) for a in assets)
    shot = sg.create("Shot", {"project": link(project), "code": "crud_multi", "assets": [a0, a1]})
    # add: appended, existing kept, no duplicates
    sg.update("Shot", shot["id"], {"assets": [a2, a1]}, multi_entity_update_modes={"assets": "add"})
    assert sorted(_asset_keys(sg, shot["id"])) == sorted(link_key(a) for a in (a0, a1, a2))
    # remove: only the listed ones go; removing an absent link is harmless
    sg.update("Shot", shot["id"], {"assets": [a0, a3]}, multi_entity_update_modes={"assets": "remove"})
    assert sorted(_asset_keys(sg, shot["id"])) == sorted(link_key(a) for a in (a1, a2))
    # set: replaces
    sg.update("Shot", shot["id"], {"assets": [a3]}, multi_entity_update_modes={"assets": "set"})
    assert _asset_keys(sg, shot["id"]) == [link_key(a3)]
    # default (no mode) is set
    sg.update("Shot", shot["id"], {"assets": [a0, a2]})
    assert _asset_keys(sg, shot["id"]) == [link_key(a0), link_key(a2)]
    # set to empty
    sg.update("Shot", shot["id"], {"assets": []})
    assert _asset_keys(sg, shot["id"]) == []


@pytest.mark.sim_choice
def test_multi_entity_inverse_field(sg, project, assets):
    """Shot.assets and Asset.shots are the two sides of one link (doc 7; pairing chosen by the sim)."""
    shot = sg.create("Shot", {"project": link(project), "code": "crud_inverse", "assets": [link(assets[3])]})
    back = sg.find_one("Asset", [["id", "is", assets[3]["id"]]], ["shots"])
    assert link_key(shot) in [link_key(s) for s in back["shots"]]
    sg.update("Shot", shot["id"], {"assets": []})
    back = sg.find_one("Asset", [["id", "is", assets[3]["id"]]], ["shots"])
    assert link_key(shot) not in [link_key(s) for s in back["shots"]]


def test_entity_backreference_field(sg, project):
    """Setting Task.entity updates the Shot's multi_entity back-reference Shot.tasks (doc 7)."""
    shot = sg.create("Shot", {"project": link(project), "code": "crud_backref"})
    task = sg.create("Task", {"project": link(project), "content": "backref_task", "entity": link(shot)})
    row = sg.find_one("Shot", [["id", "is", shot["id"]]], ["tasks"])
    assert [link_key(t) for t in row["tasks"]] == [link_key(task)]
    assert row["tasks"][0]["name"] == "backref_task"


def test_link_name_follows_rename(sg, project):
    seq = sg.create("Sequence", {"project": link(project), "code": "before_rename"})
    shot = sg.create("Shot", {"project": link(project), "code": "crud_rename", "sg_sequence": link(seq)})
    sg.update("Sequence", seq["id"], {"code": "after_rename"})
    row = sg.find_one("Shot", [["id", "is", shot["id"]]], ["sg_sequence"])
    assert row["sg_sequence"]["name"] == "after_rename"


def test_delete_and_revive(sg, project):
    shot = sg.create("Shot", {"project": link(project), "code": "crud_delete"})
    flt = [["id", "is", shot["id"]]]
    assert sg.delete("Shot", shot["id"]) is True
    assert sg.find("Shot", flt) == []
    assert support.ids(sg.find("Shot", flt, retired_only=True)) == [shot["id"]]
    assert sg.revive("Shot", shot["id"]) is True
    assert support.ids(sg.find("Shot", flt)) == [shot["id"]]
    assert sg.find("Shot", flt, retired_only=True) == []


@pytest.mark.sim_choice
def test_revive_active_returns_false(sg, project):
    shot = sg.create("Shot", {"project": link(project), "code": "crud_revive_active"})
    assert sg.revive("Shot", shot["id"]) is False


@pytest.mark.sim_choice
def test_retired_link_target_hidden_from_links(sg, project):
    """Retired rows are excluded from link resolution in normal reads (doc 5.6, inferred)."""
    seq = sg.create("Sequence", {"project": link(project), "code": "crud_retired_target"})
    shot = sg.create("Shot", {"project": link(project), "code": "crud_link_to_retired", "sg_sequence": link(seq)})
    sg.delete("Sequence", seq["id"])
    row = sg.find_one("Shot", [["id", "is", shot["id"]]], ["sg_sequence"])
    assert row["sg_sequence"] is None
    sg.revive("Sequence", seq["id"])
    row = sg.find_one("Shot", [["id", "is", shot["id"]]], ["sg_sequence"])
    assert link_key(row["sg_sequence"]) == link_key(seq)


def test_update_retired_or_missing_raises(sg, project):
    with pytest.raises(shotgun_api3.Fault):
        sg.update("Shot", 2_000_000_000, {"description": "nope"})
    with pytest.raises(shotgun_api3.Fault):
        sg.delete("Shot", 2_000_000_000)


def test_include_archived_projects(sg):
    """include_archived_projects=False hides rows of archived projects; the default includes
    them; toggling Project.archived changes result sets without touching the rows (doc 5.6)."""
    proj = sg.create("Project", {"name": unique("compat_archived")})
    shot = sg.create("Shot", {"project": link(proj), "code": "crud_archived"})
    flt = [["project", "is", link(proj)]]
    assert support.ids(sg.find("Shot", flt, include_archived_projects=False)) == [shot["id"]]
    sg.update("Project", proj["id"], {"archived": True})
    try:
        assert support.ids(sg.find("Shot", flt)) == [shot["id"]]
        assert sg.find("Shot", flt, include_archived_projects=False) == []
        by_id = [["id", "is", shot["id"]]]
        assert sg.find("Shot", by_id, include_archived_projects=False) == []
        res = sg.summarize("Shot", flt, [{"field": "id", "type": "record_count"}], include_archived_projects=False)
        assert res["summaries"]["id"] == 0
    finally:
        sg.update("Project", proj["id"], {"archived": False})
    assert support.ids(sg.find("Shot", flt, include_archived_projects=False)) == [shot["id"]]
