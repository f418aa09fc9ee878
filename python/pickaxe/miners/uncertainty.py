"""Uncertainty miners: confusing in-domain rows, from the model's predictions (one
prediction per row, or a stack of dropout passes or committee members), and the random
baseline every miner must beat.

>>> import numpy as np, pickaxe as px
>>> confidences = np.array([[0.9, 0.1], [0.55, 0.45], [0.7, 0.3]])
>>> px.MarginMiner(size=2).mine({"confidences": confidences}).ids.tolist()
[1, 2]
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from .. import _checks as checks
from .. import scores
from .._catalog import COMMITTEE_MEASURES, DROPOUT_MEASURES
from .._fields import check_nan_policy
from ..pools import Pool
from .base import Miner

__all__ = ["RandomMiner", "LeastConfidenceMiner", "MarginMiner", "RatioMiner", "EntropyMiner", "CommitteeMiner", "MCDropoutMiner"]


# -- the baseline ----------------------------------------------------------------------


class RandomMiner(Miner):
    """Uniformly random rows: the baseline every other miner must beat.

    A row's score is a uniform number in [0, 1) hashed from ``seed`` and the row's number
    in the pool (splitmix64), so the picks do not depend on how the pool is batched.
    """

    reads_row_numbers = True

    def __init__(self, size: int, seed: int = 0, *, query: Optional[str] = None, **controls: Any) -> None:
        super().__init__(size, query=query, seed=seed, **controls)  # the draw's seed too
        self.seed = checks.integer("RandomMiner()", "seed", seed)

    def score(self, pool: Pool, field: Optional[str]) -> tuple[np.ndarray, dict[str, Any]]:
        from ..engine import uniforms

        return uniforms(pool.source_rows(np.arange(pool.n_rows)), self.seed), {"seed": self.seed}


# -- uncertainty -------------------------------------------------------------------------


class _ScoreMiner(Miner):
    """A miner that ranks rows by one function of `pickaxe.scores`."""

    score_function: Callable[..., np.ndarray]

    def __init__(
        self,
        size: int,
        *,
        field: Optional[str] = None,
        nan_policy: str = "raise",
        query: Optional[str] = None,
        **controls: Any,
    ) -> None:
        super().__init__(size, field, query=query, **controls)
        self.nan_policy = check_nan_policy(type(self).__name__, nan_policy)

    def options(self) -> dict[str, Any]:
        return {}

    def score(self, pool: Pool, field: Optional[str]) -> tuple[np.ndarray, dict[str, Any]]:
        assert field is not None
        fn = type(self).score_function
        values = fn(**{field: pool.columns[field]}, nan_policy=self.nan_policy, **self.options())
        return values, {"field": field}


class LeastConfidenceMiner(_ScoreMiner):
    """Rows whose top class is least probable: 1 − p(1)."""

    fields = ("logits", "confidences", "confidence")
    score_function = staticmethod(scores.least_confidence)


class MarginMiner(_ScoreMiner):
    """Rows whose two top classes are closest: 1 − (p(1) − p(2))."""

    fields = ("logits", "confidences")
    score_function = staticmethod(scores.margin)


class RatioMiner(_ScoreMiner):
    """Rows whose second class is nearly as probable as the first: p(2) / p(1)."""

    fields = ("logits", "confidences")
    score_function = staticmethod(scores.ratio)


class EntropyMiner(_ScoreMiner):
    """Rows whose class distribution has the highest entropy H(p)."""

    fields = ("logits", "confidences")
    score_function = staticmethod(scores.entropy)


_STACK_MEASURES = {name: getattr(scores, name) for name in COMMITTEE_MEASURES}


class _StackMiner(Miner):
    measures: tuple[str, ...] = ()

    def __init__(
        self,
        size: int,
        measure: str,
        *,
        logits: bool = False,
        nan_policy: str = "raise",
        query: Optional[str] = None,
        **controls: Any,
    ) -> None:
        super().__init__(size, query=query, **controls)
        if measure not in self.measures:
            raise ValueError(
                f"{type(self).__name__}(): measure must be one of "
                f"{', '.join(self.measures)}; got {measure!r}"
            )
        self.measure = measure
        self.logits = bool(logits)
        self.nan_policy = check_nan_policy(type(self).__name__, nan_policy)

    def score(self, pool: Pool, field: Optional[str]) -> tuple[np.ndarray, dict[str, Any]]:
        assert field is not None
        fn = _STACK_MEASURES[self.measure]
        values = fn(**{field: pool.columns[field]}, logits=self.logits, nan_policy=self.nan_policy)
        return values, {"field": field, "measure": self.measure}


class CommitteeMiner(_StackMiner):
    """Rows the committee members disagree on (query by committee). ``measure`` is any
    committee score of `pickaxe.scores`; the default ``vote_entropy`` is the entropy of
    the histogram of the M members' argmax votes, −Σ_c (v_c / M) ln(v_c / M).

    Ties are common: vote entropy takes one value per way of splitting M votes over the
    classes (M = 5: at most 7 values), so many rows share the score at the edge of the
    budget. Tied rows are picked in row order (pool row, or id on a Ray Dataset,
    ascending), the same whether the pool is read whole, streamed in batches or mined on
    Ray; ``consensus_entropy`` or ``kl_disagreement`` rank by continuous values instead.

    >>> import numpy as np, pickaxe as px
    >>> votes = np.eye(3)[[[0, 0, 0], [0, 1, 2], [0, 0, 1], [2, 1, 0]]]  # (4 rows, 3 members, 3 classes)
    >>> px.CommitteeMiner(2).mine({"query_by_committee": votes}).ids.tolist()  # rows 1 and 3 tie
    [1, 3]
    """

    fields = ("query_by_committee",)
    measures = tuple(_STACK_MEASURES)

    def __init__(self, size: int, measure: str = "vote_entropy", **kw: Any) -> None:
        super().__init__(size, measure, **kw)


class MCDropoutMiner(_StackMiner):
    """Rows the dropout passes disagree on; ``mutual_information`` (the default) is BALD,
    H(p̄) − mean_t H(p_t) over the T passes' probabilities (N, T, C).

    ``variation_ratio``, 1 − (passes voting for the modal class) / T, takes at most T
    values, so many rows tie at the edge of the budget: tied rows are picked in row order
    (pool row, or id on a Ray Dataset, ascending), the same whether the pool is read
    whole, streamed in batches or mined on Ray.

    >>> import numpy as np, pickaxe as px
    >>> passes = np.eye(2)[[[0, 0, 0, 0], [0, 1, 0, 1], [1, 1, 0, 1], [1, 0, 1, 0]]]  # (4, 4, 2)
    >>> px.MCDropoutMiner(2, measure="variation_ratio").mine({"mc_dropout": passes}).ids.tolist()
    [1, 3]
    """

    fields = ("mc_dropout",)
    measures = DROPOUT_MEASURES

    def __init__(self, size: int, measure: str = "mutual_information", **kw: Any) -> None:
        super().__init__(size, measure, **kw)
