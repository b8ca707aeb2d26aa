"""The read battery through the sgcache proxy: every case must give exactly what the site
gives, and the proxy must answer a good share of them from its cache.

Runs only when ``SG_PROXY_URL`` names a proxy in front of the site under test
(``tests/compat/run_proxy.sh`` starts the whole stack and sets it)."""

import os
import re
import urllib.request

import pytest

import battery
import support

PROXY = os.environ.get("SG_PROXY_URL")
pytestmark = pytest.mark.skipif(not PROXY, reason="SG_PROXY_URL is not set (see run_proxy.sh)")


@pytest.fixture(scope="module")
def sg_proxy():
    return support.connect_script(PROXY.rstrip("/"))


def reads_by_path() -> dict:
    """``{path: count}`` of read requests answered so far, from the proxy's metrics."""
    text = urllib.request.urlopen(PROXY.rstrip("/") + "/metrics", timeout=10).read().decode()
    out: dict = {}
    pattern = r'sgcache_proxy_requests_total\{method="read",path="([a-z]+)",reason="([a-z_]+)"\} ([0-9.]+)'
    for path, reason, n in re.findall(pattern, text):
        key = path if path == "cache" else f"{path}:{reason}"
        out[key] = out.get(key, 0) + float(n)
    return out


def delta(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


# The share of the battery's reads the proxy must answer from its cache. 157 of 212 (74 %)
# came from the cache on 2026-11-30 and 167 of 212 (79 %) on 2026-12-01 (every type cached by
# run_proxy.sh), the rest passing through for the shapes the protocol doc leaves inferred;
# issue 14 (earned trust) serves those once the site has proven them, and the bar then rises
# to 0.95.
MIN_CACHE_SHARE = 0.70

# Why a read may pass through: what the protocol doc leaves unknown (relative dates and tag
# lists: relation; text sorts: sort; multi-hop paths: path; non-ASCII case folding and
# several-valued is: value; retired link targets: link_name) and the battery's uncached types.
ALLOWED_PASS_THROUGH = {
    "site:relation",
    "site:sort",
    "site:path",
    "site:value",
    "site:link_name",
    "site:type_not_cached",
}


def share_report(served: dict, by_case: dict) -> str:
    """The share of reads from the cache, then each pass-through reason with its count and the
    battery cases that hit it."""
    total = sum(served.values())
    cached = served.get("cache", 0)
    lines = [f"proxy battery: {cached:.0f} of {total:.0f} reads from the cache "
             f"({100 * cached / total if total else 0:.1f} %, required {100 * MIN_CACHE_SHARE:.0f} %)"]
    for reason, n in sorted(((k, v) for k, v in served.items() if k != "cache"), key=lambda kv: -kv[1]):
        cases = sorted(name for name, paths in by_case.items() if reason in paths)
        lines.append(f"  {reason}: {n:.0f} reads, cases: {', '.join(cases)}")
    return "\n".join(lines)


def test_battery_through_the_proxy_matches_the_site(sg, sg_proxy, project, capsys):
    # The dataset is written through the proxy, so its write-through must make it readable.
    ctx = battery.build_dataset(sg_proxy, project)
    before = reads_by_path()
    by_case: dict = {}
    last = [before]

    def note_case(case):
        now = reads_by_path()
        by_case[case.name] = delta(now, last[0])
        last[0] = now

    diffs = battery.diff_targets(sg, sg_proxy, ctx, after_case=note_case)
    served = delta(reads_by_path(), before)
    report = share_report(served, by_case)
    with capsys.disabled():
        print("\n" + report)
    assert diffs == [], "\n".join(f"{name}: site={a!r} proxy={b!r}" for name, a, b in diffs)
    assert set(served) - {"cache"} <= ALLOWED_PASS_THROUGH, report
    total = sum(served.values())
    assert served.get("cache", 0) >= MIN_CACHE_SHARE * total, report


def test_wrong_key_gets_authentication_fault_through_the_proxy():
    bad = support.connect_script(PROXY.rstrip("/"), key="not_the_key")
    import shotgun_api3

    with pytest.raises(shotgun_api3.AuthenticationFault):
        bad.find("Shot", [], ["code"], limit=1)
