"""Mining on Ray Data: the same miners over a cluster, with the same answers.

``pip install "pickaxe[ray]"``, then::

    import pickaxe.ray
    sel = pickaxe.ray.mine("s3://lake/preds/", px.EntropyMiner(500))   # a Parquet path
    sel = pickaxe.ray.mine(ray.data.read_parquet(...), miner)          # a Dataset with an id column

How it runs: the miner is configured and prepared on the driver (a NoveltyMiner is
fitted there, an hnswlib graph is built there), put into the object store once
(``ray.put``) and loaded once per actor of an actor pool (a callable class given to
``map_batches``; the actors reserve at most all CPUs but one, so that the operators
feeding them, a read or a repartition, always have one: see ``concurrency`` in `mine`);
each batch arrives as an Arrow table, its field column is handed to the kernels without
a copy (fixed-size lists of numbers are numpy views), and each batch returns only its
own top ``k`` rows (``Miner.score`` + ``top_k``) with their ids and metadata. The
driver merges those (at most k x batches rows) with the in-memory tie rule: score
descending, then row ascending.

Row numbers. In memory a row without an ``id`` is named by its row number in the pool,
and equal scores are ordered by row number. A Ray Dataset has no stable global row
number, so:

- a **Parquet path** (file or folder, the same files in the same order as the in-memory
  Parquet pool) is read by pickaxe through Ray, one task per row group, each knowing the
  number of its first row from the Parquet metadata: ids, ties and `RandomMiner` are
  exactly those of ``miner.mine(path)``;
- a **Dataset** must have an ``id`` column (integers or strings; they come back as they
  are, int64 ids exact). Equal scores are ordered by id ascending, errors name the row by
  its id, and `RandomMiner` hashes the id in place of the row number (a string id: the
  first 8 bytes of its BLAKE2b digest): its selection equals the in-memory one when the
  ids are the row numbers.

``query`` (the miner's, or `combine`'s) is run by DuckDB on each Arrow batch before
scoring: a ``WHERE`` clause over one row at a time, so batch by batch gives the rows the
whole-pool query gives.

`CoresetMiner` has no per-row score: its k-center greedy reads every row at each pick.
Ray tasks return only the ``embeddings`` column of the rows that pass the query, with
their keys (row numbers, or ids); the driver copies the blocks, in pool order, into one
(N, D) array of the stored dtype and runs `CoresetMiner.top` on it, then fetches the
picks' ids and metadata (Ray tasks on the row groups that hold them, or one filtering
pass over a Dataset). ``combine(..., diversity="coreset")`` runs its miners' nominating
passes on Ray and fetches only the nominees' embeddings for the greedy.

A batch that finds bad input (a NaN, a null row, a ragged list) returns the error, and
the driver raises the in-memory `ValueError` for the pool's first bad batch.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import math
import os
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Optional, Union

import numpy as np

from ._fields import FIELD_SHAPES
from ._pool import BATCH_ROWS, ROW, Pool, PoolSource, _arrow_shapes, _close, _match_rows, _ParquetSource, _rebatch, _to_pool
from .errors import InvalidInputError
from .miners import Miner, pool_error
from .selection import Selection

__all__ = ["mine", "FAIL_ONCE_ENV"]

#: Column names pickaxe adds to the batches it returns; never a pool's column.
KEY = "__pickaxe_key__"
SCORE = "__pickaxe_score__"
INFO = "__pickaxe_info__"
#: A batch that finds bad input returns one row: the exception's type and message (the
#: driver raises it as such: not a Ray error, not retried), and its first row number.
ERROR = "__pickaxe_error__"

#: Fault injection for the tests: when this environment variable names a file that
#: exists, the first batch to see it deletes it and raises (a transient failure Ray retries).
FAIL_ONCE_ENV = "PICKAXE_RAY_FAIL_ONCE"

#: Retries of a failed batch when ``retry_exceptions`` is given.
MAX_RETRIES = 3


class TransientBatchError(RuntimeError):
    """The injected failure (see `FAIL_ONCE_ENV`)."""


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ImportError('pickaxe.ray needs Ray Data: pip install "pickaxe[ray]"') from None
    return ray


# -- what the driver knows of the pool --------------------------------------------------


class _DatasetSource(PoolSource):
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
        self.n_rows = self._total_rows() if query is None else None

    def _total_rows(self) -> int:
        if self._count is None:
            self._count = int(self.ds.count())
        return self._count

    def _compute_shapes(self) -> dict[str, tuple]:
        def first_rows(names: list[str]) -> Any:
            import pyarrow as pa

            b = self.ds.select_columns(names).take_batch(1, batch_format="pyarrow")
            return b if isinstance(b, pa.Table) else pa.table(b)

        return _arrow_shapes(self.schema, self.n_rows, first_rows, self.column_names)

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
                    keep = _match_rows(self.who, t.append_column(ROW, pa.array(rows)), self.query)
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
        for t in _rebatch((b for b in parts() if b.num_rows), batch_rows):
            rows = t.column(ROW).to_numpy().astype(np.int64, copy=False)
            yield _to_pool(self.who, t.drop_columns([ROW]), columns, t.num_rows, offset, rows)
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
        return _to_pool(self.who, t, columns, len(rows), 0, rows)


# -- the actor that scores batches ------------------------------------------------------


def _score_task(batch: Any, miner: Miner, field: Optional[str], k: int, plan: dict[str, Any]) -> Any:
    return _Scorer(miner, field, k, plan)(batch)


class _Scorer:
    """One per actor: the miner is loaded once from the object store; each call scores one Arrow batch and returns its top k."""

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
            return pa.table({ERROR: pa.array([_shipped(e)], pa.binary()), KEY: pa.array([first], pa.int64())})

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
            keep = _match_rows(plan["who"], table.append_column(ROW, pa.array(pos)), plan["query"])
            if len(keep) < table.num_rows:
                table = table.take(pa.array(keep))
                rows = rows[keep] if rows is not None else None
        if plan["mode"] == "dataset":
            _unique_ids(plan["who"], table.column("id"))
        if plan["op"] == "gather":
            return self._gather(table, rows)
        return self._top(table, rows)

    def _gather(self, table: Any, rows: Optional[np.ndarray]) -> Any:
        """Every row's key and its field, checked (no null row, no ragged list) and as
        stored (float32 stays float32): a fixed-size list column on the numpy values."""
        import pyarrow as pa

        field = self.field
        assert field is not None
        columns = [field, "id"] if "id" in table.column_names else [field]
        pool = _to_pool(self.plan["who"], table.select(columns), columns, table.num_rows, 0, rows)
        x = pool.columns[field]
        flat = pa.array(np.ascontiguousarray(x).reshape(-1))
        for width in reversed(x.shape[1:]):
            flat = pa.FixedSizeListArray.from_arrays(flat, int(width))
        key = pa.array(rows) if rows is not None else table.column("id")
        return pa.table({KEY: key, field: flat})

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
            _close(pf)
        rows = np.arange(d["first"], d["first"] + t.num_rows, dtype=np.int64)
        return t.append_column(ROW, pa.array(rows))

    def _top(self, table: Any, rows: Optional[np.ndarray]) -> Any:
        import pyarrow as pa

        from .select import top_k

        plan = self.plan
        n = table.num_rows
        has_id = "id" in table.column_names
        columns = list(self.miner.columns_for(self.field))
        if has_id:
            columns.append("id")
        if rows is not None:  # a Parquet pool: rows named by number (and id), as in memory
            pool = _to_pool(plan["who"], table.select(columns), columns, n, 0, rows)
            try:
                values, info = self.miner.score(pool, self.field) if n else (np.empty(0), {})
            except InvalidInputError as e:
                raise pool_error(e, pool) from None
        else:  # a Dataset: no row numbers; the id names the row
            pool = _to_pool(plan["who"], table.select(columns), columns, n, 0, None, numbered=False)
            if type(self.miner).__name__ == "RandomMiner":
                # the row number RandomMiner hashes: the id's
                pool = Pool(pool.columns, n, 0, _id_numbers(pool.columns["id"]))
            try:
                values, info = self.miner.score(pool, self.field) if n else (np.empty(0), {})
            except InvalidInputError as e:
                raise _by_id(e, pool.columns["id"]) from None
        best = top_k(values, self.k)
        keep = pa.array(best)
        out = {c: table.column(c).take(keep) for c in plan["carry"]}
        # a Dataset's key is its id column as it is: int64 ids near 2**63 or uint64 ones
        # stay exact and ordered (an int64 copy would wrap uint64 ids past 2**63)
        out[KEY] = pa.array(rows[best]) if rows is not None else table.column("id").take(keep)
        out[SCORE] = pa.array(np.asarray(values[best], dtype=np.float64))
        out[INFO] = pa.array([json.dumps(info, default=str)] * len(best), pa.string())
        return pa.table(out)


# -- the driver ---------------------------------------------------------------------------


class _Run:
    """One mining run's pool on Ray: the dataset to map, the checks' source, the plan."""

    def __init__(self, pool: Any, query: Optional[str], who: str, batch_rows: Optional[int]) -> None:
        ray = _ray()
        self.who = who
        self.query = query
        if isinstance(pool, (str, os.PathLike)):
            self.mode = "parquet"
            src = _ParquetSource(who, Path(os.fspath(pool)), query)
            tasks = []
            for f, groups, base in zip(src.files, src.row_groups, src.bases):
                first = int(base)
                for g, n in enumerate(groups):
                    if n:
                        tasks.append({"file": str(f), "group": g, "first": first})
                    first += n
            self.source: PoolSource = src
            self.ds = ray.data.from_items(tasks, override_num_blocks=max(1, len(tasks))) if tasks else None
        else:
            if not isinstance(pool, ray.data.Dataset):
                raise TypeError(f"{who}: pool must be a ray.data.Dataset or a path to Parquet; got {type(pool).__name__}")
            self.mode = "dataset"
            self.source = _DatasetSource(who, pool, query)
            if not self.source.has_id:
                raise ValueError(
                    f"{who}: a Ray Dataset has no stable row numbers, so it needs an id column "
                    "(or pass the Parquet path itself, which pickaxe reads with row numbers); "
                    f"it has {', '.join(self.source.column_names)}"
                )
            self.ds = pool
        self.batch_rows = batch_rows
        self.retry: Union[bool, list] = False

    def top(
        self, miner: Miner, k: int, field: Optional[str], actors: "_Actors"
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any], Any]:
        """Like `Miner.top`: the k best rows' keys (row numbers, or ids), scores, info,
        and their carried columns (an Arrow table, same order)."""
        import pyarrow as pa

        from .miners import CoresetMiner

        ray = _ray()
        src = self.source
        carry = [c for c in src.column_names if c not in FIELD_SHAPES]
        if isinstance(miner, CoresetMiner):
            keys, values, info = self.coreset(miner, k, field)
            return keys, values, info, (self.fetch(keys, carry) if carry and len(keys) else None)
        miner.prepare(src, field)
        nb = getattr(miner, "_neighbours", None)
        if nb is not None and getattr(miner, "_method", None) == "hnsw":
            nb.ensure_index()  # built once here, not once per actor
        plan = self._plan("top", list(miner.columns_for(field)) + carry)
        plan["carry"] = carry
        if self.ds is None or k == 0:
            return np.empty(0, np.int64), np.empty(0), {}, None
        if nb is not None:
            # an embedding miner holds a reference (an index, fitted densities): into the
            # object store once, loaded once per actor of the pool
            tables = self._map(self.ds, (ray.put(miner), field, k, plan), actors=actors)
        else:
            # the uncertainty miners are a few numbers: tasks on pooled workers, no actor
            # start-up (seconds) per run
            tables = self._map(self.ds, (miner, field, k, plan))
        if not tables:
            return np.empty(0, np.int64), np.empty(0), {}, None
        t = pa.concat_tables(tables)
        keys = t.column(KEY).to_numpy(zero_copy_only=False)
        values = t.column(SCORE).to_numpy()
        order = np.lexsort((keys, -values)) if keys.dtype.kind in "iuf" else _order_obj(keys, values)
        order = order[:k]
        info = json.loads(t.column(INFO)[int(order[0])].as_py()) if len(order) else {}
        return keys[order], values[order], info, t.take(pa.array(order)).drop_columns([KEY, SCORE, INFO])

    def _plan(self, op: str, columns: list[str]) -> dict[str, Any]:
        """What each batch does: ``op`` ("top", "gather" or "fetch") on the rows that
        pass the query; a Parquet row group is read with `columns` (every column when the
        query needs them)."""
        read = None
        if self.mode == "parquet":
            read = list(self.source.column_names) if self.query and op != "fetch" else columns
        return {"op": op, "mode": self.mode, "who": self.who, "query": self.query, "read": read}

    def _map(self, ds: Any, args: tuple, actors: Optional["_Actors"] = None) -> list:
        """``ds.map_batches`` of `_Scorer` (an actor pool sized by `actors`, or tasks),
        run to the end: the non-empty Arrow tables the batches returned, in block order."""
        ray = _ray()
        kwargs: dict[str, Any] = {
            "batch_format": "pyarrow",
            "zero_copy_batch": True,
            "batch_size": 1 if self.mode == "parquet" else self.batch_rows,
        }
        ctx = ds.context
        remote: dict[str, Any] = {}
        saved = None
        if self.retry and hasattr(ctx, "retried_map_errors"):
            # Ray >= 2.5x: the batch is retried inside its task (map_batches' Ray remote
            # arguments are deprecated); exception types are matched by class name
            saved = (ctx.retried_map_errors, ctx.max_map_retries)
            match = True if self.retry is True else [f"{t.__name__}:" for t in self.retry]
            ctx.retried_map_errors, ctx.max_map_retries = match, MAX_RETRIES
        elif self.retry:
            remote = {"retry_exceptions": self.retry, "max_retries": MAX_RETRIES}
        try:
            if actors is not None:
                pool = ray.data.ActorPoolStrategy(min_size=actors.min_size, max_size=actors.max_size)
                out = ds.map_batches(_Scorer, fn_constructor_args=args, compute=pool, num_cpus=actors.num_cpus, **kwargs)
            else:
                out = ds.map_batches(_score_task, fn_args=args, **remote, **kwargs)
            tables = [t for t in ray.get(list(out.to_arrow_refs())) if t.num_rows]
        finally:
            if saved is not None:
                ctx.retried_map_errors, ctx.max_map_retries = saved
        errors = [t for t in tables if ERROR in t.column_names]
        if errors:  # the first bad row of the pool, as in memory
            first = min(errors, key=lambda t: t.column(KEY)[0].as_py())
            raise pickle.loads(first.column(ERROR)[0].as_py())
        return tables

    def gather(self, field: str) -> tuple[np.ndarray, np.ndarray]:
        """Every row that passes the query: its key and its field, on the driver, in
        pool order (row number; a Dataset's rows by id). Each batch is a Ray task that
        returns only the key and the field column; the driver copies the blocks into one
        C-ordered array of the stored dtype, allocated once."""
        from ._arrow import field_to_numpy

        tables = self._map(self.ds, (None, field, 0, self._plan("gather", [field]))) if self.ds is not None else []
        if not tables:
            empty = self.source._empty_pool([field]).columns[field]
            ids = self.source.schema.empty_table().column("id") if self.mode == "dataset" else None
            keys = np.empty(0, np.int64) if ids is None else _key_array(ids)
            return keys, empty
        firsts = [_key_array(t.column(KEY).slice(0, 1))[0] for t in tables]
        tables = [tables[i] for i in _argsort_keys(firsts)]  # blocks in pool order
        parts = [field_to_numpy(field, t.column(field)) for t in tables]
        n = sum(len(p) for p in parts)
        x = np.empty((n,) + parts[0].shape[1:], dtype=np.result_type(*[p.dtype for p in parts]))
        keys = np.concatenate([_key_array(t.column(KEY)) for t in tables])
        at = 0
        for p in parts:
            x[at : at + len(p)] = p
            at += len(p)
        if n > 1 and not bool(np.all(keys[1:] > keys[:-1])):
            order = _argsort_keys(keys)  # blocks whose keys interleave (a Dataset's ids)
            keys, x = keys[order], x[order]
        if self.mode == "dataset":
            dup = np.flatnonzero(keys[1:] == keys[:-1])
            if dup.size:
                v = keys[int(dup[0])]
                v = v.item() if isinstance(v, np.generic) else v
                raise ValueError(f"{self.who}: the id {v!r} names more than one row; ids must be unique")
        return keys, x

    def coreset(self, miner: Any, k: int, field: Optional[str]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """`CoresetMiner.top` on the gathered embeddings: the same greedy on the same
        array, in memory on the driver."""
        from ._pool import Pool, _ArraySource

        assert field is not None
        keys, x = self.gather(field)
        rows = keys if self.mode == "parquet" else None  # a Dataset: positions, then ids
        source = _ArraySource(self.who, Pool({field: x}, len(x), 0, rows), None)
        try:
            picked, values, info = miner.top(source, k, field)
        except InvalidInputError as e:
            if rows is not None:
                raise
            raise _by_id(e, keys) from None
        return (picked if rows is not None else keys[picked]), values, info

    def fetch(self, keys: np.ndarray, columns: list[str]) -> Any:
        """An Arrow table of `columns` for the rows named by `keys` (row numbers of a
        Parquet pool, whatever the query; ids of a Dataset), in the order of `keys`.
        Parquet: a Ray task per row group holding some of them; a Dataset: one pass that
        keeps the rows whose id is among the keys."""
        import pyarrow as pa
        import pyarrow.compute as pc

        ray = _ray()
        plan = self._plan("fetch", columns)
        if self.mode == "parquet":
            src = self.source
            assert isinstance(src, _ParquetSource)
            rows = np.asarray(keys, dtype=np.int64)
            items = []
            order = np.argsort(rows, kind="stable")
            file_of = np.searchsorted(src.bases, rows[order], side="right") - 1
            for fi in np.unique(file_of):
                local = rows[order][file_of == fi] - src.bases[fi]
                rg_bases = np.concatenate([[0], np.cumsum(src.row_groups[fi])]).astype(np.int64)
                rg_of = np.searchsorted(rg_bases, local, side="right") - 1
                for g in np.unique(rg_of):
                    first = int(src.bases[fi] + rg_bases[g])
                    take = (local[rg_of == g] - rg_bases[g]).tolist()
                    items.append({"file": str(src.files[fi]), "group": int(g), "first": first, "take": take})
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            want = pa.array(rows)
        else:
            id_type = self.source.schema.field("id").type
            want = pa.array(keys.tolist() if keys.dtype == object else keys, type=id_type)
            plan["keys"] = want
            plan["read"] = columns
            ds = self.ds.select_columns(sorted(set(columns) | {"id"}, key=self.source.column_names.index))
        tables = self._map(ds, (None, None, 0, plan))
        t = pa.concat_tables(tables) if tables else None
        if t is None or t.num_rows != len(want):
            got = 0 if t is None else t.num_rows
            if self.mode == "dataset" and got > len(want):
                ids = pc.value_counts(t.column(KEY))
                dup = ids.filter(pc.greater(ids.field("counts"), 1))[0]["values"].as_py()
                raise ValueError(f"{self.who}: the id {dup!r} names more than one row; ids must be unique")
            raise RuntimeError(f"{self.who}: fetched {got} rows where {len(want)} were picked")
        at = pc.index_in(t.column(KEY), value_set=want).to_numpy(zero_copy_only=False)
        return t.take(pa.array(np.argsort(at, kind="stable"))).drop_columns([KEY])

    def selection(self, keys: np.ndarray, values: np.ndarray, miners: Any, info: dict[str, Any], carried: Any) -> Selection:
        from ._arrow import metadata_to_numpy

        src = self.source
        meta = {}
        ids = np.asarray(keys, dtype=np.int64) if self.mode == "parquet" else keys
        if carried is not None:
            if src.has_id:
                ids = metadata_to_numpy(carried.column("id"))
            meta = {n: metadata_to_numpy(carried.column(n)) for n in src.metadata_names}
        elif src.has_id or src.metadata_names:
            # nothing picked: empty columns of the right type
            empty = src.schema.empty_table()
            if src.has_id:
                ids = metadata_to_numpy(empty.column("id"))
            meta = {n: metadata_to_numpy(empty.column(n)) for n in src.metadata_names}
        return Selection(ids, np.asarray(values, dtype=np.float64), miners, meta, info)


def _order_obj(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    by_key = np.argsort(keys, kind="stable")
    return by_key[np.argsort(-values[by_key], kind="stable")]


def _key_array(column: Any) -> np.ndarray:
    """An Arrow key column (row numbers, or ids) as a 1-D numpy array."""
    from ._arrow import metadata_to_numpy

    return metadata_to_numpy(column)


def _argsort_keys(keys: Any) -> np.ndarray:
    return np.argsort(np.asarray(keys), kind="stable")


def _unique_ids(who: str, ids: Any) -> None:
    """A Dataset's batch: the ValueError the driver raises for an id found in two
    batches, for one found twice in a batch (whose row positions mean nothing)."""
    import pyarrow.compute as pc

    if len(ids) < 2 or ids.null_count or pc.count_distinct(ids).as_py() == len(ids):
        return  # (a null id is the id column's own error, raised when it is read)
    counts = pc.value_counts(ids)
    dup = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
    raise ValueError(f"{who}: the id {dup!r} names more than one row; ids must be unique")


def _id_numbers(ids: np.ndarray) -> np.ndarray:
    """The number `RandomMiner` hashes for each row of a Dataset: an integer id itself
    (as int64; uint64 ids past 2**63 wrap, still one number per id), a string id the
    first 8 bytes of its BLAKE2b digest (stable across processes, unlike ``hash``)."""
    if ids.dtype.kind in "iu":
        return ids.astype(np.int64)
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8).digest(), "little", signed=True) for v in ids),
        dtype=np.int64,
        count=len(ids),
    )


def _by_id(e: InvalidInputError, ids: np.ndarray) -> InvalidInputError:
    """An error naming row i of a Dataset's batch (or of the gathered rows, in id order)
    names the row by its id alone: a Dataset has no row numbers."""
    if e.row is None or not 0 <= e.row < len(ids):
        return e
    return e.with_row(None, id=ids[e.row])


def _shipped(e: BaseException) -> bytes:
    """A batch's error, pickled for the driver to raise as it is (type and attributes);
    an exception that does not pickle goes as its type's nearest builtin with its text."""
    try:
        return pickle.dumps(e)
    except Exception:
        return pickle.dumps((TypeError if isinstance(e, TypeError) else ValueError)(str(e)))


class _Actors(NamedTuple):
    """The actor pool of an embedding miner: Ray Data grows it from ``min_size`` to
    ``max_size`` actors as batches queue up; each actor reserves ``num_cpus``."""

    min_size: int
    max_size: int
    num_cpus: float


def _actor_pool(who: str, concurrency: Any, cpus: float) -> _Actors:
    """The pool for ``concurrency`` on a cluster of `cpus` CPUs.

    Its actors together reserve at most ``cpus - 1`` CPUs. An actor holds its CPUs from
    the start of the plan to its end, while the operators upstream (a read, a
    repartition) need a CPU for each of their tasks: actors holding every CPU wait for
    blocks that can never be made, and Ray Data waits with them (a repartition even
    blocks its scheduling loop in ``ray.get`` on its split tasks). So each actor reserves
    one CPU, or ``(cpus - 1) / max_size`` when more actors are asked for than that leaves
    room for (0 on a single CPU).
    """
    def size(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{who}: concurrency must be an int or a (min, max) pair of ints; got {concurrency!r}")
        if v < 1:
            raise ValueError(f"{who}: concurrency must be at least 1 actor; got {concurrency!r}")
        return int(v)

    if concurrency is None:
        lo, hi = 1, max(1, int(cpus) - 1)
    elif isinstance(concurrency, (tuple, list)):
        if len(concurrency) != 2:
            raise ValueError(f"{who}: concurrency as a pair is (min, max) actors; got {concurrency!r}")
        lo, hi = size(concurrency[0]), size(concurrency[1])
        if lo > hi:
            raise ValueError(f"{who}: concurrency (min, max) needs min <= max; got {concurrency!r}")
    else:
        lo = hi = size(concurrency)
    room = max(0.0, float(cpus) - 1.0)
    # Ray counts resources in units of 1e-4: round down so the pool never exceeds the room
    num_cpus = min(1.0, math.floor(room / hi * 1e4) / 1e4)
    return _Actors(lo, hi, num_cpus)


def mine(
    pool: Any,
    miner: Miner,
    *,
    concurrency: Union[None, int, tuple[int, int]] = None,
    batch_rows: Optional[int] = 65536,
    retry_exceptions: Union[bool, list] = False,
) -> Selection:
    """The `Selection` ``miner.mine(pool)`` gives, computed on Ray Data.

    Parameters
    ----------
    pool : ray.data.Dataset or str or os.PathLike
        A Dataset with an ``id`` column (integers or strings, one per row), or a path to
        a Parquet file or folder (read through Ray, one task per row group; ids and row
        numbers as in memory).
    miner : Miner
        Any pickaxe miner, or a `combine` of them.
    concurrency : int or (int, int), optional
        The actor pool of an embedding miner (`EmbeddingDistanceMiner`, `NoveltyMiner`,
        also inside `combine`); the other miners run as Ray tasks and ignore it. ``n``:
        a pool of ``n`` actors; ``(min, max)``: a pool that Ray Data grows from ``min``
        to ``max`` actors while batches wait. Default: ``(1, max(1, CPUs - 1))``, CPUs
        being the cluster's (``ray.cluster_resources()``). The actors together reserve at most
        CPUs - 1 CPUs, so the operators that feed them (``read_parquet``,
        ``repartition``, a ``map``) always have a CPU for their tasks: a pool holding
        every CPU would wait for their blocks forever. Each actor reserves one CPU, or
        less when more actors are asked for than that leaves room for
        (``concurrency=4`` on 2 CPUs: four actors of 0.25 CPU; on a single CPU the
        actors reserve none). An upstream operator that needs more than one CPU per
        task is not covered: give it its own resources.
    batch_rows : int or None
        Rows per batch of a Dataset (None: one batch per block).
    retry_exceptions : bool or list of exception types
        The errors of a batch that Ray retries (up to `MAX_RETRIES` times), True for
        any (``DataContext.actor_task_retry_on_errors`` for the actors;
        ``retried_map_errors``, matching the class names, for tasks on Ray versions that
        have it, else the tasks' ``retry_exceptions``). Errors of bad input (ValueError,
        TypeError) are never retried: they are raised as in memory.

    Returns
    -------
    Selection
        ``ids`` (size,), ``scores`` (size,), ``miners``, ``metadata``, ``info``: equal to
        the in-memory one. Ids keep their type: int64 ids come back exact (no float on
        the way), strings as strings.

    Raises
    ------
    TypeError
        `miner` is not a pickaxe miner, `pool` is neither a Dataset nor a path,
        `concurrency` is not an int or a pair of ints.
    ValueError
        A Dataset without an ``id`` column, ``concurrency`` below 1 or with min > max,
        bad input in the pool (the in-memory error: field, row or id, fault).

    Notes
    -----
    `CoresetMiner`: its greedy needs every row at each step, so Ray tasks read the
    embeddings column only (plus the row numbers, or ids) and the driver holds them
    (N x D, as stored: float32 stays float32) and runs the in-memory greedy; the picks'
    ids and metadata are then fetched. ``combine(..., diversity="coreset")``: the
    miners nominate their candidates on Ray as above, then only the nominees'
    embeddings are fetched to the driver for the greedy.

    Examples
    --------
    >>> import pickaxe as px, pickaxe.ray                      # doctest: +SKIP
    >>> sel = pickaxe.ray.mine("preds/", px.EntropyMiner(500))  # doctest: +SKIP
    >>> sel.ids.shape                                           # doctest: +SKIP
    (500,)
    >>> ds = ray.data.read_parquet("preds/")                    # doctest: +SKIP
    >>> sel = pickaxe.ray.mine(ds, px.NoveltyMiner(200, train_embeddings), concurrency=(1, 4))  # doctest: +SKIP
    """
    ray = _ray()
    from ._combine import Combined

    who = f"pickaxe.ray.mine({type(miner).__name__})"
    if not isinstance(miner, Miner):
        raise TypeError(f"{who}: miner must be a pickaxe miner; got {type(miner).__name__}")
    # the cluster's CPUs, not the ones free right now: an actor of the previous run still
    # holds its CPU for a moment after the run ends
    actors = _actor_pool(who, concurrency, ray.cluster_resources().get("CPU", 0))
    run = _Run(pool, miner.query, who, batch_rows)
    ctx = (getattr(run.ds, "context", None) or ray.data.DataContext.get_current()) if run.ds is not None else None
    before = getattr(ctx, "actor_task_retry_on_errors", None)
    if ctx is not None and retry_exceptions:
        ctx.actor_task_retry_on_errors = retry_exceptions
        run.retry = retry_exceptions
    try:
        if isinstance(miner, Combined):
            if miner.diversity == "coreset":
                return _diverse(run, miner, actors)
            return _combined(run, miner, actors)
        field = miner.resolve_field(run.source)
        keys, values, info, carried = run.top(miner, miner.size, field, actors)
        return run.selection(keys, values, miner.name, info, carried)
    finally:
        if ctx is not None:
            ctx.actor_task_retry_on_errors = before


def _combined(run: _Run, combined: Any, actors: _Actors) -> Selection:
    """`Combined.mine` on Ray: one pass per miner, in order, each asked for its share plus
    the rows taken so far."""
    import pyarrow as pa

    fields = [m.resolve_field(run.source) for m in combined.miners]
    quotas = combined.quotas()
    taken: set = set()
    keys: list = []
    values: list[float] = []
    names: list[str] = []
    pieces: list = []
    carry = 0
    for miner, field, quota in zip(combined.miners, fields, quotas):
        want = quota + carry
        if want == 0:
            continue
        ranked, scores, _, carried = run.top(miner, want + len(taken), field, actors)
        got = 0
        picked = []
        for i, (r, s) in enumerate(zip(ranked.tolist(), scores.tolist())):
            if got == want:
                break
            if r in taken:
                continue
            taken.add(r)
            keys.append(r)
            values.append(s)
            names.append(miner.name)
            picked.append(i)
            got += 1
        if picked and carried is not None:
            pieces.append(carried.take(pa.array(picked, pa.int64())))
        carry = want - got
    carried_all = pa.concat_tables(pieces) if pieces else None
    key_arr = np.asarray(keys, dtype=np.int64) if run.mode == "parquet" else np.asarray(keys, dtype=object)
    info = {"quotas": combined._quota_info(quotas)}
    return run.selection(key_arr, np.asarray(values, dtype=np.float64), np.asarray(names, dtype=object), info, carried_all)


def _diverse(run: _Run, combined: Any, actors: _Actors) -> Selection:
    """`Combined._mine_diverse` on Ray: each miner nominates ``candidates`` times its
    share (a Ray pass each); the nominees' embeddings (and ids, metadata) are fetched to
    the driver, where k-center greedy picks the final batch."""
    import pyarrow as pa

    from ._exact import kcenter_greedy
    from ._pool import _to_pool
    from .index import embeddings_array

    src = run.source
    fields = [m.resolve_field(src) for m in combined.miners]  # all checked before any work
    if "embeddings" not in src.column_names:
        raise ValueError(
            f'combine(diversity="coreset") needs the field embeddings (N, D) to spread '
            f"the batch; the pool has {src.describe()}"
        )
    quotas = combined.quotas()
    nominee: dict[Any, tuple[float, str]] = {}
    for miner, field, quota in zip(combined.miners, fields, quotas):
        ranked, scores, _, _ = run.top(miner, combined.candidates * max(quota, 1), field, actors)
        for r, s in zip(ranked.tolist(), scores.tolist()):
            nominee.setdefault(r, (s, miner.name))
    keys = list(nominee)
    cand = np.asarray(keys, dtype=np.int64) if run.mode == "parquet" else np.asarray(keys + [None], dtype=object)[:-1]
    carry = [c for c in src.column_names if c not in FIELD_SHAPES]
    info = {"quotas": combined._quota_info(quotas), "diversity": "coreset", "candidates": len(cand)}
    if not len(cand):
        return run.selection(cand, np.empty(0), np.empty(0, dtype=object), info, None)
    fetched = run.fetch(cand, ["embeddings"] + carry)
    rows = cand if run.mode == "parquet" else None
    pool = _to_pool(run.who, fetched, ["embeddings"], len(cand), 0, rows)
    emb, _ = embeddings_array("combine()", "embeddings", pool.columns["embeddings"])
    picks, _ = kcenter_greedy(emb, min(combined.size, len(cand)))
    idx = cand[picks]
    values = np.array([nominee[r][0] for r in idx.tolist()], dtype=np.float64)
    names = np.array([nominee[r][1] for r in idx.tolist()], dtype=object)
    carried = fetched.take(pa.array(picks)).select(carry) if carry else None
    return run.selection(idx, values, names, info, carried)
