#!/usr/bin/env bash
# Berth vs the reference registry (CNCF Distribution, Debian's docker-registry) on loopback.
# See bench/README.md. Quick run: BLOB_MB=64 ./bench/registry-bench.sh
# S3 + PostgreSQL: BACKEND=s3 ./bench/registry-bench.sh (both registries on one local S3 server)
set -euo pipefail

BACKEND=${BACKEND:-fs}             # fs: both on the local filesystem; s3: S3 (+ PostgreSQL for Berth)
[[ $BACKEND == fs || $BACKEND == s3 ]] || { echo "BACKEND must be fs or s3" >&2; exit 2; }
S3_SERVER=${S3_SERVER:-moto}       # s3 mode: moto (both registries) | s3s-fs (Berth only: the reference cannot upload to it)
PG_URL=${PG_URL:-postgres://berth:berth@127.0.0.1}   # s3 mode: role with CREATEDB; a fresh database per run
WAIT_IDLE=${WAIT_IDLE:-1200}       # wait up to this many seconds for running cargo/rustc/test binaries to end (0: don't)

BLOB_MB=${BLOB_MB:-512}            # size of the pushed/pulled blob, MiB
RUNS=${RUNS:-3}                    # push and pull runs per server (median reported)
PAR=${PAR:-8}                      # parallel pulls: clients at once
PAR_MB=${PAR_MB:-64}               #   of one blob of this many MiB
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNS=${WRK_CONNS:-64}
WRK_DURATION=${WRK_DURATION:-10s}
WRK_WARMUP=${WRK_WARMUP:-2s}       # unreported warm-up run before each measured wrk run
if [[ $BACKEND == s3 ]]; then TAGS=${TAGS:-0}; else TAGS=${TAGS:-2000}; fi   # 0 skips tags/list
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
load() { # also names any build or test run that shares the machine (see busy_pids)
    local busy
    busy=$(declare -F busy_pids >/dev/null && busy_names || true)
    log "load: $(uptime | sed 's/.*load average/load average/')${busy:+  BUSY, figures disturbed: $busy}"
    [[ -z $busy ]] || DISTURBED=$busy
}
DISTURBED=

# ---------------------------------------------------------------- prerequisites
need=()
command -v curl >/dev/null || need+=(curl)
command -v jq >/dev/null || need+=(jq)
command -v wrk >/dev/null || need+=(wrk)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
command -v python3 >/dev/null || need+=(python3)
command -v sha256sum >/dev/null || need+=(coreutils)
[[ $BACKEND == fs ]] || command -v psql >/dev/null || need+=(postgresql-client)
if ((${#need[@]})); then
    log "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

S3_BIN=
if [[ $BACKEND == s3 ]]; then
    s3s=$(command -v s3s-fs || { [[ -x $HOME/.cargo/bin/s3s-fs ]] && echo "$HOME/.cargo/bin/s3s-fs"; } || true)
    moto=$(command -v moto_server || true)
    case $S3_SERVER in
    moto) S3_BIN=$moto hint="pip install 'moto[server]'" ;;
    s3s-fs) S3_BIN=$s3s hint="CARGO_TARGET_DIR=/root/.cache/s3s-build cargo install --locked s3s-fs@0.14.1 --features binary (about 12 min on 2 cores)" ;;
    *) die "S3_SERVER must be moto or s3s-fs" ;;
    esac
    [[ -n $S3_BIN ]] || die "$S3_SERVER not found: $hint"
fi
# s3s-fs 0.14 answers ListMultipartUploads with 501 NotImplemented, and Distribution 2.8's S3
# driver lists multipart uploads to resume one on every PATCH/PUT, so every blob upload to the
# reference fails with a 500. With s3s-fs only Berth is measured.
REF_ON=1
[[ $BACKEND == s3 && $S3_SERVER == s3s-fs ]] && REF_ON=0
SERVERS="berth"
((REF_ON)) && SERVERS="berth ref"

if [[ $SKIP_BUILD != 1 ]]; then
    log "building berth (cargo build --release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    (cd "$REPO_ROOT" && timeout 3600 cargo build --release --quiet) ||
        die "cargo build failed (SKIP_BUILD=1 benchmarks the existing $BERTH_BIN)"
fi
[[ -x $BERTH_BIN ]] || die "no berth binary at $BERTH_BIN"

# ---------------------------------------------------------------- wait for other work
# Builds and test runs (CI, other sessions) share the 2 cores; wait until they are gone.
# The pattern needs cargo/rustc as a command (not as a substring of some PATH) or a test binary.
busy_pids() { pgrep -f '(^|/)(cargo|rustc)( |$)|/deps/' | grep -vxE "$$|$PPID" || true; }
busy_names() { # "cargo test; rustc berth; ..." for the busy pids, empty when idle
    local pids
    pids=$(busy_pids | paste -sd,)
    [[ -n $pids ]] || return 0
    ps -o args= -p "$pids" 2>/dev/null | awk '{n = split($1, p, "/"); a = $2; if ($2 == "--crate-name") a = $3
        m = split(a, q, "/"); w = p[n] (m ? " " q[m] : ""); if (!(w in seen)) { seen[w]; out = out (out ? "; " : "") w }}
        END {print out}'
}
if ((WAIT_IDLE > 0)) && [[ -n $(busy_pids) ]]; then
    log "waiting up to ${WAIT_IDLE}s for: $(busy_names)"
    waited=0
    while [[ -n $(busy_pids) ]] && ((waited < WAIT_IDLE)); do sleep 30; waited=$((waited + 30)); done
    if [[ -n $(busy_pids) ]]; then
        log "WARNING: still busy after ${WAIT_IDLE}s, measuring anyway: $(busy_names)"
    else
        log "idle after ${waited}s"
    fi
