"""Mine a Parquet pool larger than the memory budget in one streaming pass.

Run::

    python benches/bench_pool_stream.py [--gb 4.2] [--classes 100] [--dir DIR] [--keep]

Writes a Parquet file of float32 logits (a ``fixed_size_list<float>[C]`` column, plus an
``id`` and a ``split`` column) of about ``--gb`` GB of logits, then, each in a fresh
subprocess so that its peak resident memory (``ru_maxrss``) is its own:

* **streaming**: ``px.EntropyMiner(1000).mine(path)``: record batches of 65,536 rows,
  a bounded top-k between them;
* **streaming with a query**: the same with ``query="split = 'unlabeled'"``;
* **in memory**: the whole logits column read into one numpy array (pickaxe's pool
  reader), then the same miner on ``{"logits": array}``.

It prints the wall time and peak RSS of each, and whether the streaming picks equal the
in-memory picks. Target (issue #4): at least 4 GB of logits mined with peak RSS under 1 GB
and the same picks as in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import describe  # noqa: E402
from parquet_pools import write_logits_file  # noqa: E402

CHUNK_ROWS = 250_000

CHILD = r"""
import json, resource, sys, time
import numpy as np
import pickaxe as px
path, mode = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
if mode == "memory":
    from pickaxe.pools import open_pool
    logits = open_pool(path).read(["logits"]).columns["logits"]
    sel = px.EntropyMiner(1000).mine({"logits": logits})
else:
    query = "split = 'unlabeled'" if mode == "query" else None
    sel = px.EntropyMiner(1000, query=query).mine(path)
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": dt, "peak": peak, "ids": [int(i) for i in sel.ids]}))
"""


def write_pool(path: str, rows: int, classes: int) -> None:
    write_logits_file(path, np.random.default_rng(0), 0, rows, classes, CHUNK_ROWS, unlabeled=0.7)


def run_child(path: str, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, path, mode], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{out.stderr}")
    return json.loads(out.stdout)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gb", type=float, default=4.2, help="GB of float32 logits to write")
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--dir", default=None, help="where to write the pool (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the Parquet file")
    args = ap.parse_args(argv)

    rows = int(args.gb * 1e9 / (4 * args.classes))
    d = args.dir or tempfile.mkdtemp(prefix="pickaxe-stream-")
    path = os.path.join(d, "pool.parquet")
    if not os.path.exists(path):
        t0 = time.perf_counter()
        write_pool(path, rows, args.classes)
        print(f"wrote {rows:,} x {args.classes} float32 logits ({rows * args.classes * 4 / 1e9:.2f} GB of logits, "
              f"file {os.path.getsize(path) / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    results = {mode: run_child(path, mode) for mode in ("stream", "query", "memory")}
    gib = 1024**3
    print("| run | seconds | peak RSS GiB | rows/s |")
    print("|---|---:|---:|---:|")
    for mode, label in (("stream", "streaming"), ("query", "streaming, query split = 'unlabeled'"), ("memory", "in memory (numpy array)")):
        r = results[mode]
        print(f"| {label} | {r['seconds']:.1f} | {r['peak'] / gib:.2f} | {rows / r['seconds']:,.0f} |")
    same = results["stream"]["ids"] == results["memory"]["ids"]
    print()
    print(f"- pool: {rows:,} rows x {args.classes} classes, {rows * args.classes * 4 / 1e9:.2f} GB of float32 logits")
    print(f"- streaming picks equal the in-memory picks: {same}")
    print(f"- {describe()}")
    ok = same and results["stream"]["peak"] < 1e9 and rows * args.classes * 4 >= 4e9
    print(f"- target (>= 4 GB, peak RSS < 1 GB, same picks): {'PASS' if ok else 'FAIL'}")
    if not args.keep and args.dir is None:
        os.remove(path)
        os.rmdir(d)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
