"""Batch controls of every per-row miner: quotas by group and stochastic batches.

Two controls shape the batch a per-row miner (or `combine`) returns, whatever its score:

- **Quotas by group** (``stratify``, ``quota``): the rows are split into groups, by the
  argmax class of the pool's ``confidences`` or ``logits`` (``stratify="predicted"``) or
  by the values of a pool column (``stratify="camera"``), and the budget is split across
  the groups by the largest remainder method (`pickaxe.miners.combine.split_budget`):
  ``quota="equal"`` (the same weight per group), ``"proportional"`` (weight = the group's
  rows among those mined, i.e. that pass the query and score a number) or a mapping
  ``{group: weight}``. A group that cannot fill its share passes what is left to the
  groups that still have rows, split again by their weights (repeatedly, until the budget
  is filled or no row is left). Groups left out of a mapping (or weighted 0) are picked
  only when the weighted groups run out of rows, with equal weights among them.
  Remainder ties go to the group that sorts first.
- **Stochastic batches** (``sampling``, ``beta``, ``seed``): instead of the top rows,
  rows drawn without replacement with probability ∝ w(row) (Kirsch et al., "Stochastic
  Batch Acquisition: A Simple Baseline for Deep Active Learning", TMLR 2023)::

      power:    w = score^β          (scores must be >= 0)
      softmax:  w = exp(β · score)
      rank:     w = rank^(-β)        (rank 1 = the highest score)

  The draw is the top k of the Efraimidis–Spirakis keys u^(1/w) (Efraimidis and Spirakis
  2006), computed in log form as Gumbel-top-k (Kool et al. 2019)::

      key = ln w − ln(−ln u)

  where u ∈ (0, 1) is hashed from (seed, the row's number) by splitmix64
  (`pickaxe.engine.uniforms`; a Ray Dataset's rows are numbered by their hashed ids,
  `pickaxe.engine.key_numbers`), so the draw is the same however the pool is batched,
  streamed or distributed, and the same for a seed. A row scoring NaN is never drawn; a
  row of weight 0 (power: score 0) is drawn only after every row of positive weight.
  Under power a negative score raises ValueError naming the row. Ties in rank share the
  best rank ("1224" ranking). ``beta=0`` draws uniformly.

The selection's ``scores`` stay the miner's scores; the rows come in draw order (the
order of the keys: the first j rows of a draw of k are a draw of j) when sampled, and by
score otherwise. ``selection.groups`` names each row's group when stratified, and
``selection.info`` records the controls (``sampling``, ``beta``, ``seed``;
``stratify``, ``quota``, ``picked`` per group).

The engine (`pickaxe.engine`) applies the controls in one place for every backend; this
module holds their checks and arithmetic.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

import numpy as np

from . import _checks as checks
from ._fields import FIELD_SHAPES

__all__ = ["Controls", "check_controls", "SAMPLINGS", "PLAIN"]

SAMPLINGS = ("top", "power", "softmax", "rank")
QUOTAS = ("equal", "proportional")
#: The fields whose argmax names a row's predicted class, in order of preference.
PREDICTED_FIELDS = ("logits", "confidences")


@dataclass(frozen=True)
class Controls:
    """A miner's batch controls (see the module docstring); ``quota`` is ``"equal"``,
    ``"proportional"`` or a tuple of (group, weight) pairs."""

    stratify: Optional[str] = None
    quota: Any = "equal"
    sampling: str = "top"
    beta: float = 1.0
    seed: int = 0

    @property
    def stratified(self) -> bool:
        return self.stratify is not None

    @property
    def sampled(self) -> bool:
        return self.sampling != "top"

    @property
    def plain(self) -> bool:
        """Today's top-k: no group, no draw."""
        return not self.stratified and not self.sampled

    def info(self) -> dict[str, Any]:
        """What the selection's ``info`` records of the controls (nothing when plain)."""
        out: dict[str, Any] = {}
        if self.sampled:
            out.update(sampling=self.sampling, beta=self.beta, seed=self.seed)
        if self.stratified:
            q = self.quota
            out.update(stratify=self.stratify, quota=q if isinstance(q, str) else dict(q))
        return out


PLAIN = Controls()


