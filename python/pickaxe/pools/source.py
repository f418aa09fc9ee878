"""`PoolSource`: a pool opened for reading, streamed in batches of bounded size or read whole.

Every kind of pool (`pickaxe.pools.arrays`, `tables`, `parquet`, and Ray's Dataset) is a
PoolSource: it says which columns it has and their shapes, and yields its rows that pass
the query as `Pool` batches, each field's per-row shape checked against earlier batches.
`MemorySource` is the part the in-memory kinds share: the query's matching rows found
once, batches as slices or gathers of them.
"""

from __future__ import annotations

import contextlib
import sys
from abc import ABC, abstractmethod
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from .. import _checks as checks
from .._fields import FIELD_SHAPES
from .boxes import BOX_FIELDS
from .pool import BATCH_ROWS, Pool, concat, field_names, metadata_names

__all__ = ["PoolSource", "MemorySource"]


class PoolSource(ABC):
    """A pool opened for reading, with its query applied.

    Attributes:
        kind: "arrays" (a mapping), "table" (DataFrame or Arrow) or "parquet".
        query: the SQL ``WHERE`` clause, or None.
        column_names: the pool's columns, in order.
        types: column name -> its type as text (Arrow's, or numpy's for a mapping).
        n_rows: rows that pass the query, when known without reading the data (a
            Parquet pool's metadata without a query; in-memory pools always); else None.
        shapes: column name -> shape, N (the first entry) None when unknown, e.g.
            ``{"logits": (None, 10), "id": (None,)}``. A fixed-size list's width is in
            its Arrow type; a variable ``list`` column's width is read from its first
            row holding a value (the first non-empty batch, for Parquet), so another
            row may still turn out ragged when the data is read.
    """

    kind = ""
    who: str
    query: Optional[str]
    column_names: list[str]
    types: dict[str, str]
    n_rows: Optional[int]

    # shapes are computed on first use: a Parquet list column's width costs a read
    _shapes: Optional[dict[str, tuple]] = None

    @property
    def shapes(self) -> dict[str, tuple]:
        if self._shapes is None:
            self._shapes = self._compute_shapes()
        return self._shapes

    @abstractmethod
    def _compute_shapes(self) -> dict[str, tuple]:
        """Each column's shape, N as None when unknown."""

    @property
    def fields(self) -> list[str]:
        """The field columns present, in the pool's order."""
        return field_names(self.column_names)

    @property
    def metadata_names(self) -> list[str]:
        return metadata_names(self.column_names)

    @property
    def has_id(self) -> bool:
        return "id" in self.column_names

    def describe(self) -> str:
        """The columns and their shapes for error messages: "logits (N, 10), id (N,)";
        a width unknown until the data is read shows as ?."""
        if not self.column_names:
            return "no columns"
        out = []
        for name in self.column_names:
            dims = ["N"] + ["?" if d is None else str(d) for d in self.shapes[name][1:]]
            out.append(f"{name} ({', '.join(dims)}{',' if len(dims) == 1 else ''})")
        return ", ".join(out)

    def __repr__(self) -> str:
        q = f", query={self.query!r}" if self.query else ""
        n = "?" if self.n_rows is None else self.n_rows
        return f"PoolSource({self.kind}, {n} rows{q}: {self.describe()})"

    def _columns(self, columns: Optional[Iterable[str]]) -> list[str]:
        if columns is None:
            return list(self.column_names)
        if isinstance(columns, str):
            columns = [columns]
        out: list[str] = []
        for name in columns:
            if name not in self.column_names:
                raise ValueError(f"{self.who}: the pool has no column {name!r}; it has {self.describe()}")
            if name not in out:
                out.append(name)
        if self.has_id and "id" not in out:
            out.append("id")
        return out

    def batches(
        self,
        columns: Optional[Iterable[str]] = None,
        batch_rows: int = BATCH_ROWS,
        *,
        progress: bool = False,
    ) -> Iterator[Pool]:
        """The rows that pass the query, in order, as Pools of at most `batch_rows` rows
        (every batch but the last holds exactly `batch_rows`).

        Only `columns` (default: all) are read, plus ``id`` when the pool has one, so
        that ``batch.ids(rows)`` are ids. Each batch's ``offset`` is the position of its
        first row in the stream and its ``row_numbers`` the rows' numbers in the
        original pool (see `Pool`). A Parquet pool is read a batch at a time.

        ``progress=True`` shows a tqdm bar of rows on stderr when stderr is a terminal
        (nothing when it is piped or redirected).
        """
        batch_rows = checks.integer(self.who, "batch_rows", batch_rows, 1)
        it = self._checked_batches(self._columns(columns), batch_rows)
        if progress:
            it = _with_progress(it, self.n_rows)
        return it

    @abstractmethod
    def _batches(self, columns: list[str], batch_rows: int) -> Iterator[Pool]:
        """The pool's rows in batches of at most `batch_rows`, unchecked."""

    def _checked_batches(self, columns: list[str], batch_rows: int) -> Iterator[Pool]:
        return self._checked(self._batches(columns, batch_rows))

    def _checked(self, batches: Iterator[Pool]) -> Iterator[Pool]:
        """The batches, with a field's per-row shape checked against earlier batches
        (each batch is checked within itself when it is converted)."""
        shapes: dict[str, tuple] = {}
        with _thread_failures_as_memory(self.who):
            yield from self._checked_shapes(batches, shapes)

    def _checked_shapes(self, batches: Iterator[Pool], shapes: dict[str, tuple]) -> Iterator[Pool]:
        for b in batches:
            if b.n_rows:
                for name in b.fields:
                    got = b.columns[name].shape[1:]
                    want = shapes.setdefault(name, got)
                    if got != want:
                        raise ValueError(
                            f"{self.who}: column {name!r} row {int(b.source_rows([0])[0])}: "
                            f"{_per_row(got)} where earlier rows have {_per_row(want)}; a "
                            "vector field needs the same length in every row"
                        )
            yield b

    def read(self, columns: Optional[Iterable[str]] = None) -> Pool:
        """Every row that passes the query, in one `Pool` (``offset`` 0)."""
        cols = self._columns(columns)
        if self.n_rows == 0:
            return self.empty_pool(cols)
        p = concat(self._checked_batches(cols, BATCH_ROWS), cols, self.n_rows)
        return p if p.n_rows else self.empty_pool(cols)

    def empty_pool(self, columns: list[str]) -> Pool:
        """No rows: each column shaped (0, *its widths), a width unknown without data
        0, in the dtype its rows would have."""
        import pyarrow as pa

        from .arrow import field_to_numpy, metadata_to_numpy
        from .boxes import boxes_from_arrow

        cols = {}
        for c in columns:
            t = self.schema.field(c).type
            empty = pa.array([], type=t)
            if c in BOX_FIELDS:
                cols[c] = boxes_from_arrow(c, empty)
                continue
            x = field_to_numpy(c, empty) if c in FIELD_SHAPES else metadata_to_numpy(empty)
            dims = tuple(0 if d is None else d for d in self.shapes[c][1:])
            cols[c] = x.reshape((0,) + dims) if len(dims) == x.ndim - 1 else x
        return Pool(cols, 0, 0, np.empty(0, dtype=np.int64))

    def take(self, rows: Any, columns: Optional[Iterable[str]] = None) -> Pool:
        """The rows with these numbers in the original pool (whatever the query), in
        the order given, as a `Pool` whose ``row_numbers`` are `rows`: e.g. the
        metadata of a selection made from batches that read only the fields."""
        cols = self._columns(columns)
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        total = self.total_rows()
        bad = np.flatnonzero((rows < 0) | (rows >= total))
        if bad.size:
            raise IndexError(f"{self.who}: row {int(rows[bad[0]])} is not in the pool (rows 0 to {total - 1})")
        with _thread_failures_as_memory(self.who):
            return self._take(rows, cols)

    @abstractmethod
    def total_rows(self) -> int:
        """Rows in the whole pool, before any query."""


