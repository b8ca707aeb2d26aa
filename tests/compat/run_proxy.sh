#!/usr/bin/env bash
# Runs the compatibility suite's proxy tests: starts the test site, a fresh PostgreSQL cache and
# `sgcache-worker all` (migrate, proxy, event follower, scanner) in front of it, waits for the
# backfill, then runs test_proxy_battery.py with the official client against both. Every field
# ("*") of every seeded type is cached, against a site whose unset checkboxes read as null: no
# record may be skipped and no field may be unservable (issue 10).
#
#   tests/compat/run_proxy.sh [pytest args...]
#
# Environment: PG_URL (server, default postgres://postgres@127.0.0.1:5432), BIN_DIR, VENV, PYTHON.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
pg="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
db="sgcache_compat_$$"
work="$(mktemp -d)"
sim_pid="" worker_pid=""
cleanup() {
    [ -n "$worker_pid" ] && kill "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null || true
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true
    psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# BIN_DIR: where shotgun-sim and sgcache-worker are already built (scripts/test.sh passes its
# one build); otherwise build them here.
if [ -n "${BIN_DIR:-}" ]; then
    bin="$BIN_DIR"
else
    (cd "$root" && cargo build -q -p shotgun-sim -p sgcache-worker)
    bin="$root/target/debug"
fi

fifo="$work/sim.fifo"; mkfifo "$fifo"
"$bin/shotgun-sim" --listen 127.0.0.1:0 --seed-scale "${SG_COMPAT_SEED_SCALE:-300}" --null-checkboxes >"$fifo" 2>"$work/sim.log" &
sim_pid=$!
read -r line <"$fifo"
site=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["listening"])' "$line")

header_timeout=5
export SG_PROXY_HEADER_TIMEOUT_S="$header_timeout"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/spec.yaml" <<YAML
entities:
  - {type: Project, fields: ["*"]}
  - {type: Sequence, fields: ["*"]}
  - {type: Shot, fields: ["*"]}
  - {type: Asset, fields: ["*"]}
  - {type: Task, fields: ["*"]}
  - {type: Step, fields: ["*"]}
  - {type: HumanUser, fields: ["*"]}
  - {type: Version, fields: ["*"]}
  - {type: Note, fields: ["*"]}
  - {type: PublishedFile, fields: ["*"]}
  - {type: ApiUser, fields: ["*"]}
workers:
  # A short header timeout: test_proxy_idle.py pauses past it (an idle connection must not be
  # closed by the header timer), in seconds rather than the minute the default would take.
  proxy: {port: $port, limits: {headerReadTimeout: ${header_timeout}s}}
YAML
psql "$pg/postgres" -qc "CREATE DATABASE $db" >/dev/null
export SHOTGUN_URL="$site" SHOTGUN_SCRIPT_NAME=sgcache_test SHOTGUN_API_KEY=test_key
export DATABASE_URL="$pg/$db"
"$bin/sgcache-worker" --config "$work/spec.yaml" all 2>"$work/worker.log" &
worker_pid=$!

proxy="http://127.0.0.1:$port"
for _ in $(seq 1 300); do
    # Ready once the backfill is done and the proxy's catalog has every type.
    pending=$(psql "$pg/$db" -tAc "SELECT count(*) FROM _sgcache_fields WHERE state NOT IN ('ready', 'dropped', 'unservable')" 2>/dev/null || echo 1)
    types=$(curl -sf "$proxy/readyz" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["types_ready"])' 2>/dev/null || echo 0)
    # Every type the migration planned, listed or implied by links.
    planned=$(psql "$pg/$db" -tAc "SELECT count(*) FROM _sgcache_types" 2>/dev/null || echo -1)
    [ "$pending" = "0" ] && [ "$types" = "$planned" ] && break
    kill -0 "$worker_pid" 2>/dev/null || { cat "$work/worker.log" >&2; exit 1; }
    sleep 1
done
[ "$pending" = "0" ] && [ "$types" = "$planned" ] || { echo "compat: the cache was not ready after 300 s ($pending fields pending, $types of $planned types ready)" >&2; exit 1; }
echo "compat: proxy $proxy in front of $site, cache $db ready" >&2
# Every record stored, every field servable: nothing the site returned was refused.
unservable=$(psql "$pg/$db" -tAc "SELECT string_agg(entity_type || '.' || field_name || ': ' || unservable_reason, ', ') FROM _sgcache_fields WHERE state = 'unservable'")
[ -z "$unservable" ] || { echo "compat: unservable fields after the backfill: $unservable" >&2; exit 1; }

export SG_COMPAT_URL="$site" SG_PROXY_URL="$proxy" SHOTGUN_SIM_BIN="$bin/shotgun-sim"
set +e
"$here/run.sh" test_proxy_battery.py test_proxy_idle.py "$@"
status=$?
set -e
if grep -Ei "skipping a record|cannot store" "$work/worker.log" >&2; then
    echo "compat: the worker refused a record or a value (lines above)" >&2
    status=1
fi
[ "$status" = 0 ] || { grep -v "answered" "$work/worker.log" | tail -30 >&2; psql "$pg/$db" -c "SELECT entity_type, state, count(*) FROM _sgcache_fields GROUP BY 1, 2" >&2; }
exit "$status"
