#!/usr/bin/env bash
# The cost of a large Backfill on the local kube-apiserver (scripts/kube.sh): N hourly
# intervals, M runs at a time, one stage each, a kubelet stand-in finishing each Job at once.
# Prints time to done, runs/s, the operator's peak RSS and the API requests it sent per run
# (its own counter streamflow_operator_api_requests_total, by verb and resource).
#
#   bench/backfill.sh [--intervals N] [--max-active M]     (default 1000, 20)
#
# It is operator/tests/backfill_bench.rs with a larger N; the test suite runs it with 200.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
SF_LOG_TAG=bench

intervals=1000
max_active=20
while (($#)); do
  case "$1" in
    --intervals) intervals="$2"; shift 2 ;;
    --max-active) max_active="$2"; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(sf_cache_dir)/target}"
started=()
cleanup() { local s; for s in "${started[@]}"; do scripts/"$s".sh stop || true; done; }
trap cleanup EXIT
if ! scripts/kube.sh status >/dev/null 2>&1; then scripts/kube.sh start; started+=(kube); fi

echo "| intervals | maxActiveRuns | s to done | runs/s | operator peak RSS MiB | writes/run | reads/run | Backfill reconciles/run |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
STREAMFLOW_BENCH_INTERVALS="$intervals" STREAMFLOW_BENCH_MAX_ACTIVE="$max_active" \
  cargo test --locked -q --workspace --test backfill_bench -- --nocapture 2>/dev/null \
  | sed -n 's/^BENCH //p' | grep -v '^intervals=' | sed 's/^requests /  requests: /'
