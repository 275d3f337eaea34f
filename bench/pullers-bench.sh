#!/usr/bin/env bash
# 1,000 concurrent pullers: CONNS keep-alive clients each pulling the same 4-layer image (the
# manifest, then every blob, each body checked against its sha256) again and again for SECS
# seconds, against Berth, the reference registry (Debian's docker-registry) and nginx serving
# the same bytes as static files at the same paths (the machine's limit). The load generator is
# bench/puller (Rust, tokio + hyper; built here). Prints a table with ratios; see bench/README.md.
#   ./bench/pullers-bench.sh
#   CONNS=200 SECS=10 LAYER_KB="512 128 32 8" ./bench/pullers-bench.sh
#   SERVERS="nginx berth" ./bench/pullers-bench.sh      # leave the reference out (quicker)
set -euo pipefail

CONNS=${CONNS:-1000}
SECS=${SECS:-30}
LAYER_KB=${LAYER_KB:-"1024 256 64 16"}   # the image's four layers, KiB
SKIP_BUILD=${SKIP_BUILD:-0}
SERVERS=${SERVERS:-"nginx berth ref"}   # which servers run, in this order
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/berth-target}
BERTH_BIN=${BERTH_BIN:-$CARGO_TARGET_DIR/release/berth}
PULLER_TARGET=${PULLER_TARGET:-/root/.cache/berth-puller-target}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HERE/.." && pwd)
HELPER="python3 $HERE/registry_bench.py"
NAME=pullers
source "$HERE/lib.sh"
bench_setup curl jq docker-registry nginx sha256sum
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

log "building bench/puller (the load generator)"
(cd "$HERE/puller" && CARGO_TARGET_DIR=$PULLER_TARGET cargo build --release --quiet)
PULLER=$PULLER_TARGET/release/berth-puller

# Each server gets CONNS connections and more: the descriptor limit up to the hard limit.
ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= 2 * CONNS + 200)) || die "the open-files limit ($(ulimit -n)) is too low for $CONNS connections"

read -r BP RP NP < <($HELPER freeport 3)
mkdir -p "$WORK/berth-data" "$WORK/ref-data" "$WORK/www" "$WORK/nginx" "$WORK/layers"
(
    cd "$WORK"
    bin=$BERTH_BIN   # (unset below when the caller exported it)
    for v in $(compgen -e | grep -E '^(BERTH|AWS)_' || true); do unset "$v"; done
    BERTH_LOG=warn BERTH_AUTH__ENABLED=false exec "$bin" serve --listen "127.0.0.1:$BP" --data-dir "$WORK/berth-data"
) >"$WORK/berth.log" 2>&1 &
BERTH_PID=$!
PIDS+=("$BERTH_PID")
cat >"$WORK/ref.yml" <<YML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $WORK/ref-data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$RP
YML
(for v in $(compgen -e | grep -E '^(REGISTRY|AWS)_' || true); do unset "$v"; done
 exec docker-registry serve "$WORK/ref.yml") >"$WORK/ref.log" 2>&1 &
REF_PID=$!
PIDS+=("$REF_PID")
chmod 755 "$WORK" "$WORK/www"
cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes auto;
worker_rlimit_nofile $(ulimit -n);
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    server { listen 127.0.0.1:$NP backlog=4096; root $WORK/www; }
}
CONF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' >"$WORK/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_up "http://127.0.0.1:$BP/v2/" "$BERTH_PID" berth
wait_up "http://127.0.0.1:$RP/v2/" "$REF_PID" reference

# ---------------------------------------------------------------- the image
REPO=bench/pullers
layers=() i=0
for kb in $LAYER_KB; do
    head -c $((kb * 1024)) /dev/urandom >"$WORK/layers/$i"
    layers+=("$WORK/layers/$i")
    i=$((i + 1))
done
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$WORK/layers/config"
digest_of() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }
push_blob() { # base file
    local loc sep
    loc=$(curl -fsS -X POST -o /dev/null -D - "$1/v2/$REPO/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
    [[ $loc == http* ]] || loc=$1$loc
    if [[ $loc == *\?* ]]; then sep='&'; else sep='?'; fi
    curl -fsS -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$2" -o /dev/null "$loc${sep}digest=$(digest_of "$2")"
}
CFG_DIGEST=$(digest_of "$WORK/layers/config")
manifest=$(jq -cn --arg cd "$CFG_DIGEST" --argjson cs "$(stat -c %s "$WORK/layers/config")" \
    --argjson layers "$(for f in "${layers[@]}"; do jq -cn --arg d "$(digest_of "$f")" --argjson s "$(stat -c %s "$f")" \
        '{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $d, size: $s}'; done | jq -cs .)" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs}, layers: $layers}')
printf '%s' "$manifest" >"$WORK/layers/manifest"
MT=application/vnd.oci.image.manifest.v1+json
for base in "http://127.0.0.1:$BP" "http://127.0.0.1:$RP"; do
    push_blob "$base" "$WORK/layers/config"
    for f in "${layers[@]}"; do push_blob "$base" "$f"; done
    curl -fsS -X PUT -H "Content-Type: $MT" --data-binary "@$WORK/layers/manifest" -o /dev/null "$base/v2/$REPO/manifests/latest"
