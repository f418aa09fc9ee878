"""The synthetic Parquet pools of the Parquet benches (bench_parquet_mining, bench_pool_stream,
bench_ray): an ``id`` column, a ``split`` string column ("unlabeled" or "train") and
``logits`` as a fixed-size list of float32, one confident class per row."""

from __future__ import annotations

import numpy as np


def write_logits_file(
    path: str, rng: np.random.Generator, start: int, stop: int, classes: int, chunk_rows: int,
    unlabeled: float, row_group: int | None = None,
) -> None:
    """Rows ``start..stop`` into one file, drawn from ``rng`` ``chunk_rows`` at a time, in row
    groups of ``row_group`` rows (default: one a chunk); ``unlabeled`` is the expected share
    of split = 'unlabeled'."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.int64()), ("split", pa.string()), ("logits", pa.list_(pa.float32(), classes))])
    with pq.ParquetWriter(path, schema, compression="snappy") as w:
        for s in range(start, stop, chunk_rows):
            n = min(chunk_rows, stop - s)
            logits = rng.normal(size=(n, classes)).astype(np.float32)
            logits[np.arange(n), rng.integers(classes, size=n)] += rng.uniform(0, 12, size=n).astype(np.float32)
            split = np.where(rng.random(n) < unlabeled, "unlabeled", "train")
            table = pa.table(
                {
                    "id": pa.array(np.arange(s, s + n)),
                    "split": pa.array(split),
                    "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.ravel()), classes),
                },
                schema=schema,
            )
            w.write_table(table, row_group_size=row_group or chunk_rows)
