#!/usr/bin/env bash
# The pull-through mirror against a direct pull from its upstream (Debian's docker-registry,
# CNCF Distribution 2.8) on loopback. See bench/README.md ("mirror-bench").
#
#   cold:  GET a blob through Berth's mirror that Berth has never seen (fetched upstream,
#          verified, stored, and streamed to the client while it is stored)
#          vs GET of the same blob straight from the upstream.              target <= 1.2x the time
#          Also with CLIENTS (8) clients asking at once, and the CPU time the machine spent on
#          one cold pull against one direct pull (servers and curl), beside SHA-256 of the blob.
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
bench_setup curl docker-registry python3 sha256sum openssl
[[ -x /usr/bin/time ]] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }
HZ=$(getconf CLK_TCK)
CLIENTS=${CLIENTS:-8}                    # the concurrent clients of the second cold measurement

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
UP_PID=$!
PIDS+=("$UP_PID")
wait_up "$UP/v2/" "$UP_PID" "docker-registry (upstream)"

# A throttling proxy in front of the upstream per rate (bench/registry_bench.py throttle).
declare -A RATE_URL RATE_PID
for rate in $UPSTREAM_RATES; do
    if [[ $rate == 0 ]]; then RATE_URL[$rate]=$UP; continue; fi
    p=$($HELPER freeport 1)
    $HELPER throttle "$p" "$UP_PORT" "$rate" >"$WORK/throttle-$rate.log" 2>&1 &
    PIDS+=($!)
    RATE_PID[$rate]=$!
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

warm_upstream() { # digest: one untimed GET straight from the upstream after the push. The first
    # timed GET of a run, whichever went first, took up to 4x the second without it (0.28-0.41 s
    # against 0.10 s, 2026-12-05); an upstream's blobs are not freshly written when a mirror
    # fetches them.
    curl -fsS --max-time 600 -o /dev/null "$UP/v2/bench/blobs/$1" || die "warm-up GET of $1 failed"
}

