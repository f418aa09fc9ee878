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
list over members of such lists), held in memory as a `pickaxe._boxes.BoxColumn`), an
optional ``id`` column and metadata (every other column), which rides along into the
selection. In a mapping pool, box-list columns are not visible to a query.

``query`` is one SQL condition over the pool's columns (what a ``WHERE`` clause holds),
checked by parsing and evaluated in process by DuckDB on a connection that can reach
nothing but the pool (`pickaxe._query`, docs/query.md), on tables and Parquet alike, so
that only the matching rows are read and scored.

Row numbers and ids: a pool's rows are numbered 0, 1, ... in its original order (for a
folder, file after file in sorted order, each file's rows in order), before any query.
The ``id`` of a row is its ``id`` column when the pool has one, its row number otherwise:
with a query, a picked row's id (without an ``id`` column) is its row number in the
ORIGINAL pool, so ``table[id]`` finds it in the source.

`open_pool` gives a `PoolSource`, which streams the pool in batches of bounded size (each
a `Pool` of numpy arrays) or reads it whole; `as_pool` reads any pool whole into a `Pool`.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from ._boxes import BOX_FIELDS
from ._fields import FIELD_SHAPES
from . import _checks as checks
from ._arrow import as_arrow
from ._ids import check_unique, id_array

#: Name of the row-number column added for DuckDB; never one of the pool's columns.
ROW = "__pickaxe_row__"

#: Default rows per batch of `PoolSource.batches`.
BATCH_ROWS = 65536


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
        return [name for name in self.columns if name in FIELD_SHAPES]

    @property
    def metadata_names(self) -> list[str]:
        return [name for name in self.columns if name not in FIELD_SHAPES and name != "id"]

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
        columns = _mapping_columns(pool, who)
        return Pool(columns, _common_length(columns, who))
    return open_pool(pool, who=who).read()


