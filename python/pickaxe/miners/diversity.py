"""Diversity miners: rows unlike the training data (far from it, locally outlying, of low
activation), rows like given examples, and batches that cover the pool (k-center greedy).

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

__all__ = ["EmbeddingDistanceMiner", "SimilarityMiner", "NoveltyMiner", "ActivationMiner", "CoresetMiner"]


class EmbeddingDistanceMiner(NeighbourMiner):
    """Rows far from the training data: the distance from each pool row to its ``k``
    nearest reference rows, their mean (``aggregate="mean"``) or the k-th
    (``aggregate="kth"``); 1 <= k <= M for a reference of M rows (a larger k is a
    ValueError, not a silent clamp). The mean is summed in float64. For a k near M each
    row's k nearest are selected, not sorted, so the cost stays about one pass over the
    distances whatever k.

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
        **controls: Any,
    ) -> None:
        super().__init__(size, query=query, seed=seed, **controls)
        if aggregate not in ("mean", "kth"):
            raise ValueError(
                f'{type(self).__name__}(): aggregate must be "mean" or "kth"; got {aggregate!r}'
            )
        self.aggregate = aggregate
        self._init_neighbours(reference, k, metric, search, threads, seed)

    def __repr__(self) -> str:
        return self._repr(f"aggregate={self.aggregate!r}, ")

    def score(self, pool: Pool, field: Optional[str]) -> tuple[np.ndarray, dict[str, Any]]:
        x, norms = self._embeddings(pool, field)
        scores = self._neighbours.scores(x, norms, self.k, self._method, self.aggregate)
        return scores, self._search_info()


class SimilarityMiner(NeighbourMiner):
    """Rows like the given examples ("more like these": a few failure cases, a class the
    model misses): the rows nearest to the example embeddings.

    With d the ``metric`` distance and e_(1), ..., e_(k) a row's k nearest examples:

        score(x) = −(1/k) Σ_{j ≤ k} d(x, e_(j))      (k = 1: −d to the nearest example)

    so the highest score is the row closest to the examples; k is at most the number of
    examples (a larger k is a ValueError, not a silent cap). ``examples``: (M, D) real, finite, the same D as the pool's ``embeddings``
    (N, D), or a `ReferenceIndex` built over them (whose metric is then used).
    ``metric``: ``"cosine"`` by default (1 − cos), ``"l2"`` or ``"ip"`` (1 − ⟨x, e⟩).
    Exact search or an hnswlib graph over the examples is chosen by the sizes
    (``search="auto"``; a few examples are always searched exactly) or forced with
    ``search="exact"`` / ``"hnsw"``; ``selection.info["search"]`` says which ran. Rows at
    an equal distance are picked in row order.

    >>> import numpy as np, pickaxe as px
    >>> failures = np.array([[1.0, 0.0]])
    >>> pool = {"embeddings": np.array([[0.0, 1.0], [0.9, 0.1], [-1.0, 0.0], [1.0, 0.05]])}
    >>> px.SimilarityMiner(2, failures).mine(pool).ids.tolist()
    [3, 1]
    """

    def __init__(
        self,
        size: int,
        examples: Reference,
        k: int = 1,
        metric: Optional[str] = None,
        *,
        search: str = "auto",
        threads: Optional[int] = None,
        seed: int = 0,
        query: Optional[str] = None,
        **controls: Any,
    ) -> None:
        super().__init__(size, query=query, seed=seed, **controls)
        self._init_neighbours(examples, k, metric, search, threads, seed, name="examples")

    def __repr__(self) -> str:
        return self._repr()

    def score(self, pool: Pool, field: Optional[str]) -> tuple[np.ndarray, dict[str, Any]]:
        # The same mean as EmbeddingDistanceMiner's: selected per row for a k near the
        # number of examples, no sorted (n, k) distances.
        x, norms = self._embeddings(pool, field)
        scores = self._neighbours.scores(x, norms, self.k, self._method, "mean")
        return -scores, self._search_info()


