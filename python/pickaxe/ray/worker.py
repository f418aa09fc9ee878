"""What runs on the Ray workers: each call handles one Arrow batch of the pool.

A batch is read (a Parquet row group, or a Dataset's block), filtered by the query, and
then, by the plan's ``op``: scored and cut to its own top ``k`` (`pickaxe.engine.batch_top`,
the in-process code), its keys and columns returned whole (``gather``), or the rows the
plan names returned (``fetch``). A batch that finds bad input returns the exception
itself, pickled, for the driver to raise.
"""

from __future__ import annotations

import json
import os
import pickle
from typing import Any, Optional

import numpy as np

from ..pools import ROW, Pool, close_file, match_rows, to_pool

from ..errors import InvalidInputError
from ..engine import batch_top, key_numbers, pool_error
from ..per_row import Tops, needs_row_numbers
from ..miners import Miner

#: Column names pickaxe adds to the batches it returns; never a pool's column.
KEY = "__pickaxe_key__"
SCORE = "__pickaxe_score__"
INFO = "__pickaxe_info__"
ORDER = "__pickaxe_order__"
GROUP = "__pickaxe_group__"
COUNTS = "__pickaxe_counts__"
#: A batch that finds bad input returns one row: the pickled exception (the driver
#: raises it as such: not a Ray error, not retried), and its first row number.
ERROR = "__pickaxe_error__"

#: Fault injection for the tests: when this environment variable names a file that
#: exists, the first batch to see it deletes it and raises (a transient failure Ray retries).
FAIL_ONCE_ENV = "PICKAXE_RAY_FAIL_ONCE"


class TransientBatchError(RuntimeError):
    """The injected failure (see `FAIL_ONCE_ENV`)."""


def score_task(batch: Any, miner: Optional[Miner], field: Optional[str], k: int, plan: dict[str, Any]) -> Any:
    """One batch as a Ray task (a miner without shipped state, or a gather or fetch)."""
    return Scorer(miner, field, k, plan)(batch)


