"""Entropy over a Parquet pool on Ray, next to the in-process streaming miner.

Run::

    python benches/bench_ray.py [--rows 10500000] [--classes 100] [--files 8] [--dir DIR] [--keep]

Writes a folder of Parquet files (an ``id``, a ``split`` and a ``fixed_size_list<float>[C]``
``logits`` column; row groups of 131,072 rows; at the defaults 4.2 GB of float32 logits),
then times, on the same files:

* **in process**: ``px.EntropyMiner(1000).mine(folder)`` (pickaxe's streaming reader);
* **Ray, path**: ``pickaxe.ray.mine(folder, miner)``: one Ray task per row group, on a
  local cluster of ``ray.init(num_cpus=<cores>)``;
* **Ray, read_parquet**: ``pickaxe.ray.mine(ray.data.read_parquet(folder), miner)``;
* **Ray, read_parquet V1**: the same with ``DataContext.use_datasource_v2 = False``
  (Ray >= 2.5x reads Parquet through "DataSource V2", whose file listing starts
  FooterReader actors on every run: seconds of fixed cost on a small machine).

Each Ray case runs once untimed on a small file first (workers started). It prints rows
per second, whether the picks equal the in-process ones, the load average (1, 5, 15 min)
after each timed run (the machine may be shared), and the nodes a billion-row pool needs
at the Ray rate. The generated files are deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import shutil
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import describe  # noqa: E402
from parquet_pools import write_logits_file  # noqa: E402

ROW_GROUP = 131_072
CHUNK_ROWS = 262_144


def write_pool(folder: str, rows: int, classes: int, files: int) -> None:
    rng = np.random.default_rng(0)
    per_file = math.ceil(rows / files)
    for f, start in enumerate(range(0, rows, per_file)):
        stop = min(rows, start + per_file)
        path = os.path.join(folder, f"part-{f:04d}.parquet")
        write_logits_file(path, rng, start, stop, classes, CHUNK_ROWS, unlabeled=0.7, row_group=ROW_GROUP)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_500_000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--routes", default="path,read_parquet,read_parquet_v1",
                    help="comma-separated: path, read_parquet, read_parquet_v1")
    args = ap.parse_args()
    print(f"load average before: {load()}, {os.cpu_count()} cores")
    print(describe())

    import ray

    import pickaxe as px
    import pickaxe.ray as pxray

    base = args.dir or tempfile.mkdtemp(prefix="pickaxe-ray-bench-")
    folder = os.path.join(base, "pool")
    small = os.path.join(base, "small")
    try:
        for d in (folder, small):
            os.makedirs(d, exist_ok=True)
        t = time.perf_counter()
        write_pool(folder, args.rows, args.classes, args.files)
        write_pool(small, 50_000, args.classes, 2)
        size_gb = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) / 1e9
        print(f"wrote {args.rows:,} rows x {args.classes} float32 logits, {args.files} files, {size_gb:.2f} GB "
              f"({time.perf_counter() - t:.1f} s)")
        miner = px.EntropyMiner(args.size)

        t = time.perf_counter()
        want = miner.mine(folder)
        local_s = time.perf_counter() - t
        rows = args.rows
        print(f"in process (px.EntropyMiner({args.size}).mine(folder)): {local_s:.2f} s, {rows / local_s:,.0f} rows/s, "
              f"load average {load()}")

        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            results = {}
            def read_parquet(v2: bool):
                def make(p: str):
                    ctx = ray.data.DataContext.get_current()
                    if hasattr(ctx, "use_datasource_v2"):
                        ctx.use_datasource_v2 = v2
                    return ray.data.read_parquet(p)

                return make

            routes = {
                "path": ("Ray, path", lambda p: p),
                "read_parquet": ("Ray, read_parquet", read_parquet(True)),
                "read_parquet_v1": ("Ray, read_parquet V1", read_parquet(False)),
            }
            for name, make in [routes[r] for r in args.routes.split(",")]:
                pxray.mine(make(small), miner)  # workers up
                t = time.perf_counter()
                got = pxray.mine(make(folder), miner)
                s = time.perf_counter() - t
                same = np.array_equal(got.ids, want.ids) and np.allclose(got.scores, want.scores)
                results[name] = rows / s
                print(f"{name}: {s:.2f} s, {rows / s:,.0f} rows/s, same picks as in process: {same}, "
                      f"load average {load()}")
        finally:
            ray.shutdown()

        rate = max(results.values())
        node = f"{args.cpus}-core node"
        print(f"\nbillion-row pool at the Ray rate ({rate:,.0f} rows/s per {node}):")
        one = 1e9 / rate
        print(f"  one node: 1e9 / {rate:,.0f} = {one:,.0f} s = {one / 3600:.2f} h")
        for label, budget in [("1 hour", 3600), ("10 minutes", 600)]:
            need = math.ceil(1e9 / (rate * budget))
            print(f"  within {label}: ceil(1e9 / ({rate:,.0f} x {budget})) = {need} nodes "
                  f"(scoring only; assumes storage feeds every node at this rate)")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