#: The graph the novelty miner builds for itself when it is given raw embeddings: LOF
#: averages over k neighbours, so a lighter graph than the ReferenceIndex default keeps its
#: ranking. Search ef is k + NOVELTY_EF_MARGIN. On benches/bench_diversity.py's two
#: 50,000 x 64 references (8-D manifolds, 5 % planted outliers, one thread) M = 16,
#: ef_construction = 60, margin 16 gave Spearman 0.9992 / 0.9996 against scikit-learn's
#: LOF and AUROC 0.0004 / 0.0002 below it; M = 8, ef_construction = 40, margin 4 gave
#: 0.964 and an AUROC 0.009 below (the 8-link graph misses neighbours across clusters);
#: M = 16, ef_construction = 40, margin 12 gave an AUROC 0.0026 below.
NOVELTY_GRAPH = {"M": 16, "ef_construction": 60}
NOVELTY_EF_MARGIN = 16
#: Search ef of the fit, k + 1 + this: the fit's queries are the reference's own rows,
#: nodes of the graph, which the search reaches exactly and whose neighbours are their
#: links' neighbourhood, so a narrow search finds them. On the same two references
#: ef = k + 1 and ef = k + 16 gave the same Spearman (0.9992 / 0.9996) and AUROC, and the
#: fit's searches half the time.
NOVELTY_FIT_EF_MARGIN = 4
#: Its costs, measured like DEFAULT_GRAPH's (one thread, clustered 20,000 rows, k = 21
#: queries at ef = 37): 48 and 148 us per row to build at D = 64 and 384, 29 and 89 us per
#: query.
NOVELTY_GRAPH_COSTS = GraphCosts(27_700.0, 313.0, 16_600.0, 190.0)


