"""summarize (doc 3.3) on rows created by this module."""

from __future__ import annotations

import pytest

from support import link, link_key


@pytest.fixture(scope="module")
def data(sg, project):
    p = link(project)
    sa = sg.create("Sequence", {"project": p, "code": "sum_sq_a"})
    sb = sg.create("Sequence", {"project": p, "code": "sum_sq_b"})
    rows = [
        ("sum010", "ip", 10, sa, True),
        ("sum020", "ip", 20, sa, False),
        ("sum030", "fin", 30, sb, False),
        ("sum040", "wtg", None, None, False),
    ]
    shots = []
    for code, status, cut_in, seq, _ in rows:
        shots.append(sg.create("Shot", {"project": p, "code": code, "sg_status_list": status,
                                        "sg_cut_in": cut_in, "sg_sequence": link(seq) if seq else None}))
    retired = sg.create("Shot", {"project": p, "code": "sum050", "sg_status_list": "ip", "sg_cut_in": 1000})
    sg.delete("Shot", retired["id"])
    return {"project": p, "sa": sa, "sb": sb, "shots": shots}


def test_summaries_without_grouping(sg, data):
    res = sg.summarize(
        "Shot",
        [["project", "is", data["project"]]],
        [{"field": "id", "type": "record_count"}, {"field": "sg_cut_in", "type": "sum"},
         {"field": "code", "type": "count"}],
    )
    s = res["summaries"]
    assert s == {"id": 4, "sg_cut_in": 60, "code": 4}  # retired row excluded, null ignored by sum
    assert "groups" not in res or res["groups"] == []


@pytest.mark.parametrize(
    "summary_type,expected",
    [("sum", 60), ("maximum", 30), ("minimum", 10), ("average", 20), ("record_count", 4)],
)
def test_summary_types(sg, data, summary_type, expected):
    res = sg.summarize("Shot", [["project", "is", data["project"]]], [{"field": "sg_cut_in", "type": summary_type}])
    assert res["summaries"]["sg_cut_in"] == expected


def test_summary_with_filter(sg, data):
    res = sg.summarize("Shot", [["project", "is", data["project"]], ["sg_status_list", "is", "ip"]],
                       [{"field": "sg_cut_in", "type": "sum"}, {"field": "id", "type": "record_count"}])
    assert res["summaries"] == {"sg_cut_in": 30, "id": 2}


def test_grouping_exact_status(sg, data):
    res = sg.summarize(
        "Shot", [["project", "is", data["project"]]],
        [{"field": "id", "type": "record_count"}, {"field": "sg_cut_in", "type": "sum"}],
        grouping=[{"field": "sg_status_list", "type": "exact", "direction": "asc"}],
    )
    assert res["summaries"]["id"] == 4
    groups = {g["group_name"]: g for g in res["groups"]}
    assert set(groups) == {"ip", "fin", "wtg"}
    assert groups["ip"]["summaries"] == {"id": 2, "sg_cut_in": 30}
    assert groups["fin"]["summaries"] == {"id": 1, "sg_cut_in": 30}
    assert groups["wtg"]["summaries"]["id"] == 1
    assert groups["ip"]["group_value"] == "ip"
    assert [g["group_name"] for g in res["groups"]] == ["fin", "ip", "wtg"]


@pytest.mark.sim_choice  # entity groups ordered by display name
def test_grouping_by_entity(sg, data):
    res = sg.summarize(
        "Shot", [["project", "is", data["project"]], ["sg_sequence", "is_not", None]],
        [{"field": "id", "type": "record_count"}],
        grouping=[{"field": "sg_sequence", "type": "exact", "direction": "desc"}],
    )
    assert [g["summaries"]["id"] for g in res["groups"]] == [1, 2]
    assert [g["group_name"] for g in res["groups"]] == ["sum_sq_b", "sum_sq_a"]
    assert link_key(res["groups"][1]["group_value"]) == link_key(data["sa"])


def test_nested_grouping(sg, data):
    res = sg.summarize(
        "Shot", [["project", "is", data["project"]], ["sg_sequence", "is_not", None]],
        [{"field": "id", "type": "record_count"}],
        grouping=[{"field": "sg_sequence", "type": "exact", "direction": "asc"},
                  {"field": "sg_status_list", "type": "exact", "direction": "asc"}],
    )
    first = res["groups"][0]
    assert first["group_name"] == "sum_sq_a"
    assert [(g["group_name"], g["summaries"]["id"]) for g in first["groups"]] == [("ip", 2)]
    second = res["groups"][1]
    assert [(g["group_name"], g["summaries"]["id"]) for g in second["groups"]] == [("fin", 1)]


def test_summarize_filter_operator_any(sg, data):
    shots = data["shots"]
    res = sg.summarize("Shot", [["id", "is", shots[0]["id"]], ["id", "is", shots[2]["id"]]],
                       [{"field": "sg_cut_in", "type": "sum"}], filter_operator="any")
    assert res["summaries"]["sg_cut_in"] == 40
