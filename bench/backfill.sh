#!/usr/bin/env bash
# The cost of a large Backfill on the local kube-apiserver (scripts/kube.sh): N hourly
# intervals, M runs at a time, one stage each, a kubelet stand-in finishing each Job at once,
# with history limits H (successful and failed runs kept; older ones pruned) and, as its peer,
# the same Backfill keeping every run (no limits), one after the other. Prints time to done,
# runs/s, the operator's peak RSS and the API requests it sent per run (its own counter
# streamflow_operator_api_requests_total, by verb and resource).
#
#   bench/backfill.sh [--intervals N] [--max-active M] [--history-limit H] [--no-peer]
#                                                   (default 10000, 20, 10)
#
# It is operator/tests/backfill_bench.rs with a larger N; the test suite runs it with 200.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
SF_LOG_TAG=bench

intervals=10000
max_active=20
history_limit=10
peer=true
while (($#)); do
  case "$1" in
    --intervals) intervals="$2"; shift 2 ;;
    --max-active) max_active="$2"; shift 2 ;;
    --history-limit) history_limit="$2"; shift 2 ;;
    --no-peer) peer=false; shift ;;
    *) die "unknown argument $1" ;;
  esac
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(sf_cache_dir)/target}"
# One operator, no election: the tests give the lease a 3 s renew deadline, which a loaded
# machine can miss over a half-hour run, and a replica that loses its lease exits.
export STREAMFLOW_OPERATOR_LEADER_ELECT=false
started=()
cleanup() { local s; for s in "${started[@]}"; do scripts/"$s".sh stop || true; done; }
trap cleanup EXIT
if ! scripts/kube.sh status >/dev/null 2>&1; then scripts/kube.sh start; started+=(kube); fi

limits=("$history_limit")
if $peer; then limits+=(none); fi
cargo test --locked -q --workspace --test backfill_bench --no-run 2>/dev/null
echo "| intervals | maxActiveRuns | history limit | s to done | runs/s | operator peak RSS MiB | writes/run | reads/run | Backfill reconciles/run |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for limit in "${limits[@]}"; do
  STREAMFLOW_BENCH_INTERVALS="$intervals" STREAMFLOW_BENCH_MAX_ACTIVE="$max_active" \
  STREAMFLOW_BENCH_HISTORY_LIMIT="$limit" \
    cargo test --locked -q --workspace --test backfill_bench -- --nocapture 2>/dev/null \
    | sed -n 's/^BENCH //p' | grep -v '^intervals=' | sed "s/^requests /  requests (history limit $limit): /"
done
