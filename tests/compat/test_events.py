"""EventLogEntry rows for each kind of write, read back with find (doc section 8), and the
absence of events for silent scripts (8.4)."""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid

import pytest
import shotgun_api3

import support
from support import link, link_key, wait_for_events

UTC_MESSAGE_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")


def _of(evs, event_type, attribute_name="__any__"):
    return [e for e in evs if e["event_type"] == event_type
            and (attribute_name == "__any__" or e["attribute_name"] == attribute_name)]


def _for_entity(evs, entity_type, entity_id):
    return [e for e in evs if (e["meta"] or {}).get("entity_type") == entity_type
            and (e["meta"] or {}).get("entity_id") == entity_id]


def test_new_entity_events(sg, project):
    before = support.max_event_id(sg)
    shot = sg.create("Shot", {"project": link(project), "code": "ev_new", "sg_status_list": "ip", "sg_cut_in": 12})
    evs = wait_for_events(sg, before, lambda evs: _of(evs, "Shotgun_Shot_New"))
    mine = _for_entity(evs, "Shot", shot["id"])
    new = _of(mine, "Shotgun_Shot_New")
    assert len(new) == 1, mine
    e = new[0]
    assert e["attribute_name"] is None
    assert e["meta"]["type"] == "new_entity"
    assert link_key(e["entity"]) == link_key(shot)
    assert link_key(e["project"]) == link_key(project)
    assert e["user"]["type"] == "ApiUser"
    assert isinstance(e["created_at"], dt.datetime)
    # one in_create Change per field set, after the New event
    changes = {c["attribute_name"]: c for c in _of(mine, "Shotgun_Shot_Change")}
    for field, value in (("code", "ev_new"), ("sg_status_list", "ip"), ("sg_cut_in", 12)):
        assert field in changes, f"no in_create change for {field}: {sorted(changes)}"
        meta = changes[field]["meta"]
        assert meta["type"] == "attribute_change" and meta["in_create"] is True
        assert meta["new_value"] == value and meta["old_value"] is None
        assert changes[field]["id"] > e["id"]


def test_event_ids_increase_and_are_unique(sg, project):
    before = support.max_event_id(sg)
    for i in range(3):
        sg.create("Shot", {"project": link(project), "code": f"ev_order_{i}"})
    evs = wait_for_events(sg, before, lambda evs: len(_of(evs, "Shotgun_Shot_New")) >= 3)
    got = [e["id"] for e in evs]
    assert got == sorted(got) and len(got) == len(set(got))
    assert all(i > before for i in got)


def test_change_event_old_and_new_values(sg, project):
    seq1 = sg.create("Sequence", {"project": link(project), "code": "ev_seq1"})
    seq2 = sg.create("Sequence", {"project": link(project), "code": "ev_seq2"})
    shot = sg.create("Shot", {"project": link(project), "code": "ev_change", "sg_status_list": "wtg",
                              "sg_sequence": link(seq1), "sg_cut_in": 5})
    before = support.max_event_id(sg)
    sg.update("Shot", shot["id"], {"sg_status_list": "ip", "sg_sequence": link(seq2), "sg_cut_in": None})
    evs = wait_for_events(sg, before, lambda evs: len(_of(evs, "Shotgun_Shot_Change")) >= 3,
                          [["entity", "is", link(shot)]])
    changes = {e["attribute_name"]: e for e in _of(evs, "Shotgun_Shot_Change")}
    st = changes["sg_status_list"]["meta"]
    assert (st["old_value"], st["new_value"]) == ("wtg", "ip")
    assert st["field_data_type"] == "status_list" and "in_create" not in st
    assert st["entity_type"] == "Shot" and st["entity_id"] == shot["id"]
    sq = changes["sg_sequence"]["meta"]
    assert link_key(sq["old_value"]) == link_key(seq1) and link_key(sq["new_value"]) == link_key(seq2)
    ci = changes["sg_cut_in"]["meta"]
    assert (ci["old_value"], ci["new_value"]) == (5, None)
    for e in changes.values():
        assert link_key(e["entity"]) == link_key(shot) and link_key(e["project"]) == link_key(project)


