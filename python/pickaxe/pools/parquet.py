"""Parquet pools: a file, or a folder of files read as one pool, streamed a batch at a time.

A folder's pool is every ``*.parquet`` file below it (names starting with ``.`` or ``_``
skipped), in sorted order of their relative paths, all with the same schema; its rows are
numbered file after file. pyarrow reads only the requested columns, a batch at a time;
with a query, DuckDB first finds each file's matching rows (`ParquetSource._match_mask`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from .._fields import FIELD_SHAPES
from .arrow import as_arrow, as_fixed_size, metadata_to_numpy, schema_text
from .boxes import BOX_FIELDS
from .connection import ROW
from .pool import BATCH_ROWS, Pool, concat
from .prefetch import prefetched
from .query import Session
from .query_check import compile_query
from .source import PoolSource
from .tables import arrow_shapes, check_names, to_pool

__all__ = ["ParquetSource", "parquet_file", "close_file", "rebatch"]


class ParquetSource(PoolSource):
    """A Parquet file or folder, read a batch at a time.

    pyarrow reads the requested columns batch by batch (``ParquetFile.iter_batches``,
    pages through a 1 MiB buffer), file after file. With a query, each file is first
    streamed through DuckDB's check of the condition: pyarrow reads only the columns the
    query names, a batch at a time, and DuckDB (on a connection that cannot open files
    itself, see `pickaxe.pools.connection`) returns the matching rows' numbers; then the stream
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
                close_file(pf)
            s = s.remove_metadata()
            if schema is None:
                schema = s
            elif not s.equals(schema):
                raise ValueError(f"{who}: {str(f)!r} has columns {schema_text(s)}; {str(files[0])!r} has {schema_text(schema)}: every file of a pool needs the same columns")
        assert schema is not None
        keep = [i for i, n in enumerate(schema.names) if not n.startswith("__index_level_")]
        self.schema = schema
        self.column_names = [schema.names[i] for i in keep]
        check_names(self.column_names, who)
        self.types = {schema.names[i]: str(schema.types[i]) for i in keep}
        self.counts = np.asarray(counts, dtype=np.int64)
        self.bases = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.row_groups = row_groups
        if query is not None:
            import pyarrow as pa

            # checked (parsed and bound, nothing run) before any data is read
            visible = pa.schema([schema.field(n) for n in self.column_names])
            self._condition = compile_query(query, who, visible)
        self.n_rows = int(self.bases[-1]) if query is None else None

    def _match_mask(self, con: Any, i: int) -> np.ndarray:
        """Which rows of file i pass the query (bool, one per row). pyarrow streams the
        columns the query names, a batch at a time, with each row's number in the file;
        DuckDB evaluates the condition on that stream within `con` (a
        `pickaxe.pools.query.Session`: its connection, limits and time budget)."""
        import pyarrow as pa

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
                with parquet_file(f, streamed=True) as pf:
                    lo = 0
                    for b in pf.iter_batches(batch_size=step, columns=cols):
                        rows = as_arrow(np.arange(lo, lo + b.num_rows, dtype=np.int64))
                        lo += b.num_rows
                        yield pa.RecordBatch.from_arrays([b.column(c) for c in cols] + [rows], schema=schema)
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
        def first_rows(names: list[str]) -> Any:
            for f, n in zip(self.files, self.counts):
                if not n:
                    continue
                with parquet_file(f) as pf:
                    for b in pf.iter_batches(batch_size=1024, columns=names):
                        if b.num_rows:
                            return b
            return None

        return arrow_shapes(self.schema, None, first_rows, self.column_names)

    def total_rows(self) -> int:
        return int(self.bases[-1])

    def _batches(self, columns: list[str], batch_rows: int) -> Iterator[Pool]:
        if self.query is None:
            return self._plain_batches(columns, batch_rows)
        return self._query_batches(columns, batch_rows)

    def _row_group_bases(self, i: int) -> np.ndarray:
        """The first row of each row group of file i, and its row count last."""
        return np.concatenate([[0], np.cumsum(self.row_groups[i])]).astype(np.int64)

    def _as_pools(self, batches: Iterator[Any], columns: list[str], batch_rows: int) -> Iterator[Pool]:
        """Record batches regrouped into Pools of exactly `batch_rows` rows (the last
        shorter); a ROW column, when the batches have one, holds the rows' numbers."""
        offset = 0
        for t in rebatch(batches, batch_rows):
            rn = metadata_to_numpy(t.column(ROW)).astype(np.int64, copy=False) if ROW in t.column_names else None
            yield to_pool(self.who, t, columns, t.num_rows, offset, rn)
            offset += t.num_rows

    def _plain_batches(self, columns: list[str], batch_rows: int) -> Iterator[Pool]:
        if not columns:  # nothing to read: the row counts are in the metadata
            total = int(self.bases[-1])
            for start in range(0, total, batch_rows):
                yield Pool({}, min(batch_rows, total - start), start)
            return

        def record_batches() -> Iterator[Any]:
            for f, n in zip(self.files, self.counts):
                if not n:
                    continue
                with parquet_file(f, streamed=True) as pf:
                    yield from pf.iter_batches(batch_size=batch_rows, columns=columns)

        # decoded and converted on a reader thread while the caller scores (`prefetched`)
        yield from prefetched(self._as_pools(record_batches(), columns, batch_rows))

    def _query_batches(self, columns: list[str], batch_rows: int, masks: Optional[list] = None) -> Iterator[Pool]:
        """Two passes per file: DuckDB finds the matching rows (`_match_mask`), then
        pyarrow streams the requested columns of the row groups holding any, keeping
        the matching rows of each batch. Memory: a byte per row of the file for the
        mask, and about one batch of data (DuckDB itself would hold whole row groups)."""
        import pyarrow as pa

        con = Session() if masks is None else None

        def record_batches() -> Iterator[Any]:
            for i, (f, n, base) in enumerate(zip(self.files, self.counts, self.bases)):
                if not n:
                    continue
                mask = masks[i] if masks is not None else self._match_mask(con, i)
                if not mask.any():
                    continue
                rg_bases = self._row_group_bases(i)
                with parquet_file(f, streamed=True) as pf:
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

        # both passes run on a reader thread (`prefetched`); stopping early interrupts
        # a DuckDB pass it may be waiting on
        try:
            yield from prefetched(
                self._as_pools(record_batches(), columns, batch_rows),
                None if con is None else con.interrupt,
            )
        finally:
            if con is not None:
                con.close()

    def read(self, columns: Optional[Iterable[str]] = None) -> Pool:
        if self.query is None:
            return super().read(columns)
        cols = self._columns(columns)
        con = Session()
        try:
            masks = [self._match_mask(con, i) if n else np.zeros(0, bool) for i, n in enumerate(self.counts)]
        finally:
            con.close()
        n = int(sum(int(m.sum()) for m in masks))
        if n == 0:
            return self.empty_pool(cols)
        checked = self._checked(self._query_batches(cols, BATCH_ROWS, masks))
        return concat(checked, cols, n)

    def _take(self, rows: np.ndarray, columns: list[str]) -> Pool:
        import pyarrow as pa

        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        pieces = []
        file_of = np.searchsorted(self.bases, sorted_rows, side="right") - 1
        for fi in np.unique(file_of):
            local = sorted_rows[file_of == fi] - self.bases[fi]
            rg_bases = self._row_group_bases(fi)
            rg_of = np.searchsorted(rg_bases, local, side="right") - 1
            with parquet_file(self.files[fi]) as pf:
                for g in np.unique(rg_of):
                    in_g = local[rg_of == g] - rg_bases[g]
                    t = pf.read_row_group(int(g), columns=columns)
                    pieces.append(t.take(as_arrow(in_g)))
        if pieces:
            t = pa.concat_tables(pieces)
            inverse = np.empty_like(order)
            inverse[order] = np.arange(len(order))
            t = t.take(as_arrow(inverse))
        else:
            t = self.schema.empty_table().select(columns)
        return to_pool(self.who, t, columns, len(rows), 0, rows)


# -- helpers ---------------------------------------------------------------------------


# -- helpers ---------------------------------------------------------------------------


@contextlib.contextmanager
def parquet_file(path: Any, streamed: bool = False) -> Iterator[Any]:
    """A pyarrow ParquetFile, closed on leaving the block. ``streamed``: pages are read
    through a 1 MiB buffer and nothing is pre-buffered, so memory stays about one batch
    (pyarrow's defaults read a whole row group's column chunks at once, the whole file
    for a 1 GB file)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False) if streamed else pq.ParquetFile(path)
    try:
        yield pf
    finally:
        close_file(pf)


def close_file(pf: Any) -> None:
    """Close a ParquetFile (older pyarrow has no ``close``)."""
    close = getattr(pf, "close", None)
    if close is not None:
        close()


def _hidden(rel: Path) -> bool:
    return any(part.startswith((".", "_")) for part in rel.parts)


def _filter(batch: Any, keep: np.ndarray) -> Any:
    """The rows of an Arrow record batch where `keep` is True; rectangular variable
    lists are filtered as fixed-size lists (8x faster than Arrow's list filter)."""
    import pyarrow as pa

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
