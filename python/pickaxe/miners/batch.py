"""Batch-aware miners: a labeling batch chosen as a set, so that its rows are informative
and unlike each other (and unlike what is labeled), at the pool sizes pickaxe is for.

- `TypiClustMiner` (Hacohen, Dekel and Weinshall, ICML 2022): the most typical row of
  each of the largest k-means clusters that hold no labeled row. Needs no model: the
  cold-start method.
- `BADGEMiner` (Ash et al., ICLR 2020): k-means++ seeding in the space of last-layer
  gradient embeddings, uncertain and diverse at once.
- `ClusterMarginMiner` (Citovsky et al., NeurIPS 2021): the lowest-margin rows, spread
  over clusters computed once per pool (`pickaxe.clustering`).

TypiClust and BADGE read the whole pool's columns into memory (N x D embeddings as stored,
plus O(N) state; BADGE also N x C probabilities) and run in the compiled core, parallel
and interruptible; Cluster-Margin streams the pool like any per-row miner and fetches
the cluster labels of its nominees alone.

>>> import numpy as np, pickaxe as px
>>> rng = np.random.default_rng(0)
>>> blobs = np.concatenate([rng.normal(c, 0.1, size=(50, 2)) for c in (0.0, 5.0, 10.0)])
>>> sel = px.TypiClustMiner(size=3).mine({"embeddings": blobs})
>>> sorted(int(i) // 50 for i in sel.ids)   # one row from each blob
[0, 1, 2]
"""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
from numpy.typing import ArrayLike

from .. import _checks as checks
from .. import _core
from ..clustering import badge_seeds, kmeans, probabilities
from .._fields import as_float_array
from ..errors import InvalidInputError
from ..index import ReferenceIndex, embeddings_array
from .base import Miner
from .uncertainty import MarginMiner

__all__ = ["TypiClustMiner", "BADGEMiner", "ClusterMarginMiner"]


#: TypiClust's k-means (not `pickaxe.cluster`'s, which keeps faiss's 256): Lloyd iterates on
#: at most this many rows per cluster (at least ``TYPICLUST_MIN_FIT_ROWS``), then every row
#: is labelled by its nearest final centre.
TYPICLUST_FIT_ROWS_PER_CLUSTER = 64
TYPICLUST_MIN_FIT_ROWS = 4096
#: ... and k-means++ seeds from at most this many of those rows per cluster (at least
#: ``TYPICLUST_MIN_INIT_ROWS``).
TYPICLUST_INIT_ROWS_PER_CLUSTER = 20
TYPICLUST_MIN_INIT_ROWS = 1000


def _typiclust_rows(n: int, clusters: int) -> tuple[int, int]:
    """TypiClust's k-means samples for n rows: (fit rows, seeding rows)."""
    fit = min(n, max(TYPICLUST_MIN_FIT_ROWS, TYPICLUST_FIT_ROWS_PER_CLUSTER * clusters))
    init = min(fit, max(TYPICLUST_MIN_INIT_ROWS, TYPICLUST_INIT_ROWS_PER_CLUSTER * clusters))
    return fit, init


def _check_batch(who: str, k: int, n: int) -> None:
    if k > n:
        raise ValueError(f"{who}: size {k} is larger than the pool's {n} rows (after the query)")


