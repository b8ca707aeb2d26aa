"""batch (doc 3.4): ordered results, mixed request types, all-or-nothing."""

from __future__ import annotations

import pytest
import shotgun_api3

import support
from support import link, link_key


def test_batch_mixed_results_in_order(sg, project):
    victim = sg.create("Shot", {"project": link(project), "code": "batch_victim"})
    target = sg.create("Shot", {"project": link(project), "code": "batch_target"})
    res = sg.batch([
        {"request_type": "create", "entity_type": "Shot", "data": {"project": link(project), "code": "batch_new1"}},
        {"request_type": "update", "entity_type": "Shot", "entity_id": target["id"], "data": {"description": "batched"}},
        {"request_type": "delete", "entity_type": "Shot", "entity_id": victim["id"]},
        {"request_type": "create", "entity_type": "Shot", "data": {"project": link(project), "code": "batch_new2"},
         "return_fields": ["sg_status_list"]},
    ])
    assert len(res) == 4
    assert res[0]["type"] == "Shot" and res[0]["code"] == "batch_new1"
    assert res[1]["type"] == "Shot" and res[1]["id"] == target["id"] and res[1]["description"] == "batched"
    assert res[2] is True
    assert res[3]["code"] == "batch_new2" and res[3]["sg_status_list"] == "wtg"
    assert res[0]["id"] != res[3]["id"]
    live = sg.find("Shot", [["project", "is", link(project)], ["code", "starts_with", "batch_"]], ["code", "description"])
    by_code = {r["code"]: r for r in live}
    assert set(by_code) == {"batch_target", "batch_new1", "batch_new2"}
    assert by_code["batch_target"]["description"] == "batched"
    assert support.ids(sg.find("Shot", [["id", "is", victim["id"]]], retired_only=True)) == [victim["id"]]


def test_batch_multi_entity_update_mode(sg, project):
    a = [sg.create("Asset", {"project": link(project), "code": f"batch_asset_{i}"}) for i in range(3)]
    shot = sg.create("Shot", {"project": link(project), "code": "batch_multi", "assets": [link(a[0])]})
    sg.batch([
        {"request_type": "update", "entity_type": "Shot", "entity_id": shot["id"],
         "data": {"assets": [link(a[1]), link(a[2])]}, "multi_entity_update_modes": {"assets": "add"}},
    ])
    row = sg.find_one("Shot", [["id", "is", shot["id"]]], ["assets"])
    assert sorted(link_key(x) for x in row["assets"]) == sorted(link_key(x) for x in a)
    sg.batch([
        {"request_type": "update", "entity_type": "Shot", "entity_id": shot["id"],
         "data": {"assets": [link(a[0])]}, "multi_entity_update_modes": {"assets": "remove"}},
    ])
    row = sg.find_one("Shot", [["id", "is", shot["id"]]], ["assets"])
    assert sorted(link_key(x) for x in row["assets"]) == sorted(link_key(x) for x in a[1:])


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"request_type": "update", "entity_type": "Shot", "entity_id": 2_000_000_000,
                      "data": {"description": "x"}}, id="update_missing_row"),
        pytest.param({"request_type": "create", "entity_type": "Shot",
                      "data": {"code": "x", "no_such_field_zz": 1}}, id="create_unknown_field"),
        pytest.param({"request_type": "create", "entity_type": "NoSuchEntityZz", "data": {"code": "x"}},
                     id="create_unknown_type"),
    ],
)
def test_batch_rolls_back_on_failure(sg, project, bad):
    keep = sg.create("Shot", {"project": link(project), "code": "batch_rb_keep", "description": "before"})
    victim = sg.create("Shot", {"project": link(project), "code": "batch_rb_victim"})
    code = support.unique("batch_rb_new")
    before_events = support.max_event_id(sg)
    with pytest.raises(shotgun_api3.Fault) as exc:
        sg.batch([
            {"request_type": "create", "entity_type": "Shot", "data": {"project": link(project), "code": code}},
            {"request_type": "update", "entity_type": "Shot", "entity_id": keep["id"], "data": {"description": "after"}},
            {"request_type": "delete", "entity_type": "Shot", "entity_id": victim["id"]},
            bad,
        ])
    assert str(exc.value)
    # Nothing of the batch is visible: no new row (active or retired), no update, no retirement.
    assert sg.find("Shot", [["code", "is", code]]) == []
    assert sg.find("Shot", [["code", "is", code]], retired_only=True) == []
    assert sg.find_one("Shot", [["id", "is", keep["id"]]], ["description"])["description"] == "before"
    assert support.ids(sg.find("Shot", [["id", "is", victim["id"]]])) == [victim["id"]]
    # ...and no events from it.
    evs = support.events_since(sg, before_events, [["entity", "in", [link(keep), link(victim)]]])
    assert evs == []
