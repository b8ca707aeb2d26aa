"""The cache follows the site's schema, seen from the official client (issue 11): with every
Shot field cached (``"*"``) by ``scripts/run-local.sh`` (real worker binary, SQLite), a field
created through ``shotgun_api3`` (passed through the proxy to the test site) gets values, and
reads of it through the proxy are answered by the site until the cache has backfilled it, then
by the cache: every answer equal to the site's, no read failing, and no restart.
"""

from __future__ import annotations

import re
import signal
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import shotgun_api3

from support import RunLocal, bin_dir, free_port, query_until_answered

SPEC = """\
site:
  url: https://example.invalid
entities:
  - type: Shot
    fields: ["*"]
workers:
  events: {pollInterval: 300ms}
"""

ORDER = [{"field_name": "id", "direction": "asc"}]


def cache_reads(proxy_url: str) -> int:
    """Reads the proxy answered from the cache so far (its /metrics)."""
    text = urllib.request.urlopen(f"{proxy_url}/metrics", timeout=10).read().decode()
    total = 0
    for line in text.splitlines():
        if line.startswith("sgcache_proxy_requests_total{") and 'path="cache"' in line and 'method="read"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def test_a_field_created_through_the_official_client_is_served_from_the_cache(request):
    with tempfile.TemporaryDirectory() as tmp:
        run = RunLocal(bin_dir(request.config), Path(tmp), free_port(), {}, SPEC)
        try:
            query_until_answered(run.url, run)
            m = re.search(r"test Shotgun site at (\S+)", run.text())
            assert m, run.text()
            direct = shotgun_api3.Shotgun(m.group(1), script_name="sgcache_test", api_key="test_key")
            sg = shotgun_api3.Shotgun(run.url, script_name="sgcache_test", api_key="test_key")

            name = sg.schema_field_create("Shot", "text", "Cut Note")
            assert name == "sg_cut_note"
            shots = direct.find("Shot", [], ["id"], order=ORDER, limit=3)
            for i, shot in enumerate(shots):
                sg.update("Shot", shot["id"], {name: f"note {i}"})

            deadline = time.monotonic() + 90
            reads, from_cache = 0, 0
            while from_cache == 0:
                if time.monotonic() > deadline:
                    pytest.fail(f"{reads} reads, none of the new field from the cache:\n{run.text()[-3000:]}")
                before = cache_reads(run.url)
                answer = sg.find("Shot", [], ["code", name], order=ORDER)
                from_cache = cache_reads(run.url) - before
                reads += 1
                assert answer == direct.find("Shot", [], ["code", name], order=ORDER), f"read #{reads} differs"
                assert any(r[name] == "note 0" for r in answer), answer
                if not from_cache:
                    time.sleep(0.3)
            assert "the site's schema changed" in run.text()
            assert run.stop(signal.SIGTERM) == 143
        finally:
            run.kill_leftovers()
