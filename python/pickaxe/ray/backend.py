"""The Ray backend of the mining engine (`pickaxe.engine.Backend`): the pool's batches are
mapped on Ray Data, each returning its own top ``k`` (or its keys and columns, or the
rows asked for); the driver merges what comes back with the engine's tie rule.

Keys: a Parquet pool's rows are named by row number (one task per row group, each knowing
the number of its first row from the Parquet metadata); a Dataset's by its id column.
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence, Union

import numpy as np

from .._fields import FIELD_SHAPES
from ..pools import ParquetSource, Pool, PoolSource, to_pool
from ..engine import Backend, Tops, empty_tops, merge_tops
from ..errors import InvalidInputError
from ..miners import Miner
from ..selection import Selection
from .dataset import DatasetSource
from .worker import ERROR, KEY, Scorer, block_tops, by_id, score_task

#: Retries of a failed batch when ``retry_exceptions`` is given.
MAX_RETRIES = 3


def load_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ImportError('pickaxe.ray needs Ray Data: pip install "pickaxe[ray]"') from None
    return ray


class Actors(NamedTuple):
    """The actor pool of a miner that ships state: Ray Data grows it from ``min_size`` to
    ``max_size`` actors as batches queue up; each actor reserves ``num_cpus``."""

    min_size: int
    max_size: int
    num_cpus: float


def actor_pool(who: str, concurrency: Any, cpus: float) -> Actors:
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
    return Actors(lo, hi, num_cpus)


def key_array(column: Any) -> np.ndarray:
    """An Arrow key column (row numbers, or ids) as a 1-D numpy array."""
    from ..pools.arrow import metadata_to_numpy

    return metadata_to_numpy(column)


class RayBackend(Backend):
    """One mining run's pool on Ray: the dataset to map, the checks' source, the plan."""

    def __init__(
        self, pool: Any, query: Optional[str], who: str, batch_rows: Optional[int], actors: Actors, retry: Union[bool, list]
    ) -> None:
        ray = load_ray()
        self.who = who
        self.query = query
        if isinstance(pool, (str, os.PathLike)):
            self.mode = "parquet"
            src = ParquetSource(who, Path(os.fspath(pool)), query)
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
            self.source = DatasetSource(who, pool, query)
            if not self.source.has_id:
                raise ValueError(
                    f"{who}: a Ray Dataset has no stable row numbers, so it needs an id column "
                    "(or pass the Parquet path itself, which pickaxe reads with row numbers); "
                    f"it has {', '.join(self.source.column_names)}"
                )
            self.ds = pool
        self.batch_rows = batch_rows
        self.actors = actors
        self.retry = retry
        #: The columns a selection reads for its rows (id and metadata): every batch's top
        #: rows carry them back, so the picks need no second pass over the pool.
        self.carry = [c for c in self.source.column_names if c not in FIELD_SHAPES]
        self._carried: list = []  # Arrow tables of keys and carried columns seen so far

    # -- the engine's questions ---------------------------------------------------------

    def tops(self, miner: Miner, k: Optional[int], field: Optional[str], column: Optional[str]) -> Tops:
        """Each block keeps its own rows (`batch_top`, in the worker); the driver merges
        them with `merge_tops`, as `LocalBackend` merges its batches."""
        import pyarrow as pa
        import pyarrow.compute as pc

        ray = load_ray()
        none = empty_tops(self.keys([]), column is not None)
        if self.ds is None or k == 0:
            return none
        read = list(miner.columns_for(field)) + ([column] if column else [])
        plan = self._plan("top", list(dict.fromkeys(read + self.carry)))
        plan["carry"] = self.carry
        plan["group"] = column
        if miner.ships_state:
            # a reference, a graph, fitted densities: into the object store once, loaded
            # once per actor of the pool
            tables = self._map(self.ds, (ray.put(miner), field, k, plan), actors=self.actors)
        else:
            # a few numbers: tasks on pooled workers, no actor start-up (seconds) per run
            tables = self._map(self.ds, (miner, field, k, plan))
        if not tables:
            return none
        kept = merge_tops([block_tops(t) for t in tables], k)
        if self.carry:
            carried = pa.concat_tables([t.select([KEY] + self.carry) for t in tables])
            self._carried.append(carried.filter(pc.is_in(carried.column(KEY), value_set=self._key_column(kept.keys))))
        return kept

    def gather(self, columns: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Each batch is a Ray task that returns only the keys and `columns`; the driver
        copies the blocks, in key order, into one C-ordered array per column of the stored
        dtype, each allocated once."""
        from ..pools.arrow import field_to_numpy

        plan = self._plan("gather", columns)
        plan["gather"] = columns
        tables = self._map(self.ds, (None, None, 0, plan)) if self.ds is not None else []
        if not tables:
            empty = self.source.empty_pool(columns)
            ids = self.source.schema.empty_table().column("id") if self.mode == "dataset" else None
            keys = np.empty(0, np.int64) if ids is None else key_array(ids)
            return keys, {c: empty.columns[c] for c in columns}
        firsts = [key_array(t.column(KEY).slice(0, 1))[0] for t in tables]
        tables = [tables[i] for i in np.argsort(np.asarray(firsts), kind="stable")]  # blocks in pool order
        keys = np.concatenate([key_array(t.column(KEY)) for t in tables])
        out = {}
        for name in columns:
            parts = [field_to_numpy(name, t.column(name)) for t in tables]
            x = np.empty((len(keys),) + parts[0].shape[1:], dtype=np.result_type(*[p.dtype for p in parts]))
            at = 0
            for p in parts:
                x[at : at + len(p)] = p
                at += len(p)
            out[name] = x
        if len(keys) > 1 and not bool(np.all(keys[1:] > keys[:-1])):
            order = np.argsort(keys, kind="stable")  # blocks whose keys interleave (a Dataset's ids)
            keys = keys[order]
            out = {c: x[order] for c, x in out.items()}
        if self.mode == "dataset":
            dup = np.flatnonzero(keys[1:] == keys[:-1])
            if dup.size:
                v = keys[int(dup[0])]
                v = v.item() if isinstance(v, np.generic) else v
                raise ValueError(f"{self.who}: the id {v!r} names more than one row; ids must be unique")
        return keys, out

    def gather_refs(self, columns: list[str]) -> list:
        """`gather`'s Ray tasks, their tables (keys and `columns` of the rows that pass
        the query, or a bad block's error) left in the object store: their refs, in block
        order (`pickaxe.ray.shards` hands them to the actors that hold the rows)."""
        plan = self._plan("gather", columns)
        plan["gather"] = columns
        return self._refs(self.ds, (None, None, 0, plan)) if self.ds is not None else []

    def whole(self, miner: Miner, k: int, field: Optional[str]) -> Any:
        """A miner with a ``select_sharded`` (`TypiClustMiner`) runs it over `Shards`:
        its column held by Ray actors, k-means on them, only what it picks from fetched
        to the driver. Any other whole-pool miner: `gather`, then its ``select``."""
        sharded = getattr(miner, "select_sharded", None)
        if sharded is None:
            return super().whole(miner, k, field)
        from .shards import Shards

        column = miner.columns_for(field)[0]
        with Shards(self, column, threads=getattr(miner, "threads", None)) as shards:
            try:
                picks, values, info = sharded(shards, k, field)
            except InvalidInputError as e:
                raise self.locate(e, shards.keys) from None
            return shards.keys[picks], np.asarray(values, dtype=np.float64), info

    def fetch(self, keys: np.ndarray, columns: list[str]) -> Pool:
        t = self._fetch(keys, sorted(set(columns) | set(self.carry), key=self.source.column_names.index))
        if self.carry:
            carried = t.select(self.carry)
            self._carried.append(carried.add_column(0, KEY, self._key_column(keys)))
        rows = keys if self.mode == "parquet" else None
        return to_pool(self.who, t, columns, len(keys), 0, rows)

    def locate(self, error: InvalidInputError, keys: np.ndarray) -> InvalidInputError:
        if self.mode == "dataset":
            return by_id(error, keys)
        if error.row is None or not 0 <= error.row < len(keys):
            return error
        return error.with_row(int(keys[error.row]))

    def keys(self, values: Sequence[Any]) -> np.ndarray:
        if self.mode == "parquet":
            return np.asarray(values, dtype=np.int64)
        # object ids, one per element, whatever they are (a trailing None keeps numpy
        # from reading tuples or equal-length strings as extra dimensions)
        return np.asarray(list(values) + [None], dtype=object)[:-1]

    def selection(self, keys: np.ndarray, values: np.ndarray, miners: Any, info: dict[str, Any]) -> Selection:
        from ..pools.arrow import metadata_to_numpy

        src = self.source
        ids = np.asarray(keys, dtype=np.int64) if self.mode == "parquet" else keys
        meta = {}
        if self.carry:
            carried = self._carried_rows(keys) if len(keys) else src.schema.empty_table()
            if src.has_id:
                ids = metadata_to_numpy(carried.column("id"))
            meta = {n: metadata_to_numpy(carried.column(n)) for n in src.metadata_names}
        return Selection(ids, np.asarray(values, dtype=np.float64), miners, meta, info)

    # -- Ray ------------------------------------------------------------------------------

    def _key_column(self, keys: np.ndarray) -> Any:
        import pyarrow as pa

        if self.mode == "parquet":
            return pa.array(np.asarray(keys, dtype=np.int64))
        id_type = self.source.schema.field("id").type
        return pa.array(keys.tolist() if keys.dtype == object else keys, type=id_type)

    def _carried_rows(self, keys: np.ndarray) -> Any:
        """The carried columns of these rows, in their order: from the batches' top rows
        and fetches so far, and a fetch for any row not among them (a whole-pool miner's
        picks)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        want = self._key_column(keys)
        if self._carried:
            seen = pa.concat_tables(self._carried)
            at = pc.index_in(want, value_set=seen.column(KEY))
            if at.null_count == 0:
                return seen.take(at).select(self.carry)
        return self._fetch(keys, self.carry)

    def _plan(self, op: str, columns: list[str]) -> dict[str, Any]:
        """What each batch does: ``op`` ("top", "gather" or "fetch") on the rows that
        pass the query; a Parquet row group is read with `columns` (every column when the
        query needs them)."""
        read = None
        if self.mode == "parquet":
            read = list(self.source.column_names) if self.query and op != "fetch" else columns
        return {"op": op, "mode": self.mode, "who": self.who, "query": self.query, "read": read}

    def _map(self, ds: Any, args: tuple, actors: Optional[Actors] = None) -> list:
        """``ds.map_batches`` of the `Scorer` (an actor pool sized by `actors`, or tasks),
        run to the end: the non-empty Arrow tables the batches returned, in block order."""
        ray = load_ray()
        tables = [t for t in ray.get(self._refs(ds, args, actors)) if t.num_rows]
        errors = [t for t in tables if ERROR in t.column_names]
        if errors:  # the first bad row of the pool, as in memory
            first = min(errors, key=lambda t: t.column(KEY)[0].as_py())
            raise pickle.loads(first.column(ERROR)[0].as_py())
        return tables

    def _refs(self, ds: Any, args: tuple, actors: Optional[Actors] = None) -> list:
        """`_map`'s run: the object refs of the Arrow tables the batches returned (empty
        ones and errors included), in block order, left where Ray keeps them."""
        ray = load_ray()
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
                out = ds.map_batches(Scorer, fn_constructor_args=args, compute=pool, num_cpus=actors.num_cpus, **kwargs)
            else:
                out = ds.map_batches(score_task, fn_args=args, **remote, **kwargs)
            return list(out.to_arrow_refs())
        finally:
            if saved is not None:
                ctx.retried_map_errors, ctx.max_map_retries = saved

    def _fetch(self, keys: np.ndarray, columns: list[str]) -> Any:
        """An Arrow table of `columns` for the rows named by `keys` (row numbers of a
        Parquet pool, whatever the query; ids of a Dataset), in the order of `keys`.
        Parquet: a Ray task per row group holding some of them; a Dataset: one pass that
        keeps the rows whose id is among the keys."""
        import pyarrow as pa
        import pyarrow.compute as pc

        ray = load_ray()
        plan = self._plan("fetch", columns)
        want = self._key_column(keys)
        if self.mode == "parquet":
            src = self.source
            assert isinstance(src, ParquetSource)
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
        else:
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
