"""Mining a Parquet pool against pyarrow's own decoding of the same columns.

Run::

    python benches/bench_parquet_mining.py [--rows 2000000] [--classes 100] [--path /tmp/px_parquet_2m.parquet] [--repeats 5]

Writes (once, kept at ``--path``) a snappy Parquet pool of float32 logits (a
``fixed_size_list<float>[C]`` column), an ``id`` (int64) and a ``split`` (string, half
"unlabeled"), in row groups of 250,000 rows. Then, interleaved, ``--repeats`` times each:

* **pickaxe**: ``px.EntropyMiner(500).mine(path)`` (reads ``logits`` and ``id``);
* **pickaxe, no reader thread**: the same with the reader thread off (decoding and
  scoring one after the other, as before it), to show the overlap;
* **pickaxe, query**: the same with ``query="split = 'unlabeled'"`` (half the rows);
* **pyarrow decode**: ``pq.ParquetFile(path).iter_batches(columns=["logits", "id"],
  use_threads=False)`` to the end, one thread: the floor a reader of these columns pays;
* **kernel in memory**: the same miner on ``{"logits": array}`` already in memory.

Each line is the median wall time and the median CPU time of the process during the
run (CPU / wall is the cores used). The machine may be shared: CPU time is the less noisy
measure of work, wall time of what a user waits. Kernel threads: ``--threads`` (default 2).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

ROW_GROUP = 250_000


def write_pool(path: str, rows: int, classes: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    schema = pa.schema([("id", pa.int64()), ("split", pa.string()), ("logits", pa.list_(pa.float32(), classes))])
    with pq.ParquetWriter(path, schema, compression="snappy") as w:
        for start in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - start)
            logits = rng.normal(size=(n, classes)).astype(np.float32)
            logits[np.arange(n), rng.integers(classes, size=n)] += rng.uniform(0, 12, size=n).astype(np.float32)
            split = np.where(rng.random(n) < 0.5, "unlabeled", "train")
            table = pa.table(
                {
                    "id": pa.array(np.arange(start, start + n)),
                    "split": pa.array(split),
                    "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.ravel()), classes),
                },
                schema=schema,
            )
            w.write_table(table, row_group_size=ROW_GROUP)


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
    from pickaxe.pools import open_pool

    px.set_num_threads(args.threads)
    logits = open_pool(args.path).read(["logits"]).columns["logits"]
    n = len(logits)

    def decode() -> int:
        pf = pq.ParquetFile(args.path)
        rows = 0
        for b in pf.iter_batches(batch_size=65536, columns=["logits", "id"], use_threads=False):
            rows += b.num_rows
        return rows

    def serial() -> object:  # the reader thread off: decode, then score, on one thread
        import pickaxe.pools.parquet as parquet_mod

        threaded = parquet_mod.prefetched
        parquet_mod.prefetched = lambda items, on_stop=None: items
        try:
            return px.EntropyMiner(500).mine(args.path)
        finally:
            parquet_mod.prefetched = threaded

    runs = {
        "pickaxe EntropyMiner(500).mine(path)": lambda: px.EntropyMiner(500).mine(args.path),
        "pickaxe, no reader thread (decode then score)": serial,
        "pickaxe, query split = 'unlabeled' (half)": lambda: px.EntropyMiner(500, query="split = 'unlabeled'").mine(args.path),
        "pyarrow iter_batches(logits, id), 1 thread": decode,
        "kernel on the in-memory array": lambda: px.EntropyMiner(500).mine({"logits": logits}),
    }
    times: dict[str, list] = {k: [] for k in runs}
    outs: dict[str, object] = {}
    for name, fn in runs.items():  # warm-up: imports, page cache
        outs[name] = fn()
    for _ in range(args.repeats):
        for name, fn in runs.items():
            wall, cpu, _ = timed(fn)
            times[name].append((wall, cpu))

    same = list(outs["pickaxe EntropyMiner(500).mine(path)"].ids) == list(outs["kernel on the in-memory array"].ids)
    info = px.build_info() if hasattr(px, "build_info") else {}
    print(f"pool: {n:,} rows x {args.classes} float32 logits, {args.path}; kernel threads {args.threads}; "
          f"SIMD {info.get('simd', '?')}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}; "
          f"medians of {args.repeats}")
    base = statistics.median(w for w, _ in times["pyarrow iter_batches(logits, id), 1 thread"])
    base_cpu = statistics.median(c for _, c in times["pyarrow iter_batches(logits, id), 1 thread"])
    print("| run | wall s | CPU s | cores | wall / pyarrow decode | CPU / pyarrow decode |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, ts in times.items():
        wall = statistics.median(w for w, _ in ts)
        cpu = statistics.median(c for _, c in ts)
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {cpu / wall:.2f} | {wall / base:.2f} | {cpu / base_cpu:.2f} |")
    print(f"streamed picks equal the in-memory picks: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
