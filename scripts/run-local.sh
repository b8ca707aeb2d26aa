#!/usr/bin/env bash
# Runs the whole cache on this machine: migrate, then the proxy, event follower and scanner in
# one process, with SQLite unless DATABASE_URL is set. Without SHOTGUN_URL it first starts the
# project's test Shotgun site (shotgun-sim) with seeded data and points the cache at it.
#   SGCACHE_CONFIG   spec file (default examples/studio.yaml)
#   SIM_SEED_SCALE   size of the test site's seeded data (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
config="${SGCACHE_CONFIG:-examples/studio.yaml}"

cargo build --release -p sgcache-worker -p shotgun-sim
bin=target/release

sim_pid=""
cleanup() { [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true; }
trap cleanup EXIT

if [ -z "${SHOTGUN_URL:-}" ]; then
  fifo=$(mktemp -u); mkfifo "$fifo"
  "$bin/shotgun-sim" --listen 127.0.0.1:0 --seed-scale "${SIM_SEED_SCALE:-200}" >"$fifo" &
  sim_pid=$!
  read -r line <"$fifo"; rm -f "$fifo"
  SHOTGUN_URL=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["listening"])' "$line")
  export SHOTGUN_URL SHOTGUN_SCRIPT_NAME=sgcache_test SHOTGUN_API_KEY=test_key
  echo "test Shotgun site at $SHOTGUN_URL (script sgcache_test / key test_key)" >&2
fi

echo "proxy: point shotgun_api3 at http://127.0.0.1:8010" >&2
"$bin/sgcache-worker" --config "$config" all
