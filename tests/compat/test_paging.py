"""Paging (doc 3.2): the client's multi-page loop over new-style (`has_next_page`, server >= 7.4)
and old-style (`entity_count`) paging, explicit pages, limits, and volume on seeded data.

Request counts are observed through the simulator's /control/stats, so these tests say not only
"the rows are right" but "the client stopped exactly when it should have"."""

from __future__ import annotations

import json
import os
import tempfile

import pytest

import support
from support import Control, SimProcess, link

BY_ID = [{"field_name": "id", "direction": "asc"}]


def _reads(ctl: Control) -> int:
    return ctl.stats()["by_method"].get("read", 0)


def _make_shots(sg, project, n, prefix="pg"):
    """Create n Shots in project with batch calls (silent principal where possible)."""
    ids = []
    for start in range(0, n, 250):
        reqs = [{"request_type": "create", "entity_type": "Shot",
                 "data": {"project": link(project), "code": f"{prefix}_{i:05d}", "sg_cut_in": i % 97}}
                for i in range(start, min(n, start + 250))]
        ids += [r["id"] for r in sg.batch(reqs)]
    return ids


def _count_reads(ctl, fn):
    ctl.reset_stats()
    result = fn()
    return result, _reads(ctl)


@pytest.fixture(scope="module")
def big(sg_silent, sg):
    project = sg.create("Project", {"name": support.unique("compat_paging")})
    page = sg.info().get("api_max_entities_per_page") or 500
    n = 2 * page + 203
    ids = _make_shots(sg_silent, project, n)
    return {"project": project, "ids": ids, "page": page, "n": n}


@pytest.mark.needs_control
def test_find_all_walks_every_page(sg, control, big):
    flt = [["project", "is", link(big["project"])]]
    rows, reads = _count_reads(control, lambda: sg.find("Shot", flt, ["code"]))
    assert len(rows) == big["n"]
    assert support.ids(rows) == sorted(big["ids"])  # default order: id ascending
    assert len(set(support.ids(rows))) == big["n"]
    assert reads == 3  # pages of `page`, `page`, 203 rows; has_next_page false on the third


def test_explicit_pages_concatenate_to_full_result(sg, big):
    flt = [["project", "is", link(big["project"])]]
    page = big["page"]
    full = support.ids(sg.find("Shot", flt, order=BY_ID))
    pages = [support.ids(sg.find("Shot", flt, order=BY_ID, limit=page, page=k)) for k in (1, 2, 3, 4)]
    assert [len(p) for p in pages] == [page, page, 203, 0]
    assert sum(pages, []) == full


@pytest.mark.needs_control
def test_limit_above_page_size(sg, control, big):
    flt = [["project", "is", link(big["project"])]]
    limit = big["page"] + 17
    rows, reads = _count_reads(control, lambda: sg.find("Shot", flt, order=BY_ID, limit=limit))
    assert support.ids(rows) == sorted(big["ids"])[:limit]
    assert reads == 2


@pytest.mark.needs_control
def test_limit_within_page_is_one_request(sg, control, big):
    flt = [["project", "is", link(big["project"])]]
    rows, reads = _count_reads(control, lambda: sg.find("Shot", flt, order=BY_ID, limit=7))
    assert support.ids(rows) == sorted(big["ids"])[:7]
    assert reads == 1
    one, reads = _count_reads(control, lambda: sg.find_one("Shot", flt, order=BY_ID))
    assert one["id"] == min(big["ids"]) and reads == 1


def test_sorted_paging_is_stable(sg, big):
    """Sorting on a key with many ties still pages without duplicates or gaps."""
    flt = [["project", "is", link(big["project"])]]
    order = [{"field_name": "sg_cut_in", "direction": "desc"}]
    rows = sg.find("Shot", flt, ["sg_cut_in"], order=order)
    assert sorted(support.ids(rows)) == sorted(big["ids"])
    cut = [r["sg_cut_in"] for r in rows]
    assert cut == sorted(cut, reverse=True)