done
# nginx: the same bytes at the same paths.
mkdir -p "$WORK/www/v2/$REPO/manifests" "$WORK/www/v2/$REPO/blobs"
cp "$WORK/layers/manifest" "$WORK/www/v2/$REPO/manifests/latest"
for f in "${layers[@]}"; do cp "$f" "$WORK/www/v2/$REPO/blobs/$(digest_of "$f")"; done
chmod -R a+rX "$WORK/www"
wait_up "http://127.0.0.1:$NP/v2/$REPO/manifests/latest" "$NGINX_PID" nginx

# One round: the manifest (by tag), then every layer. (The config is not fetched: a client has
# it from an earlier pull of the same image; four layers is what the round checks.)
items=("/v2/$REPO/manifests/latest=$(sha256sum "$WORK/layers/manifest" | cut -d' ' -f1)")
for f in "${layers[@]}"; do items+=("/v2/$REPO/blobs/$(digest_of "$f")=$(sha256sum "$f" | cut -d' ' -f1)"); done
for p in "${items[@]}"; do
    for port in $BP $RP $NP; do
        curl -fsS -H "Accept: $MT" -o "$WORK/check" "http://127.0.0.1:$port${p%=*}" || die "GET :$port${p%=*}"
        [[ $(sha256sum "$WORK/check" | cut -d' ' -f1) == "${p##*=}" ]] || die ":$port${p%=*} serves other bytes"
    done
done

hwm() { awk '/VmHWM/{printf "%.1f", $2/1024}' "/proc/$1/status"; }
rss() { awk '/VmRSS/{printf "%.1f", $2/1024}' "/proc/$1/status"; }
nginx_rss() { # the master and its workers, summed at the moment
    local t=0 p
    for p in $NGINX_PID $(pgrep -P "$NGINX_PID"); do t=$(awk -v t="$t" '/VmRSS/{printf "%.1f", t + $2/1024}' "/proc/$p/status"); done
    echo "$t"
}
run() { # name port pid
    local out
    log "$1: $CONNS connections for $SECS s (load $(cut -d' ' -f1-3 /proc/loadavg))"
    out=$("$PULLER" "127.0.0.1:$2" "$CONNS" "$SECS" "127.0.0.1:$2" "$MT" "${items[@]}")
    echo "$out" >"$WORK/$1.json"
    log "$1: $out"
    [[ $1 == nginx ]] || kill -0 "$3" || die "$1 died during the run"
}
log "berth pid $BERTH_PID idle RSS $(rss "$BERTH_PID") MiB; reference pid $REF_PID $(rss "$REF_PID") MiB; nginx $(nginx_rss) MiB"
for s in $SERVERS; do
    case $s in
    nginx) run nginx "$NP" "$NGINX_PID" ;;
    berth) run berth "$BP" "$BERTH_PID" ;;
    ref) run ref "$RP" "$REF_PID" ;;
    *) die "SERVERS: unknown server $s (nginx, berth, ref)" ;;
    esac
done

j() { jq -r "$2" "$WORK/$1.json"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a / b; else print "-" }'; }
echo
echo "$CONNS pullers x $SECS s, a 4-layer image ($LAYER_KB KiB) + its manifest, every body checked; $(nproc) cores, load at end $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| %-9s | %9s | %8s | %8s | %7s | %7s | %6s | %10s | %14s |\n' server "images/s" "req/s" "MB/s" "p50 ms" "p99 ms" errors "peak RSS" "MB/s of nginx"
printf '|%s|\n' "-----------|-----------|----------|----------|---------|---------|--------|------------|----------------"
has() { [[ " $SERVERS " == *" $1 "* ]]; }
for s in $SERVERS; do
    case $s in berth) mem="$(hwm "$BERTH_PID") MiB" ;; ref) mem="$(hwm "$REF_PID") MiB" ;; *) mem="-" ;; esac
    printf '| %-9s | %9s | %8s | %8s | %7s | %7s | %6s | %10s | %14s |\n' "$s" \
        "$(awk -v a="$(j $s .images)" -v t="$(j $s .seconds)" 'BEGIN{printf "%.0f", a/t}')" \
        "$(j $s .requests_per_sec)" "$(j $s .mb_per_sec)" "$(j $s .p50_ms)" "$(j $s .p99_ms)" "$(j $s .errors)" "$mem" \
        "$(if has nginx; then ratio "$(j $s .mb_per_sec)" "$(j nginx .mb_per_sec)"; else echo -; fi)"
done
echo
if has berth && has ref; then echo "berth p99 / reference p99: $(ratio "$(j berth .p99_ms)" "$(j ref .p99_ms)")"; fi
fail=0
if has berth && [[ $(j berth .errors) != 0 ]]; then log "berth answered with errors: $(j berth .first_errors)"; fail=1; fi
exit $fail
