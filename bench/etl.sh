#!/usr/bin/env bash
# Whole-process wall time and peak RSS of `streamflow etl` against the same gold tables computed
# by PySpark 4 in local[2] (bench/etl_pyspark.py, the seed's engine) and by DuckDB
# (bench/etl_duckdb.py), from the same landing NDJSON, medians of several runs; then a
# cross-engine check that the three engines' rows of every table are the same (sorted CSV
# comparison, bench/etl_compare.py).
#
#   bench/etl.sh [--events N] [--runs R] [--bin PATH] [--memory-limit SIZE]
#                [--spark-memory SIZE] [--engines streamflow,duckdb,pyspark] [--no-compare]
#
#   --events N        events in all, half per topic (default 10000000)
#   --runs R          runs of each engine (default 3)
#   --pyspark-runs R  runs of PySpark (default: R)
#   --duckdb-runs R   runs of DuckDB (default: R)
#   --name NAME       name of streamflow's rows in the results (default streamflow; e.g.
#                     streamflow-dev for a dev build, which the ratios do not use)
#   --bin PATH        the streamflow binary (default: the release build in the cache)
#   --memory-limit    streamflow's --memory-limit, also DuckDB's memory_limit (default 3GiB,
#                     the production profile's value in docs/etl.md)
#   --spark-memory    PySpark driver memory (default 6g)
#   --results DIR     keep results and outputs in DIR across invocations (default: a temporary
#                     directory); the report covers every run recorded there
#   --users U         distinct users of the generator (default 100000)
#   --spacing D       event-time distance between records of one topic (default 20ms: 10M
#                     events span 28 hours, so two dates and every hour of a day)
#
# Landing data is generated once per parameter set (fixed seed and past start time) with
# `streamflow produce` into fresh topics of the local Kafka and `streamflow ingest`, and cached
# under ~/.cache/streamflow/bench/ so reruns skip it. PySpark and DuckDB are pip-installed into a
# venv cached at ~/.cache/streamflow/bench-venv. Prints a Markdown table for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
SF_LOG_TAG=bench-etl

events=10000000
runs=3
bin="$(sf_cache_dir)/target-release/release/streamflow"
memory_limit=3GiB
spark_memory=6g
engines=streamflow,duckdb,pyspark
compare=1
pyspark_runs=
duckdb_runs=
name=streamflow
results_dir=
users=100000
spacing=20ms
while (($#)); do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --pyspark-runs) pyspark_runs="$2"; shift 2 ;;
    --duckdb-runs) duckdb_runs="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --memory-limit) memory_limit="$2"; shift 2 ;;
    --spark-memory) spark_memory="$2"; shift 2 ;;
    --engines) engines="$2"; shift 2 ;;
    --users) users="$2"; shift 2 ;;
    --spacing) spacing="$2"; shift 2 ;;
    --no-compare) compare=0; shift ;;
    --results) results_dir="$2"; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
[[ -x "$bin" ]] || die "no streamflow binary at $bin (pass --bin PATH)"
per_topic=$((events / 2))
pyspark_runs="${pyspark_runs:-$runs}"
duckdb_runs="${duckdb_runs:-$runs}"
# Fixed generator parameters: the same parameters give the same events.
seed=7
start=2026-11-01T00:00:00Z

# Python with PySpark 4 and DuckDB, installed once.
venv="$(sf_cache_dir)/bench-venv"
if ! "$venv/bin/python" -c 'import duckdb, pyspark; assert pyspark.__version__.startswith("4.")' 2>/dev/null; then
  log "installing PySpark 4 and DuckDB into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'pyspark>=4,<5' duckdb
fi
py="$venv/bin/python"

# The interval covering every generated event: from the start date to the day after the last.
interval="$("$py" - "$start" "$per_topic" "$spacing" <<'EOF'
import datetime as dt, sys
start = dt.datetime.fromisoformat(sys.argv[1].replace("Z", "+00:00"))
unit = {"ms": 1, "s": 1000, "m": 60000}
number = sys.argv[3].rstrip("ms")
spacing_ms = int(number) * unit[sys.argv[3][len(number):]]
last = start + dt.timedelta(milliseconds=int(sys.argv[2]) * spacing_ms)
end = dt.datetime.combine(last.date() + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
day0 = dt.datetime.combine(start.date(), dt.time(), dt.timezone.utc)
print(f"{day0:%Y-%m-%dT%H:%M:%SZ}/{end:%Y-%m-%dT%H:%M:%SZ}")
EOF
)"