def test_retired_rows_page_too(sg, sg_silent, big):
    flt = [["project", "is", link(big["project"])]]
    victims = big["ids"][:3]
    for v in victims:
        sg_silent.delete("Shot", v)
    try:
        assert sorted(support.ids(sg.find("Shot", flt, retired_only=True))) == sorted(victims)
        assert len(sg.find("Shot", flt)) == big["n"] - 3
    finally:
        for v in victims:
            sg_silent.revive("Shot", v)


@pytest.mark.parametrize("entity_type", ["Shot", "Task", "Version", "Asset", "Note", "HumanUser", "EventLogEntry"])
def test_seeded_volume_matches_explicit_pages(sg, entity_type):
    page = sg.info().get("api_max_entities_per_page") or 500
    full = support.ids(sg.find(entity_type, [], order=BY_ID))
    stitched = []
    k = 1
    while True:
        chunk = support.ids(sg.find(entity_type, [], order=BY_ID, limit=page, page=k))
        stitched += chunk
        if len(chunk) < page:
            break
        k += 1
    if entity_type == "EventLogEntry":
        # other tests may have written events in between; the first pages must agree
        full = full[: len(stitched)]
    assert stitched == full
    assert full == sorted(full) and len(set(full)) == len(full)


# ---- second simulators with other `info` settings -------------------------------------------


def _start_sim(binary, config: dict):
    fd, path = tempfile.mkstemp(prefix="sim-config-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)
    sim = SimProcess(binary, ["--config", path])
    try:
        url = sim.start()
    except Exception:
        os.unlink(path)
        raise
    return sim, url, path


@pytest.fixture(scope="module", params=[
    pytest.param({"max_entities_per_page": 25}, id="new_style"),
    pytest.param({"max_entities_per_page": 25, "version": [7, 0, 0]}, id="old_style_entity_count"),
])
def small_site(request, sim_bin):
    sim, url, path = _start_sim(sim_bin, request.param)
    try:
        yield {"url": url, "config": request.param, "control": Control(url)}
    finally:
        sim.stop()
        os.unlink(path)


def test_small_site_info(small_site):
    sg = support.connect_script(small_site["url"])
    info = sg.info()
    assert info["api_max_entities_per_page"] == 25
    old = "version" in small_site["config"]
    if old:
        assert info["version"][:3] == [7, 0, 0]
    # the client picks its paging flavour from info.version
    assert sg.server_caps.ensure_paging_info_without_counts_support() is (not old)


@pytest.mark.parametrize("n,expected_reads", [(60, 3), (50, 2), (25, 1), (24, 1), (1, 1)])
def test_small_site_paging(small_site, n, expected_reads):
    sg = support.connect_script(small_site["url"])
    silent = support.connect_script(small_site["url"], support.SILENT_SCRIPT_NAME, support.SILENT_SCRIPT_KEY)
    project = sg.create("Project", {"name": support.unique(f"compat_small_{n}")})
    ids = _make_shots(silent, project, n)
    ctl = small_site["control"]
    rows, reads = _count_reads(ctl, lambda: sg.find("Shot", [["project", "is", link(project)]], ["code"]))
    assert support.ids(rows) == sorted(ids)
    # new style: stops on has_next_page false; old style: stops once it holds entity_count rows.
    # Either way no trailing empty page is fetched when the server reports correctly.
    assert reads == expected_reads
    # an empty result is one request in both styles
    _, reads = _count_reads(ctl, lambda: sg.find("Shot", [["project", "is", link(project)], ["code", "is", "none"]]))
    assert reads == 1


@pytest.mark.needs_control
def test_seeded_multi_page_find(sg, control):
    """The seeded site (run.sh starts it with --seed-scale 300) has more Tasks than one page."""
    page = sg.info().get("api_max_entities_per_page") or 500
    rows, reads = _count_reads(control, lambda: sg.find("Task", [], ["content", "entity"]))
    if len(rows) <= page:
        pytest.skip(f"only {len(rows)} seeded Tasks; start the site with a larger --seed-scale")
    assert reads == -(-len(rows) // page)
    assert len(set(support.ids(rows))) == len(rows)
