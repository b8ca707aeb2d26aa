"""scripts/run-local.sh as the README runs it: started, queried through shotgun_api3, stopped
with a signal, leaving no process behind.

The script is run on the already built debug binaries (``SGCACHE_BIN_DIR``, default: the folder
of the shotgun-sim binary the suite uses) and in its own session, so every process it started
is in its process group, and "nothing left" is checked on that whole group.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import pytest
import shotgun_api3

from support import RunLocal, SimProcess, bin_dir, free_port, group_alive, query_until_answered

SPEC = """\
site:
  url: https://example.invalid
entities:
  - type: Shot
    fields: [code, sg_status_list, project]
workers:
  events: {pollInterval: 300ms}
"""


def _assert_nothing_left(run: RunLocal) -> None:
    # The script waits for what it started before it exits: nothing may be left even briefly.
    assert not group_alive(run.pgid), f"processes of run-local.sh still running after it exited:\n{run.text()[-3000:]}"
    # A worker whose in-flight work did not end within its deadline was made to exit: still
    # stopped in time, but said in the run's summary.
    if "did not finish in time" in run.text():
        warnings.warn(f"the worker was made to exit after its stop deadline:\n{run.text()[-3000:]}")


def test_run_local_with_its_test_site_answers_and_stops_on_sigterm(request):
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = free_port()
        run = RunLocal(bin_dir(request.config), work, port, {}, SPEC)
        try:
            shots = query_until_answered(run.url, run)
            m = re.search(r"test Shotgun site at (\S+)", run.text())
            assert m, run.text()
            direct = shotgun_api3.Shotgun(m.group(1), script_name="sgcache_test", api_key="test_key")
            assert shots and shots == direct.find(
                "Shot", [], ["code", "sg_status_list"], order=[{"field_name": "id", "direction": "asc"}]
            )
            assert (work / "sgcache-test-site.db").exists(), "the test site's cache file"
            assert run.stop(signal.SIGTERM) == 143
            _assert_nothing_left(run)
        finally:
            run.kill_leftovers()


def test_run_local_against_a_given_site_keeps_a_file_per_site_and_stops_on_sigint(request):
    bins = bin_dir(request.config)
    sim = SimProcess(bins / "shotgun-sim", ["--seed-scale", "20"])
    site = sim.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            port = free_port()
            env = {"SHOTGUN_URL": site, "SHOTGUN_SCRIPT_NAME": "sgcache_test", "SHOTGUN_API_KEY": "test_key"}
            run = RunLocal(bins, work, port, env, SPEC)
            try:
                shots = query_until_answered(run.url, run)
                assert shots
                host = site.split("://", 1)[1].replace(":", "_")
                assert (work / f"sgcache-{host}.db").exists(), sorted(os.listdir(work))
                assert run.stop(signal.SIGINT) == 130
                _assert_nothing_left(run)
            finally:
                run.kill_leftovers()
            # The site itself is still up: only what the script started was stopped.
            assert sim.proc is not None and sim.proc.poll() is None
    finally:
        sim.stop()