# Landing data, cached by its parameters.
key="events${events}-seed${seed}-users${users}-spacing${spacing}-start${start//:/}"
landing="$(sf_cache_dir)/bench/etl-landing/$key"
if [[ ! -f "$landing/.complete" ]]; then
  started_kafka=0
  if ! scripts/kafka.sh status >/dev/null 2>&1; then scripts/kafka.sh start; started_kafka=1; fi
  tag="bench_etl_${key//[^A-Za-z0-9]/_}"
  topics=("${tag}_user_events" "${tag}_transaction_events")
  # Which schema each topic carries (the names say nothing to the command).
  schema_flags=(--user-events-topic "${topics[0]}" --transaction-events-topic "${topics[1]}")
  for t in "${topics[@]}"; do scripts/kafka.sh fresh-topic "$t" 6; done
  log "producing $events events (seed $seed, from $start every $spacing, $users users)"
  "$bin" produce "${schema_flags[@]}" --count "$per_topic" --seed "$seed" \
    --start "$start" --spacing "$spacing" --users "$users" >&2
  rm -rf "$landing.tmp" && mkdir -p "$landing.tmp"
  log "ingesting to $landing"
  "$bin" ingest "${schema_flags[@]}" --landing "$landing.tmp" \
    --group "bench-etl-$RANDOM$RANDOM" --max-duration 60m >"$landing.tmp.summary.json"
  # The ETL reads the landing zone's topic directories by their production names.
  mv "$landing.tmp/${topics[0]}" "$landing.tmp/user_events"
  mv "$landing.tmp/${topics[1]}" "$landing.tmp/transaction_events"
  mv "$landing.tmp.summary.json" "$landing.tmp/ingest-summary.json"
  touch "$landing.tmp/.complete"
  rm -rf "$landing" && mv "$landing.tmp" "$landing"
  for t in "${topics[@]}"; do
    scripts/kafka.sh topics --delete --if-exists --topic "$t" >/dev/null 2>&1 || true
  done
  if ((started_kafka)); then scripts/kafka.sh stop; fi
fi
log "landing data: $landing ($(du -sh "$landing" | cut -f1)), interval $interval"

# Outputs and spill files go on the cache's disk, not a tmpfs: at 10M events each engine writes
# about 6 GB of CSV. With --results DIR they stay there between invocations, with the results,
# so engines can be run at different times (PySpark first, ours when its build is done) and
# compared and reported together.
mkdir -p "$(sf_cache_dir)/bench"
if [[ -n "$results_dir" ]]; then
  work="$results_dir"
  mkdir -p "$work"
  touch "$work/results"
else
  work="$(mktemp -d "$(sf_cache_dir)/bench/etl-work.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  : >"$work/results"
fi

# measure NAME CMD... : runs CMD, appends "NAME wall_s peak_kib" (whole process tree) to results.
measure() {
  local name="$1"; shift
  rm -f "$work/one"
  "$py" bench/measure.py "$work/one" -- "$@" >"$work/out" 2>"$work/err" || {
    tail -n 40 "$work/err" >&2; die "$name failed"; }
  echo "$name $(cat "$work/one")" >>"$work/results"
  log "$name: $(cat "$work/one") (wall s, peak RSS KiB)"
}

# One engine at a time, so that at most two engines' outputs are on disk at once: ours, then
# each peer, compared with ours and deleted (a peer's output waits for ours under --results).
has() { [[ ",$engines," == *",$1,"* ]]; }
gold="$work/gold-streamflow"
if has streamflow; then
  for i in $(seq 1 "$runs"); do
    rm -rf "$gold"
    measure "$name" "$bin" etl --interval "$interval" --landing "$landing" --gold "$gold" \
      --profile production --memory-limit "$memory_limit" --target-partitions 2 \
      --spill-dir "$work/spill" --summary-file "$work/summary.json"
  done
  # Every partition's manifest names its version, a hash of its files' bytes: a later run (say
  # the release build, after a dev build's output was compared with the peers) must write the
  # same bytes.
  "$py" - "$gold" >"$work/versions.new" <<'EOF'
import glob, json, os, sys
for m in sorted(glob.glob(os.path.join(sys.argv[1], "*", "date=*", "_SUCCESS"))):
    print(os.path.relpath(os.path.dirname(m), sys.argv[1]), json.load(open(m))["version"])
EOF
  if [[ -f "$work/versions" ]] && ! cmp -s "$work/versions" "$work/versions.new"; then
    diff "$work/versions" "$work/versions.new" >&2 || true
    die "$name wrote other bytes than the earlier streamflow run recorded in $work/versions"
  fi
  mv "$work/versions.new" "$work/versions"
fi
for peer in pyspark duckdb; do
  out="$work/gold-$peer"
  if has "$peer"; then
    n="$duckdb_runs"
    if [[ "$peer" == pyspark ]]; then n="$pyspark_runs"; fi
    for i in $(seq 1 "$n"); do
      rm -rf "$out"
      if [[ "$peer" == duckdb ]]; then
        measure duckdb "$py" bench/etl_duckdb.py --landing "$landing" --interval "$interval" \
          --out "$out" --threads 2 --memory-limit "$memory_limit"
      else
        measure pyspark env PYSPARK_PYTHON="$py" "$py" bench/etl_pyspark.py --landing "$landing" \
          --interval "$interval" --out "$out" --driver-memory "$spark_memory"
      fi
    done
  fi
  if ((compare)) && [[ -d "$gold" && -d "$out" ]]; then
    log "comparing the gold tables of streamflow and $peer"
    "$py" bench/etl_compare.py --gold "$gold" --peer "$out" --peer-name "$peer" --tmp "$work" \
      || die "streamflow and $peer disagree (rows above; outputs kept in $work)"
    echo "$peer" >>"$work/compared"
    rm -rf "$out"
  elif [[ -z "$results_dir" ]]; then
    rm -rf "$out"
  fi
done

[[ -s "$work/results" ]] || exit 0
"$py" bench/etl_report.py "$work" "$events" "$landing" "$memory_limit" "$interval"
