"""`combine`: one labeling budget split across several miners."""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Sequence

from ..pools import open_pool
from ..selection import Selection
from .base import Miner
from .diversity import cover_reference
from .neighbours import Reference

__all__ = ["combine", "Combined", "split_budget"]


def split_budget(size: int, weights: Sequence[float]) -> list[int]:
    """``size`` split in proportion to ``weights`` by the largest remainder method: each
    share is ``floor(size * w / Σw)``, and the rows left over go one each to the largest
    fractional parts (ties: the earlier miner).

    >>> split_budget(10, [1, 1, 1])
    [4, 3, 3]
    """
    total = float(sum(weights))
    exact = [size * w / total for w in weights]
    shares = [math.floor(e) for e in exact]
    left = size - sum(shares)
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[:left]:
        shares[i] += 1
    return shares


class Combined(Miner):
    """Several miners sharing one budget; see `combine`."""

    def __init__(
        self,
        miners: Sequence[Miner],
        size: int,
        weights: Optional[Sequence[float]] = None,
        *,
        diversity: Optional[str] = None,
        candidates: int = 4,
        reference: Optional[Reference] = None,
        query: Optional[str] = None,
        **controls: Any,
    ) -> None:
        who = "combine()"
        super().__init__(size, query=query, **controls)
        miners = list(miners) if not isinstance(miners, Miner) else [miners]
        if not miners:
            raise ValueError(f"{who}: give at least one miner")
        for m in miners:
            if not isinstance(m, Miner):
                raise TypeError(f"{who}: every item must be a pickaxe miner; got {type(m).__name__}")
            if m.query is not None:
                raise ValueError(
                    f"{who}: {m!r} has its own query; give the query to combine(), "
                    "which applies it to every miner"
                )
        if weights is None:
            weights = [1.0] * len(miners)
        weights = list(weights)
        if len(weights) != len(miners):
            raise ValueError(f"{who}: {len(weights)} weights for {len(miners)} miners")
        for w in weights:
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
                raise ValueError(f"{who}: weights must be finite numbers >= 0; got {weights!r}")
        if sum(weights) <= 0:
            raise ValueError(f"{who}: the weights sum to 0")
        if diversity not in (None, "coreset"):
            raise ValueError(f'{who}: diversity must be None or "coreset"; got {diversity!r}')
        if reference is not None and diversity != "coreset":
            raise ValueError(
                f'{who}: a reference is only used with diversity="coreset" (the labeled rows '
                f"count as covered); got diversity={diversity!r}"
            )
        #: The k-center metric and the labeled rows' search (None: no reference).
        self.metric, self.cover = cover_reference(who, reference, None)
        if isinstance(candidates, bool) or not isinstance(candidates, numbers.Integral) or candidates < 1:
            raise ValueError(f"{who}: candidates must be an int >= 1; got {candidates!r}")
        self.miners = _with_controls(who, miners, self.controls, diversity)
        self.weights = [float(w) for w in weights]
        self.diversity = diversity
        self.candidates = int(candidates)

    @property
    def name(self) -> str:
        return "combined"

    def __repr__(self) -> str:
        inner = ", ".join(repr(m) for m in self.miners)
        return f"combine([{inner}], size={self.size}, weights={self.weights}, diversity={self.diversity!r})"

    def quotas(self) -> list[int]:
        """Each miner's share of the budget."""
        return split_budget(self.size, self.weights)

    def mine(self, pool: Any) -> Selection:
        """The combined selection: each row records the miner that picked it."""
        from ..engine import LocalBackend, mine

        return mine(self, LocalBackend(open_pool(pool, query=self.query, who="combine().mine()")))

    def quota_info(self, quotas: list[int]) -> dict[str, int]:
        """Each miner's share by name (miners of one name add up), for ``info``."""
        out: dict[str, int] = {}
        for m, q in zip(self.miners, quotas):
            out[m.name] = out.get(m.name, 0) + q
        return out