class Scorer:
    """One per actor: the miner is loaded once from the object store; each call handles
    one Arrow batch."""

    def __init__(self, miner: Any, field: Optional[str], k: int, plan: dict[str, Any]) -> None:
        import ray

        # the ref is passed inside a tuple, so Ray does not resolve it: fetched here,
        # once per actor (a ReferenceIndex travels in hnswlib's own pickle format)
        self.miner = ray.get(miner) if isinstance(miner, ray.ObjectRef) else miner
        self.field = field
        self.k = k
        self.plan = plan

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        first = -1
        if self.plan["mode"] == "parquet" and batch.num_rows:
            first = int(batch.column("first")[0].as_py())
        try:
            return self._call(batch)
        except (ValueError, TypeError) as e:  # bad input: the exception itself, to the driver
            return pa.table({ERROR: pa.array([shipped(e)], pa.binary()), KEY: pa.array([first], pa.int64())})

    def _call(self, batch: Any) -> Any:
        import pyarrow as pa

        flag = os.environ.get(FAIL_ONCE_ENV)
        if flag:
            try:
                os.remove(flag)  # only one caller can remove it
            except FileNotFoundError:
                pass
            else:
                raise TransientBatchError(f"injected failure ({FAIL_ONCE_ENV}={flag})")
        plan = self.plan
        if plan["op"] == "fetch":
            return self._fetch(batch)
        if plan["mode"] == "parquet":
            tables = [self._read(d) for d in batch.to_pylist()]
            table = pa.concat_tables(tables) if len(tables) != 1 else tables[0]
            rows = table.column(ROW).to_numpy().astype(np.int64, copy=False)
            table = table.drop_columns([ROW])
        else:
            table = batch if isinstance(batch, pa.Table) else pa.table(batch)
            rows = None
        if plan["query"] is not None and table.num_rows:
            pos = np.arange(table.num_rows, dtype=np.int64)
            keep = match_rows(plan["who"], table.append_column(ROW, pa.array(pos)), plan["query"])
            if len(keep) < table.num_rows:
                table = table.take(pa.array(keep))
                rows = rows[keep] if rows is not None else None
        if plan["mode"] == "dataset":
            unique_ids(plan["who"], table.column("id"))
        if plan["op"] == "gather":
            return self._gather(table, rows)
        return self._top(table, rows)

    def _gather(self, table: Any, rows: Optional[np.ndarray]) -> Any:
        """Every row's key and the plan's columns, checked (no null row, no ragged list)
        and as stored (float32 stays float32): fixed-size list columns on the numpy values."""
        import pyarrow as pa

        columns = list(self.plan["gather"])
        read = columns + ["id"] if "id" in table.column_names and "id" not in columns else columns
        pool = to_pool(self.plan["who"], table.select(read), read, table.num_rows, 0, rows)
        out = {KEY: pa.array(rows) if rows is not None else table.column("id")}
        for name in columns:
            x = pool.columns[name]
            flat = pa.array(np.ascontiguousarray(x).reshape(-1))
            for width in reversed(x.shape[1:]):
                flat = pa.FixedSizeListArray.from_arrays(flat, int(width))
            out[name] = flat
        return pa.table(out)

    def _fetch(self, batch: Any) -> Any:
        """The rows named by the plan's keys, with the plan's columns and the key."""
        import pyarrow as pa
        import pyarrow.compute as pc

        plan = self.plan
        if plan["mode"] == "parquet":
            tables = []
            for d in batch.to_pylist():
                t = self._read(d)
                local = np.asarray(d["take"], dtype=np.int64)
                t = t.take(pa.array(local))
                tables.append(t.rename_columns([KEY if c == ROW else c for c in t.column_names]))
            return pa.concat_tables(tables) if len(tables) != 1 else tables[0]
        table = batch if isinstance(batch, pa.Table) else pa.table(batch)
        table = table.filter(pc.is_in(table.column("id"), value_set=plan["keys"]))
        return table.select(plan["read"]).append_column(KEY, table.column("id"))

    def _read(self, d: dict[str, Any]) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(d["file"], buffer_size=1 << 20, pre_buffer=False)
        try:
            t = pf.read_row_group(int(d["group"]), columns=self.plan["read"])
        finally:
            close_file(pf)
        rows = np.arange(d["first"], d["first"] + t.num_rows, dtype=np.int64)
        return t.append_column(ROW, pa.array(rows))

    def _top(self, table: Any, rows: Optional[np.ndarray]) -> Any:
        import pyarrow as pa

        assert self.miner is not None
        plan = self.plan
        n = table.num_rows
        column = plan.get("group")
        columns = list(dict.fromkeys(list(self.miner.columns_for(self.field)) + ([column] if column else [])))
        if "id" in table.column_names and "id" not in columns:
            columns.append("id")
        if rows is not None:  # a Parquet pool: rows named by number (and id), as in memory
            pool = to_pool(plan["who"], table.select(columns), columns, n, 0, rows)
            b = batch_top(self.miner, pool, self.field, self.k, lambda e: pool_error(e, pool), column)
        else:  # a Dataset: no row numbers; the id names the row
            pool = to_pool(plan["who"], table.select(columns), columns, n, 0, None, numbered=False)
            if needs_row_numbers(self.miner):
                pool = Pool(pool.columns, n, 0, key_numbers(pool.columns["id"]))
            ids = pool.columns["id"]
            b = batch_top(self.miner, pool, self.field, self.k, lambda e: by_id(e, ids), column)
        keep = pa.array(b.rows)
        out = {c: table.column(c).take(keep) for c in plan["carry"]}
        # a Dataset's key is its id column as it is: int64 ids near 2**63 or uint64 ones
        # stay exact and ordered (an int64 copy would wrap uint64 ids past 2**63)
        out[KEY] = pa.array(rows[b.rows]) if rows is not None else table.column("id").take(keep)
        out[SCORE] = pa.array(b.values)
        out[ORDER] = pa.array(b.order)
        out[INFO] = pa.array([json.dumps(b.info, default=str)] * len(b.rows), pa.string())
        if b.groups is not None:  # labels and counts pickled: any label type, exactly
            out[GROUP] = pa.array([pickle.dumps(g) for g in b.groups.tolist()], pa.binary())
            out[COUNTS] = pa.array([pickle.dumps(b.counts)] + [None] * (len(b.rows) - 1), pa.binary())
        return pa.table(out)


def block_tops(t: Any) -> Tops:
    """A block's kept rows (`_top`'s table) as the engine's `Tops`, for `merge_tops`."""
    groups = counts = None
    if GROUP in t.column_names:
        groups = np.empty(t.num_rows, dtype=object)
        groups[:] = [pickle.loads(g) for g in t.column(GROUP).to_pylist()]
        counts = pickle.loads(t.column(COUNTS)[0].as_py())
    info = json.loads(t.column(INFO)[0].as_py())
    keys = t.column(KEY).to_numpy(zero_copy_only=False)
    return Tops(keys, t.column(SCORE).to_numpy(), t.column(ORDER).to_numpy(), groups, counts, info)


def unique_ids(who: str, ids: Any) -> None:
    """A Dataset's batch: the ValueError the driver raises for an id found in two
    batches, for one found twice in a batch (whose row positions mean nothing)."""
    import pyarrow.compute as pc

    if len(ids) < 2 or ids.null_count or pc.count_distinct(ids).as_py() == len(ids):
        return  # (a null id is the id column's own error, raised when it is read)
    counts = pc.value_counts(ids)
    dup = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
    raise ValueError(f"{who}: the id {dup!r} names more than one row; ids must be unique")


def by_id(e: InvalidInputError, ids: np.ndarray) -> InvalidInputError:
    """An error naming row i of a Dataset's batch (or of the gathered rows, in id order)
    names the row by its id alone: a Dataset has no row numbers."""
    if e.row is None or not 0 <= e.row < len(ids):
        return e
    return e.with_row(None, id=ids[e.row])


def shipped(e: BaseException) -> bytes:
    """A batch's error, pickled for the driver to raise as it is (type and attributes);
    an exception that does not pickle goes as its type's nearest builtin with its text."""
    try:
        return pickle.dumps(e)
    except Exception:
        return pickle.dumps((TypeError if isinstance(e, TypeError) else ValueError)(str(e)))