def test_change_event_datetime_format(sg, project):
    v = sg.create("Version", {"project": link(project), "code": "ev_dt"})
    before = support.max_event_id(sg)
    sg.update("Version", v["id"], {"media_center_import_time": dt.datetime(2024, 5, 2, 9, 14, 7, tzinfo=dt.timezone.utc)})
    evs = wait_for_events(sg, before, lambda evs: bool(evs), [["entity", "is", link(v)]])
    meta = _of(evs, "Shotgun_Version_Change", "media_center_import_time")[0]["meta"]
    # meta date-times use "YYYY-MM-DD HH:MM:SS UTC", which the client leaves as a string
    assert meta["new_value"] == "2024-05-02 09:14:07 UTC"
    assert meta["old_value"] is None


@pytest.mark.sim_choice
def test_no_event_for_unchanged_value(sg, project):
    shot = sg.create("Shot", {"project": link(project), "code": "ev_same", "sg_status_list": "ip"})
    before = support.max_event_id(sg)
    sg.update("Shot", shot["id"], {"sg_status_list": "ip", "description": "changed"})
    evs = wait_for_events(sg, before, lambda evs: bool(_of(evs, "Shotgun_Shot_Change", "description")),
                          [["entity", "is", link(shot)]])
    assert [e["attribute_name"] for e in evs] == ["description"]


def test_multi_entity_added_removed(sg, project):
    a = [sg.create("Asset", {"project": link(project), "code": f"ev_asset_{i}"}) for i in range(3)]
    shot = sg.create("Shot", {"project": link(project), "code": "ev_multi", "assets": [link(a[0])]})
    before = support.max_event_id(sg)
    sg.update("Shot", shot["id"], {"assets": [link(a[1]), link(a[2])]}, multi_entity_update_modes={"assets": "add"})
    evs = wait_for_events(sg, before, lambda evs: bool(_of(evs, "Shotgun_Shot_Change", "assets")),
                          [["entity", "is", link(shot)]])
    (e,) = _of(evs, "Shotgun_Shot_Change", "assets")
    m = e["meta"]
    assert m["field_data_type"] == "multi_entity" and m["entity_type"] == "Shot" and m["entity_id"] == shot["id"]
    assert sorted(link_key(x) for x in m["added"]) == sorted(link_key(x) for x in a[1:])
    assert m["removed"] == []
    assert {x["name"] for x in m["added"]} == {"ev_asset_1", "ev_asset_2"}
    assert "old_value" not in m and "new_value" not in m

    before = support.max_event_id(sg)
    sg.update("Shot", shot["id"], {"assets": [link(a[0])]}, multi_entity_update_modes={"assets": "remove"})
    evs = wait_for_events(sg, before, lambda evs: bool(_of(evs, "Shotgun_Shot_Change", "assets")),
                          [["entity", "is", link(shot)]])
    (e,) = _of(evs, "Shotgun_Shot_Change", "assets")
    assert [link_key(x) for x in e["meta"]["removed"]] == [link_key(a[0])]
    assert e["meta"]["added"] == []

    # set: both lists
    before = support.max_event_id(sg)
    sg.update("Shot", shot["id"], {"assets": [link(a[0]), link(a[1])]})
    evs = wait_for_events(sg, before, lambda evs: bool(_of(evs, "Shotgun_Shot_Change", "assets")),
                          [["entity", "is", link(shot)]])
    (e,) = _of(evs, "Shotgun_Shot_Change", "assets")
    assert [link_key(x) for x in e["meta"]["added"]] == [link_key(a[0])]
    assert [link_key(x) for x in e["meta"]["removed"]] == [link_key(a[2])]


