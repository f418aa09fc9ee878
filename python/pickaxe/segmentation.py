"""Per-pixel uncertainty of segmentation models, reduced per image.

Every per-row score of :mod:`pickaxe.scores` is computed per pixel of (N, C, H, W)
(``class_axis=1``) or (N, H, W, C) (``class_axis=-1``) predictions, or of (N, T, C, H, W)
/ (N, T, H, W, C) stacks for the committee and dropout scores (``class_axis`` counts in
the stacked array: 2 or -1), and reduced per image in the same pass over the data:

* ``reduce="mean"`` (default): mean over the image's unmasked pixels;
* ``reduce="max"``: the highest pixel score;
* ``reduce=("top", q)``, 0 < q ≤ 1: mean of the ⌈q · n⌉ highest pixel scores, n the
  number of unmasked pixels of the image;
* ``reduce=None``: no reduction, the (N, H, W) maps (masked pixels NaN).

No (N, H, W) map is held in memory unless ``reduce=None`` asks for it. ``mask`` is a
boolean (N, H, W) array, True where a pixel is ignored (void label, padding): masked
pixels are neither scored nor validated. **An image whose every pixel is masked scores
NaN**, which :func:`pickaxe.select.top_k` never selects.

Validation is the one of :mod:`pickaxe.scores`, per pixel: ``nan_policy="raise"``
(default) raises ``ValueError`` naming the field, the image, the pixel (row, column) and
the fault; ``nan_policy="omit"`` gives an image with an invalid unmasked pixel a NaN score
(and that pixel NaN in a map). float32 stays float32; arrays are read in place whatever
their strides.

>>> import numpy as np
>>> x = np.zeros((2, 3, 4, 4), dtype=np.float32)          # (N, C, H, W) logits
>>> entropy(logits=x).round(4)                             # uniform: ln 3 per pixel
array([1.0986, 1.0986], dtype=float32)
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

from . import _checks as checks
from . import _core
from ._catalog import VISION_SCORE_NAMES
from ._fields import as_float_array, check_nan_policy, given_field, real_parameter

__all__ = list(VISION_SCORE_NAMES)

_SHAPES = {
    "confidences": "(N, C, H, W) or (N, H, W, C)",
    "logits": "(N, C, H, W) or (N, H, W, C)",
    "query_by_committee": "(N, M, C, H, W) or (N, M, H, W, C)",
    "mc_dropout": "(N, T, C, H, W) or (N, T, H, W, C)",
}


def _listing(fields: tuple[str, ...]) -> str:
    return ", ".join(f"{f} {_SHAPES[f]}" for f in fields)


def parse_reduce(func: str, reduce: Any) -> tuple[str, float]:
    if reduce is None:
        return "none", 1.0
    if isinstance(reduce, str) and reduce in ("mean", "max"):
        return reduce, 1.0
    if (
        isinstance(reduce, tuple)
        and len(reduce) == 2
        and reduce[0] == "top"
        and isinstance(reduce[1], numbers.Real)
        and not isinstance(reduce[1], bool)
    ):
        q = float(reduce[1])
        if not (0.0 < q <= 1.0):
            raise ValueError(f"{func}(): reduce=('top', q) needs 0 < q <= 1; got q = {q}")
        return "top", q
    raise ValueError(
        f'{func}(): reduce must be "mean", "max", ("top", q) with 0 < q <= 1, or None; '
        f"got {reduce!r}"
    )


def _class_axis(func: str, class_axis: Any) -> int:
    if isinstance(class_axis, bool) or not isinstance(class_axis, numbers.Integral):
        raise TypeError(f"{func}(): class_axis must be an int; got {class_axis!r}")
    return int(class_axis)


def _run(
    func: str,
    score: str,
    fields: dict[str, Any],
    class_axis: Any,
    reduce: Any,
    mask: Any,
    nan_policy: Any,
    **options: Any,
) -> np.ndarray:
    policy = check_nan_policy(func, nan_policy)
    name = given_field(func, fields, _listing)
    ndim = 5 if name in ("query_by_committee", "mc_dropout") else 4
    x = as_float_array(func, name, fields[name], ndim, _SHAPES[name])
    how, q = parse_reduce(func, reduce)
    axis = _class_axis(func, class_axis)
    m = None
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != np.bool_:
            raise TypeError(f"{func}(): mask must be a boolean array (N, H, W); got dtype {m.dtype}")
        if m.ndim != 3:
            raise ValueError(f"{func}(): mask must be (N, H, W); got shape {m.shape}")
    return _core.score_pixels(name, score, x, axis, how, q, m, nan_policy=policy, **options)


def _fields_doc(*fields: str) -> str:
    return "Fields: " + _listing(fields) + "."


def least_confidence(*, confidences: Optional[ArrayLike] = None, logits: Optional[ArrayLike] = None,
                     class_axis: int = 1, reduce: Any = "mean", mask: Optional[ArrayLike] = None,
                     nan_policy: str = "raise") -> np.ndarray:
    """Per-pixel least confidence ``1 - p(1)``, reduced per image. Returns (N,) or (N, H, W)."""
    return _run("least_confidence", "least_confidence", {"confidences": confidences, "logits": logits},
                class_axis, reduce, mask, nan_policy)


def margin(*, confidences: Optional[ArrayLike] = None, logits: Optional[ArrayLike] = None,
           class_axis: int = 1, reduce: Any = "mean", mask: Optional[ArrayLike] = None,
           nan_policy: str = "raise") -> np.ndarray:
    """Per-pixel margin ``1 - (p(1) - p(2))``, reduced per image."""
    return _run("margin", "margin", {"confidences": confidences, "logits": logits},
                class_axis, reduce, mask, nan_policy)


def ratio(*, confidences: Optional[ArrayLike] = None, logits: Optional[ArrayLike] = None,
          class_axis: int = 1, reduce: Any = "mean", mask: Optional[ArrayLike] = None,
          nan_policy: str = "raise") -> np.ndarray:
    """Per-pixel ratio ``p(2) / p(1)``, reduced per image."""
    return _run("ratio", "ratio", {"confidences": confidences, "logits": logits},
                class_axis, reduce, mask, nan_policy)


def entropy(*, confidences: Optional[ArrayLike] = None, logits: Optional[ArrayLike] = None,
            class_axis: int = 1, reduce: Any = "mean", mask: Optional[ArrayLike] = None,
            normalize: bool = False, class_weights: Optional[ArrayLike] = None,
            nan_policy: str = "raise") -> np.ndarray:
    """Per-pixel entropy ``H(p)`` (nats; ``normalize`` divides by ln C; ``class_weights``
    (C,) gives ``-Σ w_c p_c ln p_c``), reduced per image.

    From (N, C, H, W) logits without weights this runs a class-major pass over tiles of
    pixels, vectorised across pixels."""
    weights = checks.class_weights("entropy()", class_weights)
    return _run("entropy", "entropy", {"confidences": confidences, "logits": logits},
                class_axis, reduce, mask, nan_policy, normalize=bool(normalize), class_weights=weights)


def energy(*, logits: Optional[ArrayLike] = None, class_axis: int = 1, reduce: Any = "mean",
           mask: Optional[ArrayLike] = None, temperature: float = 1.0,
           nan_policy: str = "raise") -> np.ndarray:
    """Per-pixel energy ``-T · logsumexp(x / T)``, reduced per image."""
    return _run("energy", "energy", {"logits": logits}, class_axis, reduce, mask, nan_policy,
                temperature=real_parameter("energy", "temperature", temperature))


def max_logit(*, logits: Optional[ArrayLike] = None, class_axis: int = 1, reduce: Any = "mean",
              mask: Optional[ArrayLike] = None, nan_policy: str = "raise") -> np.ndarray:
    """Per-pixel negated max logit ``-max_c x_c``, reduced per image."""
    return _run("max_logit", "max_logit", {"logits": logits}, class_axis, reduce, mask, nan_policy)


def _stack(func, fields, class_axis, reduce, mask, logits, nan_policy, kl_reduce="mean"):
    return _run(func, func, fields, class_axis, reduce, mask, nan_policy,
                logits=bool(logits), kl_reduce=kl_reduce)


def vote_entropy(*, query_by_committee: Optional[ArrayLike] = None, class_axis: int = 2,
                 reduce: Any = "mean", mask: Optional[ArrayLike] = None, logits: bool = False,
                 nan_policy: str = "raise") -> np.ndarray:
    """Per-pixel vote entropy of the members' argmax votes, reduced per image."""
    return _stack("vote_entropy", {"query_by_committee": query_by_committee}, class_axis, reduce,
                  mask, logits, nan_policy)


