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


# The share of the battery's reads the proxy must answer from its cache once the trust classes
# the battery relies on are trusted. 157 of 212 (74 %) came from the cache on 2026-11-30 and
# 167 of 212 (79 %) on 2026-12-01, before earned trust (issue 14): text sorts, relative dates,
# multi-hop paths, non-ASCII text and tag lists passed through.
MIN_CACHE_SHARE = 0.95

# Passes of the battery while classes learn (each pass is also checked against the site).
# With the default trust.samples (20) a class seen once a pass needs 20.
MAX_WARM_UP_PASSES = 25

# Why a read may pass through: what the cache cannot answer exactly (several-valued is,
# non-ASCII contains on SQLite: value; retired link targets: link_name; relations the site
# refuses or the cache does not hold: relation), a class still learning, and the battery's
# uncached types.
ALLOWED_PASS_THROUGH = {
    "site:relation",
    "site:sort",
    "site:path",
    "site:value",
    "site:link_name",
    "site:type_not_cached",
    "site:trust_learning",
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


def trust_metrics() -> dict:
    """``{(name, labels): value}`` of the proxy's ``sgcache_proxy_trust_*`` series."""
    text = urllib.request.urlopen(PROXY.rstrip("/") + "/metrics", timeout=10).read().decode()
    out = {}
    for name, labels, n in re.findall(r'(sgcache_proxy_trust_[a-z_]+)\{([^}]*)\} ([0-9.]+)', text):
        out[(name, labels)] = float(n)
    return out


def checks_settled(timeout: float = 20.0) -> dict:
    """Waits until the background trust checks stop moving (they run after the site answered)."""
    import time

    last, deadline = trust_metrics(), time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.5)
        now = trust_metrics()
        if now == last:
            return now
        last = now
    return last


def one_pass(sg, sg_proxy, ctx):
    before = reads_by_path()
    by_case: dict = {}
    last = [before]

    def note_case(case):
        now = reads_by_path()
        by_case[case.name] = delta(now, last[0])
        last[0] = now

    diffs = battery.diff_targets(sg, sg_proxy, ctx, after_case=note_case)
    return delta(reads_by_path(), before), by_case, diffs


def test_battery_through_the_proxy_matches_the_site(sg, sg_proxy, project, capsys):
    # The dataset is written through the proxy, so its write-through must make it readable.
    ctx = battery.build_dataset(sg_proxy, project)
    # While the classes learn, every read goes to the site or is answered identically.
    for passes in range(1, MAX_WARM_UP_PASSES + 1):
        served, by_case, diffs = one_pass(sg, sg_proxy, ctx)
        assert diffs == [], "\n".join(f"{name}: site={a!r} proxy={b!r}" for name, a, b in diffs)
        assert set(served) - {"cache"} <= ALLOWED_PASS_THROUGH, share_report(served, by_case)
        if "site:trust_learning" not in served:
            break
        checks_settled()
    trust = checks_settled()
    states = sorted(
        (labels, n) for (name, labels), n in trust.items()
        if name == "sgcache_proxy_trust_class_state" and n == 1 and 'state="learning"' not in labels
    )
    report = share_report(served, by_case)
    with capsys.disabled():
        print(f"\n{report}\n  after {passes} passes; classes: {states}")
    # Not one class was turned off: the cache never answered a read differently from the site.
    assert not any('state="off"' in labels for labels, _ in states), states
    assert "site:trust_learning" not in served, report
    total = sum(served.values())
    assert served.get("cache", 0) >= MIN_CACHE_SHARE * total, report


def test_wrong_key_gets_authentication_fault_through_the_proxy():
    bad = support.connect_script(PROXY.rstrip("/"), key="not_the_key")
    import shotgun_api3

    with pytest.raises(shotgun_api3.AuthenticationFault):
        bad.find("Shot", [], ["code"], limit=1)
