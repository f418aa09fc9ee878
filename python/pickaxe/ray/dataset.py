"""A Ray Dataset as a `PoolSource` on the driver: its schema and shapes for the checks the
miners make before any work, and (not the Ray route, which maps over the blocks) the rows
read on the driver in the Dataset's order, numbered 0, 1, ... in that order."""

from __future__ import annotations

from typing import Any, Iterator, Optional

import numpy as np

from ..pools import BATCH_ROWS, ROW, Pool, PoolSource, arrow_shapes, match_rows, rebatch, to_pool


class DatasetSource(PoolSource):
    """A Ray Dataset's schema, for the checks the miners make before any work."""

    kind = "ray"

    def __init__(self, who: str, ds: Any, query: Optional[str]) -> None:
        import pyarrow as pa

        self.who = who
        self.query = query
        self.ds = ds
        schema = ds.schema()
        base = getattr(schema, "base_schema", schema)
        if not isinstance(base, pa.Schema):
            base = pa.schema(list(zip(schema.names, [pa.from_numpy_dtype(t) for t in schema.types])))
        self.schema = base
        self.column_names = list(base.names)
        self.types = {n: str(t) for n, t in zip(base.names, base.types)}
        self._count: Optional[int] = None
        self.n_rows = self.total_rows() if query is None else None

    def total_rows(self) -> int:
        if self._count is None:
            self._count = int(self.ds.count())
        return self._count

    def _compute_shapes(self) -> dict[str, tuple]:
        def first_rows(names: list[str]) -> Any:
            import pyarrow as pa

            b = self.ds.select_columns(names).take_batch(1, batch_format="pyarrow")
            return b if isinstance(b, pa.Table) else pa.table(b)

        return arrow_shapes(self.schema, self.n_rows, first_rows, self.column_names)

    # Reading on the driver (not the Ray route, which maps over the blocks): the rows in
    # the Dataset's order (``preserve_order``), numbered 0, 1, ... in that order.

    def _arrow_batches(self, columns: list[str], query: bool = True) -> Iterator[tuple[Any, np.ndarray]]:
        """(Arrow table, row numbers) of the rows (that pass the query), in order."""
        import pyarrow as pa

        query = query and self.query is not None
        names = list(dict.fromkeys(columns + (list(self.column_names) if query else [])))
        opts = self.ds.context.execution_options
        before = opts.preserve_order
        opts.preserve_order = True
        try:
            first = 0
            for t in self.ds.select_columns(names).iter_batches(batch_size=BATCH_ROWS, batch_format="pyarrow"):
                t = t if isinstance(t, pa.Table) else pa.table(t)
                rows = np.arange(first, first + t.num_rows, dtype=np.int64)
                first += t.num_rows
                if query and t.num_rows:
                    keep = match_rows(self.who, t.append_column(ROW, pa.array(rows)), self.query)
                    t, rows = t.take(pa.array(keep - rows[0])), keep
                yield t.select(columns), rows
        finally:
            opts.preserve_order = before

    def _batches(self, columns: list[str], batch_rows: int) -> Iterator[Pool]:
        import pyarrow as pa

        def parts() -> Iterator[Any]:
            for t, rows in self._arrow_batches(columns):
                yield t.append_column(ROW, pa.array(rows)).combine_chunks().to_batches()[0] if t.num_rows else t

        offset = 0
        for t in rebatch((b for b in parts() if b.num_rows), batch_rows):
            rows = t.column(ROW).to_numpy().astype(np.int64, copy=False)
            yield to_pool(self.who, t.drop_columns([ROW]), columns, t.num_rows, offset, rows)
            offset += t.num_rows

    def _take(self, rows: np.ndarray, columns: list[str]) -> Pool:
        import pyarrow as pa

        pieces, where = [], []
        for t, numbers in self._arrow_batches(columns, query=False):
            hit = np.flatnonzero(np.isin(rows, numbers))
            if hit.size:
                pieces.append(t.take(pa.array(np.searchsorted(numbers, rows[hit]))))
                where.append(hit)
        t = pa.concat_tables(pieces) if pieces else self.schema.empty_table().select(columns)
        if pieces:
            t = t.take(pa.array(np.argsort(np.concatenate(where), kind="stable")))
        return to_pool(self.who, t, columns, len(rows), 0, rows)
