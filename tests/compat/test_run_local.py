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
from pathlib import Path

import pytest
import shotgun_api3

import support
from support import SimProcess

SCRIPT = support.REPO_ROOT / "scripts" / "run-local.sh"
SPEC = """\
site:
  url: https://example.invalid
entities:
  - type: Shot
    fields: [code, sg_status_list, project]
workers:
  events: {pollInterval: 300ms}
"""


def _bin_dir(config) -> Path:
    explicit = os.environ.get("SGCACHE_BIN_DIR")
    if explicit:
        return Path(explicit)
    sim = config.getoption("--sim-bin") or str(support.default_sim_bin())
    return Path(sim).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class RunLocal:
    """One run of the script in its own session."""

    def __init__(self, bin_dir: Path, work: Path, port: int, env: dict[str, str]):
        for name in ("sgcache-worker", "shotgun-sim"):
            if not (bin_dir / name).exists():
                pytest.fail(f"{bin_dir / name} is missing: build it (cargo build -p sgcache-worker -p shotgun-sim)")
        spec = work / "spec.yaml"
        spec.write_text(SPEC)
        self.log = work / "run-local.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOTGUN_", "DATABASE_URL", "SGCACHE_"))}
        full_env.update(
            SGCACHE_BIN_DIR=str(bin_dir),
            SGCACHE_CONFIG=str(spec),
            SGCACHE_CACHE_DIR=str(work),
            SIM_SEED_SCALE="20",
            RUST_LOG="info",
            **env,
        )
        self.proc = subprocess.Popen(
            [str(SCRIPT), "--port", str(port)],
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "wb"),
            start_new_session=True,
        )
        self.pgid = self.proc.pid
        self.url = f"http://127.0.0.1:{port}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run-local.sh still running 30 s after signal {sig}:\n{self.text()[-3000:]}")

    def kill_leftovers(self) -> None:
        if _group_alive(self.pgid):
            os.killpg(self.pgid, signal.SIGKILL)


def _query_until_answered(url: str, run: RunLocal, timeout: float = 90.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if run.proc.poll() is not None:
            pytest.fail(f"run-local.sh exited early ({run.proc.returncode}):\n{run.text()[-3000:]}")
        try:
            # The client asks the server for `info` as it is made: made once the proxy listens.
            sg = shotgun_api3.Shotgun(url, script_name="sgcache_test", api_key="test_key")
            return sg.find("Shot", [], ["code", "sg_status_list"], order=[{"field_name": "id", "direction": "asc"}])
        except Exception as e:  # not listening yet
            last = e
            time.sleep(0.3)
    pytest.fail(f"the proxy at {url} never answered ({last}):\n{run.text()[-3000:]}")


def _assert_nothing_left(run: RunLocal) -> None:
    # The script waits for what it started before it exits: nothing may be left even briefly.
    assert not _group_alive(run.pgid), f"processes of run-local.sh still running after it exited:\n{run.text()[-3000:]}"


def test_run_local_with_its_test_site_answers_and_stops_on_sigterm(request):
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = _free_port()
        run = RunLocal(_bin_dir(request.config), work, port, {})
        try:
            shots = _query_until_answered(run.url, run)
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
    bin_dir = _bin_dir(request.config)
    sim = SimProcess(bin_dir / "shotgun-sim", ["--seed-scale", "20"])
    site = sim.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            port = _free_port()
            env = {"SHOTGUN_URL": site, "SHOTGUN_SCRIPT_NAME": "sgcache_test", "SHOTGUN_API_KEY": "test_key"}
            run = RunLocal(bin_dir, work, port, env)
            try:
                shots = _query_until_answered(run.url, run)
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
