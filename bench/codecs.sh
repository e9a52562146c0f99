#!/usr/bin/env bash
# The job image's hand-written codecs against well-kept crates, single-threaded, medians of
# interleaved rounds (bench/codecs/src/main.rs says what each compares and how):
#   - the ingest schema check (events/canonical.rs, then serde_json) against serde_json alone,
#     sonic-rs and simd-json, on records of `streamflow produce`'s generator;
#   - the gold CSV encoder (etl/csv_text.rs) against Arrow's CSV writer, on the gold tables of
#     a `streamflow etl` run over `--events` produced and ingested events.
#
#   bench/codecs.sh [--events N] [--records N] [--rounds R]
#     --events N   events in all, half per topic, produced, ingested and run through the ETL
#                  (default 400000)
#     --records N  of the landed records, this many are checked per round (default 200000)
#     --rounds R   interleaved rounds of each (default 9)
#     --native     build the benchmark for this machine's CPU (-C target-cpu=native: AVX2 and
#                  the like for sonic-rs and simd-json), not for the baseline x86-64 the
#                  product's images are built for
#   STREAMFLOW_BIN=path  make the data with this streamflow binary instead of building one
#
# The benchmark is its own crate (bench/codecs/, outside the workspace: the crates it measures
# would change the product's dependency features), built with its release profile into
# ~/.cache/streamflow/target-codecs; the data is made with the dev build of streamflow unless
# STREAMFLOW_BIN says otherwise. Starts Kafka if it is not running, and stops what it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
SF_LOG_TAG=bench-codecs

events=400000
records=200000
rounds=9
native=0
while (($#)); do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --records) records="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --native) native=1; shift ;;
    *) die "unknown argument $1" ;;
  esac
done

codecs_target="$(sf_cache_dir)/target-codecs"
rustflags="${RUSTFLAGS:-}"
if ((native)); then
  codecs_target+="-native"
  rustflags+=" -C target-cpu=native"
fi
RUSTFLAGS="$rustflags" CARGO_TARGET_DIR="$codecs_target" cargo build --locked -q --release \
  --manifest-path bench/codecs/Cargo.toml
codecs="$codecs_target/release/codecs"
if [[ -n "${STREAMFLOW_BIN:-}" ]]; then
  bin="$STREAMFLOW_BIN"
else
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(sf_cache_dir)/target}"
  cargo build --locked -q -p streamflow --bin streamflow
  bin="$CARGO_TARGET_DIR/debug/streamflow"
fi
[[ -x "$bin" ]] || die "no streamflow binary at $bin"

work="$(mktemp -d)"
started=0
cleanup() { if ((started)); then scripts/kafka.sh stop || true; fi; rm -rf "$work"; }
trap cleanup EXIT

if ! scripts/kafka.sh status >/dev/null 2>&1; then scripts/kafka.sh start; started=1; fi
# Fresh topics; the ETL reads the landing directories by the production topic names.
tag="bench_codecs_$RANDOM$RANDOM"
topics=("${tag}_user_events" "${tag}_transaction_events")
for t in "${topics[@]}"; do scripts/kafka.sh fresh-topic "$t" 6; done
log "producing and ingesting $events events"
schemas=(--user-events-topic "${topics[0]}" --transaction-events-topic "${topics[1]}")
"$bin" produce "${schemas[@]}" --topic "${topics[0]}" --topic "${topics[1]}" --count $((events / 2)) --seed 7 \
  --start 2026-11-01T00:00:00Z --spacing 20ms --users 100000 >/dev/null
"$bin" ingest "${schemas[@]}" --topic "${topics[0]}" --topic "${topics[1]}" --landing "$work/landing" \
  --group "$tag" >/dev/null
for t in "${topics[@]}"; do scripts/kafka.sh topics --delete --topic "$t" >/dev/null 2>&1 || true; done
mv "$work/landing/${topics[0]}" "$work/landing/user_events"
mv "$work/landing/${topics[1]}" "$work/landing/transaction_events"
log "making the gold tables"
"$bin" etl --interval 2026-11-01T00:00:00Z/2026-11-03T00:00:00Z --landing "$work/landing" \
  --gold "$work/gold" --spill-dir "$work/spill" >/dev/null

log "schema check: $records landed records, $rounds rounds"
"$codecs" check --landing "$work/landing" --records "$records" --rounds "$rounds"
log "gold CSV: $rounds rounds"
"$codecs" csv --gold "$work/gold" --rounds "$rounds"
