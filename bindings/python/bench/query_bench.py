"""Benchmark (issue 7 item 5): 1M rows × 10 columns from the lake into a pandas DataFrame through
the SDK (`query()`: NATS request → the query service's Arrow IPC chunks → pyarrow → pandas),
next to DuckDB's own Python package reading the same lake locally in the same run. Target: ≤ 3×.

    python bindings/python/bench/query_bench.py [--quick] [--out DIR]   # JSON → DIR/py_query.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import Platform, open_lake_with_duckdb  # noqa: E402  (the same real `lt up` the tests use)

import duckdb  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true", help="100k rows, 1 round (smoke)")
parser.add_argument("--out", default=str(Path(__file__).resolve().parents[3] / "bench" / "results"))
args = parser.parse_args()
ROWS = 100_000 if args.quick else 1_000_000
ROUNDS = 1 if args.quick else 3
SQL = (
    "SELECT device_id, channel, cycle, step, voltage, current, temperature, capacity, soc, seq "
    f"FROM lake.battery_samples LIMIT {ROWS}"
)


def log(s: str) -> None:
    print(f"[bench py] {s}", flush=True)


log(f"filling a lake with {ROWS:,} battery samples through lt up (UDP → collector → JetStream → flow)")
t0 = time.monotonic()
p = Platform(samples=ROWS, sim={"--rate": "40000", "--devices": "16", "--channels": "64"})
log(f"lake ready in {time.monotonic() - t0:.1f} s")
ours = []
try:
    p.client.query(SQL)  # warm-up (DuckDB caches, connection)
    for r in range(ROUNDS):
        t = time.perf_counter()
        df = p.client.query(SQL)
        ours.append(time.perf_counter() - t)
        assert df.shape == (ROWS, 10), df.shape
        log(f"round {r}: langtian query() → DataFrame {ours[-1] * 1000:8.1f} ms ({df.memory_usage(deep=True).sum() / 1e6:.0f} MB in pandas)")
finally:
    p.stop()

con = open_lake_with_duckdb(p.lake_dir)
# Two local reads; the faster one is the baseline: DuckDB's own .df(), and DuckDB → Arrow →
# pandas the way the SDK converts.
reads = {
    "duckdb .df()": lambda: con.execute(SQL).df(),
    "duckdb .arrow().to_pandas(split_blocks=True)": lambda: con.execute(SQL).arrow().read_all().to_pandas(split_blocks=True),
}
local_by = {}
for what, read in reads.items():
    read()  # warm-up
    times = []
    for r in range(ROUNDS):
        t = time.perf_counter()
        ldf = read()
        times.append(time.perf_counter() - t)
        assert ldf.shape == (ROWS, 10)
        log(f"round {r}: {what} (local, same lake) {times[-1] * 1000:8.1f} ms")
    local_by[what] = statistics.median(times)
best = min(local_by, key=local_by.get)

o, l = statistics.median(ours), local_by[best]
ratio = o / l
log(f"median: langtian {o * 1000:.1f} ms vs local DuckDB {l * 1000:.1f} ms → {ratio:.2f}× (target ≤ 3×)")
record = {
    "bench": "py_query",
    "case": f"query_to_dataframe_{ROWS}x10",
    "unit": "s",
    "ours": round(o, 4),
    "baseline": round(l, 4),
    "baseline_what": f"duckdb Python package reading the same DuckLake locally, the faster of two reads: {best}",
    "ratio": round(ratio, 3),
    "target": 3.0,
    "meets": ratio <= 3.0,
    "params": {"rows": ROWS, "columns": 10, "rounds": ROUNDS, "sql": SQL, "quick": args.quick,
               "duckdb": duckdb.__version__, "python": sys.version.split()[0],
               "local_reads_s": {k: round(v, 4) for k, v in local_by.items()}},
    "host": {"cores": os.cpu_count(), "load_avg": round(os.getloadavg()[0], 2)},
}
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
(out / "py_query.json").write_text(json.dumps([record], indent=2) + "\n")
log(f"wrote {out / 'py_query.json'}")
