"""Shared helpers for the compatibility suite: the simulator process, its control API, and
small utilities around the official client.

Nothing here talks the API3 protocol itself: every site call goes through the unmodified
``shotgun_api3`` client. The control API (``/control/...``) is the simulator's own plain-JSON
side door and is only used to observe request counts and to inject faults.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
import shotgun_api3

REPO_ROOT = Path(__file__).resolve().parents[2]

# Credentials the simulator ships with (see the sim's README / CLI help). Overridable so the same
# battery can run against another site.
SCRIPT_NAME = os.environ.get("SG_COMPAT_SCRIPT", "sgcache_test")
SCRIPT_KEY = os.environ.get("SG_COMPAT_SCRIPT_KEY", "test_key")
SILENT_SCRIPT_NAME = os.environ.get("SG_COMPAT_SILENT_SCRIPT", "silent_script")
SILENT_SCRIPT_KEY = os.environ.get("SG_COMPAT_SILENT_SCRIPT_KEY", "silent_key")
HUMAN_LOGIN = os.environ.get("SG_COMPAT_LOGIN", "artist")
HUMAN_PASSWORD = os.environ.get("SG_COMPAT_PASSWORD", "artist_password")


def default_sim_bin() -> Path:
    return REPO_ROOT / "target" / "debug" / "shotgun-sim"


class SimProcess:
    """One running ``shotgun-sim``: started on a random port, stopped with SIGTERM."""

    def __init__(self, binary: str | os.PathLike, extra_args: Iterable[str] = ()):
        self.binary = str(binary)
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self.log_path: str | None = None
        self._log = None

    def start(self, timeout: float = 60.0) -> str:
        fd, self.log_path = tempfile.mkstemp(prefix="shotgun-sim-", suffix=".log")
        self._log = os.fdopen(fd, "wb")
        args = [self.binary, "--listen", "127.0.0.1:0", *self.extra_args]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL
        )
        first_line: list[bytes] = []
        ready = threading.Event()

        def pump() -> None:
            # First stdout line is the listening announcement; keep draining afterwards so the
            # simulator can never block on a full pipe.
            assert self.proc is not None and self.proc.stdout is not None
            for i, line in enumerate(self.proc.stdout):
                if i == 0:
                    first_line.append(line)
                    ready.set()
            ready.set()

        threading.Thread(target=pump, name="sim-stdout", daemon=True).start()
        if not ready.wait(timeout) or not first_line:
            self.stop()
            raise RuntimeError(
                f"shotgun-sim did not announce its address within {timeout}s; log:\n{self.log_tail()}"
            )
        announce = json.loads(first_line[0].decode("utf-8"))
        self.url = announce["listening"].rstrip("/")
        return self.url

    def log_tail(self, n: int = 40) -> str:
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log:
            self._log.close()
        self.proc = None


class Control:
    """Client for the simulator's ``/control`` endpoints (plain JSON, no auth)."""

    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
        return json.loads(raw) if raw.strip() else None

    def available(self) -> bool:
        try:
            self._call("GET", "/control/health")
            return True
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def stats(self) -> dict:
        return self._call("GET", "/control/stats")

    def reset_stats(self) -> None:
        self._call("POST", "/control/stats/reset")

    def faults(self) -> dict:
        return self._call("GET", "/control/faults")

    def set_faults(self, **faults: Any) -> dict:
        return self._call("PUT", "/control/faults", faults)

    def requests(self, limit: int = 50) -> Any:
        return self._call("GET", f"/control/requests?limit={limit}")


def connect_script(url: str, name: str = SCRIPT_NAME, key: str = SCRIPT_KEY, **kw) -> shotgun_api3.Shotgun:
    return shotgun_api3.Shotgun(url, script_name=name, api_key=key, **kw)


def connect_human(url: str, login: str = HUMAN_LOGIN, password: str = HUMAN_PASSWORD, **kw) -> shotgun_api3.Shotgun:
    return shotgun_api3.Shotgun(url, login=login, password=password, **kw)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def link(entity: dict) -> dict:
    """The minimal link (type + id) for an entity dict."""
    return {"type": entity["type"], "id": entity["id"]}


def link_key(value: Any) -> Any:
    """(type, id) for a link dict, for order-insensitive comparisons."""
    return (value["type"], value["id"])


def ids(rows: Iterable[dict]) -> list[int]:
    return [r["id"] for r in rows]


