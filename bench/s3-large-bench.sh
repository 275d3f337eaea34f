#!/usr/bin/env bash
# One real blob above S3's 5 GiB single-copy limit pushed to Berth on S3, once. See
# bench/README.md ("s3-large-bench").
#
# Berth runs on a local S3 server (moto, on a free port, its spool files in the run's temp dir)
# with SQLite beside it and the default storage.s3 settings (multipart copy above 5,000,000,000
# bytes, 512 MiB parts) except the copy's concurrency: COPY_CONCURRENCY (default 1), because
# moto reads the whole source object into memory for every UploadPartCopy (5.5 GiB per part in
# flight) and builds a completed multipart object in memory too. The blob is random bytes written to a file first. The
# push is a session: POST, one PATCH with the whole file (streamed to S3 as 8 MiB parts), then
# the closing PUT ?digest= with no body, whose time is the commit (complete the upload, then the
# multipart copy to the blob's key). The blob's object must be a multipart object
# (ETag "…-<parts>") and pull back with its digest.
#   SIZE_MB=5632 ./bench/s3-large-bench.sh      # 5.5 GiB (the default)
set -euo pipefail

SIZE_MB=${SIZE_MB:-5632}
COPY_CONCURRENCY=${COPY_CONCURRENCY:-1}
SKIP_BUILD=${SKIP_BUILD:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/berth-target}
BERTH_BIN=${BERTH_BIN:-$CARGO_TARGET_DIR/release/berth}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HERE/.." && pwd)
HELPER="python3 $HERE/registry_bench.py"

NAME=s3-large-bench
source "$HERE/lib.sh"
bench_setup curl python3 openssl
command -v moto_server >/dev/null || die "no moto_server: pip install 'moto[server]'"

read -r S3_PORT BERTH_PORT <<<"$($HELPER freeport 2)"
S3=http://127.0.0.1:$S3_PORT
BERTH=http://127.0.0.1:$BERTH_PORT
BUCKET=bench
log "free disk in $WORK: $(df -h --output=avail "$WORK" | tail -1), memory: $(free -g | awk '/Mem/{print $7}') GiB available"

mkdir -p "$WORK/tmp" "$WORK/berth-data"
TMPDIR="$WORK/tmp" moto_server -H 127.0.0.1 -p "$S3_PORT" >"$WORK/moto.log" 2>&1 &
S3_PID=$!
PIDS+=("$S3_PID")
wait_up "$S3/" "$S3_PID" moto
curl -fsS -X PUT -o /dev/null "$S3/$BUCKET"

(
    cd "$WORK"
    for v in $(compgen -e | grep -E '^(BERTH|AWS)_' || true); do unset "$v"; done
    export BERTH_AUTH__ENABLED=false BERTH_LOG=info BERTH_STORAGE__KIND=s3 \
        BERTH_STORAGE__S3__BUCKET=$BUCKET BERTH_STORAGE__S3__PREFIX=berth BERTH_STORAGE__S3__ENDPOINT=$S3 \
        BERTH_STORAGE__S3__PATH_STYLE=true BERTH_STORAGE__S3__ALLOW_HTTP=true BERTH_STORAGE__S3__REGION=us-east-1 \
        BERTH_STORAGE__S3__ACCESS_KEY_ID=AK BERTH_STORAGE__S3__SECRET_ACCESS_KEY=SK \
        BERTH_STORAGE__S3__RETRY_TIMEOUT_SECS=600 BERTH_STORAGE__S3__MULTIPART_COPY_CONCURRENCY=$COPY_CONCURRENCY
    exec "$BERTH_BIN" serve --listen "127.0.0.1:$BERTH_PORT" --data-dir "$WORK/berth-data"
) >"$WORK/berth.log" 2>&1 &
BERTH_PID=$!
PIDS+=("$BERTH_PID")
wait_up "$BERTH/v2/" "$BERTH_PID" berth

log "writing $SIZE_MB MiB of random bytes"
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom >"$WORK/blob"
SIZE=$(stat -c %s "$WORK/blob")
DIGEST=sha256:$(openssl dgst -sha256 -r "$WORK/blob" | cut -d' ' -f1)
log "blob $DIGEST, $SIZE bytes"

peak() { awk '/VmHWM/{printf "%.0f MiB", $2/1024}' "/proc/$1/status" 2>/dev/null || echo "?"; }

t0=$(date +%s.%N)
LOCATION=$(curl -fsS -X POST -D - -o /dev/null "$BERTH/v2/big/layer/blobs/uploads/" | awk -F': ' 'tolower($1)=="location"{print $2}' | tr -d '\r')
[[ $LOCATION == /* ]] && LOCATION=$BERTH$LOCATION
log "PATCH the whole blob"
LOCATION=$(curl -fsS -X PATCH -H 'Expect:' -H 'Content-Type: application/octet-stream' -T "$WORK/blob" -D - -o /dev/null "$LOCATION" |
    awk -F': ' 'tolower($1)=="location"{print $2}' | tr -d '\r')
[[ $LOCATION == /* ]] && LOCATION=$BERTH$LOCATION
t1=$(date +%s.%N)
log "PUT ?digest= (commit: complete the upload, multipart copy to the blob's key)"
sep='?'; [[ $LOCATION == *\?* ]] && sep='&'
STATUS=$(curl -sS -X PUT -o "$WORK/put.out" -w '%{http_code}' --max-time 3600 "$LOCATION${sep}digest=$DIGEST")
t2=$(date +%s.%N)
[[ $STATUS == 201 ]] || { cat "$WORK/put.out" >&2; tail -20 "$WORK/berth.log" >&2; die "commit answered $STATUS"; }

HEX=${DIGEST#sha256:}
ETAG=$(curl -fsS -I "$S3/$BUCKET/berth/blobs/sha256/${HEX:0:2}/$HEX" | awk -F': ' 'tolower($1)=="etag"{print $2}' | tr -d '\r')
log "blob object ETag: $ETAG"
[[ $ETAG == *-*\" ]] || die "the blob's object is not a multipart object"

log "pull it back through Berth"
t3=$(date +%s.%N)
GOT=sha256:$(curl -fsS "$BERTH/v2/big/layer/blobs/$DIGEST" | openssl dgst -sha256 -r | cut -d' ' -f1)
t4=$(date +%s.%N)
[[ $GOT == "$DIGEST" ]] || die "pulled $GOT"

awk -v s="$SIZE" -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v e="$t4" -v etag="$ETAG" 'BEGIN {
    mib = s / 1048576
    printf "\nblob: %d bytes (%.2f GiB), object ETag %s\n", s, mib / 1024, etag
    printf "upload (POST + PATCH, 8 MiB parts to S3):   %7.1f s  %6.1f MiB/s\n", b - a, mib / (b - a)
    printf "commit (PUT: complete + multipart copy):     %7.1f s\n", c - b
    printf "push in all:                                 %7.1f s  %6.1f MiB/s\n", c - a, mib / (c - a)
    printf "pull back and sha256:                        %7.1f s  %6.1f MiB/s\n", e - d, mib / (e - d)
}'
echo "peak RSS: berth $(peak "$BERTH_PID"), moto $(peak "$S3_PID")"
grep -E "multipart copy done" "$WORK/berth.log" | tail -1 || true