def open_pool(pool: Any, *, query: Optional[str] = None, who: str = "open_pool()") -> "PoolSource":
    """A `PoolSource` over `pool` (see the module's docstring for what a pool is), with
    only the rows that match `query` (one SQL condition over its columns) when one is given.

    A query that is not one condition over the pool's columns (see `pickaxe._query`)
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
        return _ArraySource(who, pool, query)
    if isinstance(pool, Mapping):
        columns = _mapping_columns(pool, who)
        return _ArraySource(who, Pool(columns, _common_length(columns, who)), query)
    if isinstance(pool, (str, os.PathLike)):
        return _ParquetSource(who, Path(os.fspath(pool)), query)
    table = _to_arrow_table(pool, who)
    if table is None:
        raise TypeError(
            f"{who}: a pool is a mapping of field name to array (e.g. {{'logits': x}}), a "
            "pandas or polars DataFrame, a pyarrow Table, or a path to a Parquet file or "
            f"folder; got {type(pool).__name__}"
        )
    return _TableSource(who, table, query)


# -- the source kinds ------------------------------------------------------------------


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
        return [c for c in self.column_names if c in FIELD_SHAPES]

    @property
    def metadata_names(self) -> list[str]:
        return [c for c in self.column_names if c not in FIELD_SHAPES and c != "id"]

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
            return self._empty_pool(cols)
        p = _concat(self._checked_batches(cols, BATCH_ROWS), cols, self.n_rows)
        return p if p.n_rows else self._empty_pool(cols)

    def _empty_pool(self, columns: list[str]) -> Pool:
        """No rows: each column shaped (0, *its widths), a width unknown without data
        0, in the dtype its rows would have."""
        import pyarrow as pa

        from ._arrow import field_to_numpy, metadata_to_numpy

        cols = {}
        for c in columns:
            t = self.schema.field(c).type
            empty = pa.array([], type=t)
            if c in BOX_FIELDS:
                from ._boxes import boxes_from_arrow

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
        total = self._total_rows()
        bad = np.flatnonzero((rows < 0) | (rows >= total))
        if bad.size:
            raise IndexError(f"{self.who}: row {int(rows[bad[0]])} is not in the pool (rows 0 to {total - 1})")
        with _thread_failures_as_memory(self.who):
            return self._take(rows, cols)

    @abstractmethod
    def _total_rows(self) -> int:
        """Rows in the whole pool, before any query."""

    @abstractmethod
    def _take(self, rows: np.ndarray, columns: list[str]) -> Pool:
        """These original rows, in this order."""


class _ArraySource(PoolSource):
    """A mapping of numpy arrays: batches are slices (views) without a query."""

    kind = "arrays"

    def __init__(self, who: str, pool: Pool, query: Optional[str]) -> None:
        self.who = who
        self.query = query
        self.pool = pool
        self.column_names = list(pool.columns)
        self.types = {k: str(v.dtype) for k, v in pool.columns.items()}
        self.matches: Optional[np.ndarray] = None
        if query is not None:
            self.matches = _match_rows(who, self._arrow_view(), query)
        self.n_rows = pool.n_rows if self.matches is None else len(self.matches)

    def _arrow_view(self) -> Any:
        import pyarrow as pa

        from ._arrow import numpy_to_arrow

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

    def _batches(self, columns: list[str], batch_rows: int) -> Iterator[Pool]:
        src = self.pool.columns
        n = self.n_rows or 0
        for start in range(0, n, batch_rows):
            stop = min(start + batch_rows, n)
            if self.matches is None:
                cols = {c: src[c][start:stop] for c in columns}
                rn = self.pool.row_numbers
                if rn is not None or self.pool.offset:
                    yield Pool(cols, stop - start, start, self.pool.source_rows(np.arange(start, stop)))
                else:
                    yield Pool(cols, stop - start, start)
            else:
                pos = self.matches[start:stop]
                yield Pool({c: src[c][pos] for c in columns}, stop - start, start, self.pool.source_rows(pos))

    def read(self, columns: Optional[Iterable[str]] = None) -> Pool:
        cols = self._columns(columns)
        if self.matches is None:
            p = self.pool
            return Pool({c: p.columns[c] for c in cols}, p.n_rows, p.offset, p.row_numbers)
        pos = self.matches
        return Pool({c: self.pool.columns[c][pos] for c in cols}, len(pos), 0, self.pool.source_rows(pos))

    def _total_rows(self) -> int:
        return self.pool.n_rows

    def _take(self, rows: np.ndarray, columns: list[str]) -> Pool:
        p = self.pool
        return Pool({c: p.columns[c][rows] for c in columns}, len(rows), 0, p.source_rows(rows))


class _TableSource(PoolSource):
    """An Arrow table in memory (from pandas, polars or pyarrow)."""

    kind = "table"

    def __init__(self, who: str, table: Any, query: Optional[str]) -> None:
        self.who = who
        self.query = query
        names = [str(n) for n in table.column_names]
        _check_names(names, who)
        if "id" in names:  # the whole table, once; batches are checked again as read
            check_unique(who, id_array(who, table.column("id")))
        self.table = table
        self.schema = table.schema
        self.column_names = names
        self.types = {n: str(t) for n, t in zip(names, table.schema.types)}
        self.matches: Optional[np.ndarray] = None
        if query is not None:
            rows = as_arrow(np.arange(table.num_rows, dtype=np.int64))
            self.matches = _match_rows(who, table.append_column(ROW, rows), query)
        self.n_rows = table.num_rows if self.matches is None else len(self.matches)

    def _compute_shapes(self) -> dict[str, tuple]:
        return _arrow_shapes(self.table.schema, self.n_rows, lambda names: self.table.select(names))

    def _batches(self, columns: list[str], batch_rows: int) -> Iterator[Pool]:
        t = self.table.select(columns)
        n = self.n_rows or 0
        for start in range(0, n, batch_rows):
            stop = min(start + batch_rows, n)
            if self.matches is None:
                yield _to_pool(self.who, t.slice(start, stop - start), columns, stop - start, start, None)
            else:
                pos = self.matches[start:stop]
                yield _to_pool(self.who, t.take(as_arrow(pos)), columns, stop - start, start, pos)

    def read(self, columns: Optional[Iterable[str]] = None) -> Pool:
        cols = self._columns(columns)
        if self.n_rows == 0:
            return self._empty_pool(cols)
        t = self.table.select(cols)
        if self.matches is None:
            return _to_pool(self.who, t, cols, t.num_rows, 0, None)
        return _to_pool(self.who, t.take(as_arrow(self.matches)), cols, len(self.matches), 0, self.matches)

    def _total_rows(self) -> int:
        return int(self.table.num_rows)

    def _take(self, rows: np.ndarray, columns: list[str]) -> Pool:
        t = self.table.select(columns).take(as_arrow(rows))
        return _to_pool(self.who, t, columns, len(rows), 0, rows)


class _ParquetSource(PoolSource):
    """A Parquet file or folder, read a batch at a time.

    pyarrow reads the requested columns batch by batch (``ParquetFile.iter_batches``,
    pages through a 1 MiB buffer), file after file. With a query, each file is first
    streamed through DuckDB's check of the condition: pyarrow reads only the columns the
    query names, a batch at a time, and DuckDB (on a connection that cannot open files
    itself, see `pickaxe._query`) returns the matching rows' numbers; then the stream
    keeps the matching rows, skipping row groups without any. Batches are cut to exactly
    `batch_rows` rows (across files and row groups), the last one shorter.
    """

    kind = "parquet"

    def __init__(self, who: str, path: Path, query: Optional[str]) -> None:
        import pyarrow.parquet as pq

        self.who = who
        self.query = query
        self.path = path
        if path.is_dir():
            files = sorted(
                (p for p in path.rglob("*.parquet") if p.is_file() and not _hidden(p.relative_to(path))),
                key=lambda p: p.relative_to(path).as_posix(),
            )
            if not files:
                raise ValueError(f"{who}: the folder {str(path)!r} holds no .parquet files")
        elif path.is_file():
            files = [path]
        else:
            raise FileNotFoundError(f"{who}: no Parquet file or folder at {str(path)!r}")
        self.files = files
        counts, schema, row_groups = [], None, []
        for f in files:
            try:
                pf = pq.ParquetFile(f)
            except Exception as e:  # pyarrow raises ArrowInvalid / OSError
                raise ValueError(f"{who}: {str(f)!r} is not a readable Parquet file: {e}") from None
            try:
                md = pf.metadata
                counts.append(md.num_rows)
                row_groups.append([md.row_group(i).num_rows for i in range(md.num_row_groups)])
                s = pf.schema_arrow
            finally:
                _close(pf)
            s = s.remove_metadata()
            if schema is None:
                schema = s
            elif not s.equals(schema):
                raise ValueError(f"{who}: {str(f)!r} has columns {_schema_text(s)}; {str(files[0])!r} has {_schema_text(schema)}: every file of a pool needs the same columns")
        assert schema is not None
        keep = [i for i, n in enumerate(schema.names) if not n.startswith("__index_level_")]
        self.schema = schema
        self.column_names = [schema.names[i] for i in keep]
        _check_names(self.column_names, who)
        self.types = {schema.names[i]: str(schema.types[i]) for i in keep}
        self.counts = np.asarray(counts, dtype=np.int64)
        self.bases = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.row_groups = row_groups
        if query is not None:
            import pyarrow as pa

            from ._query import compile_query

            # checked (parsed and bound, nothing run) before any data is read
            visible = pa.schema([schema.field(n) for n in self.column_names])
            self._condition = compile_query(query, who, visible)
        self.n_rows = int(self.bases[-1]) if query is None else None

    def _match_mask(self, con: Any, i: int) -> np.ndarray:
        """Which rows of file i pass the query (bool, one per row). pyarrow streams the
        columns the query names, a batch at a time, with each row's number in the file;
        DuckDB evaluates the condition on that stream within `con` (a `_query.Session`:
        its connection, limits and time budget)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        cond = self._condition
        f = self.files[i]
        n = int(self.counts[i])
        mask = np.zeros(n, dtype=bool)
        cols = list(cond.columns)
        schema = pa.schema([self.schema.field(c) for c in cols] + [pa.field(ROW, pa.int64())])
        step = 1 << 16
        failed: list = []

        def batches() -> Iterator[Any]:
            try:
                if not cols:  # a condition on no column: only the row numbers
                    for lo in range(0, n, step):
                        rows = as_arrow(np.arange(lo, min(n, lo + step), dtype=np.int64))
                        yield pa.RecordBatch.from_arrays([rows], schema=schema)
                    return
                pf = pq.ParquetFile(f, buffer_size=1 << 20, pre_buffer=False)
                try:
                    lo = 0
                    for b in pf.iter_batches(batch_size=step, columns=cols):
                        rows = as_arrow(np.arange(lo, lo + b.num_rows, dtype=np.int64))
                        lo += b.num_rows
                        yield pa.RecordBatch.from_arrays([b.column(c) for c in cols] + [rows], schema=schema)
                finally:
                    _close(pf)
            except Exception as e:  # runs on DuckDB's thread: kept to be named below
                failed.append(e)
                raise

        def mark(rows: np.ndarray) -> None:
            mask[rows] = True

        try:
            con.run(cond, self.who, pa.RecordBatchReader.from_batches(schema, batches()), mark)
        except ValueError:
            if failed:
                raise ValueError(f"{self.who}: {str(f)!r} cannot be read: {failed[0]}") from None
            raise
        return mask

    def _compute_shapes(self) -> dict[str, tuple]:
        import pyarrow.parquet as pq

        def first_rows(names: list[str]) -> Any:
            for f, n in zip(self.files, self.counts):
                if not n:
                    continue
                pf = pq.ParquetFile(f)
                try:
                    for b in pf.iter_batches(batch_size=1024, columns=names):
                        if b.num_rows:
                            return b
                finally:
                    _close(pf)
            return None

        return _arrow_shapes(self.schema, None, first_rows, self.column_names)

    def _total_rows(self) -> int:
        return int(self.bases[-1])

    def _batches(self, columns: list[str], batch_rows: int) -> Iterator[Pool]:
        if self.query is None:
            return self._plain_batches(columns, batch_rows)
        return self._query_batches(columns, batch_rows)

    def _plain_batches(self, columns: list[str], batch_rows: int) -> Iterator[Pool]:
        import pyarrow.parquet as pq

        if not columns:  # nothing to read: the row counts are in the metadata
            total = int(self.bases[-1])
            for start in range(0, total, batch_rows):
                yield Pool({}, min(batch_rows, total - start), start)
            return

        def record_batches() -> Iterator[Any]:
            for f, n in zip(self.files, self.counts):
                if not n:
                    continue
                # Pages are read through a 1 MiB buffer and nothing is pre-buffered:
                # memory stays about one batch (pyarrow's defaults read a whole row
                # group's column chunks at once, the whole file for a 1 GB file).
                pf = pq.ParquetFile(f, buffer_size=1 << 20, pre_buffer=False)
                try:
                    yield from pf.iter_batches(batch_size=batch_rows, columns=columns)
                finally:
                    _close(pf)

        offset = 0
        for t in _rebatch(record_batches(), batch_rows):
            yield _to_pool(self.who, t, columns, t.num_rows, offset, None)
            offset += t.num_rows

    def _query_batches(self, columns: list[str], batch_rows: int, masks: Optional[list] = None) -> Iterator[Pool]:
        """Two passes per file: DuckDB finds the matching rows (`_match_mask`), then
        pyarrow streams the requested columns of the row groups holding any, keeping
        the matching rows of each batch. Memory: a byte per row of the file for the
        mask, and about one batch of data (DuckDB itself would hold whole row groups)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        def record_batches() -> Iterator[Any]:
            con = _connect() if masks is None else None
            try:
                for i, (f, n, base) in enumerate(zip(self.files, self.counts, self.bases)):
                    if not n:
                        continue
                    mask = masks[i] if masks is not None else self._match_mask(con, i)
                    if not mask.any():
                        continue
                    rg_bases = np.concatenate([[0], np.cumsum(self.row_groups[i])]).astype(np.int64)
                    pf = pq.ParquetFile(f, buffer_size=1 << 20, pre_buffer=False)
                    try:
                        for g in range(len(self.row_groups[i])):
                            lo, hi = int(rg_bases[g]), int(rg_bases[g + 1])
                            if not mask[lo:hi].any():  # a row group without matches is not read
                                continue
                            start = lo
                            for b in pf.iter_batches(batch_size=batch_rows, row_groups=[g], columns=columns):
                                sel = mask[start : start + b.num_rows]
                                rows = np.flatnonzero(sel) + (start + int(base))
                                start += b.num_rows
                                if rows.size == 0:
                                    continue
                                if rows.size < b.num_rows:
                                    b = _filter(b, sel)
                                arrays = [b.column(j) for j in range(b.num_columns)] + [as_arrow(rows)]
                                yield pa.RecordBatch.from_arrays(arrays, names=list(b.schema.names) + [ROW])
                    finally:
                        _close(pf)
            finally:
                if con is not None:
                    con.close()

        offset = 0
        for t in _rebatch(record_batches(), batch_rows):
            rn = t.column(ROW).to_numpy().astype(np.int64, copy=False)
            yield _to_pool(self.who, t, columns, t.num_rows, offset, rn)
            offset += t.num_rows

    def read(self, columns: Optional[Iterable[str]] = None) -> Pool:
        if self.query is None:
            return super().read(columns)
        cols = self._columns(columns)
        con = _connect()
        try:
            masks = [self._match_mask(con, i) if n else np.zeros(0, bool) for i, n in enumerate(self.counts)]
        finally:
            con.close()
        n = int(sum(int(m.sum()) for m in masks))
        if n == 0:
            return self._empty_pool(cols)
        checked = self._checked(self._query_batches(cols, BATCH_ROWS, masks))
        return _concat(checked, cols, n)

    def _take(self, rows: np.ndarray, columns: list[str]) -> Pool:
        import pyarrow as pa
        import pyarrow.parquet as pq

        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        pieces = []
        file_of = np.searchsorted(self.bases, sorted_rows, side="right") - 1
        for fi in np.unique(file_of):
            local = sorted_rows[file_of == fi] - self.bases[fi]
            rg_bases = np.concatenate([[0], np.cumsum(self.row_groups[fi])]).astype(np.int64)
            rg_of = np.searchsorted(rg_bases, local, side="right") - 1
            pf = pq.ParquetFile(self.files[fi])
            try:
                for g in np.unique(rg_of):
                    in_g = local[rg_of == g] - rg_bases[g]
                    t = pf.read_row_group(int(g), columns=columns)
                    pieces.append(t.take(as_arrow(in_g)))
            finally:
                _close(pf)
        if pieces:
            t = pa.concat_tables(pieces)
            inverse = np.empty_like(order)
            inverse[order] = np.arange(len(order))
            t = t.take(as_arrow(inverse))
        else:
            t = self.schema.empty_table().select(columns)
        return _to_pool(self.who, t, columns, len(rows), 0, rows)


# -- helpers ---------------------------------------------------------------------------


@contextlib.contextmanager
def _thread_failures_as_memory(who: str) -> Iterator[None]:
    """pyarrow starts its reading threads on first use; under an address-space cap
    (``ulimit -v``) a thread's stack cannot be mapped and pyarrow says "Failed to launch
    worker thread". That is memory running out, and is raised as MemoryError like any
    other allocation that fails."""
    try:
        yield
    except Exception as e:
        if type(e).__module__.split(".")[0] == "pyarrow" and "Failed to launch worker thread" in str(e):
            raise MemoryError(
                f"{who}: pyarrow could not start a thread to read the pool ({e}): out of "
                "memory (address space) or past the process's thread limit"
            ) from None
        raise


def _per_row(shape: tuple) -> str:
    if len(shape) == 1:
        return f"a list of {shape[0]} values"
    return f"lists of shape {shape}"


def _check_names(names: Sequence[str], who: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"{who}: the pool has two columns named {n!r}")
        if n == ROW:
            raise ValueError(f"{who}: the column name {ROW!r} is reserved")
        seen.add(n)


def _hidden(rel: Path) -> bool:
    return any(part.startswith((".", "_")) for part in rel.parts)


def _close(pf: Any) -> None:
    close = getattr(pf, "close", None)
    if close is not None:
        close()


def _schema_text(schema: Any) -> str:
    return ", ".join(f"{n} {t}" for n, t in zip(schema.names, schema.types))


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
        from ._boxes import boxes_column

        try:
            return boxes_column(name, value)  # type: ignore[return-value]
        except ValueError as e:
            raise ValueError(f"{who}: {e}") from None
    if isinstance(value, np.ndarray):
        return value
    if type(value).__module__.split(".")[0] == "pyarrow":
        if name == "id":
            return id_array(who, value)
        return _arrow_column(who, name, value, lambda p: f"row {p}")
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
                return _arrow_column(who, name, arr, lambda p: f"row {p}")
        raise ValueError(f"{who}: pool column {name!r} is not an array: {e}") from None


def _common_length(columns: dict[str, np.ndarray], who: str) -> int:
    lengths = {name: arr.shape[0] for name, arr in columns.items()}
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"{k}: {v}" for k, v in lengths.items())
        raise ValueError(f"{who}: pool columns have different numbers of rows ({listing})")
    return next(iter(lengths.values()), 0)


def _to_arrow_table(pool: Any, who: str) -> Any:
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
    from ._arrow import numpy_to_arrow

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


def _arrow_column(who: str, name: str, data: Any, label: Callable[[int], str]) -> np.ndarray:
    from ._arrow import field_to_numpy, metadata_to_numpy

    if name in BOX_FIELDS:
        from ._boxes import boxes_from_arrow

        try:
            return boxes_from_arrow(name, data, label)  # type: ignore[return-value]
        except ValueError as e:
            raise ValueError(f"{who}: {e}") from None
    if name in FIELD_SHAPES:
        try:
            return field_to_numpy(name, data, label)
        except ValueError as e:
            raise ValueError(f"{who}: {e}") from None
    return metadata_to_numpy(data)


def _to_pool(
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
            cols[name] = _arrow_column(who, name, table.column(name), label)
    return Pool({c: cols[c] for c in columns}, n, offset, row_numbers)


def _arrow_shapes(schema: Any, n: Optional[int], first_rows: Callable[[list[str]], Any], names: Optional[list[str]] = None) -> dict[str, tuple]:
    from ._arrow import row_dims, type_dims

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


def _filter(batch: Any, keep: np.ndarray) -> Any:
    """The rows of an Arrow record batch where `keep` is True; rectangular variable
    lists are filtered as fixed-size lists (8x faster than Arrow's list filter)."""
    import pyarrow as pa

    from ._arrow import as_fixed_size

    mask = as_arrow(keep)
    # Only rectangular fields: a column whose rows may differ in length (box lists,
    # metadata lists) would become fixed-size in one batch and not in the next, and the
    # batches could not be put back together.
    names = list(batch.schema.names)
    arrays = [
        (as_fixed_size(batch.column(j)) if names[j] in FIELD_SHAPES and names[j] not in BOX_FIELDS
         else batch.column(j)).filter(mask)
        for j in range(batch.num_columns)
    ]
    return pa.RecordBatch.from_arrays(arrays, names=list(batch.schema.names))


def _rebatch(batches: Iterator[Any], batch_rows: int) -> Iterator[Any]:
    """Arrow record batches regrouped into tables of exactly `batch_rows` rows (the last
    shorter), each column one chunk."""
    import pyarrow as pa

    pending: list[Any] = []
    count = 0
    for b in batches:
        while b.num_rows:
            take = min(batch_rows - count, b.num_rows)
            pending.append(b.slice(0, take))
            count += take
            b = b.slice(take)
            if count == batch_rows:
                yield pa.Table.from_batches(pending).combine_chunks()
                pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending).combine_chunks()


