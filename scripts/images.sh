#!/usr/bin/env bash
# Builds the two images (sgcache-worker, sgcache-operator) without a Docker daemon or a
# registry, with buildah (vfs storage), and runs each from its own root filesystem the way a
# container runtime would (`podman run` is refused on this kind of machine): the worker image
# runs `sgcache-worker all` against PostgreSQL and the test site, answers /healthz and /readyz,
# and serves a read from its cache that matches the site's answer; the operator image starts
# and fails clearly without a cluster. Prints the image sizes. CI (.ci/run) runs it with
# --debug after the tests.
#
# Same image as Dockerfile.worker / Dockerfile.operator build where a registry is reachable:
# the configuration (binary path, user, workdir, env, ports, entrypoint, labels) is read from
# each Dockerfile's final stage (scripts/image_config.py), and the built image is checked
# against it. The base is assembled from scratch instead of distroless/cc: the stripped binary,
# the shared libraries `ldd` names (libc, libm, libgcc_s, the loader), the CA bundle,
# passwd/group/nsswitch.conf with nonroot (65532), /home/nonroot and /tmp.
#
#   scripts/images.sh            cargo build --release of the binaries, then build and run
#   scripts/images.sh --debug    use the debug binaries already built (CI: those its tests used)
#   scripts/images.sh --no-build use the release binaries already built in CARGO_TARGET_DIR
#   scripts/images.sh --keep     keep the images (buildah storage printed at the end)
#   scripts/images.sh --save DIR also write DIR/sgcache-{worker,operator}.tar (OCI archives)
#   scripts/images.sh --no-run   build (and save) only; skip running the images
#
# The images are named as the chart expects them: ghcr.io/sgcache/sgcache-NAME:<the chart's
# appVersion> (IMAGE_REPOSITORY and IMAGE_TAG override), so a cluster that loads the archives
# runs the chart's default values.
#
# Needs: root, python3, curl, strip, PostgreSQL (SGCACHE_TEST_PG, default
# postgres://postgres@127.0.0.1:5432, trust auth). Installs buildah from Debian when missing.
set -euo pipefail
shopt -s inherit_errexit  # a failed check inside $(...) fails the script
cd "$(dirname "$0")/.."

profile=release keep=${KEEP_IMAGES:-} build=1 save="" run=1
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) profile=debug build="" ;;
    --release) profile=release ;;
    --no-build) build="" ;;
    --keep) keep=1 ;;
    --save) save=$(mkdir -p "$2" && cd "$2" && pwd); shift ;;
    --no-run) run="" ;;
    *) sed -n '17,28p' "$0" >&2; exit 2 ;;
  esac
  shift
done
repository="${IMAGE_REPOSITORY:-ghcr.io/sgcache}"
tag="${IMAGE_TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/sgcache-operator/Chart.yaml)}"
image() { echo "$repository/sgcache-$1:$tag"; }
pg="${SGCACHE_TEST_PG:-postgres://postgres@127.0.0.1:5432}"
bin="${CARGO_TARGET_DIR:-$PWD/target}/$profile"
config_py=(python3 "$PWD/scripts/image_config.py")
start=$SECONDS
step() { echo "== $1 ($((SECONDS - start)) s)"; }

if ! command -v buildah >/dev/null; then
  apt-get update -qq && apt-get install -y -qq buildah >/dev/null
fi
storage="$(mktemp -d /tmp/sgcache-images.XXXXXX)"
bah() { buildah --storage-driver vfs --root "$storage/root" --runroot "$storage/run" "$@"; }
pids="" run_db=""
# `buildah push` creates /var/lib/containers/cache even with its own --root: removed again if
# it was not there before.
had_cache=$([ -e /var/lib/containers/cache ] && echo 1 || true)
cleanup() {
  [ -n "$had_cache" ] || rm -rf /var/lib/containers/cache 2>/dev/null || true
  for pid in $pids; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  if [ -n "$run_db" ]; then
    psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS \"$run_db\" WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  bah rm --all >/dev/null 2>&1 || true
  if [ -z "$keep" ]; then
    bah rmi --all --force >/dev/null 2>&1 || true
    rm -rf "$storage" 2>/dev/null || true
  fi
}
trap cleanup EXIT

# The test site is no part of an image: its debug build serves (built here when missing).
sim="${CARGO_TARGET_DIR:-$PWD/target}/debug/shotgun-sim"
if [ -n "$build" ]; then
  step "release build"
  cargo build --release --locked -p sgcache-worker -p sgcache-operator \
    --bin sgcache-worker --bin sgcache-operator
  [ -z "$run" ] || [ -x "$sim" ] || cargo build --locked -p shotgun-sim --bin shotgun-sim
