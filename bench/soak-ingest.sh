#!/usr/bin/env bash
# Soak: the kill -9 test of the drain with many more iterations than the test suite runs.
#   bench/soak-ingest.sh [ITERATIONS]   (default 50)
# Starts Kafka if needed and stops what it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(sf_cache_dir)/target}"
started=""
if ! scripts/kafka.sh status >/dev/null 2>&1; then scripts/kafka.sh start; started=1; fi
trap '[[ -n "$started" ]] && scripts/kafka.sh stop' EXIT
STREAMFLOW_KILL_ITERATIONS="${1:-50}" cargo test --locked --workspace --test ingest kill_9 -- --nocapture
