"""Plain float64 numpy references for every score in /work/shared/api.md, plus test-data helpers.

The score functions here mirror the keyword signatures of ``pickaxe.scores`` so a test can call
``px.scores.<name>(**kw)`` and ``reference.<name>(**kw)`` with the same arguments.  They are
written for obviousness, not speed:

* every input is cast to float64 first (a float32 input is compared against the float64 result
  computed on the very same float32 values, the cast being exact);
* softmax is taken in log space with the max shifted out and ``log1p`` for the sum of the other
  terms, so entropies and 1 - p(1) stay accurate when one class dominates (logits [0, -50, -60]);
* H uses 0 ln 0 = 0 through ``np.where``;
* logits with C == 1 are scored as the two-column logits [0, x];
* argmax ties go to the lowest class index (``np.argmax`` does this).

``top_k`` is the reference selection: a stable full sort of the non-NaN scores, highest first.
"""

from __future__ import annotations

import math

import numpy as np

import pickaxe as px
from pickaxe import _catalog

#: The SIMD levels from the lowest, and those this CPU runs (the ``level`` fixture's values).
SIMD_LEVELS = ["portable", "avx2", "avx512"]
SUPPORTED_LEVELS = SIMD_LEVELS[: SIMD_LEVELS.index(px.build_info()["simd_detected"]) + 1]

FIELDS_2D = ("confidences", "logits")
FIELDS_3D = ("query_by_committee", "mc_dropout")
ALL_FIELDS = ("confidence", "confidences", "logits", "query_by_committee", "mc_dropout", "embeddings")

# ---------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------


def f64(x) -> np.ndarray:
    """A float64 copy of ``x`` (exact for float32 / small ints)."""
    return np.array(x, dtype=np.float64, copy=True)


def binary_as_two_columns(x: np.ndarray) -> np.ndarray:
    """Logits with C == 1 (p = sigmoid(x)) are the two-column logits [0, x]."""
    if x.shape[-1] == 1:
        return np.concatenate([np.zeros_like(x), x], axis=-1)
    return x


def _exp_of_others(x: np.ndarray):
    """Return (argmax index with keepdims, max with keepdims, z = x - max, s = sum_{c != argmax} e^z_c)."""
    a = np.argmax(x, axis=-1)[..., None]
    m = np.take_along_axis(x, a, axis=-1)
    z = x - m  # the max entry is exactly 0, -inf entries stay -inf
    e = np.exp(z)
    np.put_along_axis(e, a, 0.0, axis=-1)
    s = e.sum(axis=-1, keepdims=True)
    return a, m, z, s


def log_softmax(x) -> np.ndarray:
    """ln softmax(x) along the last axis. -inf entries are allowed; an all -inf row is not."""
    x = f64(x)
    _, _, z, s = _exp_of_others(x)
    return z - np.log1p(s)


def logsumexp(x) -> np.ndarray:
    """ln sum_c e^{x_c} along the last axis (max-shifted, log1p for accuracy)."""
    x = f64(x)
    _, m, _, s = _exp_of_others(x)
    return (m + np.log1p(s))[..., 0]


def neg_p_log_p(p: np.ndarray, logp: np.ndarray) -> np.ndarray:
    """Elementwise -p ln p with 0 ln 0 = 0."""
    with np.errstate(invalid="ignore"):
        t = -p * logp
    return np.where(p > 0, t, 0.0)


def entropy_of(p: np.ndarray, logp: np.ndarray | None = None) -> np.ndarray:
    """H(p) along the last axis, nats, 0 ln 0 = 0."""
    p = f64(p)
    if logp is None:
        with np.errstate(divide="ignore", invalid="ignore"):
            logp = np.log(p)
    return neg_p_log_p(p, logp).sum(axis=-1)


def _probs_2d(field: str, x):
    """(p, ln p) for a 2-D field, float64, logits C == 1 expanded to [0, x]."""
    x = f64(x)
    if field == "confidences":
        with np.errstate(divide="ignore"):
            return x, np.log(x)
    if field == "logits":
        lp = log_softmax(binary_as_two_columns(x))
        return np.exp(lp), lp
    raise AssertionError(field)


def _probs_3d(x, logits: bool):
    """(p, ln p) for a 3-D field (N, M, C), float64; softmax per member when logits=True
    (a single logit per member is binary, as for the `logits` field: the pair [0, x])."""
    x = f64(x)
    if logits:
        lp = log_softmax(binary_as_two_columns(x))
        return np.exp(lp), lp
    with np.errstate(divide="ignore"):
        return x, np.log(x)


