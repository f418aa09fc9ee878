"""The mining algorithm, written once against a `Backend`.

A backend is where the pool's rows live and where they are scored: `LocalBackend` in this
process (arrays, tables, Parquet streamed batch by batch), `pickaxe.ray`'s backend on a Ray
cluster. The engine decides what to compute; the backend computes it. What the engine asks
of a backend:

- ``top(miner, k, field)``: the ``k`` best rows by the miner's per-row score, each batch
  reduced by `batch_top` and the batches merged by `best_order`;
- ``gather(columns)``: every row (that passes the query) with these columns, for a miner
  that ranks the whole pool at once (``Miner.whole_pool``);
- ``fetch(keys, columns)``: the named rows' columns (the nominees of a diverse `combine`);
- ``locate(error, keys)``: an error naming a position among gathered or fetched rows,
  made to name the pool's row (or id);
- ``keys(values)`` and ``selection(keys, values, miners, info)``: the picks as a `Selection`,
  with the ids and metadata of only those rows.

Rows are named by keys: their row number in the original pool, or (a Ray Dataset, which
has no row numbers) their id. Ties are broken by key ascending everywhere, so a batched,
streamed or distributed run picks what one pass over the whole pool would.

Miners say what a backend needs to know of them (`Miner.whole_pool`,
`Miner.ships_state`, `Miner.reads_row_numbers`); the engine and the backends never look
inside a miner.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np

from .pools import BATCH_ROWS
from .errors import InvalidInputError
from .select import top_k
from .selection import Selection

from .pools import Pool, PoolSource, check_unique

if TYPE_CHECKING:
    from .miners import Miner

__all__ = ["Backend", "LocalBackend", "mine", "rank", "batch_top", "best_order", "pool_error", "selection_of", "key_numbers", "uniforms"]

#: (keys, scores, info) of ranked rows, best first.
Ranked = tuple[np.ndarray, np.ndarray, dict[str, Any]]


# The per-row selection (a batch's kept rows, their merge, the final pick under the batch
# controls: quotas by group, weighted draws) is `pickaxe.per_row`'s, shared by every backend.
from .per_row import Tops, batch_top, best_order, empty_tops, group_floors, merge_tops  # noqa: E402


def pool_error(e: InvalidInputError, batch: Pool) -> InvalidInputError:
    """A kernel's error names a row (or image) of `batch`: name the row of the original
    pool, and its id when the pool has an id column. Re-based by its attributes, never by
    its message."""
    i = e.row
    if i is None or not 0 <= i < batch.n_rows:
        return e
    if "id" in batch.columns:
        return e.with_row(int(batch.source_rows([i])[0]), id=batch.columns["id"][i])
    return e.with_row(int(batch.source_rows([i])[0]))


def selection_of(
    source: PoolSource, rows: np.ndarray, values: np.ndarray, miners: Any, info: dict[str, Any]
) -> Selection:
    """A `Selection` of these original rows: their ids and metadata read from the pool
    (only these rows)."""
    picked = source.take(rows, source.metadata_names) if len(source.metadata_names) or source.has_id else None
    ids = picked.columns["id"] if source.has_id else np.asarray(rows, dtype=np.int64)
    if source.has_id:  # a streamed pool's ids are checked per batch: the picks, whole
        check_unique(source.who, ids, lambda p: f"row {int(rows[p])}")
    metadata = {} if picked is None else {n: picked.columns[n] for n in source.metadata_names}
    return Selection(ids, values, miners, metadata, info)


def key_numbers(keys: np.ndarray) -> np.ndarray:
    """One int64 number per key, for what hashes rows (`RandomMiner`, random orders): a
    row number or an integer id itself (uint64 ids past 2**63 wrap, still one number per
    id), a string id the first 8 bytes of its BLAKE2b digest (stable across processes,
    unlike ``hash``)."""
    if keys.dtype.kind in "iu":
        return keys.astype(np.int64)
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8).digest(), "little", signed=True) for v in keys),
        dtype=np.int64,
        count=len(keys),
    )


def uniforms(numbers: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) for each int64 in `numbers`, hashed with `seed`
    (splitmix64, Steele, Lea and Flood 2014): the same for a row however the pool is
    batched, streamed or distributed."""
    golden = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = numbers.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64) + golden
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


