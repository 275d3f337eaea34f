#!/usr/bin/env bash
# One real blob above S3's 5 GiB single-copy limit pushed to Berth on S3, once. See
# bench/README.md ("s3-large-bench").
#
# Berth runs on a local S3 server on a free port, with SQLite beside it and the default
# storage.s3 settings (multipart copy above 5,000,000,000 bytes, 512 MiB parts, 4 at a time).
# S3_SERVER: s3s-fs (the default when installed: objects in files under the run's temp dir, and
# it checks SigV4 signatures, so the part copies' signing is checked too; install it with
#   CARGO_TARGET_DIR=/root/.cache/s3s-build cargo install --locked s3s-fs@0.14.1 --features binary)
# or moto, which holds a completed multipart upload in memory several times over: it was killed
# by the kernel's OOM killer at 23 GB while completing a 5.5 GiB upload on a 24 GB machine. The blob is random bytes written to a file first. The
# push is a session: POST, one PATCH with the whole file (streamed to S3 as 8 MiB parts), then
# the closing PUT ?digest= with no body, whose time is the commit (complete the upload, then the
# multipart copy to the blob's key). The blob's object must be a multipart object
# (ETag "…-<parts>") and pull back with its digest.
#   SIZE_MB=5632 ./bench/s3-large-bench.sh      # 5.5 GiB (the default)
set -euo pipefail

SIZE_MB=${SIZE_MB:-5632}
COPY_CONCURRENCY=${COPY_CONCURRENCY:-4}
S3S=$(command -v s3s-fs || { [[ -x $HOME/.cargo/bin/s3s-fs ]] && echo "$HOME/.cargo/bin/s3s-fs"; } || true)
S3_SERVER=${S3_SERVER:-$([[ -n $S3S ]] && echo s3s-fs || echo moto)}
SKIP_BUILD=${SKIP_BUILD:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/berth-target}
BERTH_BIN=${BERTH_BIN:-$CARGO_TARGET_DIR/release/berth}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HERE/.." && pwd)
HELPER="python3 $HERE/registry_bench.py"

NAME=s3-large-bench
source "$HERE/lib.sh"
bench_setup curl python3 openssl

read -r S3_PORT BERTH_PORT <<<"$($HELPER freeport 2)"
S3=http://127.0.0.1:$S3_PORT
BERTH=http://127.0.0.1:$BERTH_PORT
BUCKET=bench
log "free disk in $WORK: $(df -h --output=avail "$WORK" | tail -1), memory: $(free -g | awk '/Mem/{print $7}') GiB available"

mkdir -p "$WORK/tmp" "$WORK/berth-data" "$WORK/s3/$BUCKET"
if [[ $S3_SERVER == s3s-fs ]]; then
    [[ -n $S3S ]] || die "no s3s-fs (see the top of this script)"
    RUST_LOG=warn "$S3S" --host 127.0.0.1 --port "$S3_PORT" --access-key AK --secret-key SK "$WORK/s3" >"$WORK/s3.log" 2>&1 &
else
    command -v moto_server >/dev/null || die "no moto_server: pip install 'moto[server]'"
    (cd "$WORK/s3" && TMPDIR="$WORK/tmp" exec moto_server -H 127.0.0.1 -p "$S3_PORT") >"$WORK/s3.log" 2>&1 &
fi
S3_PID=$!
PIDS+=("$S3_PID")
for ((i = 0; i < 150; i++)); do curl -s -o /dev/null "$S3/" && break; sleep 0.2; done
[[ $S3_SERVER == moto ]] && curl -fsS -X PUT -o /dev/null "$S3/$BUCKET"
s3curl() { curl --aws-sigv4 "aws:amz:us-east-1:s3" --user AK:SK -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"; }

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
OBJ=$(s3curl -fsS -I "$S3/$BUCKET/berth/blobs/sha256/${HEX:0:2}/$HEX") || die "no object at the blob's key"
ETAG=$(awk -F': ' 'tolower($1)=="etag"{print $2}' <<<"$OBJ" | tr -d '\r')
OBJ_SIZE=$(awk -F': ' 'tolower($1)=="content-length"{print $2}' <<<"$OBJ" | tr -d '\r')
log "blob object: ETag $ETAG, $OBJ_SIZE bytes"
[[ $OBJ_SIZE == "$SIZE" ]] || die "the blob's object has $OBJ_SIZE bytes"
COPY_LINE=$(grep "multipart copy done" "$WORK/berth.log" | tail -1)
[[ -n $COPY_LINE ]] || die "the commit was not a multipart copy"
log "$COPY_LINE"

log "pull it back through Berth"
t3=$(date +%s.%N)
GOT=sha256:$(curl -fsS "$BERTH/v2/big/layer/blobs/$DIGEST" | openssl dgst -sha256 -r | cut -d' ' -f1)
t4=$(date +%s.%N)
[[ $GOT == "$DIGEST" ]] || die "pulled $GOT"

awk -v s="$SIZE" -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v e="$t4" -v etag="$ETAG" 'BEGIN {
    mib = s / 1048576
    printf "\nblob: %.0f bytes (%.2f GiB), object ETag %s\n", s, mib / 1024, etag
    printf "upload (POST + PATCH, 8 MiB parts to S3):   %7.1f s  %6.1f MiB/s\n", b - a, mib / (b - a)
    printf "commit (PUT: complete + multipart copy):     %7.1f s\n", c - b
    printf "push in all:                                 %7.1f s  %6.1f MiB/s\n", c - a, mib / (c - a)
    printf "pull back and sha256:                        %7.1f s  %6.1f MiB/s\n", e - d, mib / (e - d)
}'
echo "S3 server: $S3_SERVER; peak RSS: berth $(peak "$BERTH_PID"), $S3_SERVER $(peak "$S3_PID")"
echo "load at the end: $(uptime)"
