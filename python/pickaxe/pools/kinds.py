"""What a pool may be, and `open_pool` / `as_pool`, which open any kind of it.

A mapping (or a `Pool`) becomes an `ArraySource`, a DataFrame or Arrow object a
`TableSource`, a path a `ParquetSource`; see `pickaxe.pools` for the kinds and the rules
of row numbers and ids.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from .. import _checks as checks
from .arrays import ArraySource, mapping_pool
from .parquet import ParquetSource
from .pool import Pool
from .source import PoolSource
from .tables import TableSource, to_arrow_table

__all__ = ["open_pool", "as_pool"]


def as_pool(pool: Any, who: str) -> Pool:
    """A `Pool` holding the whole of `pool` in memory.

    A mapping's arrays are used in place (checked: equal lengths, ``id`` 1-D); any other
    kind of pool is read whole through `open_pool` (every column).
    """
    if isinstance(pool, Pool):
        return pool
    if isinstance(pool, PoolSource):
        return pool.read()
    if isinstance(pool, Mapping):
        return mapping_pool(pool, who)
    return open_pool(pool, who=who).read()


def open_pool(pool: Any, *, query: Optional[str] = None, who: str = "open_pool()") -> PoolSource:
    """A `PoolSource` over `pool` (see `pickaxe.pools` for what a pool is), with
    only the rows that match `query` (one SQL condition over its columns) when one is given.

    A query that is not one condition over the pool's columns (see `pickaxe.pools.query_check`)
    raises ValueError saying what is wrong and listing the columns with their SQL types;
    one past its time limit raises TimeoutError; a pool that is none of the accepted
    kinds raises TypeError; a path that does not exist raises FileNotFoundError.
    """
    query = checks.query(who, query)
    if isinstance(pool, PoolSource):
        if query is not None:
            raise ValueError(f"{who}: this pool was opened already; give the query to open_pool() once")
        return pool
    if isinstance(pool, Pool):
        return ArraySource(who, pool, query)
    if isinstance(pool, Mapping):
        return ArraySource(who, mapping_pool(pool, who), query)
    if isinstance(pool, (str, os.PathLike)):
        return ParquetSource(who, Path(os.fspath(pool)), query)
    table = to_arrow_table(pool, who)
    if table is None:
        raise TypeError(
            f"{who}: a pool is a mapping of field name to array (e.g. {{'logits': x}}), a "
            "pandas or polars DataFrame, a pyarrow Table, or a path to a Parquet file or "
            f"folder; got {type(pool).__name__}"
        )
    return TableSource(who, table, query)
