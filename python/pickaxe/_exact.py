"""Exact nearest neighbours and k-center greedy: the distance helpers the miners call.

Private: the miners (`EmbeddingDistanceMiner`, `NoveltyMiner`, `CoresetMiner`,
`ReferenceIndex`) are the public face. Both functions are exact (no approximate index):

- `exact_knn` multiplies blocks with numpy (BLAS, the fastest matrix product available),
  G = Q_b · R_cᵀ, and a Rust kernel (`_core.knn_update`) turns each Gram block into
  distances and merges it into every query's running nearest; the chosen pairs are then
  recomputed directly (`_core.pair_distances`), since ‖q‖² + ‖r‖² − 2 q·r loses every digit
  for near neighbours.
- `kcenter_greedy` runs Sener & Savarese's greedy cover in Rust, one pass over the points
  per pick.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from concurrent.futures import wait
from typing import Any, Iterator, Optional

import numpy as np

from . import _blas
from . import _checks as checks
from . import _core

METRICS = ("l2", "cosine", "ip")

#: Candidates kept beyond k in the Gram stage. Rows at an equal true distance can come out
#: of the Gram expansion in either order (rounded norms, BLAS summation order); the exact
#: re-sort then puts them back in (distance, id) order, as long as they are among the
#: candidates. The cost is k + margin pairs per query, against the m of the Gram stage.
_MIN_MARGIN = 8

#: Query rows per block before the reference is split into chunks as well: BLAS is
#: efficient from about this size on, and whole-width blocks keep the state passes few.
_MIN_BLOCK_ROWS = 256

#: Multiply-adds per Gram block at most: Ctrl-C reaches Python between blocks, so a block
#: must end within a fraction of a second whatever D (a 64 MB block at D = 4096 took 0.6 s).
_MAX_BLOCK_MACS = 1 << 32

#: The candidates a Gram stage would keep (k + margin), as a share of the reference's
#: rows, from which every pair's distance is computed directly instead (`_direct_knn`):
#: the Gram stage would then select too little to pay for itself. The share is D times
#: DIRECT_FRACTION_PER_DIM, at most DIRECT_MIN_FRACTION: the direct search costs n·m·D
#: whatever k, the Gram stage's merge and exact re-computation grow with k. Measured
#: (500 queries, 5,000 rows, float32, L2, CPU time, 2 threads, AVX-512, the register-
#: blocked direct kernel), direct / Gram: D = 32: 0.94 at k = 50, 0.70 at k = 100;
#: D = 128: 0.94 at k = 100, 0.52 at k = 200; D = 384: 1.00 at k = 100, 0.71 at k = 200,
#: 0.43 at k = 600.
DIRECT_MIN_FRACTION = 0.025
DIRECT_FRACTION_PER_DIM = 1 / 2560

#: Pairs per query block of the direct search: a second or so of work between progress
#: ticks (and Ctrl-C checks from Python).
DIRECT_BLOCK_PAIRS = 1 << 22

#: Gram stages of at least this many multiply-adds (n·m·D, ~0.4 ms of one core's BLAS)
#: run on pickaxe's threads with one BLAS thread each (`_gram_stage`); smaller ones on
#: the caller's thread, BLAS choosing its own threads.
THREADED_GRAM_MACS = 1 << 24

#: Searches of at least this many multiply-adds (n·m·D) show a progress bar on a terminal:
#: several seconds of BLAS on two cores.
PROGRESS_MACS = 1 << 35


def progress_blocks(n: int, step: int, show: bool, desc: str) -> Iterator[int]:
    """The starts 0, step, 2·step, ... of the row blocks of n rows; when `show` and stderr
    is a terminal, a tqdm bar of rows (as the pools show) ticks as each block is done."""
    from .pools.source import _stderr_is_tty

    if not (show and n > step and _stderr_is_tty()):
        yield from range(0, n, step)
        return
    from tqdm import tqdm

    bar = tqdm(total=n, unit="rows", unit_scale=True, file=sys.stderr, dynamic_ncols=True, desc=desc, leave=False)
    try:
        for start in range(0, n, step):
            yield start
            bar.update(min(n, start + step) - start)
    finally:
        bar.close()


def _check_metric(metric: Any, allowed: tuple[str, ...] = METRICS) -> str:
    return checks.choice("exact search", "metric", metric, allowed)


def _as_2d(name: str, x: Any) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers; got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, D); got shape {a.shape}")
    return a


def _work_dtype(q: np.ndarray, r: np.ndarray) -> np.dtype:
    """The queries' dtype when it is float32 or float64; for other queries float32 if the
    reference is float32, else float64."""
    if q.dtype in (np.float32, np.float64):
        return q.dtype
    return np.dtype(np.float32) if r.dtype == np.float32 else np.dtype(np.float64)


def _norms(field: str, x: np.ndarray, given: Any) -> np.ndarray:
    """‖x_i‖₂ of every row, validating the rows, or the caller's norms (either sign)."""
    if given is None:
        # score_rows(..., "norm") validates every row (NaN, ±inf: ValueError naming the
        # field and the row) and returns the activation score −‖x_i‖₂.
        return np.negative(_core.score_rows(field, "norm", x))
    n = np.asarray(given)
    if n.shape != (x.shape[0],):
        raise ValueError(
            f"the norms of {field} must have shape ({x.shape[0]},); got {n.shape}"
        )
    return np.abs(n).astype(x.dtype, copy=False)


