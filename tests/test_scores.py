"""Every score in pickaxe.scores against the float64 references in reference.py.

Tolerances
----------
float64 input: rtol 1e-10.  float32 input: rtol 1e-5, against the float64 reference computed on
the same float32 values cast to float64 (the cast is exact, so the only error measured is the
implementation's own float32 arithmetic).

An absolute tolerance is used only for scores whose true value can be ~0 *by cancellation*, where
no fixed relative tolerance is attainable from the inputs' precision.  It is ``K * scale`` with
K = 1e-6 for float32 (~8 ulps of 1.0 in float32) and K = 1e-12 for float64 (still 1e-12 absolute,
far below any score difference that matters), and ``scale`` the size of the terms that cancel
(see ``tolerances``).  Scores that are sums of non-negative terms (entropy of confidences or
logits, vote entropy, ratio, norms) get no atol at all; max_logit must be exact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import pickaxe as px
import reference as R

F32, F64 = np.float32, np.float64
DTYPES = [F32, F64]
RTOL = {F32: 1e-5, F64: 1e-10}
K_ABS = {F32: 1e-6, F64: 1e-12}

C_VALUES = [1, 2, 3, 7, 8, 9, 16, 17, 33, 1000, 100000]
C_VALUES_3D = [1, 2, 3, 100]
M_VALUES = [1, 2, 5]

# (score, field, extra kwargs); "cw" marks random class weights filled in per C
CONFIGS_2D = [
    ("least_confidence", "confidences", {}),
    ("least_confidence", "logits", {}),
    ("margin", "confidences", {}),
    ("margin", "logits", {}),
    ("ratio", "confidences", {}),
    ("ratio", "logits", {}),
    ("entropy", "confidences", {}),
    ("entropy", "logits", {}),
    ("entropy", "confidences", {"normalize": True}),
    ("entropy", "logits", {"normalize": True}),
    ("entropy", "confidences", {"class_weights": "cw"}),
    ("entropy", "logits", {"class_weights": "cw"}),
    ("entropy", "logits", {"class_weights": "cw", "normalize": True}),
    ("energy", "logits", {}),
    ("energy", "logits", {"temperature": 0.5}),
    ("energy", "logits", {"temperature": 4.0}),
    ("max_logit", "logits", {}),
    ("activation", "logits", {}),
    ("activation", "embeddings", {}),
    ("activation", "embeddings", {"ord": 1}),
    ("activation", "embeddings", {"ord": np.inf}),
    ("activation", "embeddings", {"ord": 0.5}),
    ("activation", "embeddings", {"ord": 3.0}),
]

CONFIGS_3D = [
    ("vote_entropy", "query_by_committee", {}),
    ("consensus_entropy", "query_by_committee", {}),
    ("kl_disagreement", "query_by_committee", {}),
    ("kl_disagreement", "query_by_committee", {"reduce": "mean"}),
    ("kl_disagreement", "query_by_committee", {"reduce": "max"}),
    ("mutual_information", "mc_dropout", {}),
    ("mutual_information", "query_by_committee", {}),
    ("predictive_entropy", "mc_dropout", {}),
    ("predictive_entropy", "query_by_committee", {}),
    ("variation_ratio", "mc_dropout", {}),
    ("variation_ratio", "query_by_committee", {}),
    ("variance", "mc_dropout", {}),
    ("variance", "query_by_committee", {}),
]


def cfg_id(cfg):
    name, field, kw = cfg
    extra = ",".join(f"{k}={v}" for k, v in kw.items())
    return f"{name}[{field}{',' + extra if extra else ''}]"


def fill_kwargs(kw: dict, field: str, x: np.ndarray, rng) -> dict:
    """Replace the "cw" marker with random non-negative class weights (one of them 0)."""
    kw = dict(kw)
    if kw.get("class_weights") == "cw":
        c = x.shape[-1]
        if field == "logits" and c == 1:
            c = 2  # binary logits are scored as [0, x]
        w = rng.uniform(0.0, 3.0, size=c)
        w[rng.integers(0, c)] = 0.0
        kw["class_weights"] = w
    return kw


def _dtype_key(x) -> type:
    return F32 if np.asarray(x).dtype == np.float32 else F64


def tolerances(name: str, field: str, kw: dict, x) -> tuple[float, np.ndarray | float]:
    """(rtol, atol) for comparing ``name`` on ``x`` with its float64 reference (see module doc)."""
    dt = _dtype_key(x)
    rtol, k = RTOL[dt], K_ABS[dt]
    x64 = np.asarray(x, dtype=np.float64)
    logits = bool(kw.get("logits", False)) or field == "logits"
    c = x64.shape[-1] if x64.ndim >= 2 else 1
    scale: float | np.ndarray = 0.0
    if name in ("least_confidence", "margin") and field == "logits" or name == "margin":
        # 1 - p(1) and 1 - p(1) + p(2) are ~0 when one class dominates; evaluated as 1 - p(1)
        # they carry an absolute error of a few ulps of 1.0, which is the best p(1) allows.
        scale = 1.0
    elif name in ("mutual_information", "kl_disagreement"):
        # differences of entropies (H(pbar) - mean H(p_t)); 0 when the members agree.  The terms
        # that cancel are bounded by ln C, and pbar itself is rounded (an ulp of 1 at most).
        scale = math.log(max(c, 1)) + 1.0
    elif name in ("consensus_entropy", "predictive_entropy"):
        # H(pbar) of the *averaged* probabilities: pbar's largest entry carries an absolute
        # rounding error of an ulp of 1.0, so a nearly one-hot pbar (H ~ 0) can only be
        # matched to an absolute error of that size (the reference has the same limitation).
        scale = 1.0
    elif name == "variance":
        # ~0 when the passes agree; E[p^2] - E[p]^2 cancels terms of size E[p^2].
        p = np.exp(R.log_softmax(x64)) if logits else x64
        scale = (p * p).mean(axis=(1, 2)) if p.size else 0.0
    elif name == "energy" or (name == "activation" and field == "logits"):
        # -(max + T ln sum e^{(x - max)/T}) crosses 0 and is formed by adding two terms, so its
        # absolute error is a few ulps of |max x| + T ln C.
        t = float(kw.get("temperature", 1.0))
        xx = R.binary_as_two_columns(x64) if x64.size else x64
        finite = np.where(np.isfinite(xx), np.abs(xx), 0.0)
        mx = finite.max(axis=-1) if xx.size else 0.0
        scale = mx + t * math.log(max(xx.shape[-1], 2)) + 1.0
    return rtol, k * np.asarray(scale)


def call(name: str, field: str, x, **kw):
    return getattr(px.scores, name)(**{field: x}, **kw)


def check(name: str, field: str, x, kw: dict, *, expect_dtype=None, what=""):
    """Call pickaxe and the reference, check type / shape / dtype and values."""
    n = len(x)
    res = call(name, field, x, **kw)
    exp = R.score(name, **{field: x}, **kw)
    assert isinstance(res, np.ndarray), type(res)
    assert res.ndim == 1 and res.shape == (n,), f"shape {res.shape}, expected ({n},)"
    if expect_dtype is None:
        expect_dtype = np.float32 if np.asarray(x).dtype == np.float32 else np.float64
    assert res.dtype == expect_dtype, f"result dtype {res.dtype}, expected {np.dtype(expect_dtype)}"
    rtol, atol = tolerances(name, field, kw, x)
    R.assert_close(res, exp, rtol, atol, what=what or f"{name}({field}, {kw})")
    return res


# ---------------------------------------------------------------------------------------------
# values over C and dtype
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", C_VALUES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cfg", CONFIGS_2D, ids=cfg_id)
def test_2d_scores_match_reference(cfg, dtype, c, rng):
    name, field, kw = cfg
    n = 3 if c >= 100000 else 40
    a = R.random_field(rng, field, n, c, dtype=dtype)
    kw = fill_kwargs(kw, field, a, rng)
    for kind in ("C", "F", "strided", "negative"):
        check(name, field, R.layout(a, kind), kw, what=f"{name}({field}, {kw}) layout {kind}")


@pytest.mark.parametrize("c", C_VALUES_3D)
@pytest.mark.parametrize("m", M_VALUES)
@pytest.mark.parametrize("logits", [False, True], ids=["probs", "logits"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cfg", CONFIGS_3D, ids=cfg_id)
def test_3d_scores_match_reference(cfg, dtype, logits, m, c, rng):
    name, field, kw = cfg
    # C == 1 with logits=True: a binary model per member, p = sigmoid(x), as for `logits`.
    a = R.random_field(rng, field, 25, c, m=m, dtype=dtype, logits=logits)
    kw = dict(kw, logits=logits) if logits else dict(kw)
    for kind in ("C", "moveaxis_members_first", "moveaxis_classes_first", "negative"):
        check(name, field, R.layout(a, kind), kw, what=f"{name}({field}, {kw}) layout {kind}")


@pytest.mark.parametrize("n", [0, 1, 2, 7, 8, 9, 17, 1000])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_confidence_field(dtype, n, rng):
    x = R.random_field(rng, "confidence", n, 1, dtype=dtype)
    res = check("least_confidence", "confidence", x, {})
    # 1 - p is exact for p in [0.5, 1] and within an ulp otherwise
    R.assert_close(res, 1.0 - x.astype(np.float64), rtol=RTOL[dtype])


# ---------------------------------------------------------------------------------------------
# edge shapes: zero rows, one row, huge C
# ---------------------------------------------------------------------------------------------

ALL_CFGS = [(c, False) for c in CONFIGS_2D] + [(c, lg) for c in CONFIGS_3D for lg in (False, True)]


def _all_cfg_id(p):
    (cfg, lg) = p
    return cfg_id(cfg) + ("-logits" if lg else "")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cfg_lg", ALL_CFGS, ids=_all_cfg_id)
def test_zero_rows(cfg_lg, dtype, rng):
    (name, field, kw), lg = cfg_lg
    shape = (0, 3, 4) if field in R.FIELDS_3D else (0, 4)
    x = np.zeros(shape, dtype=dtype)
    kw = fill_kwargs(kw, field, x, rng)
    if lg:
        kw["logits"] = True
    res = call(name, field, x, **kw)
    assert isinstance(res, np.ndarray)
    assert res.shape == (0,) and res.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_zero_rows_confidence(dtype):
    res = px.scores.least_confidence(confidence=np.zeros(0, dtype=dtype))
    assert res.shape == (0,) and res.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cfg_lg", ALL_CFGS, ids=_all_cfg_id)
def test_one_row(cfg_lg, dtype, rng):
    (name, field, kw), lg = cfg_lg
    x = R.random_field(rng, field, 1, 5, m=3, dtype=dtype, logits=lg)
    kw = fill_kwargs(kw, field, x, rng)
    if lg:
        kw["logits"] = True
    check(name, field, x, kw)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_huge_c_uniform_row(dtype):
    """One row of 10^6 equal probabilities (a float32 sum of 10^6 equal terms must not drift
    past the 1e-3 sum tolerance, and the entropy must be ln C)."""
    c = 10**6
    x = np.full((1, c), 1.0 / c, dtype=dtype)
    h = px.scores.entropy(confidences=x)
    R.assert_close(h, R.entropy(confidences=x), RTOL[dtype])
    R.assert_close(h, [math.log(c)], 1e-5)
    hn = px.scores.entropy(confidences=x, normalize=True)
    R.assert_close(hn, [1.0], 1e-5)
    lg = np.zeros((1, c), dtype=dtype)
    R.assert_close(px.scores.entropy(logits=lg), [math.log(c)], RTOL[dtype])
    R.assert_close(px.scores.energy(logits=lg), [-math.log(c)], RTOL[dtype])
    R.assert_close(px.scores.least_confidence(logits=lg), [1.0 - 1.0 / c], RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cfg", [c for c in CONFIGS_2D if c[1] == "logits"], ids=cfg_id)
def test_huge_c_random_logits_row(cfg, dtype, rng):
    name, field, kw = cfg
    x = R.random_logits(rng, (1, 10**6), dtype)
    check(name, field, x, fill_kwargs(kw, field, x, rng))


# ---------------------------------------------------------------------------------------------
# memory layouts: read in place whatever the strides
# ---------------------------------------------------------------------------------------------

LAYOUTS_2D = ["F", "strided", "negative", "reversed", "transposed", "readonly"]
LAYOUTS_3D = LAYOUTS_2D + ["moveaxis_members_first", "moveaxis_classes_first"]


@pytest.mark.parametrize("kind", LAYOUTS_2D)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cfg", CONFIGS_2D, ids=cfg_id)
def test_layouts_2d(cfg, dtype, kind, rng):
    name, field, kw = cfg
    a = R.random_field(rng, field, 11, 9, dtype=dtype)
    x = R.layout(a, kind)
    assert np.array_equal(x, a)
    before = x.copy()
    kw = fill_kwargs(kw, field, x, rng)
    res = check(name, field, x, kw)
    np.testing.assert_array_equal(x, before)  # input untouched
    assert res.shape == (11,)


@pytest.mark.parametrize("kind", LAYOUTS_3D)
@pytest.mark.parametrize("logits", [False, True], ids=["probs", "logits"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cfg", CONFIGS_3D, ids=cfg_id)
def test_layouts_3d(cfg, dtype, logits, kind, rng):
    name, field, kw = cfg
    a = R.random_field(rng, field, 11, 6, m=5, dtype=dtype, logits=logits)
    x = R.layout(a, kind)
    assert np.array_equal(x, a)
    before = x.copy()
    kw = dict(kw, logits=True) if logits else dict(kw)
    res = check(name, field, x, kw)
    np.testing.assert_array_equal(x, before)  # input untouched
    assert res.shape == (11,)


@pytest.mark.parametrize("kind", ["strided", "negative", "reversed", "readonly"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_layouts_confidence(dtype, kind, rng):
    a = R.random_field(rng, "confidence", 13, 1, dtype=dtype)
    check("least_confidence", "confidence", R.layout(a, kind), {})


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_zero_stride_broadcast_views(dtype, rng):
    """np.broadcast_to gives stride-0 axes (every row the same row)."""
    row = R.random_probs(rng, (1, 7), dtype)
    x = np.broadcast_to(row, (5, 7))
    assert x.strides[0] == 0
    res = check("entropy", "confidences", x, {})
    assert np.all(res == res[0])
    ones = np.broadcast_to(np.ones((1, 1), dtype=dtype), (3, 1))
    np.testing.assert_array_equal(check("margin", "confidences", ones, {}), np.zeros(3))
    lg = np.broadcast_to(np.asarray(0.25, dtype=dtype), (4, 6))  # both axes stride 0
    assert lg.strides == (0, 0)
    R.assert_close(check("entropy", "logits", lg, {}), np.full(4, math.log(6)), RTOL[dtype])
    check("energy", "logits", lg, {})
    q = np.broadcast_to(R.random_probs(rng, (1, 1, 4), dtype), (3, 5, 4))
    res = check("mutual_information", "mc_dropout", q, {})
    # identical passes: no disagreement
    R.assert_close(res, np.zeros(3), 0, atol=tolerances("mutual_information", "mc_dropout", {}, q)[1])
    e = np.broadcast_to(np.arange(1.0, 4.0, dtype=dtype), (6, 3))
    R.assert_close(check("activation", "embeddings", e, {}), np.full(6, -math.sqrt(14.0)), RTOL[dtype])


# ---------------------------------------------------------------------------------------------
# dtypes: float32 stays float32, float64 stays float64, the rest becomes float64
# ---------------------------------------------------------------------------------------------


def _onehot(n, c, rng):
    out = np.zeros((n, c), dtype=np.int64)
    out[np.arange(n), rng.integers(0, c, size=n)] = 1
    return out


CONVERSIONS = {
    "int64": lambda a: a.astype(np.int64),
    "int32": lambda a: a.astype(np.int32),
    "uint8": lambda a: a.astype(np.uint8),
    "int8": lambda a: a.astype(np.int8),
    "bool": lambda a: a.astype(bool),
    "float16": lambda a: a.astype(np.float16),
    "list": lambda a: a.tolist(),
    "list_of_int": lambda a: a.astype(np.int64).tolist(),
}


def _dyadic_probs(n, c, rng):
    """Probability rows made of powers of two (exact in float16 / any float dtype)."""
    base = np.array([0.5] + [0.5 ** (i + 1) for i in range(1, c - 1)] + [0.5 ** (c - 1)])
    assert base.sum() == 1.0
    return np.stack([rng.permutation(base) for _ in range(n)])


@pytest.mark.parametrize("conv", list(CONVERSIONS))
def test_other_dtypes_become_float64_confidences(conv, rng):
    if conv in ("float16", "list"):
        a = _dyadic_probs(12, 4, rng)
    else:
        a = _onehot(12, 4, rng)
    x = CONVERSIONS[conv](a)
    for name in ("least_confidence", "margin", "ratio", "entropy"):
        check(name, "confidences", x, {}, expect_dtype=np.float64)


@pytest.mark.parametrize("conv", ["int64", "int32", "int8", "uint8", "float16", "list", "list_of_int"])
def test_other_dtypes_become_float64_logits(conv, rng):
    a = rng.integers(-5, 6, size=(10, 5)).astype(np.float64)
    if conv == "uint8":
        a = np.abs(a)
    x = CONVERSIONS[conv](a)
    for name in ("least_confidence", "margin", "ratio", "entropy", "energy", "max_logit", "activation"):
        check(name, "logits", x, {}, expect_dtype=np.float64)


@pytest.mark.parametrize("conv", ["int64", "int32", "bool", "float16", "list"])
def test_other_dtypes_become_float64_3d_and_embeddings(conv, rng):
    q = np.zeros((6, 3, 4), dtype=np.int64)
    idx = rng.integers(0, 4, size=(6, 3))
    np.put_along_axis(q, idx[..., None], 1, axis=-1)
    xq = CONVERSIONS[conv](q)
    for name, field, kw in CONFIGS_3D:
        check(name, field, xq, kw, expect_dtype=np.float64)
    e = CONVERSIONS[conv](rng.integers(-3, 4, size=(6, 5)) if conv != "bool" else rng.integers(0, 2, size=(6, 5)))
    check("activation", "embeddings", e, {}, expect_dtype=np.float64)


@pytest.mark.parametrize("conv", ["int64", "bool", "float16", "list"])
def test_other_dtypes_become_float64_confidence(conv, rng):
    a = rng.integers(0, 2, size=9)
    x = CONVERSIONS[conv](a)
    check("least_confidence", "confidence", x, {}, expect_dtype=np.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_class_weights_any_sequence(dtype, rng):
    """class_weights as a list or another dtype gives the same scores; all-ones weights are H."""
    x = R.random_probs(rng, (20, 4), dtype)
    w = [0.5, 2, 1.0, 0]
    ref = R.entropy(confidences=x, class_weights=w)
    for ww in (w, np.array(w, dtype=np.float32), np.array(w, dtype=np.float64)):
        res = px.scores.entropy(confidences=x, class_weights=ww)
        assert res.dtype == dtype
        R.assert_close(res, ref, RTOL[dtype])
    R.assert_close(px.scores.entropy(confidences=x, class_weights=np.ones(4)),
                   px.scores.entropy(confidences=x), RTOL[dtype])


# ---------------------------------------------------------------------------------------------
# semantics spelled out in api.md / spec
# ---------------------------------------------------------------------------------------------

LOGIT_CFGS = [c for c in CONFIGS_2D if c[1] == "logits"]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cfg", LOGIT_CFGS, ids=cfg_id)
def test_binary_logits_are_two_column(cfg, dtype, rng):
    """C == 1 logits mean p = sigmoid(x): scored exactly as the two-column logits [0, x]."""
    name, field, kw = cfg
    x = (rng.normal(0, 4, size=(30, 1))).astype(dtype)
    x[:3, 0] = [0.0, 30.0, -30.0]
    two = np.concatenate([np.zeros_like(x), x], axis=1)
    kw = fill_kwargs(kw, "logits", two, rng)
    a = call(name, "logits", x, **kw)
    b = call(name, "logits", two, **kw)
    R.assert_close(a, b, rtol=RTOL[dtype], atol=tolerances(name, "logits", kw, two)[1])
    check(name, "logits", x, kw)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_binary_logits_explicit_values(dtype):
    x = np.array([[0.0], [2.0], [-2.0]], dtype=dtype)
    p = 1.0 / (1.0 + np.exp(-np.array([0.0, 2.0, -2.0])))
    p1 = np.maximum(p, 1 - p)
    rt = RTOL[dtype]
    R.assert_close(px.scores.least_confidence(logits=x), 1 - p1, rt)
    R.assert_close(px.scores.margin(logits=x), 1 - (p1 - (1 - p1)), rt)
    R.assert_close(px.scores.ratio(logits=x), (1 - p1) / p1, rt)
    h = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    R.assert_close(px.scores.entropy(logits=x), h, rt)
    R.assert_close(px.scores.entropy(logits=x, normalize=True), h / math.log(2), rt)
    R.assert_close(px.scores.energy(logits=x), -np.log(1 + np.exp([0.0, 2.0, -2.0])), rt)
    np.testing.assert_array_equal(px.scores.max_logit(logits=x), np.array([-0.0, -2.0, -0.0]))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_single_class_confidences(dtype):
    """confidences with C == 1: the only class has p = 1; every uncertainty is 0."""
    x = np.ones((4, 1), dtype=dtype)
    for name, kw in [("least_confidence", {}), ("margin", {}), ("ratio", {}), ("entropy", {}),
                     ("entropy", {"normalize": True}), ("entropy", {"class_weights": [3.0]})]:
        res = call(name, "confidences", x, **kw)
        assert res.dtype == dtype
        np.testing.assert_array_equal(res, np.zeros(4, dtype=dtype), err_msg=f"{name} {kw}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_tiny_entropies_when_one_class_dominates(dtype):
    """Accuracy when one class dominates: H ~ 1e-20 must still be right to rtol 1e-5."""
    x = np.array([[0.0, -50.0, -60.0],
                  [20.0, -20.0, -25.0],
                  [-3.0, -33.0, -40.0]], dtype=dtype)
    ref = R.entropy(logits=x)
    assert np.all(ref > 0) and ref[0] < 1e-19
    res = px.scores.entropy(logits=x)
    assert res.dtype == dtype
    R.assert_close(res, ref, 1e-5, what="entropy(logits) with one dominant class")
    R.assert_close(px.scores.entropy(logits=x, normalize=True), ref / math.log(3), 1e-5)
    # binary logits far from 0
    xb = np.array([[-35.0], [40.0], [17.0]], dtype=dtype)
    R.assert_close(px.scores.entropy(logits=xb), R.entropy(logits=xb), 1e-5)
    # ratio p2 / p1 = e^{x2 - x1} is a relative quantity too
    R.assert_close(px.scores.ratio(logits=x), R.ratio(logits=x), 1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_neg_inf_logits_allowed(dtype):
    """-inf is allowed in logits: it is a class with probability 0 (0 ln 0 = 0)."""
    x = np.array([[0.0, -np.inf, 0.0], [1.0, -np.inf, -np.inf], [-np.inf, 2.0, 1.0]], dtype=dtype)
    h = px.scores.entropy(logits=x)
    assert np.all(np.isfinite(h))
    R.assert_close(h, [math.log(2), 0.0, R.entropy(logits=x)[2]], RTOL[dtype])
    for name, kw in [("least_confidence", {}), ("margin", {}), ("ratio", {}), ("energy", {}),
                     ("max_logit", {}), ("activation", {}), ("entropy", {"normalize": True})]:
        res = check(name, "logits", x, kw)
        assert np.all(np.isfinite(res)), name
    q = np.array([[[0.0, -np.inf], [-np.inf, 0.0], [1.0, 1.0]]], dtype=dtype)
    for name, field, kw in CONFIGS_3D:
        res = check(name, field, q, dict(kw, logits=True))
        assert np.all(np.isfinite(res)), name


@pytest.mark.parametrize("logits", [False, True], ids=["probs", "logits"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_argmax_ties_go_to_lowest_class(dtype, logits):
    if logits:
        q = np.array([[[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [-1.0, 1.0, -1.0]],
                      [[2.0, 2.0, 2.0], [-1.0, 3.0, 3.0], [-1.0, 0.0, 0.0]]], dtype=dtype)
    else:
        q = np.array([[[0.4, 0.4, 0.2], [0.4, 0.4, 0.2], [0.2, 0.6, 0.2]],
                      [[1 / 3, 1 / 3, 1 / 3], [0.0, 0.5, 0.5], [0.0, 0.5, 0.5]]], dtype=dtype)
    # row 0 votes [0, 0, 1]; row 1 votes [0, 1, 1]
    h = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    kw = {"logits": True} if logits else {}
    R.assert_close(px.scores.vote_entropy(query_by_committee=q, **kw), [h, h], RTOL[dtype])
    R.assert_close(px.scores.variation_ratio(query_by_committee=q, **kw), [1 / 3, 1 / 3], RTOL[dtype])
    R.assert_close(px.scores.variation_ratio(mc_dropout=q, **kw), [1 / 3, 1 / 3], RTOL[dtype])
    # a row where all members tie on every class votes unanimously for class 0
    u = np.full((1, 4, 3), 0.0 if logits else 1 / 3, dtype=dtype)
    np.testing.assert_array_equal(px.scores.vote_entropy(query_by_committee=u, **kw), [0.0])
    np.testing.assert_array_equal(px.scores.variation_ratio(mc_dropout=u, **kw), [0.0])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_committee_agreement_is_zero(dtype, rng):
    """Identical members: no disagreement; and predictive entropy equals consensus entropy."""
    p = R.random_probs(rng, (10, 1, 6), dtype)
    q = np.ascontiguousarray(np.repeat(p, 4, axis=1))
    for name in ("mutual_information", "kl_disagreement", "variance"):
        kw_field = "query_by_committee"
        res = call(name, kw_field, q)
        R.assert_close(res, np.zeros(10), 0, atol=tolerances(name, kw_field, {}, q)[1], what=name)
    for name in ("vote_entropy", "variation_ratio"):
        np.testing.assert_array_equal(call(name, "query_by_committee", q), np.zeros(10, dtype=dtype))
    R.assert_close(px.scores.predictive_entropy(query_by_committee=q),
                   px.scores.consensus_entropy(query_by_committee=q), RTOL[dtype])
    R.assert_close(px.scores.predictive_entropy(mc_dropout=q), R.entropy(confidences=p[:, 0]),
                   RTOL[dtype], atol=K_ABS[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_energy_temperature_and_activation_on_logits(dtype, rng):
    x = R.random_logits(rng, (25, 6), dtype, neg_inf_frac=0.0)
    e1 = px.scores.energy(logits=x)
    R.assert_close(px.scores.energy(logits=x, temperature=1.0), e1, 0)
    R.assert_close(px.scores.activation(logits=x), e1, RTOL[dtype], atol=tolerances("energy", "logits", {}, x)[1])
    np.testing.assert_array_equal(px.scores.max_logit(logits=x), -x.max(axis=1))


@pytest.mark.parametrize("t", [1e-30, 1e-3, 0.1, 10.0, 1e3, 1e30])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_energy_extreme_temperatures(dtype, t, rng):
    x = R.random_logits(rng, (20, 7), dtype)
    check("energy", "logits", x, {"temperature": t})


@pytest.mark.parametrize("t", [1e-300, 1e-310, 5e-324])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_energy_tiny_temperature_is_minus_max_logit(dtype, t):
    """A valid (positive, finite) temperature must give a score, not NaN: as T -> 0,
    -T logsumexp(x / T) = -(max + T ln sum e^{(x - max) / T}) -> -max exactly here."""
    x = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, -2.0], [5.0, -np.inf, 4.0]], dtype=dtype)
    res = px.scores.energy(logits=x, temperature=t)
    assert res.dtype == dtype
    np.testing.assert_array_equal(res, -x.max(axis=1))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_energy_huge_temperature_never_nan(dtype):
    """T = 1e300: the float64 result is about -1.1e300 (-inf once rounded to float32).
    Either that value or a ValueError naming temperature; never a silent NaN."""
    x = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, -2.0]], dtype=dtype)
    t = 1e300
    try:
        res = px.scores.energy(logits=x, temperature=t)
    except ValueError as e:
        assert "temperature" in str(e)
        return
    assert not np.isnan(res).any(), res
    with np.errstate(over="ignore"):
        expected = R.energy(logits=x, temperature=t).astype(dtype)
    R.assert_close(res, expected, RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_activation_ord_as_int_or_float(dtype, rng):
    z = rng.normal(size=(15, 8)).astype(dtype)
    a = px.scores.activation(embeddings=z)
    R.assert_close(px.scores.activation(embeddings=z, ord=2), a, 0)
    R.assert_close(px.scores.activation(embeddings=z, ord=2.0), a, 0)
    R.assert_close(a, -np.linalg.norm(z.astype(np.float64), axis=1), RTOL[dtype])
    R.assert_close(px.scores.activation(embeddings=z, ord=1), -np.abs(z.astype(np.float64)).sum(1), RTOL[dtype])
    R.assert_close(px.scores.activation(embeddings=z, ord=float("inf")),
                   -np.abs(z.astype(np.float64)).max(1), 0)
    assert np.all(a <= 0)


# ---------------------------------------------------------------------------------------------
# nan_policy="omit"
# ---------------------------------------------------------------------------------------------

BAD_ROWS = [0, 3, 7, 8, 15, 29]


def _faults(field: str, logits3d: bool):
    """Functions corrupting one row view (in place) with a fault that is invalid for ``field``."""
    def at(v, cls=1):
        def f(row):
            row[cls] = v
        return f

    def neg(row):
        row[0] = -0.2
        row[1] += 0.2

    def above(row):
        row[:] = 0.0
        row[0] = 1.5
        row[1] = -0.5

    def sum_off(row):
        row[:] = row * 0.9

    def all_neg_inf(row):
        row[:] = -np.inf

    if field == "confidence":
        return [at(v, 0) for v in (np.nan, np.inf, -np.inf, -0.5, 1.5, np.nan)]
    if field == "confidences" or (field in R.FIELDS_3D and not logits3d):
        return [at(np.nan), at(np.inf), at(-np.inf), neg, above, sum_off]
    if field == "logits" or (field in R.FIELDS_3D and logits3d):
        return [at(np.nan), at(np.inf), all_neg_inf, at(np.nan, 0), at(np.inf, 0), all_neg_inf]
    if field == "embeddings":
        return [at(np.nan), at(np.inf), at(-np.inf), at(np.nan, 0), at(np.inf, 0), at(-np.inf, 0)]
    raise AssertionError(field)


OMIT_CASES = ([("least_confidence", "confidence", {}, False)]
              + [(n, f, kw, False) for n, f, kw in CONFIGS_2D]
              + [(n, f, kw, lg) for n, f, kw in CONFIGS_3D for lg in (False, True)])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", OMIT_CASES, ids=lambda c: cfg_id(c[:3]) + ("-logits" if c[3] else ""))
def test_nan_policy_omit(case, dtype, rng):
    name, field, kw, lg = case
    n = 30
    clean = R.random_field(rng, field, n, 5, m=3, dtype=dtype, logits=lg)
    kw = fill_kwargs(kw, field, clean, rng)
    if lg:
        kw["logits"] = True
    bad = clean.copy()
    for r, fault in zip(BAD_ROWS, _faults(field, lg)):
        if field in R.FIELDS_3D:
            fault(bad[r, 1])  # one member / pass of the row
        elif field == "confidence":
            fault(bad[r:r + 1])
        else:
            fault(bad[r])
    res = call(name, field, bad, nan_policy="omit", **kw)
    assert res.dtype == dtype and res.shape == (n,)
    isnan = np.isnan(res)
    np.testing.assert_array_equal(np.flatnonzero(isnan), BAD_ROWS,
                                  err_msg="NaN exactly at the invalid rows")
    good = np.setdiff1d(np.arange(n), BAD_ROWS)
    full = call(name, field, clean, **kw)
    # the same values at the valid rows as when the invalid rows were fine
    R.assert_close(res[good], full[good], rtol=4 * np.finfo(dtype).eps)
    rtol, atol = tolerances(name, field, kw, clean)
    R.assert_close(res[good], R.score(name, **{field: clean}, **kw)[good], rtol,
                   np.broadcast_to(atol, (n,))[good] if np.ndim(atol) else atol)
    # and raise (default) on the same input
    with pytest.raises(ValueError):
        call(name, field, bad, **kw)
    # omit on valid data is the same as raise
    R.assert_close(call(name, field, clean, nan_policy="omit", **kw), full, 0)
