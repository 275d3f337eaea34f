#!/usr/bin/env bash
# The pull-through mirror against a direct pull from its upstream (Debian's docker-registry,
# CNCF Distribution 2.8) on loopback. See bench/README.md ("mirror-bench").
#
#   cold:  GET a blob through Berth's mirror that Berth has never seen (fetched upstream,
#          verified, stored, and streamed to the client while it is stored)
#          vs GET of the same blob straight from the upstream.              target <= 1.1x the time
#   warm:  GET the same blob through the mirror again (now local)
#          vs GET of the same bytes pushed to Berth as a local repository.    target ~= 1.0x
#
# Each upstream rate in UPSTREAM_RATES is one scenario: 0 is the bare loopback upstream (the
# worst case for a mirror: the upstream is as fast as the machine, so storing while serving
# costs CPU the direct pull does not pay); N puts a proxy that sends at most N MiB/s in front of
# the upstream for both the direct and the mirrored pull: a remote upstream, what a mirror is for.
# Quick run: BLOB_MB=32 RUNS=3 ./bench/mirror-bench.sh
set -euo pipefail

BLOB_MB=${BLOB_MB:-128}
RUNS=${RUNS:-5}                          # cold runs per scenario (a fresh blob each), median reported
UPSTREAM_RATES=${UPSTREAM_RATES:-"0 100"} # MiB/s; 0 = unthrottled loopback
SKIP_BUILD=${SKIP_BUILD:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/berth-target}
BERTH_BIN=${BERTH_BIN:-$CARGO_TARGET_DIR/release/berth}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HERE/.." && pwd)
HELPER="python3 $HERE/registry_bench.py"

NAME=mirror-bench
source "$HERE/lib.sh"
bench_setup curl docker-registry python3 sha256sum

read -r UP_PORT BERTH_PORT <<<"$($HELPER freeport 2)"
UP=http://127.0.0.1:$UP_PORT
BERTH=http://127.0.0.1:$BERTH_PORT
mkdir -p "$WORK/up-data"

cat >"$WORK/up.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/up-data
http:
  addr: 127.0.0.1:$UP_PORT
EOF
(for v in $(compgen -e | grep -E '^(REGISTRY|AWS)_' || true); do unset "$v"; done
 exec docker-registry serve "$WORK/up.yml") >"$WORK/up.log" 2>&1 &
PIDS+=($!)
wait_up "$UP/v2/" "${PIDS[-1]}" "docker-registry (upstream)"

# A throttling proxy in front of the upstream per rate (bench/registry_bench.py throttle).
declare -A RATE_URL
for rate in $UPSTREAM_RATES; do
    if [[ $rate == 0 ]]; then RATE_URL[$rate]=$UP; continue; fi
    p=$($HELPER freeport 1)
    $HELPER throttle "$p" "$UP_PORT" "$rate" >"$WORK/throttle-$rate.log" 2>&1 &
    PIDS+=($!)
    RATE_URL[$rate]=http://127.0.0.1:$p
    wait_up "${RATE_URL[$rate]}/v2/" "${PIDS[-1]}" "throttling proxy ($rate MiB/s)"
done

