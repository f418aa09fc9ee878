"""A column of the pool held by Ray actors, block by block, and k-means run where it is.

`Shards` loads one column (the embeddings) of every row that passes the query into a few
Ray actors (`Shard`): the blocks a gather's Ray tasks return go, in pool order, to the
actors in contiguous runs, and each actor keeps its rows as one (n_i, D) array for the
whole run. The driver knows every row's key and position (its index among the gathered
rows in key order, the row the in-process miner sees) and no embedding.

`Shards.kmeans` is `pickaxe.clustering.kmeans` with the work where the rows are:

- driver: the sample of fit and seeding rows (`_core.kmeans_sample`, the same seeded
  permutation), then k-means++ seeding over the seeding rows, fetched from the actors
  (``method="auto"``: at most max(10,000, 20·k) rows; ``"full"``: every row);
- actors, each over its own fit rows (gathered once): the column maxima and exact sums
  (the tolerance and the fixed-point scales), then per Lloyd iteration the assignment
  and per-cluster counts and fixed-point sums, returned as k·D integers;
- driver: the sums added (exactly, as integers), the centres updated, empty clusters
  re-seeded from the farthest rows (each actor sends its k farthest), the centres
  broadcast back;
- actors: every row labelled against the final centres, with the exact inertia.

Every sum is exact (see rust/pickaxe-core/src/kmeans.rs), so the result equals the
in-process one bit for bit whatever the blocks and the actors.
"""

from __future__ import annotations

import pickle
from typing import Any, Optional

import numpy as np

from .. import _core
from ..clustering import KMeans, sample_sizes, check_kmeans_arguments
from ..errors import InvalidInputError
from ..index import embeddings_array


