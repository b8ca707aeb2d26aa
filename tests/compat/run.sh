#!/usr/bin/env bash
# Runs the Python compatibility suite against the test Shotgun site (or another target).
#
#   tests/compat/run.sh [pytest args...]
#
# Environment:
#   VENV             virtualenv to create/use (default: <repo>/.venv)
#   PYTHON           interpreter used to create the venv (default: python3)
#   SHOTGUN_SIM_BIN  simulator binary; when unset, `cargo build -p shotgun-sim` is run and
#                    target/debug/shotgun-sim is used
#   SG_COMPAT_URL    run against this site instead of starting a simulator (the binary is then
#                    still used by the tests that start their own extra simulators)
#   SG_COMPAT_CONTROL_URL  the simulator's /control base URL when SG_COMPAT_URL is a proxy
# Exit code: pytest's.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "compat: creating virtualenv $venv" >&2
    "$python" -m venv "$venv"
fi
# Reinstall only when requirements changed since the last successful install.
stamp="$venv/.compat-requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$here/requirements.txt"
    echo "$want" > "$stamp"
fi

if [ -z "${SHOTGUN_SIM_BIN:-}" ]; then
    echo "compat: building shotgun-sim" >&2
    (cd "$root" && cargo build -q -p shotgun-sim)
    export SHOTGUN_SIM_BIN="$root/target/debug/shotgun-sim"
else
    # pytest runs from tests/compat: make a relative path absolute first.
    SHOTGUN_SIM_BIN="$(cd "$(dirname "$SHOTGUN_SIM_BIN")" && pwd)/$(basename "$SHOTGUN_SIM_BIN")"
    export SHOTGUN_SIM_BIN
fi

cd "$here"
set +e
"$venv/bin/python" -m pytest "$@"
status=$?
set -e
exit "$status"