def test_back_reference_event(sg, project):
    shot = sg.create("Shot", {"project": link(project), "code": "ev_backref"})
    task = sg.create("Task", {"project": link(project), "content": "ev_task"})
    before = support.max_event_id(sg)
    sg.update("Task", task["id"], {"entity": link(shot)})
    evs = wait_for_events(sg, before, lambda evs: bool(_of(evs, "Shotgun_Shot_Change", "tasks")))
    fwd = [e for e in _of(evs, "Shotgun_Task_Change", "entity") if link_key(e["entity"]) == link_key(task)]
    assert len(fwd) == 1 and link_key(fwd[0]["meta"]["new_value"]) == link_key(shot)
    back = [e for e in _of(evs, "Shotgun_Shot_Change", "tasks") if link_key(e["entity"]) == link_key(shot)]
    assert len(back) == 1, evs
    m = back[0]["meta"]
    assert m["actual_attribute_changed"] == "Task.entity"
    assert m["entity_type"] == "Task" and m["entity_id"] == task["id"]
    assert [link_key(x) for x in m["added"]] == [link_key(task)] and m["removed"] == []
    assert isinstance(m["original_event_log_entry_id"], int)

    # moving the task away logs a removal on the old owner
    other = sg.create("Shot", {"project": link(project), "code": "ev_backref2"})
    before = support.max_event_id(sg)
    sg.update("Task", task["id"], {"entity": link(other)})
    evs = wait_for_events(sg, before, lambda evs: len(_of(evs, "Shotgun_Shot_Change", "tasks")) >= 2)
    by_owner = {e["entity"]["id"]: e["meta"] for e in _of(evs, "Shotgun_Shot_Change", "tasks")}
    assert [link_key(x) for x in by_owner[shot["id"]]["removed"]] == [link_key(task)]
    assert [link_key(x) for x in by_owner[other["id"]]["added"]] == [link_key(task)]


def test_retirement_and_revival_events(sg, project):
    shot = sg.create("Shot", {"project": link(project), "code": "ev_retire"})
    before = support.max_event_id(sg)
    assert sg.delete("Shot", shot["id"]) is True
    evs = wait_for_events(sg, before, lambda evs: bool(_of(evs, "Shotgun_Shot_Retirement")))
    mine = _for_entity(evs, "Shot", shot["id"])
    (ret,) = _of(mine, "Shotgun_Shot_Retirement")
    assert ret["entity"] is None  # retired at read time
    assert ret["attribute_name"] is None
    m = ret["meta"]
    assert m["type"] == "entity_retirement" and m["entity_id"] == shot["id"] and m["class_name"] == "Shot"
    assert m["display_name"] == "ev_retire"
    assert UTC_MESSAGE_TIME.match(m["retirement_date"]), m["retirement_date"]
    pre = _of(mine, "Shotgun_Shot_Change", "retirement_date")
    assert pre and pre[0]["id"] < ret["id"] and pre[0]["entity"] is None

    before_revive = support.max_event_id(sg)
    assert sg.revive("Shot", shot["id"]) is True
    evs = wait_for_events(sg, before_revive, lambda evs: bool(_of(evs, "Shotgun_Shot_Revival")))
    (rev,) = _of(_for_entity(evs, "Shot", shot["id"]), "Shotgun_Shot_Revival")
    assert link_key(rev["entity"]) == link_key(shot)
    assert rev["meta"]["entity_id"] == shot["id"] and rev["meta"]["class_name"] == "Shot"
    assert rev["meta"]["display_name"] == "ev_retire"
    assert rev["meta"].get("type", "entity_revival") == "entity_revival"
    # `entity` reflects retirement at read time: the old retirement event now links again.
    again = sg.find_one("EventLogEntry", [["id", "is", ret["id"]]], ["entity"])
    assert link_key(again["entity"]) == link_key(shot)


def test_events_filterable_by_entity_and_type(sg, project):
    shot = sg.create("Shot", {"project": link(project), "code": "ev_filter"})
    sg.update("Shot", shot["id"], {"description": "x"})
    evs = sg.find("EventLogEntry", [["entity", "is", link(shot)], ["event_type", "is", "Shotgun_Shot_Change"],
                                    ["attribute_name", "is", "description"]], ["meta"])
    assert len(evs) == 1 and evs[0]["meta"]["new_value"] == "x"
    assert sg.find("EventLogEntry", [["entity", "is", link(shot)], ["event_type", "starts_with", "Shotgun_Shot_"]]) != []


