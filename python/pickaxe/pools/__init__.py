"""Pools: the rows a miner runs on, as columns.

A pool is any of

- a mapping of column name to array (numpy arrays are read in place);
- a pandas or polars DataFrame, a pyarrow Table or RecordBatch (or any object with the
  Arrow PyCapsule stream interface);
- a path (str or PathLike) to a Parquet file, or to a folder of Parquet files: every
  ``*.parquet`` file below it (names starting with ``.`` or ``_`` skipped), in sorted order
  of their relative paths, all with the same schema.

Its columns are the prediction fields of api.md (``confidence`` (N,), ``confidences`` /
``logits`` (N, C), ``query_by_committee`` / ``mc_dropout`` (N, M, C), ``embeddings`` (N, D);
vectors as list columns; ``pixel_logits`` / ``pixel_confidences`` (N, C, H, W) as nested
lists or arrays; ``boxes`` (per row a list of box structs) and ``member_boxes`` (per row a
list over members of such lists), held in memory as a `pickaxe.pools.boxes.BoxColumn`), an
optional ``id`` column and metadata (every other column), which rides along into the
selection. In a mapping pool, box-list columns are not visible to a query.

``query`` is one SQL condition over the pool's columns (what a ``WHERE`` clause holds),
checked by parsing and evaluated in process by DuckDB on a connection that can reach
nothing but the pool (`pickaxe.pools.query`, docs/query.md), on tables and Parquet alike, so
that only the matching rows are read and scored.

Row numbers and ids: a pool's rows are numbered 0, 1, ... in its original order (for a
folder, file after file in sorted order, each file's rows in order), before any query.
The ``id`` of a row is its ``id`` column when the pool has one, its row number otherwise:
with a query, a picked row's id (without an ``id`` column) is its row number in the
ORIGINAL pool, so ``table[id]`` finds it in the source.

`open_pool` gives a `PoolSource`, which streams the pool in batches of bounded size (each
a `Pool` of numpy arrays) or reads it whole; `as_pool` reads any pool whole into a `Pool`.

The modules, one job each:

- `pool`: `Pool`, rows in memory (a whole pool or a batch);
- `source`: `PoolSource`, a pool opened for reading: batches, shape checks, progress;
- `kinds`: `open_pool` and `as_pool`, which open any kind of pool;
- `arrays`, `tables`, `parquet`: the kinds (mappings; DataFrames and Arrow; Parquet);
- `prefetch`, `windows`: Parquet row groups decoded on reader threads, and the decoded
  pieces cut into batches (with a query, only the matching rows);
- `arrow`, `boxes`, `ids`: Arrow columns to numpy, box-list columns, the ``id`` column;
- `connection`, `query_check`, `query`: the confined DuckDB connection, the check of a
  query, and running it within its limits.

Importing this package loads numpy only: pyarrow and DuckDB load with the first pool
that needs them.
"""

from __future__ import annotations

from .arrays import ArraySource
from .connection import ROW, shown
from .ids import check_unique
from .kinds import as_pool, open_pool
from .parquet import ParquetSource, close_file
from .pool import BATCH_ROWS, Pool
from .query import match_rows, set_query_limits
from .source import PoolSource
from .tables import TableSource, arrow_shapes, to_pool
from .windows import rebatch

__all__ = [
    "Pool",
    "PoolSource",
    "open_pool",
    "as_pool",
    "BATCH_ROWS",
    "ROW",
    "set_query_limits",
    "ArraySource",
    "TableSource",
    "ParquetSource",
    "to_pool",
    "arrow_shapes",
    "rebatch",
    "close_file",
    "match_rows",
    "check_unique",
    "shown",
]
