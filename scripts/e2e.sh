#!/usr/bin/env bash
# The end-to-end suite on a real cluster: whatever cluster KUBECONFIG names (kind, k3d, a
# one-node cluster, a real one). Builds the two images (scripts/images.sh, named as the chart
# expects), loads them with SGCACHE_E2E_LOAD, installs the chart with Helm (helm-sdkpy),
# starts the test site, and runs tests/e2e/e2e.py: with the official shotgun_api3 client
# through the proxy Service, Ready; a cached read equal to the site's; links served; a field
# added by patch; the scale subresource; a proxy pod deleted under reads; the operator pod
# deleted; a Secret rotated; delete with Retain and with Delete; a namespace deleted; and the
# time from `helm install` to the first cached read. One line per check, last
# `e2e: N/M checks passed`; exit 0 only when all passed. Everything it creates is removed at
# the end (namespaces, release, CRD if it was not there, database schemas, the test site).
#
# Environment:
#   KUBECONFIG           the cluster (required)
#   SGCACHE_E2E_HOST     an address of this host that pods can reach; the test site listens
#                        there (required)
#   SGCACHE_E2E_PG_URL   a PostgreSQL URL (with its database) reachable from pods and from
#                        this host; the caches use their own schemas in it (required)
#   SGCACHE_E2E_LOAD     a command run once per image with the path of its OCI archive,
#                        e.g. "kind load image-archive" (required)
#   SGCACHE_E2E_PROFILE  debug (default) or release: which binaries go into the images; they
#                        are built with cargo when missing (images.sh --no-build reuses them)
#   KUBECTL              kubectl to use (default: kubectl on PATH)
#   SGCACHE_E2E_KEEP     set: leave the namespaces, release and schemas in place at the end,
#                        to look at pods, logs and Events (the cluster is then yours to clean)
#   SGCACHE_E2E_OPERATOR_LOG  the operator's log filter (the chart's logLevel), e.g.
#                        "info,sgcache_operator=debug" for each reconcile's step times
# The host must reach ClusterIPs (the proxy Service is read at its ClusterIP, so a deleted
# proxy pod is seen as a client of the Service sees it): true on a node of the cluster.
#
#   scripts/e2e.sh [CHECK...]    CHECK: method names in tests/e2e/e2e.py, to run a few
# Not part of .ci/run (there is no cluster there).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for v in KUBECONFIG SGCACHE_E2E_HOST SGCACHE_E2E_PG_URL SGCACHE_E2E_LOAD; do
  [ -n "${!v:-}" ] || missing+=("$v")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "e2e: set ${missing[*]} (see the top of $0)" >&2
  exit 2
fi
profile="${SGCACHE_E2E_PROFILE:-debug}"
target="${CARGO_TARGET_DIR:-$PWD/target}"
kubectl="${KUBECTL:-kubectl}"
"$kubectl" version >/dev/null || { echo "e2e: $kubectl cannot reach the cluster in $KUBECONFIG" >&2; exit 2; }
psql "$SGCACHE_E2E_PG_URL" -qtAc 'SELECT 1' >/dev/null \
  || { echo "e2e: cannot connect to SGCACHE_E2E_PG_URL from this host" >&2; exit 2; }

# Binaries: built only when missing (a built tree is reused as it is).
flag=(); [ "$profile" = release ] && flag=(--release)
for b in sgcache-worker sgcache-operator; do
  [ -x "$target/$profile/$b" ] || cargo build "${flag[@]}" --locked -p "$b" --bin "$b"
done
[ -x "$target/debug/shotgun-sim" ] || cargo build --locked -p shotgun-sim --bin shotgun-sim

archives="$(mktemp -d /tmp/sgcache-e2e.XXXXXX)"
trap 'rm -rf "$archives"' EXIT
start=$SECONDS
images_flags=(--no-build --no-run --save "$archives")
[ "$profile" = debug ] && images_flags+=(--debug)
scripts/images.sh "${images_flags[@]}" >"$archives/images.log" 2>&1 \
  || { cat "$archives/images.log" >&2; echo "e2e: images.sh failed" >&2; exit 1; }
for a in "$archives"/sgcache-*.tar; do
  $SGCACHE_E2E_LOAD "$a" >/dev/null
done
echo "images: built ($profile) and loaded in $((SECONDS - start)) s"

venv=.venv-e2e
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check --ignore-requires-python \
  -r tests/e2e/requirements.txt
rc=0
SHOTGUN_SIM_BIN="$target/debug/shotgun-sim" KUBECTL="$kubectl" \
  "$venv/bin/python" -u tests/e2e/e2e.py "$@" || rc=$?
exit "$rc"