def check_controls(
    who: str, stratify: Any = None, quota: Any = "equal", sampling: Any = "top", beta: Any = 1.0, seed: Any = 0
) -> Controls:
    """The controls, checked: TypeError for the wrong kind of value, ValueError for a
    wrong value (an empty column name, a negative or non-finite beta or weight, weights
    summing to 0, a quota without stratify)."""
    if stratify is not None:
        if not isinstance(stratify, str):
            raise TypeError(
                f'{who}: stratify must be None, "predicted" or a column name (str); got {type(stratify).__name__} {stratify!r}'
            )
        if not stratify:
            raise ValueError(f'{who}: stratify must be "predicted" or a column name; got an empty string')
    if isinstance(quota, str):
        quota = checks.choice(who, "quota", quota, QUOTAS)
    elif isinstance(quota, Mapping):
        quota = _quota_mapping(who, quota)
    else:
        raise TypeError(
            f'{who}: quota must be "equal", "proportional" or a mapping of group to weight; got {type(quota).__name__} {quota!r}'
        )
    if stratify is None and quota != "equal":
        raise ValueError(f"{who}: quota={_shown(quota)} needs stratify= (the groups to split the budget across)")
    sampling = checks.choice(who, "sampling", sampling, SAMPLINGS)
    beta = checks.real(who, "beta", beta)
    if not math.isfinite(beta) or beta < 0:
        raise ValueError(f"{who}: beta must be a finite number >= 0; got {beta!r}")
    seed = checks.integer(who, "seed", seed)
    return Controls(stratify, quota, sampling, beta, seed)


def _quota_mapping(who: str, quota: Mapping) -> tuple:
    if not quota:
        raise ValueError(f"{who}: quota as a mapping names at least one group; got {{}}")
    pairs = []
    for g, w in quota.items():
        if isinstance(w, (bool, np.bool_)) or not isinstance(w, numbers.Real):
            raise TypeError(f"{who}: quota weights must be real numbers; group {g!r} has {type(w).__name__} {w!r}")
        w = float(w)
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"{who}: quota weights must be finite and >= 0; group {g!r} has {w!r}")
        pairs.append((_scalar(g), w))
    if sum(w for _, w in pairs) <= 0:
        raise ValueError(f"{who}: the quota weights sum to 0; got {dict(pairs)!r}")
    return tuple(pairs)


def _shown(quota: Any) -> str:
    return repr(quota if isinstance(quota, str) else dict(quota))


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


# -- groups ------------------------------------------------------------------------------


def group_column(c: Controls, who: str, column_names: Iterable[str], describe: str, field: Optional[str]) -> Optional[str]:
    """The pool column a stratified run reads for the groups (checked before any work):
    for ``"predicted"`` the miner's own field when it is ``logits`` or ``confidences``,
    else the pool's ``logits``, else its ``confidences``; otherwise the named column,
    which must be a column of the pool and not a prediction field."""
    if not c.stratified:
        return None
    names = list(column_names)
    if c.stratify == "predicted":
        if field in PREDICTED_FIELDS:
            return field
        for f in PREDICTED_FIELDS:
            if f in names:
                return f
        raise ValueError(
            f'{who}: stratify="predicted" groups rows by the argmax class of confidences or logits '
            f"(N, C), and the pool has neither; it has {describe}. Give stratify= a column instead"
        )
    if c.stratify not in names:
        raise ValueError(f"{who}: stratify={c.stratify!r} names no column of the pool; it has {describe}")
    if c.stratify in FIELD_SHAPES:
        raise ValueError(
            f'{who}: stratify={c.stratify!r} is a prediction field; give a column of group labels, or "predicted"'
        )
    return c.stratify


def labels(c: Controls, x: np.ndarray) -> np.ndarray:
    """Each row's group: the predicted class (argmax, ties to the lowest class; a binary
    model's single logit x gives class 1 when x > 0), or the column's values."""
    if c.stratify != "predicted":
        return np.asarray(x)
    if x.ndim == 2 and x.shape[1] == 1:
        return (x[:, 0] > 0).astype(np.int64)
    return np.argmax(x, axis=1).astype(np.int64) if x.shape[0] else np.empty(0, np.int64)


def factorize(values: np.ndarray) -> tuple[list, np.ndarray]:
    """(uniques, codes): the distinct values (sorted where they sort) and each row's
    position among them (intp). Small integer ranges take a counting path, O(n)."""
    n = len(values)
    if n == 0:
        return [], np.empty(0, np.intp)
    if values.dtype.kind in "iub":
        v = values.astype(np.int64, copy=False)
        lo, hi = int(v.min()), int(v.max())
        if hi - lo < 1 << 16:
            shifted = (v - lo).astype(np.intp)
            present = np.flatnonzero(np.bincount(shifted, minlength=hi - lo + 1))
            remap = np.zeros(hi - lo + 1, np.intp)
            remap[present] = np.arange(len(present))
            return [_scalar(values.dtype.type(lo + p)) for p in present], remap[shifted]
    try:
        uniq, codes = np.unique(values, return_inverse=True)
        return [_scalar(u) for u in uniq], codes.reshape(-1).astype(np.intp)
    except TypeError:  # mixed objects (None among strings): first seen, then sorted
        seen: dict = {}
        codes = np.fromiter((seen.setdefault(_scalar(v), len(seen)) for v in values.tolist()), np.intp, n)
        uniq = sort_groups(seen)
        at = np.array([uniq.index(g) for g in seen], dtype=np.intp)
        return uniq, at[codes]


def sort_groups(groups: Iterable) -> list:
    """Groups in their documented order: sorted, or by (type name, text) when they do not
    compare (None among strings)."""
    groups = list(groups)
    try:
        return sorted(groups)
    except TypeError:
        return sorted(groups, key=lambda g: (type(g).__name__, str(g)))


