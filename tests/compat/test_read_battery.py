"""Runs the data-driven read battery (battery.py) through the official client."""

from __future__ import annotations

import pytest

import battery


@pytest.fixture(scope="module")
def dataset(sg, project):
    return battery.build_dataset(sg, project)


def _params(cases):
    out = []
    for case in cases:
        marks = [pytest.mark.sim_choice] if case.sim_choice else []
        out.append(pytest.param(case, id=case.name, marks=marks))
    return out


def test_case_names_are_unique():
    names = [c.name for c in battery.DATASET_CASES + battery.SEEDED_CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("case", _params(battery.DATASET_CASES))
def test_dataset_case(sg, dataset, case):
    rows = battery.run_case(sg, case, dataset)
    battery.check_case(case, dataset, rows)


@pytest.mark.parametrize("case", _params(battery.SEEDED_CASES))
def test_seeded_case(sg, case):
    rows = battery.run_case(sg, case, None)
    for row in rows:
        assert row["type"] == case.entity_type
        for f in case.fields:
            assert f in row, f"{case.name}: field {f!r} missing in {row}"
    assert len({r["id"] for r in rows}) == len(rows), "duplicate rows across pages"
    if case.check:
        case.check(rows)


def test_seeded_battery_same_for_human_user(sg, sg_human):
    """Same comparison on the seeded cases."""
    assert battery.diff_targets(sg, sg_human, None) == []


def test_dataset_battery_same_for_every_principal(sg, sg_human, sg_silent, dataset):
    """The comparison a proxy suite makes (site vs proxy), here between principals of one site:
    without per-principal permissions every case must give identical rows."""
    assert battery.diff_targets(sg, sg_human, dataset) == []
    assert battery.diff_targets(sg, sg_silent, dataset) == []
