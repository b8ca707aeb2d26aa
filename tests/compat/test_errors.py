"""Invalid requests come back as Fault with a message (doc 1.4, 5.2, 5.3)."""

from __future__ import annotations

import pytest
import shotgun_api3

from support import link


def _fault(call, *needles):
    with pytest.raises(shotgun_api3.Fault) as exc:
        call()
    # not an authentication problem, and the message names what was wrong
    assert not isinstance(exc.value, shotgun_api3.AuthenticationFault)
    msg = str(exc.value)
    assert msg and msg != "Unknown Error"
    for n in needles:
        assert n in msg, f"{n!r} not in fault message {msg!r}"
    return msg


@pytest.mark.parametrize(
    "entity_type,filters,fields,needle",
    [
        pytest.param("NoSuchEntityZz", [], ["id"], "NoSuchEntityZz", id="unknown_entity_type"),
        pytest.param("Shot", [["no_such_field_zz", "is", 1]], ["id"], "no_such_field_zz", id="unknown_filter_field"),
        pytest.param("Shot", [["code", "frobnicates", "x"]], ["id"], "frobnicates", id="unknown_relation"),
        pytest.param("Shot", [["sg_cut_in", "contains", "1"]], ["id"], "contains", id="relation_not_valid_for_number"),
        pytest.param("Shot", [["sg_status_list", "greater_than", "ip"]], ["id"], "greater_than", id="relation_not_valid_for_status"),
        pytest.param("Shot", [["sg_sequence", "starts_with", "sq"]], ["id"], "starts_with", id="text_relation_on_entity"),
        pytest.param("Shot", [["sg_sequence.Sequence.no_such_field_zz", "is", 1]], ["id"], "no_such_field_zz", id="unknown_deep_field"),
        pytest.param("Shot", [["sg_sequence.NoSuchEntityZz.code", "is", 1]], ["id"], "NoSuchEntityZz", id="unknown_deep_type"),
        pytest.param("EventLogEntry", [["meta", "is", None]], ["id"], "meta", id="serializable_not_filterable"),
    ],
)
def test_invalid_read(sg, entity_type, filters, fields, needle):
    _fault(lambda: sg.find(entity_type, filters, fields), needle)


def test_checkbox_null_filter_rejected(sg):
    _fault(lambda: sg.find("Version", [["flagged", "is", None]]))


def test_is_with_several_values_rejected(sg):
    _fault(lambda: sg.find("Shot", [["code", "is", ["a", "b"]]]))


def test_between_needs_two_values(sg):
    _fault(lambda: sg.find("Shot", [["sg_cut_in", "between", [1]]]))


def test_in_last_bad_unit(sg):
    _fault(lambda: sg.find("Task", [["due_date", "in_last", 3, "FORTNIGHT"]]), "FORTNIGHT")


def test_unknown_sort_field(sg):
    _fault(lambda: sg.find("Shot", [], ["id"], order=[{"field_name": "no_such_field_zz", "direction": "asc"}]),
           "no_such_field_zz")


def test_create_unknown_field(sg, project):
    _fault(lambda: sg.create("Shot", {"project": link(project), "code": "x", "no_such_field_zz": 1}), "no_such_field_zz")


def test_create_unknown_type(sg):
    _fault(lambda: sg.create("NoSuchEntityZz", {"code": "x"}), "NoSuchEntityZz")


def test_create_wrong_value_type(sg, project):
    _fault(lambda: sg.create("Shot", {"project": link(project), "code": "x", "sg_cut_in": "not a number"}), "sg_cut_in")


def test_create_invalid_status(sg, project):
    _fault(lambda: sg.create("Shot", {"project": link(project), "code": "x", "sg_status_list": "no_such_status"}), "sg_status_list")


def test_create_link_to_invalid_type(sg, project):
    # Shot.sg_sequence accepts only Sequence
    _fault(lambda: sg.create("Shot", {"project": link(project), "code": "x", "sg_sequence": link(project)}), "sg_sequence")


def test_create_link_to_missing_row(sg, project):
    _fault(lambda: sg.create("Shot", {"project": link(project), "code": "x",
                                      "sg_sequence": {"type": "Sequence", "id": 2_000_000_000}}))


@pytest.mark.parametrize("field,value", [("open_notes_count", "3"), ("created_at", "2020-01-01T00:00:00Z"),
                                         ("created_by", {"type": "HumanUser", "id": 1})])
def test_update_non_editable_field(sg, project, field, value):
    """Schema `editable: false` = the value cannot be written through the API (doc 7)."""
    shot = sg.create("Shot", {"project": link(project), "code": "err_noneditable"})
    _fault(lambda: sg.update("Shot", shot["id"], {field: value}), field)


def test_update_unknown_type(sg):
    _fault(lambda: sg.update("NoSuchEntityZz", 1, {"code": "x"}), "NoSuchEntityZz")


def test_summarize_unknown_field(sg):
    _fault(lambda: sg.summarize("Shot", [], [{"field": "no_such_field_zz", "type": "count"}]), "no_such_field_zz")


def test_failed_write_leaves_no_row(sg, project):
    with pytest.raises(shotgun_api3.Fault):
        sg.create("Shot", {"project": link(project), "code": "err_ghost", "no_such_field_zz": 1})
    assert sg.find("Shot", [["project", "is", link(project)], ["code", "is", "err_ghost"]]) == []