def _one_field(kwargs: dict, accepted: tuple) -> tuple:
    given = [(k, v) for k, v in kwargs.items() if k in ALL_FIELDS and v is not None]
    assert len(given) == 1, f"reference called with fields {list(kwargs)}"
    field, x = given[0]
    assert field in accepted, f"reference: {field} not in {accepted}"
    return field, x


def _votes_histogram(x3, p3, logits: bool) -> np.ndarray:
    """(N, C) counts of each member's argmax vote (ties -> lowest class index)."""
    x3 = binary_as_two_columns(f64(x3)) if logits else f64(x3)
    votes = np.argmax(x3 if logits else p3, axis=-1)  # softmax is monotone: argmax of logits
    c = x3.shape[-1]
    return (votes[..., None] == np.arange(c)).sum(axis=1).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# scores (same keyword names as pickaxe.scores)
# ---------------------------------------------------------------------------------------------


def least_confidence(*, confidence=None, confidences=None, logits=None, nan_policy="raise"):
    field, x = _one_field(dict(confidence=confidence, confidences=confidences, logits=logits),
                          ("confidence", "confidences", "logits"))
    if field == "confidence":
        return 1.0 - f64(x)
    if field == "confidences":
        return 1.0 - f64(x).max(axis=-1)
    lp = log_softmax(binary_as_two_columns(f64(x)))
    return -np.expm1(lp.max(axis=-1))  # 1 - p(1) without cancellation


def _top_two(field, x):
    """(1 - p(1), p(1), p(2)) per row; p(2) = 0 for a single class."""
    p, lp = _probs_2d(field, x)
    srt = -np.sort(-p, axis=-1)
    p1 = srt[:, 0]
    p2 = srt[:, 1] if p.shape[1] > 1 else np.zeros(p.shape[0])
    if field == "logits":
        one_minus_p1 = -np.expm1(lp.max(axis=-1))
    else:
        one_minus_p1 = 1.0 - p1
    return one_minus_p1, p1, p2


def margin(*, confidences=None, logits=None, nan_policy="raise"):
    field, x = _one_field(dict(confidences=confidences, logits=logits), FIELDS_2D)
    one_minus_p1, _, p2 = _top_two(field, x)
    return one_minus_p1 + p2  # = 1 - (p1 - p2)


def ratio(*, confidences=None, logits=None, nan_policy="raise"):
    field, x = _one_field(dict(confidences=confidences, logits=logits), FIELDS_2D)
    if field == "logits":
        lp = log_softmax(binary_as_two_columns(f64(x)))
        srt = -np.sort(-lp, axis=-1)
        return np.exp(srt[:, 1] - srt[:, 0])  # p2 / p1 = e^{x2 - x1}
    _, p1, p2 = _top_two(field, x)
    return p2 / p1


def entropy(*, confidences=None, logits=None, normalize=False, class_weights=None, nan_policy="raise"):
    field, x = _one_field(dict(confidences=confidences, logits=logits), FIELDS_2D)
    p, lp = _probs_2d(field, x)
    terms = neg_p_log_p(p, lp)
    if class_weights is not None:
        w = f64(class_weights)
        assert w.shape == (p.shape[1],)
        terms = terms * w
    h = terms.sum(axis=-1)
    if normalize:
        c = p.shape[1]
        h = np.zeros_like(h) if c == 1 else h / math.log(c)
    return h


def energy(*, logits, temperature=1.0, nan_policy="raise"):
    x = binary_as_two_columns(f64(logits))
    t = float(temperature)
    return -t * logsumexp(x / t)


def max_logit(*, logits, nan_policy="raise"):
    return -binary_as_two_columns(f64(logits)).max(axis=-1)


def activation(*, embeddings=None, logits=None, ord=2, nan_policy="raise"):
    field, x = _one_field(dict(embeddings=embeddings, logits=logits), ("embeddings", "logits"))
    if field == "logits":
        return energy(logits=x, temperature=1.0)
    z = np.abs(f64(x))
    o = float(ord)
    if o == math.inf:
        n = z.max(axis=-1)
    elif o == 1.0:
        n = z.sum(axis=-1)
    elif o == 2.0:
        n = np.sqrt((z * z).sum(axis=-1))
    else:
        n = (z ** o).sum(axis=-1) ** (1.0 / o)
    return -n


def vote_entropy(*, query_by_committee, logits=False, nan_policy="raise"):
    p, _ = _probs_3d(query_by_committee, logits)
    counts = _votes_histogram(query_by_committee, p, logits)
    return entropy_of(counts / p.shape[1])