fi
load

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
PG_DB=
drop_db() {
    [[ -n $PG_DB ]] || return 0
    psql -qX "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 ||
        log "WARNING: could not drop database $PG_DB"
}
cleanup() {
    local pid
    trap '' INT TERM   # finish cleaning up even if signalled again
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    drop_db
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
put backend "$BACKEND"

read -r BP RP NP SP <<<"$($HELPER freeport 4)"
BERTH=http://127.0.0.1:$BP
REF=http://127.0.0.1:$RP
NGX=http://127.0.0.1:$NP
S3=http://127.0.0.1:$SP   # s3 mode only; never 9010, which the test suite uses
S3_BUCKET=bench S3_AK=benchaccesskey S3_SK=benchsecretkey123 S3_REF_ROOT=ref

wait_up() { # url pid name [any: any HTTP status counts, not only 2xx]
    local i f=-f
    [[ ${4:-} == any ]] && f=
    for ((i = 0; i < 150; i++)); do
        kill -0 "$2" 2>/dev/null || { tail -n 20 "$WORK"/*.log >&2 || true; die "$3 exited during startup"; }
        curl $f -s --max-time 1 -o /dev/null "$1" && return 0
        sleep 0.2
    done
    die "$3 did not come up on $1"
}

# ---------------------------------------------------------------- S3 + PostgreSQL
if [[ $BACKEND == s3 ]]; then
    if ! pg_isready -q -h 127.0.0.1; then
        cluster=$(pg_lsclusters -h 2>/dev/null | awk 'NR==1{print $1, $2}')
        [[ -n $cluster ]] || die "PostgreSQL is not running and no cluster was found (apt-get install postgresql)"
        log "starting PostgreSQL cluster $cluster (it is left running)"
        pg_ctlcluster $cluster start
        for ((i = 0; i < 100; i++)); do pg_isready -q -h 127.0.0.1 && break; sleep 0.2; done
    fi
    if ! psql -qX "$PG_URL/postgres" -c 'SELECT 1' >/dev/null 2>&1; then
        [[ $PG_URL == postgres://berth:berth@127.0.0.1 ]] || die "cannot connect to $PG_URL/postgres"
        log "creating PostgreSQL role berth (CREATEDB)"
        su postgres -c "psql -qX -c \"CREATE ROLE berth LOGIN PASSWORD 'berth' CREATEDB\"" >/dev/null
    fi
    PG_DB=berth_bench_$$_$RANDOM
    psql -qX "$PG_URL/postgres" -c "CREATE DATABASE $PG_DB" >/dev/null || { PG_DB=; die "CREATE DATABASE failed"; }

    mkdir -p "$WORK/s3/$S3_BUCKET"
    if [[ $S3_SERVER == s3s-fs ]]; then
        # a bucket is a directory under the root; checks SigV4 signatures
        RUST_LOG=warn "$S3_BIN" --host 127.0.0.1 --port "$SP" --access-key "$S3_AK" --secret-key "$S3_SK" "$WORK/s3" \
            >"$WORK/s3.log" 2>&1 &
    else
        # Python, no signature checks; objects over ~5 MiB are spooled to (unlinked) temp files
        (cd "$WORK/s3" && TMPDIR=$WORK/s3 exec "$S3_BIN" -H 127.0.0.1 -p "$SP") >"$WORK/s3.log" 2>&1 &
    fi
    S3_PID=$!
    PIDS+=("$S3_PID")
    wait_up "$S3/" "$S3_PID" "S3 server ($S3_SERVER)" any
    if [[ $S3_SERVER == moto ]]; then
        curl -fsS --max-time 10 -X PUT -o /dev/null "$S3/$S3_BUCKET" || die "could not create bucket $S3_BUCKET"
    fi
    S3_VERSION=$S3_SERVER
    if [[ $S3_SERVER == s3s-fs ]]; then
        S3_VERSION="s3s-fs $("$S3_BIN" --version 2>/dev/null | awk '{print $NF}'), objects on $(df -T "$WORK" | awk 'NR==2{print $2}')"
    else
        S3_VERSION="moto $(python3 -c 'import moto; print(moto.__version__)' 2>/dev/null || echo '?'), temp files on $(df -T "$WORK" | awk 'NR==2{print $2}')"
    fi
    put s3_server "$S3_VERSION"
fi

# ---------------------------------------------------------------- servers
mkdir -p "$WORK/berth-data" "$WORK/ref-data" "$WORK/www" "$WORK/nginx"
(
    cd "$WORK"   # no stray ./berth.toml; BERTH_* from the caller's env would reconfigure it
    bin=$BERTH_BIN   # (BERTH_BIN itself goes with them when the caller exported it)
    for v in $(compgen -e | grep -E '^(BERTH|AWS)_' || true); do unset "$v"; done
    if [[ $BACKEND == s3 ]]; then
        export BERTH_DATABASE__URL=$PG_URL/$PG_DB BERTH_STORAGE__KIND=s3 \
            BERTH_STORAGE__S3__BUCKET=$S3_BUCKET BERTH_STORAGE__S3__PREFIX=berth \
            BERTH_STORAGE__S3__ENDPOINT=$S3 BERTH_STORAGE__S3__PATH_STYLE=true \
            BERTH_STORAGE__S3__ALLOW_HTTP=true BERTH_STORAGE__S3__REGION=us-east-1 \
            BERTH_STORAGE__S3__ACCESS_KEY_ID=$S3_AK BERTH_STORAGE__S3__SECRET_ACCESS_KEY=$S3_SK
    fi
    # the reference runs without auth, so Berth does too (ignored by builds without [auth])
    BERTH_LOG=warn BERTH_AUTH__ENABLED=false exec "$bin" serve --listen "127.0.0.1:$BP" --data-dir "$WORK/berth-data"
) >"$WORK/berth.log" 2>&1 &
BERTH_PID=$!
PIDS+=("$BERTH_PID")

# Debian's default config.yml, minus htpasswd auth (Berth runs without auth too), with
# warn-level logging and no access log, listening on loopback. In s3 mode the filesystem
# driver is swapped for the S3 driver (path-style is implied by regionendpoint in 2.8) and
# redirects are off, so blobs go through the registry as they do through Berth.
if [[ $BACKEND == s3 ]]; then
    REF_STORAGE="  s3:
    accesskey: $S3_AK
    secretkey: $S3_SK
    region: us-east-1
    regionendpoint: $S3
    bucket: $S3_BUCKET
    rootdirectory: /$S3_REF_ROOT
    secure: false
    v4auth: true
    chunksize: 5242880
  redirect:
    disable: true"
else
    REF_STORAGE="  filesystem:
    rootdirectory: $WORK/ref-data"
fi
((REF_ON)) && cat >"$WORK/ref.yml" <<EOF
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
$REF_STORAGE
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
REF_PID=
if ((REF_ON)); then
    (
        # AWS_CA_BUNDLE (set on some machines) makes the S3 driver panic at startup
        for v in $(compgen -e | grep -E '^(REGISTRY|AWS)_' || true); do unset "$v"; done
        exec docker-registry serve "$WORK/ref.yml"
    ) >"$WORK/ref.log" 2>&1 &
    REF_PID=$!
    PIDS+=("$REF_PID")
fi

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

wait_up "$BERTH/v2/" "$BERTH_PID" berth
((REF_ON)) && wait_up "$REF/v2/" "$REF_PID" reference

log "berth $($BERTH_BIN --version 2>/dev/null | awk '{print $2}') (binary built $(date -r "$BERTH_BIN" '+%F %T'); tree at git $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO_ROOT" diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ', src/Cargo.toml dirty')$([[ $SKIP_BUILD == 1 ]] && echo ', build skipped')) pid $BERTH_PID on :$BP"
if ((REF_ON)); then
    log "$(docker-registry --version | awk '{print $1, $3}') pid $REF_PID on :$RP"
else
    log "WARNING: reference registry NOT run: Distribution 2.8's S3 driver needs ListMultipartUploads, which $S3_SERVER does not implement (use S3_SERVER=moto for the side-by-side)"
fi
if [[ $BACKEND == s3 ]]; then
    log "storage: S3 server $S3_VERSION, pid $S3_PID on :$SP, bucket $S3_BUCKET (berth under berth/, reference under $S3_REF_ROOT/); berth metadata in PostgreSQL $(psql -qXtA "$PG_URL/postgres" -c 'SHOW server_version' | awk '{print $1}') database $PG_DB"
else
    log "data dirs on $(df -T "$WORK" | awk 'NR==2{print $2, $1}') ($WORK; TMPDIR=/dev/shm takes the disk out)"
fi
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

pull_mbs() { # url [curl args] -> MB/s
    local out time size code
    out=$(curl -sS --max-time 900 -o /dev/null -w '%{time_total} %{size_download} %{http_code}' "$@")
    read -r time size code <<<"$out"
    [[ $code == 200 ]] || die "GET $1: HTTP $code"
    [[ $size == "$BLOB_BYTES" ]] || die "GET $1: got $size bytes, want $BLOB_BYTES"
    awk -v s="$size" -v t="$time" 'BEGIN{printf "%.1f", s / t / 1e6}'
}

BLOB_BYTES=$((BLOB_MB * 1048576))

# ---------------------------------------------------------------- 1. push
# Three pushes of a fresh file each (a blob already stored would only be linked): one stream
# (POST + one PUT carrying the file), and PATCHes of 16 MiB and of 5 MiB (as oras and several CI
# tools send them) with Content-Range, closed by a PUT without body. All three go through the
# same client (registry_bench.py push: one keep-alive connection, the body sent from the mapped
# file), to both servers. The limit: `openssl dgst -sha256` of the same file (in the page
# cache), timed in the same run.
CHUNKS="0 16777216 5242880"
chunk_key() { case $1 in 0) echo push ;; *) echo "push$(($1 / 1048576))m" ;; esac; }
log "== 1. push: ${BLOB_MB} MiB random blobs, one PUT / 16 MiB PATCHes / 5 MiB PATCHes, $RUNS runs (fresh file per push), plus openssl dgst -sha256"
declare -A pushes=()
sha=()
for ((run = 1; run <= RUNS; run++)); do
    for chunk in $CHUNKS; do
        f=$WORK/blob$run-$chunk
        head -c "$BLOB_BYTES" /dev/urandom >"$f"
        d=sha256:$(sha256sum "$f" | cut -d' ' -f1)
        [[ $run == 1 && $chunk == 0 ]] && { BIG_FILE=$f; BIG_DIGEST=$d; }
        if [[ $chunk == 0 ]]; then
            t0=$EPOCHREALTIME
            openssl dgst -sha256 "$f" >/dev/null
            t1=$EPOCHREALTIME
            mbs=$(awk -v b="$BLOB_BYTES" -v s="$(secs_between "$t0" "$t1")" 'BEGIN{printf "%.1f", b / s / 1e6}')
            sha+=("$mbs")
            log "   run $run openssl dgst -sha256: ${mbs} MB/s"
        fi
        # alternate which server goes first
        if ((run % 2)); then order=$SERVERS; else order=$(echo $SERVERS | awk '{for (i = NF; i; i--) printf "%s ", $i}'); fi
        for who in $order; do
            if [[ $who == berth ]]; then base=$BERTH; else base=$REF; fi
            sync   # untimed: start each push with no dirty pages left by the previous one
            s=$($HELPER push "${base#http://}" bench "$f" "$d" "$chunk") || die "push to $who failed"
            mbs=$(awk -v b="$BLOB_BYTES" -v s="$s" 'BEGIN{printf "%.1f", b / s / 1e6}')
            log "   run $run $who $(chunk_key "$chunk"): ${s}s  ${mbs} MB/s"
            pushes[$who-$chunk]+="$mbs "
        done
        [[ $run == 1 && $chunk == 0 ]] || rm -f "$f"
    done
done
for chunk in $CHUNKS; do
    for who in $SERVERS; do
        # shellcheck disable=SC2086
        put "${who}_$(chunk_key "$chunk")_mbs" "$($HELPER median ${pushes[$who-$chunk]})"
    done
done
put sha256_mbs "$($HELPER median "${sha[@]}")"
load

# ---------------------------------------------------------------- 2. pull
if [[ $BACKEND == s3 ]]; then
    # ceiling: the S3 server's own GET of the reference's copy of the blob (SigV4-signed by curl),
    # or of Berth's (its key layout is internal) when the reference is not run
    CEILING="S3 server direct GET"
    hex=${BIG_DIGEST#sha256:}
    CEILING_URL=$S3/$S3_BUCKET/$S3_REF_ROOT/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data
    ((REF_ON)) || CEILING_URL=$S3/$S3_BUCKET/berth/blobs/sha256/${hex:0:2}/$hex
    ceiling_get() { pull_mbs "$CEILING_URL" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" --aws-sigv4 aws:amz:us-east-1:s3 --user "$S3_AK:$S3_SK"; }
    rm -f "$BIG_FILE"
else
    CEILING=nginx
    ln "$BIG_FILE" "$WORK/www/blob" 2>/dev/null || cp "$BIG_FILE" "$WORK/www/blob"
    chmod 644 "$WORK/www/blob"
    "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' >"$WORK/nginx.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    wait_up "$NGX/blob" "$NGINX_PID" nginx
    ceiling_get() { pull_mbs "$NGX/blob"; }
fi
# RUNS rounds of one pull measurement (a function taking a URL) of blob DIGEST from Berth, the
# reference and the ceiling (a function); the medians go under berth_KEY, ref_KEY, ceiling_KEY.
# On the fs backend, one untimed GET of blob DIGEST from each server first: nginx's copies were
# just written through the page cache, while Berth's pushes write past it (direct I/O), so its
# first pull of a blob reads the disk; the rounds then compare all of them with the file cached.
warm_up() { # digest
    [[ $BACKEND == fs ]] || return 0
    local who base
    for who in $SERVERS; do
        if [[ $who == berth ]]; then base=$BERTH; else base=$REF; fi
        curl -fsS --max-time 900 -o /dev/null "$base/v2/bench/blobs/$1" || die "GET from $who failed"
    done
}
pull_rounds() { # key measure digest ceiling
    local key=$1 measure=$2 digest=$3 ceiling=$4 run b r n
    local berth=() ref=() ceil=()
    for ((run = 1; run <= RUNS; run++)); do
        b=$($measure "$BERTH/v2/bench/blobs/$digest"); berth+=("$b")
        r=-
        ((REF_ON)) && { r=$($measure "$REF/v2/bench/blobs/$digest"); ref+=("$r"); }
        n=$($ceiling); ceil+=("$n")
        log "   run $run: berth $b MB/s  reference $r MB/s  $CEILING $n MB/s"
    done
    put "berth_$key" "$($HELPER median "${berth[@]}")"
    ((REF_ON)) && put "ref_$key" "$($HELPER median "${ref[@]}")"
    put "ceiling_$key" "$($HELPER median "${ceil[@]}")"
}
log "== 2. pull: GET the run-1 blob, $RUNS runs each, plus $CEILING of the same bytes"
warm_up "$BIG_DIGEST"
pull_rounds pull_mbs pull_mbs "$BIG_DIGEST" ceiling_get
put ceiling_name "$CEILING"
load

# ---------------------------------------------------------------- 2b. parallel pulls
# $PAR clients GET the same $PAR_MB MiB blob at once (a fresh blob, pushed to both servers and
# warmed up as in 2.); the figure is all their bytes over the wall time from the first start to
# the last end.
par_mbs() { # url [curl args] -> MB/s of $PAR simultaneous GETs
    local t0 t1 i size code total=0
    t0=$EPOCHREALTIME
    for ((i = 0; i < PAR; i++)); do
        curl -sS --max-time 900 -o /dev/null -w '%{size_download} %{http_code}\n' "$@" >"$WORK/par.$i" &
    done
    wait
    t1=$EPOCHREALTIME
    for ((i = 0; i < PAR; i++)); do
        read -r size code <"$WORK/par.$i" || die "parallel GET $1: no answer"
        [[ $code == 200 && $size == "$PAR_BYTES" ]] || die "parallel GET $1: HTTP $code, $size bytes (want $PAR_BYTES)"
        total=$((total + size))
    done
    awk -v b="$total" -v s="$(secs_between "$t0" "$t1")" 'BEGIN{printf "%.1f", b / s / 1e6}'
}
PAR_BYTES=$((PAR_MB * 1048576))
head -c "$PAR_BYTES" /dev/urandom >"$WORK/par-blob"
PAR_DIGEST=sha256:$(sha256sum "$WORK/par-blob" | cut -d' ' -f1)
for who in $SERVERS; do
    if [[ $who == berth ]]; then base=$BERTH; else base=$REF; fi
    $HELPER push "${base#http://}" bench "$WORK/par-blob" "$PAR_DIGEST" 0 >/dev/null || die "push to $who failed"
done
if [[ $BACKEND == fs ]]; then
    ln "$WORK/par-blob" "$WORK/www/par-blob" 2>/dev/null || cp "$WORK/par-blob" "$WORK/www/par-blob"
    chmod 644 "$WORK/www/par-blob"
    ceiling_par() { par_mbs "$NGX/par-blob"; }
else
    hex=${PAR_DIGEST#sha256:}
    par_url=$S3/$S3_BUCKET/$S3_REF_ROOT/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data
    ((REF_ON)) || par_url=$S3/$S3_BUCKET/berth/blobs/sha256/${hex:0:2}/$hex
    ceiling_par() { par_mbs "$par_url" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" --aws-sigv4 aws:amz:us-east-1:s3 --user "$S3_AK:$S3_SK"; }
fi
log "== 2b. $PAR parallel pulls of one $PAR_MB MiB blob, $RUNS runs each, plus $CEILING"
warm_up "$PAR_DIGEST"
pull_rounds par_mbs par_mbs "$PAR_DIGEST" ceiling_par
put par "$PAR"; put par_mib "$PAR_MB"
rm -f "$WORK/par-blob" "$WORK/www/par-blob"
load
if [[ $BACKEND == fs ]]; then
    rm -f "$WORK/www/blob" "$BIG_FILE"   # nginx stays up: it serves the manifest in 3.
fi

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
for who in $SERVERS; do
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
if [[ $BACKEND == fs && " $SERVERS " == *" berth "* ]]; then
    # Berth with auth on, a registry token (Bearer JWT) on every request, as docker and
    # containerd send once they have one: the same wrk command.
    AUTH_PASS=bench-admin-password
    AP=$($HELPER freeport 1)
    BERTH_AUTH=http://127.0.0.1:$AP
    mkdir -p "$WORK/berth-auth-data" "$WORK/curl-auth"
    (
        cd "$WORK"
        bin=$BERTH_BIN
        for v in $(compgen -e | grep -E '^(BERTH|AWS)_' || true); do unset "$v"; done
        BERTH_LOG=warn BERTH_ADMIN_PASSWORD=$AUTH_PASS exec "$bin" serve --listen "127.0.0.1:$AP" --data-dir "$WORK/berth-auth-data"
    ) >"$WORK/berth-auth.log" 2>&1 &
    AUTH_PID=$!
    PIDS+=("$AUTH_PID")
    wait_up "$BERTH_AUTH/healthz" "$AUTH_PID" "berth (auth on)"
    printf 'user = "admin:%s"\n' "$AUTH_PASS" >"$WORK/curl-auth/.curlrc"   # Basic on every curl of the push
    CURL_HOME=$WORK/curl-auth push_image "$BERTH_AUTH" small latest
    service=$(curl -sS -o /dev/null -D - "$BERTH_AUTH/v2/" | tr -d '\r' | sed -n 's/.*service="\([^"]*\)".*/\1/p')
    JWT=$(curl -fsS -u "admin:$AUTH_PASS" "$BERTH_AUTH/token?service=$service&scope=repository:small:pull" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
    url=$BERTH_AUTH/v2/small/manifests/latest
    code=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $JWT" -H "Accept: $ACCEPT" "$url")
    [[ $code == 200 ]] || die "auth-on manifest GET with the token: HTTP $code"
    [[ $(curl -sS -o /dev/null -w '%{http_code}' -H "Accept: $ACCEPT" "$url") == 401 ]] || die "auth-on manifest GET without a token is not refused"
    wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WRK_WARMUP" --timeout 5s -H "Accept: $ACCEPT" -H "Authorization: Bearer $JWT" "$url" >/dev/null
    load
    wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WRK_DURATION" --timeout 5s --latency -H "Accept: $ACCEPT" \
        -H "Authorization: Bearer $JWT" "$url" >"$WORK/wrk-berth-auth.txt"
    read -r rps p99 non2xx sockerr total <<<"$($HELPER wrk "$WORK/wrk-berth-auth.txt")"
    log "   berth, auth on (Bearer JWT on every request): $rps req/s  p99 ${p99} ms  ($total requests, non-2xx $non2xx, socket errors $sockerr)"
    ((non2xx == 0 && sockerr == 0)) || log "   WARNING: berth (auth on) had failed requests during wrk"
    put berth_auth_mget_rps "$rps"
    put berth_auth_mget_p99 "$p99"
    stop_pid "$AUTH_PID"
fi
if [[ $BACKEND == fs ]]; then
    # the limit: nginx serving the same manifest bytes as a static file, the same wrk command
    cp "$WORK/manifest" "$WORK/www/manifest"
    chmod 644 "$WORK/www/manifest"
    url=$NGX/manifest
    wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WRK_WARMUP" --timeout 5s -H "Accept: $ACCEPT" "$url" >/dev/null
    load
    wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WRK_DURATION" --timeout 5s --latency -H "Accept: $ACCEPT" "$url" \
        >"$WORK/wrk-nginx.txt"
    read -r rps p99 non2xx sockerr total <<<"$($HELPER wrk "$WORK/wrk-nginx.txt")"
    log "   nginx (same bytes, static file): $rps req/s  p99 ${p99} ms  ($total requests, non-2xx $non2xx, socket errors $sockerr)"
    put ngx_mget_rps "$rps"
    put ngx_mget_p99 "$p99"
    stop_pid "$NGINX_PID"
fi

# ---------------------------------------------------------------- 4. tags/list
if ((TAGS > 0)); then
    log "== 4. tags/list: $TAGS tags on one repository, GET ?n=10000, median of $TAG_RUNS"
    tag_servers=$SERVERS
else
    log "== 4. tags/list: skipped (TAGS=0)"
    tag_servers=
fi
for who in $tag_servers; do
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
    # The same requests on one keep-alive connection (as docker and containerd send them): one
    # curl fetches the URL TAG_RUNS + 1 times and reports each; the first, which opens the
    # connection, is dropped.
    urls=()
    for ((i = 0; i <= TAG_RUNS; i++)); do urls+=(-o /dev/null "$url"); done
    mapfile -t ka < <(curl -fsS --max-time 60 -w '%{time_total} %{num_connects}\n' "${urls[@]}" |
        awk 'NR > 1 && $2 == 0 {print $1}')
    ((${#ka[@]} == TAG_RUNS)) || die "$who: keep-alive tags/list reused the connection ${#ka[@]} of $TAG_RUNS times"
    ms=$(awk -v m="$($HELPER median "${ka[@]}")" 'BEGIN{printf "%.3f", m * 1000}')
    log "   $who: tags/list on one keep-alive connection: median ${ms} ms"
    put "${who}_tags_ka_ms" "$ms"
done

# ---------------------------------------------------------------- 5. peak RSS
hwm() { awk '/^VmHWM/{printf "%.1f", $2/1024}' "/proc/$1/status"; }
kill -0 "$BERTH_PID" && { ((!REF_ON)) || kill -0 "$REF_PID"; } || die "a server died during the run"
put berth_rss_mib "$(hwm "$BERTH_PID")"
((REF_ON)) && put ref_rss_mib "$(hwm "$REF_PID")"
log "== 5. peak RSS (VmHWM): berth $(hwm "$BERTH_PID") MiB, reference $( ((REF_ON)) && hwm "$REF_PID" || echo -) MiB$(
    [[ $BACKEND == s3 ]] && echo "; not counted: S3 server $(hwm "$S3_PID") MiB, PostgreSQL (berth only)")"
load

if grep -qiE 'error|panic' "$WORK/berth.log"; then log "berth log (errors):"; grep -iE 'error|panic' "$WORK/berth.log" | head -5 >&2; fi
if ((REF_ON)) && grep -qiE 'level=error|panic' "$WORK/ref.log"; then log "reference log (errors):"; grep -iE 'level=error|panic' "$WORK/ref.log" | head -5 >&2; fi
# (s3s-fs logs the unsigned startup probe of wait_up as "Signature is required")
if [[ $BACKEND == s3 ]] && grep -iE 'error|panic|traceback' "$WORK/s3.log" | grep -qv 'Signature is required'; then
    log "S3 server log (errors):"; grep -iE 'error|panic|traceback' "$WORK/s3.log" | grep -v 'Signature is required' | head -5 >&2
fi

echo
if [[ $BACKEND == s3 ]]; then
    where="S3 ($S3_VERSION) for $( ((REF_ON)) && echo both || echo 'Berth only, no reference'), berth metadata in PostgreSQL"
else
    where="data on $(df -T "$WORK" | awk 'NR==2{print $2}')"
fi
echo "Berth vs reference registry ($(docker-registry --version | awk '{print $3}')), loopback, $(nproc) cores, $where; load at end: $(uptime | sed 's/.*load average: //')"
$HELPER table "$RESULTS"
[[ -z $DISTURBED ]] || echo "WARNING: other builds/tests ran during the measurement (seen: $DISTURBED); rerun on an idle machine."
