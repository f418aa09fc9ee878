"""`ReferenceIndex`: nearest-neighbour search over the training set's embeddings.

Built once from the labeled (training) embeddings, saved, loaded, and used by every
embedding miner. Large references get an hnswlib graph; tiny ones (at most
``EXACT_MAX_ROWS`` rows) are searched exactly, which is both faster and exact there.
hnswlib only builds the graph: pickaxe searches it (`pickaxe._graph`), in hnswlib's layout
and as hnswlib would, with SIMD distances chosen at run time.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

from . import _blas
from . import _checks as checks
from . import _core
from ._fields import as_float_array
# The file format and its checks live in pickaxe.index_file (docs/index-format.md).
from .index_file import FORMAT, FORMAT_VERSION, META, MEMBERS, METRICS, read_index
from .index_file.graph import read_graph

__all__ = ["ReferenceIndex", "METRICS"]

#: References of at most this many rows are searched exactly (no graph): a query against
#: an hnswlib graph visits a few thousand vectors anyway, and exact search is exact.
EXACT_MAX_ROWS = 4096

#: The smallest search ef, and how it grows with k. hnswlib's default ef = 10 gave
#: recall@10 = 0.72 on a clustered 100,000 x 384 reference; on benches/bench_diversity.py's
#: (100 clusters, 100,000 x 384, cosine) recall@10 was 0.973 at ef = 64, 0.991 at 96 and
#: 0.997 at 128. ef = max(100, 6k) keeps recall@10 >= 0.98 there.
EF_MIN = 100
EF_PER_K = 6

#: Queries are searched in blocks of this many rows, so the float32 copy of a float64 or
#: strided pool stays small (and a progress bar moves).
QUERY_BLOCK_ROWS = 4096
#: Rows added to the graph per call when building, for the same reason (16,384 rows took
#: 4-9 s to add at 200,000 x 128). The graph is the same: rows go in in order either way.
BUILD_BLOCK_ROWS = 2048
#: Graph searches of at least this many (query, ef, dimension) steps show a progress bar on
#: a terminal: about 5-10 s on one core (10,000 queries at ef = 100, D = 384, 3.8e8 steps,
#: took 1.1-2.3 s against 100,000 rows in benches/bench_graph_search.py).
PROGRESS_GRAPH_WORK = 1 << 31
#: Searches of at least this many queries run in an order that keeps nearby
#: queries together: each query's nearest of LOCALITY_PIVOTS reference rows (a sample,
#: one matrix product), queries grouped by it. Consecutive searches then walk the same
#: part of the graph while it is in cache, and every answer is the same (each query is
#: searched alone). On benches/bench_diversity.py's 50,000 x 64 references (one thread,
#: M = 16, ef 25 and 36) the LOF fit's 50,000 searches took 0.62 s instead of 1.1-1.3 s
#: and 20,000 pool queries 0.38 s instead of 0.68 s; the grouping cost 0.1 s and 0.015 s.
LOCALITY_MIN_ROWS = 1024
LOCALITY_PIVOTS = 256


def default_threads() -> int:
    return int(_core.build_info()["threads"])


def check_metric(who: str, metric: Any) -> str:
    return checks.choice(who, "metric", metric, METRICS)


def check_k(who: str, k: Any) -> int:
    return checks.integer(who, "k", k, 1)


def check_k_fits(who: str, k: int, size: int, name: str = "reference") -> int:
    """k neighbours must exist among the `size` rows: a larger k is an error, not a
    silent clamp (the scores of a clamped k are those of a smaller one)."""
    if k > size:
        raise ValueError(f"{who}: k={k} is more than the {size} rows of the {name}; use k <= {size}")
    return k


def check_positive_int(who: str, name: str, value: Any) -> int:
    return checks.integer(who, name, value, 1)


def embeddings_array(
    who: str, name: str, x: Any, dim: Optional[int] = None, field: str = "embeddings"
) -> tuple[np.ndarray, np.ndarray]:
    """`x` as a 2-D float array whose rows are all finite, and the rows' L2 norms.

    The norms come from the same Rust pass that checks the values: a NaN or infinite
    value raises ValueError naming `field`, the row and the value's position.
    """
    arr = as_float_array(who.removesuffix("()"), name, x, 2, "(N, D)")  # it adds the ()
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(
            f"{who}: {name} has {arr.shape[1]} dimensions per row (shape {arr.shape}); "
            f"the reference has {dim}"
        )
    if arr.shape[1] == 0:
        raise ValueError(f"{who}: {name} has no dimensions (shape {arr.shape})")
    norms = -_core.score_rows(field, "norm", arr, "raise")
    return arr, norms


class ReferenceIndex:
    """Nearest-neighbour search over a reference set (the labeled data's embeddings).

    ``metric``: ``"cosine"`` (distance 1 − cos), ``"l2"`` (euclidean distance) or ``"ip"``
    (1 − ⟨q, r⟩, hnswlib's convention). A reference of more than ``EXACT_MAX_ROWS`` rows
    gets an hnswlib graph built with ``M`` and ``ef_construction`` on ``threads`` threads
    (default: pickaxe's thread count) from ``seed``; a single-threaded build is
    reproducible. Smaller references are searched exactly.

    pickaxe searches the graph itself, as hnswlib's ``knn_query`` does (the same
    neighbours up to float rounding) but with SIMD distances chosen at run time, on
    pickaxe's threads (``threads=1``: one) with Ctrl-C honoured; the graph is held once, in
    hnswlib's layout. Search uses ``ef = max(ef, k)`` if ``ef`` is given, else
    ``max(100, 6k)``, which keeps recall@10 ≥ 0.98 on clustered data (hnswlib's default
    ef = 10 does not).

    embeddings: (M, D) real, finite. ``query`` returns ``(ids, distances)``, both (n, k)
    for k <= M, nearest first.

    >>> ref = np.random.default_rng(0).normal(size=(100, 8))
    >>> index = ReferenceIndex(ref, metric="l2")
    >>> ids, dist = index.query(ref[:2], k=3)
    >>> ids[:, 0].tolist(), dist[:, 0].tolist()
    ([0, 1], [0.0, 0.0])
    """

    def __init__(
        self,
        embeddings: ArrayLike,
        metric: str = "cosine",
        *,
        M: int = 16,
        ef_construction: int = 200,
        ef: Optional[int] = None,
        threads: Optional[int] = None,
        seed: int = 0,
    ) -> None:
        who = "ReferenceIndex()"
        self.metric = check_metric(who, metric)
        self.M = check_positive_int(who, "M", M)
        self.ef_construction = check_positive_int(who, "ef_construction", ef_construction)
        self.ef = None if ef is None else check_positive_int(who, "ef", ef)
        self.threads = None if threads is None else check_positive_int(who, "threads", threads)
        self.seed = checks.integer(who, "seed", seed, 0)
        ref, _ = embeddings_array(who, "reference", embeddings, field="reference")
        if ref.shape[0] == 0:
            raise ValueError(f"{who}: the reference is empty (shape {ref.shape})")
        self.dim = int(ref.shape[1])
        self.size = int(ref.shape[0])
        self._hnsw: Any = None
        self._exact: Optional[np.ndarray] = None
        if self.size <= EXACT_MAX_ROWS:
            # A copy: later edits to the caller's array must not change the index.
            self._exact = np.array(ref, copy=True)
        else:
            self._hnsw = self._build(ref)

    # -- construction -----------------------------------------------------------------

    def _build(self, ref: np.ndarray) -> Any:
        """hnswlib builds the graph; its saved bytes, read back through `load`'s checks,
        are what pickaxe searches, and hnswlib's own copy is freed before they are read."""
        import hnswlib

        index = hnswlib.Index(space=self.metric, dim=self.dim)
        index.init_index(
            max_elements=self.size,
            ef_construction=self.ef_construction,
            M=self.M,
            random_seed=self.seed,
        )
        threads = self.threads or default_threads()
        for start in range(0, self.size, BUILD_BLOCK_ROWS):
            stop = min(start + BUILD_BLOCK_ROWS, self.size)
            block = np.ascontiguousarray(ref[start:stop], dtype=np.float32)
            index.add_items(block, np.arange(start, stop), num_threads=threads)
        with tempfile.TemporaryDirectory(prefix="pickaxe-index-") as d:
            path = os.path.join(d, MEMBERS["hnsw"])
            index.save_index(path)
            del index
            meta = self._meta()
            meta["method"] = "hnsw"
            with open(path, "rb") as f:
                return read_graph(f, os.path.getsize(path), meta)

    @property
    def method(self) -> str:
        """``"exact"`` (small reference, searched exactly) or ``"hnsw"`` (graph)."""
        return "exact" if self._exact is not None else "hnsw"

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return (
            f"ReferenceIndex({self.size} x {self.dim}, metric={self.metric!r}, "
            f"method={self.method!r}, M={self.M}, ef_construction={self.ef_construction}, "
            f"ef={self.ef})"
        )

    def ef_for(self, k: int) -> int:
        """The search ef used for a query of k neighbours."""
        if self.ef is not None:
            return max(self.ef, k)
        return max(EF_MIN, EF_PER_K * k)

    # -- search -------------------------------------------------------------------------

    def query(self, x: ArrayLike, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest reference rows of each row of ``x``, nearest first.

        x: (n, D) real, finite; 1 <= k <= len(self) (a larger k is a ValueError).
        Returns ``ids`` (n, k) int64 (row numbers of the reference) and ``distances``
        (n, k).
        """
        who = "ReferenceIndex.query()"
        k = check_k_fits(who, check_k(who, k), self.size)
        arr, norms = embeddings_array(who, "x", x, self.dim)
        return self._search(arr, k, norms)

    def _search(
        self, arr: np.ndarray, k: int, norms: Optional[np.ndarray] = None, ef: Optional[int] = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """`query` on validated input; ``ef`` (at least k) instead of `ef_for` when given."""
        from ._exact import exact_knn, progress_blocks

        k = min(k, self.size)
        if self._exact is not None:
            return exact_knn(arr, self._exact, k, self.metric, q_norms=norms)
        n = arr.shape[0]
        ids = np.empty((n, k), dtype=np.int64)
        dists = np.empty((n, k), dtype=np.float32)
        threads = self.threads or default_threads()
        ef = self.ef_for(k) if ef is None else max(ef, k)
        long = n * ef * self.dim >= PROGRESS_GRAPH_WORK
        order = self._locality_order(arr) if n >= LOCALITY_MIN_ROWS else None
        for start in progress_blocks(n, QUERY_BLOCK_ROWS, long, "neighbours"):
            stop = min(start + QUERY_BLOCK_ROWS, n)
            rows: Any = slice(start, stop) if order is None else order[start:stop]
            block = np.ascontiguousarray(arr[rows], dtype=np.float32)
            labels, d = self._hnsw.search(block, k, ef, threads)
            if self.metric == "l2":
                # hnswlib's "l2" is the squared distance.
                np.sqrt(np.maximum(d, 0, out=d), out=d)
            short = labels[:, -1] < 0
            if short.any():
                # Fewer than k neighbours found for these rows (a graph cut apart by
                # duplicates, say; hnswlib raises there): answer them exactly instead.
                labels[short], d[short] = exact_knn(block[short], self.vectors(), k, self.metric)
            ids[rows] = labels
            dists[rows] = d
        return ids, dists

    def _locality_order(self, arr: np.ndarray) -> np.ndarray:
        """The rows of ``arr`` grouped by their nearest pivot (LOCALITY_PIVOTS reference
        rows drawn from ``seed``; nearest by the graph's metric, inner product for
        "ip"), stably: an order in which consecutive graph searches stay in one region."""
        pivots = getattr(self, "_pivots", None)
        if pivots is None:
            rng = np.random.default_rng(self.seed)
            pick = np.sort(rng.choice(self.size, min(LOCALITY_PIVOTS, self.size), replace=False))
            # float32, normalised for cosine, as the graph holds them
            pivots = self._hnsw.vectors(pick)
            half = 0.5 * np.einsum("ij,ij->i", pivots, pivots) if self.metric == "l2" else None
            self._pivots = pivots = (np.ascontiguousarray(pivots.T), half)
        pt, half = pivots
        label = np.empty(arr.shape[0], dtype=np.int64)
        step = 4 * QUERY_BLOCK_ROWS  # bounded float32 copies and products
        # One BLAS thread: the graph search starts right after these products, and
        # OpenBLAS's workers would spin on the cores its threads need (3,000 queries
        # against 20,000 x 128, k = 10, 2 threads: 0.087-0.107 s -> 0.071-0.079 s wall).
        with _blas.one_thread():
            for start in range(0, arr.shape[0], step):
                g = np.asarray(arr[start : start + step], dtype=np.float32) @ pt
                if half is not None:
                    g -= half  # argmax of q·p − ½‖p‖² is the nearest pivot in l2
                label[start : start + step] = np.argmax(g, axis=1)
        return np.argsort(label, kind="stable")

    def vectors(self) -> np.ndarray:
        """The reference vectors as the index holds them, (M, D). The graph keeps them as
        float32, normalised for the cosine metric (this returns a copy)."""
        if self._exact is not None:
            return self._exact
        return self._hnsw.vectors()

    # -- persistence --------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        from . import __version__

        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "pickaxe_version": __version__,
            "metric": self.metric,
            "dim": self.dim,
            "size": self.size,
            "method": self.method,
            "M": self.M,
            "ef_construction": self.ef_construction,
            "ef": self.ef,
            "threads": self.threads,
            "seed": self.seed,
        }

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the index, its metric, build parameters and search ef to one file: a zip
        of uncompressed members, ``meta.json`` and the hnswlib graph (``index.hnsw``) or
        the exact reference (``reference.npy``), described in docs/index-format.md. The
        file appears under `path` only once it is complete."""
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
                zf.writestr(META, json.dumps(self._meta(), indent=1))
                member = MEMBERS[self.method]
                if self._exact is not None:
                    buf = io.BytesIO()
                    np.save(buf, self._exact, allow_pickle=False)
                    zf.writestr(member, buf.getvalue())
                else:
                    big = self._hnsw.nbytes >= zipfile.ZIP64_LIMIT
                    with zf.open(member, "w", force_zip64=big) as out:
                        self._hnsw.write(out)
            os.replace(tmp, path)  # never leave a half-written index under `path`
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "ReferenceIndex":
        """Read an index written by `save`, checking the file before any of it is used.

        The file must be a regular file; its members, their sizes, ``meta.json`` and the
        hnswlib graph's header, links, labels and vectors are checked against each other
        before hnswlib loads the graph (docs/index-format.md lists the checks), so a
        damaged or hand-edited file is refused instead of crashing or answering wrongly.

        Parameters
        ----------
        path : str or os.PathLike
            A file written by `save`.

        Raises
        ------
        ValueError
            The path is not a regular file (a directory, FIFO or device); the file is
            truncated, corrupted or not a ReferenceIndex; it was written in another format
            version; or any field disagrees with another. The message names the member
            and the field, e.g. ``index.hnsw header enterpoint_node_``.
        FileNotFoundError, PermissionError
            The path cannot be opened.

        Examples
        --------
        >>> import tempfile, os
        >>> ref = np.random.default_rng(0).normal(size=(50, 4))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     ReferenceIndex(ref, metric="l2").save(os.path.join(d, "ref.pxi"))
        ...     loaded = ReferenceIndex.load(os.path.join(d, "ref.pxi"))
        >>> loaded.method, len(loaded), loaded.query(ref[:1], k=1)[0].tolist()
        ('exact', 50, [[0]])
        """
        path = os.fspath(path)
        who = f"ReferenceIndex.load({path!r})"
        meta, exact, graph = read_index(who, path)
        self = cls.__new__(cls)
        self.metric = meta["metric"]
        self.dim = meta["dim"]
        self.size = meta["size"]
        self.M = meta["M"]
        self.ef_construction = meta["ef_construction"]
        self.ef = meta["ef"]
        self.threads = meta["threads"]
        self.seed = meta["seed"]
        self._exact = exact
        self._hnsw = graph
        return self
