#!/usr/bin/env bash
# `berth run --rm IMAGE true` (default profile: seccomp, bridge network) vs `docker run --rm IMAGE
# true` on the same busybox image, and vs the bare start of an OCI bundle of the same rootfs with
# `runc run` (runc's default spec: new namespaces, no network setup, no seccomp; the physical
# limit here), median of RUNS (hyperfine). Targets: berth <= 0.2x docker, <= 1.3x bare runc.
# Needs root, runc and a running docker engine.
# Prerequisites (installed if missing): hyperfine, busybox-static, curl; libseccomp-dev and
# pkg-config to build Berth.
set -euo pipefail

RUNS=${RUNS:-10}
WARMUP=${WARMUP:-2}
SKIP_BUILD=${SKIP_BUILD:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/berth-target}
BERTH_BIN=${BERTH_BIN:-$CARGO_TARGET_DIR/release/berth}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

need=()
for pkg in hyperfine busybox-static curl runc libseccomp-dev pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ "$(id -u)" = 0 ] || { echo "run as root (the runtime needs it)" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "the docker engine is not running" >&2; exit 1; }
[ "$SKIP_BUILD" = 1 ] || (cd "$HERE/.." && cargo build --release)

WORK=$(mktemp -d /tmp/berth-rt-bench.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
IMAGE_LOCAL=local/rt-bench-busybox:latest
IMAGE_REMOTE=127.0.0.1:$PORT/rt-bench/busybox:latest
cleanup() {
  [ -n "${SERVER_PID:-}" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  docker rmi -f "$IMAGE_LOCAL" "$IMAGE_REMOTE" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# A busybox image, imported by docker and pushed to a fresh Berth.
mkdir -p "$WORK/rootfs/bin" "$WORK/rootfs/tmp" "$WORK/rootfs/etc" "$WORK/data"
cp /bin/busybox "$WORK/rootfs/bin/busybox"
for a in sh true echo sleep; do ln -s busybox "$WORK/rootfs/bin/$a"; done
tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
docker import "$WORK/rootfs.tar" "$IMAGE_LOCAL" >/dev/null
BERTH_AUTH__ENABLED=false BERTH_LOG=warn "$BERTH_BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" &
SERVER_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done
docker tag "$IMAGE_LOCAL" "$IMAGE_REMOTE"
docker push -q "$IMAGE_REMOTE" >/dev/null

# The same rootfs as a bare OCI bundle for runc (`runc spec`'s defaults, the command `true`).
mkdir -p "$WORK/bundle"
cp -a "$WORK/rootfs" "$WORK/bundle/rootfs"
(cd "$WORK/bundle" && runc spec)
python3 - "$WORK/bundle/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["process"]["terminal"] = False
c["process"]["args"] = ["true"]
json.dump(c, open(sys.argv[1], "w"))
PY

BERTH_RUN="$BERTH_BIN run --data-dir $WORK/data --rm rt-bench/busybox true"
DOCKER_RUN="docker run --rm $IMAGE_REMOTE true"
RUNC_RUN="runc run --bundle $WORK/bundle rt-bench-$$"
# All from their local stores: Berth's layer cache, docker's image store, the bundle.
$BERTH_RUN && $DOCKER_RUN && $RUNC_RUN

hyperfine -N --runs "$RUNS" --warmup "$WARMUP" --export-json "$WORK/result.json" \
  -n "berth run --rm IMAGE true" "$BERTH_RUN" -n "docker run --rm IMAGE true" "$DOCKER_RUN" \
  -n "runc run (bare bundle)" "$RUNC_RUN"
# Where berth's time goes: without the bridge (--network host), and on a bridge another container
# keeps up (so the bridge and its rules are not made and removed on every run).
hyperfine -N --runs "$RUNS" --warmup "$WARMUP" --export-json "$WORK/host.json" \
  -n "berth run --rm --network host IMAGE true" "$BERTH_BIN run --data-dir $WORK/data --rm --network host rt-bench/busybox true"
KEEPER=$($BERTH_BIN run --data-dir "$WORK/data" -d rt-bench/busybox sh -c 'while true; do sleep 1; done')
hyperfine -N --runs "$RUNS" --warmup "$WARMUP" --export-json "$WORK/kept.json" \
  -n "berth run --rm IMAGE true (bridge kept up)" "$BERTH_RUN"
$BERTH_BIN rm -f --data-dir "$WORK/data" "$KEEPER" >/dev/null 2>&1 || $BERTH_BIN --data-dir "$WORK/data" rm -f "$KEEPER" >/dev/null

python3 - "$WORK/result.json" "$WORK/host.json" "$WORK/kept.json" <<'PY'
import json, sys
r = {x["command"]: x for f in sys.argv[1:] for x in json.load(open(f))["results"]}
b = r["berth run --rm IMAGE true"]["median"]
d = r["docker run --rm IMAGE true"]["median"]
u = r["runc run (bare bundle)"]["median"]
print(f"\nmedian of {len(r['berth run --rm IMAGE true']['times'])}: berth {b*1000:.1f} ms, docker {d*1000:.1f} ms, "
      f"bare runc {u*1000:.1f} ms")
print(f"berth/docker {b/d:.2f}x (target <= 0.2x: {'met' if b/d <= 0.2 else 'NOT met'}); "
      f"berth/runc {b/u:.2f}x (target <= 1.3x: {'met' if b/u <= 1.3 else 'NOT met'})")
h = r["berth run --rm --network host IMAGE true"]["median"]
k = r["berth run --rm IMAGE true (bridge kept up)"]["median"]
print(f"berth --network host {h*1000:.1f} ms ({h/d:.2f}x docker), bridge kept up {k*1000:.1f} ms ({k/d:.2f}x docker)")
PY
