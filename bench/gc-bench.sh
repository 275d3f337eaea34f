#!/usr/bin/env bash
# Garbage collection over many blobs on the filesystem backend (issue #8's benchmark).
# Populates a fresh Berth through the registry API (IMAGES images of a config + LAYERS layers,
# ORPHANS unreferenced blobs, every second image then deleted), then times `berth gc --dry-run`
# and `berth gc` (the same collector the server schedules) and reports their peak memory.
# Defaults: 100,000 blobs, of which 60,000 are garbage. Quick run: IMAGES=2000 ORPHANS=2000 ./bench/gc-bench.sh
set -euo pipefail

IMAGES=${IMAGES:-10000}
LAYERS=${LAYERS:-7}
ORPHANS=${ORPHANS:-20000}
THREADS=${THREADS:-16}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/berth-target}
BERTH_BIN=${BERTH_BIN:-$CARGO_TARGET_DIR/release/berth}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
[[ -x $BERTH_BIN ]] || { log "building berth"; (cd "$HERE/.." && cargo build --release); }
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }

DIR=$(mktemp -d /tmp/berth-gc-bench.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export BERTH_AUTH__ENABLED=false BERTH_LOG__ACCESS=false BERTH_LOG=warn
export BERTH_GC__ENABLED=false BERTH_GC__GRACE_SECS=0 BERTH_GC__DELETE_UNTAGGED=true
"$BERTH_BIN" serve --data-dir "$DIR" --listen "127.0.0.1:$PORT" 2>"$DIR/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$DIR"' EXIT
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/v2/" && break; sleep 0.1; done

log "populating: $IMAGES images x (1 + $LAYERS) blobs, $ORPHANS orphans, $THREADS connections"
python3 "$HERE/gc_populate.py" "127.0.0.1:$PORT" "$IMAGES" "$LAYERS" "$ORPHANS" "$THREADS" | tee "$DIR/populate.txt"
before=$(find "$DIR/storage/blobs" -type f | wc -l)
log "objects in the store: $before"
sleep 2 # past the (zero) grace period, in whole seconds

measure() { # label, args...: wall seconds and peak RSS of one `berth gc` run
    local label=$1; shift
    /usr/bin/time -f "%e %M" -o "$DIR/time.txt" "$BERTH_BIN" --data-dir "$DIR" gc "$@" >"$DIR/$label.out"
    read -r secs kb <"$DIR/time.txt"
    log "$label: ${secs} s, peak RSS $((kb / 1024)) MiB"
    grep -E "blobs|manifests" "$DIR/$label.out" | sed 's/^/    /' >&2
    echo "$label seconds=$secs peak_rss_mib=$((kb / 1024))"
}
measure dry-run --dry-run
measure gc
after=$(find "$DIR/storage/blobs" -type f | wc -l)
log "objects in the store: $before -> $after (freed $((before - after)))"
echo "objects_before=$before objects_after=$after"
curl -sf -o /dev/null "http://127.0.0.1:$PORT/v2/" && log "the server served throughout"
