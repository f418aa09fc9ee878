"""Per-box uncertainty of object detectors, reduced per image.

Every image's boxes are stacked in one array: ``confidences`` / ``logits`` (B, C), or
``query_by_committee`` / ``mc_dropout`` (B, M, C) for the committee and dropout scores.
``offsets`` (N + 1,) int64 marks where each image's boxes start: image ``i`` owns boxes
``offsets[i]:offsets[i + 1]``; ``offsets[0] == 0``, ``offsets[-1] == B``, never
decreasing. Each box gets the per-row score of :mod:`pickaxe.scores`, then per image:

* ``reduce="max"`` (default): ``max_b o_b · s_b``;
* ``reduce="mean"``: ``Σ o_b s_b / Σ o_b`` (the plain mean without objectness);
* ``reduce="sum"``: ``Σ o_b s_b``;

with ``o_b`` the box's ``objectness`` (B,) in [0, 1], or 1 when it is not given.

**An image with no boxes scores NaN** (so does a weighted mean whose objectness sums to
0), which :func:`pickaxe.select.top_k` never selects; replace it (``np.nan_to_num``) if
empty images should rank. Invalid boxes raise ``ValueError`` naming the field, the box,
its image and the fault (``nan_policy="omit"``: the image scores NaN).

:func:`localization_disagreement` compares a committee's (or dropout passes') boxes with
a reference prediction's by greedy IoU matching: how much the members disagree about
where the objects are.

>>> import numpy as np
>>> boxes = np.array([[0.9, 0.1], [0.5, 0.5], [0.6, 0.4]])
>>> least_confidence(confidences=boxes, offsets=np.array([0, 2, 2, 3]))
array([0.5, nan, 0.4])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

from . import _checks as checks
from . import _core
from ._catalog import VISION_SCORE_NAMES
from ._fields import as_float_array, check_nan_policy, real_parameter

__all__ = [*VISION_SCORE_NAMES, "localization_disagreement"]

_SHAPES = {
    "confidences": "(B, C)",
    "logits": "(B, C)",
    "query_by_committee": "(B, M, C)",
    "mc_dropout": "(B, T, C)",
}


def _run(func: str, score: str, fields: dict[str, Any], offsets: Any, reduce: Any,
         objectness: Any, nan_policy: Any, **options: Any) -> np.ndarray:
    policy = check_nan_policy(func, nan_policy)
    present = [k for k, v in fields.items() if v is not None]
    if len(present) != 1:
        listing = ", ".join(f"{f} {_SHAPES[f]}" for f in fields)
        got = "none" if not present else f"{len(present)}: {', '.join(present)}"
        raise TypeError(f"{func}() takes exactly one of the fields {listing}; got {got}")
    name = present[0]
    ndim = 3 if name in ("query_by_committee", "mc_dropout") else 2
    x = as_float_array(func, name, fields[name], ndim, _SHAPES[name])
    if offsets is None:
        raise TypeError(f"{func}(): offsets (N + 1,) int64 is required")
    off = np.asarray(offsets)
    if off.ndim != 1 or not (off.dtype.kind in "iu" or off.size == 0):
        raise ValueError(
            f"{func}(): offsets must be a 1-D integer array (N + 1,); got dtype {off.dtype}, "
            f"shape {off.shape}"
        )
    off = np.ascontiguousarray(off, dtype=np.int64)
    if not (isinstance(reduce, str) and reduce in ("max", "mean", "sum")):
        raise ValueError(f'{func}(): reduce must be "max", "mean" or "sum"; got {reduce!r}')
    obj = None
    if objectness is not None:
        obj = np.asarray(objectness)
        if obj.ndim != 1:
            raise ValueError(f"{func}(): objectness must be 1-D (B,); got shape {obj.shape}")
        obj = obj.astype(x.dtype, copy=False)
    return _core.score_boxes(name, score, x, off, reduce, obj, nan_policy=policy, **options)


def least_confidence(*, confidences: Optional[ArrayLike] = None, logits: Optional[ArrayLike] = None,
                     offsets: Optional[ArrayLike] = None, reduce: str = "max",
                     objectness: Optional[ArrayLike] = None, nan_policy: str = "raise") -> np.ndarray:
    """Per-box ``1 - p(1)``, reduced per image. Returns (N,)."""
    return _run("least_confidence", "least_confidence", {"confidences": confidences, "logits": logits},
                offsets, reduce, objectness, nan_policy)


def margin(*, confidences: Optional[ArrayLike] = None, logits: Optional[ArrayLike] = None,
           offsets: Optional[ArrayLike] = None, reduce: str = "max",
           objectness: Optional[ArrayLike] = None, nan_policy: str = "raise") -> np.ndarray:
    """Per-box ``1 - (p(1) - p(2))``, reduced per image."""
    return _run("margin", "margin", {"confidences": confidences, "logits": logits},
                offsets, reduce, objectness, nan_policy)


def ratio(*, confidences: Optional[ArrayLike] = None, logits: Optional[ArrayLike] = None,
          offsets: Optional[ArrayLike] = None, reduce: str = "max",
          objectness: Optional[ArrayLike] = None, nan_policy: str = "raise") -> np.ndarray:
    """Per-box ``p(2) / p(1)``, reduced per image."""
    return _run("ratio", "ratio", {"confidences": confidences, "logits": logits},
                offsets, reduce, objectness, nan_policy)


def entropy(*, confidences: Optional[ArrayLike] = None, logits: Optional[ArrayLike] = None,
            offsets: Optional[ArrayLike] = None, reduce: str = "max",
            objectness: Optional[ArrayLike] = None, normalize: bool = False,
            class_weights: Optional[ArrayLike] = None, nan_policy: str = "raise") -> np.ndarray:
    """Per-box entropy ``H(p)``, reduced per image."""
    weights = checks.class_weights("entropy()", class_weights)
    return _run("entropy", "entropy", {"confidences": confidences, "logits": logits},
                offsets, reduce, objectness, nan_policy, normalize=bool(normalize), class_weights=weights)


def energy(*, logits: Optional[ArrayLike] = None, offsets: Optional[ArrayLike] = None,
           reduce: str = "max", objectness: Optional[ArrayLike] = None, temperature: float = 1.0,
           nan_policy: str = "raise") -> np.ndarray:
    """Per-box energy ``-T · logsumexp(x / T)``, reduced per image."""
    return _run("energy", "energy", {"logits": logits}, offsets, reduce, objectness, nan_policy,
                temperature=real_parameter("energy", "temperature", temperature))


def max_logit(*, logits: Optional[ArrayLike] = None, offsets: Optional[ArrayLike] = None,
              reduce: str = "max", objectness: Optional[ArrayLike] = None,
              nan_policy: str = "raise") -> np.ndarray:
    """Per-box ``-max_c x_c``, reduced per image."""
    return _run("max_logit", "max_logit", {"logits": logits}, offsets, reduce, objectness, nan_policy)


def _stack(func, fields, offsets, reduce, objectness, logits, nan_policy, kl_reduce="mean"):
    return _run(func, func, fields, offsets, reduce, objectness, nan_policy,
                logits=bool(logits), kl_reduce=kl_reduce)


def vote_entropy(*, query_by_committee: Optional[ArrayLike] = None, offsets: Optional[ArrayLike] = None,
                 reduce: str = "max", objectness: Optional[ArrayLike] = None, logits: bool = False,
                 nan_policy: str = "raise") -> np.ndarray:
    """Per-box vote entropy, reduced per image."""
    return _stack("vote_entropy", {"query_by_committee": query_by_committee}, offsets, reduce,
                  objectness, logits, nan_policy)


def consensus_entropy(*, query_by_committee: Optional[ArrayLike] = None, offsets: Optional[ArrayLike] = None,
                      reduce: str = "max", objectness: Optional[ArrayLike] = None, logits: bool = False,
                      nan_policy: str = "raise") -> np.ndarray:
    """Per-box ``H(p̄)``, reduced per image."""
    return _stack("consensus_entropy", {"query_by_committee": query_by_committee}, offsets, reduce,
                  objectness, logits, nan_policy)


def kl_disagreement(*, query_by_committee: Optional[ArrayLike] = None, offsets: Optional[ArrayLike] = None,
                    reduce: str = "max", objectness: Optional[ArrayLike] = None,
                    member_reduce: str = "mean", logits: bool = False,
                    nan_policy: str = "raise") -> np.ndarray:
    """Per-box KL disagreement (``member_reduce`` over members), reduced per image."""
    if not (isinstance(member_reduce, str) and member_reduce in ("mean", "max")):
        raise ValueError(f'kl_disagreement(): member_reduce must be "mean" or "max"; got {member_reduce!r}')
    return _stack("kl_disagreement", {"query_by_committee": query_by_committee}, offsets, reduce,
                  objectness, logits, nan_policy, kl_reduce=member_reduce)


def mutual_information(*, mc_dropout: Optional[ArrayLike] = None,
                       query_by_committee: Optional[ArrayLike] = None,
                       offsets: Optional[ArrayLike] = None, reduce: str = "max",
                       objectness: Optional[ArrayLike] = None, logits: bool = False,
                       nan_policy: str = "raise") -> np.ndarray:
    """Per-box mutual information (BALD), reduced per image."""
    return _stack("mutual_information", {"mc_dropout": mc_dropout, "query_by_committee": query_by_committee},
                  offsets, reduce, objectness, logits, nan_policy)


def predictive_entropy(*, mc_dropout: Optional[ArrayLike] = None,
                       query_by_committee: Optional[ArrayLike] = None,
                       offsets: Optional[ArrayLike] = None, reduce: str = "max",
                       objectness: Optional[ArrayLike] = None, logits: bool = False,
                       nan_policy: str = "raise") -> np.ndarray:
    """Per-box ``H(p̄)``, reduced per image."""
    return _stack("predictive_entropy", {"mc_dropout": mc_dropout, "query_by_committee": query_by_committee},
                  offsets, reduce, objectness, logits, nan_policy)


def variation_ratio(*, mc_dropout: Optional[ArrayLike] = None,
                    query_by_committee: Optional[ArrayLike] = None,
                    offsets: Optional[ArrayLike] = None, reduce: str = "max",
                    objectness: Optional[ArrayLike] = None, logits: bool = False,
                    nan_policy: str = "raise") -> np.ndarray:
    """Per-box variation ratio, reduced per image."""
    return _stack("variation_ratio", {"mc_dropout": mc_dropout, "query_by_committee": query_by_committee},
                  offsets, reduce, objectness, logits, nan_policy)


def variance(*, mc_dropout: Optional[ArrayLike] = None,
             query_by_committee: Optional[ArrayLike] = None,
             offsets: Optional[ArrayLike] = None, reduce: str = "max",
             objectness: Optional[ArrayLike] = None, logits: bool = False,
             nan_policy: str = "raise") -> np.ndarray:
    """Per-box variance over passes averaged over classes, reduced per image."""
    return _stack("variance", {"mc_dropout": mc_dropout, "query_by_committee": query_by_committee},
                  offsets, reduce, objectness, logits, nan_policy)


# -- localisation disagreement ----------------------------------------------------------


def _offsets_array(func: str, name: str, offsets: Any, shape: str) -> np.ndarray:
    if offsets is None:
        raise TypeError(f"{func}(): {name} {shape} int64 is required")
    off = np.asarray(offsets)
    if off.ndim != 1 or not (off.dtype.kind in "iu" or off.size == 0):
        raise ValueError(
            f"{func}(): {name} must be a 1-D integer array {shape}; got dtype {off.dtype}, "
            f"shape {off.shape}"
        )
    return np.ascontiguousarray(off, dtype=np.int64)


def _one_of(func: str, fields: dict[str, Any], shape: str) -> tuple[str, Any]:
    present = [k for k, v in fields.items() if v is not None]
    if len(present) != 1:
        listing = " or ".join(f"{f} {shape}" for f in fields)
        got = "none" if not present else f"{len(present)}: {', '.join(present)}"
        raise TypeError(f"{func}() takes exactly one of {listing}; got {got}")
    return present[0], fields[present[0]]


def localization_disagreement(
    *,
    boxes: Optional[ArrayLike] = None,
    confidences: Optional[ArrayLike] = None,
    logits: Optional[ArrayLike] = None,
    offsets: Optional[ArrayLike] = None,
    member_boxes: Optional[ArrayLike] = None,
    member_confidences: Optional[ArrayLike] = None,
    member_logits: Optional[ArrayLike] = None,
    member_offsets: Optional[ArrayLike] = None,
    members: Optional[int] = None,
    iou_threshold: float = 0.5,
    per_class: bool = False,
    reduce: Optional[str] = "max",
    objectness: Optional[ArrayLike] = None,
) -> np.ndarray:
    """How much a committee (or the dropout passes) disagrees with a reference
    prediction about where the objects are, per image.

    Inputs, every image's boxes stacked:

    * the reference prediction: ``boxes`` (B, 4) as [x1, y1, x2, y2] (x1 ≤ x2, y1 ≤ y2),
      class scores ``confidences`` or ``logits`` (B, C) (C = 1 logits: binary, sigmoid),
      ``offsets`` (N + 1,): image i owns boxes ``offsets[i]:offsets[i + 1]``;
    * the M members' boxes: ``member_boxes`` (B', 4), ``member_confidences`` or
      ``member_logits`` (B', C), ``member_offsets`` (N·M + 1,) ordered image-major then
      member: image i, member m owns ``member_offsets[i*M + m]:member_offsets[i*M + m + 1]``;
      ``members`` = M.

    Matching, per image and member: the reference boxes in order of confidence (highest
    class probability) descending, ties by box index, each take the still unmatched member
    box of highest IoU ≥ ``iou_threshold`` (ties by member box index). IoU ≥ the threshold
    matches (IoU exactly at it included). ``per_class=True`` only lets a member box match
    when its argmax class equals the reference box's (argmax ties: lowest class).

    A reference box matched by K of the M members scores

        (1 − Σ_matched IoU / M) + (M − K) / M + D,
        D = (1/K) Σ_k KL(p_k ‖ p̄),  p̄ = (1/K) Σ_k p_k,

    one minus the mean IoU over the members (no match counts IoU 0), plus the fraction
    of members without a match, plus the class disagreement D of the matched member boxes'
    class distributions p_k (the mean KL from their mean, api.md's ``kl_disagreement`` of
    the matched boxes; the reference's own distribution does not take part; D = 0 when
    K < 2). The score lies in [0, 2 + ln M]: 0 when every member puts a box exactly on
    it with the same class distribution.

    Defined cases: IoU of two boxes whose union has no area (two zero-area boxes) is 0, so
    a zero-area reference box is never matched; a member with no boxes in an image leaves
    every reference box of the image unmatched for that member; **an image without
    reference boxes scores NaN** (never picked by `top_k`), whatever its members found.

    ``reduce``: ``"max"`` (default), ``"mean"`` or ``"sum"`` per image, weighted by the
    reference boxes' ``objectness`` (B,) in [0, 1] as in the other detection scores; or
    ``None`` for the (B,) per-box scores. Returns float32 when every float input is float32,
    else float64. Invalid input (non-finite coordinates, x2 < x1, invalid class scores as in
    :mod:`pickaxe.scores`, bad offsets, mismatched lengths) raises ``ValueError`` naming
    the array, the box, its image (and member) and the fault.

    >>> import numpy as np
    >>> ref = np.array([[0., 0., 10., 10.]]); conf = np.array([[0.9, 0.1]])
    >>> mem = np.array([[0., 0., 10., 8.], [20., 20., 30., 30.]])
    >>> mconf = np.array([[0.8, 0.2], [0.5, 0.5]])
    >>> localization_disagreement(boxes=ref, confidences=conf, offsets=[0, 1],
    ...     member_boxes=mem, member_confidences=mconf, member_offsets=[0, 1, 2],
    ...     members=2).round(3)                       # (1 - 0.8/2) + 1/2 + 0
    array([1.1])
    """
    func = "localization_disagreement"
    cname, cls = _one_of(func, {"confidences": confidences, "logits": logits}, "(B, C)")
    mname, mcls = _one_of(
        func, {"member_confidences": member_confidences, "member_logits": member_logits}, "(B', C)"
    )
    if boxes is None or member_boxes is None:
        missing = "boxes (B, 4)" if boxes is None else "member_boxes (B', 4)"
        raise TypeError(f"{func}(): {missing} is required")
    arrays = {
        "boxes": as_float_array(func, "boxes", boxes, 2, "(B, 4)"),
        cname: as_float_array(func, cname, cls, 2, "(B, C)"),
        "member_boxes": as_float_array(func, "member_boxes", member_boxes, 2, "(B', 4)"),
        mname: as_float_array(func, mname, mcls, 2, "(B', C)"),
    }
    if objectness is not None:
        obj = as_float_array(func, "objectness", objectness, 1, "(B,)")
        arrays["objectness"] = obj
    dtype = np.float32 if all(a.dtype == np.float32 for a in arrays.values()) else np.float64
    arrays = {k: v.astype(dtype, copy=False) for k, v in arrays.items()}
    off = _offsets_array(func, "offsets", offsets, "(N + 1,)")
    moff = _offsets_array(func, "member_offsets", member_offsets, "(N·M + 1,)")
    if isinstance(members, bool) or not isinstance(members, (int, np.integer)) or members < 1:
        raise ValueError(f"{func}(): members must be an int >= 1 (M, the members per image); got {members!r}")
    thr = real_parameter(func, "iou_threshold", iou_threshold)
    if not 0.0 < thr <= 1.0:
        raise ValueError(f"{func}(): iou_threshold must be in (0, 1]; got {iou_threshold!r}")
    if reduce is not None and not (isinstance(reduce, str) and reduce in ("max", "mean", "sum")):
        raise ValueError(f'{func}(): reduce must be "max", "mean", "sum" or None; got {reduce!r}')
    return _core.localization_disagreement(
        arrays["boxes"], arrays[cname], cname == "logits", off,
        arrays["member_boxes"], arrays[mname], mname == "member_logits", moff,
        int(members), thr, bool(per_class), "none" if reduce is None else reduce,
        arrays.get("objectness"),
    )