class TypiClustMiner(Miner):
    """The most typical row of each of the largest uncovered clusters (TypiClust).

    The pool's embeddings (and the labeled ``reference``, if given) are clustered by
    k-means (k-means++ seeding, Lloyd iterations; `pickaxe.clustering`) into
    ``clusters`` = |reference| + ``size`` clusters by default. Clusters that hold a
    reference row are covered; the others are visited from the largest down, and in each
    the row of highest typicality is picked::

        typicality(x) = 1 / ( (1/k') Σ_{y ∈ kNN(x)} ‖x − y‖₂ ),   k' = min(k, m − 1)

    over the k' nearest other pool rows of its cluster of m rows (exact, euclidean). A
    row's score is its typicality (+inf for a cluster of one row); rows come in the order
    they were picked (largest cluster first). Ties: the larger cluster, then the lower
    cluster number; within a cluster, the lower row.

    Departures from the paper, and why: k-means runs on samples, as the authors' code does
    past 50 clusters (scikit-learn's ``MiniBatchKMeans`` with batches of 5,000 rows, seeded
    from 15,000): k-means++ seeds from at most max(1,000, 20 x clusters) rows, Lloyd
    iterates (to scikit-learn's tolerance) on at most max(4,096, 64 x clusters) rows, and
    every row is then labelled by its nearest centre. At 50,000 x 128 and 100 clusters
    (50 blobs) that is 10-12 Lloyd iterations on 6,400 rows instead of 36-45 on 50,000,
    for 1.3 % more inertia (mean of 3 seeds); the learning curves stay within a standard
    error of scikit-activeml's TypiClust, at 1,800 to 50,000 rows (benches/RESULTS.md). When fewer uncovered clusters hold pool rows than
    ``size`` (a reference that covers many clusters, or ``clusters`` set small), the
    remaining picks go round the covered clusters (largest first), each taking its most
    typical row not yet picked, instead of stopping short. The authors' code drops
    clusters of fewer than 5 rows and adds 1e-5 to the mean distance; here every cluster
    counts and nothing is added (a row at distance 0 of its neighbours is +inf typical).

    Memory: the pool's embeddings as stored (N x D, float32 stays float32) plus the
    reference's, and O(N) labels and typicalities; k-means seeds on a sample of rows and
    iterates on at most max(4,096, 64 x clusters) rows (gathered once: that many x D more
    values), then labels every row (see `pickaxe.clustering`); the typicality gathers one
    cluster's rows at a time (twice: as given and less their mean). On Ray
    (`pickaxe.ray.mine`) the k-means iterations run on actors that hold the embeddings and
    the driver holds the rows of the clusters picked from (all of them without a
    reference); the selection is the same. Size larger than the pool is a ValueError.

    Time: k-means is O(iterations x min(N, 64 x clusters) x clusters x D) (less: rows whose
    label cannot change are skipped) plus one O(N x clusters x D) labelling pass, so it
    stops growing with N once N > 64 x clusters and grows with the batch (the clusters)
    about linearly per iteration; the typicality is O(Σ m² D) over the clusters picked
    from (m rows each, about N² D / clusters when even).
    Measured up to 1,000,000 x 256: benches/RESULTS.md (issue 15, point 7).

    Parameters
    ----------
    size : int
        Rows to pick.
    reference : array (M, D) or ReferenceIndex, optional
        The labeled rows' embeddings: their clusters are covered.
    k : int
        Neighbours of the typicality (20, as in the paper).
    clusters : int, optional
        Number of k-means clusters (default |reference| + size).
    seed : int
        Seed of k-means' seeding (the selection is the same for a seed whatever the
        number of threads).

    References
    ----------
    G. Hacohen, A. Dekel and D. Weinshall. Active Learning on a Budget: Opposite
    Strategies Suit High and Low Budgets. ICML 2022.
    """

    fields = ("embeddings",)
    whole_pool = True

    def __init__(
        self,
        size: int,
        reference: Optional[Union[ArrayLike, ReferenceIndex]] = None,
        k: int = 20,
        clusters: Optional[int] = None,
        *,
        seed: int = 0,
        threads: Optional[int] = None,
        query: Optional[str] = None,
    ) -> None:
        who = f"{type(self).__name__}()"
        super().__init__(size, query=query)
        self.k = checks.integer(who, "k", k, 1)
        self.clusters = None if clusters is None else checks.integer(who, "clusters", clusters, 1)
        self.seed = checks.integer(who, "seed", seed, 0)
        self.threads = None if threads is None else checks.integer(who, "threads", threads, 1)
        self.reference: Optional[np.ndarray] = None
        if reference is not None:
            ref = reference.vectors() if isinstance(reference, ReferenceIndex) else reference
            self.reference, _ = embeddings_array(who, "reference", ref, field="reference")

    def __repr__(self) -> str:
        ref = 0 if self.reference is None else len(self.reference)
        return f"{type(self).__name__}(size={self.size}, k={self.k}, clusters={self.clusters}, reference={ref} rows)"

    def select(
        self, columns: dict[str, np.ndarray], k: int, field: Optional[str]
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        assert field is not None
        who = f"{type(self).__name__}.mine()"
        ref = self.reference
        # checked here for the dimensions; finiteness is k-means' first pass (the error
        # names the field and the pool row: the reference rows come after the pool's)
        x = as_float_array(who.removesuffix("()"), field, columns[field], 2, "(N, D)")
        if ref is not None and x.shape[1] != ref.shape[1]:
            embeddings_array(who, field, x[:0], ref.shape[1])
        if x.shape[1] == 0:
            raise ValueError(f"{who}: {field} has no dimensions (shape {x.shape})")
        n = len(x)
        _check_batch(who, k, n)
        if k == 0:
            embeddings_array(who, field, x)
            return np.empty(0, np.int64), np.empty(0), {}
        m = 0 if ref is None else len(ref)
        both = x if ref is None else np.concatenate([x, ref.astype(x.dtype, copy=False)])
        clusters = self._clusters(n, m, k)
        fit_rows, init_rows = _typiclust_rows(len(both), clusters)
        fit = kmeans(both, clusters, seed=self.seed, fit_rows=fit_rows, init_rows=init_rows, threads=self.threads)
        x = np.ascontiguousarray(x)

        def typicality(clusters: Optional[np.ndarray], labels: np.ndarray) -> np.ndarray:
            return _core.typicality(x, labels[:n], self.k, clusters=clusters, threads=self.threads)

        def best(clusters: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return _core.most_typical(x, labels[:n], self.k, clusters, threads=self.threads)

        return self._picks(fit, n, k, typicality, best)

    def select_sharded(self, shards: Any, k: int, field: Optional[str]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """`select` over a pool held by Ray actors (`pickaxe.ray.shards.Shards`): k-means
        runs on the actors (the same labels as in process); the typicality on the driver,
        over the rows of the clusters picked from, fetched from the actors (every row
        when the picks go round every cluster, as without a reference)."""
        who = f"{type(self).__name__}.mine()"
        ref = self.reference
        shards.check(who, None if ref is None else ref.shape[1])
        n = shards.n
        _check_batch(who, k, n)
        if k == 0:
            return np.empty(0, np.int64), np.empty(0), {}
        m = 0 if ref is None else len(ref)
        if m:
            shards.append(ref)
        clusters = self._clusters(n, m, k)
        fit_rows, init_rows = _typiclust_rows(n + m, clusters)
        fit = shards.kmeans(clusters, seed=self.seed, fit_rows=fit_rows, init_rows=init_rows, threads=self.threads)

        def typicality(clusters: Optional[np.ndarray], labels: np.ndarray) -> np.ndarray:
            pos, rows = shards.cluster_rows(clusters, n)
            out = np.full(n, np.nan)
            if len(pos):
                got = _core.typicality(rows, labels[pos], self.k, clusters=clusters, threads=self.threads)
                out[pos] = got
            return out

        def best(clusters: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            pos, rows = shards.cluster_rows(clusters, n)
            at, value = _core.most_typical(rows, labels[pos], self.k, clusters, threads=self.threads)
            return np.where(at >= 0, pos[np.maximum(at, 0)], -1), value

        return self._picks(fit, n, k, typicality, best)

    def _clusters(self, n: int, m: int, k: int) -> int:
        return min(self.clusters if self.clusters is not None else m + k, n + m)

    def _picks(
        self, fit: Any, n: int, k: int, typicality: Any, best: Any
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """The picks from k-means' labels (the pool's n rows first, then the reference's):
        the most typical row of each of the largest uncovered clusters (see the class).
        ``typicality(clusters or None, labels)`` gives every row's typicality (NaN outside
        ``clusters``); ``best(clusters, labels)`` each cluster's most typical row and its
        typicality, the same row and value (`pickaxe.clustering.most_typical`)."""
        labels, n_clusters = fit.labels, len(fit.centers)
        pool_labels = labels[:n]
        covered = np.zeros(n_clusters, dtype=bool)
        covered[labels[n:]] = True
        sizes = np.bincount(pool_labels, minlength=n_clusters)
        # uncovered clusters first, largest first, then the covered ones (see the docstring)
        order = np.lexsort((np.arange(n_clusters), -sizes, covered))
        order = order[sizes[order] > 0]
        # the typicality of the rows of the clusters the picks come from: the first k in
        # order, or every cluster when picks go round the clusters more than once
        wide = len(order) < k or bool(covered[order[:k]].any())
        if wide:
            typical = typicality(None, labels)
            picks = _round_robin(pool_labels, order, -typical, k)
            scores = typical[picks]
        else:
            # one pick per cluster, its best row: the round-robin's first round, found
            # without computing most rows' typicality
            picks, scores = best(np.ascontiguousarray(order[:k], dtype=np.int64), labels)
        info = {
            "clusters": int(n_clusters),
            "uncovered": int((~covered & (sizes > 0)).sum()),
            "k": self.k,
            "kmeans_iterations": int(fit.iterations),
        }
        return picks, scores, info


def _round_robin(labels: np.ndarray, order: np.ndarray, rank: np.ndarray, k: int) -> np.ndarray:
    """`k` rows: the best row (lowest `rank`, then lowest row) of each cluster in `order`,
    then the second best of each, and so on."""
    rows = np.lexsort((np.arange(len(labels)), rank, labels))  # by cluster, best first
    starts = np.searchsorted(labels[rows], order)
    counts = np.bincount(labels, minlength=int(labels.max()) + 1 if len(labels) else 0)[order]
    picks: list[int] = []
    depth = 0
    while len(picks) < k:
        for start, count in zip(starts.tolist(), counts.tolist()):
            if depth < count:
                picks.append(int(rows[start + depth]))
                if len(picks) == k:
                    break
        depth += 1
    return np.asarray(picks, dtype=np.int64)


class BADGEMiner(Miner):
    """Batch Active learning by Diverse Gradient Embeddings (BADGE): k-means++ seeding in
    the space of last-layer gradient embeddings.

    For a row with class probabilities p (from ``confidences``, or the softmax of
    ``logits``), predicted class ŷ = argmax p and penultimate-layer ``embeddings`` h, the
    gradient of the cross-entropy at ŷ with respect to the last layer's weights is
    g = (p − e_ŷ) ⊗ h, of C x D numbers. Its norm is large where the model is uncertain,
    and k-means++ seeding over g (each pick drawn with probability ∝ its squared
    distance D² to the nearest pick so far) spreads the batch over the pool. g is never
    formed::

        ‖g_x − g_y‖² = ‖a_x‖²‖h_x‖² + ‖a_y‖²‖h_y‖² − 2 (a_x·a_y)(h_x·h_y),   a = p − e_ŷ

    so memory is O(N (C + D)), not O(N C D), and a pick costs one pass over the N rows.
    The first pick is the row of largest ‖g‖ (as the authors' code does); a row's score
    is its D² when picked (‖g‖² for the first), in pick order. Deterministic for a
    ``seed`` whatever the number of threads. Size larger than the pool is a ValueError.

    Memory: both fields as stored (N x C and N x D; logits become N x C probabilities),
    plus O(N). Time: O(size x N x (C + D)), linear in N and in the batch (each pick reads
    every row once); measured up to 1,000,000 rows (D = 256, C = 100, batch 1,000):
    benches/RESULTS.md (issue 15, point 7).

    References
    ----------
    J. T. Ash, C. Zhang, A. Krishnamurthy, J. Langford and A. Agarwal. Deep Batch Active
    Learning by Diverse, Uncertain Gradient Lower Bounds. ICLR 2020.
    """

    fields = ("confidences", "logits")
    also_reads = {"embeddings": "the penultimate layer's embeddings"}
    whole_pool = True

    def __init__(
        self,
        size: int,
        seed: int = 0,
        *,
        field: Optional[str] = None,
        threads: Optional[int] = None,
        query: Optional[str] = None,
    ) -> None:
        who = f"{type(self).__name__}()"
        super().__init__(size, field, query=query)
        self.seed = checks.integer(who, "seed", seed, 0)
        self.threads = None if threads is None else checks.integer(who, "threads", threads, 1)

    def select(
        self, columns: dict[str, np.ndarray], k: int, field: Optional[str]
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        assert field is not None
        who = f"{type(self).__name__}.mine()"
        h, _ = embeddings_array(who, "embeddings", columns["embeddings"])
        _check_batch(who, k, len(h))
        if k == 0:
            return np.empty(0, np.int64), np.empty(0), {"field": field}
        scores = {field: columns[field]}
        picks, d2 = badge_seeds(h, k, **scores, seed=self.seed, threads=self.threads)
        picks = np.asarray(picks, dtype=np.int64)
        d2 = np.asarray(d2, dtype=np.float64)
        # the first pick's D² is +inf (no pick before it): score it by ‖g‖² = ‖a‖²‖h‖²
        first = int(picks[0])
        row = columns[field][first : first + 1]
        logits = field == "logits"
        a = probabilities(who, None if logits else row, row if logits else None, np.dtype(np.float64))[0]
        a[int(np.argmax(a))] -= 1.0
        d2[0] = float(a @ a) * float(h[first].astype(np.float64) @ h[first].astype(np.float64))
        return picks, d2, {"field": field, "seed": self.seed}


class ClusterMarginMiner(MarginMiner):
    """Cluster-Margin (Citovsky et al., NeurIPS 2021): the ``candidates`` x ``size``
    lowest-margin rows, spread over clusters.

    The nominees (the rows of highest margin score 1 − (p(1) − p(2)), streamed like
    `MarginMiner`) are grouped by their label in the pool column ``clusters``; the
    clusters are visited from the smallest (fewest nominees) up, ties by label, and each
    gives one row in turn, drawn at random (a uniform hashed from ``seed`` and the row,
    so the same whatever the batching), until ``size`` rows are picked. A row's score is
    its margin score, in pick order.

    The clusters are computed once per pool and kept as a column (the paper clusters the
    pool once, by average-linkage agglomerative clustering, which is quadratic in N):
    ``px.cluster(embeddings, n_clusters)`` gives k-means labels, which scale to millions
    of rows. Only the nominees' labels are read.

    Memory: the mining streams like `MarginMiner` (one batch of scores at a time, plus the
    ``candidates`` x ``size`` nominees and their labels): it does not hold the pool. The
    clustering (`pickaxe.cluster`, once per pool) holds the embeddings as stored (N x D)
    plus O(N) labels and O(k x D) centres; its time is linear in N (k-means on a sample of
    at most 256 rows per cluster, then one labelling pass over every row). Measured sizes
    up to 1,000,000 x 256: benches/RESULTS.md (issue 15, point 7).

    References
    ----------
    G. Citovsky, G. DeSalvo, C. Gentile, L. Karydas, A. Rajagopalan, A. Rostamizadeh and
    S. Kumar. Batch Active Learning at Scale. NeurIPS 2021.
    """

    def __init__(
        self,
        size: int,
        clusters: str,
        candidates: int = 10,
        seed: int = 0,
        *,
        field: Optional[str] = None,
        nan_policy: str = "raise",
        query: Optional[str] = None,
    ) -> None:
        who = f"{type(self).__name__}()"
        super().__init__(size, field=field, nan_policy=nan_policy, query=query)
        if not isinstance(clusters, str):
            raise TypeError(f"{who}: clusters is the name of the pool's cluster label column; got {type(clusters).__name__}")
        self.clusters = clusters
        self.repick_columns = (clusters,)
        self.candidates = checks.integer(who, "candidates", candidates, 1)
        self.seed = checks.integer(who, "seed", seed, 0)

    def prepare(self, source: Any, field: Optional[str]) -> None:
        if self.clusters not in source.column_names:
            raise ValueError(
                f"{type(self).__name__}: the pool has no column {self.clusters!r} of cluster labels "
                f"(px.cluster makes one); it has {source.describe()}"
            )

    def nominees(self, k: int) -> int:
        return self.candidates * k

    def repick(
        self, keys: np.ndarray, values: np.ndarray, columns: dict[str, np.ndarray], k: int
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        from ..engine import key_numbers, uniforms

        labels = np.asarray(columns[self.clusters])
        missing = _missing(labels)
        if missing is not None:
            raise InvalidInputError(kind="row", field=self.clusters, row=missing, reason="no cluster label (null)")
        _, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
        codes = codes.reshape(-1).astype(np.int64)
        order = np.lexsort((np.arange(len(counts)), counts))  # smallest cluster first
        picks = _round_robin(codes, order, uniforms(key_numbers(keys), self.seed), min(k, len(keys)))
        return picks, values[picks], {"candidates": len(keys), "clusters": len(counts)}


def _missing(labels: np.ndarray) -> Optional[int]:
    """The first position of a null label (None or NaN), or None."""
    if labels.dtype.kind == "f":
        bad = np.flatnonzero(np.isnan(labels))
    elif labels.dtype == object:
        bad = np.flatnonzero([v is None or (isinstance(v, float) and v != v) for v in labels.tolist()])
    else:
        return None
    return int(bad[0]) if bad.size else None