def max_event_id(sg: shotgun_api3.Shotgun) -> int:
    last = sg.find_one("EventLogEntry", [], ["id"], order=[{"field_name": "id", "direction": "desc"}])
    return last["id"] if last else 0


EVENT_FIELDS = [
    "id",
    "event_type",
    "attribute_name",
    "meta",
    "entity",
    "user",
    "project",
    "session_uuid",
    "created_at",
    "description",
]


def events_since(sg: shotgun_api3.Shotgun, after_id: int, extra_filters: list | None = None) -> list[dict]:
    filters = [["id", "greater_than", after_id]] + list(extra_filters or [])
    return sg.find(
        "EventLogEntry", filters, EVENT_FIELDS, order=[{"field_name": "id", "direction": "asc"}]
    )


def wait_for_events(
    sg: shotgun_api3.Shotgun,
    after_id: int,
    predicate: Callable[[list[dict]], bool],
    extra_filters: list | None = None,
    timeout: float = 10.0,
) -> list[dict]:
    """Poll the event log (as an event follower would) until ``predicate(events)`` holds.

    Returns the last list read, whether or not the predicate held, so the caller's assertion
    shows what was actually there.
    """
    deadline = time.monotonic() + timeout
    while True:
        evs = events_since(sg, after_id, extra_filters)
        if predicate(evs) or time.monotonic() >= deadline:
            return evs
        time.sleep(0.2)


# scripts/run-local.sh, run on the already built debug binaries.
RUN_LOCAL = REPO_ROOT / "scripts" / "run-local.sh"


def bin_dir(config) -> Path:
    """Where the built sgcache-worker and shotgun-sim are (SGCACHE_BIN_DIR, else beside the
    shotgun-sim binary the suite uses)."""
    explicit = os.environ.get("SGCACHE_BIN_DIR")
    if explicit:
        return Path(explicit)
    sim = config.getoption("--sim-bin") or str(default_sim_bin())
    return Path(sim).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class RunLocal:
    """One run of scripts/run-local.sh in its own session (so every process it started is in
    its process group)."""

    def __init__(self, bin_dir: Path, work: Path, port: int, env: dict[str, str], spec_text: str):
        for name in ("sgcache-worker", "shotgun-sim"):
            if not (bin_dir / name).exists():
                pytest.fail(f"{bin_dir / name} is missing: build it (cargo build -p sgcache-worker -p shotgun-sim)")
        spec = work / "spec.yaml"
        spec.write_text(spec_text)
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
            [str(RUN_LOCAL), "--port", str(port)],
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "wb"),
            start_new_session=True,
            preexec_fn=_default_stop_signals,
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
            pytest.fail(
                f"run-local.sh still running 30 s after signal {sig}:\n{self.text()[-3000:]}\n"
                f"processes of its group (signals pending, blocked, ignored, caught; where each "
                f"thread waits):\n{group_state(self.pgid)}"
            )

    def kill_leftovers(self) -> None:
        if group_alive(self.pgid):
            os.killpg(self.pgid, signal.SIGKILL)


def _default_stop_signals() -> None:
    """In the child, before exec: SIGINT and SIGQUIT back to their default action. A suite
    started in the background by a non-interactive shell (``cmd &``, as CI or nohup may run it)
    inherits them ignored, and a shell started with a signal ignored cannot trap it (POSIX):
    run-local.sh would never see the SIGINT a test sends (the stop once "hung" this way)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def group_state(pgid: int) -> str:
    """What every process of group `pgid` is doing, from /proc: its signal masks (a signal
    pending but not caught, or never sent, tells a hung stop apart from a lost signal) and the
    kernel function each of its threads waits in."""
    lines = []
    for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            if os.getpgid(pid) != pgid:
                continue
            cmd = (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))[:120]
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            masks = " ".join(l.replace("\t", "") for l in status if l.startswith(("State", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")))
            waits = []
            for tid in sorted(os.listdir(f"/proc/{pid}/task")):
                comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
                wchan = Path(f"/proc/{pid}/task/{tid}/wchan").read_text().strip()
                waits.append(f"{comm}:{wchan}")
            lines.append(f"{pid} {cmd}\n  {masks}\n  threads: {', '.join(waits)}")
        except (OSError, ProcessLookupError):
            continue
    return "\n".join(lines) or "(none left)"


def query_until_answered(url: str, run: RunLocal, timeout: float = 90.0) -> list[dict]:
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
