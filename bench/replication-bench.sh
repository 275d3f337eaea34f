#!/usr/bin/env bash
# Replication against `skopeo sync`: an image set of about 1 GiB in Berth is copied to a fresh
# reference registry (Debian's docker-registry, CNCF Distribution 2.8) by a Berth push rule run
# on demand, and by `skopeo sync` of the same repositories from Berth to another fresh
# reference registry, in the same run. See bench/README.md ("replication-bench").
#   Berth:  POST /api/v1/replication/rules/NAME/run, until every job of the execution is done
#   skopeo: skopeo sync --src yaml --dest docker (every tag of every repository)
# Aim: Berth's time / skopeo's time <= 1.
# Quick run: IMAGES=4 LAYER_MB=8 ROUNDS=1 ./bench/replication-bench.sh
set -euo pipefail

IMAGES=${IMAGES:-16}        # images (one tag each, in IMAGES/2 repositories)
LAYERS=${LAYERS:-4}         # layers per image
LAYER_MB=${LAYER_MB:-16}    # MiB per layer: 16 x 4 x 16 MiB = 1 GiB
ROUNDS=${ROUNDS:-2}         # each round: fresh targets, both tools, order alternating
SKIP_BUILD=${SKIP_BUILD:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/berth-target}
BERTH_BIN=${BERTH_BIN:-$CARGO_TARGET_DIR/release/berth}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HERE/.." && pwd)
HELPER="python3 $HERE/registry_bench.py"

NAME=replication-bench
source "$HERE/lib.sh"
bench_setup curl docker-registry python3 skopeo jq bc

# A fresh reference registry on a free port; prints "PORT PID".
start_reference() { # name
    local port dir
    port=$($HELPER freeport 1)
    dir=$WORK/$1
    mkdir -p "$dir/data"
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
    env -u REGISTRY_HTTP_SECRET docker-registry serve "$dir/config.yml" >"$WORK/$1.log" 2>&1 &
    local pid=$!
    wait_up "http://127.0.0.1:$port/v2/" $pid "$1"
    echo "$port $pid"
}

BERTH_PORT=$($HELPER freeport 1)
BERTH=http://127.0.0.1:$BERTH_PORT
# Authentication on (the replication API is for administrators); skopeo logs in as the admin too.
PASS=bench-admin-password
env -i PATH="$PATH" HOME="$HOME" BERTH_LOG=warn BERTH_ADMIN_PASSWORD=$PASS BERTH_REPLICATION__POLL_MS=100 \
    "$BERTH_BIN" serve --listen 127.0.0.1:$BERTH_PORT --data-dir "$WORK/berth" >"$WORK/berth.log" 2>&1 &
BERTH_PID=$!
PIDS+=($BERTH_PID)
wait_up "$BERTH/healthz" $BERTH_PID berth

log "populating Berth: $IMAGES images of $LAYERS x $LAYER_MB MiB"
python3 - "$BERTH" "$IMAGES" "$LAYERS" "$LAYER_MB" "$PASS" <<'PYEOF'
import base64, hashlib, json, os, sys, http.client, urllib.parse
base, images, layers, mb, pw = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
u = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
auth = {"Authorization": "Basic " + base64.b64encode(f"admin:{pw}".encode()).decode()}
def push_blob(repo, data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    conn.request("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0", **auth})
    r = conn.getresponse(); r.read(); assert r.status == 202, r.status
    loc = r.getheader("Location")
    sep = "&" if "?" in loc else "?"
    conn.request("PUT", f"{loc}{sep}digest={d}", body=data,
                 headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data)), **auth})
    r = conn.getresponse(); r.read(); assert r.status == 201, r.status
    return d
for i in range(images):
    repo = f"set/app{i // 2}"
    descs = []
    for l in range(layers):
        data = os.urandom(mb << 20)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": push_blob(repo, data), "size": len(data)})
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "n": i}).encode()
    m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": push_blob(repo, config), "size": len(config)},
         "layers": descs}
    body = json.dumps(m).encode()
    conn.request("PUT", f"/v2/{repo}/manifests/v{i % 2}", body=body,
                 headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json", **auth})
    r = conn.getresponse(); r.read(); assert r.status == 201, r.status
PYEOF
TOTAL_MB=$((IMAGES * LAYERS * LAYER_MB))
REPOS=$(curl -fs -u "admin:$PASS" "$BERTH/v2/_catalog" | jq -r '.repositories[]')

api() { curl -fsS -u "admin:$PASS" -X "$1" -H 'Content-Type: application/json' "$BERTH/api/v1/replication/$2" ${3:+-d "$3"}; }

# Berth: a push rule to a fresh reference registry, run on demand, timed until every job is done.
berth_round() { # round
    local port pid start end exec
    read -r port pid <<<"$(start_reference "ref-berth-$1")"
    api POST targets "{\"name\":\"ref$1\",\"url\":\"http://127.0.0.1:$port\"}" >/dev/null
    api POST rules "{\"name\":\"bench$1\",\"target\":\"ref$1\",\"repositories\":\"set/*\"}" >/dev/null
    start=$(date +%s.%N)
    exec=$(api POST "rules/bench$1/run" | jq -r .execution)
    while :; do
        local state
        state=$(api GET "rules/bench$1/executions" | jq -r ".executions[] | select(.id == $exec) | \"\(.pending) \(.failed)\"")
        [[ $state == "0 0" ]] && break
        [[ ${state#* } != 0 ]] && die "a replication job failed: $(api GET "rules/bench$1/jobs")"
        sleep 0.05
    done
    end=$(date +%s.%N)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    api DELETE "targets/ref$1" >/dev/null || true
    echo "$end - $start" | bc -l
}

# skopeo sync of the same repositories to another fresh reference registry.
skopeo_round() { # round
    local port pid start end
    read -r port pid <<<"$(start_reference "ref-skopeo-$1")"
    {
        echo "127.0.0.1:$BERTH_PORT:"
        echo "  tls-verify: false"
        echo "  credentials: {username: admin, password: $PASS}"
        echo "  images:"
        for r in $REPOS; do echo "    $r: []"; done
    } >"$WORK/sync.yaml"
    start=$(date +%s.%N)
    skopeo sync --src yaml --dest docker --dest-tls-verify=false --preserve-digests \
        "$WORK/sync.yaml" "127.0.0.1:$port" >"$WORK/skopeo-$1.log" 2>&1 || { tail "$WORK/skopeo-$1.log" >&2; die "skopeo sync failed"; }
    end=$(date +%s.%N)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "$end - $start" | bc -l
}

B=(); S=()
for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then
        B+=("$(berth_round $r)"); S+=("$(skopeo_round $r)")
    else
        S+=("$(skopeo_round $r)"); B+=("$(berth_round $r)")
    fi
    log "round $r: berth ${B[-1]} s, skopeo sync ${S[-1]} s"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
BM=$(median "${B[@]}"); SM=$(median "${S[@]}")
echo
echo "replication of $IMAGES images ($TOTAL_MB MiB) to the reference registry, loopback, $(nproc) cores, median of $ROUNDS"
printf '%-28s %10s %10s\n' "" "seconds" "MB/s"
printf '%-28s %10.2f %10.0f\n' "berth push rule (run)" "$BM" "$(echo "$TOTAL_MB * 1.048576 / $BM" | bc -l)"
printf '%-28s %10.2f %10.0f\n' "skopeo sync" "$SM" "$(echo "$TOTAL_MB * 1.048576 / $SM" | bc -l)"
printf 'berth / skopeo: %.2f (aim <= 1)\n' "$(echo "$BM / $SM" | bc -l)"
