#!/usr/bin/env bash
# Catalog and tags/list pages at scale (issue 19): REPOS repositories (each with one manifest,
# so the catalog lists it) and one repository with TAGS tags, built directly in Berth's SQLite
# database (after Berth made it, with its migrations), then `GET /v2/_catalog?n=100` and
# `GET /v2/big/tags/list?n=100` at the start, the middle and the end of each list, every
# request on a new connection (curl time_total). Target: a page of 100 in <= 10 ms.
# See bench/README.md. Quick run: REPOS=10000 TAGS=10000 ./bench/listing-bench.sh
set -euo pipefail

REPOS=${REPOS:-100000}
TAGS=${TAGS:-100000}
PAGE=${PAGE:-100}
RUNS=${RUNS:-20}                   # requests per page position (median reported)
SKIP_BUILD=${SKIP_BUILD:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/berth-target}
BERTH_BIN=${BERTH_BIN:-$CARGO_TARGET_DIR/release/berth}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HERE/.." && pwd)
NAME=listing
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
bench_setup curl python3 jq

read -r PORT <<<"$(python3 "$HERE/registry_bench.py" freeport 1)"
BASE=http://127.0.0.1:$PORT
DATA=$WORK/data
start_berth() {
    (
        cd "$WORK"
        bin=$BERTH_BIN   # (unset below when the caller exported it)
        for v in $(compgen -e | grep -E '^(BERTH|AWS)_' || true); do unset "$v"; done
        BERTH_LOG=warn BERTH_AUTH__ENABLED=false exec "$bin" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA"
    ) >>"$WORK/berth.log" 2>&1 &
    BERTH_PID=$!
    PIDS+=("$BERTH_PID")
    wait_up "$BASE/v2/" "$BERTH_PID" berth
}

# Berth makes the database (its migrations); stopped, it is filled in one transaction.
start_berth
kill "$BERTH_PID"; wait "$BERTH_PID" 2>/dev/null || true
log "filling $DATA/berth.db: $REPOS repositories with a manifest each, repository big with $TAGS tags"
t0=$EPOCHREALTIME
python3 - "$DATA/berth.db" "$REPOS" "$TAGS" <<'PY'
import hashlib, sqlite3, sys, time
db, repos, tags = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
now = int(time.time())
c = sqlite3.connect(db)
c.execute("BEGIN")
body = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}'
digest = "sha256:" + hashlib.sha256(body).hexdigest()
def manifest(repo_id):
    c.execute("INSERT INTO manifests (repository_id, digest, media_type, size, content, created_at) "
              "VALUES (?, ?, 'application/vnd.oci.image.manifest.v1+json', ?, ?, ?)",
              (repo_id, digest, len(body), body, now))
# names spread over namespaces as real registries have them: team0042/app00042
for i in range(repos):
    cur = c.execute("INSERT INTO repositories (name, created_at) VALUES (?, ?)", (f"team{i % 1000:04d}/app{i:06d}", now))
    manifest(cur.lastrowid)
cur = c.execute("INSERT INTO repositories (name, created_at) VALUES ('big', ?)", (now,))
big = cur.lastrowid
manifest(big)
c.executemany("INSERT INTO tags (repository_id, name, digest, updated_at) VALUES (?, ?, ?, ?)",
              ((big, f"v{i:07d}", digest, now) for i in range(tags)))
c.execute("UPDATE repositories SET tags_version = tags_version + 1 WHERE id = ?", (big,))
c.commit()
c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
c.close()
PY
log "filled in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b - a}') s; database $(du -h "$DATA/berth.db" | cut -f1)"
start_berth
log "berth $("$BERTH_BIN" --version | awk '{print $2}') (tree at git $(git -C "$REPO_ROOT" rev-parse --short HEAD)), $(nproc) cores; load: $(uptime | sed 's/.*load average: //')"

# the `last` of the page at a position of the sorted list
nth_repo() { python3 -c "
n = sorted(f'team{i % 1000:04d}/app{i:06d}' for i in range($REPOS)) + ['big']
print(sorted(n)[$1])"; }
median_ms() { python3 -c "import statistics, sys; print(f'{statistics.median(float(x) for x in sys.argv[1:]) * 1000:.2f}')" "$@"; }
timed() { # label url want_items -> median ms of RUNS requests, each on a new connection
    local label=$1 url=$2 want=$3 times=() i got
    got=$(curl -fsS --max-time 30 "$url" | jq '(.repositories // .tags) | length')
    [[ $got == "$want" ]] || die "$label: $got items, want $want ($url)"
    for ((i = 0; i < RUNS; i++)); do times+=("$(curl -fsS --max-time 30 -o /dev/null -w '%{time_total}' "$url")"); done
    printf '| %-44s | %8s ms | %8s ms |\n' "$label" "$(median_ms "${times[@]}")" \
        "$(printf '%s\n' "${times[@]}" | sort -g | tail -1 | awk '{printf "%.2f", $1 * 1000}')"
}
# the first tags/list of the repository reads its whole list (then served from memory)
first=$(curl -fsS --max-time 60 -o /dev/null -w '%{time_total}' "$BASE/v2/big/tags/list?n=$PAGE")
mid_repo=$(nth_repo $((REPOS / 2)))
last_repo=$(nth_repo $((REPOS - PAGE)))
echo
echo "Catalog and tags/list pages of $PAGE, $REPOS repositories / $TAGS tags, SQLite, loopback, new connection per request (median and max of $RUNS)"
printf '| %-44s | %11s | %11s |\n' page median max
timed "catalog, first page" "$BASE/v2/_catalog?n=$PAGE" "$PAGE"
timed "catalog, page after $mid_repo" "$BASE/v2/_catalog?n=$PAGE&last=$mid_repo" "$PAGE"
timed "catalog, page near the end" "$BASE/v2/_catalog?n=$PAGE&last=$last_repo" "$PAGE"
timed "tags/list, first page" "$BASE/v2/big/tags/list?n=$PAGE" "$PAGE"
timed "tags/list, page after v$(printf '%07d' $((TAGS / 2)))" "$BASE/v2/big/tags/list?n=$PAGE&last=v$(printf '%07d' $((TAGS / 2)))" "$PAGE"
timed "tags/list, last page" "$BASE/v2/big/tags/list?n=$PAGE&last=v$(printf '%07d' $((TAGS - PAGE - 1)))" "$PAGE"
timed "GET /v2/ (the connection alone)" "$BASE/v2/" 0
echo "first tags/list of big after the start (reads all $TAGS tags): $(awk -v t="$first" 'BEGIN{printf "%.1f", t * 1000}') ms"
echo "load at end: $(uptime | sed 's/.*load average: //')"