fi
needed=("$bin/sgcache-worker" "$bin/sgcache-operator")
[ -z "$run" ] || needed+=("$sim")
for b in "${needed[@]}"; do
  [ -x "$b" ] || { echo "FAIL: no $b (build it first: cargo build --workspace)" >&2; exit 1; }
done

# build_image NAME: the root filesystem Dockerfile.NAME's final stage would give, from scratch,
# with the $profile binary stripped, configured from that Dockerfile; committed as $(image NAME).
build_image() {
  local name=$1 dockerfile=Dockerfile.$1 ctr mnt dest lib args=()
  ctr=$(bah from scratch)
  mnt=$(bah mount "$ctr")
  dest=$("${config_py[@]}" binary "$dockerfile")
  mkdir -p "$mnt$(dirname "$dest")"
  strip -o "$mnt$dest" "$bin/sgcache-$name"
  chmod 0755 "$mnt$dest"
  # The libraries the loader will look for, at the paths it will look at.
  for lib in $(ldd "$mnt$dest" | grep -o '/[^ ]*' | sort -u); do
    install -D -m 0755 "$(readlink -f "$lib")" "$mnt$lib"
  done
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$mnt/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$mnt/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$mnt/etc/group"
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$mnt/etc/nsswitch.conf"
  install -d -m 1777 "$mnt/tmp"
  install -d -m 0700 -o 65532 -g 65532 "$mnt/home/nonroot"
  install -d -m 0700 "$mnt/root"
  bah umount "$ctr" >/dev/null
  mapfile -d '' args < <("${config_py[@]}" buildah-args "$dockerfile")
  bah config "${args[@]}" "$ctr"
  bah commit --quiet "$ctr" "$(image "$name")" >/dev/null
  bah rm "$ctr" >/dev/null
  if [ -n "$save" ]; then
    rm -f "$save/sgcache-$name.tar"
    bah push --quiet "$(image "$name")" "oci-archive:$save/sgcache-$name.tar:$(image "$name")" >/dev/null
    echo "saved $save/sgcache-$name.tar ($(image "$name"))"
  fi
}

# container NAME: a container of image $(image NAME), its configuration in $storage/NAME.json
# and its root filesystem mounted; prints the mount point. Checks the image against its
# Dockerfile first.
container() {
  local name=$1 ctr root
  bah inspect --type image "$(image "$name")" >"$storage/$name.json"
  ctr=$(bah from "$(image "$name")")
  root=$(bah mount "$ctr")
  "${config_py[@]}" check "Dockerfile.$name" "$storage/$name.json" "$root" >&2
  echo "$root"
}

step "images from the $profile binaries"
build_image worker
build_image operator

if [ -z "$run" ]; then
  echo "images: 2 built in $((SECONDS - start)) s (not run: --no-run)"
  exit 0
fi

step "the operator image fails clearly without a cluster"
root=$(container operator)
set +e
out=$("${config_py[@]}" run "$storage/operator.json" "$root" -- --worker-image sgcache-worker 2>&1)
code=$?
set -e
first=$(grep -m1 . <<<"$out" || true)
echo "exit $code: $first"
if [ "$code" -eq 0 ] || [ "$first" != "Error: no Kubernetes configuration" ] || grep -q panicked <<<"$out"; then
  echo "FAIL: the operator image should exit non-zero with 'Error: no Kubernetes configuration' and no panic; it printed:" >&2
  echo "$out" >&2
  exit 1
fi

step "the worker image: sgcache-worker all against PostgreSQL and the test site"
run_db="sgcache_images_$(date +%s)_$$"
psql "$pg/postgres" -qc "CREATE DATABASE \"$run_db\""
mkfifo "$storage/sim.fifo"
"$sim" --listen 127.0.0.1:0 --seed-scale 20 >"$storage/sim.fifo" 2>"$storage/sim.log" &
pids="$!"
read -r line <"$storage/sim.fifo"
site=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["listening"])' "$line")
root=$(container worker)
# The check can fail: a Dockerfile exposing one more port does not describe this image.
sed 's/^EXPOSE .*/& 9999/' Dockerfile.worker >"$storage/Dockerfile.drifted"
if "${config_py[@]}" check "$storage/Dockerfile.drifted" "$storage/worker.json" "$root" 2>/dev/null; then
  echo "FAIL: the image check passed a Dockerfile that differs from the image" >&2
  exit 1
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$root/tmp/sgcache.yaml" <<EOF
site:
  url: $site
database:
  schema: sgc_images
entities:
  - type: Shot
    fields: [code, sg_status_list, description]
workers:
  proxy:
    port: $port
