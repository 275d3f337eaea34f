#!/usr/bin/env bash
# Berth vs the reference registry (CNCF Distribution, Debian's docker-registry) on loopback.
# See bench/README.md. Quick run: BLOB_MB=64 ./bench/registry-bench.sh
set -euo pipefail

BLOB_MB=${BLOB_MB:-512}            # size of the pushed/pulled blob, MiB
RUNS=${RUNS:-3}                    # push and pull runs per server (median reported)
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNS=${WRK_CONNS:-64}
WRK_DURATION=${WRK_DURATION:-10s}
WRK_WARMUP=${WRK_WARMUP:-2s}       # unreported warm-up run before each measured wrk run
TAGS=${TAGS:-2000}
TAG_RUNS=${TAG_RUNS:-20}
MAX_SECONDS=${MAX_SECONDS:-1800}   # watchdog for the whole measuring part (after the build)
SKIP_BUILD=${SKIP_BUILD:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/berth-target}
BERTH_BIN=${BERTH_BIN:-$CARGO_TARGET_DIR/release/berth}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HERE/.." && pwd)
HELPER="python3 $HERE/registry_bench.py"
ACCEPT="application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST=application/vnd.docker.distribution.manifest.v2+json

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
load() { log "load: $(uptime | sed 's/.*load average/load average/')"; }

