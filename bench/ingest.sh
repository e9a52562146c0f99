#!/usr/bin/env bash
# Drain throughput and peak RSS of `streamflow ingest` (to a local directory and to S3, plain and
# with --compression zstd) against
# Apache Kafka's own consumer perf tool (org.apache.kafka.tools.ConsumerPerformance) reading the
# same topics from the same broker, side by side, medians of several runs.
#
#   bench/ingest.sh [--events N] [--runs R] [--release]
#     --events N   N events in all, half per topic (default 5000000)
#     --release    measure a release build (Cargo.toml's release profile: LTO, opt-level 3),
#                  built into $CARGO_TARGET_DIR/release — about 20 min the first time here
#   STREAMFLOW_BIN=path  measure this streamflow binary instead of building one
#
# Prints a Markdown table for docs/benchmarks.md. Starts Kafka and the S3 server if they are not
# running, and stops what it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
SF_LOG_TAG=bench

events=5000000
runs=3
profile=dev
while (($#)); do
  case "$1" in
    --release) profile=release; shift ;;
    --events) events="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
per_topic=$((events / 2))
topics=(bench_user_events bench_transaction_events)
# Which schema each topic carries (the names say nothing to the command).
schema_flags=(--user-events-topic "${topics[0]}" --transaction-events-topic "${topics[1]}")

if [[ -n "${STREAMFLOW_BIN:-}" ]]; then
  bin="$STREAMFLOW_BIN"
  [[ -x "$bin" ]] || die "STREAMFLOW_BIN=$bin is not an executable"
else
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(sf_cache_dir)/target}"
  if [[ "$profile" == release ]]; then
    cargo build --locked -q --workspace --release
    bin="$CARGO_TARGET_DIR/release/streamflow"
  else
    cargo build --locked -q --workspace
    bin="$CARGO_TARGET_DIR/debug/streamflow"
  fi
fi
log "measuring $bin"

started=()
cleanup() { local s; for s in "${started[@]}"; do scripts/"$s".sh stop || true; done; }
trap cleanup EXIT
for s in kafka s3; do
  if ! scripts/"$s".sh status >/dev/null 2>&1; then scripts/"$s".sh start; started+=("$s"); fi
done
eval "$(scripts/s3.sh env)"

# Each S3 drain lands in a bucket of its own, deleted right after it, as each local drain's
# directory is: SeaweedFS keeps the space of deleted objects until a vacuum but frees a deleted
# bucket's at once (240 MB put, deleted object by object: still held; the bucket deleted:
# freed). Kept to the end, the buckets of five runs held about 16 GB of volume files on the
# machine that also holds the broker's log.
bucket=bench-ingest
work="$(mktemp -d)"
trap 'scripts/s3.sh rmbucket "$bucket" >/dev/null || true; cleanup; rm -rf "$work"' EXIT

# Fresh topics with exactly the events of this benchmark.
for t in "${topics[@]}"; do scripts/kafka.sh fresh-topic "$t" 6; done
log "producing $events events"
"$bin" produce "${schema_flags[@]}" --count "$per_topic" --seed 1 \
  --start 2026-11-01T00:00:00Z --spacing 10ms --users 100000 >"$work/produce.json"
cat "$work/produce.json" >&2

# The servers share the two cores with the consumer being measured, so each measurement also
# records the CPU time they spent meanwhile: the broker serves every consumer alike, the S3
# server only the S3 drains.
server_pid() { scripts/"$1".sh status 2>/dev/null | sed -n 's/^running: pid \([0-9]*\).*/\1/p'; }
kafka_pid="$(server_pid kafka)"; s3_pid="$(server_pid s3)"
[[ -n "$kafka_pid" && -n "$s3_pid" ]] || die "cannot find the pids of the Kafka broker and the S3 server"
# cpu_ticks PID: user + system time of a running process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# time_cmd NAME CMD... : runs CMD under /usr/bin/time, appends "NAME seconds peak_kib cpu_s
# broker_cpu_s s3_cpu_s" to results (cpu_s: user + system of CMD and its children).
# Each measurement starts with no dirty pages left by the one before (2.8 GB of plain local
# files, or the S3 server's volume files, otherwise written back while the next one runs).
time_cmd() {
  local name="$1"; shift
  sync
  local k0 s0; k0="$(cpu_ticks "$kafka_pid")"; s0="$(cpu_ticks "$s3_pid")"
  /usr/bin/time -f "%e %M %U %S" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || {
    cat "$work/err" >&2; die "$name failed"; }
  local k1 s1 hz; k1="$(cpu_ticks "$kafka_pid")"; s1="$(cpu_ticks "$s3_pid")"; hz="$(getconf CLK_TCK)"
  read -r secs kib user sys <"$work/time"
  echo "$name $secs $kib $(awk -v u="$user" -v s="$sys" -v k=$((k1 - k0)) -v o=$((s1 - s0)) -v hz="$hz" \
    'BEGIN { printf "%.2f %.2f %.2f", u + s, k / hz, o / hz }')" >>"$work/results"
}