EOF
"${config_py[@]}" run "$storage/worker.json" "$root" \
  --env SHOTGUN_SCRIPT_NAME=sgcache_test --env SHOTGUN_API_KEY=test_key \
  --env "DATABASE_URL=$pg/$run_db" --env SGCACHE_LOG_FORMAT=json \
  -- --config /tmp/sgcache.yaml all >"$storage/worker.log" 2>&1 &
worker=$!
pids="$worker $pids"
fail() {
  echo "FAIL: $1; the worker's last log lines:" >&2
  tail -20 "$storage/worker.log" >&2
  exit 1
}
proxy="http://127.0.0.1:$port"
for _ in $(seq 1 120); do
  curl -fsS "$proxy/healthz" >/dev/null 2>&1 && break
  kill -0 "$worker" 2>/dev/null || fail "the worker exited"
  sleep 0.5
done
# `all` answers 200 with one line per worker loop it runs, each "ok" while it makes progress.
health=$(curl -fsS "$proxy/healthz" || true)
grep -q '^events: ok' <<<"$health" && grep -q '^scanner: ok' <<<"$health" \
  || fail "no healthy /healthz answer: $health"
# The entrypoint runs from the image's own root, as nonroot, listening where the image's ENV
# says (SGCACHE_BIND=0.0.0.0).
[ "$(readlink "/proc/$worker/root")" = "$root" ] || fail "not running from the image's root filesystem"
grep -Eq '^Uid:\s+65532\s+65532\s+65532\s+65532$' "/proc/$worker/status" || fail "not running as uid 65532"
grep -Eq '^Groups:\s*$' "/proc/$worker/status" || fail "supplementary groups left"
ss -Hltn "sport = :$port" | grep -q "0.0.0.0:$port" || fail "the proxy does not listen on 0.0.0.0 (SGCACHE_BIND)"
echo "/healthz ok: pid $worker, uid 65532, root $root, listening on 0.0.0.0:$port"
# The pods' startup probe, as the kubelet runs it in the container (the operator's
# WORKER_BINARY is the image's entrypoint).
"${config_py[@]}" run "$storage/worker.json" "$root" -- probe --port "$port" \
  || fail "the startup probe (sgcache-worker probe) in the image"
echo "startup probe ok: sgcache-worker probe --port $port in the image"
for _ in $(seq 1 120); do
  ready=$(curl -fsS "$proxy/readyz" 2>/dev/null || true)
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); sys.exit(not (r["database"]=="ok" and r["site"]=="ok" and r["types_ready"]==1))' "$ready" 2>/dev/null && break
  kill -0 "$worker" 2>/dev/null || fail "the worker exited"
  sleep 0.5
done
echo "/readyz: $ready"
python3 - "$site" "$proxy" <<'EOF' || fail "the read through the worker image"
# A read through the proxy is answered from the cache, and says what the site says.
import json, sys, urllib.request
site, proxy = sys.argv[1], sys.argv[2]
body = json.dumps({"method_name": "read", "params": [
    {"script_name": "sgcache_test", "script_key": "test_key"},
    {"type": "Shot", "return_fields": ["code", "sg_status_list", "description"],
     "filters": {"logical_operator": "and", "conditions": []},
     "sorts": [{"field_name": "id", "direction": "asc"}], "return_only": "active",
     "paging": {"entities_per_page": 500, "current_page": 1}}]}).encode()
def read(url):
    request = urllib.request.Request(url + "/api3/json", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response), response.headers.get("x-sgcache-path")
want, _ = read(site)
first, path = read(proxy)
# The first read with new credentials is checked by the site (reason verify_auth); the next
# one is the cache's.
assert first == want, f"the proxy's first answer differs from the site's:\n{first}\n{want}"
got, path = read(proxy)
shots = len(want["results"]["entities"])
assert shots > 0, want
assert path == "cache", f"answered by {path}, not the cache"
assert got == want, f"the proxy's answer differs from the site's:\n{got}\n{want}"
print(f"read Shot through the worker image: {shots} records from the cache, same as the site")
EOF

step "sizes"
for name in worker operator; do
  ctr=$(bah from "$(image "$name")")
  mnt=$(bah mount "$ctr")
  size=$(bah images --format '{{.Size}}' "$(image "$name")")
  binary_mb=$(stat -c %s "$mnt$("${config_py[@]}" binary "Dockerfile.$name")" | awk '{printf "%.1f", $1 / 1e6}')
  gz_mb=$(tar -C "$mnt" -cf - . | gzip -6 | wc -c | awk '{printf "%.1f", $1 / 1e6}')
  echo "sgcache-$name ($profile, stripped): image $size, binary $binary_mb MB, layer gzipped $gz_mb MB"
  bah umount "$ctr" >/dev/null
done
[ -z "$keep" ] || echo "kept: buildah --storage-driver vfs --root $storage/root --runroot $storage/run images"
echo "images: 2 built and run in $((SECONDS - start)) s"
