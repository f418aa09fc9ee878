"""Uncertainty scores: one number per row, **higher means more worth labeling**.

Every function takes exactly one prediction field as a keyword (see the table in
`pickaxe`'s API: ``confidence`` (N,), ``confidences`` / ``logits`` (N, C),
``query_by_committee`` (N, M, C), ``mc_dropout`` (N, T, C), ``embeddings`` (N, D)) and
returns a 1-D array of N scores with the input's dtype (float32 stays float32, float64
stays float64, anything else becomes float64). Arrays are read in place whatever their
strides; the work runs in Rust, without the GIL, in parallel on large inputs.

Notation: p(1) ≥ p(2) are a row's two largest class probabilities, H(p) = −Σ_c p_c ln p_c
with 0 ln 0 = 0 (nats), p̄ the mean over members or passes. Logits are softmaxed; a
single logit column (C = 1) is a binary model, p = sigmoid(x), scored as the logits
[0, x].

Invalid rows (NaN, +inf, −inf outside logits, a logits row that is all −inf,
probabilities outside [0, 1] or not summing to 1 within 1e-3) raise ``ValueError`` naming
the field, the first invalid row and the fault with ``nan_policy="raise"`` (the default),
or get a NaN score with ``nan_policy="omit"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Optional

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

from . import _checks as checks
from . import _core
from ._catalog import SCORE_NAMES
from ._fields import check_nan_policy, pick_field, real_parameter, takes_fields

__all__ = list(SCORE_NAMES)

NanPolicy = Literal["raise", "omit"]


def _rows(func: str, score: str, fields: dict, nan_policy: str, **options) -> np.ndarray:
    policy = check_nan_policy(func, nan_policy)
    field, x = pick_field(func, fields)
    return _core.score_rows(field, score, x, policy, **options)


def _stack(
    func: str, score: str, fields: dict, logits: bool, nan_policy: str, reduce: str = "mean"
) -> np.ndarray:
    policy = check_nan_policy(func, nan_policy)
    field, x = pick_field(func, fields)
    return _core.score_stack(field, score, x, bool(logits), policy, reduce)


@takes_fields()
def least_confidence(
    *,
    confidence: Optional[ArrayLike] = None,
    confidences: Optional[ArrayLike] = None,
    logits: Optional[ArrayLike] = None,
    nan_policy: NanPolicy = "raise",
) -> np.ndarray:
    """Least confidence: ``1 - p(1)``.

    Fields: ``confidence`` (N,) the predicted class's probability, ``confidences`` (N, C)
    or ``logits`` (N, C). Returns (N,).

    >>> least_confidence(confidences=np.array([[0.9, 0.1], [0.5, 0.5]]))
    array([0.1, 0.5])
    """
    return _rows(
        "least_confidence",
        "least_confidence",
        {"confidence": confidence, "confidences": confidences, "logits": logits},
        nan_policy,
    )


@takes_fields()
def margin(
    *,
    confidences: Optional[ArrayLike] = None,
    logits: Optional[ArrayLike] = None,
    nan_policy: NanPolicy = "raise",
) -> np.ndarray:
    """Margin of confidence: ``1 - (p(1) - p(2))``, 1 when the top two tie.

    Fields: ``confidences`` or ``logits``, (N, C). Returns (N,).

    >>> margin(confidences=np.array([[0.7, 0.2, 0.1]]))
    array([0.5])
    """
    return _rows("margin", "margin", {"confidences": confidences, "logits": logits}, nan_policy)


@takes_fields()
def ratio(
    *,
    confidences: Optional[ArrayLike] = None,
    logits: Optional[ArrayLike] = None,
    nan_policy: NanPolicy = "raise",
) -> np.ndarray:
    """Ratio of confidence: ``p(2) / p(1)``, in [0, 1]; from logits ``exp(x(2) - x(1))``.

    Fields: ``confidences`` or ``logits``, (N, C). Returns (N,).

    >>> ratio(confidences=np.array([[0.5, 0.25, 0.25]]))
    array([0.5])
    """
    return _rows("ratio", "ratio", {"confidences": confidences, "logits": logits}, nan_policy)


@takes_fields()
def entropy(
    *,
    confidences: Optional[ArrayLike] = None,
    logits: Optional[ArrayLike] = None,
    normalize: bool = False,
    class_weights: Optional[ArrayLike] = None,
    nan_policy: NanPolicy = "raise",
) -> np.ndarray:
    """Entropy ``H(p) = -Σ_c p_c ln p_c`` in nats, or ``-Σ_c w_c p_c ln p_c`` with weights.

    From logits it is computed in one pass per row with one exp per value, as
    ``logsumexp(x) - Σ_c p_c x_c``, never forming the softmax.

    Fields: ``confidences`` or ``logits``, (N, C). ``normalize=True`` divides by ln C
    (into [0, 1]); ``class_weights`` is (C,), finite and ≥ 0 (2 entries for binary
    logits). Returns (N,).

    >>> entropy(confidences=np.array([[0.5, 0.5], [1.0, 0.0]]))
    array([0.69314718, 0.        ])
    """
    weights = checks.class_weights("entropy()", class_weights)
    return _rows(
        "entropy",
        "entropy",
        {"confidences": confidences, "logits": logits},
        nan_policy,
        normalize=bool(normalize),
        class_weights=weights,
    )


@takes_fields()
def energy(
    *,
    logits: Optional[ArrayLike] = None,
    temperature: float = 1.0,
    nan_policy: NanPolicy = "raise",
) -> np.ndarray:
    """Energy ``-T · logsumexp(x / T)``: high (little total evidence) is out of domain.

    Field: ``logits`` (N, C). ``temperature`` T > 0. Returns (N,).

    >>> energy(logits=np.array([[0.0, 0.0]]))
    array([-0.69314718])
    """
    return _rows(
        "energy",
        "energy",
        {"logits": logits},
        nan_policy,
        temperature=real_parameter("energy", "temperature", temperature),
    )


@takes_fields()
def max_logit(*, logits: Optional[ArrayLike] = None, nan_policy: NanPolicy = "raise") -> np.ndarray:
    """Negated maximum logit ``-max_c x_c`` (for C = 1, ``-max(0, x)``).

    Field: ``logits`` (N, C). Returns (N,).

    >>> max_logit(logits=np.array([[1.0, 3.0]]))
    array([-3.])
    """
    return _rows("max_logit", "max_logit", {"logits": logits}, nan_policy)


@takes_fields()
def activation(
    *,
    embeddings: Optional[ArrayLike] = None,
    logits: Optional[ArrayLike] = None,
    ord: float = 2,
    nan_policy: NanPolicy = "raise",
) -> np.ndarray:
    """Low activation first: ``-‖z‖_ord`` of embeddings; energy (T = 1) of logits.

    Fields: ``embeddings`` (N, D) or ``logits`` (N, C). ``ord`` > 0 or ``np.inf``
    (1, 2 and inf are vectorised). Returns (N,).

    >>> activation(embeddings=np.array([[3.0, 4.0]]))
    array([-5.])
    """
    if logits is not None and embeddings is None:
        return _rows("activation", "energy", {"embeddings": None, "logits": logits}, nan_policy)
    return _rows(
        "activation",
        "norm",
        {"embeddings": embeddings, "logits": logits},
        nan_policy,
        ord=real_parameter("activation", "ord", ord),
    )


_STACK_DOC = """

    With ``logits=True`` the last axis holds logits and each member or pass is softmaxed.
    Argmax ties go to the lowest class index. Returns (N,).