push_blob() { # base repo file digest
    local loc sep
    loc=$(curl -fsS --max-time 30 -X POST -o /dev/null -D - "$1/v2/$2/blobs/uploads/" |
        tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
    [[ $loc == http* ]] || loc=$1$loc
    if [[ $loc == *\?* ]]; then sep='&'; else sep='?'; fi
    curl -fsS --max-time 300 -X PUT -H 'Expect:' -H 'Content-Type: application/octet-stream' \
        -T "$3" -o /dev/null "$loc${sep}digest=$4" || die "push to $1/v2/$2 failed"
}

get_secs() { # url expected-digest -> seconds; checks the bytes
    local out t
    out=$(curl -sS --max-time 600 -w '%{time_total} %{http_code}' -o "$WORK/got" "$1")
    [[ ${out#* } == 200 ]] || die "GET $1 answered ${out#* }"
    [[ "sha256:$(sha256sum "$WORK/got" | cut -d' ' -f1)" == "$2" ]] || die "GET $1: wrong bytes"
    rm -f "$WORK/got"
    t=${out% *}
    echo "$t"
}

start_berth() { # upstream-url
    cat >"$WORK/berth.toml" <<EOF
listen = "127.0.0.1:$BERTH_PORT"
data_dir = "$WORK/berth-data"
[auth]
enabled = false
[mirror]
enabled = true
[[mirror.upstreams]]
name = "up"
url = "$1"
EOF
    rm -rf "$WORK/berth-data"
    local bin=$BERTH_BIN
    (cd "$WORK" && for v in $(compgen -e | grep -E '^BERTH_' || true); do unset "$v"; done
     BERTH_LOG=warn exec "$bin" --config "$WORK/berth.toml" serve) >"$WORK/berth.log" 2>&1 &
    BERTH_PID=$!
    PIDS+=("$BERTH_PID")
    wait_up "$BERTH/v2/" "$BERTH_PID" berth
}

log "berth $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(docker-registry --version | awk '{print $1, $3}') upstream; ${BLOB_MB} MiB blobs, $RUNS cold runs per scenario; $(nproc) cores; data in $WORK ($(df -T "$WORK" | awk 'NR==2{print $2}'))"
log "load: $(uptime | sed 's/.*load average/load average/')"

declare -a ROWS
for rate in $UPSTREAM_RATES; do
    upstream=${RATE_URL[$rate]}
    label=$([[ $rate == 0 ]] && echo "loopback upstream, unthrottled" || echo "upstream limited to $rate MiB/s")
    log "== $label"
    start_berth "$upstream"
    direct=() cold=()
    for ((r = 0; r < RUNS; r++)); do
        f=$WORK/blob
        head -c "$((BLOB_MB * 1048576))" /dev/urandom >"$f"
        d="sha256:$(sha256sum "$f" | cut -d' ' -f1)"
        push_blob "$UP" bench "$f" "$d"
        # alternate the order so neither side always gets the warmer page cache
        if ((r % 2)); then
            c=$(get_secs "$BERTH/v2/up/bench/blobs/$d" "$d"); s=$(get_secs "$upstream/v2/bench/blobs/$d" "$d")
        else
            s=$(get_secs "$upstream/v2/bench/blobs/$d" "$d"); c=$(get_secs "$BERTH/v2/up/bench/blobs/$d" "$d")
        fi
        direct+=("$s") cold+=("$c")
        log "   run $((r + 1)): direct $s s, cold through the mirror $c s"
    done
    # warm: the last blob again through the mirror, vs the same bytes as a local repository
    push_blob "$BERTH" local/bench "$f" "$d"
    warm=() local_=()
    for ((r = 0; r < RUNS; r++)); do
        warm+=("$(get_secs "$BERTH/v2/up/bench/blobs/$d" "$d")")
        local_+=("$(get_secs "$BERTH/v2/local/bench/blobs/$d" "$d")")
    done
    md=$($HELPER median "${direct[@]}") mc=$($HELPER median "${cold[@]}")
    mw=$($HELPER median "${warm[@]}") ml=$($HELPER median "${local_[@]}")
    ROWS+=("$label|$md|$mc|$ml|$mw")
    kill "$BERTH_PID"; wait "$BERTH_PID" 2>/dev/null || true
done

printf '\n%-34s %9s %9s %7s %8s | %9s %9s %7s %8s\n' "${BLOB_MB} MiB blob, medians (s)" direct cold ratio "target" local warm ratio target
for row in "${ROWS[@]}"; do
    IFS='|' read -r label md mc ml mw <<<"$row"
    awk -v l="$label" -v md="$md" -v mc="$mc" -v ml="$ml" -v mw="$mw" 'BEGIN {
        rc = mc / md; rw = mw / ml
        printf "%-34s %9.3f %9.3f %6.2fx %8s | %9.3f %9.3f %6.2fx %8s\n", l, md, mc, rc, (rc <= 1.1 ? "<=1.1 ok" : "<=1.1 NO"), ml, mw, rw, (rw <= 1.1 ? "~1.0 ok" : "~1.0 NO") }'
done