# -- the draw ----------------------------------------------------------------------------


def log_weights(c: Controls, values: np.ndarray, ranks: Optional[np.ndarray] = None) -> np.ndarray:
    """ln w of each row (float64): β ln s (power), β s (softmax) or −β ln rank (rank).
    NaN scores stay NaN. Negative scores under power are the caller's to reject."""
    v = np.asarray(values, dtype=np.float64)
    if c.sampling == "softmax":
        return c.beta * v
    if c.sampling == "rank":
        assert ranks is not None
        return -c.beta * np.log(ranks.astype(np.float64))
    with np.errstate(divide="ignore"):
        lw = np.log(v)
    if c.beta == 0:  # s^0 = 1, 0^0 included: uniform over the rows scoring a number
        return np.where(np.isnan(v), np.nan, 0.0)
    return lw * c.beta


def gumbel_keys(log_w: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Efraimidis–Spirakis keys in log form, ln w − ln(−ln u): their top k is a draw of k
    rows without replacement, probability ∝ w. ``u`` in [0, 1) is moved to the middle of
    its 2**-53 cell so that neither log is infinite."""
    g = u + 2.0**-54
    np.log(g, out=g)
    np.negative(g, out=g)
    np.log(g, out=g)
    g -= log_w  # −(ln w − ln(−ln u))
    np.negative(g, out=g)
    return g


def first_negative(values: np.ndarray) -> Optional[int]:
    bad = np.flatnonzero(np.asarray(values) < 0)
    return int(bad[0]) if bad.size else None


def competition_ranks(values: np.ndarray) -> np.ndarray:
    """Rank of each value among all of them (1 + how many are higher): ties share the
    best rank. One sort, then each run of equal values takes its first position (a binary
    search per value into the sorted scores cost ten times the sort: random reads)."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(-v)  # equal values may come in any order: each run gets its start
    s = v[order]
    start = np.ones(len(v), dtype=bool)
    np.not_equal(s[1:], s[:-1], out=start[1:])
    first = np.maximum.accumulate(np.where(start, np.arange(len(v)), 0))
    ranks = np.empty(len(v), dtype=np.int64)
    ranks[order] = first + 1
    return ranks


# -- the budget across groups ------------------------------------------------------------


def group_shares(
    c: Controls, who: str, size: int, groups: list, available: Mapping[Any, int], counts: Mapping[Any, int]
) -> dict[Any, int]:
    """Each group's share of ``size`` (see the module docstring): weights from the quota,
    split by largest remainder over the groups (in `sort_groups` order) that have rows,
    and what a group cannot fill passed on. ``available``: rows each group can give;
    ``counts``: rows each group has (for ``"proportional"``)."""
    from .miners.combine import split_budget

    if c.quota == "equal":
        weights = {g: 1.0 for g in groups}
    elif c.quota == "proportional":
        weights = {g: float(counts.get(g, 0)) for g in groups}
    else:
        weights = _mapped_weights(c, who, groups)
    take = {g: 0 for g in groups}
    left = size
    for tier in (lambda g: weights[g] > 0, lambda g: weights[g] <= 0):
        open_ = [g for g in groups if tier(g) and available.get(g, 0) > 0]
        equal = not any(weights[g] > 0 for g in open_)
        while left > 0 and open_:
            add = split_budget(left, [1.0 if equal else weights[g] for g in open_])
            for g, a in zip(open_, add):
                got = min(a, available[g] - take[g])
                take[g] += got
                left -= got
            open_ = [g for g in open_ if take[g] < available[g]]
    return take


def _mapped_weights(c: Controls, who: str, groups: list) -> dict[Any, float]:
    """A quota mapping's weights by group. A key matches a group equal to it or written
    the same (``"3"`` names class 3: a mapping read from JSON has string keys). A key that
    names no group of the rows mined is an error."""
    by_text = {str(g): g for g in groups}
    weights = {g: 0.0 for g in groups}
    for key, w in c.quota:
        g = key if key in weights else by_text.get(str(key), _MISSING)
        if g is _MISSING:
            shown = ", ".join(repr(x) for x in groups[:20]) + (", ..." if len(groups) > 20 else "")
            raise ValueError(
                f"{who}: quota names the group {key!r}, which no row mined has (stratify={c.stratify!r}); "
                f"the groups are {shown or 'none (no row)'}"
            )
        weights[g] = w
    return weights


_MISSING = object()


def known_groups(c: Controls, seen: Iterable, classes: Optional[int]) -> list:
    """The groups a quota may name: every class 0..C-1 for ``"predicted"`` (a class the
    model never predicts is still a group, with no rows), else the values seen."""
    seen = set(seen)
    if c.stratify == "predicted" and classes is not None:
        seen |= set(range(max(classes, 2)))
    return sort_groups(seen)