class NoveltyMiner(NeighbourMiner):
    """Local outliers against the training data: the local outlier factor (LOF) of each
    pool row in novelty mode (Breunig et al. 2000; scikit-learn's
    ``LocalOutlierFactor(novelty=True)``).

    At fit, for each reference row r with neighbours N(r) (k, excluding itself):
    k-distance kd(r) = distance to the k-th neighbour, and local reachability density
    lrd(r) = 1 / (mean_{o ∈ N(r)} max(kd(o), d(r, o)) + 1e-10). A pool row x with
    neighbours N(x) among the reference gets LOF(x) = mean_{o ∈ N(x)} lrd(o) / lrd(x):
    about 1 inside the data, larger for outliers. Distances are euclidean by default.
    1 <= k < M for a reference of M rows (a larger k is a ValueError).

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
        **controls: Any,
    ) -> None:
        super().__init__(size, query=query, seed=seed, **controls)
        self._init_neighbours(reference, k, metric, search, threads, seed)
        self.k_distance: Optional[np.ndarray] = None
        self.lrd: Optional[np.ndarray] = None

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
        k = self.k
        # The narrow fit search for the miner's own graph only: a ReferenceIndex given by
        # the caller keeps the ef it was made with.
        fit_ef = k + 1 + NOVELTY_FIT_EF_MARGIN if nb.array is not None else None
        kd = np.empty(nb.size, dtype=np.float64)
        ids_all = np.empty((nb.size, k), dtype=np.int64)
        d_all = np.empty((nb.size, k), dtype=np.float64)
        for start in range(0, nb.size, FIT_BLOCK_ROWS):
            stop = min(start + FIT_BLOCK_ROWS, nb.size)
            block = ref[start:stop]
            norms = ref_norms[start:stop] if ref_norms is not None else -_core.score_rows("reference", "norm", block, "raise")
            ids, dist = nb.search(block, norms, k + 1, method, ef=fit_ef)
            ids, dist = _drop_self(ids, dist, np.arange(start, stop))
            ids_all[start:stop] = ids
            d_all[start:stop] = dist
            kd[start:stop] = dist[:, -1]
        self.k_distance = kd
        self.lrd = 1.0 / (np.maximum(kd[ids_all], d_all).mean(axis=1) + 1e-10)
        self._method = method
        return self

    def _check_k_fits(self, who: str) -> None:
        size = self._neighbours.size
        if self.k >= size:
            raise ValueError(
                f"{who}: k={self.k} but the reference has {size} rows; LOF needs k < {size}, "
                f"since each reference row's neighbours exclude the row itself (at most "
                f"{size - 1} are left)"
            )

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
        k = self.k
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
    """Rows of low activation, as out-of-domain data gives: the highest energy
    −logsumexp(x) of ``logits`` (N, C) when the pool has them (Liu et al. 2020), else the
    lowest L2 norm of ``embeddings`` (N, D) first (score −‖z‖₂); ``field=`` forces one.

    Logits come first because energy separates novel classes far better: on held-out
    digits, AUROC 0.87 from logits against 0.52–0.62 for −‖z‖ of embeddings.

    ReAct (Sun et al. 2021): with ``clip=q`` and a ``reference`` (the training set's
    values of the same field), activations are first clipped at the q-th percentile of
    the reference's values, ``min(z, c)``, then scored. Off by default; with ``clip`` the
    default field is ``embeddings`` (the layer whose activations ReAct clips).

    >>> import numpy as np, pickaxe as px
    >>> pool = {"logits": np.array([[4.0, 0.0], [0.1, 0.0], [0.0, 3.0]])}
    >>> px.ActivationMiner(1).mine(pool).ids.tolist()
    [1]
    """

    fields = ("logits", "embeddings")  # in order of preference

    def __init__(
        self,
        size: int,
        field: Optional[str] = None,
        *,
        clip: Optional[float] = None,
        reference: Optional[ArrayLike] = None,
        query: Optional[str] = None,
        **controls: Any,
    ) -> None:
        who = f"{type(self).__name__}()"
        if clip is not None and field is None:
            field = "embeddings"
        super().__init__(size, field, query=query, **controls)
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
        **controls: Any,
    ) -> None:
        who = f"{type(self).__name__}()"
        super().__init__(size, query=query, **controls)  # only to refuse them: whole_pool
        if metric not in ("l2", "cosine"):
            raise ValueError(f'{who}: metric must be "l2" or "cosine"; got {metric!r}')
        self.metric, self._neighbours = cover_reference(who, reference, metric, threads, seed)

    def prepare(self, source: PoolSource, field: Optional[str]) -> None:
        if self._neighbours is not None:
            assert field is not None
            self._neighbours.check_dim(f"{type(self).__name__}.mine()", field, source.shapes[field])

    def select(
        self, columns: dict[str, np.ndarray], k: int, field: Optional[str]
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        assert field is not None
        nb = self._neighbours
        x, norms = embeddings_array(f"{type(self).__name__}.mine()", field, columns[field], nb.dim if nb else None)
        return kcenter_cover(x, norms, k, self.metric, nb)


def cover_reference(
    who: str, reference: Optional[Reference], metric: Optional[str], threads: Optional[int] = None, seed: int = 0
) -> tuple[str, Optional[Neighbours]]:
    """The metric of a k-center cover and the search of its labeled ``reference`` (None:
    no reference). ``metric=None``: a `ReferenceIndex`'s metric, else ``"l2"``. Shared by
    `CoresetMiner` and ``combine(diversity="coreset", reference=...)``."""
    if reference is None:
        return metric or "l2", None
    metric = reference_metric(who, reference, metric, "l2")
    if metric not in ("l2", "cosine"):
        raise ValueError(
            f"{who}: k-center greedy measures l2 or cosine distance; the reference's metric is {metric!r}"
        )
    return metric, Neighbours(who, reference, metric, threads, seed)


def kcenter_cover(
    x: np.ndarray, norms: np.ndarray, k: int, metric: str, reference: Optional[Neighbours]
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """k-center greedy over the rows of ``x`` (N, D) whose centers start as the labeled
    ``reference``: each row's distance to its nearest reference row is already covered
    (``initial=`` of `kcenter_greedy`), so the picks fill what the reference leaves
    uncovered. Returns the picks, their distance to the nearest center when picked, and
    ``info`` (the metric, and the search that found the reference distances)."""
    from .._exact import kcenter_greedy

    info: dict[str, Any] = {"metric": metric}
    initial = None
    if reference is not None:
        method = reference.method_for(len(x))
        _, d = reference.search(x, norms, 1, method)
        initial = np.ascontiguousarray(d[:, 0], dtype=x.dtype)
        info["search"] = method
    picks, dists = kcenter_greedy(x, min(k, len(x)), initial=initial, metric=metric)
    return picks, np.asarray(dists, dtype=np.float64), info
