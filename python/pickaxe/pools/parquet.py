"""Parquet pools: a file, or a folder of files read as one pool, streamed a batch at a time.

A folder's pool is every ``*.parquet`` file below it (names starting with ``.`` or ``_``
skipped), in sorted order of their relative paths, all with the same schema; its rows are
numbered file after file. pyarrow reads only the requested columns, a batch at a time,
row groups on several reader threads at once (`READERS`); with a query, DuckDB first
finds each file's matching rows (`ParquetSource._match_mask`).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from .arrow import as_arrow, schema_text
from .connection import ROW
from .pool import BATCH_ROWS, Pool, concat
from .prefetch import in_order
from .query import Session
from .query_check import compile_query
from .source import PoolSource
from .tables import arrow_shapes, check_names, to_pool
from .windows import Matches, Windows

__all__ = ["ParquetSource", "parquet_file", "close_file", "reader_count", "READERS", "READ_AHEAD_BYTES"]

#: Threads decoding a Parquet pool's row groups: None for the kernels' thread count
#: (`pickaxe.set_num_threads`, by default the number of cores); 0 to decode on the
#: caller's thread.
READERS: Optional[int] = None
#: Decoded bytes the reader threads may hold ahead of the caller, in all (at least one
#: batch each).
READ_AHEAD_BYTES = 256 << 20
#: The largest buffer of one column pyarrow decodes at a time (see
#: `ParquetSource._read_rows`).
PIECE_BYTES = 8 << 20


class ParquetSource(PoolSource):
    """A Parquet file or folder, read a batch at a time.

    pyarrow reads the requested columns batch by batch (``ParquetFile.iter_batches``,
    pages through a 1 MiB buffer), row group after row group, several row groups at once
    on reader threads while the caller scores (see `_stream`). With a query, each file is first
    streamed through DuckDB's check of the condition: pyarrow reads only the columns the
    query names, a batch at a time, and DuckDB (on a connection that cannot open files
    itself, see `pickaxe.pools.connection`) returns the matching rows' numbers; then the stream
    keeps the matching rows, skipping row groups without any. Batches are cut to exactly
    `batch_rows` rows (across files and row groups), the last one shorter, each row
    copied once at most (`Windows`).
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
        sizes: dict[str, float] = {}  # leaf column path -> decoded bytes per row
        for f in files:
            try:
                pf = pq.ParquetFile(f)
            except Exception as e:  # pyarrow raises ArrowInvalid / OSError
                raise ValueError(f"{who}: {str(f)!r} is not a readable Parquet file: {e}") from None
            try:
                md = pf.metadata
                counts.append(md.num_rows)
                row_groups.append([md.row_group(i).num_rows for i in range(md.num_row_groups)])
                if not sizes:
                    sizes = _leaf_bytes_per_row(md)
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
        #: decoded bytes per row of each column, from the first row group's sizes: what a
        #: batch of it costs to hold (`_depth`)
        self._row_bytes = {
            n: sum(b for path, b in sizes.items() if path == n or path.startswith(n + "."))
            for n in self.column_names
        }
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
        coded = _coded_strings(f, [c for c in cols if _is_text(self.schema.field(c).type)]) if cols else []
        fields = [self.schema.field(c) for c in cols]
        fields = [fd.with_type(pa.dictionary(pa.int32(), fd.type)) if fd.name in coded else fd for fd in fields]
        schema = pa.schema(fields + [pa.field(ROW, pa.int64())])
        step = 1 << 16
        failed: list = []

        def batches() -> Iterator[Any]:
            try:
                if not cols:  # a condition on no column: only the row numbers
                    for lo in range(0, n, step):
                        rows = as_arrow(np.arange(lo, min(n, lo + step), dtype=np.int64))
                        yield pa.RecordBatch.from_arrays([rows], schema=schema)
                    return
                with parquet_file(f, streamed=True, read_dictionary=coded) as pf:
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
        if not columns and self.query is None:  # nothing to read: the row counts are in the metadata
            return _counted(int(self.bases[-1]), batch_rows)
        return self._stream(columns, batch_rows)

    def _row_group_bases(self, i: int) -> np.ndarray:
        """The first row of each row group of file i, and its row count last."""
        return np.concatenate([[0], np.cumsum(self.row_groups[i])]).astype(np.int64)

    def _stream(self, columns: list[str], batch_rows: int, masks: Optional[list] = None) -> Iterator[Pool]:
        """The pool's rows (that pass the query) in batches of exactly `batch_rows`.

        Row groups are decoded on reader threads (`pickaxe.pools.prefetch.in_order`:
        unit of work ``j`` on thread ``j % readers``), handed over in order, and cut
        into batches on this thread (`Windows`), so that batches and picks are those
        of one reader. With a query, a unit of work
        before each file's row groups finds its matching rows with DuckDB
        (`_match_mask`; `masks` when they are known already); a row group without any
        is not read. Memory: each reader queues a bounded number of decoded batches
        (`READ_AHEAD_BYTES` in all), plus a byte per row of a file for its matches.
        """
        query = self.query is not None
        session = Session() if query and masks is None else None
        matches = Matches(lambda i: self._match_mask(session, i), masks) if query else None
        units: list[tuple[int, int]] = []  # (file, row group), a group -1 for its matches
        for i, groups in enumerate(self.row_groups):
            if query and self.counts[i]:
                units.append((i, -1))
            units.extend((i, g) for g, n in enumerate(groups) if n)
        readers = reader_count()
        threads = readers < 2  # one reader: pyarrow's threads decode columns in parallel
        rows = self._read_rows(columns, batch_rows)
        depth = self._depth(columns, rows, readers)

        def read(share: list[tuple[int, int]]) -> Iterator[Iterator[Any]]:
            """On a reader thread: its units in order, each file opened once."""
            pf, opened = None, -1
            handed: list = []  # batches handed over, let go here when the caller is done (`_let_go`)
            try:
                for i, g in share:
                    if g < 0:
                        assert matches is not None
                        matches.find(i)
                        yield iter(())
                        continue
                    if i != opened:
                        if pf is not None:
                            close_file(pf)
                            pf = None
                        pf = _open_streamed(self.files[i])
                        opened = i
                    yield self._row_group(pf, i, g, columns, rows, threads, matches, handed)
            finally:
                handed.clear()
                if pf is not None:
                    close_file(pf)

        def stop() -> None:  # the caller stopped early: wake readers blocked on a query
            if session is not None:
                session.interrupt()
            if matches is not None:
                matches.cancel()

        pieces = in_order(units, read, readers, depth, stop)
        try:
            yield from Windows(self, columns, batch_rows, matches).pools(pieces)
        finally:
            pieces.close()  # the readers stopped and joined, also when cutting failed here
            if session is not None:
                session.close()

    def _row_group(
        self, pf: Any, i: int, g: int, columns: list[str], rows: int, threads: bool, matches: "Optional[Matches]",
        handed: list,
    ) -> Iterator[tuple[Any, int, int]]:
        """Row group g of file i as record batches of `rows` rows: (batch, file i, the
        batch's first row in the file). With a query, a row group without matching rows is not read when its
        file's matches are known already; when they are not yet, it is read while they
        are found, and its batches are dropped later (`Windows`): either way nothing
        of it is used and none of its faults raised, as if it had never been read."""
        lo, hi = (int(x) for x in self._row_group_bases(i)[g : g + 2])
        if matches is not None:
            known = matches.known(i)
            if known is not None and not known[lo:hi].any():
                return
        start = lo
        try:
            for b in pf.iter_batches(batch_size=rows, row_groups=[g], columns=columns, use_threads=threads):
                handed.append(b)
                yield b, i, start
                start += b.num_rows
                del b
                _let_go(handed)  # before decoding the next piece, into the memory just freed
        except Exception:
            if matches is None or matches.wait(i)[lo:hi].any():
                raise

    def _read_rows(self, columns: list[str], batch_rows: int) -> int:
        """Rows pyarrow decodes at a time: `batch_rows`, or fewer so that no column's
        buffer passes `PIECE_BYTES`. pyarrow grows a column's buffer as it decodes a
        batch; past a few MiB each step is memory fresh from the kernel, whose page
        faults cost (2,000,000 x 100 float32 logits: 0.48 s of system time in batches of
        65,536 rows, 0.20 s in batches of 16,384, the same user time); the pieces are
        then gathered into the caller's batches, one copy, in reused memory."""
        widest = max((self._row_bytes.get(c, 0.0) for c in columns), default=0.0)
        if widest <= 0:
            return batch_rows
        return int(min(batch_rows, max(1024, PIECE_BYTES // widest)))

    def _depth(self, columns: list[str], rows: int, readers: int) -> int:
        """Pieces of `rows` rows each reader may queue: enough to decode a whole row
        group ahead of the caller while the other readers' groups are taken (every
        reader busy), within `READ_AHEAD_BYTES` for all of them."""
        per_row = sum(self._row_bytes.get(c, 0.0) for c in columns)
        piece = max(1.0, per_row * rows)
        longest = max((n for groups in self.row_groups for n in groups), default=1)
        need = -(-longest // rows)  # pieces in the largest row group
        fits = int(READ_AHEAD_BYTES // (piece * max(1, readers))) - 1
        return max(1, min(need, fits))

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
        checked = self._checked(self._stream(cols, BATCH_ROWS, masks))
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


@contextlib.contextmanager
def parquet_file(path: Any, streamed: bool = False, read_dictionary: Optional[list] = None) -> Iterator[Any]:
    """A pyarrow ParquetFile, closed on leaving the block. ``streamed``: pages are read
    through a 1 MiB buffer and nothing is pre-buffered, so memory stays about one batch
    (pyarrow's defaults read a whole row group's column chunks at once, the whole file
    for a 1 GB file). `read_dictionary`: columns read as dictionary arrays."""
    import pyarrow.parquet as pq

    options = {"read_dictionary": read_dictionary} if read_dictionary else {}
    if streamed:
        options.update(buffer_size=1 << 20, pre_buffer=False)
    pf = pq.ParquetFile(path, **options)
    try:
        yield pf
    finally:
        close_file(pf)


def close_file(pf: Any) -> None:
    """Close a ParquetFile (older pyarrow has no ``close``)."""
    close = getattr(pf, "close", None)
    if close is not None:
        close()


def _is_text(t: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t))


def _coded_strings(path: Any, names: list[str]) -> list[str]:
    """Those of these string columns that the file stores dictionary-encoded in every
    row group: read as dictionary arrays, DuckDB checks a condition on each distinct
    value once (a query on a 2,000,000-row split column: 0.13 s of CPU as strings, 0.06 s
    as a dictionary). A chunk holds a dictionary page and fewer than 4 bytes a value,
    which plain strings (a 4-byte length each) cannot: no page fell back to plain."""
    if not names:
        return []
    with parquet_file(path) as pf:
        md = pf.metadata
        paths = {md.schema.column(j).path: j for j in range(md.num_columns)}
        coded = []
        for name in names:
            j = paths.get(name)
            if j is None:
                continue
            chunks = [md.row_group(r).column(j) for r in range(md.num_row_groups) if md.row_group(r).num_rows]
            if chunks and all(c.has_dictionary_page and c.total_uncompressed_size < 4 * c.num_values for c in chunks):
                coded.append(name)
    return coded


def _hidden(rel: Path) -> bool:
    return any(part.startswith((".", "_")) for part in rel.parts)


def reader_count() -> int:
    """Reader threads for a Parquet pool (`READERS`)."""
    if READERS is not None:
        return int(READERS)
    from .. import _core

    return max(1, int(_core.build_info()["threads"]))


def _open_streamed(path: Any) -> Any:
    """A ParquetFile read as `parquet_file` with ``streamed=True`` reads it (the caller
    closes it)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)


def _leaf_bytes_per_row(md: Any) -> dict[str, float]:
    """Each leaf column's uncompressed bytes per row in the first row group holding
    rows (empty when none does)."""
    for r in range(md.num_row_groups):
        rg = md.row_group(r)
        if rg.num_rows:
            out: dict[str, float] = {}
            for j in range(rg.num_columns):
                c = rg.column(j)
                out[c.path_in_schema] = out.get(c.path_in_schema, 0.0) + c.total_uncompressed_size / rg.num_rows
            return out
    return {}


def _alone() -> int:
    """What ``sys.getrefcount`` says, in `_let_go`'s loop, of an object nothing else
    refers to (it differs between Python versions)."""
    held = [object()]
    return next(sys.getrefcount(x) for x in held)


_ALONE = _alone()


def _let_go(handed: list) -> None:
    """Drop the batches the caller is done with, so that their memory is freed on the
    reader thread that allocated it. pyarrow's allocator (mimalloc) reuses at once what
    a thread frees of its own, but what another thread frees comes back to it late, in
    the meantime the reader takes fresh memory from the kernel and its page faults: 2
    readers mining 2,000,000 x 100 logits spent 0.46 s of system time with the caller
    freeing the batches, 0.25 s with the readers freeing them (wall 1.52 s, 1.26 s).
    Only where memory is freed depends on this: a batch dropped here while the caller
    still holds it lives on."""
    handed[:] = [b for b in handed if sys.getrefcount(b) > _ALONE]


def _counted(total: int, batch_rows: int) -> Iterator[Pool]:
    """Batches of no columns: only their row counts."""
    for start in range(0, total, batch_rows):
        yield Pool({}, min(batch_rows, total - start), start)
