"""Decoded Parquet pieces assembled into the caller's batches: each file's rows that pass
the query (`Matches`, found on a reader thread while others decode) and the windows that
cut pieces into Pools of exactly ``batch_rows`` rows, copying each kept row once at most
(`Windows`); `rebatch` regroups Arrow record batches the same way for Ray Datasets."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import numpy as np

from .._fields import FIELD_SHAPES
from .arrow import as_arrow, as_fixed_size, primitive_values
from .boxes import BOX_FIELDS
from .pool import Pool
from .tables import to_pool

if TYPE_CHECKING:
    from .parquet import ParquetSource

__all__ = ["Matches", "Stopped", "Windows", "rebatch", "SPARSE"]

#: A batch of which fewer than one row in this many pass the query is cut down to those
#: rows as soon as it is read, so that the batches held while a batch of matching rows
#: fills up stay within a few batches' memory.
SPARSE = 4


class Stopped(Exception):
    """The caller stopped reading: a reader waiting on a file's matches gives up."""


class Matches:
    """Each file's rows that pass the query (a bool per row), found by `find` on a
    reader thread in a unit of work of its own before the file's row groups; other
    readers ask whether they are `known`, or `wait` for them. One DuckDB pass runs at a
    time on the session."""

    def __init__(self, mask_of: Callable[[int], np.ndarray], masks: Optional[list]) -> None:
        self.mask_of = mask_of  # file i's matches, by a DuckDB pass
        self._masks: dict[int, np.ndarray] = dict(enumerate(masks)) if masks is not None else {}
        self._failed: set[int] = set()
        self._cancelled = False
        self._changed = threading.Condition()
        self._running = threading.Lock()

    def find(self, i: int) -> None:
        if i in self._masks:
            return
        try:
            with self._running:
                if self._cancelled:
                    raise Stopped()
                mask = self.mask_of(i)
        except BaseException:
            with self._changed:
                self._failed.add(i)
                self._changed.notify_all()
            raise
        with self._changed:
            self._masks[i] = mask
            self._changed.notify_all()

    def known(self, i: int) -> Optional[np.ndarray]:
        return self._masks.get(i)

    def wait(self, i: int) -> np.ndarray:
        """File i's matches once found. When finding them failed, that error is raised
        by their own unit, which comes first: here `Stopped` only ends the reader."""
        with self._changed:
            while i not in self._masks:
                if i in self._failed or self._cancelled:
                    raise Stopped()
                self._changed.wait()
            return self._masks[i]

    def forget_before(self, i: int) -> None:
        """Drop the matches of files before i (every reader is past them)."""
        with self._changed:  # readers add files' matches meanwhile
            for j in [j for j in self._masks if j < i]:
                del self._masks[j]

    def cancel(self) -> None:
        with self._changed:
            self._cancelled = True
            self._changed.notify_all()