"""


@takes_fields()
def vote_entropy(
    *,
    query_by_committee: Optional[ArrayLike] = None,
    logits: bool = False,
    nan_policy: NanPolicy = "raise",
) -> np.ndarray:
    """Vote entropy: the entropy of the histogram of the M members' argmax votes,
    ``-Σ_c (v_c / M) ln(v_c / M)``.

    Field: ``query_by_committee`` (N, M, C).

    >>> vote_entropy(query_by_committee=np.array([[[0.9, 0.1], [0.2, 0.8]]]))
    array([0.69314718])
    """
    return _stack("vote_entropy", "vote_entropy", {"query_by_committee": query_by_committee}, logits, nan_policy)


@takes_fields()
def consensus_entropy(
    *,
    query_by_committee: Optional[ArrayLike] = None,
    logits: bool = False,
    nan_policy: NanPolicy = "raise",
) -> np.ndarray:
    """Consensus entropy ``H(p̄)``, p̄ the members' mean probabilities.

    Field: ``query_by_committee`` (N, M, C).

    >>> consensus_entropy(query_by_committee=np.array([[[1.0, 0.0], [0.0, 1.0]]]))
    array([0.69314718])
    """
    return _stack(
        "consensus_entropy", "consensus_entropy", {"query_by_committee": query_by_committee}, logits, nan_policy
    )


@takes_fields()
def kl_disagreement(
    *,
    query_by_committee: Optional[ArrayLike] = None,
    reduce: Literal["mean", "max"] = "mean",
    logits: bool = False,
    nan_policy: NanPolicy = "raise",
) -> np.ndarray:
    """KL disagreement: ``mean_m KL(p_m ‖ p̄)`` (or the max with ``reduce="max"``).

    The mean equals ``H(p̄) - mean_m H(p_m)``, the committee's mutual information.

    Field: ``query_by_committee`` (N, M, C).

    >>> kl_disagreement(query_by_committee=np.array([[[1.0, 0.0], [0.0, 1.0]]]))
    array([0.69314718])
    """
    if not (isinstance(reduce, str) and reduce in ("mean", "max")):
        raise ValueError(f'kl_disagreement(): reduce must be "mean" or "max"; got {reduce!r}')
    return _stack(
        "kl_disagreement", "kl_disagreement", {"query_by_committee": query_by_committee}, logits, nan_policy, reduce
    )


@takes_fields()
def mutual_information(
    *,
    mc_dropout: Optional[ArrayLike] = None,
    query_by_committee: Optional[ArrayLike] = None,
    logits: bool = False,
    nan_policy: NanPolicy = "raise",
) -> np.ndarray:
    """Mutual information (BALD): ``H(p̄) - mean_t H(p_t)``, ≥ 0 (a rounding below 0 is
    returned as 0).

    Fields: ``mc_dropout`` (N, T, C) or ``query_by_committee`` (N, M, C).

    >>> mutual_information(mc_dropout=np.array([[[1.0, 0.0], [0.0, 1.0]]]))
    array([0.69314718])
    """
    return _stack(
        "mutual_information",
        "mutual_information",
        {"mc_dropout": mc_dropout, "query_by_committee": query_by_committee},
        logits,
        nan_policy,
    )


@takes_fields()
def predictive_entropy(
    *,
    mc_dropout: Optional[ArrayLike] = None,
    query_by_committee: Optional[ArrayLike] = None,
    logits: bool = False,
    nan_policy: NanPolicy = "raise",
) -> np.ndarray:
    """Predictive entropy ``H(p̄)`` of the mean over passes or members.

    Fields: ``mc_dropout`` (N, T, C) or ``query_by_committee`` (N, M, C).

    >>> predictive_entropy(mc_dropout=np.array([[[0.5, 0.5], [0.5, 0.5]]]))
    array([0.69314718])
    """
    return _stack(
        "predictive_entropy",
        "predictive_entropy",
        {"mc_dropout": mc_dropout, "query_by_committee": query_by_committee},
        logits,
        nan_policy,
    )


@takes_fields()
def variation_ratio(
    *,
    mc_dropout: Optional[ArrayLike] = None,
    query_by_committee: Optional[ArrayLike] = None,
    logits: bool = False,
    nan_policy: NanPolicy = "raise",
) -> np.ndarray:
    """Variation ratio ``1 - v_mode / T``: the share of passes (members) whose argmax is
    not the modal class.

    Fields: ``mc_dropout`` (N, T, C) or ``query_by_committee`` (N, M, C).

    >>> variation_ratio(mc_dropout=np.array([[[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]]]))
    array([0.33333333])
    """
    return _stack(
        "variation_ratio",
        "variation_ratio",
        {"mc_dropout": mc_dropout, "query_by_committee": query_by_committee},
        logits,
        nan_policy,
    )


@takes_fields()
def variance(
    *,
    mc_dropout: Optional[ArrayLike] = None,
    query_by_committee: Optional[ArrayLike] = None,
    logits: bool = False,
    nan_policy: NanPolicy = "raise",
) -> np.ndarray:
    """Variance: ``mean_c var_t p_tc``, the variance over passes (ddof = 0) averaged
    over classes.

    Fields: ``mc_dropout`` (N, T, C) or ``query_by_committee`` (N, M, C).

    >>> variance(mc_dropout=np.array([[[1.0, 0.0], [0.0, 1.0]]]))
    array([0.25])
    """
    return _stack(
        "variance",
        "variance",
        {"mc_dropout": mc_dropout, "query_by_committee": query_by_committee},
        logits,
        nan_policy,
    )


for _f in (vote_entropy, consensus_entropy, kl_disagreement, mutual_information,
           predictive_entropy, variation_ratio, variance):
    _f.__doc__ = (_f.__doc__ or "").rstrip() + _STACK_DOC
del _f