class Backend(ABC):
    """Where a mining run's pool lives and is scored; see the module's docstring."""

    #: The pool's schema and shapes, for the checks miners make before any work.
    source: "PoolSource"
    who: str

    @abstractmethod
    def tops(self, miner: "Miner", k: Optional[int], field: Optional[str], column: Optional[str]) -> Tops:
        """The rows kept over the pool's batches, each batch reduced by `batch_top` and
        the batches merged by `merge_tops`: the ``k`` best (by score or draw key), per
        group of `column` when it is given; every row scoring a number when ``k`` is None."""

    def top(self, miner: "Miner", k: int, field: Optional[str]) -> Ranked:
        """The ``k`` rows `miner` picks by its per-row score under its batch controls
        (``miner.controls``: the top rows, a draw, quotas by group): keys, scores (best
        first, or in draw order) and info; a stratified run's groups ride in
        ``info[GROUPS]`` (`mine` moves them to the selection)."""
        from .per_row import pick

        c = miner.controls
        column = stratify_column(miner, self, field)
        tops = self.candidates(miner, k, field, column)
        if c.plain:
            return tops.keys, tops.values, tops.info
        classes = None
        if c.stratify == "predicted" and column is not None:
            classes = self.source.shapes[column][1]
        keys, values, info, groups = pick(tops, c, k, self.who, classes)
        if groups is not None:
            info[GROUPS] = groups
        return keys, values, info

    def candidates(self, miner: "Miner", k: int, field: Optional[str], column: Optional[str]) -> Tops:
        """The rows a per-row miner's ``k`` picks come from: `drawn`'s for
        ``sampling="rank"`` (keys need every row's rank), else `tops`' bounded top-k."""
        if miner.controls.sampling == "rank":
            return self.drawn(miner, k, field, column)
        return self.tops(miner, k, field, column)

    def drawn(self, miner: "Miner", k: int, field: Optional[str], column: Optional[str]) -> Tops:
        """``sampling="rank"``: the rows that may be among the ``k`` highest draw keys
        (per group of `column`), keyed (`pickaxe.per_row.drawn` of every row's `tops`)."""
        from .per_row import drawn

        return drawn(self.tops(miner, None, field, column), miner.controls, key_numbers, k)

    def whole(self, miner: "Miner", k: int, field: Optional[str]) -> Ranked:
        """The ``k`` rows a miner that ranks the whole pool at once picks: its ``select``
        over the gathered rows. A backend that holds the rows where they are computed on
        may run a miner's ``select_sharded`` there instead (`pickaxe.ray`)."""
        keys, columns = self.gather(miner.columns_for(field))
        try:
            picks, values, info = miner.select(columns, k, field)
        except InvalidInputError as e:
            raise self.locate(e, keys) from None
        return keys[picks], np.asarray(values, dtype=np.float64), info

    @abstractmethod
    def gather(self, columns: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Every row that passes the query, in key order: keys and these columns."""

    @abstractmethod
    def fetch(self, keys: np.ndarray, columns: list[str]) -> "Pool":
        """The rows named by `keys`, in that order, with these columns."""

    @abstractmethod
    def locate(self, error: InvalidInputError, keys: np.ndarray) -> InvalidInputError:
        """`error` names row i of gathered or fetched rows: make it name ``keys[i]``."""

    @abstractmethod
    def keys(self, values: Sequence[Any]) -> np.ndarray:
        """A list of keys as an array of this backend's key type."""

    @abstractmethod
    def selection(self, keys: np.ndarray, values: np.ndarray, miners: Any, info: dict[str, Any]) -> Selection:
        """The `Selection` of these rows: ids and metadata read for them alone."""


class LocalBackend(Backend):
    """The pool in this process: batches of a `PoolSource` scored one after the other,
    keeping only the best ``k`` rows between batches. Keys are row numbers."""

    def __init__(self, source: "PoolSource") -> None:
        self.source = source
        self.who = source.who

    def tops(self, miner: "Miner", k: Optional[int], field: Optional[str], column: Optional[str]) -> Tops:
        kept = empty_tops(np.empty(0, dtype=np.int64), column is not None)
        parts = [kept]  # k None: every row, merged once at the end
        # Batches' kept rows wait in `pending` until they number as many as `kept`, then
        # merge in one call: with quotas the floors (each group's k-th best so far) leave
        # a batch few rows, and one merge per batch of 5,000 kept rows with a handful of
        # new ones was most of a stratified run's cost. Stale floors are still floors.
        pending: list[Tops] = []
        waiting = 0
        floors: dict = {}
        columns = list(miner.columns_for(field)) + ([column] if column else [])
        for batch in self.source.batches(columns, BATCH_ROWS, progress=True):
            b = batch_top(miner, batch, field, k, lambda e: pool_error(e, batch), column, floors)
            part = Tops(batch.source_rows(b.rows), b.values, b.order, b.groups, b.counts, b.info)
            if k is None:
                parts.append(part)
                continue
            pending.append(part)
            waiting += len(part.keys)
            if waiting >= max(len(kept.keys), k):
                kept = merge_tops([kept, *pending], k)
                pending, waiting = [], 0
                if column is not None:
                    floors = group_floors(kept, k)
        if k is None:
            return merge_tops(parts, None)
        return merge_tops([kept, *pending], k) if pending else kept

    def drawn(self, miner: "Miner", k: int, field: Optional[str], column: Optional[str]) -> Tops:
        """As `Backend.drawn`, the rows kept as they stream in compact buffers
        (`pickaxe.per_row.RankRows`: no per-batch keys, no concatenation)."""
        from .batch_controls import labels
        from .per_row import RankRows, score_batch

        c = miner.controls
        rows = RankRows(self.source.n_rows, column is not None)
        columns = list(miner.columns_for(field)) + ([column] if column else [])
        for batch in self.source.batches(columns, BATCH_ROWS, progress=True):
            if batch.n_rows == 0:
                continue
            values, info = score_batch(miner, batch, field, lambda e: pool_error(e, batch))
            rows.add(batch, values, info, None if column is None else labels(c, batch.columns[column]))
        return rows.drawn(c, k)

    def gather(self, columns: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        pool = self.source.read(columns)
        return pool.source_rows(np.arange(pool.n_rows)), pool.columns

    def fetch(self, keys: np.ndarray, columns: list[str]) -> "Pool":
        return self.source.take(keys, columns)

    def locate(self, error: InvalidInputError, keys: np.ndarray) -> InvalidInputError:
        if error.row is None or not 0 <= error.row < len(keys):
            return error
        return error.with_row(int(keys[error.row]))

    def keys(self, values: Sequence[Any]) -> np.ndarray:
        return np.asarray(values, dtype=np.int64)

    def selection(self, keys: np.ndarray, values: np.ndarray, miners: Any, info: dict[str, Any]) -> Selection:
        return selection_of(self.source, keys, values, miners, info)


# -- the algorithm ---------------------------------------------------------------------


def mine(miner: "Miner", backend: Backend) -> Selection:
    """``miner``'s selection from the backend's pool: every field checked first, then the
    miner's ranking (or `combine`'s budget split), then the picks' ids and metadata."""
    from .miners.combine import Combined

    if isinstance(miner, Combined):
        return _combined(miner, backend)
    field = miner.resolve_field(backend.source)
    stratify_column(miner, backend, field)  # checked before any work
    keys, values, info = rank(miner, backend, miner.size, field)
    return with_groups(backend.selection(keys, values, miner.name, info))


#: The ``info`` entry that carries a stratified run's groups to its `Selection`.
GROUPS = "__groups__"


def with_groups(selection: Selection) -> Selection:
    """The selection with its rows' groups (``Selection.groups``) taken out of ``info``."""
    groups = selection.info.pop(GROUPS, None)
    if groups is not None:
        selection.groups = np.asarray(groups, dtype=object)
    return selection


def stratify_column(miner: "Miner", backend: Backend, field: Optional[str]) -> Optional[str]:
    """The column a stratified miner reads its groups from (`pickaxe.batch_controls`),
    checked against the pool; None when it is not stratified."""
    from .batch_controls import group_column

    src = backend.source
    return group_column(miner.controls, f"{type(miner).__name__}()", src.column_names, src.describe(), field)


def rank(miner: "Miner", backend: Backend, k: int, field: Optional[str]) -> Ranked:
    """The ``k`` best rows for `miner`: per-row scores through ``backend.top``; for a miner
    that re-picks (``repick_columns``), the ``nominees(k)`` best rows by its score, then its
    ``repick`` among them from those columns, fetched for the nominees alone; for a miner
    that ranks the whole pool (``whole_pool``), its ``select`` over the gathered rows."""
    miner.prepare(backend.source, field)
    if miner.repick_columns:
        keys, values, info = backend.top(miner, miner.nominees(k), field)
        fetched = backend.fetch(keys, list(miner.repick_columns)).columns
        try:
            picks, picked_values, more = miner.repick(keys, values, fetched, k)
        except InvalidInputError as e:
            raise backend.locate(e, keys) from None
        return keys[picks], np.asarray(picked_values, dtype=np.float64), {**info, **more}
    if not miner.whole_pool:
        return backend.top(miner, k, field)
    return backend.whole(miner, k, field)


def _combined(combined: Any, backend: Backend) -> Selection:
    """`combine`: miners in order, each asked for its share plus the rows taken so far
    (a row an earlier miner took goes to this one's next best); a share a miner cannot
    fill passes on. With ``diversity="coreset"`` the miners nominate instead, and k-center
    greedy over the nominees' embeddings picks the batch."""
    fields = [m.resolve_field(backend.source) for m in combined.miners]  # all checked before any work
    if combined.diversity == "coreset":
        return _diverse(combined, fields, backend)
    if combined.controls.stratified:
        from .per_row import combined_groups

        return with_groups(combined_groups(combined, fields, backend))
    quotas = combined.quotas()
    taken: set = set()
    keys: list = []
    values: list[float] = []
    names: list[str] = []
    carry = 0
    for miner, field, quota in zip(combined.miners, fields, quotas):
        want = quota + carry
        if want == 0:
            continue
        ranked, scores, _ = rank(miner, backend, want + len(taken), field)
        got = 0
        for r, s in zip(ranked.tolist(), scores.tolist()):
            if got == want:
                break
            if r in taken:
                continue
            taken.add(r)
            keys.append(r)
            values.append(s)
            names.append(miner.name)
            got += 1
        carry = want - got
    info = {"quotas": combined.quota_info(quotas), **combined.controls.info()}
    return backend.selection(
        backend.keys(keys), np.asarray(values, dtype=np.float64), np.asarray(names, dtype=object), info
    )


def _diverse(combined: Any, fields: list[Optional[str]], backend: Backend) -> Selection:
    """Each miner nominates ``candidates`` times its share; only the nominees'
    embeddings are fetched, and k-center greedy over them picks the final batch, so no
    single cluster of confusing rows fills the budget. With a labeled ``reference`` the
    greedy starts from it as centers (`kcenter_cover`, as `CoresetMiner` does)."""
    from .index import embeddings_array
    from .miners.diversity import kcenter_cover

    if "embeddings" not in backend.source.column_names:
        raise ValueError(
            f'combine(diversity="coreset") needs the field embeddings (N, D) to spread '
            f"the batch; the pool has {backend.source.describe()}"
        )
    cover = combined.cover
    if cover is not None:  # before any miner runs
        cover.check_dim("combine().mine()", "embeddings", backend.source.shapes["embeddings"])
    quotas = combined.quotas()
    nominee: dict[Any, tuple[float, str]] = {}
    for miner, field, quota in zip(combined.miners, fields, quotas):
        ranked, scores, _ = rank(miner, backend, combined.candidates * max(quota, 1), field)
        for r, s in zip(ranked.tolist(), scores.tolist()):
            nominee.setdefault(r, (s, miner.name))
    cand = backend.keys(list(nominee))
    info = {"quotas": combined.quota_info(quotas), "diversity": "coreset", "candidates": len(cand)}
    if not len(cand):
        return backend.selection(cand, np.empty(0), np.empty(0, dtype=object), info)
    fetched = backend.fetch(cand, ["embeddings"]).columns["embeddings"]
    try:
        emb, norms = embeddings_array("combine()", "embeddings", fetched)
    except InvalidInputError as e:
        raise backend.locate(e, cand) from None
    picks, _, cover_info = kcenter_cover(emb, norms, combined.size, combined.metric, cover)
    if cover is not None:
        info.update(reference=cover.size, **cover_info)
    idx = cand[picks]
    values = np.array([nominee[r][0] for r in idx.tolist()], dtype=np.float64)
    names = np.array([nominee[r][1] for r in idx.tolist()], dtype=object)
    return backend.selection(idx, values, names, info)
