#!/usr/bin/env bash
# Builds the two images (sgcache-worker, sgcache-operator) without a Docker daemon or a
# registry, with buildah (vfs storage), and runs each from its own root filesystem
# (`buildah from` + `buildah mount` + `chroot`: `podman run` is refused on this kind of
# machine): the worker image migrates a PostgreSQL database and answers /healthz as a proxy in
# front of the test site; the operator image starts and fails clearly without a cluster.
#
# The image is what Dockerfile.worker / Dockerfile.operator build where a registry is
# reachable: the release binary at /usr/local/bin, run as 65532:65532, on a base of the C
# runtime and CA certificates (distroless/cc there; here the same files, taken from this
# Debian system: the binary's `ldd` libraries, the dynamic loader, ca-certificates).
#
# Needs: cargo, PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres), root. Installs
# buildah from Debian when missing. Costs a release build of two binaries (~7 min on 2 cores).
#   scripts/images.sh            build, run, print sizes
#   KEEP_IMAGES=1 scripts/images.sh   keep the images in buildah's storage afterwards
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v buildah >/dev/null; then
  apt-get update -qq && apt-get install -y -qq buildah >/dev/null
fi
storage="$(mktemp -d /tmp/sgcache-images.XXXXXX)"
chroot=$(command -v chroot)  # absolute: the runs below clear the environment (env -i)
bah() { buildah --storage-driver vfs --root "$storage/root" --runroot "$storage/run" "$@"; }
cleanup() {
  for pid in ${pids:-}; do kill "$pid" 2>/dev/null || true; done
  if [ -n "${run_db:-}" ]; then
    psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$run_db\" WITH (FORCE)" || true
  fi
  bah rm --all >/dev/null 2>&1 || true
  [ -n "${KEEP_IMAGES:-}" ] || { bah rmi --all --force >/dev/null 2>&1 || true; rm -rf "$storage" 2>/dev/null || true; }
}
trap cleanup EXIT

echo "== release build"
cargo build --release --locked -p sgcache-worker -p sgcache-operator -p shotgun-sim \
  --bin sgcache-worker --bin sgcache-operator --bin shotgun-sim
bin=target/release

# build_image NAME BINARY PORT [ENV=VALUE]: a root filesystem with the binary, its shared
# libraries, the CA bundle and a passwd entry for the non-root user; committed as NAME.
build_image() {
  local name=$1 binary=$2 port=$3 extra_env=${4:-} ctr mnt lib
  ctr=$(bah from scratch)
  mnt=$(bah mount "$ctr")
  install -D -m 0755 "$binary" "$mnt/usr/local/bin/$(basename "$binary")"
  for lib in $(ldd "$binary" | grep -o '/[^ ]*' | sort -u); do
    install -D -m 0755 "$(readlink -f "$lib")" "$mnt$lib"
  done
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$mnt/etc/ssl/certs/ca-certificates.crt"
  mkdir -p "$mnt/tmp" "$mnt/etc"
  chmod 1777 "$mnt/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$mnt/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$mnt/etc/group"
  bah umount "$ctr" >/dev/null
  bah config --user 65532:65532 --port "$port" \
    --entrypoint "[\"/usr/local/bin/$(basename "$binary")\"]" \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt ${extra_env:+--env "$extra_env"} "$ctr"
  bah commit --quiet "$ctr" "$name" >/dev/null
  bah rm "$ctr" >/dev/null
}

echo "== images"
# In a container the proxy listens on every address (run-local keeps 127.0.0.1).
build_image sgcache-worker "$bin/sgcache-worker" 8010 SGCACHE_BIND=0.0.0.0
build_image sgcache-operator "$bin/sgcache-operator" 8080
bah images --format '{{.Name}} {{.Size}}'

# run_root IMAGE: a container's root filesystem, mounted, to chroot into.
run_root() {
  local ctr
  ctr=$(bah from "$1")
  bah mount "$ctr"
}

echo "== the operator image fails clearly without a cluster"
root=$(run_root sgcache-operator)
set +e
out=$(env -i KUBECONFIG=/nonexistent "$chroot" --userspec=65532:65532 "$root" \
  /usr/local/bin/sgcache-operator --worker-image sgcache-worker 2>&1)
code=$?
set -e
echo "$out" | tail -3
if [ "$code" -eq 0 ] || ! grep -q "no Kubernetes configuration" <<<"$out"; then
  echo "FAIL: the operator image should exit non-zero saying it has no Kubernetes configuration" >&2
  exit 1
fi

echo "== the worker image migrates and serves /healthz (PostgreSQL, test site)"
run_db="sgcache_images_$(date +%s)_$$"
psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE \"$run_db\""
fifo=$(mktemp -u); mkfifo "$fifo"
"$bin/shotgun-sim" --listen 127.0.0.1:0 >"$fifo" &
pids="$!"
read -r line <"$fifo"; rm -f "$fifo"
site=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["listening"])' "$line")
root=$(run_root sgcache-worker)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$root/tmp/sgcache.yaml" <<EOF
site:
  url: $site
database:
  schema: sgc_images
entities:
  - type: Shot
    fields: [code, sg_status_list]
workers:
  proxy:
    port: $port
EOF
worker_env=(env -i SHOTGUN_SCRIPT_NAME=sgcache_test SHOTGUN_API_KEY=test_key
  "DATABASE_URL=postgres://postgres@127.0.0.1:5432/$run_db" SGCACHE_LOG_FORMAT=json)
"${worker_env[@]}" "$chroot" --userspec=65532:65532 "$root" \
  /usr/local/bin/sgcache-worker --config /tmp/sgcache.yaml migrate
"${worker_env[@]}" "$chroot" --userspec=65532:65532 "$root" \
  /usr/local/bin/sgcache-worker --config /tmp/sgcache.yaml proxy >"$storage/proxy.log" 2>&1 &
pids="$pids $!"
for _ in $(seq 1 60); do
  if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then break; fi
  sleep 0.5
done
answer=$(curl -fsS "http://127.0.0.1:$port/healthz" || true)
if [ "$answer" != "ok" ]; then
  echo "FAIL: the worker image did not answer /healthz" >&2
  tail -20 "$storage/proxy.log" >&2
  exit 1
fi
tables=$(psql -h 127.0.0.1 -U postgres -d "$run_db" -Atc \
  "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'sgc_images'")
echo "worker image: /healthz ok; migrated $tables tables into schema sgc_images"
[ "$tables" -gt 0 ] || { echo "FAIL: nothing migrated" >&2; exit 1; }
echo "images: 2 passed, 0 failed"
