"""Nearest neighbours of pool rows in a reference (the training or labeled embeddings):
exact search or an hnswlib graph, chosen by a cost model of both; the base of the miners
that score rows by their neighbours."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
from numpy.typing import ArrayLike

from .. import _checks as checks
from ..errors import InvalidInputError
from ..index import ReferenceIndex, check_k, check_k_fits, check_metric, embeddings_array
from ..pools import Pool, PoolSource
from .base import Miner


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


def pool_rows(source: PoolSource) -> int:
    """Rows a mining run will score: exact when known, else the pool's total (a bound)."""
    return source.n_rows if source.n_rows is not None else source.total_rows()


def check_search(who: str, search: Any) -> str:
    return checks.choice(who, "search", search, ("auto", "exact", "hnsw"))

def reference_metric(who: str, reference: Any, metric: Optional[str], default: str) -> str:
    if isinstance(reference, ReferenceIndex):
        if metric is not None and metric != reference.metric:
            raise ValueError(
                f"{who}: metric={metric!r} but the ReferenceIndex was built with "
                f"metric={reference.metric!r}"
            )
        return reference.metric
    return check_metric(who, metric if metric is not None else default)


def _renamed(e: InvalidInputError, who: str, name: str) -> InvalidInputError:
    """A bad reference row, named as the argument it came in (e.g. ``examples``)."""
    return InvalidInputError(kind="row", field=name, row=e.row, reason=e.reason, prefix=f"{who}: ")


class Neighbours:
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
        name: str = "reference",
    ) -> None:
        self.name = name  # the argument the rows came in, for the errors
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
            try:
                self.array, self.norms = embeddings_array(who, name, reference, field="reference")
            except InvalidInputError as e:  # the core knows the field as "reference"
                raise e if name == "reference" else _renamed(e, who, name) from None
            if self.array.shape[0] == 0:
                raise ValueError(f"{who}: {name} is empty (shape {self.array.shape})")
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

    def search(
        self, x: np.ndarray, norms: np.ndarray, k: int, method: str, ef: Optional[int] = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest reference rows of the rows of ``x``; ``ef`` overrides the graph's
        search ef (ignored by exact search)."""
        from .._exact import exact_knn

        if method == "exact":
            ref, ref_norms = self.exact_reference()
            return exact_knn(x, ref, k, self.metric, q_norms=norms, r_norms=ref_norms)
        return self.ensure_index()._search(x, k, norms, ef=ef)

    def scores(self, x: np.ndarray, norms: np.ndarray, k: int, method: str, aggregate: str) -> np.ndarray:
        """One score per row of ``x`` from its k nearest reference rows: their distances'
        mean (summed in float64) or the k-th (`pickaxe._exact.knn_scores`; a graph's
        distances aggregated the same way)."""
        from .._exact import aggregate_distances, knn_scores

        if method == "exact":
            ref, ref_norms = self.exact_reference()
            return knn_scores(x, ref, k, self.metric, aggregate, q_norms=norms, r_norms=ref_norms)
        _, dist = self.ensure_index()._search(x, k, norms)
        return aggregate_distances(dist, aggregate)

    def check_dim(self, who: str, field: str, shape: tuple) -> None:
        if len(shape) == 2 and shape[1] is not None and shape[1] != self.dim:
            raise ValueError(
                f"{who}: the pool's {field} have {shape[1]} dimensions; {self.name} has {self.dim}"
            )


class NeighbourMiner(Miner):
    """A miner that scores pool rows by their nearest reference rows: the reference,
    metric, k and search choice are checked and held the same way for each."""

    fields = ("embeddings",)
    default_metric = "cosine"
    ships_state = True

    def _init_neighbours(
        self,
        reference: Reference,
        k: Any,
        metric: Optional[str],
        search: Any,
        threads: Optional[int],
        seed: int,
        name: str = "reference",
    ) -> None:
        who = f"{type(self).__name__}()"
        self.k = check_k(who, k)
        self.metric = reference_metric(who, reference, metric, self.default_metric)
        self.search = check_search(who, search)
        graph, costs = self._graph()
        self._neighbours = Neighbours(who, reference, self.metric, threads, seed, graph=graph, costs=costs, name=name)
        self._check_k_fits(who)
        self._method = "exact"

    def _check_k_fits(self, who: str) -> None:
        """k of the reference's rows must exist: a larger k is a ValueError naming both."""
        check_k_fits(who, self.k, self._neighbours.size, self._neighbours.name)

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

    def _repr(self, extra: str = "") -> str:
        nb = self._neighbours
        return (
            f"{type(self).__name__}(size={self.size}, k={self.k}, metric={self.metric!r}, "
            f"{extra}{nb.name}={nb.size} rows)"
        )

    def prepare(self, source: PoolSource, field: Optional[str]) -> None:
        self._choose_search(source, field)

    def _choose_search(self, source: PoolSource, field: Optional[str]) -> None:
        """Check the pool's dimension, choose exact search or the graph for its rows, and
        build the graph once, before any batch (or worker) needs it."""
        self._check_dim(source, field)
        self._method = self._neighbours.method_for(pool_rows(source), self.search)
        if self._method == "hnsw":
            self._neighbours.ensure_index()

    def _search_info(self) -> dict[str, Any]:
        """How a batch's neighbours were found: ``selection.info``'s search, metric and k."""
        return {"search": self._method, "metric": self.metric, "k": self.k}
