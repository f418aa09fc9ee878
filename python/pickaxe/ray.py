"""Mining on Ray Data: the same miners over a cluster, with the same answers.

``pip install "pickaxe[ray]"``, then::

    import pickaxe.ray
    sel = pickaxe.ray.mine("s3://lake/preds/", px.EntropyMiner(500))   # a Parquet path
    sel = pickaxe.ray.mine(ray.data.read_parquet(...), miner)          # a Dataset with an id column

How it runs: the miner is configured and prepared on the driver (a NoveltyMiner is
fitted there, an hnswlib graph is built there), put into the object store once
(``ray.put``) and loaded once per actor of an actor pool (a callable class given to
``map_batches``); each batch arrives as an Arrow table, its field column is handed to the
kernels without a copy (fixed-size lists of numbers are numpy views), and each batch
returns only its own top ``k`` rows (``Miner.score`` + ``top_k``) with their ids and
metadata. The driver merges those (at most k x batches rows) with the in-memory tie rule:
score descending, then row ascending.

Row numbers. In memory a row without an ``id`` is named by its row number in the pool,
and equal scores are ordered by row number. A Ray Dataset has no stable global row
number, so:

- a **Parquet path** (file or folder, the same files in the same order as the in-memory
  Parquet pool) is read by pickaxe through Ray, one task per row group, each knowing the
  number of its first row from the Parquet metadata: ids, ties and `RandomMiner` are
  exactly those of ``miner.mine(path)``;
- a **Dataset** must have an ``id`` column. Equal scores are ordered by id ascending, and
  `RandomMiner` hashes the (integer) id in place of the row number: the selection equals
  the in-memory one whenever the ids increase with the rows (e.g. ids = row numbers),
  which is how the tests check it.

``query`` (the miner's, or `combine`'s) is run by DuckDB on each Arrow batch before
scoring: a ``WHERE`` clause over one row at a time, so batch by batch gives the rows the
whole-pool query gives.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ._fields import FIELD_SHAPES
from ._pool import ROW, PoolSource, _arrow_shapes, _close, _match_rows, _ParquetSource, _to_pool
from .miners import Miner, _shift_row
from .selection import Selection

__all__ = ["mine", "FAIL_ONCE_ENV"]

#: Column names pickaxe adds to the batches it returns; never a pool's column.
KEY = "__pickaxe_key__"
SCORE = "__pickaxe_score__"
INFO = "__pickaxe_info__"

#: Fault injection for the tests: when this environment variable names a file that
#: exists, the first batch to see it deletes it and raises (a transient failure Ray retries).
FAIL_ONCE_ENV = "PICKAXE_RAY_FAIL_ONCE"


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

        flag = os.environ.get(FAIL_ONCE_ENV)
        if flag:
            try:
                os.remove(flag)  # only one caller can remove it
            except FileNotFoundError:
                pass
            else:
                raise TransientBatchError(f"injected failure ({FAIL_ONCE_ENV}={flag})")
        plan = self.plan
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
        return self._top(table, rows)

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
        if rows is None:  # a Dataset: the id stands for the row number
            ids = table.column("id").to_numpy(zero_copy_only=False)
            rows = ids.astype(np.int64) if ids.dtype.kind in "iu" else None
        columns = list(self.miner.columns_for(self.field))
        if has_id:
            columns.append("id")
        pool = _to_pool(plan["who"], table.select(columns), columns, n, 0, rows)
        if not n:
            values, info = np.empty(0, dtype=np.float64), {}
        else:
            if rows is None and type(self.miner).__name__ == "RandomMiner":
                raise TypeError(f"{plan['who']}: RandomMiner on a Ray Dataset needs integer ids")
            try:
                values, info = self.miner.score(pool, self.field)
            except ValueError as e:
                raise ValueError(_shift_row(str(e), pool)) from None
        best = top_k(values, self.k)
        keep = pa.array(best)
        out = {c: table.column(c).take(keep) for c in plan["carry"]}
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
        self, miner: Miner, k: int, field: Optional[str], concurrency: Optional[int]
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any], Any]:
        """Like `Miner.top`: the k best rows' keys (row numbers, or ids), scores, info,
        and their carried columns (an Arrow table, same order)."""
        import pyarrow as pa

        ray = _ray()
        src = self.source
        miner.prepare(src, field)
        nb = getattr(miner, "_neighbours", None)
        if nb is not None and getattr(miner, "_method", None) == "hnsw":
            nb.ensure_index()  # built once here, not once per actor
        carry = [c for c in src.column_names if c not in FIELD_SHAPES]
        read = None
        if self.mode == "parquet":
            read = list(src.column_names) if self.query else list(miner.columns_for(field)) + carry
        plan = {"mode": self.mode, "who": self.who, "query": self.query, "carry": carry, "read": read}
        if self.ds is None or k == 0:
            return np.empty(0, np.int64), np.empty(0), {}, None
        kwargs: dict[str, Any] = {
            "batch_format": "pyarrow",
            "zero_copy_batch": True,
            "batch_size": 1 if self.mode == "parquet" else self.batch_rows,
        }
        if nb is not None:
            # an embedding miner holds a reference (an index, fitted densities): into the
            # object store once, loaded once per actor of the pool
            out = self.ds.map_batches(
                _Scorer,
                fn_constructor_args=(ray.put(miner), field, k, plan),
                compute=ray.data.ActorPoolStrategy(size=concurrency),
                **kwargs,
            )
        else:
            # the uncertainty miners are a few numbers: tasks on pooled workers, no actor
            # start-up (seconds) per run
            remote = {"retry_exceptions": self.retry, "max_retries": 3} if self.retry else {}
            out = self.ds.map_batches(
                _score_task,
                fn_args=(miner, field, k, plan),
                **remote,
                **kwargs,
            )
        tables = [t for t in ray.get(list(out.to_arrow_refs())) if t.num_rows]
        if not tables:
            return np.empty(0, np.int64), np.empty(0), {}, None
        t = pa.concat_tables(tables)
        keys = t.column(KEY).to_numpy(zero_copy_only=False)
        values = t.column(SCORE).to_numpy()
        order = np.lexsort((keys, -values)) if keys.dtype.kind in "iuf" else _order_obj(keys, values)
        order = order[:k]
        info = json.loads(t.column(INFO)[int(order[0])].as_py()) if len(order) else {}
        return keys[order], values[order], info, t.take(pa.array(order)).drop_columns([KEY, SCORE, INFO])

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


def mine(
    pool: Any,
    miner: Miner,
    *,
    concurrency: Optional[int] = None,
    batch_rows: Optional[int] = 65536,
    retry_exceptions: Union[bool, list] = False,
) -> Selection:
    """The `Selection` ``miner.mine(pool)`` gives, computed on Ray Data.

    ``pool``: a ``ray.data.Dataset`` with an ``id`` column, or a path to a Parquet file or
    folder (read through Ray, one task per row group). ``concurrency``: actors in the
    pool of an embedding miner (default: the cluster's CPUs); the other miners run as
    Ray tasks. ``batch_rows``: rows per
    batch of a Dataset. ``retry_exceptions``: application errors Ray retries in the actor
    tasks (``DataContext.actor_task_retry_on_errors``: True, or a list of exception types).

    Works for every miner but `CoresetMiner` (its greedy needs the whole pool on one
    machine) and `combine(..., diversity="coreset")`.
    """
    ray = _ray()
    from ._combine import Combined
    from .miners import CoresetMiner

    who = f"pickaxe.ray.mine({type(miner).__name__})"
    if not isinstance(miner, Miner):
        raise TypeError(f"{who}: miner must be a pickaxe miner; got {type(miner).__name__}")
    if isinstance(miner, CoresetMiner) or (isinstance(miner, Combined) and miner.diversity == "coreset"):
        raise NotImplementedError(f"{who}: the coreset greedy needs the whole pool on one machine; mine it in memory")
    if concurrency is None:
        concurrency = max(1, int(ray.available_resources().get("CPU", 1)))
    run = _Run(pool, miner.query, who, batch_rows)
    ctx = (getattr(run.ds, "context", None) or ray.data.DataContext.get_current()) if run.ds is not None else None
    before = getattr(ctx, "actor_task_retry_on_errors", None)
    if ctx is not None and retry_exceptions:
        ctx.actor_task_retry_on_errors = retry_exceptions
        run.retry = retry_exceptions
    try:
        if isinstance(miner, Combined):
            return _combined(run, miner, concurrency)
        field = miner.resolve_field(run.source)
        keys, values, info, carried = run.top(miner, miner.size, field, concurrency)
        return run.selection(keys, values, miner.name, info, carried)
    finally:
        if ctx is not None:
            ctx.actor_task_retry_on_errors = before


def _combined(run: _Run, combined: Any, concurrency: int) -> Selection:
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
        ranked, scores, _, carried = run.top(miner, want + len(taken), field, concurrency)
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
