"""Mining a Parquet pool against pyarrow's own decoding of the same columns.

Run::

    python benches/bench_parquet_mining.py [--rows 2000000] [--classes 100] [--path /tmp/px_parquet_2m.parquet] [--repeats 5] [--threads 2]

Writes (once, kept at ``--path``) a snappy Parquet pool of float32 logits (a
``fixed_size_list<float>[C]`` column), an ``id`` (int64) and a ``split`` (string, half
"unlabeled"), in row groups of 250,000 rows. Then, interleaved (in a shuffled order each
round), ``--repeats`` times each:

* **pickaxe**: ``px.EntropyMiner(500).mine(path)`` (reads ``logits`` and ``id``), row
  groups decoded on ``--threads`` reader threads while the caller scores;
* **pickaxe, one reader**: one reader thread decoding ahead of the scoring;
* **pickaxe, no reader**: decoding and scoring one after the other on one thread;
* **pickaxe, query**: ``query="split = 'unlabeled'"`` (half the rows);
* **pyarrow decode**: ``pq.ParquetFile(path).iter_batches(columns=["logits", "id"],
  use_threads=False)`` to the end, one thread: the floor one core pays to read these
  columns;
* **kernel in memory**: the same miner on ``{"logits": array}`` already in memory.

Each line is the median wall time and the median CPU time of the process during the
run (CPU / wall is the cores used). The machine may be shared: CPU time is the less noisy
measure of work, wall time of what a user waits; the load average is printed before and
after. Kernel threads and reader threads: ``--threads``. Last, a fresh process mines the
file with and without the query and says whether pandas was imported.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import cpu_model  # noqa: E402
from parquet_pools import write_logits_file  # noqa: E402

ROW_GROUP = 250_000


def write_pool(path: str, rows: int, classes: int) -> None:
    write_logits_file(path, np.random.default_rng(0), 0, rows, classes, ROW_GROUP, unlabeled=0.5)


def timed(fn) -> tuple[float, float, object]:
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--path", default="/tmp/px_parquet_2m.parquet")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    if not os.path.exists(args.path):
        t0 = time.perf_counter()
        write_pool(args.path, args.rows, args.classes)
        print(f"wrote {args.path} ({os.path.getsize(args.path) / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    import pyarrow.parquet as pq

    import pickaxe as px
    import pickaxe.pools.parquet as parquet_mod
    from pickaxe.pools import open_pool

    px.set_num_threads(args.threads)
    query = "split = 'unlabeled'"
    logits = open_pool(args.path).read(["logits"]).columns["logits"]
    matching = open_pool(args.path, query=query).read(["id"])
    kept = matching.source_rows(np.arange(matching.n_rows))  # the query's rows, in order
    kept_logits = logits[kept]
    n = len(logits)

    def decode(**options) -> object:
        def run() -> int:
            pf = pq.ParquetFile(args.path, **options)
            rows = 0
            for b in pf.iter_batches(batch_size=65536, columns=["logits", "id"], use_threads=False):
                rows += b.num_rows
            return rows
        return run

    def readers(count) -> object:
        def run() -> object:
            parquet_mod.READERS = count
            try:
                return px.EntropyMiner(500).mine(args.path)
            finally:
                parquet_mod.READERS = None
        return run

    main_run = f"pickaxe EntropyMiner(500).mine(path), {args.threads} readers"
    query_run = f"pickaxe, query {query} (half), {args.threads} readers"
    decode_run = "pyarrow iter_batches(logits, id), 1 thread"
    runs = {
        main_run: lambda: px.EntropyMiner(500).mine(args.path),
        "pickaxe, one reader thread (decode ahead of scoring)": readers(1),
        "pickaxe, no reader thread (decode then score)": readers(0),
        query_run: lambda: px.EntropyMiner(500, query=query).mine(args.path),
        decode_run: decode(),
        "pyarrow, the same through a 1 MiB buffer (pickaxe's reads)": decode(buffer_size=1 << 20, pre_buffer=False),
        "kernel on the in-memory array": lambda: px.EntropyMiner(500).mine({"logits": logits}),
        "kernel on the in-memory array, query's rows": lambda: px.EntropyMiner(500).mine({"logits": kept_logits}),
    }
    times: dict[str, list] = {k: [] for k in runs}
    outs: dict[str, object] = {}
    for name, fn in runs.items():  # warm-up: imports, page cache
        outs[name] = fn()
    load_before = os.getloadavg()[0]
    for r in range(args.repeats):
        order = list(runs)
        random.Random(r).shuffle(order)  # each run after others in turn: no fixed neighbour
        for name in order:
            wall, cpu, _ = timed(runs[name])
            times[name].append((wall, cpu))
    load_after = os.getloadavg()[0]

    same = all(list(outs[k].ids) == list(outs["kernel on the in-memory array"].ids) for k in list(runs)[:3])
    same_query = list(outs[query_run].ids) == list(kept[outs["kernel on the in-memory array, query's rows"].ids])
    info = px.build_info()
    print(f"pool: {n:,} rows x {args.classes} float32 logits, {args.path}; machine {cpu_model()}, "
          f"{os.cpu_count()} CPUs; SIMD {info.get('simd', '?')}; kernel and reader threads {args.threads}; "
          f"load average {load_before:.1f} before, {load_after:.1f} after; medians of {args.repeats}")
    base = statistics.median(w for w, _ in times[decode_run])
    base_cpu = statistics.median(c for _, c in times[decode_run])
    print("| run | wall s | CPU s | cores | wall / pyarrow decode | CPU / pyarrow decode |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, ts in times.items():
        wall = statistics.median(w for w, _ in ts)
        cpu = statistics.median(c for _, c in ts)
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {cpu / wall:.2f} | {wall / base:.2f} | {cpu / base_cpu:.2f} |")
    plain = statistics.median(w for w, _ in times[main_run])
    queried = statistics.median(w for w, _ in times[query_run])
    print(f"query / plain (wall, medians): {queried / plain:.2f}")
    print(f"streamed picks equal the in-memory picks: {same}; with the query: {same_query}")
    for q in (None, query):
        print(f"a fresh process mining the file {'with' if q else 'without'} a query imports pandas: {pandas_imported(args.path, q)}")
    return 0


def pandas_imported(path: str, query) -> bool:
    code = (
        "import sys, pickaxe as px\n"
        f"px.EntropyMiner(5, query={query!r}).mine({path!r})\n"
        "print('pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    return out.stdout.strip() == "True"


if __name__ == "__main__":
    raise SystemExit(main())
