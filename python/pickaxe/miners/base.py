"""The base class of every miner: what it reads, how it is checked, what a backend needs
to know of it (`pickaxe.engine`)."""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np

from .. import _checks as checks
from .._catalog import MINERS
from .._fields import FIELD_NDIM, FIELD_SHAPES
from ..pools import Pool, PoolSource, open_pool
from ..selection import Selection

__all__ = ["Miner"]


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


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
    #: Fields read besides the one `resolve_field` picks, each with what it holds (checked
    #: with it, before any work): BADGE's penultimate-layer embeddings, the reference
    #: boxes of LocalizationMiner.
    also_reads: dict[str, str] = {}
    #: Columns of a miner that re-picks: its per-row score nominates ``nominees(k)`` rows,
    #: then `repick` chooses among them from these columns, fetched for the nominees alone.
    repick_columns: tuple[str, ...] = ()

    def __init__(
        self,
        size: int,
        field: Optional[str] = None,
        *,
        query: Optional[str] = None,
        stratify: Optional[str] = None,
        quota: Any = "equal",
        sampling: str = "top",
        beta: float = 1.0,
        seed: int = 0,
    ) -> None:
        """``stratify`` / ``quota`` (quotas by group) and ``sampling`` / ``beta`` /
        ``seed`` (a weighted draw instead of the top rows) are the batch controls of
        `pickaxe.batch_controls`, kept in ``controls``; a miner that ranks the whole pool
        (``whole_pool``) takes neither."""
        from ..batch_controls import check_controls

        who = f"{type(self).__name__}()"
        self.size = checks.integer(who, "size", size, 0)
        if field is not None and field not in self.fields:
            raise ValueError(f"{who}: field must be one of {', '.join(self.fields)}; got {field!r}")
        self.field = field
        self.query = checks.query(who, query)
        self.controls = check_controls(who, stratify, quota, sampling, beta, seed)
        if self.whole_pool and not self.controls.plain:
            raise ValueError(
                f"{who} ranks the whole pool at once, so it takes neither stratify= nor sampling=; "
                "give them to a per-row miner, or to combine()"
            )

    @property
    def name(self) -> str:
        """The miner's name on the command line (its catalogue entry's); a miner of its
        own class: the class name without ``Miner``, in snake case."""
        cls = type(self).__name__
        for spec in MINERS:
            if spec.cls == cls:
                return spec.cli
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
                self._check_ndim(name, shapes[name])
                for extra in self.also_reads:
                    self._check_present(pool, shapes, extra, name)
                return name
        need = " or ".join(f"{f} {FIELD_SHAPES[f]}" for f in wanted)
        rows = pool.n_rows if pool.n_rows is not None else "N"
        raise ValueError(
            f"{type(self).__name__} needs the field {need}; the pool has {rows} rows of "
            f"{pool.describe()}"
        )

    def _check_present(self, pool: Union[Pool, PoolSource], shapes: dict, name: str, field: str) -> None:
        if name not in shapes or len(shapes[name]) != FIELD_NDIM[name]:
            rows = pool.n_rows if pool.n_rows is not None else "N"
            raise ValueError(
                f"{type(self).__name__} needs {self.also_reads[name]} ({name} {FIELD_SHAPES[name]}) "
                f"next to {field}; the pool has {rows} rows of {pool.describe()}"
            )

    def _check_ndim(self, name: str, shape: tuple) -> None:
        if len(shape) != FIELD_NDIM[name]:
            dims = ["N" if d is None else str(d) for d in shape]
            got = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
            raise ValueError(f"{type(self).__name__}: field {name} must be {FIELD_SHAPES[name]}; the pool's is {got}")

    def columns_for(self, field: Optional[str]) -> list[str]:
        """The pool columns `score` (or `select`) reads: the field and `also_reads`."""
        return ([field] if field else []) + list(self.also_reads)

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

    def nominees(self, k: int) -> int:
        """A miner that re-picks (``repick_columns``): how many rows its score nominates
        for a batch of `k`."""
        return k

    def repick(
        self, keys: np.ndarray, values: np.ndarray, columns: dict[str, np.ndarray], k: int
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """A miner that re-picks: the positions among the nominees (`keys`, best first,
        their `values`, and `columns` of ``repick_columns``) of the `k` rows it picks, in
        order, their scores and what to add to ``info``."""
        raise TypeError(f"{type(self).__name__} does not re-pick")

    def mine(self, pool: Any) -> Selection:
        """The ``size`` highest-scoring rows of `pool` (that pass ``query``), as a
        `Selection`."""
        from ..engine import LocalBackend, mine

        return mine(self, LocalBackend(open_pool(pool, query=self.query, who=f"{type(self).__name__}.mine()")))