# ---------------------------------------------------------------- prerequisites
need=()
command -v curl >/dev/null || need+=(curl)
command -v jq >/dev/null || need+=(jq)
command -v wrk >/dev/null || need+=(wrk)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
command -v python3 >/dev/null || need+=(python3)
command -v sha256sum >/dev/null || need+=(coreutils)
if ((${#need[@]})); then
    log "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [[ $SKIP_BUILD != 1 ]]; then
    log "building berth (cargo build --release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    (cd "$REPO_ROOT" && timeout 3600 cargo build --release --quiet) ||
        die "cargo build failed (SKIP_BUILD=1 benchmarks the existing $BERTH_BIN)"
fi
[[ -x $BERTH_BIN ]] || die "no berth binary at $BERTH_BIN"

# ---------------------------------------------------------------- cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/registry-bench.XXXXXX")
PIDS=()
WATCHDOG=
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    trap '' INT TERM   # finish cleaning up even if signalled again
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [[ -n $WATCHDOG ]]; then   # its sleep first, so the watchdog does not fire
        pkill -P "$WATCHDOG" 2>/dev/null || true
        kill "$WATCHDOG" 2>/dev/null || true
        wait "$WATCHDOG" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

exec 3>&2
( sleep "$MAX_SECONDS" && { echo "registry-bench: watchdog: over ${MAX_SECONDS}s, stopping" >&3; kill -TERM $$; } ) 2>/dev/null &
WATCHDOG=$!

RESULTS=$WORK/results
: >"$RESULTS"
put() { echo "$1=$2" >>"$RESULTS"; }
put blob_mib "$BLOB_MB"; put runs "$RUNS"; put wrk_conns "$WRK_CONNS"; put tags "$TAGS"; put tag_runs "$TAG_RUNS"

read -r BP RP NP <<<"$($HELPER freeport 3)"
BERTH=http://127.0.0.1:$BP
REF=http://127.0.0.1:$RP
NGX=http://127.0.0.1:$NP

# ---------------------------------------------------------------- servers
mkdir -p "$WORK/berth-data" "$WORK/ref-data" "$WORK/www" "$WORK/nginx"
(
    cd "$WORK"   # no stray ./berth.toml; BERTH_* from the caller's env would reconfigure it
    for v in $(compgen -e | grep '^BERTH_' || true); do unset "$v"; done
    # the reference runs without auth, so Berth does too (ignored by builds without [auth])
    BERTH_LOG=warn BERTH_AUTH__ENABLED=false exec "$BERTH_BIN" serve --listen "127.0.0.1:$BP" --data-dir "$WORK/berth-data"
) >"$WORK/berth.log" 2>&1 &
BERTH_PID=$!
PIDS+=("$BERTH_PID")

# Debian's default config.yml, minus htpasswd auth (Berth runs without auth too), with
# warn-level logging and no access log, listening on loopback.
cat >"$WORK/ref.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $WORK/ref-data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$RP
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
EOF
(
    for v in $(compgen -e | grep '^REGISTRY_' || true); do unset "$v"; done
    exec docker-registry serve "$WORK/ref.yml"
) >"$WORK/ref.log" 2>&1 &
REF_PID=$!
PIDS+=("$REF_PID")

chmod 755 "$WORK" "$WORK/www"   # nginx workers run as an unprivileged user
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$NP;
        root $WORK/www;
    }
}
EOF

wait_up() { # url pid name
    local i
    for ((i = 0; i < 150; i++)); do
        kill -0 "$2" 2>/dev/null || { cat "$WORK"/*.log >&2 || true; die "$3 exited during startup"; }
        curl -fs --max-time 1 -o /dev/null "$1" && return 0
        sleep 0.2
    done
    die "$3 did not come up on $1"
}
wait_up "$BERTH/v2/" "$BERTH_PID" berth
wait_up "$REF/v2/" "$REF_PID" reference

log "berth $($BERTH_BIN --version 2>/dev/null | awk '{print $2}') (binary built $(date -r "$BERTH_BIN" '+%F %T'); tree at git $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO_ROOT" diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ', src/Cargo.toml dirty')$([[ $SKIP_BUILD == 1 ]] && echo ', build skipped')) pid $BERTH_PID on :$BP"
log "$(docker-registry --version | awk '{print $1, $3}') pid $REF_PID on :$RP"
log "data dirs on $(df -T "$WORK" | awk 'NR==2{print $2, $1}') ($WORK; TMPDIR=/dev/shm takes the disk out)"
log "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo); blob ${BLOB_MB} MiB x $RUNS runs"
load
log "busiest processes: $(ps -eo pcpu=,comm= --sort=-pcpu | head -4 | awk '{printf "%s(%s%%) ", $2, $1}')"

# ---------------------------------------------------------------- helpers
secs_between() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.6f", b - a}'; }

push_blob() { # base repo file digest -> seconds (POST + PUT)
    local base=$1 repo=$2 file=$3 digest=$4 t0 t1 loc sep code
    t0=$EPOCHREALTIME
    loc=$(curl -fsS --max-time 30 -X POST -o /dev/null -D - "$base/v2/$repo/blobs/uploads/" |
        tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
    [[ -n $loc ]] || die "no Location from POST $base/v2/$repo/blobs/uploads/"
    [[ $loc == http* ]] || loc=$base$loc
    if [[ $loc == *\?* ]]; then sep='&'; else sep='?'; fi
    code=$(curl -sS --max-time 900 -X PUT -H 'Expect:' -H 'Content-Type: application/octet-stream' \
        -T "$file" -o "$WORK/put.out" -w '%{http_code}' "$loc${sep}digest=$digest")
    t1=$EPOCHREALTIME
    [[ $code == 201 ]] || die "PUT blob to $base/v2/$repo: HTTP $code $(head -c 300 "$WORK/put.out")"
    secs_between "$t0" "$t1"
}

pull_mbs() { # url -> MB/s
    local out time size code
    out=$(curl -sS --max-time 900 -o /dev/null -w '%{time_total} %{size_download} %{http_code}' "$1")
    read -r time size code <<<"$out"
    [[ $code == 200 ]] || die "GET $1: HTTP $code"
    [[ $size == "$BLOB_BYTES" ]] || die "GET $1: got $size bytes, want $BLOB_BYTES"
    awk -v s="$size" -v t="$time" 'BEGIN{printf "%.1f", s / t / 1e6}'
}

BLOB_BYTES=$((BLOB_MB * 1048576))

# ---------------------------------------------------------------- 1. push
log "== 1. push: ${BLOB_MB} MiB random blob, monolithic POST + PUT, $RUNS runs (fresh file per run)"
berth_push=() ref_push=()
for ((run = 1; run <= RUNS; run++)); do
    f=$WORK/blob$run
    head -c "$BLOB_BYTES" /dev/urandom >"$f"
    d=sha256:$(sha256sum "$f" | cut -d' ' -f1)
    [[ $run == 1 ]] && { BIG_FILE=$f; BIG_DIGEST=$d; }
    # alternate which server goes first
    if ((run % 2)); then order="berth ref"; else order="ref berth"; fi
    for who in $order; do
        if [[ $who == berth ]]; then base=$BERTH; else base=$REF; fi
        sync   # untimed: start each push with no dirty pages left by the previous one
        s=$(push_blob "$base" bench "$f" "$d")
        mbs=$(awk -v b="$BLOB_BYTES" -v s="$s" 'BEGIN{printf "%.1f", b / s / 1e6}')
        log "   run $run $who: ${s}s  ${mbs} MB/s"
        if [[ $who == berth ]]; then berth_push+=("$mbs"); else ref_push+=("$mbs"); fi
    done
    [[ $run == 1 ]] || rm -f "$f"
done
put berth_push_mbs "$($HELPER median "${berth_push[@]}")"
put ref_push_mbs "$($HELPER median "${ref_push[@]}")"

# ---------------------------------------------------------------- 2. pull
log "== 2. pull: GET the run-1 blob, $RUNS runs each, plus nginx serving the same file"
ln "$BIG_FILE" "$WORK/www/blob" 2>/dev/null || cp "$BIG_FILE" "$WORK/www/blob"
chmod 644 "$WORK/www/blob"
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' >"$WORK/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_up "$NGX/blob" "$NGINX_PID" nginx
berth_pull=() ref_pull=() ngx_pull=()
for ((run = 1; run <= RUNS; run++)); do
    b=$(pull_mbs "$BERTH/v2/bench/blobs/$BIG_DIGEST"); berth_pull+=("$b")
    r=$(pull_mbs "$REF/v2/bench/blobs/$BIG_DIGEST"); ref_pull+=("$r")
    n=$(pull_mbs "$NGX/blob"); ngx_pull+=("$n")
    log "   run $run: berth $b MB/s  reference $r MB/s  nginx $n MB/s"
done
put berth_pull_mbs "$($HELPER median "${berth_pull[@]}")"
put ref_pull_mbs "$($HELPER median "${ref_pull[@]}")"
put nginx_pull_mbs "$($HELPER median "${ngx_pull[@]}")"
stop_pid "$NGINX_PID"
rm -f "$WORK/www/blob" "$BIG_FILE"

# ---------------------------------------------------------------- small image
# config blob + one 64 KiB layer + a schema2 manifest, pushed with curl to both servers
head -c 65536 /dev/urandom >"$WORK/layer"
LAYER_DIGEST=sha256:$(sha256sum "$WORK/layer" | cut -d' ' -f1)
printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
    "$LAYER_DIGEST" >"$WORK/config"
CONFIG_DIGEST=sha256:$(sha256sum "$WORK/config" | cut -d' ' -f1)
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":%d,"digest":"%s"},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":%d,"digest":"%s"}]}' \
    "$DOCKER_MANIFEST" "$(stat -c %s "$WORK/config")" "$CONFIG_DIGEST" 65536 "$LAYER_DIGEST" >"$WORK/manifest"
MANIFEST_DIGEST=sha256:$(sha256sum "$WORK/manifest" | cut -d' ' -f1)

push_image() { # base repo tag
    local code
    push_blob "$1" "$2" "$WORK/config" "$CONFIG_DIGEST" >/dev/null
    push_blob "$1" "$2" "$WORK/layer" "$LAYER_DIGEST" >/dev/null
    code=$(curl -sS --max-time 30 -X PUT -H "Content-Type: $DOCKER_MANIFEST" --data-binary "@$WORK/manifest" \
        -o "$WORK/put.out" -w '%{http_code}' "$1/v2/$2/manifests/$3")
    [[ $code == 201 ]] || die "PUT manifest $1/v2/$2/manifests/$3: HTTP $code $(head -c 300 "$WORK/put.out")"
}
check_manifest() { # base repo tag
    local hdr
    hdr=$(curl -fsS --max-time 10 -H "Accept: $ACCEPT" -D - -o /dev/null "$1/v2/$2/manifests/$3" | tr -d '\r')
    grep -qi "^docker-content-digest: $MANIFEST_DIGEST" <<<"$hdr" || die "$1: manifest GET digest mismatch: $hdr"
    grep -qi "^content-type: $DOCKER_MANIFEST" <<<"$hdr" || die "$1: manifest GET content-type: $hdr"
}

# ---------------------------------------------------------------- 3. manifest GET
log "== 3. manifest GET by tag: wrk -t$WRK_THREADS -c$WRK_CONNS -d$WRK_DURATION --latency (after a $WRK_WARMUP warm-up)"
for who in berth ref; do
    if [[ $who == berth ]]; then base=$BERTH; else base=$REF; fi
    push_image "$base" small latest
    check_manifest "$base" small latest
    url=$base/v2/small/manifests/latest
    wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WRK_WARMUP" --timeout 5s -H "Accept: $ACCEPT" "$url" >/dev/null
    load
    wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WRK_DURATION" --timeout 5s --latency -H "Accept: $ACCEPT" "$url" \
        >"$WORK/wrk-$who.txt"
    read -r rps p99 non2xx sockerr total <<<"$($HELPER wrk "$WORK/wrk-$who.txt")"
    log "   $who: $rps req/s  p99 ${p99} ms  ($total requests, non-2xx $non2xx, socket errors $sockerr)"
    ((non2xx == 0 && sockerr == 0)) || log "   WARNING: $who had failed requests during wrk"
    put "${who}_mget_rps" "$rps"
    put "${who}_mget_p99" "$p99"
done

# ---------------------------------------------------------------- 4. tags/list
log "== 4. tags/list: $TAGS tags on one repository, GET ?n=10000, median of $TAG_RUNS"
for who in berth ref; do
    if [[ $who == berth ]]; then base=$BERTH; else base=$REF; fi
    push_image "$base" tagged latest
    s=$($HELPER put-tags "${base#http://}" tagged "$WORK/manifest" "$TAGS")
    put "${who}_tagput_s" "$s"
    url="$base/v2/tagged/tags/list?n=10000"
    got=$(curl -fsS --max-time 30 "$url" | jq '.tags | length')
    [[ $got == $((TAGS + 1)) ]] || die "$who tags/list returned $got tags, want $((TAGS + 1))"
    times=()
    for ((i = 0; i < TAG_RUNS; i++)); do
        times+=("$(curl -fsS --max-time 30 -o /dev/null -w '%{time_total}' "$url")")
    done
    ms=$(awk -v m="$($HELPER median "${times[@]}")" 'BEGIN{printf "%.3f", m * 1000}')
    log "   $who: $TAGS tag PUTs in ${s}s; tags/list ($got tags) median ${ms} ms (min $(printf '%s\n' "${times[@]}" | sort -g | head -1)s, max $(printf '%s\n' "${times[@]}" | sort -g | tail -1)s)"
    put "${who}_tags_ms" "$ms"
done

# ---------------------------------------------------------------- 5. peak RSS
hwm() { awk '/^VmHWM/{printf "%.1f", $2/1024}' "/proc/$1/status"; }
kill -0 "$BERTH_PID" && kill -0 "$REF_PID" || die "a server died during the run"
put berth_rss_mib "$(hwm "$BERTH_PID")"
put ref_rss_mib "$(hwm "$REF_PID")"
log "== 5. peak RSS (VmHWM): berth $(hwm "$BERTH_PID") MiB, reference $(hwm "$REF_PID") MiB"
load

if grep -qiE 'error|panic' "$WORK/berth.log"; then log "berth log (errors):"; grep -iE 'error|panic' "$WORK/berth.log" | head -5 >&2; fi
if grep -qiE 'level=error|panic' "$WORK/ref.log"; then log "reference log (errors):"; grep -iE 'level=error|panic' "$WORK/ref.log" | head -5 >&2; fi

echo
echo "Berth vs reference registry ($(docker-registry --version | awk '{print $3}')), loopback, $(nproc) cores, data on $(df -T "$WORK" | awk 'NR==2{print $2}'); load at end: $(uptime | sed 's/.*load average: //')"
$HELPER table "$RESULTS"