class Shard:
    """One actor's rows (see the module). Methods are called by `Shards` in order:
    ``keys``, ``place``, then the k-means steps."""

    def __init__(self, field: str, tables: list, threads: Optional[int]) -> None:
        import ray

        from ..pools.arrow import field_to_numpy
        from .backend import key_array
        from .worker import ERROR, KEY

        if threads is not None:
            import pickaxe

            pickaxe.set_num_threads(threads)
        self.field = field
        tables = [t for t in ray.get(list(tables)) if t.num_rows]
        #: (first key, pickled exception) of the first bad block, if any
        self.error = None
        bad = [t for t in tables if ERROR in t.column_names]
        if bad:
            first = min(bad, key=lambda t: t.column(KEY)[0].as_py())
            self.error = (first.column(KEY)[0].as_py(), first.column(ERROR)[0].as_py())
            tables = []
        self._keys = np.concatenate([key_array(t.column(KEY)) for t in tables]) if tables else np.empty(0, np.int64)
        parts = [field_to_numpy(field, t.column(field)) for t in tables]
        self.x: Any = np.concatenate(parts) if len(parts) > 1 else (parts[0] if parts else None)
        self.pos = np.empty(0, np.int64)

    def keys(self) -> tuple[np.ndarray, Optional[tuple]]:
        return self._keys, self.error

    def dtype(self) -> Optional[np.dtype]:
        return None if self.x is None else np.result_type(self.x.dtype, np.float32)

    def place(self, who: str, positions: np.ndarray, dtype: Any, dim: Optional[int]) -> Optional[Exception]:
        """Rows get their positions (rows reordered by position), the dtype the driver
        chose, and are checked (finite, `dim` columns): the first bad row's error, naming
        its position."""
        order = np.argsort(positions, kind="stable")
        self.pos = np.ascontiguousarray(positions[order], dtype=np.int64)
        if self.x is None:
            return None
        x = self.x[order] if not bool(np.all(order[1:] > order[:-1])) else self.x
        try:
            x, _ = embeddings_array(who, self.field, x, dim)
        except InvalidInputError as e:
            return e.with_row(int(self.pos[e.row])) if e.row is not None else e
        except (ValueError, TypeError) as e:  # the same for every actor: a shape, a dtype
            return e
        self.x = np.ascontiguousarray(x, dtype=dtype)
        return None

    def append(self, positions: np.ndarray, x: np.ndarray) -> None:
        """More rows (a labeled reference) after these, at these positions."""
        self.x = x if self.x is None else np.concatenate([self.x, x.astype(self.x.dtype, copy=False)])
        self.pos = np.concatenate([self.pos, positions.astype(np.int64)])

    def rows(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows at these positions (sorted) that this actor holds: (positions, rows)."""
        hit = np.isin(self.pos, positions, assume_unique=True)
        return self.pos[hit], self.x[hit]

    def fit_rows(self, positions: Optional[np.ndarray]) -> int:
        """Lloyd runs on the rows at `positions` (None: all), gathered once."""
        if positions is None:
            self.fx, self.fpos = self.x, self.pos
        else:
            hit = np.isin(self.pos, positions, assume_unique=True)
            self.fx, self.fpos = np.ascontiguousarray(self.x[hit]), self.pos[hit]
        self.labels = np.full(len(self.fpos), -1, dtype=np.int64)
        return len(self.fpos)

    def moments(self, mean: Optional[np.ndarray] = None) -> Optional[tuple]:
        if not len(self.fpos):
            return None
        return _core.kmeans_moments(self.fx, mean)

    def step(self, centers: np.ndarray, scales: np.ndarray) -> Optional[tuple]:
        if not len(self.fpos):
            return None
        return _core.kmeans_step(self.fx, centers, scales, self.labels)

    def farthest(self, centers: np.ndarray, top: int) -> Optional[tuple]:
        if not len(self.fpos):
            return None
        return _core.kmeans_farthest(self.fx, centers, self.labels, self.fpos, top)

    def label(self, centers: np.ndarray) -> Optional[tuple]:
        if not len(self.pos):
            return None
        self.final, inertia = _core.kmeans_label(self.x, centers)
        return self.pos, self.final, inertia

    def cluster_rows(self, clusters: Optional[np.ndarray], below: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows (positions below `below`) whose final label is among `clusters` (None:
        any): (positions, rows)."""
        if not len(self.pos):
            return self.pos, np.empty((0, 0))
        hit = self.pos < below
        if clusters is not None:
            hit &= np.isin(self.final, clusters)
        return self.pos[hit], self.x[hit]


class Shards:
    """The driver's side: the actors, every row's key (ascending: position i is the i-th
    key) and the column's dtype. Use as a context manager (the actors end with it)."""

    def __init__(self, backend: Any, field: str, actors: Optional[int] = None, threads: Optional[int] = None) -> None:
        from .backend import load_ray

        ray = load_ray()
        self.who = backend.who
        refs = backend.gather_refs([field])
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        count = max(1, min(len(refs), actors or cpus))
        remote = ray.remote(Shard).options(num_cpus=min(1.0, cpus / count))
        cut = np.linspace(0, len(refs), count + 1).astype(int)
        # a list of refs inside a list: the actor fetches them itself, from where they are
        self.actors = [remote.remote(field, refs[a:b], threads) for a, b in zip(cut[:-1], cut[1:])]
        got = ray.get([a.keys.remote() for a in self.actors])
        errors = [e for _, e in got if e is not None]
        if errors:  # the pool's first bad block, as `gather` raises it
            raise pickle.loads(min(errors, key=lambda e: e[0])[1])
        keys = [k for k, _ in got]
        self.keys, positions = _positions(self.who, keys)
        self.n = len(self.keys)
        self._positions = positions
        self.dtype: Any = None
        self._extra = 0

    def __enter__(self) -> "Shards":
        return self

    def __exit__(self, *exc: Any) -> None:
        from .backend import load_ray

        ray = load_ray()
        for a in self.actors:
            ray.kill(a)

    def _get(self, calls: list) -> list:
        from .backend import load_ray

        return load_ray().get(calls)

    def check(self, who: str, dim: Optional[int] = None) -> None:
        """Every row placed and checked (finite, `dim` columns) as `embeddings_array`
        checks them for `who`: raises the error of the first bad row (lowest position, as
        in memory)."""
        dtypes = [t for t in self._get([a.dtype.remote() for a in self.actors]) if t is not None]
        self.dtype = np.result_type(*dtypes) if dtypes else np.dtype(np.float64)
        errors = self._get([a.place.remote(who, p, self.dtype, dim) for a, p in zip(self.actors, self._positions)])
        bad = [e for e in errors if e is not None]
        if bad:
            raise min(bad, key=lambda e: e.row if isinstance(e, InvalidInputError) and e.row is not None else -1)

    def append(self, x: np.ndarray) -> None:
        """Rows after the pool's (a labeled reference), on the last actor, at positions
        n, n + 1, ..."""
        at = self.n + self._extra + np.arange(len(x), dtype=np.int64)
        self._get([self.actors[-1].append.remote(at, np.ascontiguousarray(x, dtype=self.dtype))])
        self._extra += len(x)

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """The rows at these sorted positions, in that order."""
        parts = self._get([a.rows.remote(positions) for a in self.actors])
        return _in_order(parts, len(positions), self.dtype)

    def kmeans(
        self,
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
        """`pickaxe.clustering.kmeans` of every row held (the pool's, then the appended
        ones), run on the actors (see the module): the same result, labels by position."""
        who = f"{self.who} kmeans()"
        n = self.n + self._extra
        k, seed, max_iter, tol, method = check_kmeans_arguments(who, n, n_clusters, seed, max_iter, tol, method)
        fit, init = sample_sizes(who, n, k, method, init_rows, fit_rows)
        fit_pos, init_pos, state = _core.kmeans_sample(n, fit, init, seed)
        x_init = self.rows(np.arange(n, dtype=np.int64) if init_pos is None else init_pos)
        centers = _core.kmeans_seed(x_init, k, state, threads=threads)
        del x_init
        m = sum(self._get([a.fit_rows.remote(fit_pos) for a in self.actors]))
        parts = [p for p in self._get([a.moments.remote() for a in self.actors]) if p is not None]
        max_abs = np.maximum.reduce([p[0] for p in parts])
        mean = _core.exact_values(_core.int128_sum([p[1] for p in parts])) / m
        dev = _core.int128_sum([p[1] for p in self._get([a.moments.remote(mean) for a in self.actors]) if p is not None])
        scales, tol_abs = _core.kmeans_stats(max_abs, dev, m, tol)
        iterations, converged = 0, False
        while iterations < max_iter:
            iterations += 1
            steps = [s for s in self._get([a.step.remote(centers, scales) for a in self.actors]) if s is not None]
            counts = np.sum([s[0] for s in steps], axis=0)
            sums = _core.int128_sum([s[1] for s in steps])
            changed = sum(s[2] for s in steps)
            far = _farthest(self._get([a.farthest.remote(centers, k) for a in self.actors]) if (counts == 0).any() else [], k, centers)
            centers, shift = _core.kmeans_centers(centers, counts, sums, scales, *far)
            if changed == 0 or shift <= tol_abs:
                converged = True
                break
        labels = np.empty(n, dtype=np.int64)
        inertia = []
        for got in self._get([a.label.remote(centers) for a in self.actors]):
            if got is not None:
                labels[got[0]] = got[1]
                inertia.append(got[2])
        total = float(_core.exact_values(_core.int128_sum(inertia))[0])
        return KMeans(labels, centers, total, iterations, converged)

    def cluster_rows(self, clusters: Optional[np.ndarray], below: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows at positions below `below` labelled (by the last `kmeans`) with one of
        `clusters` (None: every row): (positions ascending, rows)."""
        parts = self._get([a.cluster_rows.remote(clusters, below) for a in self.actors])
        pos = np.concatenate([p for p, _ in parts])
        order = np.argsort(pos, kind="stable")
        return pos[order], _in_order(parts, len(pos), self.dtype)


def _positions(who: str, keys: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """All keys ascending (a key's position is its index there) and each actor's keys'
    positions; a key twice is the ValueError `gather` raises."""
    every = np.concatenate(keys) if keys else np.empty(0, np.int64)
    order = np.argsort(every, kind="stable")
    ranked = every[order]
    if len(ranked) > 1:
        dup = np.flatnonzero(ranked[1:] == ranked[:-1])
        if dup.size:
            v = ranked[int(dup[0])]
            v = v.item() if isinstance(v, np.generic) else v
            raise ValueError(f"{who}: the id {v!r} names more than one row; ids must be unique")
    position = np.empty(len(every), dtype=np.int64)
    position[order] = np.arange(len(every), dtype=np.int64)
    cut = np.cumsum([0] + [len(k) for k in keys])
    return ranked, [position[a:b] for a, b in zip(cut[:-1], cut[1:])]


def _in_order(parts: list, count: int, dtype: Any) -> np.ndarray:
    """The (positions, rows) parts of several actors as one array in position order."""
    pos = np.concatenate([p for p, _ in parts])
    width = max((r.shape[1] for p, r in parts if len(p)), default=0)
    out = np.empty((count, width), dtype=dtype)
    order = np.argsort(pos, kind="stable")
    at = 0
    placed = np.empty(len(pos), dtype=np.int64)
    placed[order] = np.arange(len(pos))
    for p, r in parts:
        if len(p):
            out[placed[at : at + len(p)]] = r
        at += len(p)
    return out


def _farthest(parts: list, k: int, centers: np.ndarray) -> tuple:
    """The k farthest rows over the actors' own k farthest: farthest first, ties by
    position (as in process)."""
    parts = [p for p in parts if p is not None and len(p[0])]
    if not parts:
        return (np.empty(0), np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, centers.shape[1]), centers.dtype))
    mind, pos, lab, rows = (np.concatenate([p[i] for p in parts]) for i in range(4))
    top = np.lexsort((pos, -mind))[:k]
    return mind[top], pos[top], lab[top], np.ascontiguousarray(rows[top])
