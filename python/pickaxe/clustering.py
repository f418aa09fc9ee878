"""Clustering for batch-aware selection: k-means (`cluster`, `kmeans`), BADGE's k-means++
seeding over gradient embeddings (`badge_seeds`) and TypiClust's typicality
(`typicality`, `most_typical`).

`cluster` is public (``px.cluster``): Cluster-Margin's clusters are computed once per pool
with it and stored with the pool. The other functions are what the batch-aware miners
(TypiClust, BADGE, Cluster-Margin) call. Every kernel is Rust (``pickaxe._core``):
parallel, with the GIL released, interruptible by Ctrl-C, and deterministic for a given
``seed`` whatever the number of threads.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import numpy as np

from . import _checks as checks
from . import _core
from ._fields import as_float_array

__all__ = ["cluster", "kmeans", "KMeans", "badge_seeds", "typicality", "most_typical"]

METHODS = ("auto", "full")

#: Lloyd iterates on at most this many rows per cluster with ``method="auto"`` (faiss's
#: ``max_points_per_centroid``); the rest of the pool is labelled by one final assignment.
FIT_ROWS_PER_CLUSTER = 256
#: k-means++ seeds from at most this many rows per cluster (at least ``MIN_INIT_ROWS``)
#: with ``method="auto"``: each of its k picks reads every seeding row.
INIT_ROWS_PER_CLUSTER = 20
MIN_INIT_ROWS = 10_000


class KMeans(NamedTuple):
    """What `kmeans` returns."""

    #: (N,) int64, each row's nearest final centre, in 0..k.
    labels: np.ndarray
    #: (k, D), the embeddings' dtype.
    centers: np.ndarray
    #: Σ_i ‖x_i − c_{labels_i}‖² over every row.
    inertia: float
    #: Lloyd iterations run.
    iterations: int
    #: Whether the centres stopped moving before ``max_iter``.
    converged: bool


def _threads(who: str, threads: Any) -> Optional[int]:
    return None if threads is None else checks.integer(who, "threads", threads, 1)


def _seed(who: str, seed: Any) -> int:
    seed = checks.integer(who, "seed", seed, 0)
    if seed >= 1 << 64:
        raise ValueError(f"{who}: seed must be below 2**64; got {seed}")
    return seed


def _rows(who: str, name: str, x: Any) -> np.ndarray:
    """A 2-D float32/float64 C-contiguous array (one copy when needed: the kernels read
    every row many times)."""
    arr = as_float_array(who.removesuffix("()"), name, x, 2, "(N, D)")
    if arr.shape[1] == 0:
        raise ValueError(f"{who}: {name} has no dimensions (shape {arr.shape})")
    return np.ascontiguousarray(arr)


def kmeans(
    embeddings: Any,
    n_clusters: int,
    *,
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-4,
    method: str = "auto",
    init_rows: Optional[int] = None,
    fit_rows: Optional[int] = None,
    threads: Optional[int] = None,
) -> KMeans:
    """k-means of the rows of ``embeddings``: k-means++ seeding, then Lloyd iterations.

    Minimises the inertia Σ_i ‖x_i − c_{l_i}‖² over the labels l and centres c:
    k-means++ seeding with 2 + ⌊ln k⌋ greedy local trials per centre (Arthur &
    Vassilvitskii 2007, as scikit-learn's ``_kmeans_plusplus``), then Lloyd iterations
    (assign each row to its nearest centre, move each centre to the mean of its rows) until
    no label changes, Σ_j ‖c_j − c_j'‖² ≤ ``tol`` × the mean per-dimension variance of the
    rows (scikit-learn's rule), or ``max_iter``. An empty cluster is re-seeded with the row
    farthest from its centre, as scikit-learn does.

    Parameters
    ----------
    embeddings : array_like, (N, D)
        Real; computed in float32 if float32, else float64. NaN or ±inf raises
        `pickaxe.errors.InvalidInputError` naming the row.
    n_clusters : int
        k, 1 ≤ k ≤ N.
    seed : int
        Drives the seeding and the samples; the result depends on it alone, not on the
        number of threads.
    max_iter, tol
        Lloyd iterations at most; relative tolerance on the centres' shift.
    method : {"auto", "full"}
        ``"full"``: seeding and Lloyd on every row (scikit-learn's algorithm).
        ``"auto"``: Lloyd on a random sample of at most 256·k rows (faiss's rule), then one
        assignment of every row to the final centres; the seeding on a sample of at most
        max(10,000, 20·k) of those. Identical to ``"full"`` for N ≤ 10,000 and k ≥ N / 20.
    init_rows, fit_rows : int, optional
        The two sample sizes, overriding the method's (each ≥ k; ``init_rows`` ≤
        ``fit_rows``; the seeding sample is drawn from the fit sample).
    threads : int, optional
        Threads for this call (default: ``pickaxe.set_num_threads``).

    Returns
    -------
    KMeans
        ``(labels (N,) int64, centers (k, D), inertia, iterations, converged)``.

    Notes
    -----
    Time: a Lloyd iteration is O(n·k·D) multiply-adds over its n rows, as matrix products
    of blocks of rows by the centres (‖x‖² + ‖c‖² − 2 x·c); the seeding reads its m rows
    2 + ⌊ln k⌋ times per centre, O(m·k·D·ln k), memory-bound. Memory: the embeddings as
    given (one C-ordered copy if they are not), the fit sample gathered (n·D values when
    n < N), plus O(N) (labels) and O(k·D) (centres and their integer sums). Measured on
    2 cores (benches/bench_cluster.py): see benches/RESULTS.md.

    Sums are exact: the column statistics and the inertia are summed exactly, a centre's
    coordinates as fixed-point integers (each value rounded to 2^-50 of its column's
    largest |value|, far below a float32's rounding). So the result does not depend on
    how the rows are split, between threads or between the Ray workers that hold them
    (`pickaxe.ray`'s TypiClust runs these steps there and gets the same labels).

    Examples
    --------
    >>> import numpy as np
    >>> from pickaxe.clustering import kmeans
    >>> x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> r = kmeans(x, 2, seed=0)
    >>> bool(r.labels[0] == r.labels[1] != r.labels[2] == r.labels[3])
    True
    >>> round(r.inertia, 4)
    0.01
    """
    who = "kmeans()"
    x = _rows(who, "embeddings", embeddings)
    k, seed, max_iter, tol, method = check_kmeans_arguments(who, x.shape[0], n_clusters, seed, max_iter, tol, method)
    fit, init = sample_sizes(who, x.shape[0], k, method, init_rows, fit_rows)
    labels, centers, inertia, iterations, converged = _core.kmeans(
        x,
        k,
        seed=seed,
        max_iter=max_iter,
        tol=tol,
        init_rows=init,
        fit_rows=fit,
        threads=_threads(who, threads),
    )
    return KMeans(labels, centers, float(inertia), int(iterations), bool(converged))


def check_kmeans_arguments(
    who: str, n: int, n_clusters: Any, seed: Any, max_iter: Any, tol: Any, method: Any
) -> tuple[int, int, int, float, str]:
    """`kmeans`' arguments checked for n rows: (k, seed, max_iter, tol, method)."""
    k = checks.integer(who, "n_clusters", n_clusters, 1)
    if k > n:
        raise ValueError(f"{who}: n_clusters ({k}) is larger than the number of rows ({n})")
    seed = _seed(who, seed)
    max_iter = checks.integer(who, "max_iter", max_iter, 0)
    tol = checks.real(who, "tol", tol)
    if not (tol >= 0 and np.isfinite(tol)):
        raise ValueError(f"{who}: tol must be finite and >= 0; got {tol}")
    return k, seed, max_iter, tol, checks.choice(who, "method", method, METHODS)


def sample_sizes(
    who: str, n: int, k: int, method: str, init_rows: Optional[int], fit_rows: Optional[int]
) -> tuple[int, int]:
    """How many rows `kmeans` iterates on and seeds from: (fit, init), init ≤ fit ≤ n."""
    if method == "auto":
        fit = min(n, FIT_ROWS_PER_CLUSTER * k)
        init = min(fit, max(MIN_INIT_ROWS, INIT_ROWS_PER_CLUSTER * k))
    else:
        fit = init = n
    if fit_rows is not None:
        fit = min(n, checks.integer(who, "fit_rows", fit_rows, k))
    if init_rows is not None:
        init = checks.integer(who, "init_rows", init_rows, k)
    return fit, min(init, fit)


def cluster(
    embeddings: Any,
    n_clusters: int,
    *,
    seed: int = 0,
    max_iter: int = 100,
    method: str = "auto",
    threads: Optional[int] = None,
) -> np.ndarray:
    """Cluster labels of the rows of ``embeddings`` by k-means, for storing with a pool.

    Cluster-Margin (Citovsky et al., NeurIPS 2021, "Batch Active Learning at Scale")
    clusters the pool once and keeps the clusters; its paper uses average-linkage
    agglomerative clustering, which is quadratic in N (all pairwise distances). pickaxe
    uses k-means instead: O(N·k·D) per Lloyd iteration, linear in N, with Lloyd run on a
    sample of at most 256 rows per cluster (``method="auto"``) and every row then labelled
    by its nearest centre. See `kmeans` for the algorithm, the options and the costs.

    Parameters
    ----------
    embeddings : array_like, (N, D)
        Real, finite (NaN or ±inf raises `pickaxe.errors.InvalidInputError` naming the row).
    n_clusters : int
        k, 1 ≤ k ≤ N.
    seed, max_iter, method, threads
        As in `kmeans`.

    Returns
    -------
    numpy.ndarray
        (N,) int64 labels in 0..k: label i is the nearest of the k final centres,
        c_j = mean of the rows labelled j (up to the final assignment),
        label(x) = argmin_j ‖x − c_j‖² (ties: the lowest j).

    Notes
    -----
    Memory: the embeddings (one C-ordered copy if they are not), O(N) and O(k·D).
    Deterministic for a given ``seed`` whatever the number of threads.

    Examples
    --------
    >>> import numpy as np, pickaxe as px
    >>> x = np.array([[0.0, 0.0], [0.0, 0.2], [9.0, 9.0], [9.0, 9.2], [0.1, 0.1]])
    >>> labels = px.cluster(x, 2, seed=1)
    >>> bool(labels[0] == labels[1] == labels[4] != labels[2] == labels[3])
    True
    """
    return kmeans(
        embeddings, n_clusters, seed=seed, max_iter=max_iter, method=method, threads=threads
    ).labels


def probabilities(who: str, confidences: Any, logits: Any, dtype: np.dtype) -> np.ndarray:
    """The (N, C) class probabilities from exactly one of ``confidences`` / ``logits``."""
    if (confidences is None) == (logits is None):
        raise TypeError(f"{who} takes exactly one of confidences (N, C) and logits (N, C)")
    if confidences is not None:
        p = as_float_array(who.removesuffix("()"), "confidences", confidences, 2, "(N, C)")
        return np.ascontiguousarray(p, dtype=dtype)
    z = as_float_array(who.removesuffix("()"), "logits", logits, 2, "(N, C)")
    # Validates the logits (NaN, +inf, a row of -inf: InvalidInputError naming logits).
    _core.score_rows("logits", "max_logit", z)
    if z.shape[1] == 1:
        z = np.concatenate([np.zeros_like(z), z], axis=1)  # binary: the logits [0, x]
    z = z.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    z /= z.sum(axis=1, keepdims=True)
    return np.ascontiguousarray(z, dtype=dtype)


def badge_seeds(
    embeddings: Any,
    k: int,
    *,
    confidences: Any = None,
    logits: Any = None,
    seed: int = 0,
    threads: Optional[int] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """BADGE's batch: k-means++ seeding over gradient embeddings, never formed.

    Ash et al. (ICLR 2020, "Deep Batch Active Learning by Diverse, Uncertain Gradient Lower
    Bounds"): with p the class probabilities, ŷ = argmax p (ties: the lowest class),
    a = p − e_ŷ and h the penultimate layer's embedding, the gradient embedding is
    g = a ⊗ h (C·D values). Its distances come from the factors:

        ‖g_x − g_y‖² = ‖a_x‖²‖h_x‖² + ‖a_y‖²‖h_y‖² − 2 (a_x·a_y)(h_x·h_y).

    The first pick is the row of largest ‖g‖ (ties: the lowest row), as in the authors'
    code and scikit-activeml's ``Badge``; each next pick is drawn with probability ∝ D²,
    its squared distance to the nearest pick so far (k-means++ seeding, one draw per pick:
    no local trials, as in BADGE); a picked row is never drawn again; when every unpicked
    row has D² = 0 the pick is uniform among them.

    Parameters
    ----------
    embeddings : array_like, (N, D)
        h, real and finite (else `pickaxe.errors.InvalidInputError` naming the row).
    k : int
        Picks, 0 ≤ k ≤ N.
    confidences, logits : array_like, (N, C)
        Exactly one: class probabilities (rows are distributions; checked as pickaxe's
        ``confidences`` field) or logits (softmaxed in float64; C = 1 is binary, [0, x]).
    seed : int
        Drives the draws; the picks do not depend on the number of threads.
    threads : int, optional
        Threads for this call (default: ``pickaxe.set_num_threads``).

    Returns
    -------
    picks : numpy.ndarray
        (k,) int64 rows, in pick order.
    d2 : numpy.ndarray
        (k,) float64, each pick's D² when it was picked (+inf for the first).

    Notes
    -----
    Computed in float32 when the embeddings and the confidences are float32, else float64.
    Memory: the two inputs (C-ordered) plus O(N); never O(N·C·D) (scikit-activeml's
    ``Badge`` forms g: 24.6 GB at 20,000 × 100 classes × 768). Time: one pass over the
    rows per pick, O(N·(C + D)); rows the new pick cannot bring nearer, by
    (‖g_x‖ − ‖g_c‖)² ≥ D²(x), are skipped without being read.

    Examples
    --------
    >>> import numpy as np
    >>> from pickaxe.clustering import badge_seeds
    >>> p = np.array([[0.9, 0.1], [0.5, 0.5], [0.6, 0.4], [0.99, 0.01]])
    >>> h = np.array([[1.0, 0.0], [2.0, 1.0], [0.0, 2.0], [1.0, 1.0]])
    >>> picks, d2 = badge_seeds(h, 2, confidences=p, seed=0)
    >>> int(picks[0])  # the largest gradient norm: row 1
    1
    """
    who = "badge_seeds()"
    h = _rows(who, "embeddings", embeddings)
    n = h.shape[0]
    k = checks.integer(who, "k", k, 0)
    if k > n:
        raise ValueError(f"{who}: k ({k}) is larger than the pool ({n} rows)")
    given = confidences if confidences is not None else logits
    given_dtype = getattr(np.asarray(given) if given is not None else None, "dtype", None)
    dtype = np.dtype(np.float32) if h.dtype == np.float32 and given_dtype == np.float32 else np.dtype(np.float64)
    p = probabilities(who, confidences, logits, dtype)
    if p.shape[0] != n:
        raise ValueError(f"{who}: the class scores have {p.shape[0]} rows but embeddings has {n}")
    picks, d2 = _core.badge_seeds(
        p, h.astype(dtype, copy=False), k, seed=_seed(who, seed), threads=_threads(who, threads)
    )
    return picks, d2


def _labels(who: str, labels: Any, n: int) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.dtype.kind not in "iu":
        raise TypeError(f"{who}: labels must be integers (cluster ids); got dtype {lab.dtype}")
    if lab.shape != (n,):
        raise ValueError(f"{who}: labels must have shape ({n},), one per row; got {lab.shape}")
    return np.ascontiguousarray(lab, dtype=np.int64)


def typicality(
    embeddings: Any,
    labels: Any,
    k: int = 20,
    *,
    clusters: Optional[Sequence[int]] = None,
    threads: Optional[int] = None,
) -> np.ndarray:
    """TypiClust's typicality of each row within its cluster.

    Hacohen, Dekel & Weinshall (ICML 2022, "Active Learning on a Budget"):

        typicality(x) = 1 / ( (1/k') Σ_{y ∈ kNN(x)} ‖x − y‖₂ ),   k' = min(k, m − 1),

    over the k' nearest other rows of x's cluster (m rows), found exactly. Euclidean
    distances as in the paper and scikit-activeml (the authors' code averages squared
    distances and adds 1e-5: here nothing is added, so a row with k' duplicates gets +inf);
    a cluster of one row gets +inf.

    Parameters
    ----------
    embeddings : array_like, (N, D)
        Real, finite (else `pickaxe.errors.InvalidInputError` naming the row).
    labels : array_like of int, (N,)
        Each row's cluster; a negative label puts the row in none (not computed, nobody's
        neighbour): e.g. -1 for rows that must not count.
    k : int
        Neighbours (TypiClust: 20).
    clusters : sequence of int, optional
        Compute only the rows of these clusters (default: every cluster).
    threads : int, optional
        Threads for this call (default: ``pickaxe.set_num_threads``).

    Returns
    -------
    numpy.ndarray
        (N,) float64; NaN for the rows not computed.

    Notes
    -----
    Exact: per cluster of m rows, Gram blocks rank the other rows, the k' + max(8, k'/4)
    nearest are recomputed from differences. Time O(Σ m² D) over the clusters computed,
    in parallel; memory O(m·D) for the largest cluster (its rows gathered) plus N values.
    Meant for k-means clusters of a pool (N / k rows each): a single cluster of 10⁵ rows
    at D = 256 costs 2.6·10¹² multiply-adds (minutes on two cores); for clusters that large,
    search an approximate index per cluster (`pickaxe.index.ReferenceIndex`) instead.

    Examples
    --------
    >>> import numpy as np
    >>> from pickaxe.clustering import typicality
    >>> x = np.array([[0.0], [1.0], [1.5], [10.0], [11.0]])
    >>> typicality(x, [0, 0, 0, 1, 1], k=2).round(3)
    array([0.8  , 1.333, 1.   , 1.   , 1.   ])
    """
    who = "typicality()"
    x = _rows(who, "embeddings", embeddings)
    lab = _labels(who, labels, x.shape[0])
    k = checks.integer(who, "k", k, 1)
    wanted = None
    if clusters is not None:
        wanted = np.asarray(clusters)
        if wanted.dtype.kind not in "iu" or wanted.ndim != 1:
            raise TypeError(f"{who}: clusters must be a 1-D sequence of int cluster ids")
        wanted = np.ascontiguousarray(wanted, dtype=np.int64)
    return _core.typicality(x, lab, k, clusters=wanted, threads=_threads(who, threads))


def most_typical(
    embeddings: Any,
    labels: Any,
    clusters: Sequence[int],
    k: int = 20,
    *,
    threads: Optional[int] = None,
) -> np.ndarray:
    """The row of highest `typicality` in each of ``clusters`` (TypiClust's pick).

    Returns (len(clusters),) int64 rows, in the order of ``clusters``; ties go to the lowest
    row; -1 for a cluster with no row. Only the listed clusters are read (see `typicality`
    for the formula and costs), and in each only the rows that might be the most typical
    are computed exactly: each row's Gram row (against its cluster, as `typicality`
    computes it) bounds its mean distance to its k' nearest from below, and a row whose
    bound exceeds the best exact mean so far is skipped; the rows nearest the cluster's
    mean are computed first. The rows are those `typicality` would rank first, exactly.

    >>> import numpy as np
    >>> from pickaxe.clustering import most_typical
    >>> x = np.array([[0.0], [1.0], [1.5], [10.0], [11.0]])
    >>> most_typical(x, [0, 0, 0, 1, 1], [1, 0], k=2)
    array([3, 1])
    """
    who = "most_typical()"
    ids = np.asarray(clusters)
    if ids.dtype.kind not in "iu" or ids.ndim != 1:
        raise TypeError(f"{who}: clusters must be a 1-D sequence of int cluster ids")
    x = _rows(who, "embeddings", embeddings)
    lab = _labels(who, labels, x.shape[0])
    k = checks.integer(who, "k", k, 1)
    wanted = np.ascontiguousarray(ids, dtype=np.int64)
    rows, _ = _core.most_typical(x, lab, k, wanted, threads=_threads(who, threads))
    return rows
