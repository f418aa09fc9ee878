"""Choosing rows by score."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

from . import _checks as checks
from . import _core
from ._fields import as_float_array

__all__ = ["top_k"]


def top_k(scores: ArrayLike, k: int) -> np.ndarray:
    """Positions of the ``k`` highest scores, highest first.

    Equal scores come in ascending position; NaN is never selected (±inf are ordered like
    any value); with fewer than ``k`` non-NaN scores, all of them are returned. Runs in
    O(N) (a bounded selection, then a sort of the k winners), never sorting the whole
    array, in parallel on large inputs.

    scores: (N,) real. k: int ≥ 0. Returns (min(k, #non-NaN),) int64.

    >>> top_k(np.array([0.2, 0.9, np.nan, 0.9, 0.5]), 3)
    array([1, 3, 4])
    """
    k = checks.integer("top_k()", "k", k, 0)
    arr = as_float_array("top_k", "scores", scores, 1, "(N,)")
    return _core.top_k(arr, min(k, arr.shape[0]))
