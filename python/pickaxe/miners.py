"""Miners: configured once, run on a pool, return the rows worth labeling.

Uncertainty miners find confusing in-domain rows from the model's predictions; diversity
miners find rows unlike the training data from their embeddings (or logits). Every miner
checks the fields it needs before doing any work, and returns a `Selection`, highest score
first.

>>> import numpy as np, pickaxe as px
>>> logits = np.random.default_rng(0).normal(size=(1000, 10))
>>> px.EntropyMiner(size=3).mine({"logits": logits}).ids.shape
(3,)
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np
from numpy.typing import ArrayLike

from . import _core, scores
from . import _checks as checks
from .errors import InvalidInputError
from ._catalog import COMMITTEE_MEASURES, DROPOUT_MEASURES, MINERS, ROW_MEASURES
from ._fields import FIELD_NDIM, FIELD_SHAPES, check_nan_policy
from .pools import Pool, PoolSource, check_unique, open_pool
from .index import (
    ReferenceIndex,
    check_k,
    check_metric,
    embeddings_array,
)
from .selection import Selection

__all__ = ["Miner", *(m.cls for m in MINERS if m.module == "miners")]


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


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


class Miner:
    """A miner: ``mine(pool)`` scores the pool's rows and returns the ``size`` best.

    ``query`` (a SQL ``WHERE`` clause over the pool's columns, run by DuckDB) restricts
    the rows scored. Subclasses set ``fields`` (the fields they accept, in order of
    preference) and implement ``score(batch, field)``; pools are scored batch by batch,
    keeping only the best ``size`` rows between batches.
    """

    #: Fields this miner accepts, in order of preference.
    fields: tuple[str, ...] = ()
    #: What a backend needs to know (see `pickaxe.engine`). ``whole_pool``: the miner
    #: ranks every row at once in `select` (its columns are read into memory) instead of
    #: scoring batches in `score`.
    whole_pool: bool = False
    #: It holds a prepared state (a reference, a graph, fitted densities) that a
    #: distributed backend sends once per worker, not with every batch.
    ships_state: bool = False
    #: Its scores read the rows' numbers (`Pool.source_rows`): a pool without row numbers
    #: (a Ray Dataset) gives it numbers made from the ids.
    reads_row_numbers: bool = False

    def __init__(self, size: int, field: Optional[str] = None, *, query: Optional[str] = None) -> None:
        who = f"{type(self).__name__}()"
        self.size = checks.integer(who, "size", size, 0)
        if field is not None and field not in self.fields:
            raise ValueError(f"{who}: field must be one of {', '.join(self.fields)}; got {field!r}")
        self.field = field
        self.query = checks.query(who, query)

    @property
    def name(self) -> str:
        """The miner's name on the command line: its class name without ``Miner``."""
        cls = type(self).__name__
        if cls == "MCDropoutMiner":
            return "mc_dropout"
        return _snake(cls[: -len("Miner")] if cls.endswith("Miner") else cls)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"

    def resolve_field(self, pool: Union[Pool, PoolSource]) -> Optional[str]:
        """The field this miner will read from `pool`, checked before any work: a
        missing field, or one of the wrong number of dimensions, raises ValueError
        listing the fields needed and the pool's columns with their shapes."""
        if not self.fields:
            return None
        shapes = (
            pool.shapes if isinstance(pool, PoolSource) else {k: v.shape for k, v in pool.columns.items()}
        )
        wanted = (self.field,) if self.field else self.fields
        for name in wanted:
            if name in shapes:
                if len(shapes[name]) != FIELD_NDIM[name]:
                    dims = ["N" if d is None else str(d) for d in shapes[name]]
                    got = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
                    raise ValueError(
                        f"{type(self).__name__}: field {name} must be {FIELD_SHAPES[name]}; "
                        f"the pool's is {got}"
                    )
                return name
        need = " or ".join(f"{f} {FIELD_SHAPES[f]}" for f in wanted)
        rows = pool.n_rows if pool.n_rows is not None else "N"
        raise ValueError(
            f"{type(self).__name__} needs the field {need}; the pool has {rows} rows of "
            f"{pool.describe()}"
        )

    def columns_for(self, field: Optional[str]) -> list[str]:
        """The pool columns `score` reads: the field (some miners read more)."""
        return [field] if field else []

    def prepare(self, source: PoolSource, field: Optional[str]) -> None:
        """Work done once per mining run before the batches (fit, choice of search)."""

    def score(self, pool: Pool, field: Optional[str]) -> tuple[np.ndarray, dict[str, Any]]:
        """(n,) scores of a batch's rows (higher: more worth labeling; NaN: never
        picked) and what to record in the selection's ``info``."""
        raise TypeError(f"{type(self).__name__} ranks the whole pool in select(); it has no per-row score")

    def select(
        self, columns: dict[str, np.ndarray], k: int, field: Optional[str]
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """A whole-pool miner (``whole_pool``): the positions of the ``k`` rows it picks
        among `columns` (every row that passes the query, each of `columns_for`), best
        first, their scores and the selection's ``info``."""
        raise TypeError(f"{type(self).__name__} scores rows one by one in score(); it has no select()")

    def mine(self, pool: Any) -> Selection:
        """The ``size`` highest-scoring rows of `pool` (that pass ``query``), as a
        `Selection`."""
        from .engine import LocalBackend, mine

        return mine(self, LocalBackend(open_pool(pool, query=self.query, who=f"{type(self).__name__}.mine()")))


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


# -- the baseline ----------------------------------------------------------------------


class RandomMiner(Miner):
    """Uniformly random rows: the baseline every other miner must beat.

    A row's score is a uniform number in [0, 1) hashed from ``seed`` and the row's number
    in the pool (splitmix64), so the picks do not depend on how the pool is batched.
    """

    reads_row_numbers = True

    def __init__(self, size: int, seed: int = 0, *, query: Optional[str] = None) -> None:
        super().__init__(size, query=query)
        self.seed = checks.integer("RandomMiner()", "seed", seed)

    def score(self, pool: Pool, field: Optional[str]) -> tuple[np.ndarray, dict[str, Any]]:
        rows = pool.source_rows(np.arange(pool.n_rows)).astype(np.uint64)
        with np.errstate(over="ignore"):
            z = rows + np.uint64((self.seed * 0x9E3779B97F4A7C15) % 2**64) + np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z = z ^ (z >> np.uint64(31))
        return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53, {"seed": self.seed}


# -- uncertainty -------------------------------------------------------------------------


class _ScoreMiner(Miner):
    """A miner that ranks rows by one function of `pickaxe.scores`."""

    score_function: Callable[..., np.ndarray]

    def __init__(
        self,
        size: int,
        *,
        field: Optional[str] = None,
        nan_policy: str = "raise",
        query: Optional[str] = None,
    ) -> None:
        super().__init__(size, field, query=query)
        self.nan_policy = check_nan_policy(type(self).__name__, nan_policy)

    def options(self) -> dict[str, Any]:
        return {}

    def score(self, pool: Pool, field: Optional[str]) -> tuple[np.ndarray, dict[str, Any]]:
        assert field is not None
        fn = type(self).score_function
        values = fn(**{field: pool.columns[field]}, nan_policy=self.nan_policy, **self.options())
        return values, {"field": field}


class LeastConfidenceMiner(_ScoreMiner):
    """Rows whose top class is least probable: 1 − p(1)."""

    fields = ("logits", "confidences", "confidence")
    score_function = staticmethod(scores.least_confidence)


class MarginMiner(_ScoreMiner):
    """Rows whose two top classes are closest: 1 − (p(1) − p(2))."""

    fields = ("logits", "confidences")
    score_function = staticmethod(scores.margin)


class RatioMiner(_ScoreMiner):
    """Rows whose second class is nearly as probable as the first: p(2) / p(1)."""

    fields = ("logits", "confidences")
    score_function = staticmethod(scores.ratio)


class EntropyMiner(_ScoreMiner):
    """Rows whose class distribution has the highest entropy H(p)."""

    fields = ("logits", "confidences")
    score_function = staticmethod(scores.entropy)


_STACK_MEASURES = {name: getattr(scores, name) for name in COMMITTEE_MEASURES}


class _StackMiner(Miner):
    measures: tuple[str, ...] = ()

    def __init__(
        self,
        size: int,
        measure: str,
        *,
        logits: bool = False,
        nan_policy: str = "raise",
        query: Optional[str] = None,
    ) -> None:
        super().__init__(size, query=query)
        if measure not in self.measures:
            raise ValueError(
                f"{type(self).__name__}(): measure must be one of "
                f"{', '.join(self.measures)}; got {measure!r}"
            )
        self.measure = measure
        self.logits = bool(logits)
        self.nan_policy = check_nan_policy(type(self).__name__, nan_policy)

    def score(self, pool: Pool, field: Optional[str]) -> tuple[np.ndarray, dict[str, Any]]:
        assert field is not None
        fn = _STACK_MEASURES[self.measure]
        values = fn(**{field: pool.columns[field]}, logits=self.logits, nan_policy=self.nan_policy)
        return values, {"field": field, "measure": self.measure}


class CommitteeMiner(_StackMiner):
    """Rows the committee members disagree on (query by committee). ``measure`` is any
    committee score of `pickaxe.scores`."""

    fields = ("query_by_committee",)
    measures = tuple(_STACK_MEASURES)

    def __init__(self, size: int, measure: str = "vote_entropy", **kw: Any) -> None:
        super().__init__(size, measure, **kw)


class MCDropoutMiner(_StackMiner):
    """Rows the dropout passes disagree on; ``mutual_information`` is BALD."""

    fields = ("mc_dropout",)
    measures = DROPOUT_MEASURES

    def __init__(self, size: int, measure: str = "mutual_information", **kw: Any) -> None:
        super().__init__(size, measure, **kw)


# -- diversity ---------------------------------------------------------------------------

Reference = Union[ArrayLike, ReferenceIndex]

@dataclass(frozen=True)
class GraphCosts:
    """What an hnswlib graph costs, in nanoseconds: per reference row to build and per
    query row to search, each a fixed part plus a part per dimension."""

    build_per_row: float
    build_per_row_dim: float
    query_per_row: float
    query_per_row_dim: float


#: Exact search costs, per (query, reference row) pair, a fixed part (the Rust merge) plus
#: a multiply-add per dimension (BLAS). Measured here (2 cores, AVX-512) at D = 64 and 384:
#: 2.3 and 6.3 ns per pair.
EXACT_NS_PER_PAIR = 1.5
EXACT_NS_PER_PAIR_DIM = 0.0126

#: The ReferenceIndex default graph (M = 16, ef_construction = 200, search ef = 100 for
#: k = 10), measured at D = 64 and 384 on clustered data: 103 and 199 us per row to build,
#: 55 and 140 us per query.
DEFAULT_GRAPH = GraphCosts(83_000.0, 300.0, 37_500.0, 275.0)


def exact_cost(n: int, m: int, d: int) -> float:
    return n * m * (EXACT_NS_PER_PAIR + d * EXACT_NS_PER_PAIR_DIM)


def graph_cost(n: int, m: int, d: int, built: bool, costs: GraphCosts = DEFAULT_GRAPH) -> float:
    build = 0.0 if built else m * (costs.build_per_row + d * costs.build_per_row_dim)
    return build + n * (costs.query_per_row + d * costs.query_per_row_dim)


def _pool_rows(source: PoolSource) -> int:
    """Rows a mining run will score: exact when known, else the pool's total (a bound)."""
    return source.n_rows if source.n_rows is not None else source._total_rows()


def _check_search(who: str, search: Any) -> str:
    return checks.choice(who, "search", search, ("auto", "exact", "hnsw"))

def _reference_metric(who: str, reference: Any, metric: Optional[str], default: str) -> str:
    if isinstance(reference, ReferenceIndex):
        if metric is not None and metric != reference.metric:
            raise ValueError(
                f"{who}: metric={metric!r} but the ReferenceIndex was built with "
                f"metric={reference.metric!r}"
            )
        return reference.metric
    return check_metric(who, metric if metric is not None else default)


class _Neighbours:
    """k-nearest-neighbour search of pool rows in a reference, exact or through an
    hnswlib graph, chosen by the sizes: exact for a small reference or few queries, a
    graph when it pays for its build."""

    def __init__(
        self,
        who: str,
        reference: Reference,
        metric: str,
        threads: Optional[int],
        seed: int,
        graph: Optional[dict[str, Any]] = None,
        costs: GraphCosts = DEFAULT_GRAPH,
    ) -> None:
        self.graph = graph or {}
        self.costs = costs
        self.metric = metric
        self.threads = threads
        self.seed = seed
        self.index: Optional[ReferenceIndex] = None
        self.array: Optional[np.ndarray] = None
        self.norms: Optional[np.ndarray] = None
        if isinstance(reference, ReferenceIndex):
            self.index = reference
            self.dim = reference.dim
            self.size = reference.size
        else:
            self.array, self.norms = embeddings_array(who, "reference", reference, field="reference")
            if self.array.shape[0] == 0:
                raise ValueError(f"{who}: the reference is empty (shape {self.array.shape})")
            self.dim = int(self.array.shape[1])
            self.size = int(self.array.shape[0])

    def method_for(self, n: int, search: str = "auto") -> str:
        """"exact" or "hnsw" for a search of n pool rows."""
        if self.index is not None and self.index.method == "exact":
            return "exact"  # a small ReferenceIndex holds no graph
        if search != "auto":
            return search
        built = self.index is not None
        costs = self.costs if not built else DEFAULT_GRAPH
        if exact_cost(n, self.size, self.dim) <= graph_cost(n, self.size, self.dim, built, costs):
            return "exact"
        return "hnsw"

    def ensure_index(self) -> ReferenceIndex:
        if self.index is None:
            assert self.array is not None
            self.index = ReferenceIndex(self.array, self.metric, threads=self.threads, seed=self.seed, **self.graph)
        return self.index

    def exact_reference(self) -> tuple[np.ndarray, Optional[np.ndarray]]:
        if self.array is not None:
            return self.array, self.norms
        assert self.index is not None
        return self.index.vectors(), None

    def search(self, x: np.ndarray, norms: np.ndarray, k: int, method: str) -> tuple[np.ndarray, np.ndarray]:
        from ._exact import exact_knn

        if method == "exact":
            ref, ref_norms = self.exact_reference()
            return exact_knn(x, ref, min(k, self.size), self.metric, q_norms=norms, r_norms=ref_norms)
        return self.ensure_index()._search(x, k, norms)

    def check_dim(self, who: str, field: str, shape: tuple) -> None:
        if len(shape) == 2 and shape[1] is not None and shape[1] != self.dim:
            raise ValueError(
                f"{who}: the pool's {field} have {shape[1]} dimensions; the reference has {self.dim}"
            )


class _NeighbourMiner(Miner):
    """A miner that scores pool rows by their nearest reference rows: the reference,
    metric, k and search choice are checked and held the same way for each."""

    fields = ("embeddings",)
    default_metric = "cosine"
    ships_state = True

    def _init_neighbours(
        self, reference: Reference, k: Any, metric: Optional[str], search: Any, threads: Optional[int], seed: int
    ) -> None:
        who = f"{type(self).__name__}()"
        self.k = check_k(who, k)
        self.metric = _reference_metric(who, reference, metric, self.default_metric)
        self.search = _check_search(who, search)
        graph, costs = self._graph()
        self._neighbours = _Neighbours(who, reference, self.metric, threads, seed, graph=graph, costs=costs)

    def _graph(self) -> tuple[dict[str, Any], GraphCosts]:
        """Build parameters and costs of the graph made when given raw embeddings."""
        return {}, DEFAULT_GRAPH

    def _check_dim(self, source: PoolSource, field: Optional[str]) -> None:
        assert field is not None
        self._neighbours.check_dim(f"{type(self).__name__}.mine()", field, source.shapes[field])

    def _embeddings(self, pool: Pool, field: Optional[str]) -> tuple[np.ndarray, np.ndarray]:
        assert field is not None
        who = f"{type(self).__name__}.mine()"
        return embeddings_array(who, field, pool.columns[field], self._neighbours.dim)


class EmbeddingDistanceMiner(_NeighbourMiner):
    """Rows far from the training data: the distance from each pool row to its ``k``
    nearest reference rows, their mean (``aggregate="mean"``) or the k-th
    (``aggregate="kth"``).

    ``metric``: ``"cosine"`` by default (1 − cos on normalised vectors, as in deep
    nearest-neighbour OOD detection, Sun et al. 2022), ``"l2"`` or ``"ip"``. ``reference``
    is the training embeddings (M, D) or a `ReferenceIndex` (whose metric is then used).
    Exact search or an hnswlib graph is chosen by the sizes (``search="auto"``), or forced
    with ``search="exact"`` / ``"hnsw"``; ``selection.info["search"]`` says which ran.
    """

    def __init__(
        self,
        size: int,
        reference: Reference,
        k: int = 10,
        metric: Optional[str] = None,
        *,
        aggregate: str = "mean",
        search: str = "auto",
        threads: Optional[int] = None,
        seed: int = 0,
        query: Optional[str] = None,
    ) -> None:
        super().__init__(size, query=query)
        if aggregate not in ("mean", "kth"):
            raise ValueError(
                f'{type(self).__name__}(): aggregate must be "mean" or "kth"; got {aggregate!r}'
            )
        self.aggregate = aggregate
        self._init_neighbours(reference, k, metric, search, threads, seed)
        self._method = "exact"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, k={self.k}, metric={self.metric!r}, "
            f"aggregate={self.aggregate!r}, reference={self._neighbours.size} rows)"
        )

    def prepare(self, source: PoolSource, field: Optional[str]) -> None:
        self._check_dim(source, field)
        self._method = self._neighbours.method_for(_pool_rows(source), self.search)
        if self._method == "hnsw":
            self._neighbours.ensure_index()  # built once, before any batch (or worker) needs it

    def score(self, pool: Pool, field: Optional[str]) -> tuple[np.ndarray, dict[str, Any]]:
        nb = self._neighbours
        x, norms = self._embeddings(pool, field)
        _, dist = nb.search(x, norms, self.k, self._method)
        values = dist[:, -1] if self.aggregate == "kth" else dist.mean(axis=1)
        return values, {"search": self._method, "metric": self.metric, "k": min(self.k, nb.size)}


#: The graph the novelty miner builds for itself when it is given raw embeddings: LOF
#: averages over k neighbours, so a much lighter graph than the ReferenceIndex default keeps
#: its ranking (Spearman 0.998 against exact LOF at 50,000 x 64 in
#: benches/bench_diversity.py) at a quarter of the build and search time. Search ef is
#: k + NOVELTY_EF_MARGIN.
NOVELTY_GRAPH = {"M": 8, "ef_construction": 40}
NOVELTY_EF_MARGIN = 4
#: Its costs, measured like DEFAULT_GRAPH's (k = 21 queries at ef = 24).
NOVELTY_GRAPH_COSTS = GraphCosts(18_000.0, 130.0, 11_500.0, 82.0)


class NoveltyMiner(_NeighbourMiner):
    """Local outliers against the training data: the local outlier factor (LOF) of each
    pool row in novelty mode (Breunig et al. 2000; scikit-learn's
    ``LocalOutlierFactor(novelty=True)``).

    At fit, for each reference row r with neighbours N(r) (k, excluding itself):
    k-distance kd(r) = distance to the k-th neighbour, and local reachability density
    lrd(r) = 1 / (mean_{o ∈ N(r)} max(kd(o), d(r, o)) + 1e-10). A pool row x with
    neighbours N(x) among the reference gets LOF(x) = mean_{o ∈ N(x)} lrd(o) / lrd(x):
    about 1 inside the data, larger for outliers. Distances are euclidean by default.

    The fit runs on the first ``mine`` (or ``fit()``) and is kept.
    """

    default_metric = "l2"

    def __init__(
        self,
        size: int,
        reference: Reference,
        k: int = 20,
        metric: Optional[str] = None,
        *,
        search: str = "auto",
        threads: Optional[int] = None,
        seed: int = 0,
        query: Optional[str] = None,
    ) -> None:
        super().__init__(size, query=query)
        self._init_neighbours(reference, k, metric, search, threads, seed)
        if self._neighbours.size < 2:
            raise ValueError(
                f"{type(self).__name__}(): LOF needs a reference of at least 2 rows; "
                f"got {self._neighbours.size}"
            )
        self.k_distance: Optional[np.ndarray] = None
        self.lrd: Optional[np.ndarray] = None
        self._method = "exact"

    def fit(self, n_pool: int = 0) -> "NoveltyMiner":
        """Compute the reference's k-distances and local reachability densities, by
        exact search or through a graph (chosen for the reference plus `n_pool` pool
        rows, the searches the graph will serve)."""
        nb = self._neighbours
        method = nb.method_for(nb.size + n_pool, self.search)
        if method == "hnsw":
            nb.ensure_index()
        # the rows themselves are the queries: the caller's array when there is one (the
        # graph's copy is float32, normalised for cosine, and slow to fetch)
        ref, ref_norms = nb.exact_reference()
        k = min(self.k, nb.size - 1)
        kd = np.empty(nb.size, dtype=np.float64)
        ids_all = np.empty((nb.size, k), dtype=np.int64)
        d_all = np.empty((nb.size, k), dtype=np.float64)
        for start in range(0, nb.size, FIT_BLOCK_ROWS):
            stop = min(start + FIT_BLOCK_ROWS, nb.size)
            block = ref[start:stop]
            norms = ref_norms[start:stop] if ref_norms is not None else -_core.score_rows("reference", "norm", block, "raise")
            ids, dist = nb.search(block, norms, k + 1, method)
            ids, dist = _drop_self(ids, dist, np.arange(start, stop))
            ids_all[start:stop] = ids
            d_all[start:stop] = dist
            kd[start:stop] = dist[:, -1]
        self.k_distance = kd
        self.lrd = 1.0 / (np.maximum(kd[ids_all], d_all).mean(axis=1) + 1e-10)
        self._method = method
        return self

    def _graph(self) -> tuple[dict[str, Any], GraphCosts]:
        return dict(NOVELTY_GRAPH, ef=self.k + NOVELTY_EF_MARGIN), NOVELTY_GRAPH_COSTS

    def prepare(self, source: PoolSource, field: Optional[str]) -> None:
        self._check_dim(source, field)
        if self.lrd is None:
            self.fit(_pool_rows(source))

    def score(self, pool: Pool, field: Optional[str]) -> tuple[np.ndarray, dict[str, Any]]:
        assert field is not None and self.lrd is not None and self.k_distance is not None
        nb = self._neighbours
        x, norms = self._embeddings(pool, field)
        k = min(self.k, nb.size - 1)
        ids, dist = nb.search(x, norms, k, self._method)
        reach = np.maximum(self.k_distance[ids], dist).mean(axis=1) + 1e-10
        values = self.lrd[ids].mean(axis=1) * reach
        return values, {"search": self._method, "metric": self.metric, "k": k}


#: Reference rows searched per block when fitting LOF.
FIT_BLOCK_ROWS = 65536


def _drop_self(ids: np.ndarray, dist: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k + 1 neighbours without the row itself (or without the farthest, when
    duplicates kept the row itself out of the list): k neighbours."""
    is_self = ids == rows[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    n, k1 = ids.shape
    keep = ~is_self
    return ids[keep].reshape(n, k1 - 1), dist[keep].reshape(n, k1 - 1).astype(np.float64)


class ActivationMiner(Miner):
    """Rows of low activation, as out-of-domain data gives: on ``embeddings`` the lowest
    L2 norm first (score −‖z‖₂), on ``logits`` the highest energy −logsumexp(x).

    ReAct (Sun et al. 2021): with ``clip=q`` and a ``reference`` (the training set's
    values of the same field), activations are first clipped at the q-th percentile of
    the reference's values, ``min(z, c)``, then scored. Off by default.
    """

    fields = ("embeddings", "logits")

    def __init__(
        self,
        size: int,
        field: str = "embeddings",
        *,
        clip: Optional[float] = None,
        reference: Optional[ArrayLike] = None,
        query: Optional[str] = None,
    ) -> None:
        who = f"{type(self).__name__}()"
        super().__init__(size, field, query=query)
        self.clip = clip
        self.clip_value: Optional[float] = None
        if clip is not None:
            if isinstance(clip, bool) or not isinstance(clip, numbers.Real) or not 0 < clip <= 100:
                raise ValueError(f"{who}: clip is a percentile in (0, 100]; got {clip!r}")
            if reference is None:
                raise ValueError(f"{who}: clip={clip} needs the reference's {field} to set the threshold")
            ref, _ = embeddings_array(who, "reference", reference, field="reference")
            if ref.size == 0:
                raise ValueError(f"{who}: the reference is empty (shape {ref.shape})")
            self.clip_value = float(np.percentile(ref, clip))
        elif reference is not None:
            raise ValueError(f"{who}: a reference is only used with clip=")

    def score(self, pool: Pool, field: Optional[str]) -> tuple[np.ndarray, dict[str, Any]]:
        assert field is not None
        x = pool.columns[field]
        if self.clip_value is not None:
            x = np.minimum(x, self.clip_value)  # one batch: a bounded copy
        return scores.activation(**{field: x}), {"field": field, "clip": self.clip_value}


class CoresetMiner(Miner):
    """A k-center greedy cover of the pool (Sener and Savarese 2018): each pick is the
    row farthest from every center so far, the centers being the labeled ``reference``
    (if given) and the earlier picks. A row's score is its distance to the nearest center
    when it was picked (non-increasing along the selection).

    Without a reference the first pick is the row farthest from the pool's mean.
    ``metric``: ``"l2"`` (default) or ``"cosine"``. The greedy needs every row at each
    step, so the pool's embeddings are read into memory (N x D).
    """

    fields = ("embeddings",)
    whole_pool = True

    def __init__(
        self,
        size: int,
        reference: Optional[Reference] = None,
        metric: str = "l2",
        *,
        threads: Optional[int] = None,
        seed: int = 0,
        query: Optional[str] = None,
    ) -> None:
        who = f"{type(self).__name__}()"
        super().__init__(size, query=query)
        if metric not in ("l2", "cosine"):
            raise ValueError(f'{who}: metric must be "l2" or "cosine"; got {metric!r}')
        if reference is not None:
            metric = _reference_metric(who, reference, metric, metric)
        self.metric = metric
        self._neighbours = None if reference is None else _Neighbours(who, reference, metric, threads, seed)

    def prepare(self, source: PoolSource, field: Optional[str]) -> None:
        if self._neighbours is not None:
            assert field is not None
            self._neighbours.check_dim(f"{type(self).__name__}.mine()", field, source.shapes[field])

    def select(
        self, columns: dict[str, np.ndarray], k: int, field: Optional[str]
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        from ._exact import kcenter_greedy

        assert field is not None
        nb = self._neighbours
        x, norms = embeddings_array(f"{type(self).__name__}.mine()", field, columns[field], nb.dim if nb else None)
        info: dict[str, Any] = {"metric": self.metric}
        initial = None
        if nb is not None:
            method = nb.method_for(len(x))
            _, d = nb.search(x, norms, 1, method)
            initial = np.ascontiguousarray(d[:, 0], dtype=x.dtype)
            info["search"] = method
        picks, dists = kcenter_greedy(x, min(k, len(x)), initial=initial, metric=self.metric)
        return picks, np.asarray(dists, dtype=np.float64), info


# -- detection and segmentation ----------------------------------------------------------

#: Per-box / per-pixel scores a detection or segmentation miner can rank by.
_ROW_MEASURES = ROW_MEASURES


def _check_measure(who: str, measure: Any, measures: tuple[str, ...]) -> str:
    return checks.choice(who, "measure", measure, measures)

def _check_box_reduce(who: str, reduce: Any) -> str:
    return checks.choice(who, "reduce", reduce, ("max", "mean", "sum"))

class DetectionMiner(Miner):
    """Images whose detections are most uncertain: each box of the ``boxes`` field is
    scored by ``measure`` (any per-row score of `pickaxe.scores` on its ``confidences``
    or ``logits``), and the boxes of an image reduced by ``reduce`` (``"max"``,
    ``"mean"`` or ``"sum"``), weighted by each box's ``objectness`` when
    ``objectness=True`` (see `pickaxe.detection`).

    ``boxes``: per row a list of structs ``{bbox: [x1, y1, x2, y2], confidences or logits:
    [C], objectness: float (optional)}``. **An image without boxes scores NaN and is never
    picked.**

    >>> import pyarrow as pa, pickaxe as px
    >>> pool = pa.table({"boxes": [[{"bbox": [0, 0, 5, 5], "confidences": [0.9, 0.1]}],
    ...                            [{"bbox": [1, 1, 4, 4], "confidences": [0.5, 0.5]}], []]})
    >>> px.DetectionMiner(size=2).mine(pool).ids.tolist()
    [1, 0]
    """

    fields = ("boxes",)

    def __init__(
        self,
        size: int,
        measure: str = "entropy",
        reduce: str = "max",
        objectness: bool = False,
        *,
        nan_policy: str = "raise",
        query: Optional[str] = None,
    ) -> None:
        who = f"{type(self).__name__}()"
        super().__init__(size, query=query)
        self.measure = _check_measure(who, measure, _ROW_MEASURES)
        self.reduce = _check_box_reduce(who, reduce)
        self.objectness = bool(objectness)
        self.nan_policy = check_nan_policy(type(self).__name__, nan_policy)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, measure={self.measure!r}, "
                f"reduce={self.reduce!r}, objectness={self.objectness})")

    def score(self, pool: Pool, field: Optional[str]) -> tuple[np.ndarray, dict[str, Any]]:
        from . import detection

        assert field is not None
        col = pool.columns[field]
        obj = _objectness(field, col) if self.objectness else None
        fn = getattr(detection, self.measure)
        info = {"field": field, "measure": self.measure, "reduce": self.reduce, "objectness": self.objectness}
        if len(col.bbox) == 0:  # no image of the batch has a box (its classes may be (0, 0))
            return np.full(pool.n_rows, np.nan), info
        try:
            values = fn(**{col.kind: col.classes}, offsets=col.offsets, reduce=self.reduce,
                        objectness=obj, nan_policy=self.nan_policy)
        except InvalidInputError as e:
            raise e.in_column(field) from None
        return values, info


def _objectness(column: str, col: Any) -> np.ndarray:
    if col.objectness is None:
        raise ValueError(
            f"column {column!r}: objectness=True needs an objectness value in every box struct; "
            "its structs have none"
        )
    return col.objectness


class LocalizationMiner(Miner):
    """Images whose committee (or dropout passes) disagrees about where the objects are:
    `pickaxe.detection.localization_disagreement` of the ``member_boxes`` field (per row
    one box list per member, M members in every row) against the reference prediction's
    ``boxes`` (per row a box list), reduced per image by ``reduce``.

    A reference box matched (greedy by confidence, IoU ≥ ``iou_threshold``, same class
    when ``per_class``) by K of the M members scores (1 − Σ IoU / M) + (M − K) / M + the
    mean KL of the matched members' class distributions from their mean. **An image
    without reference boxes scores NaN and is never picked.**
    """

    fields = ("member_boxes",)
    #: The reference prediction, read next to the field.
    also_needs = ("boxes",)

    def __init__(
        self,
        size: int,
        iou_threshold: float = 0.5,
        per_class: bool = False,
        reduce: str = "max",
        objectness: bool = False,
        *,
        query: Optional[str] = None,
    ) -> None:
        who = f"{type(self).__name__}()"
        super().__init__(size, query=query)
        if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, numbers.Real) or not 0 < iou_threshold <= 1:
            raise ValueError(f"{who}: iou_threshold must be in (0, 1]; got {iou_threshold!r}")
        self.iou_threshold = float(iou_threshold)
        self.per_class = bool(per_class)
        self.reduce = _check_box_reduce(who, reduce)
        self.objectness = bool(objectness)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, iou_threshold={self.iou_threshold}, "
                f"per_class={self.per_class}, reduce={self.reduce!r})")

    def resolve_field(self, pool: Union[Pool, PoolSource]) -> Optional[str]:
        field = super().resolve_field(pool)
        shapes = pool.shapes if isinstance(pool, PoolSource) else {k: v.shape for k, v in pool.columns.items()}
        if "boxes" not in shapes or len(shapes["boxes"]) != FIELD_NDIM["boxes"]:
            rows = pool.n_rows if pool.n_rows is not None else "N"
            raise ValueError(
                f"{type(self).__name__} needs the reference prediction's boxes {FIELD_SHAPES['boxes']} "
                f"next to member_boxes; the pool has {rows} rows of {pool.describe()}"
            )
        return field

    def columns_for(self, field: Optional[str]) -> list[str]:
        return ["boxes", "member_boxes"]

    def score(self, pool: Pool, field: Optional[str]) -> tuple[np.ndarray, dict[str, Any]]:
        from .detection import localization_disagreement

        ref, mem = pool.columns["boxes"], pool.columns["member_boxes"]
        obj = _objectness("boxes", ref) if self.objectness else None
        try:
            values = localization_disagreement(
                boxes=ref.bbox, **{ref.kind: ref.classes}, offsets=ref.offsets,
                member_boxes=mem.bbox, **{f"member_{mem.kind}": mem.classes},
                member_offsets=mem.offsets, members=max(mem.members or 0, 1) if pool.n_rows else 1,
                iou_threshold=self.iou_threshold, per_class=self.per_class, reduce=self.reduce,
                objectness=obj,
            )
        except InvalidInputError as e:
            raise e.in_column("member_boxes" if (e.field or "").startswith("member_") else "boxes") from None
        info = {"iou_threshold": self.iou_threshold, "per_class": self.per_class, "reduce": self.reduce}
        return values, info


class SegmentationMiner(Miner):
    """Images whose segmentation is most uncertain: ``measure`` (any per-row score of
    `pickaxe.scores`) per pixel of the ``pixel_logits`` or ``pixel_confidences`` field
    (per row one image's class scores, (C, H, W) with ``class_axis=1`` or (H, W, C) with
    ``class_axis=-1``; every image of a pool the same size), reduced per image by
    ``reduce``: ``"mean"``, ``"max"`` or ``("top", q)`` (see `pickaxe.segmentation`).

    >>> import numpy as np, pickaxe as px
    >>> x = np.random.default_rng(0).normal(size=(6, 3, 8, 8)).astype(np.float32)
    >>> px.SegmentationMiner(size=2).mine({"pixel_logits": x}).ids.shape
    (2,)
    """

    fields = ("pixel_logits", "pixel_confidences")

    def __init__(
        self,
        size: int,
        measure: str = "entropy",
        reduce: Any = "mean",
        class_axis: int = 1,
        *,
        field: Optional[str] = None,
        nan_policy: str = "raise",
        query: Optional[str] = None,
    ) -> None:
        from .segmentation import _parse_reduce

        who = f"{type(self).__name__}()"
        super().__init__(size, field, query=query)
        self.measure = _check_measure(who, measure, _ROW_MEASURES)
        if reduce is None:
            raise ValueError(f"{who}: a miner ranks images: reduce must be \"mean\", \"max\" or (\"top\", q); got None")
        _parse_reduce(who[:-2], reduce)
        self.reduce = reduce
        if isinstance(class_axis, bool) or class_axis not in (1, -1):
            raise ValueError(f"{who}: class_axis must be 1 (rows (C, H, W)) or -1 (rows (H, W, C)); got {class_axis!r}")
        self.class_axis = int(class_axis)
        self.nan_policy = check_nan_policy(type(self).__name__, nan_policy)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, measure={self.measure!r}, "
                f"reduce={self.reduce!r}, class_axis={self.class_axis})")

    def score(self, pool: Pool, field: Optional[str]) -> tuple[np.ndarray, dict[str, Any]]:
        from . import segmentation

        assert field is not None
        kind = field[len("pixel_"):]
        fn = getattr(segmentation, self.measure)
        try:
            values = fn(**{kind: pool.columns[field]}, class_axis=self.class_axis, reduce=self.reduce,
                        nan_policy=self.nan_policy)
        except InvalidInputError as e:
            raise e.in_column(field) from None
        # ("top", q) as a list: info stays what JSON gives back (Selection files, Ray)
        reduce = list(self.reduce) if isinstance(self.reduce, tuple) else self.reduce
        info = {"field": field, "measure": self.measure, "reduce": reduce}
        return values, info
