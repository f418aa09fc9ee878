"""Mappings of column name to array as pools: numpy arrays are read in place.

A mapping's values may be numpy arrays, anything `np.asarray` takes, pyarrow arrays, or
for a box-list field (``boxes``, ``member_boxes``) a `BoxColumn` or lists of box dicts.
Box-list columns are not visible to a query (DuckDB sees the others as Arrow arrays).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterable, Optional

import numpy as np

from .._fields import FIELD_SHAPES
from .arrow import as_arrow, numpy_to_arrow, plain_label
from .boxes import BOX_FIELDS, boxes_column
from .connection import ROW
from .ids import check_unique, id_array
from .pool import Pool
from .source import MemorySource
from .tables import arrow_column

__all__ = ["ArraySource", "mapping_pool"]


class ArraySource(MemorySource):
    """A mapping of numpy arrays (or a `Pool`): batches are slices (views) without a query."""

    kind = "arrays"

    def __init__(self, who: str, pool: Pool, query: Optional[str]) -> None:
        self.who = who
        self.query = query
        self.pool = pool
        self.column_names = list(pool.columns)
        self.types = {k: str(v.dtype) for k, v in pool.columns.items()}
        self._find_matches(pool.n_rows, self._arrow_view)

    def _arrow_view(self) -> Any:
        import pyarrow as pa

        names, arrays = [], []
        for name, arr in self.pool.columns.items():
            if not isinstance(arr, np.ndarray):
                continue  # a box-list column: not visible to a query
            a = numpy_to_arrow(arr)
            if a is not None:
                names.append(name)
                arrays.append(a)
        names.append(ROW)
        arrays.append(as_arrow(np.arange(self.pool.n_rows, dtype=np.int64)))
        return pa.Table.from_arrays(arrays, names=names)

    def _compute_shapes(self) -> dict[str, tuple]:
        return {k: (self.n_rows,) + tuple(v.shape[1:]) for k, v in self.pool.columns.items()}

    def _slice(self, columns: list[str], start: int, stop: int) -> Pool:
        p = self.pool
        cols = {c: p.columns[c][start:stop] for c in columns}
        if p.row_numbers is None and not p.offset:
            return Pool(cols, stop - start, start)
        return Pool(cols, stop - start, start, p.source_rows(np.arange(start, stop)))

    def _gather(self, columns: list[str], rows: np.ndarray, offset: int) -> Pool:
        p = self.pool
        return Pool({c: p.columns[c][rows] for c in columns}, len(rows), offset, p.source_rows(rows))

    def read(self, columns: Optional[Iterable[str]] = None) -> Pool:
        if self.matches is None:  # the arrays themselves
            p = self.pool
            return Pool({c: p.columns[c] for c in self._columns(columns)}, p.n_rows, p.offset, p.row_numbers)
        return super().read(columns)

    def total_rows(self) -> int:
        return self.pool.n_rows


def mapping_pool(pool: Mapping, who: str) -> Pool:
    """A mapping's columns as a `Pool`, checked: names are str, no scalars, equal
    lengths, a 1-D ``id`` without nulls or duplicates."""
    columns = _mapping_columns(pool, who)
    return Pool(columns, _common_length(columns, who))


def _mapping_columns(pool: Mapping, who: str) -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {}
    for name, value in pool.items():
        if not isinstance(name, str):
            raise TypeError(f"{who}: pool column names must be str; got {name!r}")
        arr = _mapping_column(name, value, who)
        if arr.ndim == 0:
            raise ValueError(f"{who}: pool column {name!r} is a scalar; expected one value per row")
        columns[name] = arr
    if "id" in columns:
        if columns["id"].ndim != 1:
            raise ValueError(f"{who}: the id column must be 1-D; got shape {columns['id'].shape}")
        columns["id"] = id_array(who, columns["id"])
        check_unique(who, columns["id"])
    return columns


def _mapping_column(name: str, value: Any, who: str) -> np.ndarray:
    if name in BOX_FIELDS:
        try:
            return boxes_column(name, value)  # type: ignore[return-value]
        except ValueError as e:
            raise ValueError(f"{who}: {e}") from None
    if isinstance(value, np.ndarray):
        return value
    if type(value).__module__.split(".")[0] == "pyarrow":
        if name == "id":
            return id_array(who, value)
        return arrow_column(who, name, value, plain_label)
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as e:
        if name in FIELD_SHAPES:
            # a ragged or partly missing nested list: let Arrow find the first bad row
            try:
                import pyarrow as pa

                arr = pa.array(value)
            except Exception:
                arr = None
            if arr is not None:
                return arrow_column(who, name, arr, plain_label)
        raise ValueError(f"{who}: pool column {name!r} is not an array: {e}") from None


def _common_length(columns: dict[str, np.ndarray], who: str) -> int:
    lengths = {name: arr.shape[0] for name, arr in columns.items()}
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"{k}: {v}" for k, v in lengths.items())
        raise ValueError(f"{who}: pool columns have different numbers of rows ({listing})")
    return next(iter(lengths.values()), 0)
