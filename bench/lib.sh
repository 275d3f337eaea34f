# Shared by the bench scripts that start Berth beside other servers (mirror-bench.sh,
# replication-bench.sh): source it after setting SKIP_BUILD, REPO_ROOT, BERTH_BIN and NAME.
#   bench_setup TOOL...   installs missing Debian packages (sha256sum comes from coreutils),
#                         builds Berth unless SKIP_BUILD=1, makes $WORK and its cleanup trap
#                         (kills $PIDS and anything running from $WORK, removes $WORK)
#   wait_up URL PID NAME  waits until URL answers 2xx, or dies with the server's log

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

bench_setup() {
    local need=() c
    for c in "$@"; do command -v "$c" >/dev/null || need+=("$c"); done
    if ((${#need[@]})); then
        need=("${need[@]/sha256sum/coreutils}")
        log "installing: ${need[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    if [[ $SKIP_BUILD != 1 ]]; then
        log "cargo build --release"
        (cd "$REPO_ROOT" && cargo build --release --quiet)
    fi
    [[ -x $BERTH_BIN ]] || die "no berth binary at $BERTH_BIN"
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-$NAME.XXXXXX")
    PIDS=()
    trap bench_cleanup EXIT INT TERM
}

bench_cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    pkill -f "$WORK/" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}

wait_up() { # url pid name
    for ((i = 0; i < 150; i++)); do
        kill -0 "$2" 2>/dev/null || { tail -n 20 "$WORK"/*.log >&2 || true; die "$3 exited during startup"; }
        curl -fs --max-time 1 -o /dev/null "$1" && return 0
        sleep 0.2
    done
    die "$3 did not come up on $1"
}
