"""Cross-engine check for bench/etl.sh: the rows of every gold table written by `streamflow etl`
must equal those of a peer engine (bench/etl_duckdb.py or bench/etl_pyspark.py), compared as
sorted CSV text.

    python bench/etl_compare.py --gold DIR --peer DIR --peer-name NAME [--tmp DIR]

Ours: the files each partition's `_SUCCESS` manifest lists, buckets concatenated, headers
dropped. The peer's: every `*.csv` under `<peer>/<table>.csv` (DuckDB, one file) or
`<peer>/<table>/` (Spark, part files), headerless. Both sides are in the gold text format; the
one normalisation is that averages (the last column of user_running_spend and hourly_revenue)
are rounded half-up to 4 decimals on both sides: DataFusion writes AVG of DECIMAL(18,2) at 6
decimals, truncated (x.xx6666 for x.xx6666…), Spark rounds to 6 (x.xx6667) and DuckDB averages
in DOUBLE. The exact averages have cent fractions of 0, 1/2, 1/3 or 2/3, so 4 decimals never
hide a real difference and never meet a half-way tie.

Rows are sorted with `LC_ALL=C sort` and compared (by row count and SHA-256 of the sorted text,
so that nothing large is kept on disk); on any difference the sorted rows are written out and the
rows only one side has are printed (up to 20 per table) and the exit status is 1.
"""

import argparse
import decimal
import glob
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading

TABLES = [
    "user_activity",
    "transactions",
    "transaction_items",
    "transactions_enriched",
    "orphan_transactions",
    "user_daily_spend",
    "active_non_buyers",
    "user_running_spend",
    "hourly_revenue",
    "category_sales",
    "user_sets",
]
AVERAGE_LAST_COLUMN = {"user_running_spend", "hourly_revenue"}
# Tables with DOUBLE columns: a negative zero (`-0.0`, which the generator writes for a longitude
# that rounds to zero and ours keeps) is written as `0.0` on both sides: DuckDB's JSON reader
# drops the sign, and -0.0 = 0.0.
DOUBLE_COLUMNS = {"user_activity"}
SHOWN = 20


def ours(gold: str, table: str) -> list[str]:
    files = []
    for manifest in sorted(glob.glob(os.path.join(gold, table, "date=*", "_SUCCESS"))):
        with open(manifest) as f:
            listed = json.load(f)["files"]
        files += [os.path.join(os.path.dirname(manifest), entry["path"]) for entry in listed]
    if not files:
        raise SystemExit(f"{table}: no committed partition under {gold}")
    return files


def peers(peer: str, table: str) -> list[str]:
    single = os.path.join(peer, f"{table}.csv")
    if os.path.isfile(single):
        return [single]
    files = sorted(glob.glob(os.path.join(peer, table, "*.csv")))
    if not os.path.isdir(os.path.join(peer, table)):
        raise SystemExit(f"{table}: nothing written under {peer}")
    return files


def round_last(line: str) -> str:
    head, _, last = line.rpartition(",")
    if last == "":
        return line
    value = decimal.Decimal(last).quantize(decimal.Decimal("0.0001"), rounding=decimal.ROUND_HALF_UP)
    return f"{head},{value}"


SORT = ["sort", "-S", "4G"]


def write_sorted(lines, path: str, tmp: str) -> int:
    """Sorts `lines` (an iterable of str without newline) into `path`; returns the count."""
    env = dict(os.environ, LC_ALL="C")
    with open(path, "wb") as out:
        sort = subprocess.Popen(
            [*SORT, "-T", tmp], stdin=subprocess.PIPE, stdout=out, env=env
        )
        assert sort.stdin is not None
        count = 0
        for line in lines:
            sort.stdin.write(line.encode() + b"\n")
            count += 1
        sort.stdin.close()
        if sort.wait() != 0:
            raise SystemExit("sort failed")
    return count


