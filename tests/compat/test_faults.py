"""Fault injection through /control/faults, as the client experiences it (doc 1.5, 8.3).

Faults are site-wide, so every test restores the defaults it read at module start."""

from __future__ import annotations

import time

import pytest
import shotgun_api3

import support
from support import link

pytestmark = pytest.mark.needs_control


@pytest.fixture
def faults(control):
    original = control.faults()
    try:
        yield control
    finally:
        control.set_faults(**original)


def test_faults_partial_update(faults):
    before = faults.faults()
    after = faults.set_faults(latency_ms=1)
    after = faults.faults()
    assert after["latency_ms"] == 1
    assert {k: v for k, v in after.items() if k != "latency_ms"} == {k: v for k, v in before.items() if k != "latency_ms"}


def test_503_is_protocol_error_not_retried(site, faults):
    sg = support.connect_script(site.url)
    faults.set_faults(fail_503_rate=1.0)
    faults.reset_stats()
    with pytest.raises(shotgun_api3.ProtocolError) as exc:
        sg.find("Project", [], ["name"])
    assert exc.value.errcode == 503
    assert faults.stats()["requests_total"] == 1


def test_504_retried_three_times(site, faults):
    sg = support.connect_script(site.url)
    faults.set_faults(timeout_rate=1.0, timeout_ms=100)
    faults.reset_stats()
    started = time.monotonic()
    with pytest.raises(shotgun_api3.ProtocolError) as exc:
        sg.find("Project", [], ["name"])
    assert exc.value.errcode == 504
    assert faults.stats()["requests_total"] == 3  # the client's 3 attempts
    assert time.monotonic() - started >= 0.75 + 1.5  # its back-off between attempts


def test_site_down_includes_info(site, faults):
    faults.set_faults(down=True)
    with pytest.raises(shotgun_api3.ProtocolError) as exc:
        shotgun_api3.Shotgun(site.url, connect=False).info()
    assert exc.value.errcode == 503
    faults.set_faults(down=False)
    assert shotgun_api3.Shotgun(site.url, connect=False).info()["version"]


def test_latency(site, faults):
    sg = support.connect_script(site.url)
    faults.set_faults(latency_ms=300)
    started = time.monotonic()
    sg.find_one("Project", [], ["name"])
    assert time.monotonic() - started >= 0.3


def test_event_gap_delays_visibility(sg, project, faults):
    before = support.max_event_id(sg)
    faults.set_faults(event_gap_rate=1.0, event_gap_delay_ms=1500)
    shot = sg.create("Shot", {"project": link(project), "code": "fault_gap"})
    assert support.events_since(sg, before, [["entity", "is", link(shot)]]) == []
    faults.set_faults(event_gap_rate=0.0)
    time.sleep(1.7)
    evs = support.events_since(sg, before, [["entity", "is", link(shot)]])
    assert any(e["event_type"] == "Shotgun_Shot_New" for e in evs)


def test_event_drop_leaves_id_holes(sg, project, faults):
    before = support.max_event_id(sg)
    faults.set_faults(event_drop_rate=1.0)
    dropped = sg.create("Shot", {"project": link(project), "code": "fault_drop"})
    faults.set_faults(event_drop_rate=0.0)
    fence = sg.create("Shot", {"project": link(project), "code": "fault_drop_fence"})
    evs = support.wait_for_events(sg, before, lambda evs: any(
        (e["meta"] or {}).get("entity_id") == fence["id"] for e in evs))
    assert not [e for e in evs if (e["meta"] or {}).get("entity_id") == dropped["id"]
                and (e["meta"] or {}).get("entity_type") == "Shot"]
    assert evs and min(e["id"] for e in evs) > before + 1  # the dropped events' ids were used
