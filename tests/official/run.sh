#!/usr/bin/env bash
# Runs the official client's own live-server tests (tests/test_api.py, test_api_long.py and
# test_proxy.py of the shotgun_api3 version pinned in tests/compat/requirements.txt, taken
# unmodified from its PyPI source distribution, sha256-checked) against the test site, with
# this folder's base.py as the `base` module they import (the sdist does not ship one).
#
#   tests/official/run.sh [pytest args...]
#
# Environment: SHOTGUN_SIM_BIN (default target/debug/shotgun-sim), VENV, PYTHON, and
# SG_SERVER_URL to run against another site (e.g. the proxy) instead of a fresh test site.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${VENV:-$root/.venv}"
version="$(sed -n 's/^shotgun_api3==//p' "$root/tests/compat/requirements.txt")"
sdist_sha256="$(cat "$here/sdist.sha256")"
cache="${SG_OFFICIAL_CACHE:-$root/target/official-suite}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

export SHOTGUN_SIM_BIN="${SHOTGUN_SIM_BIN:-$root/target/debug/shotgun-sim}"
# The same virtualenv as the compatibility suite (tests/compat/run.sh creates and fills it).
VENV="$venv" "$root/tests/compat/run.sh" --version >/dev/null

sdist="$cache/shotgun_api3-$version.tar.gz"
if [ ! -f "$sdist" ] || ! echo "$sdist_sha256  $sdist" | sha256sum -c --quiet - 2>/dev/null; then
    mkdir -p "$cache"
    "$venv/bin/python" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
        "shotgun_api3==$version" -d "$cache"
    echo "$sdist_sha256  $sdist" | sha256sum -c --quiet -
fi

suite="$work/official"
mkdir -p "$suite"
tar -xzf "$sdist" -C "$work" "shotgun_api3-$version/tests"
for f in test_api.py test_api_long.py test_proxy.py; do
    cp "$work/shotgun_api3-$version/tests/$f" "$suite/"
done
cp "$here/base.py" "$here/conftest.py" "$here/expected_failures.txt" "$suite/"
touch "$suite/__init__.py"
# The image files the tests upload from beside themselves are not in the sdist: our own small JPEG.
for name in sg_logo.jpg "Noëlご.jpg"; do cp "$here/sgcache_test_image.jpg" "$suite/$name"; done

export SG_COMPAT_DIR="$root/tests/compat"
cd "$suite"
# Not exec: the EXIT trap removes the extracted suite afterwards.
status=0
"$venv/bin/python" -m pytest -p no:cacheprovider -o timeout=120 -rfExXs "$@" . || status=$?
exit "$status"
