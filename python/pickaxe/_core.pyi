"""Type stubs of the compiled module (rust/pickaxe-py). Private: use pickaxe.scores.

Every kernel runs with the GIL released. Calls with large inputs run interruptibly: on
Ctrl-C (any SIGINT handler that raises) the kernel stops at its next chunk and the call
raises the handler's exception, KeyboardInterrupt by default, within about 50 ms
(rust/pickaxe-py/src/interrupt.rs)."""

from typing import Any, Literal, Optional, Sequence, TypedDict

from typing_extensions import Unpack

import numpy as np
import numpy.typing as npt

__version__: str

_Float = np.float32 | np.float64

class _ScoreOptions(TypedDict, total=False):
    """The keywords of the score bindings (rust/pickaxe-py/src/convert.rs, ScoreKeywords);
    each applies where its score reads it, an unknown one is a TypeError."""

    normalize: bool  # entropy: divide by ln C (default False)
    class_weights: Optional[Sequence[float]]  # entropy: a weight per class
    temperature: float  # energy: T (default 1.0)
    ord: float  # norm: its order (default 2.0)
    logits: bool  # score_pixels / score_boxes: the field holds logits (default False)
    kl_reduce: Literal["mean", "max"]  # committee KL over members (default "mean")

def score_rows(
    field: Literal["confidence", "confidences", "logits", "embeddings", "reference"],
    score: Literal["least_confidence", "margin", "ratio", "entropy", "energy", "max_logit", "norm"],
    x: npt.NDArray[_Float],
    nan_policy: Literal["raise", "omit"] = "raise",
    **options: Unpack[_ScoreOptions],
) -> npt.NDArray[_Float]: ...
def score_stack(
    field: Literal["query_by_committee", "mc_dropout"],
    score: Literal[
        "vote_entropy",
        "consensus_entropy",
        "kl_disagreement",
        "mutual_information",
        "predictive_entropy",
        "variation_ratio",
        "variance",
    ],
    x: npt.NDArray[_Float],
    logits: bool = False,
    nan_policy: Literal["raise", "omit"] = "raise",
    reduce: Literal["mean", "max"] = "mean",
) -> npt.NDArray[_Float]: ...
def top_k(scores: npt.NDArray[_Float], k: int) -> npt.NDArray[np.int64]: ...
def draw_keys(
    scores: npt.NDArray[_Float],
    numbers: Optional[npt.NDArray[np.int64]],
    offset: int,
    seed: int,
    sampling: Literal["power", "softmax"],
    beta: float,
) -> npt.NDArray[np.float64]: ...
def draw_top_k(
    scores: npt.NDArray[_Float],
    numbers: Optional[npt.NDArray[np.int64]],
    offset: int,
    seed: int,
    sampling: Literal["power", "softmax"],
    beta: float,
    k: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]: ...