class MemorySource(PoolSource):
    """A pool held in memory. The rows that pass the query (``matches``, their numbers in
    the pool, or None without a query) are found once when it is opened; batches are
    slices of the pool without a query, gathers of the matching rows with one."""

    matches: Optional[np.ndarray]

    def _find_matches(self, n: int, arrow_table: Any) -> None:
        """Set ``matches`` and ``n_rows``; `arrow_table()` gives the pool as an Arrow table
        with the row numbers as column ROW, for the query."""
        from .query import match_rows

        self.matches = None if self.query is None else match_rows(self.who, arrow_table(), self.query)
        self.n_rows = n if self.matches is None else len(self.matches)

    @abstractmethod
    def _slice(self, columns: list[str], start: int, stop: int) -> Pool:
        """Rows start..stop of the pool, as a batch at offset `start`."""

    @abstractmethod
    def _gather(self, columns: list[str], rows: np.ndarray, offset: int) -> Pool:
        """The pool's rows numbered `rows`, in this order, as a batch at `offset`."""

    def _batches(self, columns: list[str], batch_rows: int) -> Iterator[Pool]:
        n = self.n_rows or 0
        for start in range(0, n, batch_rows):
            stop = min(start + batch_rows, n)
            if self.matches is None:
                yield self._slice(columns, start, stop)
            else:
                yield self._gather(columns, self.matches[start:stop], start)

    def read(self, columns: Optional[Iterable[str]] = None) -> Pool:
        cols = self._columns(columns)
        if self.matches is None:
            return self._slice(cols, 0, self.n_rows or 0)
        return self._gather(cols, self.matches, 0)

    def _take(self, rows: np.ndarray, columns: list[str]) -> Pool:
        return self._gather(columns, rows, 0)


# -- helpers ---------------------------------------------------------------------------


@contextlib.contextmanager
def _thread_failures_as_memory(who: str) -> Iterator[None]:
    """pyarrow starts its reading threads on first use; under an address-space cap
    (``ulimit -v``) a thread's stack cannot be mapped and pyarrow says "Failed to launch
    worker thread". That is memory running out, and is raised as MemoryError like any
    other allocation that fails; also when DuckDB, reading the stream pyarrow feeds it
    for a query, passes the failure on as an OSError."""
    try:
        yield
    except Exception as e:
        from_arrow = type(e).__module__.split(".")[0] == "pyarrow" or isinstance(e, OSError)
        if from_arrow and "Failed to launch worker thread" in str(e):
            raise MemoryError(
                f"{who}: pyarrow could not start a thread to read the pool ({e}): out of "
                "memory (address space) or past the process's thread limit"
            ) from None
        raise


def _per_row(shape: tuple) -> str:
    """A per-row shape in words, for messages."""
    if len(shape) == 1:
        return f"a list of {shape[0]} values"
    return f"lists of shape {shape}"


def _with_progress(it: Iterator[Pool], total: Optional[int]) -> Iterator[Pool]:
    if not _stderr_is_tty():
        yield from it
        return
    from tqdm import tqdm

    bar = tqdm(total=total, unit="rows", unit_scale=True, file=sys.stderr, dynamic_ncols=True)
    try:
        for b in it:
            yield b
            bar.update(b.n_rows)
    finally:
        bar.close()


def _stderr_is_tty() -> bool:
    try:
        return bool(sys.stderr is not None and sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False