def digest(files: list[str], tmp: str, skip_header: bool, average: bool, doubles: bool) -> tuple[int, str]:
    """Rows and SHA-256 of the sorted rows, without keeping them on disk (at 10M events a
    table's text is up to 2 GB); the rows are written out only when two digests differ."""
    fifo = os.path.join(tmp, "sorted.fifo")
    os.mkfifo(fifo)
    try:
        result = {}

        def consume():
            h, n = hashlib.sha256(), 0
            with open(fifo, "rb") as f:
                for line in f:
                    h.update(line)
                    n += 1
            result["v"] = (n, h.hexdigest())

        reader = threading.Thread(target=consume)
        reader.start()
        sorted_files(files, fifo, tmp, skip_header, average, doubles)
        reader.join()
        return result["v"]
    finally:
        os.remove(fifo)


def sorted_files(files: list[str], path: str, tmp: str, skip_header: bool, average: bool, doubles: bool) -> int:
    """Sorts the rows of `files` into `path`; the fast path (no rounding) stays in sort."""
    env = dict(os.environ, LC_ALL="C")
    if not average:
        program = "FNR > 1" if skip_header else "1"
        if doubles:
            program += ' { for (i = 1; i <= NF; i++) if ($i == "-0.0") $i = "0.0"; print }'
        with open(path, "wb") as out:
            awk = subprocess.Popen(["awk", "-F,", "-v", "OFS=,", program, *files], stdout=subprocess.PIPE)
            subprocess.run([*SORT, "-T", tmp], stdin=awk.stdout, stdout=out, env=env, check=True)
            if awk.wait() != 0:
                raise SystemExit(f"cannot read {files}")
        return 0 if path.endswith(".fifo") else int(
            subprocess.run(["wc", "-l", path], capture_output=True, text=True, check=True).stdout.split()[0])

    def lines():
        for name in files:
            with open(name) as f:
                if skip_header:
                    next(f, None)
                for line in f:
                    yield round_last(line.rstrip("\n"))

    return write_sorted(lines(), path, tmp)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gold", required=True)
    parser.add_argument("--peer", required=True)
    parser.add_argument("--peer-name", required=True)
    parser.add_argument("--tmp", default=None)
    args = parser.parse_args()

    failed = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for table in TABLES:
            average = table in AVERAGE_LAST_COLUMN
            a, b = os.path.join(tmp, "ours"), os.path.join(tmp, "peer")
            doubles = table in DOUBLE_COLUMNS
            n_ours, d_ours = digest(ours(args.gold, table), tmp, True, average, doubles)
            n_peer, d_peer = digest(peers(args.peer, table), tmp, False, average, doubles)
            same = (n_ours, d_ours) == (n_peer, d_peer)
            print(f"{table}: streamflow {n_ours} rows, {args.peer_name} {n_peer} rows: "
                  f"{'identical' if same else 'DIFFERENT'}", file=sys.stderr)
            if not same:
                failed.append(table)
                sorted_files(ours(args.gold, table), a, tmp, True, average, doubles)
                sorted_files(peers(args.peer, table), b, tmp, False, average, doubles)
                diff = subprocess.run(
                    ["comm", "-3", a, b], capture_output=True, text=True, env=dict(os.environ, LC_ALL="C")
                ).stdout.splitlines()
                only_ours = [l for l in diff if not l.startswith("\t")]
                only_peer = [l.lstrip("\t") for l in diff if l.startswith("\t")]
                print(f"  rows only streamflow has ({len(only_ours)}):", file=sys.stderr)
                for line in only_ours[:SHOWN]:
                    print(f"    {line}", file=sys.stderr)
                print(f"  rows only {args.peer_name} has ({len(only_peer)}):", file=sys.stderr)
                for line in only_peer[:SHOWN]:
                    print(f"    {line}", file=sys.stderr)
                os.remove(a)
                os.remove(b)
    if failed:
        print(f"streamflow and {args.peer_name} differ in: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)
    print(f"streamflow and {args.peer_name}: every table identical", file=sys.stderr)


if __name__ == "__main__":
    main()
