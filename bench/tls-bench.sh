#!/usr/bin/env bash
# HTTPS cost: Berth serving TLS itself (rustls) vs Berth on plain HTTP vs nginx terminating TLS
# with the same certificate in front of the plain Berth. Measures a BLOB_MB MiB blob pull (curl,
# HTTP/1.1 and HTTP/2) and the manifest GET rate (wrk, keep-alive). Not a timed test.
#   ./bench/tls-bench.sh                       # 512 MiB, 3 runs, wrk 10 s
#   BLOB_MB=64 RUNS=2 WRK_DURATION=3s SKIP_BUILD=1 ./bench/tls-bench.sh   # quick
set -euo pipefail

BLOB_MB=${BLOB_MB:-512}
RUNS=${RUNS:-3}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNS=${WRK_CONNS:-64}
WRK_DURATION=${WRK_DURATION:-10s}
SKIP_BUILD=${SKIP_BUILD:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/berth-target}
BERTH_BIN=${BERTH_BIN:-$CARGO_TARGET_DIR/release/berth}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ACCEPT="application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need=()
for t in curl wrk openssl python3; do command -v $t >/dev/null || need+=("$t"); done
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
if ((${#need[@]})); then
    log "installing: ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [[ $SKIP_BUILD != 1 ]]; then
    log "building berth (cargo build --release)"
    (cd "$HERE/.." && cargo build --release --quiet)
fi
[[ -x $BERTH_BIN ]] || die "no berth binary at $BERTH_BIN"

TMP=$(mktemp -d /tmp/berth-tls-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; die "nothing on port $1"; }

# A CA and an ECDSA P-256 server certificate for 127.0.0.1 (what most ACME CAs issue).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$TMP/ca.key" -out "$TMP/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$TMP/server.key" -out "$TMP/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$TMP/ext"
openssl x509 -req -in "$TMP/server.csr" -CA "$TMP/ca.crt" -CAkey "$TMP/ca.key" -CAcreateserial -days 2 \
    -extfile "$TMP/ext" -out "$TMP/server.crt" 2>/dev/null

PLAIN=$(port) TLS=$(port) NGX=$(port)
start_berth() { # name port [config]
    mkdir -p "$TMP/$1"
    env -i PATH="$PATH" BERTH_LOG=warn BERTH_AUTH__ENABLED=false ${3:+BERTH_CONFIG=$3} \
        "$BERTH_BIN" serve --listen "127.0.0.1:$2" --data-dir "$TMP/$1" 2>"$TMP/$1.log" &
    PIDS+=($!)
    wait_port "$2"
}
printf '[tls]\ncert_file = "%s"\nkey_file = "%s"\n' "$TMP/server.crt" "$TMP/server.key" >"$TMP/tls.toml"
start_berth plain "$PLAIN"
start_berth tls "$TLS" "$TMP/tls.toml"
cat >"$TMP/nginx.conf" <<EOF
worker_processes 2;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  upstream berth { server 127.0.0.1:$PLAIN; keepalive 64; }
  server {
    listen 127.0.0.1:$NGX ssl http2;
    ssl_certificate $TMP/server.crt;
    ssl_certificate_key $TMP/server.key;
    client_max_body_size 0;
    location / {
      proxy_pass http://berth;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-Proto https;
      proxy_request_buffering off;
      proxy_buffering off;
    }
  }
}
EOF
"$NGINX" -c "$TMP/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
wait_port "$NGX"

declare -A URL=([plain]="http://127.0.0.1:$PLAIN" [tls]="https://127.0.0.1:$TLS" [nginx]="https://127.0.0.1:$NGX")
C=(curl -sS --fail --cacert "$TMP/ca.crt")

log "pushing a $BLOB_MB MiB blob and a small image to both Berth servers"
head -c $((BLOB_MB << 20)) /dev/urandom >"$TMP/blob"
DIGEST=sha256:$(openssl dgst -sha256 -r "$TMP/blob" | cut -d' ' -f1)
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$TMP/config"
CFG=sha256:$(openssl dgst -sha256 -r "$TMP/config" | cut -d' ' -f1)
CFG_SIZE=$(stat -c %s "$TMP/config")
printf '{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":%s,"digest":"%s"},"layers":[]}' \
    "$CFG_SIZE" "$CFG" >"$TMP/manifest"
for s in plain tls; do
    u=${URL[$s]}
    "${C[@]}" -X POST -H 'Content-Type: application/octet-stream' -H 'Expect:' --data-binary @"$TMP/blob" \
        "$u/v2/bench/big/blobs/uploads/?digest=$DIGEST" -o /dev/null
    "${C[@]}" -X POST -H 'Content-Type: application/octet-stream' --data-binary @"$TMP/config" \
        "$u/v2/bench/small/blobs/uploads/?digest=$CFG" -o /dev/null
    "${C[@]}" -X PUT -H "Content-Type: application/vnd.docker.distribution.manifest.v2+json" \
        --data-binary @"$TMP/manifest" "$u/v2/bench/small/manifests/latest" -o /dev/null
done

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
pull() { # server http-flag → MB/s (median of RUNS)
    for _ in $(seq "$RUNS"); do
        "${C[@]}" "$2" -o /dev/null -w '%{size_download} %{time_total}\n' "${URL[$1]}/v2/bench/big/blobs/$DIGEST" |
            awk '{printf "%.1f\n", $1/$2/1048576}'
    done | median
}
rate() { # server → req/s
    wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d2s -H "Accept: $ACCEPT" "${URL[$1]}/v2/bench/small/manifests/latest" >/dev/null
    wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WRK_DURATION" -H "Accept: $ACCEPT" "${URL[$1]}/v2/bench/small/manifests/latest" |
        awk '/Requests\/sec/ {print $2} /Non-2xx/ {print "non-2xx: " $0 > "/dev/stderr"}'
}

log "load: $(uptime | sed 's/.*load average/load average/')"
declare -A R
for s in plain tls nginx; do
    R[pull1_$s]=$(pull "$s" --http1.1)
    [[ $s == plain ]] || R[pull2_$s]=$(pull "$s" --http2)
    R[rate_$s]=$(rate "$s")
    log "$s: pull HTTP/1.1 ${R[pull1_$s]} MB/s${R[pull2_$s]:+, HTTP/2 ${R[pull2_$s]} MB/s}, manifest GET ${R[rate_$s]} req/s"
done
log "load: $(uptime | sed 's/.*load average/load average/')"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
cat <<EOF

| metric | berth plain HTTP | berth HTTPS (rustls) | nginx HTTPS → berth | berth HTTPS / plain | berth HTTPS / nginx HTTPS |
| --- | --- | --- | --- | --- | --- |
| pull ${BLOB_MB} MiB, HTTP/1.1 (MB/s) | ${R[pull1_plain]} | ${R[pull1_tls]} | ${R[pull1_nginx]} | $(ratio "${R[pull1_tls]}" "${R[pull1_plain]}") | $(ratio "${R[pull1_tls]}" "${R[pull1_nginx]}") |
| pull ${BLOB_MB} MiB, HTTP/2 (MB/s) | — | ${R[pull2_tls]} | ${R[pull2_nginx]} | $(ratio "${R[pull2_tls]}" "${R[pull1_plain]}") | $(ratio "${R[pull2_tls]}" "${R[pull2_nginx]}") |
| manifest GET (req/s, wrk -c$WRK_CONNS, HTTP/1.1 keep-alive) | ${R[rate_plain]} | ${R[rate_tls]} | ${R[rate_nginx]} | $(ratio "${R[rate_tls]}" "${R[rate_plain]}") | $(ratio "${R[rate_tls]}" "${R[rate_nginx]}") |
EOF
