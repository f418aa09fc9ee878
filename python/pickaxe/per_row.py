"""The per-row part of the mining engine (`pickaxe.engine`): what one batch keeps
(`batch_top`), how the kept rows of batches merge (`merge_tops`), and a run's final pick
(`pick`): the top ``k`` rows, or quotas by group, or a weighted draw without replacement
(the controls of `pickaxe.batch_controls`).

Every backend calls these same functions (`LocalBackend` batch after batch, Ray's workers
per block and its driver to merge), so a streamed or distributed run picks what one pass
over the whole pool would. Memory: plain and drawn runs keep ``k`` rows; a stratified run
keeps ``k`` rows per group, O(groups × k); ``sampling="rank"`` needs each row's rank in the
whole pool, so it keeps every row's score (and group, and its number when the rows are not
numbered in stream order: `RankRows`; Ray's driver keeps every row's key and score): O(N),
8 to 24 bytes a row, then draws from them at the end without sorting them
(`rank_candidates`: three O(N) passes in the Rust core bound the ranks, drop the rows
that cannot be drawn and count the exact ranks of the few left).

The per-batch work runs in the Rust core (`rust/pickaxe-core/src/groups.rs`): a power or
softmax draw's keys made row by row inside a bounded top-k (`_core.draw_top_k`), and each
group's best ``k`` in one pass (`_core.group_top_k`, also the merge of kept rows with
integer keys); ``sampling="rank"``'s draw over the kept rows (`_core.rank_draw_candidates`),
whose candidates' keys numpy then computes as it does for a sorted pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

import numpy as np

from . import _core
from . import batch_controls as bc
from .errors import InvalidInputError
from .select import top_k

if TYPE_CHECKING:
    from .miners import Miner
    from .pools import Pool

__all__ = ["BatchTop", "Tops", "best_order", "batch_top", "group_floors", "merge_tops", "pick", "ordered_groups", "needs_row_numbers"]

#: Added to the seed for the draw's uniforms, so that a draw and `RandomMiner`'s scores
#: with one seed are unrelated streams.
DRAW_STREAM = 0x5851F42D4C957F2D


class BatchTop(NamedTuple):
    """What one batch keeps: positions in the batch, the miner's scores (float64), the
    order keys the rows are ranked by (the scores, or the draw's keys), each row's group
    (object labels, or None), rows per group that scored a number (or None), and the
    miner's ``info``."""

    rows: np.ndarray
    values: np.ndarray
    order: np.ndarray
    groups: Optional[np.ndarray]
    counts: Optional[dict]
    info: dict


class Tops(NamedTuple):
    """Kept rows of a run so far, as `BatchTop` but named by key (row number or id)."""

    keys: np.ndarray
    values: np.ndarray
    order: np.ndarray
    groups: Optional[np.ndarray]
    counts: Optional[dict]
    info: dict


def needs_row_numbers(miner: "Miner") -> bool:
    """Whether a batch of a pool without row numbers (a Ray Dataset) must number its rows
    from their ids: the miner's score reads them, or its draw hashes them."""
    return bool(miner.reads_row_numbers or miner.controls.sampled)


def best_order(keys: np.ndarray, values: np.ndarray, k: Optional[int]) -> np.ndarray:
    """Positions of the ``k`` best rows (all when None): score descending, then key
    ascending (the order `top_k` gives over a whole pool, whose keys are its row numbers)."""
    if keys.dtype.kind in "iuf":
        order = np.lexsort((keys, -values))
    else:  # object keys (string ids): a stable sort by key, then by score
        by_key = np.argsort(keys, kind="stable")
        order = by_key[np.argsort(-values[by_key], kind="stable")]
    return order if k is None else order[:k]


def best_k(keys: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """`best_order` of the ``k`` best in O(N) time plus a sort of about ``k``: the rows at
    or above the ``k``-th value (ties at it included, for the key order to settle them)."""
    if k < len(values):
        kth = -np.partition(-values, k - 1)[k - 1] if k > 0 else np.inf
        if not np.isnan(kth):  # NaN: fewer than k numbers, all rows take part
            cand = np.flatnonzero(values >= kth)
            return cand[best_order(keys[cand], values[cand], k)]
    return best_order(keys, values, k)


def _best(order: np.ndarray, k: Optional[int]) -> np.ndarray:
    """Positions of the ``k`` highest (all non-NaN when None), unsorted for None."""
    return top_k(order, k) if k is not None else np.flatnonzero(~np.isnan(order))


def batch_top(
    miner: "Miner",
    batch: "Pool",
    field: Optional[str],
    k: Optional[int],
    locate: Callable[[InvalidInputError], InvalidInputError],
    column: Optional[str] = None,
    floors: Optional[dict] = None,
) -> BatchTop:
    """One batch's kept rows under the miner's controls (``miner.controls``): the ``k``
    best by score, or by the draw's key, overall or per group (read from `column`); all
    rows scoring a number when ``k`` is None. An error naming a row of the batch is
    re-based by `locate` to name the pool's row. `floors` (group -> order key, from
    `group_floors` of the rows a streamed run kept so far): a group's rows below its
    floor cannot be among its best and are not kept."""
    c = miner.controls
    if batch.n_rows == 0:
        e = np.empty(0)
        return BatchTop(np.empty(0, np.int64), e, e, None if column is None else np.empty(0, object), None, {})
    values, info = score_batch(miner, batch, field, locate)
    order = values
    if c.sampled and c.sampling != "rank":
        if c.sampling == "power":
            bad = bc.first_negative(values)
            if bad is not None:
                raise locate(InvalidInputError(
                    kind="row", field=field or miner.name, row=bad,
                    reason=f'scored {values[bad]!r}; sampling="power" draws with probability ∝ score^beta and '
                    'needs scores >= 0 (use sampling="softmax" or "rank")',
                ))
        draw = _draw_args(batch, c)
        if column is None and k is not None:  # keys made row by row inside the top k
            rows, keys = _core.draw_top_k(values, *draw, k)
            return BatchTop(rows, values[rows], keys, None, None, info)
        order = _core.draw_keys(values, *draw)
    if column is None and k is None and order is values:  # sampling="rank": every row
        nan = np.isnan(values)
        if nan.any():
            rows = np.flatnonzero(~nan)
            values = values[rows]
        else:
            rows = np.arange(len(values))
        return BatchTop(rows, values, values, None, None, info)
    if column is None:
        rows = _best(order, k)
        return BatchTop(rows, values[rows], order[rows], None, None, info)
    slot_labels, codes, offset, slots = _group_codes(bc.labels(c, batch.columns[column]))
    floor = None
    if floors and slots <= _FLOOR_SLOTS:
        floor = np.array([floors.get(slot_labels(s), -np.inf) for s in range(slots)], dtype=order.dtype)
    # each group's best k in one pass (a bounded top-k per group), grouped by code
    rows, ends, scored, sizes = _core.group_top_k(order, codes, offset, slots, batch.n_rows if k is None else k, None, floor)
    if order is not values:  # a row scoring a number may still draw a NaN key (0 · inf)
        scored = np.bincount(codes[~np.isnan(values)] - offset, minlength=slots)
    present = np.flatnonzero(sizes)
    uniq = [slot_labels(int(s)) for s in present]
    kept = np.diff(ends, prepend=0)[present]
    groups = np.repeat(_labels(uniq), kept)
    counts = {g: int(n) for g, n in zip(uniq, scored[present].tolist()) if n}
    return BatchTop(rows, values[rows], order[rows], groups, counts, info)


def score_batch(
    miner: "Miner", batch: "Pool", field: Optional[str], locate: Callable[[InvalidInputError], InvalidInputError]
) -> tuple[np.ndarray, dict]:
    """The miner's scores of a batch (float64) and its ``info``; an error naming a row of
    the batch re-based by `locate`."""
    try:
        values, info = miner.score(batch, field)
    except InvalidInputError as e:
        raise locate(e) from None
    return np.asarray(values, dtype=np.float64), info


#: Above this many group slots in a batch a floor array is not built (a dict lookup per
#: slot would cost more than the pushes it saves).
_FLOOR_SLOTS = 4096


def group_floors(tops: Tops, k: int) -> dict:
    """Per group holding ``k`` kept rows, the order key of its ``k``-th best: a later row
    below it cannot enter the group's best ``k`` (`batch_top`'s `floors`)."""
    if tops.groups is None or len(tops.keys) < k or k == 0:
        return {}
    uniq, codes = bc.factorize(tops.groups)
    full = np.flatnonzero(np.bincount(codes, minlength=len(uniq)) >= k)
    if not len(full):
        return {}
    lowest = np.full(len(uniq), np.inf)
    np.minimum.at(lowest, codes, tops.order)
    return {uniq[g]: float(lowest[g]) for g in full.tolist()}


def _draw_args(batch: "Pool", c: "bc.Controls") -> tuple:
    """The kernels' (numbers, offset, seed, sampling, beta) of a batch's draw: each row's
    number (the batch's row numbers, or ``offset + i``), the seed of the draw's own stream
    mod 2**64 (`bc_uniforms` bit for bit)."""
    numbers = None if batch.row_numbers is None else np.asarray(batch.row_numbers, dtype=np.int64)
    return numbers, int(batch.offset), (c.seed + DRAW_STREAM) % 2**64, c.sampling, float(c.beta)


def _group_codes(lab: np.ndarray) -> tuple[Callable[[int], Any], np.ndarray, int, int]:
    """(label of a slot, codes, offset, slots) for `_core.group_top_k`: an integer column
    with a small range is its own code (slot = value − min: no factorizing pass); other
    labels are factorized (`pickaxe.batch_controls.factorize`)."""
    if len(lab) and (lab.dtype.kind == "i" or (lab.dtype.kind == "u" and lab.dtype.itemsize < 8)):
        lo, hi = int(lab.min()), int(lab.max())
        if hi - lo < 1 << 16:
            codes = lab if lab.dtype in (np.int32, np.int64) else lab.astype(np.int64)
            return (lambda s: bc._scalar(lab.dtype.type(lo + s))), codes, lo, hi - lo + 1
    uniq, codes = bc.factorize(lab)
    return uniq.__getitem__, codes.astype(np.int64, copy=False), 0, len(uniq)


def bc_uniforms(numbers: np.ndarray, seed: int) -> np.ndarray:
    """The draw's uniform for each row number (`pickaxe.engine.uniforms`, its own stream)."""
    from .engine import uniforms

    return uniforms(numbers, seed + DRAW_STREAM)


def _labels(uniq: list) -> np.ndarray:
    """Group labels as a typed array when they share one type (int, str, float, bool):
    merging batches then factorizes them by counting or a typed sort, not object by
    object; mixed labels (None among strings) stay objects."""
    if uniq and len({type(u) for u in uniq}) == 1 and isinstance(uniq[0], (int, str, float, bool)):
        return np.asarray(uniq)
    return _objects(uniq)


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def merge_tops(parts: list[Tops], k: Optional[int]) -> Tops:
    """The kept rows of several batches (or of a run so far and a batch): the ``k`` best
    overall, or per group (all when ``k`` is None); rows per group added up."""
    counts: dict = {}
    for p in parts:  # every part's, a part that kept no row included
        for g, n in (p.counts or {}).items():
            counts[g] = counts.get(g, 0) + n
    # empty parts left out: their placeholder dtypes (object) would untype the labels
    parts = [p for p in parts if len(p.keys)] or parts[:1]
    if len(parts) == 1 and parts[0].groups is not None:
        # one part holding rows (a stream's first, or a batch no row of which beat the
        # floors): already each group's best k; readers of grouped tops re-sort
        return parts[0]._replace(counts=counts)
    keys = np.concatenate([p.keys for p in parts])
    values = np.concatenate([p.values for p in parts])
    # sampling="rank" keeps every row by score: its order keys are its scores, one array
    order = values if all(p.order is p.values for p in parts) else np.concatenate([p.order for p in parts])
    info: dict = {}
    for p in parts:
        info = p.info or info
    if parts[0].groups is None:
        sel = best_order(keys, order, k) if k is not None else np.arange(len(keys))
        return Tops(keys[sel], values[sel], order[sel], None, None, info)
    groups = np.concatenate([p.groups for p in parts])
    if k is not None and len(keys):
        uniq, codes = bc.factorize(groups)
        if keys.dtype.kind == "i" or (keys.dtype.kind == "u" and keys.dtype.itemsize < 8):
            ties = keys.astype(np.int64, copy=False)
            sel = _core.group_top_k(order, codes.astype(np.int64, copy=False), 0, len(uniq), k, ties)[0]
        else:  # string (or float) ids: by key per group
            sel = np.concatenate([idx[best_order(keys[idx], order[idx], k)] for idx in _split(codes)])
        keys, values, order, groups = keys[sel], values[sel], order[sel], groups[sel]
    return Tops(keys, values, order, groups, counts, info)


def _split(codes: np.ndarray) -> list[np.ndarray]:
    """Positions of each code, code by code."""
    by = np.argsort(codes, kind="stable")
    ends = np.cumsum(np.bincount(codes))
    return [by[a:b] for a, b in zip(np.concatenate([[0], ends[:-1]]), ends)]


def empty_tops(keys: np.ndarray, stratified: bool) -> Tops:
    e = np.empty(0)
    return Tops(keys, e, e, np.empty(0, object) if stratified else None, {} if stratified else None, {})


def drawn(tops: Tops, c: "bc.Controls", numbers: Callable[[np.ndarray], np.ndarray], k: Optional[int] = None) -> Tops:
    """``sampling="rank"``: every row was kept by score; its rank among them (ties share
    the best) gives its weight, and its key's uniform (`numbers` turns keys into the
    numbers the batches hash) its draw key.

    With ``k`` (the rows a run draws, per group when stratified) only the rows that may
    be among the ``k`` highest keys (of their group) are returned, with their exact keys
    (`rank_candidates`: no sort of the pool, O(N) passes in the Rust core); every group
    keeps at least its ``k`` best rows or all of its rows, so `pick` (and `combine`'s
    per-group queues, which read at most ``k`` rows of a group) pick what they would
    from every row. Without ``k``, or below `RANK_SORT_BELOW` rows, or when the weights
    are so flat that too many rows could be drawn, every row's rank comes from one sort
    (`pickaxe.batch_controls.competition_ranks`, O(N log N)). Both give the same keys bit
    for bit."""
    if c.sampling != "rank":
        return tops
    cand = rank_candidates(tops, c, k, numbers) if k is not None else None
    if cand is not None:
        at, ranks = cand
        groups = None if tops.groups is None else tops.groups[at]
        tops = Tops(tops.keys[at], tops.values[at], tops.values[at], groups, tops.counts, tops.info)
    else:
        ranks = bc.competition_ranks(tops.values)
    return _rank_keyed(tops, c, ranks, numbers)


def _rank_keyed(tops: Tops, c: "bc.Controls", ranks: np.ndarray, numbers: Callable[[np.ndarray], np.ndarray]) -> Tops:
    """`tops` with each row's draw key from its exact rank (numpy, the same arithmetic
    on every path)."""
    order = bc.gumbel_keys(bc.log_weights(c, tops.values, ranks), bc_uniforms(numbers(tops.keys), c.seed))
    return tops._replace(order=order)


#: Below this many rows a rank draw ranks every row with one sort (a few ms).
RANK_SORT_BELOW = 1 << 16


def rank_candidates(
    tops: Tops, c: "bc.Controls", k: int, numbers: Callable[[np.ndarray], np.ndarray]
) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The rows of a rank draw that may be among the ``k`` highest keys of their group
    (of the pool when not stratified), and their exact competition ranks: (positions in
    `tops` ascending, ranks); None when the pool is small (`RANK_SORT_BELOW`), ``k``
    covers it, or the candidates would be more than a quarter of the rows (then sorting
    is as cheap).

    `_core.rank_draw_candidates` bins the scores (an O(1) map laid out from a strided
    sample: no search), counts each bin's rows, keeps per group the ``k`` best lower
    bounds of the keys and drops every row whose upper bound is below them (on its
    hashed uniform alone), and counts the exact ranks of the rows left within their
    bins: three O(N) passes in Rust, where the sort they replace cost O(N log N) (4.2 s
    at 10M rows)."""
    from .engine import key_numbers

    if tops.keys.dtype == np.int64 and numbers is key_numbers:
        nums = tops.keys  # `key_numbers` of int64 keys: the keys themselves, not copied
    else:
        nums = np.ascontiguousarray(numbers(tops.keys), dtype=np.int64)
    codes, groups = None, 1
    if tops.groups is not None:
        uniq, codes = bc.factorize(tops.groups)
        codes, groups = codes.astype(np.int64, copy=False), max(len(uniq), 1)
    cand = _candidates(tops.values, nums, codes, groups, len(tops.keys), c, k)
    return None if cand is None else cand[:2]


def _candidates(
    values: np.ndarray, nums: Optional[np.ndarray], codes: Optional[np.ndarray], groups: int, n: int,
    c: "bc.Controls", k: int,
) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`rank_candidates` over arrays: each row's score, number (None: its position),
    group code (None: one group); ``n`` rows (sets when to sort instead). Also each
    group's rows scoring a number."""
    if n < RANK_SORT_BELOW or k >= n or k <= 0:
        return None
    values = np.ascontiguousarray(values, dtype=np.float64)
    seed = (c.seed + DRAW_STREAM) % 2**64
    return _core.rank_draw_candidates(values, nums, 0, seed, float(c.beta), int(k), codes, groups, n // 4)


class RankRows:
    """``sampling="rank"``'s rows as a local run streams them (`LocalBackend.drawn`): each
    row's score (NaN included) in one float64 buffer, its row number only when the rows
    are not numbered 0, 1, 2, … in stream order, its group as an int32 code: 8 to 20
    bytes a row, no per-batch key or label arrays and no concatenation. An integer label
    in 0..`DIRECT` is its own code (copied, no lookup); other labels take codes from
    `DIRECT` on, in order of appearance. `drawn` then returns the rows that may be
    drawn, keyed, as `drawn` of every row's `Tops` would."""

    #: Integer labels below this are their own codes.
    DIRECT = 1024

    def __init__(self, capacity: Optional[int], grouped: bool) -> None:
        cap = max(int(capacity or 0), 1)
        self.n = 0
        self.values = np.empty(cap, np.float64)
        self.numbers: Optional[np.ndarray] = None
        self.codes: Optional[np.ndarray] = np.empty(cap, np.int32) if grouped else None
        self.direct: Optional[Callable[[int], Any]] = None  # label of a direct code
        self.top = -1  # highest direct code seen
        self.others: list = []  # labels of codes DIRECT, DIRECT + 1, …
        self.code_of: dict = {}
        self.info: dict = {}

    def _room(self, m: int) -> None:
        need = self.n + m
        if need <= len(self.values):
            return
        cap = max(need, 2 * len(self.values))
        for name in ("values", "numbers", "codes"):
            old = getattr(self, name)
            if old is not None:
                new = np.empty(cap, old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)

    def add(self, batch: "Pool", values: np.ndarray, info: dict, labels: Optional[np.ndarray] = None) -> None:
        """One batch's scores (one per row), its ``info`` and its rows' group labels."""
        m, n = len(values), self.n
        self._room(m)
        self.values[n : n + m] = values
        if self.numbers is None and (batch.row_numbers is not None or batch.offset != n):
            self.numbers = np.empty(len(self.values), np.int64)
            self.numbers[:n] = np.arange(n)
        if self.numbers is not None:
            self.numbers[n : n + m] = batch.source_rows(np.arange(m))
        if self.codes is not None and labels is not None and m:
            self._add_codes(labels, self.codes[n : n + m])
        self.info = info or self.info
        self.n = n + m

    def _add_codes(self, labels: np.ndarray, out: np.ndarray) -> None:
        if labels.dtype.kind in "iu":
            lo, hi = int(labels.min()), int(labels.max())
            if 0 <= lo and hi < self.DIRECT:  # small non-negative integers: their own codes
                out[:] = labels
                self._saw_direct(hi, labels.dtype.type)
                return
        slot_label, codes, offset, slots = _group_codes(labels)
        local = codes - offset if offset else codes
        present = np.flatnonzero(np.bincount(local, minlength=slots))
        remap = np.zeros(slots, np.int32)
        for s in present.tolist():
            g = slot_label(s)
            if isinstance(g, int) and not isinstance(g, bool) and 0 <= g < self.DIRECT:
                code = g  # as a batch of small integers would have it
                self._saw_direct(g, labels.dtype.type)
            else:
                code = self.code_of.get(g)
                if code is None:
                    code = self.code_of[g] = self.DIRECT + len(self.others)
                    self.others.append(g)
            remap[s] = code
        np.take(remap, local, out=out)

    def _saw_direct(self, code: int, label_type: type) -> None:
        """Labels up to `code` were their own codes; they read back as `label_type`
        (the first such batch's)."""
        self.top = max(self.top, code)
        self.direct = self.direct or (lambda c, t=label_type: bc._scalar(t(c)))

    def _code_labels(self) -> tuple[np.ndarray, int]:
        """Each code's label (a typed array when they share a type; codes no row has
        repeat a label) and how many codes there are."""
        if self.direct is None and not self.others:
            return np.empty(0, object), 1
        groups = self.DIRECT + len(self.others) if self.others else self.top + 1
        direct = [self.direct(c) for c in range(self.top + 1)] if self.direct else []
        fill = direct[0] if direct else self.others[0]
        return _labels(direct + [fill] * (groups - len(direct) - len(self.others)) + self.others), groups

    def drawn(self, c: "bc.Controls", k: int) -> Tops:
        """The rows that may be among the ``k`` highest keys (per group), with their draw
        keys (`drawn`), or every row's when the bounded path does not run."""
        from .engine import key_numbers

        n = self.n
        values = self.values[:n]
        nums = None if self.numbers is None else self.numbers[:n]
        codes = None if self.codes is None else self.codes[:n]
        labels, groups = self._code_labels() if codes is not None else (None, 1)
        # (rows scoring NaN count in n here: the kernel never ranks nor draws them)
        cand = _candidates(values, nums, codes, groups, n, c, k)
        if cand is not None:
            at, ranks, scored = cand
        else:  # every row scoring a number, ranked by one sort
            at = np.flatnonzero(~np.isnan(values))
            ranks = None
            scored = None if codes is None else np.bincount(codes[at], minlength=groups)
        counts = None
        if labels is not None:
            counts = {bc._scalar(labels[g]): int(s) for g, s in enumerate(scored.tolist()) if s}
        keys = at if nums is None else nums[at]
        groups_of = None if labels is None else labels[codes[at]]
        tops = Tops(keys, values[at], values[at], groups_of, counts, self.info)
        if ranks is None:
            ranks = bc.competition_ranks(tops.values)
        return _rank_keyed(tops, c, ranks, key_numbers)


def ordered_groups(tops: Tops) -> dict[Any, np.ndarray]:
    """Positions in `tops` of each group's rows, best first, by group."""
    assert tops.groups is not None
    uniq, codes = bc.factorize(tops.groups)
    return {uniq[i]: idx[best_order(tops.keys[idx], tops.order[idx], None)] for i, idx in enumerate(_split(codes)) if len(idx)}


def pick(tops: Tops, c: "bc.Controls", k: int, who: str, classes: Optional[int]) -> tuple[np.ndarray, np.ndarray, dict, Optional[np.ndarray]]:
    """A run's final rows from what it kept: (keys, the miner's scores, info, groups or
    None). Without groups, the ``k`` best by order key. With groups, each group's share
    (`pickaxe.batch_controls.group_shares`) of its best rows; the picks come by order key
    (score, or draw order), and ``info`` records the controls and the rows per group."""
    info = dict(tops.info)
    info.update(c.info())
    if tops.groups is None:
        sel = best_k(tops.keys, tops.order, k) if c.sampled else np.arange(min(k, len(tops.keys)))
        return tops.keys[sel], tops.values[sel], info, None
    by_group = ordered_groups(tops)
    counts = tops.counts or {}
    groups = bc.known_groups(c, list(by_group) + list(counts), classes)
    shares = bc.group_shares(c, who, k, groups, {g: len(v) for g, v in by_group.items()}, counts)
    chosen = [by_group[g][: shares[g]] for g in groups if shares[g]]
    sel = np.concatenate(chosen) if chosen else np.empty(0, np.int64)
    sel = sel[best_order(tops.keys[sel], tops.order[sel], None)]
    info["picked"] = {g: shares[g] for g in groups if shares[g]}
    return tops.keys[sel], tops.values[sel], info, tops.groups[sel]


def combined_groups(combined: Any, fields: list, backend: Any) -> Any:
    """`combine` with quotas by group: each miner keeps its ``size`` best rows per group
    (one pass each); the budget is split across the groups (`group_shares`, a group's
    available rows being those any miner can give), and each group's share across the
    miners by their weights, as an unstratified `combine` splits the whole budget: miners
    in order, a row an earlier miner took going to this one's next best, a share a miner
    cannot fill passing on (to the later miners, then round again from the first). Picks
    come group by group (in `sort_groups` order), each group's in the order they were
    made; ``info["picked"]`` counts them by group."""
    from .engine import GROUPS, stratify_column
    from .miners.combine import split_budget

    c = combined.controls
    who = "combine()"
    column = stratify_column(combined, backend, None)
    per_miner: list[tuple[Tops, dict]] = []
    for miner, field in zip(combined.miners, fields):
        miner.prepare(backend.source, field)
        mc = miner.controls
        tops = backend.candidates(miner, combined.size, field, column)
        per_miner.append((tops, ordered_groups(tops)))
    counts: dict = {}
    available: dict = {}
    for tops, by_group in per_miner:
        for g, n in (tops.counts or {}).items():
            counts[g] = max(counts.get(g, 0), n)
    for g in {g for _, by_group in per_miner for g in by_group}:
        union = set()
        for tops, by_group in per_miner:
            if g in by_group:
                union.update(tops.keys[by_group[g][: combined.size]].tolist())
        available[g] = len(union)
    classes = backend.source.shapes[column][1] if c.stratify == "predicted" else None
    groups = bc.known_groups(c, list(available) + list(counts), classes)
    shares = bc.group_shares(c, who, combined.size, groups, available, counts)
    taken: set = set()
    keys: list = []
    values: list = []
    names: list = []
    labels: list = []
    for g in groups:
        if not shares[g]:
            continue
        queues = []
        for (tops, by_group), miner in zip(per_miner, combined.miners):
            at = by_group.get(g, np.empty(0, np.int64))
            queues.append((miner.name, tops.keys[at].tolist(), tops.values[at].tolist()))
        carry = 0
        cursor = [0] * len(queues)

        def take(i: int, want: int) -> int:
            name, ks, vs = queues[i]
            got = 0
            while got < want and cursor[i] < len(ks):
                r, s = ks[cursor[i]], vs[cursor[i]]
                cursor[i] += 1
                if r in taken:
                    continue
                taken.add(r)
                keys.append(r)
                values.append(s)
                names.append(name)
                labels.append(g)
                got += 1
            return got

        for i, quota in enumerate(split_budget(shares[g], combined.weights)):
            carry = quota + carry - take(i, quota + carry)
        for i in range(len(queues)):  # what the last miners could not fill: round again
            if carry == 0:
                break
            carry -= take(i, carry)
    info = {"quotas": combined.quota_info(combined.quotas()), **c.info(), "picked": {g: shares[g] for g in groups if shares[g]}}
    info[GROUPS] = _objects(labels)
    return backend.selection(
        backend.keys(keys), np.asarray(values, dtype=np.float64), np.asarray(names, dtype=object), info
    )