def consensus_entropy(*, query_by_committee: Optional[ArrayLike] = None, class_axis: int = 2,
                      reduce: Any = "mean", mask: Optional[ArrayLike] = None, logits: bool = False,
                      nan_policy: str = "raise") -> np.ndarray:
    """Per-pixel ``H(p̄)`` of the committee, reduced per image."""
    return _stack("consensus_entropy", {"query_by_committee": query_by_committee}, class_axis,
                  reduce, mask, logits, nan_policy)


def kl_disagreement(*, query_by_committee: Optional[ArrayLike] = None, class_axis: int = 2,
                    reduce: Any = "mean", mask: Optional[ArrayLike] = None,
                    member_reduce: str = "mean", logits: bool = False,
                    nan_policy: str = "raise") -> np.ndarray:
    """Per-pixel KL disagreement, reduced per image. ``member_reduce`` is the scores'
    ``reduce`` (over members: "mean" or "max"); ``reduce`` is over pixels."""
    if not (isinstance(member_reduce, str) and member_reduce in ("mean", "max")):
        raise ValueError(f'kl_disagreement(): member_reduce must be "mean" or "max"; got {member_reduce!r}')
    return _stack("kl_disagreement", {"query_by_committee": query_by_committee}, class_axis, reduce,
                  mask, logits, nan_policy, kl_reduce=member_reduce)