def consensus_entropy(*, query_by_committee, logits=False, nan_policy="raise"):
    p, _ = _probs_3d(query_by_committee, logits)
    return entropy_of(p.mean(axis=1))


def kl_disagreement(*, query_by_committee, reduce="mean", logits=False, nan_policy="raise"):
    p, lp = _probs_3d(query_by_committee, logits)
    pbar = p.mean(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = p * (lp - np.log(pbar))
    kl = np.where(p > 0, t, 0.0).sum(axis=-1)  # (N, M)
    if reduce == "mean":
        return kl.mean(axis=1)
    assert reduce == "max"
    return kl.max(axis=1)


def _field3(mc_dropout, query_by_committee):
    _, x = _one_field(dict(mc_dropout=mc_dropout, query_by_committee=query_by_committee), FIELDS_3D)
    return x


def mutual_information(*, mc_dropout=None, query_by_committee=None, logits=False, nan_policy="raise"):
    p, lp = _probs_3d(_field3(mc_dropout, query_by_committee), logits)
    return entropy_of(p.mean(axis=1)) - neg_p_log_p(p, lp).sum(axis=-1).mean(axis=1)


def predictive_entropy(*, mc_dropout=None, query_by_committee=None, logits=False, nan_policy="raise"):
    p, _ = _probs_3d(_field3(mc_dropout, query_by_committee), logits)
    return entropy_of(p.mean(axis=1))


def variation_ratio(*, mc_dropout=None, query_by_committee=None, logits=False, nan_policy="raise"):
    x = _field3(mc_dropout, query_by_committee)
    p, _ = _probs_3d(x, logits)
    counts = _votes_histogram(x, p, logits)
    return 1.0 - counts.max(axis=-1) / p.shape[1]


def variance(*, mc_dropout=None, query_by_committee=None, logits=False, nan_policy="raise"):
    p, _ = _probs_3d(_field3(mc_dropout, query_by_committee), logits)
    return p.var(axis=1).mean(axis=-1)  # ddof = 0


SCORES = {
    f.__name__: f
    for f in (least_confidence, margin, ratio, entropy, energy, max_logit, activation, vote_entropy,
              consensus_entropy, kl_disagreement, mutual_information, predictive_entropy,
              variation_ratio, variance)
}

# which fields each score takes: the catalogue's (the formulas below are the oracle)
ACCEPTS = {spec.name: spec.fields for spec in _catalog.SCORES}

SHAPES = {
    "confidence": "(N,)",
    "confidences": "(N, C)",
    "logits": "(N, C)",
    "query_by_committee": "(N, M, C)",
    "mc_dropout": "(N, T, C)",
    "embeddings": "(N, D)",
}


def score(name: str, **kwargs) -> np.ndarray:
    return SCORES[name](**kwargs)


# ---------------------------------------------------------------------------------------------
# selection
# ---------------------------------------------------------------------------------------------


def top_k(scores, k: int) -> np.ndarray:
    """Positions of the k highest non-NaN scores, highest first, ties in ascending position."""
    s = np.asarray(scores)
    assert s.ndim == 1
    s = s.astype(np.float64)  # exact for float32 and for the small ints the tests use
    idx = np.flatnonzero(~np.isnan(s))
    order = idx[np.argsort(-s[idx], kind="stable")]
    return order[:k].astype(np.int64)


# ---------------------------------------------------------------------------------------------
# test data
# ---------------------------------------------------------------------------------------------


def random_probs(rng, shape, dtype=np.float64, alpha=1.0, zero_frac=0.1) -> np.ndarray:
    """Valid probability rows along the last axis: Dirichlet, some exact zeros, normalised in
    float64 and then cast (rows of the float32 result sum to 1 well within 1e-3)."""
    shape = tuple(shape)
    g = rng.gamma(alpha, size=shape)
    if zero_frac and shape[-1] > 1:
        g[rng.random(shape) < zero_frac] = 0.0
    # every row keeps at least one positive entry
    flat = g.reshape(-1, shape[-1]) if shape[-1] > 0 else g.reshape(-1, 1)
    if shape[-1] > 0 and flat.shape[0] > 0:
        keep = rng.integers(0, shape[-1], size=flat.shape[0])
        flat[np.arange(flat.shape[0]), keep] += rng.gamma(alpha, size=flat.shape[0]) + 1e-3
        g = flat.reshape(shape)
    p = g / g.sum(axis=-1, keepdims=True)
    return p.astype(dtype)


def random_logits(rng, shape, dtype=np.float64, scale=3.0, neg_inf_frac=0.05) -> np.ndarray:
    """Random logits; with C >= 2 a few entries are -inf (allowed), never a whole row."""
    shape = tuple(shape)
    x = rng.normal(0.0, scale, size=shape) + rng.normal(0.0, 5.0, size=shape[:-1] + (1,))
    if neg_inf_frac and shape[-1] > 1:
        mask = rng.random(shape) < neg_inf_frac
        flat = mask.reshape(-1, shape[-1])
        flat[np.arange(flat.shape[0]), rng.integers(0, shape[-1], size=flat.shape[0])] = False
        x[flat.reshape(shape)] = -np.inf
    return x.astype(dtype)


def random_field(rng, field: str, n: int, c: int, m: int = 3, dtype=np.float64,
                 logits: bool = False) -> np.ndarray:
    """Valid random data for ``field`` with N = n rows, C (or D) = c and M / T = m."""
    if field == "confidence":
        v = rng.random(n)
        if n >= 3:
            v[0], v[1] = 0.0, 1.0
        return v.astype(dtype)
    if field == "confidences":
        return random_probs(rng, (n, c), dtype)
    if field == "logits":
        return random_logits(rng, (n, c), dtype)
    if field == "embeddings":
        return rng.normal(0.0, 2.0, size=(n, c)).astype(dtype)
    if field in FIELDS_3D:
        if logits:
            return random_logits(rng, (n, m, c), dtype)
        return random_probs(rng, (n, m, c), dtype)
    raise AssertionError(field)


def layout(a: np.ndarray, kind: str) -> np.ndarray:
    """The same values as ``a`` in a different memory layout. Entries of the backing buffer that
    the view does not cover are NaN, so a kernel that reads outside the view fails loudly."""
    if kind == "C":
        return np.ascontiguousarray(a)
    if kind == "F":
        return np.asfortranarray(a)
    if kind == "strided":  # x[::2, ::3] (and ::2 on the member axis)
        steps = (2, 3) if a.ndim == 2 else ((2, 2, 3) if a.ndim == 3 else (3,))
        base = np.full(tuple(s * d for s, d in zip(a.shape, steps)), np.nan, dtype=a.dtype)
        v = base[tuple(slice(None, None, s) for s in steps)]
        v[...] = a
        return v
    if kind == "negative":  # negative strides on every axis
        steps = (2, 3) if a.ndim == 2 else ((2, 2, 3) if a.ndim == 3 else (2,))
        base = np.full(tuple(max(1, s * d) for s, d in zip(a.shape, steps)), np.nan, dtype=a.dtype)
        v = base[tuple(slice(None, None, -s) for s in steps)][tuple(slice(0, d) for d in a.shape)]
        v[...] = a
        assert all(st < 0 for st, d in zip(v.strides, v.shape) if d > 1) or a.size <= 1
        return v
    if kind == "reversed":  # plain x[::-1] on the row axis (contiguous rows, negative row stride)
        v = np.ascontiguousarray(a[::-1])[::-1]
        return v
    if kind == "transposed":  # rows are the fastest axis
        return np.ascontiguousarray(a.T).T
    if kind == "moveaxis_members_first":  # stored (M, N, C), viewed (N, M, C)
        assert a.ndim == 3
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 1, 0)), 0, 1)
    if kind == "moveaxis_classes_first":  # stored (C, N, M), viewed (N, M, C)
        assert a.ndim == 3
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 2, 0)), 0, 2)
    if kind == "readonly":
        v = np.array(a, copy=True)
        v.flags.writeable = False
        return v
    raise AssertionError(kind)


def assert_close(actual, expected, rtol: float, atol=0.0, what: str = "") -> None:
    """|actual - expected| <= atol + rtol * |expected| elementwise (NaN == NaN, inf == inf);
    ``atol`` may be an array of per-row tolerances. Reports the worst rows on failure."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != expected {expected.shape}"
    atol = np.broadcast_to(np.asarray(atol, dtype=np.float64), expected.shape)
    with np.errstate(invalid="ignore"):
        err = np.abs(actual - expected)
        ok = (actual == expected) | (err <= atol + rtol * np.abs(expected))
    ok |= np.isnan(actual) & np.isnan(expected)
    if not ok.all():
        bad = np.flatnonzero(~ok)
        lines = []
        for i in bad[:8]:
            rel = err[i] / abs(expected[i]) if expected[i] != 0 else np.inf
            lines.append(f"  row {i}: got {actual[i]!r}, expected {expected[i]!r}, "
                         f"abs err {err[i]:.3g}, rel err {rel:.3g}, atol {atol[i]:.3g}")
        raise AssertionError(f"{what}: {bad.size} of {expected.size} rows differ "
                             f"(rtol={rtol}):\n" + "\n".join(lines))