ticks() { # CPU time (user + system, all threads) of the processes in CPU_PIDS, in clock ticks
    local p sum=0
    for p in "${CPU_PIDS[@]}"; do sum=$((sum + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
    echo "$sum"
}

get_secs() { # url expected-digest -> "seconds cpu-seconds"; checks the bytes
    # cpu-seconds: the servers' (CPU_PIDS) and curl's CPU time during the GET, everything the
    # transfer made the machine do (in clock ticks: 10 ms steps, per process).
    local out t0 t1
    t0=$(ticks)
    out=$(/usr/bin/time -f '%U %S' -o "$WORK/curl-cpu" curl -sS --max-time 600 -w '%{time_total} %{http_code}' -o "$WORK/got" "$1")
    # A cold pull's flush and commit go on after the client has its last chunk: give them time
    # to end, so their CPU time counts here and not in the next GET's.
    sleep 0.5
    t1=$(ticks)
    [[ ${out#* } == 200 ]] || die "GET $1 answered ${out#* }"
    [[ "sha256:$(sha256sum "$WORK/got" | cut -d' ' -f1)" == "$2" ]] || die "GET $1: wrong bytes"
    rm -f "$WORK/got"
    awk -v t="${out% *}" -v d=$((t1 - t0)) -v hz="$HZ" '{ printf "%s %.3f\n", t, d / hz + $1 + $2 }' "$WORK/curl-cpu"
}

get_par_secs() { # url expected-digest n -> seconds until n concurrent GETs all ended; checks every body
    local i start end pids=()
    start=$(date +%s.%N)
    for ((i = 0; i < $3; i++)); do
        curl -sS --max-time 600 -w '%{http_code}' -o "$WORK/got$i" "$1" >"$WORK/code$i" &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || die "GET $1 failed"; done
    end=$(date +%s.%N)
    for ((i = 0; i < $3; i++)); do
        [[ $(cat "$WORK/code$i") == 200 ]] || die "GET $1 answered $(cat "$WORK/code$i")"
        [[ "sha256:$(sha256sum "$WORK/got$i" | cut -d' ' -f1)" == "$2" ]] || die "GET $1: wrong bytes"
        rm -f "$WORK/got$i" "$WORK/code$i"
    done
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }'
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

declare -a ROWS PROWS CROWS
for rate in $UPSTREAM_RATES; do
    upstream=${RATE_URL[$rate]}
    label=$([[ $rate == 0 ]] && echo "loopback upstream, unthrottled" || echo "upstream limited to $rate MiB/s")
    log "== $label"
    start_berth "$upstream"
    CPU_PIDS=("$UP_PID" "$BERTH_PID" ${RATE_PID[$rate]:-})
    direct=() cold=() dcpu=() ccpu=() hash=()
    for ((r = 0; r < RUNS; r++)); do
        f=$WORK/blob
        head -c "$((BLOB_MB * 1048576))" /dev/urandom >"$f"
        d="sha256:$(sha256sum "$f" | cut -d' ' -f1)"
        push_blob "$UP" bench "$f" "$d"
        warm_upstream "$d"
        # alternate the order so neither side always gets the warmer page cache
        if ((r % 2)); then
            c=$(get_secs "$BERTH/v2/up/bench/blobs/$d" "$d"); s=$(get_secs "$upstream/v2/bench/blobs/$d" "$d")
        else
            s=$(get_secs "$upstream/v2/bench/blobs/$d" "$d"); c=$(get_secs "$BERTH/v2/up/bench/blobs/$d" "$d")
        fi
        # SHA-256 of the blob at the machine's speed: what verifying it costs at the least.
        h=$( { /usr/bin/time -f '%U %S' openssl dgst -sha256 "$f" >/dev/null; } 2>&1 | awk '{print $1 + $2}')
        direct+=("${s% *}") cold+=("${c% *}") dcpu+=("${s#* }") ccpu+=("${c#* }") hash+=("$h")
        log "   run $((r + 1)): direct $s, cold through the mirror $c (s, CPU s), sha256 ${h} CPU s"
    done
    # CLIENTS clients at once, a fresh blob each run: all straight from the upstream, or all
    # through the mirror (one of them starts the fetch and streams it; the others join it and
    # get the same bytes as they arrive).
    pdirect=() pcold=()
    for ((r = 0; r < RUNS; r++)); do
        head -c "$((BLOB_MB * 1048576))" /dev/urandom >"$f"
        d="sha256:$(sha256sum "$f" | cut -d' ' -f1)"
        push_blob "$UP" bench "$f" "$d"
        warm_upstream "$d"
        if ((r % 2)); then
            c=$(get_par_secs "$BERTH/v2/up/bench/blobs/$d" "$d" "$CLIENTS"); s=$(get_par_secs "$upstream/v2/bench/blobs/$d" "$d" "$CLIENTS")
        else
            s=$(get_par_secs "$upstream/v2/bench/blobs/$d" "$d" "$CLIENTS"); c=$(get_par_secs "$BERTH/v2/up/bench/blobs/$d" "$d" "$CLIENTS")
        fi
        pdirect+=("$s") pcold+=("$c")
        log "   $CLIENTS clients at once, run $((r + 1)): direct $s s, cold through the mirror $c s"
    done
    # warm: the last blob again through the mirror, vs the same bytes as a local repository
    push_blob "$BERTH" local/bench "$f" "$d"
    warm=() local_=()
    for ((r = 0; r < RUNS; r++)); do
        w=$(get_secs "$BERTH/v2/up/bench/blobs/$d" "$d")
        l=$(get_secs "$BERTH/v2/local/bench/blobs/$d" "$d")
        warm+=("${w% *}") local_+=("${l% *}")
    done
    md=$($HELPER median "${direct[@]}") mc=$($HELPER median "${cold[@]}")
    mw=$($HELPER median "${warm[@]}") ml=$($HELPER median "${local_[@]}")
    ROWS+=("$label|$md|$mc|$ml|$mw")
    PROWS+=("$label|$($HELPER median "${pdirect[@]}")|$($HELPER median "${pcold[@]}")")
    CROWS+=("$label|$md|$($HELPER median "${dcpu[@]}")|$mc|$($HELPER median "${ccpu[@]}")|$($HELPER median "${hash[@]}")")
    kill "$BERTH_PID"; wait "$BERTH_PID" 2>/dev/null || true
done

printf '\n%-34s %9s %9s %7s %8s | %9s %9s %7s %8s\n' "${BLOB_MB} MiB blob, medians (s)" direct cold ratio "target" local warm ratio target
for row in "${ROWS[@]}"; do
    IFS='|' read -r label md mc ml mw <<<"$row"
    awk -v l="$label" -v md="$md" -v mc="$mc" -v ml="$ml" -v mw="$mw" 'BEGIN {
        rc = mc / md; rw = mw / ml
        printf "%-34s %9.3f %9.3f %6.2fx %8s | %9.3f %9.3f %6.2fx %8s\n", l, md, mc, rc, (rc <= 1.2 ? "<=1.2 ok" : "<=1.2 NO"), ml, mw, rw, (rw <= 1.1 ? "~1.0 ok" : "~1.0 NO") }'
done
printf '\n%-34s %9s %9s %7s %8s\n' "$CLIENTS clients at once, medians (s)" direct cold ratio target
for row in "${PROWS[@]}"; do
    IFS='|' read -r label pd pc <<<"$row"
    awk -v l="$label" -v pd="$pd" -v pc="$pc" 'BEGIN {
        r = pc / pd; printf "%-34s %9.3f %9.3f %6.2fx %8s\n", l, pd, pc, r, (r <= 1.2 ? "<=1.2 ok" : "<=1.2 NO") }'
done
# Where the single cold pull's time goes: the CPU time the whole machine spent on it (servers
# and curl), and what that allows on this machine's cores if every core were kept busy.
cores=$(nproc)
printf '\n%-34s %9s %9s %9s %9s %9s %11s\n' "one client: CPU s, medians" direct "direct s" cold "cold s" sha256 "floor/direct"
for row in "${CROWS[@]}"; do
    IFS='|' read -r label md dc mc cc h <<<"$row"
    awk -v l="$label" -v md="$md" -v dc="$dc" -v mc="$mc" -v cc="$cc" -v h="$h" -v n="$cores" 'BEGIN {
        printf "%-34s %9.3f %9.3f %9.3f %9.3f %9.3f %10.2fx\n", l, dc, md, cc, mc, h, (cc / n) / md }'
done
log "floor/direct: the cold pull's CPU time spread over all $cores cores, as a multiple of the direct pull's time (a cold pull cannot be faster than that without doing less work)"