def mutual_information(*, mc_dropout: Optional[ArrayLike] = None,
                       query_by_committee: Optional[ArrayLike] = None, class_axis: int = 2,
                       reduce: Any = "mean", mask: Optional[ArrayLike] = None, logits: bool = False,
                       nan_policy: str = "raise") -> np.ndarray:
    """Per-pixel mutual information (BALD), reduced per image."""
    return _stack("mutual_information", {"mc_dropout": mc_dropout, "query_by_committee": query_by_committee},
                  class_axis, reduce, mask, logits, nan_policy)


def predictive_entropy(*, mc_dropout: Optional[ArrayLike] = None,
                       query_by_committee: Optional[ArrayLike] = None, class_axis: int = 2,
                       reduce: Any = "mean", mask: Optional[ArrayLike] = None, logits: bool = False,
                       nan_policy: str = "raise") -> np.ndarray:
    """Per-pixel predictive entropy ``H(p̄)``, reduced per image."""
    return _stack("predictive_entropy", {"mc_dropout": mc_dropout, "query_by_committee": query_by_committee},
                  class_axis, reduce, mask, logits, nan_policy)


def variation_ratio(*, mc_dropout: Optional[ArrayLike] = None,
                    query_by_committee: Optional[ArrayLike] = None, class_axis: int = 2,
                    reduce: Any = "mean", mask: Optional[ArrayLike] = None, logits: bool = False,
                    nan_policy: str = "raise") -> np.ndarray:
    """Per-pixel variation ratio, reduced per image."""
    return _stack("variation_ratio", {"mc_dropout": mc_dropout, "query_by_committee": query_by_committee},
                  class_axis, reduce, mask, logits, nan_policy)


def variance(*, mc_dropout: Optional[ArrayLike] = None,
             query_by_committee: Optional[ArrayLike] = None, class_axis: int = 2,
             reduce: Any = "mean", mask: Optional[ArrayLike] = None, logits: bool = False,
             nan_policy: str = "raise") -> np.ndarray:
    """Per-pixel variance over passes averaged over classes, reduced per image."""
    return _stack("variance", {"mc_dropout": mc_dropout, "query_by_committee": query_by_committee},
                  class_axis, reduce, mask, logits, nan_policy)
