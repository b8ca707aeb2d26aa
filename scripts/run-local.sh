#!/usr/bin/env bash
# Runs the whole cache on this machine: migrate, then the proxy, event follower and scanner in
# one process, with SQLite unless DATABASE_URL is set. Without SHOTGUN_URL it first starts the
# project's test Shotgun site (shotgun-sim) with seeded data and points the cache at it.
#
#   scripts/run-local.sh [--reset] [--port N] [--bind ADDR]
#     --reset          drop the cache's tables and fill it afresh
#     --port, --bind   where the proxy listens (default 127.0.0.1:8010; SGCACHE_PORT, SGCACHE_BIND)
#   SGCACHE_CONFIG   spec file (default examples/studio.yaml)
#   SGCACHE_BIN_DIR  folder with sgcache-worker and shotgun-sim already built (default: build
#                    them with `cargo build --release` into target/release)
#   SIM_SEED_SCALE   size of the test site's seeded data (default 200)
#   SGCACHE_CACHE_DIR  folder of the SQLite cache files (default: the repository)
#
# Each site gets its own SQLite file, sgcache-<site host>.db (the test site: sgcache-test-site.db,
# started afresh each run like the site itself): a cache answers for the site it was filled
# from only. SIGTERM or SIGINT stops the worker and the test site before the script exits.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,17s/^# \{0,1\}//p' "$0"; }
reset=()
listen=()
while [ $# -gt 0 ]; do
  case "$1" in
    --reset) reset=(--reset) ;;
    --port | --bind) [ $# -ge 2 ] || { usage >&2; exit 2; }; listen+=("$1" "$2"); shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run-local.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
config="${SGCACHE_CONFIG:-examples/studio.yaml}"

if [ -n "${SGCACHE_BIN_DIR:-}" ]; then
  bin="$SGCACHE_BIN_DIR"
else
  cargo build --release -p sgcache-worker -p shotgun-sim
  bin=target/release
fi

# Every child is stopped (and waited for) however the script ends.
children=()
sim_out=""
stop_children() {
  for pid in "${children[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${children[@]}"; do wait "$pid" 2>/dev/null || true; done
  children=()
  [ -z "$sim_out" ] || rm -f "$sim_out"
}
trap stop_children EXIT
trap 'stop_children; exit 143' TERM
trap 'stop_children; exit 130' INT

if [ -z "${SHOTGUN_URL:-}" ]; then
  sim_out=$(mktemp)
  "$bin/shotgun-sim" --listen 127.0.0.1:0 --seed-scale "${SIM_SEED_SCALE:-200}" >"$sim_out" &
  children+=($!)
  # Its first stdout line is {"listening": URL}.
  for _ in $(seq 100); do
    line=$(head -n 1 "$sim_out")
    [ -n "$line" ] && break
    kill -0 "${children[0]}" 2>/dev/null || { echo "the test site did not start" >&2; exit 1; }
    sleep 0.1
  done
  SHOTGUN_URL=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["listening"])' "$line")
  export SHOTGUN_URL SHOTGUN_SCRIPT_NAME=sgcache_test SHOTGUN_API_KEY=test_key
  echo "test Shotgun site at $SHOTGUN_URL (script sgcache_test / key test_key)" >&2
  site=test-site
  reset=(--reset) # the test site is seeded afresh each run, so is its cache
else
  site=$(printf '%s' "$SHOTGUN_URL" | sed -E 's#^[A-Za-z]+://##; s#/+$##; s#[^A-Za-z0-9.-]+#_#g')
fi
if [ -z "${DATABASE_URL:-}" ]; then
  cache_file="${SGCACHE_CACHE_DIR:-.}/sgcache-$site.db"
  export DATABASE_URL="sqlite://$cache_file?mode=rwc"
  echo "cache: $cache_file" >&2
fi

echo "status: $bin/sgcache-worker --config $config status, or /_sgcache/ on the proxy in a browser" >&2
"$bin/sgcache-worker" --config "$config" all ${reset[@]+"${reset[@]}"} ${listen[@]+"${listen[@]}"} &
children+=($!)
# `wait` returns early when a trapped signal arrives, so the traps run at once.
status=0
wait "${children[-1]}" || status=$?
exit "$status"
