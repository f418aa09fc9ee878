"""Hypothesis properties of the scores and of top_k.

Tolerances here are a few dozen ulps (``TOL``) scaled by the size of the quantity: the properties
are exact identities of the math, so only the rounding of a re-ordered or re-shifted computation
is allowed for.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pickaxe as px
import reference as R

F32, F64 = np.float32, np.float64
DTYPES = [F32, F64]
DT_IDS = ["f32", "f64"]
TOL = {F32: 64 * float(np.finfo(np.float32).eps), F64: 64 * float(np.finfo(np.float64).eps)}

SCORES_PROBS_2D = [("least_confidence", {}), ("margin", {}), ("ratio", {}), ("entropy", {}),
                   ("entropy", {"normalize": True})]
SCORES_LOGITS_2D = SCORES_PROBS_2D + [("energy", {}), ("energy", {"temperature": 0.5}), ("max_logit", {}),
                                      ("activation", {})]
SCORES_3D = [("vote_entropy", "query_by_committee", {}), ("consensus_entropy", "query_by_committee", {}),
             ("kl_disagreement", "query_by_committee", {}),
             ("kl_disagreement", "query_by_committee", {"reduce": "max"}),
             ("mutual_information", "mc_dropout", {}), ("predictive_entropy", "mc_dropout", {}),
             ("variation_ratio", "mc_dropout", {}), ("variance", "mc_dropout", {}),
             ("mutual_information", "query_by_committee", {}), ("variance", "query_by_committee", {})]
VOTE_SCORES = ("vote_entropy", "variation_ratio")

# ---------------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------------

WEIGHTS = st.sampled_from([0, 0, 1, 1, 2, 3, 5, 7, 20, 1000, 10**6])


@st.composite
def prob_arrays(draw, dtype, ndim=2, min_c=1, max_c=10, max_n=6, max_m=5):
    """Valid probabilities (rows along the last axis sum to 1), normalised in float64 then cast.
    Integer weights give exact zeros, exact ties and dominant classes."""
    n = draw(st.integers(1, max_n))
    c = draw(st.integers(min_c, max_c))
    shape = (n, c) if ndim == 2 else (n, draw(st.integers(1, max_m)), c)
    w = draw(hnp.arrays(np.int64, shape, elements=WEIGHTS)).astype(np.float64)
    if ndim == 3 and draw(st.booleans()):
        w[:, :, :] = w[:, :1, :]  # identical members
    flat = w.reshape(-1, c)
    flat[flat.sum(axis=1) == 0, 0] = 1.0
    p = flat / flat.sum(axis=1, keepdims=True)
    return p.reshape(shape).astype(dtype)


@st.composite
def logit_arrays(draw, dtype, ndim=2, min_c=1, max_c=10, max_n=6, max_m=5, neg_inf=True):
    """Logits that are multiples of 1/8 in [-50, 50] (so adding an integer is exact in float32),
    with some -inf entries (never a whole row)."""
    n = draw(st.integers(1, max_n))
    c = draw(st.integers(min_c, max_c))
    shape = (n, c) if ndim == 2 else (n, draw(st.integers(1, max_m)), c)
    x = draw(hnp.arrays(np.int64, shape, elements=st.integers(-400, 400))).astype(np.float64) / 8
    if neg_inf and c > 1:
        mask = draw(hnp.arrays(np.bool_, shape, elements=st.booleans()))
        flat = mask.reshape(-1, c)
        flat[flat.all(axis=1), 0] = False
        x[flat.reshape(shape)] = -np.inf
    return x.astype(dtype)


def call(name, field, x, **kw):
    return getattr(px.scores, name)(**{field: x}, **kw)


def close(a, b, rtol, atol, what=""):
    R.assert_close(a, b, rtol=rtol, atol=atol, what=what)


# ---------------------------------------------------------------------------------------------
# entropy bounds
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@given(data=st.data())
def test_entropy_in_0_lnC(dtype, data):
    field = data.draw(st.sampled_from(["confidences", "logits"]))
    x = data.draw(prob_arrays(dtype) if field == "confidences" else logit_arrays(dtype))
    c = x.shape[1] if (field == "confidences" or x.shape[1] > 1) else 2
    tol = TOL[dtype] * (1 + math.log(c))
    h = call("entropy", field, x)
    assert np.all(h >= -tol), h
    assert np.all(h <= math.log(c) + tol), (h, math.log(c))
    hn = call("entropy", field, x, normalize=True)
    assert np.all(hn >= -tol) and np.all(hn <= 1 + tol), hn


@pytest.mark.parametrize("logits", [False, True], ids=["probs", "logits"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@given(data=st.data())
def test_committee_scores_in_range(dtype, logits, data):
    x = data.draw(logit_arrays(dtype, ndim=3, min_c=2) if logits else prob_arrays(dtype, ndim=3))
    n, m, c = x.shape
    kw = {"logits": True} if logits else {}
    tol = TOL[dtype] * (1 + math.log(c))
    pe = px.scores.predictive_entropy(mc_dropout=x, **kw)
    assert np.all(pe >= -tol) and np.all(pe <= math.log(c) + tol)
    mi = px.scores.mutual_information(mc_dropout=x, **kw)
    assert np.all(mi <= pe + tol)
    ve = px.scores.vote_entropy(query_by_committee=x, **kw)
    assert np.all(ve >= -tol) and np.all(ve <= math.log(min(m, c)) + tol)
    vr = px.scores.variation_ratio(mc_dropout=x, **kw)
    assert np.all(vr >= 0) and np.all(vr <= 1 - 1 / m + tol)
    votes = (1 - vr.astype(np.float64)) * m  # votes for the modal class: an integer >= M / C
    np.testing.assert_allclose(votes, np.round(votes), atol=1e-4)
    assert np.all(np.round(votes) >= m / c - 1e-9)
    var = px.scores.variance(mc_dropout=x, **kw)
    assert np.all(var >= -tol) and np.all(var <= 0.25 + tol)


# ---------------------------------------------------------------------------------------------
# shifting logits by a constant per row
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@given(data=st.data())
def test_logit_scores_invariant_to_shift(dtype, data):
    x = data.draw(logit_arrays(dtype, min_c=2))
    shift = data.draw(hnp.arrays(np.int64, (x.shape[0], 1), elements=st.integers(-100, 100)))
    y = (x.astype(np.float64) + shift).astype(dtype)  # exact: multiples of 1/8 below 2^8
    assert np.array_equal(y.astype(np.float64) - shift, x.astype(np.float64))
    tol = TOL[dtype]
    for name, kw in SCORES_PROBS_2D:
        a, b = call(name, "logits", x, **kw), call(name, "logits", y, **kw)
        close(b, a, rtol=tol, atol=tol * 1e-3, what=f"{name}{kw}")
    s = shift[:, 0].astype(np.float64)
    for t in (1.0, 0.5, 2.0):
        e0 = px.scores.energy(logits=x, temperature=t).astype(np.float64)
        e1 = px.scores.energy(logits=y, temperature=t).astype(np.float64)
        close(e1, e0 - s, rtol=0, atol=tol * (1 + np.abs(e0) + np.abs(s)), what=f"energy T={t}")
    e0 = px.scores.activation(logits=x).astype(np.float64)
    close(px.scores.activation(logits=y), e0 - s, rtol=0, atol=tol * (1 + np.abs(e0) + np.abs(s)))
    np.testing.assert_array_equal(px.scores.max_logit(logits=y).astype(np.float64),
                                  px.scores.max_logit(logits=x).astype(np.float64) - s)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@given(data=st.data())
def test_committee_logit_scores_invariant_to_shift_per_member(dtype, data):
    x = data.draw(logit_arrays(dtype, ndim=3, min_c=2))
    shift = data.draw(hnp.arrays(np.int64, x.shape[:2] + (1,), elements=st.integers(-100, 100)))
    y = (x.astype(np.float64) + shift).astype(dtype)
    tol = TOL[dtype]
    c = x.shape[-1]
    for name, field, kw in SCORES_3D:
        a = call(name, field, x, logits=True, **kw)
        b = call(name, field, y, logits=True, **kw)
        close(b, a, rtol=tol, atol=tol * (1 + math.log(c)), what=f"{name}{kw}")


# ---------------------------------------------------------------------------------------------
# permutations of classes, members and passes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@given(data=st.data())
def test_2d_scores_invariant_to_class_permutation(dtype, data):
    field = data.draw(st.sampled_from(["confidences", "logits", "embeddings"]))
    if field == "embeddings":
        x = data.draw(hnp.arrays(dtype, st.tuples(st.integers(1, 6), st.integers(1, 10)),
                                 elements=st.floats(-1e3, 1e3, width=32)))
    else:
        x = data.draw(prob_arrays(dtype, min_c=2) if field == "confidences" else logit_arrays(dtype, min_c=2))
    c = x.shape[1]
    perm = np.array(data.draw(st.permutations(range(c))))
    xp = np.ascontiguousarray(x[:, perm])
    tol = TOL[dtype]
    if field == "embeddings":
        cfgs = [("activation", {}), ("activation", {"ord": 1}), ("activation", {"ord": np.inf}),
                ("activation", {"ord": 3})]
    else:
        cfgs = SCORES_PROBS_2D if field == "confidences" else SCORES_LOGITS_2D
        w = data.draw(hnp.arrays(np.float64, c, elements=st.floats(0, 10)))
        a = px.scores.entropy(**{field: x}, class_weights=w)
        b = px.scores.entropy(**{field: xp}, class_weights=w[perm])
        close(b, a, rtol=tol, atol=tol * (1 + w.sum()), what="entropy class_weights")
    for name, kw in cfgs:
        a, b = call(name, field, x, **kw), call(name, field, xp, **kw)
        scale = 1 + math.log(c) + (np.abs(np.where(np.isfinite(x), x, 0)).max() if field == "logits" else 0)
        close(b, a, rtol=tol, atol=tol * scale, what=f"{name}{kw}")


@pytest.mark.parametrize("logits", [False, True], ids=["probs", "logits"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@given(data=st.data())
def test_3d_scores_invariant_to_member_permutation(dtype, logits, data):
    x = data.draw(logit_arrays(dtype, ndim=3, min_c=2) if logits else prob_arrays(dtype, ndim=3))
    perm = np.array(data.draw(st.permutations(range(x.shape[1]))))
    xp = np.ascontiguousarray(x[:, perm])
    kw0 = {"logits": True} if logits else {}
    tol = TOL[dtype]
    for name, field, kw in SCORES_3D:
        a, b = call(name, field, x, **kw0, **kw), call(name, field, xp, **kw0, **kw)
        if name in VOTE_SCORES:
            np.testing.assert_array_equal(b, a, err_msg=name)  # the vote histogram is the same
        else:
            close(b, a, rtol=tol, atol=tol * (1 + math.log(x.shape[2])), what=f"{name}{kw}")


@pytest.mark.parametrize("logits", [False, True], ids=["probs", "logits"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@given(data=st.data())
def test_3d_scores_invariant_to_class_permutation(dtype, logits, data):
    """All committee / dropout scores ignore class order; the vote-based ones only when no member
    has an argmax tie (a tie goes to the lowest index, which a permutation moves)."""
    x = data.draw(logit_arrays(dtype, ndim=3, min_c=2) if logits else prob_arrays(dtype, ndim=3))
    perm = np.array(data.draw(st.permutations(range(x.shape[2]))))
    xp = np.ascontiguousarray(x[:, :, perm])
    kw0 = {"logits": True} if logits else {}
    tol = TOL[dtype]
    srt = np.sort(x.astype(np.float64), axis=-1)
    tie_free = x.shape[2] == 1 or bool(np.all(srt[..., -1] > srt[..., -2]))
    for name, field, kw in SCORES_3D:
        if name in VOTE_SCORES and not tie_free:
            continue
        a, b = call(name, field, x, **kw0, **kw), call(name, field, xp, **kw0, **kw)
        close(b, a, rtol=tol, atol=tol * (1 + math.log(x.shape[2])), what=f"{name}{kw}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5), m=st.integers(1, 6), c=st.integers(2, 9))
def test_vote_scores_invariant_to_class_permutation_without_ties(dtype, seed, n, m, c):
    rng = np.random.default_rng(seed)
    x = R.random_probs(rng, (n, m, c), dtype, zero_frac=0.0)
    perm = rng.permutation(c)
    tol = TOL[dtype]
    for name in VOTE_SCORES:
        field = "query_by_committee"
        # the histogram is permuted too, so its entropy is summed in another order: a few ulps
        close(call(name, field, x[:, :, perm]), call(name, field, x), rtol=tol, atol=tol, what=name)


# ---------------------------------------------------------------------------------------------
# signs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("logits", [False, True], ids=["probs", "logits"])
@given(data=st.data())
def test_mutual_information_nonnegative_f64(logits, data):
    x = data.draw(logit_arrays(F64, ndim=3, min_c=2) if logits else prob_arrays(F64, ndim=3))
    kw = {"logits": True} if logits else {}
    for field in R.FIELDS_3D:
        mi = px.scores.mutual_information(**{field: x}, **kw)
        assert np.all(mi >= -1e-12), mi


@pytest.mark.parametrize("logits", [False, True], ids=["probs", "logits"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@given(data=st.data())
def test_kl_disagreement_mean_nonnegative(dtype, logits, data):
    x = data.draw(logit_arrays(dtype, ndim=3, min_c=2) if logits else prob_arrays(dtype, ndim=3))
    kw = {"logits": True} if logits else {}
    kl = px.scores.kl_disagreement(query_by_committee=x, reduce="mean", **kw)
    assert np.all(kl >= 0), kl
    klmax = px.scores.kl_disagreement(query_by_committee=x, reduce="max", **kw)
    assert np.all(klmax >= kl - TOL[dtype] * (1 + np.abs(kl)))


@pytest.mark.parametrize("logits", [False, True], ids=["probs", "logits"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_kl_disagreement_nonnegative_identical_members(dtype, logits):
    """Deterministic companion of the property above: identical members (KL exactly 0)."""
    for c in range(2, 9):
        for m in range(1, 7):
            x = np.zeros((3, m, c), dtype=dtype) if logits else np.full((3, m, c), 1.0 / c, dtype=dtype)
            if not logits:
                x[1] = np.arange(1, c + 1) / (c * (c + 1) / 2)
            kw = {"logits": True} if logits else {}
            for reduce in ("mean", "max"):
                kl = px.scores.kl_disagreement(query_by_committee=x, reduce=reduce, **kw)
                assert np.all(kl >= 0), (c, m, reduce, kl)


# ---------------------------------------------------------------------------------------------
# top_k
# ---------------------------------------------------------------------------------------------

SPECIAL = [0.0, -0.0, 1.0, -1.0, 2.5, np.nan, np.inf, -np.inf]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@given(data=st.data())
def test_top_k_is_prefix_of_stable_sort(dtype, data):
    width = 32 if dtype == F32 else 64
    elems = st.one_of(st.sampled_from(SPECIAL), st.floats(allow_nan=True, allow_infinity=True, width=width))
    s = data.draw(hnp.arrays(dtype, st.integers(0, 60), elements=elems))
    k = data.draw(st.integers(0, len(s) + 3))
    got = px.select.top_k(s, k)
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    np.testing.assert_array_equal(got, R.top_k(s, k))


@given(s=hnp.arrays(np.int64, st.integers(0, 60), elements=st.integers(-5, 5)), k=st.integers(0, 70))
def test_top_k_ints_is_prefix_of_stable_sort(s, k):
    got = px.select.top_k(s, k)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, R.top_k(s, k))