for i in $(seq 1 "$runs"); do
  log "run $i/$runs"
  # The perf tool reads one topic per process; the drain reads both topics at once, so the
  # tool runs once per topic, both at the same time, and the wall time is the pair's.
  time_cmd perf-tool bash -c '
    for t in "$@"; do
      scripts/kafka.sh tool org.apache.kafka.tools.ConsumerPerformance --bootstrap-server 127.0.0.1:9094 \
        --topic "$t" --messages '"$per_topic"' --group "perf-$t-$RANDOM" --timeout 60000 &
    done
    wait' perf "${topics[@]}"
  grep -v '^start.time' "$work/out" | sed "s/^/perf-tool-report /" >>"$work/perf-reports"
  for compression in none zstd; do
    suffix=""; [[ "$compression" == none ]] || suffix="-$compression"
    rm -rf "$work/landing"
    time_cmd "ingest-local$suffix" "$bin" ingest "${schema_flags[@]}" \
      --landing "$work/landing" --group "bench-local-$i-$RANDOM" --compression "$compression"
    tail -n 1 "$work/out" >"$work/summary-local$suffix.json"
    scripts/s3.sh mkbucket "$bucket" >/dev/null
    time_cmd "ingest-s3$suffix" "$bin" ingest "${schema_flags[@]}" \
      --landing "s3://$bucket/bench-$i-$RANDOM" --group "bench-s3-$i-$RANDOM" --compression "$compression"
    tail -n 1 "$work/out" >"$work/summary-s3$suffix.json"
    scripts/s3.sh rmbucket "$bucket" >/dev/null
  done
  rm -rf "$work/landing"
done

python3 - "$work" "$events" <<'EOF'
import json, statistics, sys
work, events = sys.argv[1], int(sys.argv[2])
rows, cpu = {}, {}
for line in open(f"{work}/results"):
    name, secs, kib, own, broker, s3 = line.split()
    rows.setdefault(name, []).append((float(secs), int(kib)))
    cpu.setdefault(name, []).append((float(own), float(broker), float(s3)))
for variant in ["local", "s3", "local-zstd", "s3-zstd"]:
    drained = json.load(open(f"{work}/summary-{variant}.json"))["records"]
    assert drained == events, f"ingest-{variant} drained {drained} of {events}"
summary = json.load(open(f"{work}/summary-local.json"))
mb = summary["bytes"] / 1e6
perf = statistics.median(s for s, _ in rows["perf-tool"])
print(f"{events:,} events, {mb:,.0f} MB of record values, {len(rows['perf-tool'])} runs each, medians.\n")
print("Peak RSS of the perf tool is that of one of its two JVMs.\n")
print("| consumer | wall s | each run, s | records/s | MB/s | peak RSS MiB | records/s vs perf tool |")
print("|---|---:|---|---:|---:|---:|---:|")
for name in ["perf-tool", "ingest-local", "ingest-s3", "ingest-local-zstd", "ingest-s3-zstd"]:
    secs = statistics.median(s for s, _ in rows[name])
    each = ", ".join(f"{s:.1f}" for s, _ in rows[name])
    rss = statistics.median(k for _, k in rows[name]) / 1024
    print(f"| {name} | {secs:.1f} | {each} | {events/secs:,.0f} | {mb/secs:,.0f} | {rss:,.0f} | {perf/secs:.2f}x |")
print("\nCPU seconds (user + system) during each measurement, medians: the consumer's own (the")
print("perf tool's two JVMs together), the broker's and the S3 server's. The servers run on the")
print("same two cores, so a consumer's wall time is bounded below by the sum over two.\n")
print("| consumer | own CPU s | broker CPU s | S3 server CPU s | sum / 2 cores, s |")
print("|---|---:|---:|---:|---:|")
for name in ["perf-tool", "ingest-local", "ingest-s3", "ingest-local-zstd", "ingest-s3-zstd"]:
    own, broker, s3 = (statistics.median(c[i] for c in cpu[name]) for i in range(3))
    print(f"| {name} | {own:.1f} | {broker:.1f} | {s3:.1f} | {(own + broker + s3) / 2:.1f} |")
print("\nThe perf tool's own report (one line per topic; excludes JVM start-up), last run:")
print("```")
print("\n".join(open(f"{work}/perf-reports").read().strip().splitlines()[-2:]))
print("```")
EOF