def test_session_uuid_copied_to_events(site, project):
    sg = support.connect_script(site.url)
    su = str(uuid.uuid4())
    sg.set_session_uuid(su)
    shot = sg.create("Shot", {"project": link(project), "code": "ev_session"})
    evs = wait_for_events(sg, 0, lambda evs: bool(evs), [["session_uuid", "is", su]])
    assert evs and all(e["session_uuid"] == su for e in evs)
    assert any(_for_entity(evs, "Shot", shot["id"]))
    # uuid relations
    other = str(uuid.uuid4())
    assert support.ids(sg.find("EventLogEntry", [["session_uuid", "in", [su, other]]])) == support.ids(evs)
    assert sg.find("EventLogEntry", [["session_uuid", "is", other]]) == []
    without = sg.find("EventLogEntry", [["session_uuid", "is_not", su], ["entity", "is", link(shot)]])
    assert without == []


def test_human_user_events_name_the_user(sg, sg_human, project):
    shot = sg.create("Shot", {"project": link(project), "code": "ev_human"})
    me = sg.find_one("HumanUser", [["login", "is", support.HUMAN_LOGIN]], ["name"])
    before = support.max_event_id(sg)
    sg_human.update("Shot", shot["id"], {"description": "by a human"})
    evs = wait_for_events(sg, before, lambda evs: bool(evs), [["entity", "is", link(shot)]])
    assert evs and all(link_key(e["user"]) == link_key(me) for e in evs)


def test_silent_script_writes_no_events_but_moves_updated_at(sg, sg_silent, project):
    shot = sg.create("Shot", {"project": link(project), "code": "ev_silent"}, return_fields=["updated_at"])
    before = support.max_event_id(sg)
    time.sleep(1.1)  # one-second resolution of updated_at
    sg_silent.update("Shot", shot["id"], {"description": "silently"})
    created = sg_silent.create("Shot", {"project": link(project), "code": "ev_silent_new"})
    sg_silent.delete("Shot", created["id"])
    # A fence: an event-generating write after the silent ones; once its event is visible,
    # any event from the silent writes would be too.
    fence = sg.create("Shot", {"project": link(project), "code": "ev_silent_fence"})
    evs = wait_for_events(sg, before, lambda evs: bool(_for_entity(evs, "Shot", fence["id"])))
    assert _for_entity(evs, "Shot", fence["id"]), "fence event never appeared"
    assert _for_entity(evs, "Shot", shot["id"]) == []
    assert _for_entity(evs, "Shot", created["id"]) == []
    row = sg.find_one("Shot", [["id", "is", shot["id"]]], ["updated_at", "updated_by", "description"])
    assert row["description"] == "silently"
    assert row["updated_at"] > shot["updated_at"]
    assert row["updated_by"]["type"] == "ApiUser"
    # the updated_at scan an event-less cache relies on finds the row
    scan = sg.find("Shot", [["project", "is", link(project)], ["updated_at", "greater_than", shot["updated_at"]]])
    assert shot["id"] in support.ids(scan)
    retired_scan = sg.find("Shot", [["project", "is", link(project)], ["updated_at", "greater_than", shot["updated_at"]]],
                           retired_only=True)
    assert created["id"] in support.ids(retired_scan)


def test_event_log_is_read_only(sg):
    last = sg.find_one("EventLogEntry", [], ["id"], order=[{"field_name": "id", "direction": "desc"}])
    assert last is not None
    with pytest.raises(shotgun_api3.Fault):
        sg.update("EventLogEntry", last["id"], {"description": "tamper"})
    with pytest.raises(shotgun_api3.Fault):
        sg.delete("EventLogEntry", last["id"])
