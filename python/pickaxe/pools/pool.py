"""`Pool`: rows held in memory, as columns of equal length (a whole pool or one batch).

A streamed pool's batches are Pools that know where they sit in the pool: ``offset``
among the rows that passed the query, ``row_numbers`` in the original pool.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional

import numpy as np

from .._fields import FIELD_SHAPES
from .connection import ROW

__all__ = ["Pool", "BATCH_ROWS", "ROW", "concat", "field_names", "metadata_names"]

#: Default rows per batch of `PoolSource.batches`.
BATCH_ROWS = 65536


def field_names(names: Iterable[str]) -> list[str]:
    """The prediction fields among these column names, in their order."""
    return [n for n in names if n in FIELD_SHAPES]


def metadata_names(names: Iterable[str]) -> list[str]:
    """The metadata columns among these: neither a field nor ``id``."""
    return [n for n in names if n not in FIELD_SHAPES and n != "id"]


class Pool:
    """Columns of equal length, in memory: ``columns`` maps name to numpy array.

    ``ids(rows)`` are the ``id`` column's values, or without one the rows' numbers in
    the original pool. A batch of a streamed pool knows where it sits: ``offset`` is the
    position of its first row among the rows that passed the query (the global row
    number when there is no query), and ``row_numbers`` (int64, or None when they are
    ``offset + arange(n_rows)``) are its rows' numbers in the original pool.
    """

    __slots__ = ("columns", "n_rows", "offset", "row_numbers")

    def __init__(
        self,
        columns: dict[str, np.ndarray],
        n_rows: int,
        offset: int = 0,
        row_numbers: Optional[np.ndarray] = None,
    ) -> None:
        self.columns = columns
        self.n_rows = n_rows
        self.offset = offset
        self.row_numbers = row_numbers

    @property
    def fields(self) -> list[str]:
        return field_names(self.columns)

    @property
    def metadata_names(self) -> list[str]:
        return metadata_names(self.columns)

    def source_rows(self, rows: Any) -> np.ndarray:
        """The row numbers in the original pool of these positions in this Pool."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.row_numbers is not None:
            return self.row_numbers[rows]
        return rows + self.offset if self.offset else rows

    def ids(self, rows: Any) -> np.ndarray:
        """The ids of these positions: the ``id`` column, or the original row numbers."""
        if "id" in self.columns:
            return self.columns["id"][rows]
        return self.source_rows(rows)

    def metadata(self, rows: Any) -> dict[str, np.ndarray]:
        return {name: self.columns[name][rows] for name in self.metadata_names}

    def describe(self) -> str:
        """The pool's columns and their shapes, for error messages."""
        if not self.columns:
            return "no columns"
        return ", ".join(f"{k} {tuple(v.shape)}" for k, v in self.columns.items())

    def __repr__(self) -> str:
        return f"Pool({self.n_rows} rows, offset {self.offset}: {self.describe()})"


def concat(batches: Iterator[Pool], columns: list[str], n: Optional[int]) -> Pool:
    """One Pool from batches: into arrays allocated once when the row count is known,
    else concatenated at the end."""
    if n is None:
        parts: list[Pool] = [b for b in batches if b.n_rows]
        if not parts:
            return Pool({}, 0)
        cols = {c: _concat_column([p.columns[c] for p in parts]) for c in columns}
        total = sum(p.n_rows for p in parts)
        rns = np.concatenate([p.source_rows(np.arange(p.n_rows)) for p in parts])
        return Pool(cols, total, 0, rns)
    out: dict[str, np.ndarray] = {}
    ragged: dict[str, list] = {}
    rn: Optional[np.ndarray] = None
    filled = 0
    for b in batches:
        if b.n_rows == 0:
            continue
        for c in columns:
            x = b.columns[c]
            if not isinstance(x, np.ndarray):  # a BoxColumn: concatenated at the end
                ragged.setdefault(c, []).append(x)
                continue
            if c not in out:
                out[c] = np.empty((n,) + x.shape[1:], dtype=x.dtype)
            dst = out[c]
            if dst.shape[1:] != x.shape[1:]:  # a metadata column (fields are checked)
                raise ValueError(
                    f"column {c!r} row {int(b.source_rows([0])[0])}: shape {x.shape[1:]} per "
                    f"row where earlier rows have {dst.shape[1:]}"
                )
            if dst.dtype != x.dtype and not np.can_cast(x.dtype, dst.dtype, "safe"):
                out[c] = dst = dst.astype(np.result_type(dst.dtype, x.dtype))
            dst[filled : filled + b.n_rows] = x
        if b.row_numbers is not None:
            if rn is None:
                rn = np.arange(n, dtype=np.int64)
            rn[filled : filled + b.n_rows] = b.row_numbers
        filled += b.n_rows
    if filled != n:
        raise RuntimeError(f"read {filled} rows where {n} were expected")
    if filled == 0:
        return Pool({}, 0)
    for c, pieces in ragged.items():
        out[c] = _concat_column(pieces)
    return Pool({c: out[c] for c in columns}, n, 0, rn)


def _concat_column(pieces: list) -> Any:
    if isinstance(pieces[0], np.ndarray):
        return np.concatenate(pieces)
    from .boxes import BoxColumn

    return BoxColumn.concatenate(pieces)
