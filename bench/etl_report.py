"""Prints bench/etl.sh's Markdown table from its results file (one "engine wall_s peak_kib" line
per run): medians, streamflow's speed-up over each engine, peak RSS against the memory limit.

    python bench/etl_report.py WORK_DIR EVENTS LANDING_DIR MEMORY_LIMIT INTERVAL
"""

import json
import os
import statistics
import sys

UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def main() -> None:
    work, events, landing, memory_limit, interval = sys.argv[1:]
    rows: dict[str, list[tuple[float, int]]] = {}
    for line in open(os.path.join(work, "results")):
        name, secs, kib = line.split()
        rows.setdefault(name, []).append((float(secs), int(kib)))
    limit = next(
        (int(memory_limit[: -len(u)]) * b for u, b in UNITS.items() if memory_limit.endswith(u)), None
    )
    ingest = json.load(open(os.path.join(landing, "ingest-summary.json")))
    print(
        f"{int(events):,} events ({ingest['records']:,} drained, {ingest['bytes'] / 1e6:,.1f} MB of "
        f"NDJSON), interval {interval}; medians of the runs listed."
    )
    summary = os.path.join(work, "summary.json")
    if os.path.exists(summary):
        s = json.load(open(summary))
        print(
            f"streamflow wrote {s['rows']:,} rows in {s['files']} files ({s['bytes'] / 1e6:,.0f} MB) "
            f"over {len(s['tables'])} tables."
        )
    print(
        f"\nstreamflow ran with --profile production --memory-limit {memory_limit} --target-partitions 2; "
        "peak RSS is that of the whole process tree (PySpark: the Python driver and its JVM).\n"
    )
    compared = os.path.join(work, "compared")
    if os.path.exists(compared):
        peers = sorted(set(open(compared).read().split()))
        print(f"Cross-engine check: every gold table of streamflow has the same rows as {' and '.join(peers)}'s.\n")
    # Ratios are against the release build ("streamflow") when it ran, else a dev build's rows.
    base = "streamflow" if "streamflow" in rows else next((n for n in rows if n.startswith("streamflow")), None)
    ours = statistics.median(s for s, _ in rows[base]) if base else None
    if base:
        print(f"Ratios are wall times over {base}'s (above 1: {base} is faster).\n")
    print("| engine | wall s, median (each run) | peak RSS MiB, median | wall / ours | peak RSS / memory limit |")
    print("|---|---:|---:|---:|---:|")
    names = [n for n in rows if n.startswith("streamflow")] + [n for n in ("duckdb", "pyspark") if n in rows]
    for name in names:
        secs = statistics.median(s for s, _ in rows[name])
        rss = statistics.median(k for _, k in rows[name]) * 1024
        each = ", ".join(f"{s:.1f}" for s, _ in rows[name])
        ratio = f"{secs / ours:.2f}x" if ours else "-"
        vs_limit = f"{rss / limit:.2f}" if limit else "-"
        print(f"| {name} | {secs:.1f} ({each}) | {rss / (1 << 20):,.0f} | {ratio} | {vs_limit} |")


if __name__ == "__main__":
    main()
