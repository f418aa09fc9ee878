"""Diversity miners: rows unlike the training data (far from it, locally outlying, of low
activation) and batches that cover the pool (k-center greedy).

>>> import numpy as np, pickaxe as px
>>> train = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1]])
>>> pool = {"embeddings": np.array([[0.05, 0.05], [3.0, 3.0], [0.1, 0.1]])}
>>> px.EmbeddingDistanceMiner(size=1, reference=train, k=1, metric="l2").mine(pool).ids.tolist()
[1]
"""

from __future__ import annotations

import numbers
from typing import Any, Optional

import numpy as np
from numpy.typing import ArrayLike

from .. import _core, scores
from ..index import embeddings_array
from ..pools import Pool, PoolSource
from .base import Miner
from .neighbours import GraphCosts, NeighbourMiner, Neighbours, Reference, pool_rows, reference_metric

__all__ = ["EmbeddingDistanceMiner", "NoveltyMiner", "ActivationMiner", "CoresetMiner"]


class EmbeddingDistanceMiner(NeighbourMiner):
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
        self._method = self._neighbours.method_for(pool_rows(source), self.search)
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


class NoveltyMiner(NeighbourMiner):
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
            self.fit(pool_rows(source))

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
            metric = reference_metric(who, reference, metric, metric)
        self.metric = metric
        self._neighbours = None if reference is None else Neighbours(who, reference, metric, threads, seed)

    def prepare(self, source: PoolSource, field: Optional[str]) -> None:
        if self._neighbours is not None:
            assert field is not None
            self._neighbours.check_dim(f"{type(self).__name__}.mine()", field, source.shapes[field])

    def select(
        self, columns: dict[str, np.ndarray], k: int, field: Optional[str]
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        from .._exact import kcenter_greedy

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