def _with_controls(who: str, miners: list[Miner], controls: Any, diversity: Optional[str]) -> list[Miner]:
    """The miners `combine` runs: its quotas by group are its own (a miner's are refused);
    its draw (``sampling``) becomes each miner's, on a copy (a miner's own draw and the
    combination's cannot both be given)."""
    import copy
    import dataclasses

    out = []
    for m in miners:
        if m.controls.stratified:
            raise ValueError(f"{who}: {m!r} has its own stratify=; give stratify= and quota= to combine()")
        if controls.sampled:
            if m.controls.sampled:
                raise ValueError(f"{who}: {m!r} has its own sampling=; give sampling= to combine() or to its miners, not both")
            if m.whole_pool:
                raise ValueError(f"{who}: sampling= draws per-row scores; {m!r} ranks the whole pool")
            m = copy.copy(m)
            m.controls = dataclasses.replace(m.controls, sampling=controls.sampling, beta=controls.beta, seed=controls.seed)
        if controls.stratified:
            if m.whole_pool or m.repick_columns:
                raise ValueError(f"{who}: stratify= splits per-row scores by group; {m!r} does not rank rows one by one")
            m = copy.copy(m)  # each miner's batches group their rows as combine's do
            m.controls = dataclasses.replace(m.controls, stratify=controls.stratify, quota=controls.quota)
        out.append(m)
    if controls.stratified and diversity is not None:
        raise ValueError(f'{who}: stratify= and diversity="coreset" do not combine; give one of them')
    return out


def combine(
    miners: Sequence[Miner],
    size: int,
    weights: Optional[Sequence[float]] = None,
    *,
    diversity: Optional[str] = None,
    candidates: int = 4,
    reference: Optional[Reference] = None,
    query: Optional[str] = None,
    stratify: Optional[str] = None,
    quota: Any = "equal",
    sampling: str = "top",
    beta: float = 1.0,
    seed: int = 0,
) -> Combined:
    """One labeling budget of ``size`` rows split across ``miners``.

    Batch controls (`pickaxe.batch_controls`): ``stratify`` / ``quota`` split the budget
    across groups first (``"predicted"``: the argmax class of the pool's ``logits``, else
    its ``confidences``), then each group's share across the miners as below; picks come
    group by group and ``selection.groups`` names each row's group. ``sampling`` /
    ``beta`` / ``seed`` make every miner draw its rows instead of taking its top ones
    (each miner is copied with the draw; a miner's own ``sampling`` and combine's cannot
    both be given; with ``diversity="coreset"`` the nominees are drawn). Neither goes
    with a whole-pool miner, nor ``stratify`` with ``diversity="coreset"``.

    The budget is split in proportion to ``weights`` (equal by default) by the largest
    remainder method (`split_budget`). Miners run in order; a row already picked by an
    earlier miner goes to the next best row of the later one, so no row is picked twice,
    and a share a miner cannot fill passes to the next. Each row of the selection records
    the miner that picked it (``selection.miners``).

    ``diversity="coreset"``: each miner nominates ``candidates`` times its share, and the
    final batch is re-picked by k-center greedy over the nominees' ``embeddings``, so one
    cluster of confusing rows cannot fill the whole budget. ``reference`` (only with
    ``diversity="coreset"``): the labeled set's embeddings (M, D), or a `ReferenceIndex`,
    counted as centers already (Sener and Savarese 2018), so a nominee's d_min starts as
    its distance to the nearest labeled row and the batch fills what the labeled set
    leaves uncovered: nominees near it are picked last. Distances are euclidean, or a
    ReferenceIndex's cosine. ``query`` (SQL ``WHERE``) restricts the rows every miner sees.

    >>> import numpy as np, pickaxe as px
    >>> rng = np.random.default_rng(0)
    >>> pool = {"logits": rng.normal(size=(100, 5)), "embeddings": rng.normal(size=(100, 8))}
    >>> both = px.combine([px.EntropyMiner(10), px.ActivationMiner(10)], size=10)
    >>> sorted(set(both.mine(pool).miners))
    ['activation', 'entropy']
    """
    return Combined(
        miners, size, weights, diversity=diversity, candidates=candidates, reference=reference, query=query,
        stratify=stratify, quota=quota, sampling=sampling, beta=beta, seed=seed,
    )
