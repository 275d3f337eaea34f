#!/usr/bin/env bash
# A soak run: an hour of mixed push / pull / tag / delete / mount / abandoned-upload load from
# many clients, garbage collection on its own schedule and on demand, and a signed webhook, on
# one Berth; then every acknowledged image still tagged is pulled and checked, every deleted tag
# must be gone, every push must have had its webhook, no upload session or upload object may be
# left after the expiry, and the server's RSS must be flat after warm-up (growth <= 10%) with no
# file descriptors leaked. See bench/README.md ("soak") and bench/soak.py.
#   ./bench/soak.sh                      # filesystem + SQLite, 1 hour
#   BACKEND=s3 ./bench/soak.sh           # S3 (moto, checking signatures) + PostgreSQL
#   DURATION=300 CLIENTS=8 ./bench/soak.sh   # a short run
#   RATE=80 ./bench/soak.sh              # an even load: 80 client steps per second in all
set -euo pipefail

BACKEND=${BACKEND:-fs}          # fs | s3
DURATION=${DURATION:-3600}      # seconds of load
CLIENTS=${CLIENTS:-16}          # client threads (each with its own keep-alive connection)
RATE=${RATE:-0}                 # client steps per second for all clients together; 0: unpaced
PG_URL=${PG_URL:-postgres://berth:berth@127.0.0.1}   # s3: a role with CREATEDB
SKIP_BUILD=${SKIP_BUILD:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/berth-target}
BERTH_BIN=${BERTH_BIN:-$CARGO_TARGET_DIR/release/berth}
[[ $BACKEND == fs || $BACKEND == s3 ]] || { echo "BACKEND must be fs or s3" >&2; exit 2; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HERE/.." && pwd)
HELPER="python3 $HERE/registry_bench.py"
NAME=soak
source "$HERE/lib.sh"
bench_setup curl python3
REPORT=${REPORT:-/tmp/berth-soak-$BACKEND.json}

PASS=soak-admin-password
UPLOAD_EXPIRY=120
PORT=$($HELPER freeport 1)
BASE=http://127.0.0.1:$PORT
env_vars=(
    PATH="$PATH" HOME="$HOME" BERTH_LOG=warn BERTH_ADMIN_PASSWORD=$PASS
    BERTH_GC__ENABLED=true BERTH_GC__INTERVAL_SECS=300 BERTH_GC__GRACE_SECS=60
    BERTH_GC__DELETE_UNTAGGED=true BERTH_GC__UPLOAD_EXPIRY_SECS=$UPLOAD_EXPIRY
)
soak_args=(--upload-expiry "$UPLOAD_EXPIRY")

if [[ $BACKEND == fs ]]; then
    soak_args+=(--sqlite "$WORK/berth/berth.db" --uploads-dir "$WORK/berth/storage/_uploads")
else
    command -v psql >/dev/null || die "psql not found (apt-get install postgresql-client)"
    # moto on a private port, checking every signature (its first four requests make the IAM
    # user, its key and policy, and the bucket), and a fresh PostgreSQL database.
    SP=$($HELPER freeport 1)
    S3=http://127.0.0.1:$SP
    (cd "$WORK" && INITIAL_NO_AUTH_ACTION_COUNT=4 exec python3 "$REPO_ROOT/tests/s3/moto_server.py" -H 127.0.0.1 -p "$SP") >"$WORK/s3.log" 2>&1 &
    PIDS+=($!)
    wait_up "$S3/moto-api/" $! "moto"
    read -r AK SK < <(python3 - "$S3" <<'PY'
import json, sys
import boto3
opts = dict(endpoint_url=sys.argv[1], region_name="us-east-1")
iam = boto3.client("iam", aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap", **opts)
iam.create_user(UserName="berth")
key = iam.create_access_key(UserName="berth")["AccessKey"]
policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
iam.put_user_policy(UserName="berth", PolicyName="s3", PolicyDocument=json.dumps(policy))
boto3.client("s3", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"], **opts).create_bucket(Bucket="soak")
print(key["AccessKeyId"], key["SecretAccessKey"])
PY
)
    DB=soak_$$
    psql -qX "$PG_URL/postgres" -c "CREATE DATABASE $DB" >/dev/null
    trap 'bench_cleanup; psql -qX "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true' EXIT INT TERM
    env_vars+=(
        BERTH_DATABASE__URL="$PG_URL/$DB" BERTH_STORAGE__KIND=s3 BERTH_STORAGE__S3__BUCKET=soak
        BERTH_STORAGE__S3__ENDPOINT="$S3" BERTH_STORAGE__S3__PATH_STYLE=true BERTH_STORAGE__S3__ALLOW_HTTP=true
        BERTH_STORAGE__S3__REGION=us-east-1 BERTH_STORAGE__S3__ACCESS_KEY_ID="$AK" BERTH_STORAGE__S3__SECRET_ACCESS_KEY="$SK"
    )
    list_cmd="python3 -c \"import boto3; s3 = boto3.client('s3', endpoint_url='$S3', region_name='us-east-1', aws_access_key_id='$AK', aws_secret_access_key='$SK'); print(s3.list_objects_v2(Bucket='soak', Prefix='_uploads/').get('KeyCount', 0))\""
    soak_args+=(--pg-url "$PG_URL/$DB" --s3-list-cmd "$list_cmd")
fi

env -i "${env_vars[@]}" "$BERTH_BIN" serve --listen 127.0.0.1:$PORT --data-dir "$WORK/berth" >"$WORK/berth.log" 2>&1 &
BERTH_PID=$!
PIDS+=($BERTH_PID)
wait_up "$BASE/healthz" $BERTH_PID berth

log "soak: $BACKEND, $CLIENTS clients, $DURATION s, rate $([[ $RATE == 0 ]] && echo unpaced || echo "$RATE steps/s"); the machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
status=0
python3 "$HERE/soak.py" --base "$BASE" --password "$PASS" --pid $BERTH_PID --duration "$DURATION" \
    --clients "$CLIENTS" --rate "$RATE" --report "$REPORT" "${soak_args[@]}" || status=$?
cp "$WORK/berth.log" "${REPORT%.json}.log"
log "server log lines at WARN or above: $(grep -c -E 'WARN|ERROR' "$WORK/berth.log" || true)"
grep -E 'ERROR|panicked' "$WORK/berth.log" | head -20 >&2 || true
log "report: $REPORT; the server's log: ${REPORT%.json}.log"
exit $status