def _blasable(a: np.ndarray) -> bool:
    """Whether BLAS can read the 2-D view in place (numpy copies or loops otherwise)."""
    s, item = a.strides, a.itemsize
    if any(v < 0 or v % item for v in s):
        return False
    return (s[1] == item or a.shape[1] == 1) or (s[0] == item or a.shape[0] == 1)


def _block_shape(n: int, m: int, itemsize: int, block_bytes: int) -> tuple[int, int]:
    """(query rows, reference rows) per Gram block, so that it holds ≤ block_bytes."""
    n = max(n, 1)  # no queries: the loop runs no block
    elems = max(1, block_bytes // itemsize)
    rows = min(n, max(1, elems // m))
    if rows < min(n, _MIN_BLOCK_ROWS):
        rows = min(n, _MIN_BLOCK_ROWS, max(1, math.isqrt(elems)))
    cols = min(m, max(1, elems // rows))
    return rows, cols


def exact_knn(
    queries: Any,
    reference: Any,
    k: int,
    metric: str = "cosine",
    *,
    q_norms: Optional[np.ndarray] = None,
    r_norms: Optional[np.ndarray] = None,
    block_bytes: int = 64 << 20,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest reference rows of every query row, exactly.

    ``queries`` (n, D) and ``reference`` (m, D) are 2-D real arrays, read in place when
    they are float32/float64 (any order or strides). Both are computed in the queries'
    dtype when it is float32 or float64 (a float64 reference is cast to float32 for
    float32 queries), otherwise in float32 if the reference is float32, else float64.

    Distances (smaller = nearer):

    - ``"l2"``: ‖q − r‖₂ (euclidean, not squared),
    - ``"cosine"``: 1 − q·r / (‖q‖₂ ‖r‖₂), in [0, 2]; exactly 1 when either row is zero,
    - ``"ip"``: 1 − q·r (hnswlib's convention: the largest inner product is nearest).

    Returns ``(ids, distances)``, both (n, min(k, m)): int64 reference rows and distances
    in the working dtype, nearest first; equal distances in ascending id order.

    How: the queries go in blocks and the reference in chunks so that one Gram block
    G = Q_b · R_cᵀ (numpy/BLAS, into one preallocated buffer) stays under
    ``block_bytes``; ``_core.knn_update`` merges each block into every query's running
    k + margin nearest (margin = max(8, k // 4)) by the expansion
    ‖q‖² + ‖r‖² − 2g; ``_core.pair_distances`` then recomputes those pairs directly
    (differences before squaring, float64 sums) and re-sorts, and the first k are kept.
    The margin absorbs rows whose Gram-stage distances are off by rounding: a true
    neighbour can only be missed if more than margin rows come within rounding of the
    k-th distance.

    ``q_norms`` / ``r_norms`` (n,) / (m,): the rows' ‖x‖₂ when the caller has them. The
    natural source is ``_core.score_rows("embeddings" or "reference", "norm", x)``, which
    validates the rows but returns the activation score −‖x‖₂; either sign is accepted
    (the absolute value is used). Rows are only validated when their norms are computed
    here: a NaN or ±inf row raises ``ValueError`` naming ``embeddings`` (queries) or
    ``reference`` and the row.

    >>> import numpy as np
    >>> from pickaxe._exact import exact_knn
    >>> ref = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    >>> ids, dist = exact_knn(np.array([[0.9, 0.1]]), ref, k=2, metric="l2")
    >>> ids
    array([[1, 0]])
    >>> dist.round(4)
    array([[0.1414, 0.9055]])
    """
    q, r, qn, rn, metric, k = _search_inputs("exact_knn()", queries, reference, k, metric, q_norms, r_norms, block_bytes)
    return _knn(q, r, qn, rn, metric, k, block_bytes)


def _knn(
    q: np.ndarray, r: np.ndarray, qn: np.ndarray, rn: np.ndarray, metric: str, k: int, block_bytes: int
) -> tuple[np.ndarray, np.ndarray]:
    """exact_knn on checked inputs (`_search_inputs`)."""
    n, m = q.shape[0], r.shape[0]
    kk = min(m, k + max(_MIN_MARGIN, k // 4))
    ke = min(k, m)
    if _direct(q, kk, m):
        return _direct_knn(q, r, ke, metric)
    ids = np.full((n, kk), -1, dtype=np.int64)
    dists = np.full((n, kk), np.inf, dtype=q.dtype)
    _gram_stage(q, r, qn, rn, metric, ids, dists, block_bytes)
    ids, dists = _core.pair_distances(q, r, ids, metric)
    if ke < kk:
        ids, dists = np.ascontiguousarray(ids[:, :ke]), np.ascontiguousarray(dists[:, :ke])
    return ids, dists


def knn_scores(
    queries: Any,
    reference: Any,
    k: int,
    metric: str = "cosine",
    aggregate: str = "mean",
    *,
    q_norms: Optional[np.ndarray] = None,
    r_norms: Optional[np.ndarray] = None,
    block_bytes: int = 64 << 20,
) -> np.ndarray:
    """One score per query from its k nearest reference rows, exactly: the mean of the k
    distances (``aggregate="mean"``, summed in float64) or the k-th smallest (``"kth"``),
    (n,) in the working dtype. Inputs, metrics and errors as `exact_knn`; 1 <= k <= m.

    Where `exact_knn` would compute every pair directly (k near m), each query's k
    nearest are selected and aggregated in the kernel (``_core.knn_direct_scores``): one
    selection per query, no sort and no (n, k) output. Otherwise `exact_knn`'s sorted
    distances are aggregated (`aggregate_distances`). The k-th distance is the same
    either way; the mean differs between the two only in the order of its float64 sum.

    >>> import numpy as np
    >>> from pickaxe._exact import knn_scores
    >>> ref = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    >>> knn_scores(np.array([[0.9, 0.1]]), ref, k=2, metric="l2").round(4)
    array([0.5235])
    """
    who = "knn_scores()"
    aggregate = checks.choice(who, "aggregate", aggregate, AGGREGATES)
    q, r, qn, rn, metric, k = _search_inputs(who, queries, reference, k, metric, q_norms, r_norms, block_bytes)
    m = r.shape[0]
    if k > m:
        raise ValueError(f"{who}: k = {k} but the reference has {m} rows")
    if not _direct(q, min(m, k + max(_MIN_MARGIN, k // 4)), m):
        _, dist = _knn(q, r, qn, rn, metric, k, block_bytes)
        return aggregate_distances(dist, aggregate)
    out = np.empty(q.shape[0], dtype=q.dtype)

    def block(i0: int, i1: int, qb: np.ndarray, rc: np.ndarray) -> None:
        out[i0:i1] = _core.knn_direct_scores(qb, rc, k, metric, aggregate)

    _direct_blocks(q, r, block)
    return out


#: What `knn_scores` makes of a query's k nearest distances.
AGGREGATES = ("mean", "kth")


def aggregate_distances(dist: np.ndarray, aggregate: str) -> np.ndarray:
    """(n,) scores of (n, k) distances sorted nearest first: their mean, summed in float64
    (and returned in their dtype), or the last column (the k-th)."""
    if aggregate == "kth":
        return np.ascontiguousarray(dist[:, -1])
    return dist.mean(axis=1, dtype=np.float64).astype(dist.dtype, copy=False)


def _search_inputs(
    who: str, queries: Any, reference: Any, k: Any, metric: Any, q_norms: Any, r_norms: Any, block_bytes: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str, int]:
    """The checked inputs of an exact search: (queries, reference) in the working dtype,
    their norms (validating the rows), the metric and k."""
    metric = _check_metric(metric)
    k = checks.integer(who, "k", k, 1)
    checks.integer(who, "block_bytes", block_bytes, 1)
    q = _as_2d("queries", queries)
    r = _as_2d("reference", reference)
    if q.shape[1] != r.shape[1]:
        raise ValueError(
            f"queries {q.shape} and reference {r.shape} have different dimensions D "
            f"({q.shape[1]} != {r.shape[1]})"
        )
    if r.shape[0] == 0:
        raise ValueError(f"reference is empty (shape {r.shape}): there is nothing to search")
    dtype = _work_dtype(q, r)
    q = q.astype(dtype, copy=False)
    r = r.astype(dtype, copy=False)
    qn = _norms("embeddings", q, q_norms)
    rn = _norms("reference", r, r_norms)
    return q, r, qn, rn, metric, k


def _direct(q: np.ndarray, kk: int, m: int) -> bool:
    """Whether a search keeping kk candidates of m rows computes every pair directly
    (DIRECT_MIN_FRACTION, DIRECT_FRACTION_PER_DIM)."""
    d = max(1, q.shape[1])
    return kk >= min(DIRECT_MIN_FRACTION, d * DIRECT_FRACTION_PER_DIM) * m


_pool_lock = threading.Lock()
_pool: Optional[tuple[int, int, Any]] = None  # (pid, threads, ThreadPoolExecutor)


def _gram_pool(threads: int) -> Any:
    """The Gram stage's worker threads, made once per process and thread count (a new
    executor costs ~0.3-0.8 ms, a k = 10 search of 500 x 5,000 x 384 ~20 ms). Idle
    workers wait on a queue; a forked child, which has none of its parent's threads,
    makes its own."""
    global _pool
    from concurrent.futures import ThreadPoolExecutor

    with _pool_lock:
        pid = os.getpid()
        if _pool is None or _pool[0] != pid or _pool[1] != threads:
            if _pool is not None and _pool[0] == pid:
                _pool[2].shutdown(wait=False)
            _pool = (pid, threads, ThreadPoolExecutor(threads, thread_name_prefix="pickaxe-gram"))
        return _pool[2]


def _gram_stage(
    q: np.ndarray, r: np.ndarray, qn: np.ndarray, rn: np.ndarray, metric: str,
    ids: np.ndarray, dists: np.ndarray, block_bytes: int,
) -> None:
    """exact_knn's Gram stage: G = Q_b · R_cᵀ block by block, each merged into the running
    candidates ``ids`` / ``dists`` (n, k + margin) by ``_core.knn_update``.

    Large stages (THREADED_GRAM_MACS) run on pickaxe's threads (``set_num_threads``), each
    taking whole query blocks (so no two threads merge into the same rows) with its own
    block buffer of ≤ block_bytes / threads and BLAS limited to the calling thread: BLAS's
    own workers would otherwise spin after each product and take the cores from the merge
    and from the kernels after the search (see `_blas`). Results do not depend on the
    thread count: each block's merge is the same whichever thread runs it.
    """
    n, m = q.shape[0], r.shape[0]
    d = max(1, q.shape[1])
    dtype = q.dtype
    budget = min(int(block_bytes), dtype.itemsize * max(1, _MAX_BLOCK_MACS // d))
    threads = int(_core.build_info()["threads"]) if n * m * d >= THREADED_GRAM_MACS else 1
    if threads > 1:
        budget = max(dtype.itemsize, budget // threads)
    rows, cols = _block_shape(n, m, dtype.itemsize, budget)
    if threads > 1 and rows * threads > n:
        # At least one block per thread; fewer query rows leave room for more columns.
        rows = max(1, -(-n // threads))
        cols = min(m, max(1, budget // dtype.itemsize // rows))
    local = threading.local()

    def block(i0: int) -> None:
        i1 = min(n, i0 + rows)
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = np.empty(rows * cols, dtype=dtype)
        qb = q[i0:i1]
        if not _blasable(qb):
            qb = np.ascontiguousarray(qb)
        for j0 in range(0, m, cols):
            j1 = min(m, j0 + cols)
            rc = r[j0:j1]
            if not _blasable(rc):
                rc = np.ascontiguousarray(rc)
            g = buf[: (i1 - i0) * (j1 - j0)].reshape(i1 - i0, j1 - j0)
            np.matmul(qb, rc.T, out=g)
            _core.knn_update(g, qn[i0:i1], rn[j0:j1], j0, metric, ids[i0:i1], dists[i0:i1])

    starts = progress_blocks(n, rows, n * m * d >= PROGRESS_MACS, "neighbours")
    if n * m * d < THREADED_GRAM_MACS:
        # Small stages: handing blocks to threads would cost about what it saves; BLAS
        # threads the products it finds large enough.
        for i0 in starts:
            block(i0)
        return
    with _blas.one_thread():
        if threads == 1 or n <= rows:
            for i0 in starts:
                block(i0)
            return
        pool = _gram_pool(threads)
        # Submitted lazily, `threads` ahead of the block the progress bar waits for:
        # Ctrl-C or an error leaves at most that many blocks to finish (waited for, so
        # that no block writes into ids / dists after this returns).
        pending: list[Any] = []
        it = iter(range(0, n, rows))
        try:
            for _ in range(threads):
                i0 = next(it, None)
                if i0 is not None:
                    pending.append(pool.submit(block, i0))
            for _ in starts:
                pending.pop(0).result()
                i0 = next(it, None)
                if i0 is not None:
                    pending.append(pool.submit(block, i0))
        finally:
            for f in pending:
                f.cancel()
            wait(pending)


def _direct_knn(q: np.ndarray, r: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """exact_knn for a k near the reference's size: the direct distance of every pair
    (``_core.knn_direct``), each query's k selected and sorted; no Gram stage, whose
    selection would drop almost nothing, and no margin, since every pair is exact."""
    n, m = q.shape[0], r.shape[0]
    if n <= DIRECT_BLOCK_PAIRS // m:  # one block: the kernel's arrays, not a copy
        return _core.knn_direct(q, np.ascontiguousarray(r), k, metric)
    ids = np.empty((n, k), dtype=np.int64)
    dists = np.empty((n, k), dtype=q.dtype)

    def block(i0: int, i1: int, qb: np.ndarray, rc: np.ndarray) -> None:
        ids[i0:i1], dists[i0:i1] = _core.knn_direct(qb, rc, k, metric)

    _direct_blocks(q, r, block)
    return ids, dists


def _direct_blocks(q: np.ndarray, r: np.ndarray, block: Any) -> None:
    """``block(i0, i1, queries[i0:i1], reference)`` over query blocks of about
    DIRECT_BLOCK_PAIRS · D multiply-adds (a progress tick, and a Ctrl-C check, each) with
    the reference made C-ordered once: the direct kernels read each reference row once per
    tile of queries, and strided rows would be copied each time."""
    n, m = q.shape[0], r.shape[0]
    r = np.ascontiguousarray(r)
    d = max(1, q.shape[1])
    rows = max(1, DIRECT_BLOCK_PAIRS // m)
    for i0 in progress_blocks(n, rows, n * m * d >= PROGRESS_MACS, "neighbours"):
        i1 = min(n, i0 + rows)
        block(i0, i1, q[i0:i1], r)


def kcenter_greedy(
    points: Any,
    size: int,
    *,
    initial: Optional[np.ndarray] = None,
    metric: str = "l2",
) -> tuple[np.ndarray, np.ndarray]:
    """k-center greedy (Sener & Savarese, 2018): ``size`` rows of ``points`` that cover it.

    ``points`` (N, D) real, computed in float32 if it is float32, else float64; a NaN or
    ±inf row raises ``ValueError`` naming ``embeddings`` and the row. The kernel reads
    every point once per pick (O(N·D) per pick, at memory speed), so points that are not
    C-ordered are copied once first rather than read with strides ``size`` times. With d(x, c) the
    ``metric`` distance (``"l2"``: ‖x − c‖₂; ``"cosine"``: 1 − x·c / (‖x‖‖c‖), 1 for a
    zero row) and d_min(x) the distance of x to its nearest center, each step picks

        argmax_x d_min(x)        (ties: the lowest row; a picked row never again)

    and makes it a center.

    ``initial`` (N,): each row's distance to its nearest existing center, e.g. the
    distances of the pool to the labeled set from ``exact_knn(points, labeled, 1)``;
    +inf where no center covers a row, −inf marks a row that is a center already (never
    picked). Without it there is no center yet and the first pick is the row farthest
    from the pool mean (mean computed in float64; ties: the lowest row), which starts the
    cover at an extreme rather than at row 0, deterministically; the greedy then goes on
    from that one center.

    Returns ``(picks, distances)``: int64 rows (s,) in pick order and each pick's d_min
    when it was picked (s,), non-increasing, +inf for the first pick without ``initial``;
    s = min(size, number of pickable rows).

    >>> import numpy as np
    >>> from pickaxe._exact import kcenter_greedy
    >>> pts = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [0.0, 3.0]])
    >>> picks, dist = kcenter_greedy(pts, 3)
    >>> picks
    array([2, 3, 1])
    >>> dist.round(4)
    array([   inf, 5.831 , 3.0017])
    """
    metric = _check_metric(metric, ("l2", "cosine"))
    size = checks.integer("kcenter_greedy()", "size", size, 0)
    x = _as_2d("points", points)
    dtype = np.dtype(np.float32) if x.dtype == np.float32 else np.dtype(np.float64)
    x = x.astype(dtype, copy=False)
    n = x.shape[0]
    # Validates every row (ValueError naming embeddings and the row).
    _core.score_rows("embeddings", "norm", x)
    if not x.flags.c_contiguous:
        # The kernel reads the points once per pick: one C-ordered copy beats `size`
        # passes of strided reads.
        x = np.ascontiguousarray(x)
    if initial is not None:
        md = np.asarray(initial)
        if md.shape != (n,):
            raise ValueError(f"initial must have shape ({n},), one per point; got {md.shape}")
        if md.dtype.kind not in "biuf":
            raise TypeError(f"initial must hold real numbers; got dtype {md.dtype}")
        md = np.array(md, dtype=dtype)  # a copy: the kernel owns it
        bad = np.flatnonzero(np.isnan(md) | ((md < 0) & (md != -np.inf)))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"initial[{i}] is {md[i]}; distances must be >= 0 "
                "(+inf: no center yet, -inf: already a center)"
            )
        picks, dists = _core.kcenter_greedy(x, size, md, metric)
        return picks, dists
    if n == 0 or size == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=dtype)
    mean = x.mean(axis=0, dtype=np.float64).astype(dtype)
    # Distances to one row are what exact_knn(x, row[None], 1) returns, computed directly
    # (no Gram block: a BLAS call would leave its threads spinning on the cores the
    # greedy passes are about to use).
    one = np.zeros((n, 1), dtype=np.int64)
    _, to_mean = _core.pair_distances(x, mean[None], one, metric)
    first = int(np.argmax(to_mean[:, 0]))
    _, to_first = _core.pair_distances(x, x[first : first + 1], one, metric)
    md = np.ascontiguousarray(to_first[:, 0])
    md[first] = -np.inf
    picks, dists = _core.kcenter_greedy(x, size - 1, md, metric)
    return (
        np.concatenate([np.array([first], dtype=np.int64), picks]),
        np.concatenate([np.array([np.inf], dtype=dtype), dists]),
    )
