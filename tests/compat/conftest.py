"""Fixtures for the compatibility suite.

Target selection (so the same battery can later run through the caching proxy):

* ``--sg-url URL`` / ``SG_COMPAT_URL``: run against an already running site (the simulator
  started elsewhere, or the proxy in front of it). When absent, one ``shotgun-sim`` is started
  for the whole session on a random port (binary from ``--sim-bin`` / ``SHOTGUN_SIM_BIN``,
  default ``target/debug/shotgun-sim``) and stopped at the end.
* ``--control-url URL`` / ``SG_COMPAT_CONTROL_URL``: where the simulator's ``/control`` API is
  (defaults to the started simulator, or to ``--sg-url``). Tests that need it are skipped with
  a reason when it does not answer.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

import support
from support import Control, SimProcess


def pytest_addoption(parser):
    group = parser.getgroup("compat", "Shotgun compatibility suite")
    group.addoption("--sg-url", default=os.environ.get("SG_COMPAT_URL"), help="target site URL (default: start shotgun-sim)")
    group.addoption("--control-url", default=os.environ.get("SG_COMPAT_CONTROL_URL"), help="simulator control base URL")
    group.addoption("--sim-bin", default=os.environ.get("SHOTGUN_SIM_BIN"), help="path of the shotgun-sim binary")


class Site:
    def __init__(self, url: str, control_url: str | None, sim: SimProcess | None, sim_bin: str | None):
        self.url = url
        self.control_url = control_url
        self.sim = sim
        self.sim_bin = sim_bin

    def __repr__(self) -> str:
        return f"Site({self.url})"


def _sim_bin(config) -> str:
    return config.getoption("--sim-bin") or str(support.default_sim_bin())


@pytest.fixture(scope="session")
def site(request):
    url = request.config.getoption("--sg-url")
    control_url = request.config.getoption("--control-url")
    if url:
        yield Site(url.rstrip("/"), (control_url or url).rstrip("/"), None, None)
        return
    binary = _sim_bin(request.config)
    if not Path(binary).exists():
        pytest.exit(f"shotgun-sim binary not found at {binary}; build it (cargo build -p shotgun-sim) or pass --sim-bin", 2)
    # A seed big enough that several seeded types (tasks ≈ 2N) span more than one 500-row page.
    scale = os.environ.get("SG_COMPAT_SEED_SCALE", "300")
    sim = SimProcess(binary, ["--seed-scale", scale])
    url = sim.start()
    try:
        yield Site(url, (control_url or url).rstrip("/"), sim, binary)
    finally:
        sim.stop()


@pytest.fixture(scope="session")
def sim_bin(request, site):
    """The simulator binary, for tests that need a second simulator with other settings."""
    binary = site.sim_bin or _sim_bin(request.config)
    if not Path(binary).exists():
        pytest.skip(f"no shotgun-sim binary at {binary}")
    return binary


@pytest.fixture(scope="session")
def control(site):
    ctl = Control(site.control_url)
    if not ctl.available():
        pytest.skip(f"simulator control API not reachable at {site.control_url}")
    return ctl


@pytest.fixture(scope="session")
def sg(site):
    """Event-generating script principal."""
    return support.connect_script(site.url)


@pytest.fixture(scope="session")
def sg_silent(site):
    """Script principal whose writes generate no events."""
    return support.connect_script(site.url, support.SILENT_SCRIPT_NAME, support.SILENT_SCRIPT_KEY)


@pytest.fixture(scope="session")
def sg_human(site):
    return support.connect_human(site.url)


@pytest.fixture(scope="module")
def project(sg):
    """A fresh project per test module, so exact expectations only see this module's rows."""
    return sg.create("Project", {"name": support.unique("compat")})


@pytest.fixture
def utc_today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()
