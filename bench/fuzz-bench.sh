#!/usr/bin/env bash
# The long run of Berth's fuzz targets (issue #18): every target in fuzz/fuzz_targets for
# SECONDS (default 600) from its checked-in seed corpus, one after the other, through
# scripts/fuzz. Prints its table (inputs executed, executions per second, coverage, corpus
# growth, crashes) and keeps the grown corpora and libFuzzer's logs in OUT (default a new
# /tmp/berth-fuzz-bench.XXXXXX) for minimising into fuzz/corpus if a target found much.
#   ./bench/fuzz-bench.sh [SECONDS] [TARGET...]
# A crash stops that target (libFuzzer stops at the first) and fails the run; its input is in
# fuzz/artifacts/<target>/.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
secs=${1:-600}
shift || true
OUT=${OUT:-$(mktemp -d /tmp/berth-fuzz-bench.XXXXXX)}
echo "grown corpora and logs: $OUT" >&2
BERTH_FUZZ_KEEP=$OUT "$HERE/../scripts/fuzz" "$secs" "$@"
