#!/usr/bin/env bash
# The whole test suite, as the README gives it: Rust unit and integration tests (real
# PostgreSQL, real SQLite, the test Shotgun site over real HTTP), the compatibility suite with
# the official shotgun_api3 client, and the chart checks. One build serves every step.
set -euo pipefail
cd "$(dirname "$0")/.."
# PostgreSQL server for the tests (each test creates and drops its own database).
: "${SGCACHE_TEST_PG:=postgres://postgres@127.0.0.1:5432}"
export SGCACHE_TEST_PG

# Where cargo puts the binaries (CARGO_TARGET_DIR moves them).
bin_dir="${CARGO_TARGET_DIR:-$PWD/target}/debug"

echo "== build"
cargo build --workspace --all-targets --locked

# Integration tests that spend minutes waiting out real outages (a PostgreSQL primary and
# standby switched behind the cache's address) run beside the Python suites below, which mostly
# wait on the test site too, instead of before them: about two minutes off the run. They are
# modules of the one integration test binary (tests/tests/main.rs), picked by module path.
beside=(failover_standby::)
beside_log="$(mktemp)"
beside_pid=""
trap '[ -n "$beside_pid" ] && kill "$beside_pid" 2>/dev/null; rm -f "$beside_log"' EXIT

echo "== cargo test (all but ${beside[*]}, which run beside the Python suites)"
skip=()
for m in "${beside[@]}"; do skip+=(--skip "$m"); done
cargo test --workspace --locked -- "${skip[@]}"

cargo test --workspace --locked --test integration -- "${beside[@]}" >"$beside_log" 2>&1 &
beside_pid=$!

if [ -x tests/compat/run.sh ]; then
  echo "== shotgun_api3 compatibility suite"
  SHOTGUN_SIM_BIN="$bin_dir/shotgun-sim" tests/compat/run.sh
fi

echo "== the official client's own live-server tests against the test site"
SHOTGUN_SIM_BIN="$bin_dir/shotgun-sim" tests/official/run.sh -p no:randomly

if [ -x tests/compat/run_proxy.sh ]; then
  echo "== the same read battery through the proxy (sgcache-worker all + PostgreSQL)"
  PG_URL="$SGCACHE_TEST_PG" BIN_DIR="$bin_dir" tests/compat/run_proxy.sh
fi

if [ -x charts/check.sh ]; then
  echo "== chart checks"
  charts/check.sh
fi

echo "== cargo test: ${beside[*]} (ran beside the Python suites)"
status=0
wait "$beside_pid" || status=$?
beside_pid=""
cat "$beside_log"
# A renamed module would leave the filter matching nothing, and nothing would have run.
if [ "$status" -eq 0 ] && ! grep -q "test result: ok\. [1-9]" "$beside_log"; then
  echo "no test matched ${beside[*]}" >&2
  status=1
fi
exit "$status"