def _concat(batches: Iterator[Pool], columns: list[str], n: Optional[int]) -> Pool:
    """One Pool from batches: into arrays allocated once when the row count is known,
    else concatenated at the end."""
    if n is not None:
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
    parts: list[Pool] = [b for b in batches if b.n_rows]
    if not parts:
        return Pool({}, 0)
    cols = {c: _concat_column([p.columns[c] for p in parts]) for c in columns}
    total = sum(p.n_rows for p in parts)
    rns = np.concatenate([p.source_rows(np.arange(p.n_rows)) for p in parts])
    return Pool(cols, total, 0, rns)


def _concat_column(pieces: list) -> Any:
    if isinstance(pieces[0], np.ndarray):
        return np.concatenate(pieces)
    from ._boxes import BoxColumn

    return BoxColumn.concatenate(pieces)


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


# -- DuckDB ----------------------------------------------------------------------------


def _connect() -> Any:
    """A `_query.Session`: a DuckDB connection that reaches nothing but the data handed
    to it, with the query limits (memory, threads, time) of one pass over a pool."""
    from ._query import Session

    return Session()


def _match_rows(who: str, table: Any, query: str) -> np.ndarray:
    """The row numbers (sorted) of an in-memory table's rows that pass the query; the
    table carries the row numbers as column ROW. The query is checked first (see
    `pickaxe._query`); DuckDB then reads only the columns it names."""
    from ._query import compile_query

    visible = table.schema.remove(table.schema.get_field_index(ROW))
    cond = compile_query(query, who, visible)
    parts: list = []
    with _connect() as session:
        session.run(cond, who, table.select(list(cond.columns) + [ROW]), parts.append)
    if not parts:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate(parts).astype(np.int64, copy=False))
