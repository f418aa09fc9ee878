"""Arrow tables as pools: pandas, polars and pyarrow objects converted to one Arrow table,
and Arrow columns converted to a `Pool`'s numpy arrays.

A DataFrame (pandas or polars, a LazyFrame collected), a pyarrow Table, RecordBatch or
RecordBatchReader, or any object with the Arrow PyCapsule stream interface becomes an
Arrow table held in memory (`TableSource`). Its columns, and a Parquet file's batches
(`pickaxe.pools.parquet`), become numpy arrays through `to_pool`, whose errors name rows
by their number in the original pool and their id.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np

from .._fields import FIELD_SHAPES
from .arrow import RowLabel, as_arrow, field_to_numpy, metadata_to_numpy, numpy_to_arrow, row_dims, type_dims
from .boxes import BOX_FIELDS, boxes_from_arrow
from .connection import ROW
from .ids import check_unique, id_array
from .pool import Pool
from .source import MemorySource

__all__ = ["TableSource", "to_arrow_table", "to_pool", "arrow_column", "arrow_shapes", "check_names"]


class TableSource(MemorySource):
    """An Arrow table in memory (from pandas, polars or pyarrow)."""

    kind = "table"

    def __init__(self, who: str, table: Any, query: Optional[str]) -> None:
        self.who = who
        self.query = query
        names = [str(n) for n in table.column_names]
        check_names(names, who)
        if "id" in names:  # the whole table, once; batches are checked again as read
            check_unique(who, id_array(who, table.column("id")))
        self.table = table
        self.schema = table.schema
        self.column_names = names
        self.types = {n: str(t) for n, t in zip(names, table.schema.types)}

        def numbered() -> Any:
            return table.append_column(ROW, as_arrow(np.arange(table.num_rows, dtype=np.int64)))

        self._find_matches(table.num_rows, numbered)

    def _compute_shapes(self) -> dict[str, tuple]:
        return arrow_shapes(self.table.schema, self.n_rows, lambda names: self.table.select(names))

    def _slice(self, columns: list[str], start: int, stop: int) -> Pool:
        t = self.table.select(columns).slice(start, stop - start)
        return to_pool(self.who, t, columns, stop - start, start, None)

    def _gather(self, columns: list[str], rows: np.ndarray, offset: int) -> Pool:
        t = self.table.select(columns).take(as_arrow(rows))
        return to_pool(self.who, t, columns, len(rows), offset, rows)

    def read(self, columns: Any = None) -> Pool:
        if self.n_rows == 0:
            return self.empty_pool(self._columns(columns))
        return super().read(columns)

    def total_rows(self) -> int:
        return int(self.table.num_rows)


def check_names(names: Sequence[str], who: str) -> None:
    """ValueError for two columns of one name, or a column named as pickaxe's row number."""
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"{who}: the pool has two columns named {n!r}")
        if n == ROW:
            raise ValueError(f"{who}: the column name {ROW!r} is reserved")
        seen.add(n)


def to_arrow_table(pool: Any, who: str) -> Any:
    """An Arrow table from a DataFrame, Arrow object or Arrow stream; None for others."""
    module = type(pool).__module__.split(".")[0]
    if module == "pandas":
        return _pandas_to_arrow(pool, who)
    if module == "polars":
        if hasattr(pool, "collect") and not hasattr(pool, "to_arrow"):
            pool = pool.collect()  # a LazyFrame
        return pool.to_arrow()
    if module == "pyarrow":
        import pyarrow as pa

        if isinstance(pool, pa.Table):
            return pool
        if isinstance(pool, pa.RecordBatch):
            return pa.Table.from_batches([pool])
        if isinstance(pool, pa.RecordBatchReader):
            return pool.read_all()
    if hasattr(pool, "__arrow_c_stream__"):
        import pyarrow as pa

        return pa.table(pool)
    return None


def _pandas_to_arrow(df: Any, who: str) -> Any:
    import pyarrow as pa

    if not hasattr(df, "columns"):  # a Series
        return None
    if getattr(df.index, "name", None) == "id" and "id" not in df.columns:
        df = df.reset_index()  # an index named id names the rows
    try:
        return pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError):
        pass
    # Column by column, to name the column Arrow could not take: cells that are 2-D
    # arrays (an (N, M, C) field) are stacked.
    names, arrays = [], []
    for name in df.columns:
        s = df[name]
        try:
            a = pa.array(s, from_pandas=True)
        except (pa.ArrowException, TypeError, ValueError) as e:
            a = None
            if s.dtype == object:
                try:
                    a = numpy_to_arrow(np.stack(s.to_numpy()))
                except ValueError:
                    a = None
            if a is None:
                raise ValueError(f"{who}: pool column {str(name)!r} cannot be read: {e}") from None
        names.append(str(name))
        arrays.append(a)
    return pa.Table.from_arrays(arrays, names=names)


def arrow_column(who: str, name: str, data: Any, label: RowLabel) -> np.ndarray:
    """An Arrow column as a Pool holds it: a box list as a `BoxColumn`, a field strictly
    (`field_to_numpy`), metadata leniently; `label` names a row of `data` in errors."""
    if name not in BOX_FIELDS and name not in FIELD_SHAPES:
        return metadata_to_numpy(data)
    convert: Callable[..., Any] = boxes_from_arrow if name in BOX_FIELDS else field_to_numpy
    try:
        return convert(name, data, label)
    except ValueError as e:
        raise ValueError(f"{who}: {e}") from None


def to_pool(
    who: str, table: Any, columns: list[str], n: int, offset: int, row_numbers: Optional[np.ndarray],
    numbered: bool = True,
) -> Pool:
    """A Pool of these columns of an Arrow table or batch; errors name rows by their
    number in the original pool (and id), or by their id alone when the rows have no
    numbers (``numbered=False``: a Ray Dataset's batch)."""
    cols: dict[str, np.ndarray] = {}

    def row(p: int) -> str:
        return f"row {int(row_numbers[p]) if row_numbers is not None else offset + p}"

    if "id" in columns:
        cols["id"] = id_array(who, table.column("id"), row)
        check_unique(who, cols["id"], row)  # a streamed pool: within each batch
    ids = cols.get("id")

    def label(p: int) -> str:
        if ids is None:
            return row(p)
        v = ids[p]
        v = v.item() if isinstance(v, np.generic) else v
        return f"{row(p)} (id {v!r})" if numbered else f"row with id {v!r}"

    for name in columns:
        if name != "id":
            cols[name] = arrow_column(who, name, table.column(name), label)
    return Pool({c: cols[c] for c in columns}, n, offset, row_numbers)


def arrow_shapes(
    schema: Any, n: Optional[int], first_rows: Callable[[list[str]], Any], names: Optional[list[str]] = None
) -> dict[str, tuple]:
    """Each column's shape (`PoolSource.shapes`) from its Arrow type; a variable list's
    width from the first rows holding a value (`first_rows(names)`: a table or batch of
    those columns, or None)."""
    names = list(schema.names) if names is None else names
    dims = {name: type_dims(schema.field(name).type) for name in names}
    unknown = [name for name, d in dims.items() if None in d]
    if unknown:
        data = first_rows(unknown)
        for name in unknown:
            got = row_dims(data.column(name)) if data is not None and data.num_rows else None
            if got is not None and len(got) == len(dims[name]):
                dims[name] = [g if d is None else d for g, d in zip(got, dims[name])]
    return {name: (n, *d) for name, d in dims.items()}