def rank_draw_candidates(
    values: npt.NDArray[np.float64],
    numbers: Optional[npt.NDArray[np.int64]],
    offset: int,
    seed: int,
    beta: float,
    k: int,
    codes: Optional[npt.NDArray[np.int32] | npt.NDArray[np.int64]] = None,
    groups: int = 1,
    limit: int = ...,
) -> Optional[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    """A sampling="rank" draw's candidates without a sort of the pool: (positions
    ascending, exact competition ranks) of the rows that may be among each group's k
    highest keys (NaN scores never), and each group's rows scoring a number; None past
    `limit` candidates (`pickaxe.per_row.rank_candidates`)."""
    ...
def group_top_k(
    keys: npt.NDArray[_Float],
    codes: npt.NDArray[np.int32] | npt.NDArray[np.int64],
    offset: int,
    groups: int,
    k: int,
    ties: Optional[npt.NDArray[np.int64]] = None,
    floors: Optional[npt.NDArray[_Float]] = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...

_Metric = Literal["l2", "cosine", "ip"]

def knn_update(
    gram: npt.NDArray[_Float],
    q_norms: npt.NDArray[_Float],
    r_norms: npt.NDArray[_Float],
    id_offset: int,
    metric: _Metric,
    ids: npt.NDArray[np.int64],
    dists: npt.NDArray[_Float],
) -> None:
    """Merge a Gram block g = Q_b · R_cᵀ (b, mc) into the running k nearest.

    ``q_norms`` (b,) and ``r_norms`` (mc,) are ‖q‖₂, ‖r‖₂ (sign ignored); column j is the
    reference row ``id_offset + j``. ``ids`` (b, k) int64 and ``dists`` (b, k), same dtype
    as ``gram``, are updated in place, each row ascending by (distance, id); a fresh state
    is ids = -1, dists = +inf. Distance of g: l2 → max(‖q‖² + ‖r‖² − 2g, 0) (squared);
    cosine → 1 − g / (‖q‖‖r‖), 1 for a zero norm; ip → 1 − g. NaN never enters.
    """

def pair_distances(
    queries: npt.NDArray[_Float],
    reference: npt.NDArray[_Float],
    ids: npt.NDArray[np.int64],
    metric: _Metric,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[_Float]]:
    """Exact distances of the pairs (i, ids[i, j]) computed directly (float64 sums), each
    row re-sorted by (distance, id): (ids, distances), both (n, k). l2 → ‖q − r‖₂;
    cosine → 1 − cos in [0, 2] (1 for a zero vector); ip → 1 − q·r; id -1 → +inf, last."""

def knn_direct(
    queries: npt.NDArray[_Float],
    reference: npt.NDArray[_Float],
    k: int,
    metric: _Metric,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[_Float]]:
    """The k nearest reference rows of every query (k <= reference rows) from the direct
    distance of every pair, computed as ``pair_distances`` does (the same bits), each row
    sorted by (distance, id): (ids, distances), both (n, k)."""

def knn_direct_scores(
    queries: npt.NDArray[_Float],
    reference: npt.NDArray[_Float],
    k: int,
    metric: _Metric,
    aggregate: Literal["mean", "kth"],
) -> npt.NDArray[_Float]:
    """One score per query (n,) from its k nearest reference rows (1 <= k <= reference
    rows) by the direct distance of every pair, as ``knn_direct`` finds them, with one
    selection per query instead of a sort: "mean" (the k distances summed in float64) or
    "kth" (``knn_direct``'s last column, exactly)."""

def graph_search(
    level0: npt.NDArray[np.uint32],
    upper: npt.NDArray[np.uint32],
    upper_start: npt.NDArray[np.uint64],
    levels: npt.NDArray[np.uint32],
    layout: tuple[int, int, int, int, int, int, int],
    metric: _Metric,
    queries: npt.NDArray[np.float32],
    k: int,
    ef: int,
    threads: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """hnswlib's knn_query on an hnswlib graph in its saved layout (pickaxe._graph.Graph):
    level0 (n, W) words, upper the size words and upper-level lists, per element its level
    and the word of its level-1 list; layout = (offset_data, label_offset, dim, max_m0,
    max_m, entry point, max level), in words. Returns (labels, distances), both (n, k),
    nearest first; distances as hnswlib's (l2 squared); rows short of k end in (-1, inf).
    threads = 1 runs on one thread, more on pickaxe's pool. A malformed graph is a
    ValueError."""

def kcenter_greedy(
    points: npt.NDArray[_Float],
    size: int,
    min_dist: npt.NDArray[_Float],
    metric: Literal["l2", "cosine"],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[_Float]]:
    """k-center greedy from ``min_dist`` (N,) (copied in; +inf: no center yet, -inf:
    already a center): (picks (s,) int64 in order, each pick's distance to its nearest
    center when picked (s,))."""
def build_info() -> dict[str, Any]: ...
def set_num_threads(n: int) -> None: ...
def set_simd_level(level: Literal["portable", "avx2", "avx512"]) -> None: ...
def localization_disagreement(
    boxes: npt.NDArray[_Float],
    classes: npt.NDArray[_Float],
    logits: bool,
    offsets: npt.NDArray[np.int64],
    member_boxes: npt.NDArray[_Float],
    member_classes: npt.NDArray[_Float],
    member_logits: bool,
    member_offsets: npt.NDArray[np.int64],
    members: int,
    iou_threshold: float = 0.5,
    per_class: bool = False,
    reduce: Literal["max", "mean", "sum", "none"] = "max",
    objectness: Optional[npt.NDArray[_Float]] = None,
) -> npt.NDArray[_Float]:
    """Localisation disagreement (rust/pickaxe-core/src/iou.rs): reference boxes (B, 4)
    with class scores (B, C) and offsets (N + 1,), member boxes (B', 4), (B', C) with
    member_offsets (N·M + 1,) image-major then member. Every float array has the dtype
    of ``boxes``. Returns (N,), or (B,) per box with reduce "none"."""
def score_pixels(
    field: Literal["confidences", "logits", "query_by_committee", "mc_dropout"],
    score: str,
    x: npt.NDArray[_Float],
    class_axis: int,
    reduce: Literal["mean", "max", "top", "none"],
    q: float = 1.0,
    mask: Optional[npt.NDArray[np.bool_]] = None,
    nan_policy: Literal["raise", "omit"] = "raise",
    **options: Unpack[_ScoreOptions],
) -> npt.NDArray[_Float]:
    """Per-pixel score of (N, C, H, W) / (N, H, W, C) or stacked (N, M, ...) fields,
    reduced per image (N,), or the (N, H, W) maps with reduce "none"."""
def score_boxes(
    field: Literal["confidences", "logits", "query_by_committee", "mc_dropout"],
    score: str,
    boxes: npt.NDArray[_Float],
    offsets: npt.NDArray[np.int64],
    reduce: Literal["max", "mean", "sum"],
    objectness: Optional[npt.NDArray[_Float]] = None,
    nan_policy: Literal["raise", "omit"] = "raise",
    **options: Unpack[_ScoreOptions],
) -> npt.NDArray[_Float]:
    """Per-box score of stacked (B, C) / (B, M, C) boxes reduced per image over offsets."""
def kmeans(
    x: npt.NDArray[_Float],
    n_clusters: int,
    *,
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-4,
    init_rows: Optional[int] = None,
    fit_rows: Optional[int] = None,
    local_trials: Optional[int] = None,
    threads: Optional[int] = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[_Float], float, int, bool]:
    """k-means of the rows of x (N, D), C-contiguous: k-means++ (2 + ⌊ln k⌋ local trials)
    on ``init_rows`` sampled rows, Lloyd on ``fit_rows`` sampled rows (None: all), every
    row labelled at the end. Returns (labels (N,), centers (k, D), inertia, iterations,
    converged). Deterministic for a seed whatever ``threads``."""

def badge_seeds(
    probabilities: npt.NDArray[_Float],
    embeddings: npt.NDArray[_Float],
    k: int,
    *,
    seed: int = 0,
    threads: Optional[int] = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """BADGE's k-means++ seeding over g = (p − e_ŷ) ⊗ h from the factors (both (N, ·),
    C-contiguous, one dtype): (picks (k,), each pick's D² when picked, +inf first)."""

def typicality(
    x: npt.NDArray[_Float],
    labels: npt.NDArray[np.int64],
    k: int,
    *,
    clusters: Optional[npt.NDArray[np.int64]] = None,
    threads: Optional[int] = None,
) -> npt.NDArray[np.float64]:
    """1 / mean euclidean distance to the min(k, m − 1) nearest other rows of the row's
    cluster (exact); +inf alone or at distance 0; NaN for rows not computed (a negative
    label, or a cluster not in ``clusters``)."""

def most_typical(
    x: npt.NDArray[_Float],
    labels: npt.NDArray[np.int64],
    k: int,
    clusters: npt.NDArray[np.int64],
    *,
    threads: Optional[int] = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Per cluster of ``clusters``: the row of highest `typicality` (ties: the lowest row)
    and that typicality, bit for bit; (-1, NaN) for a cluster with no row."""

# k-means in pieces (pickaxe.ray.shards); i128 values as (…, 2) int64 (low, high) pairs,
# exact sums as (n, 67, 2) of them.
def kmeans_sample(
    n: int, fit_rows: int, init_rows: int, seed: int
) -> tuple[Optional[npt.NDArray[np.int64]], Optional[npt.NDArray[np.int64]], int]:
    """kmeans' fit and seeding rows (ascending; None: all) and the seeding's random state."""

def kmeans_seed(
    x: npt.NDArray[_Float], k: int, state: int, *, local_trials: Optional[int] = None, threads: Optional[int] = None
) -> npt.NDArray[_Float]:
    """k-means++ over every row of x from the random state: (k, D) centres."""

def kmeans_moments(
    x: npt.NDArray[_Float], mean: Optional[npt.NDArray[np.float64]] = None, *, threads: Optional[int] = None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Per column: largest |value| and exact Σ value (with mean: Σ (value − mean)²)."""

def kmeans_stats(
    max_abs: npt.NDArray[np.float64], dev: npt.NDArray[np.int64], m: int, tol: float
) -> tuple[npt.NDArray[np.float64], float]:
    """(fixed-point scales of the centres' sums, absolute tolerance)."""

def kmeans_step(
    x: npt.NDArray[_Float],
    centers: npt.NDArray[_Float],
    scales: npt.NDArray[np.float64],
    labels: npt.NDArray[np.int64],
    *,
    threads: Optional[int] = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int]:
    """One Lloyd step (labels updated in place): (counts, fixed-point sums (k, D, 2), changed)."""

def kmeans_farthest(
    x: npt.NDArray[_Float],
    centers: npt.NDArray[_Float],
    labels: npt.NDArray[np.int64],
    positions: npt.NDArray[np.int64],
    top: int,
    *,
    threads: Optional[int] = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[_Float]]:
    """The top rows farthest from their centres: (squared distances, positions, labels, rows)."""

def kmeans_centers(
    old: npt.NDArray[_Float],
    counts: npt.NDArray[np.int64],
    sums: npt.NDArray[np.int64],
    scales: npt.NDArray[np.float64],
    far_mind: npt.NDArray[np.float64],
    far_positions: npt.NDArray[np.int64],
    far_labels: npt.NDArray[np.int64],
    far_rows: npt.NDArray[_Float],
) -> tuple[npt.NDArray[_Float], float]:
    """The centres from a step's combined counts and sums, empty clusters re-seeded: (centres, shift)."""

def kmeans_label(
    x: npt.NDArray[_Float], centers: npt.NDArray[_Float], *, threads: Optional[int] = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Every row's nearest centre and the exact inertia (1, 67, 2)."""

def int128_sum(parts: list[npt.NDArray[np.int64]]) -> npt.NDArray[np.int64]:
    """Element-wise exact sum of (a, b, 2) arrays of i128 (low, high) pairs."""

def exact_values(sums: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """The f64 values of exact sums (n, 67, 2)."""