class Windows:
    """Decoded pieces (record batches of `ParquetSource._read_rows` rows) cut into
    Pools of exactly `batch_rows` rows (the last shorter), keeping only the matching
    rows when there is a query.

    Each kept row is copied once at most: a batch of rows lying in one piece is a slice
    of it (no copy), and one gathered from several pieces, or from the matching rows of
    a piece, is gathered straight into its own arrays (numpy for numeric columns and
    fixed-size lists of numbers without nulls, into memory from pyarrow's pool; Arrow's
    ``take`` and a concatenation for other columns). A piece in which few rows match
    (fewer than one in `SPARSE`) is cut down to them at once, so that memory stays a
    few pieces while a batch of matching rows fills up.
    """

    def __init__(self, source: "ParquetSource", columns: list[str], batch_rows: int, matches: Optional[Matches]) -> None:
        self.source = source
        self.columns = columns
        self.batch_rows = batch_rows
        self.matches = matches
        self.fields = {c for c in columns if c in FIELD_SHAPES and c not in BOX_FIELDS}

    def pools(self, pieces: Iterator[tuple[Any, int, int]]) -> Iterator[Pool]:
        window: list[tuple[Any, Optional[np.ndarray], int, int]] = []  # (batch, take, a, b)
        rows: list[np.ndarray] = []  # the window's rows' numbers, with a query
        count = offset = 0
        for b, i, start in pieces:
            take, numbers = None, None
            first = int(self.source.bases[i]) + start
            if self.matches is not None:
                self.matches.forget_before(i)
                sel = self.matches.wait(i)[start : start + b.num_rows]
                picked = np.flatnonzero(sel)
                if picked.size == 0:
                    continue
                numbers = picked + first
                if picked.size * SPARSE < b.num_rows:
                    b = b.filter(as_arrow(sel))  # few rows: copied out now, the batch let go
                elif picked.size < b.num_rows:
                    take = picked
            kept = b.num_rows if take is None else len(take)
            pos = 0
            while pos < kept:
                k = min(self.batch_rows - count, kept - pos)
                window.append((b, take, pos, pos + k))
                if numbers is not None:
                    rows.append(numbers[pos : pos + k])
                count += k
                pos += k
                if count == self.batch_rows:
                    yield self._pool(window, rows, count, offset)
                    offset += count
                    window, rows, count = [], [], 0
        if count:
            yield self._pool(window, rows, count, offset)

    def _pool(self, window: list, rows: list[np.ndarray], n: int, offset: int) -> Pool:
        import pyarrow as pa

        names = list(window[0][0].schema.names)
        arrays = [self._column(name, [(b.column(name), take, a, z) for b, take, a, z in window], n) for name in names]
        batch = pa.RecordBatch.from_arrays(arrays, names=names) if names else None
        if batch is None:
            return Pool({}, n, offset, self._numbers(rows))
        return to_pool(self.source.who, batch, self.columns, n, offset, self._numbers(rows))

    def _numbers(self, rows: list[np.ndarray]) -> Optional[np.ndarray]:
        if self.matches is None:
            return None
        return rows[0].astype(np.int64) if len(rows) == 1 else np.concatenate(rows).astype(np.int64, copy=False)

    def _column(self, name: str, parts: list[tuple[Any, Optional[np.ndarray], int, int]], n: int) -> Any:
        import pyarrow as pa

        if len(parts) == 1 and parts[0][1] is None:
            col, _, a, z = parts[0]
            return col.slice(a, z - a)
        views = [_flat_view(col, name in self.fields) for col, _, _, _ in parts]
        first = views[0]
        if first is not None and all(v is not None and v.dtype == first.dtype and v.shape[1:] == first.shape[1:] for v in views):
            out = _empty((n,) + first.shape[1:], first.dtype)
            pos = 0
            for v, (_, take, a, z) in zip(views, parts):
                if take is None:
                    out[pos : pos + z - a] = v[a:z]
                else:  # mode "clip": the indices are valid, and numpy then writes into `out` directly
                    np.take(v, take[a:z], axis=0, out=out[pos : pos + z - a], mode="clip")
                pos += z - a
            return _nested_arrow(out)
        pieces = [col.slice(a, z - a) if take is None else col.take(as_arrow(take[a:z])) for col, take, a, z in parts]
        return pieces[0] if len(pieces) == 1 else pa.concat_arrays(pieces)


def _flat_view(col: Any, field: bool) -> Optional[np.ndarray]:
    """The values of an Arrow column of numbers, or of (nested) fixed-size lists of
    numbers (a field's rectangular variable lists read as such), as an (n, *dims) numpy
    view without a copy; None for anything else, or when any level holds a null."""
    import pyarrow as pa

    arr = as_fixed_size(col) if field else col
    n = len(arr)
    dims: list[int] = []
    while pa.types.is_fixed_size_list(arr.type):
        if arr.null_count:
            return None
        d = int(arr.type.list_size)
        arr = arr.values.slice(arr.offset * d, len(arr) * d)
        dims.append(d)
    t = arr.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)) or arr.null_count:
        return None
    return primitive_values(arr).reshape((n, *dims))


def _empty(shape: tuple, dtype: np.dtype) -> np.ndarray:
    """An uninitialised array in pyarrow's memory pool, whose freed blocks (earlier
    batches') are used again: numpy's own large arrays are fresh pages from the kernel
    each time (filling 60 arrays of 26 MB took 0.34 s of CPU into numpy's, 0.14 s into
    pyarrow's)."""
    import pyarrow as pa

    count = int(np.prod(shape, dtype=np.int64))
    buf = pa.allocate_buffer(count * dtype.itemsize)
    return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)


def _nested_arrow(x: np.ndarray) -> Any:
    """An (n, *dims) numpy array as an Arrow array of nested fixed-size lists over its
    values, without a copy."""
    import pyarrow as pa

    out = as_arrow(x.reshape(-1))
    for d in reversed(x.shape[1:]):
        out = pa.FixedSizeListArray.from_arrays(out, int(d))
    return out


def rebatch(batches: Iterator[Any], batch_rows: int) -> Iterator[Any]:
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
