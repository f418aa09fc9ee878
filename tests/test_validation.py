"""Input validation: exception types and messages (field, row, member / pass, fault), the first
invalid row, call faults, parameter checks, and hostile inputs that must never crash."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pickaxe as px
import reference as R

F32, F64 = np.float32, np.float64
DTYPES = [F32, F64]
DT_IDS = ["f32", "f64"]

SCORE_NAMES = list(R.ACCEPTS)
FNS_FOR = {f: [n for n, acc in R.ACCEPTS.items() if f in acc] for f in R.ALL_FIELDS}
MEMBER_WORD = {"query_by_committee": "member", "mc_dropout": "pass"}


def fn(name):
    return getattr(px.scores, name)


def valid(field: str, n: int = 8, dtype=F64, logits: bool = False, c: int = 4, m: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    if field == "logits" or (field in R.FIELDS_3D and logits):
        shape = (n, m, c) if field in R.FIELDS_3D else (n, c)
        return R.random_logits(rng, shape, dtype, neg_inf_frac=0.0)
    return R.random_field(rng, field, n, c, m=m, dtype=dtype, logits=logits)


def msg_of(excinfo) -> str:
    return str(excinfo.value)


def assert_contains(msg: str, parts, what=""):
    for p in parts:
        if isinstance(p, tuple):  # any of
            assert any(q in msg for q in p), f"{what}: none of {p!r} in message {msg!r}"
        else:
            assert p in msg, f"{what}: {p!r} not in message {msg!r}"


def where(field: str, row: int, member: int | None = None) -> str:
    if field in R.FIELDS_3D:
        return f"{field} row {row}, {MEMBER_WORD[field]} {member}"
    return f"{field} row {row}"


# ---------------------------------------------------------------------------------------------
# data faults: a table of (field, logits, fault) -> expected message parts
# ---------------------------------------------------------------------------------------------


def put(cls, v):
    def f(r):
        r[cls] = v
    return f


def row_is(*vals):
    def f(r):
        r[:] = vals
    return f


def scale(k):
    def f(r):
        r[:] = r * k
    return f


def neg_inf_all(r):
    r[:] = -np.inf


SUM_MSG = ["sum", "logits=", "normalise"]

# (id, field, logits3d, setter applied to the bad row (or member row), expected message parts)
DATA_FAULTS = [
    # 1-D confidence
    ("confidence-nan", "confidence", False, put(0, np.nan), ["NaN"]),
    ("confidence-posinf", "confidence", False, put(0, np.inf), ["+inf"]),
    ("confidence-neginf", "confidence", False, put(0, -np.inf), ["-inf"]),
    ("confidence-negative", "confidence", False, put(0, -0.25), ["negative"]),
    ("confidence-negative-beyond-slack", "confidence", False, put(0, -2e-6), ["negative"]),
    ("confidence-above1", "confidence", False, put(0, 1.5), ["above 1"]),
    ("confidence-above1-beyond-slack", "confidence", False, put(0, 1 + 4e-6), ["above 1"]),
    # confidences
    ("confidences-nan", "confidences", False, put(1, np.nan), ["NaN at class 1"]),
    ("confidences-posinf", "confidences", False, put(1, np.inf), ["+inf at class 1"]),
    ("confidences-neginf", "confidences", False, put(1, -np.inf), ["-inf at class 1"]),
    ("confidences-negative", "confidences", False, row_is(-0.2, 0.7, 0.3, 0.2), ["negative", "class 0"]),
    ("confidences-negative-beyond-slack", "confidences", False, row_is(0.5, -4e-6, 0.5 + 4e-6, 0.0),
     ["negative", "class 1"]),
    ("confidences-above1", "confidences", False, row_is(0.0, 0.0, 1 + 4e-6, 0.0), ["above 1", "class 2"]),
    ("confidences-above1-big", "confidences", False, row_is(1.5, 0.0, 0.0, 0.0), [("above 1", "sum")]),
    ("confidences-sum-low", "confidences", False, scale(0.9), SUM_MSG),
    ("confidences-sum-high", "confidences", False, row_is(0.5, 0.3, 0.2, 0.2), SUM_MSG),
    ("confidences-sum-just-over", "confidences", False, scale(1.0015), SUM_MSG),
    ("confidences-sum-just-under", "confidences", False, scale(1 - 1.5e-3), SUM_MSG),
    ("confidences-all-zero", "confidences", False, row_is(0.0, 0.0, 0.0, 0.0), SUM_MSG),
    # logits
    ("logits-nan", "logits", False, put(1, np.nan), ["NaN at class 1"]),
    ("logits-posinf", "logits", False, put(2, np.inf), ["+inf at class 2"]),
    ("logits-all-neginf", "logits", False, neg_inf_all, ["every logit is -inf"]),
    # embeddings
    ("embeddings-nan", "embeddings", False, put(1, np.nan), ["NaN at dimension 1"]),
    ("embeddings-posinf", "embeddings", False, put(3, np.inf), ["+inf at dimension 3"]),
    ("embeddings-neginf", "embeddings", False, put(0, -np.inf), ["-inf at dimension 0"]),
]
for _f in R.FIELDS_3D:
    DATA_FAULTS += [
        (f"{_f}-nan", _f, False, put(0, np.nan), ["NaN at class 0"]),
        (f"{_f}-posinf", _f, False, put(3, np.inf), ["+inf at class 3"]),
        (f"{_f}-neginf", _f, False, put(1, -np.inf), ["-inf at class 1"]),
        (f"{_f}-negative", _f, False, row_is(0.6, -0.1, 0.5, 0.0), ["negative", "class 1"]),
        (f"{_f}-above1", _f, False, row_is(0.0, 1 + 4e-6, 0.0, 0.0), ["above 1", "class 1"]),
        (f"{_f}-sum", _f, False, scale(0.5), SUM_MSG),
        (f"{_f}-logits-nan", _f, True, put(2, np.nan), ["NaN at class 2"]),
        (f"{_f}-logits-posinf", _f, True, put(0, np.inf), ["+inf at class 0"]),
        (f"{_f}-logits-all-neginf", _f, True, neg_inf_all, ["every logit is -inf"]),
    ]

DATA_CASES = [(case, name) for case in DATA_FAULTS for name in FNS_FOR[case[1]]]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("case,name", DATA_CASES, ids=[f"{c[0]}-{n}" for c, n in DATA_CASES])
def test_data_fault_message(case, name, dtype):
    cid, field, lg, setter, parts = case
    x = valid(field, n=8, dtype=dtype, logits=lg)
    row, member = 5, 1
    if field == "confidence":
        setter(x[row:row + 1])
    elif field in R.FIELDS_3D:
        setter(x[row, member])
    else:
        setter(x[row])
    kw = {"logits": True} if lg else {}
    with pytest.raises(ValueError) as ei:
        fn(name)(**{field: x}, **kw)
    assert_contains(msg_of(ei), [where(field, row, member)] + parts, cid)
    # the row is named exactly (not e.g. "row 50")
    msg = msg_of(ei)
    assert f"row {row}," in msg or f"row {row}:" in msg, msg
    # nan_policy="omit": that row, and only that row, is NaN
    res = fn(name)(**{field: x}, nan_policy="omit", **kw)
    np.testing.assert_array_equal(np.flatnonzero(np.isnan(res)), [row])


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("field", ["confidences", "query_by_committee", "mc_dropout"])
def test_probability_slack_is_accepted(field, dtype):
    """Entries within 1e-6 of [0, 1] and sums within 1e-3 of 1 are valid."""
    x = valid(field, n=6, dtype=dtype)
    rows = [np.array([1 + 5e-7, 0.0, 0.0, 0.0]),
            np.array([0.5, -5e-7, 0.5, 5e-7]),
            np.array([0.4, 0.3, 0.2, 0.1]) * (1 + 9e-4),
            np.array([0.4, 0.3, 0.2, 0.1]) * (1 - 9e-4)]
    for i, r in enumerate(rows):
        if field in R.FIELDS_3D:
            x[i, 2] = r
        else:
            x[i] = r
    for name in FNS_FOR[field]:
        res = fn(name)(**{field: x})
        assert np.all(np.isfinite(res)), (name, res)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_confidence_slack_is_accepted(dtype):
    res = px.scores.least_confidence(confidence=np.array([1 + 5e-7, -5e-7, 0.0, 1.0], dtype=dtype))
    assert np.all(np.isfinite(res))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_neg_inf_allowed_in_logits_only(dtype):
    x = valid("logits", n=4, dtype=dtype)
    x[2, 1] = -np.inf
    x[3, :3] = -np.inf
    for name in FNS_FOR["logits"]:
        res = fn(name)(logits=x)
        assert np.all(np.isfinite(res)), name
    for f in R.FIELDS_3D:
        q = valid(f, n=4, dtype=dtype, logits=True)
        q[1, 0, 2] = -np.inf
        q[2, 1, :3] = -np.inf
        for name in FNS_FOR[f]:
            res = fn(name)(**{f: q}, logits=True)
            assert np.all(np.isfinite(res)), name
        p = valid(f, n=4, dtype=dtype)
        p[1, 0, 2] = -np.inf
        for name in FNS_FOR[f]:
            with pytest.raises(ValueError) as ei:
                fn(name)(**{f: p})
            assert_contains(msg_of(ei), [where(f, 1, 0), "-inf at class 2"], name)


# ---------------------------------------------------------------------------------------------
# which row is reported: the first (lowest index), also for large N run in parallel
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_first_bad_row_small(dtype):
    x = valid("confidences", n=50, dtype=dtype)
    x[40, 0] = np.nan
    x[13, 2] = -0.5
    x[7] = x[7] * 2.0  # sum fault
    with pytest.raises(ValueError) as ei:
        px.scores.entropy(confidences=x)
    assert_contains(msg_of(ei), ["confidences row 7:"] + SUM_MSG)


LARGE_BAD = [
    ([31234, 60000, 99999], 31234),
    ([99999, 1], 1),
    ([99998, 99999], 99998),
    ([50000, 49999], 49999),
    ([0, 99999], 0),
    ([65535, 65536, 65537], 65535),
    (list(range(12345, 100000, 1000)), 12345),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("bad,first", LARGE_BAD, ids=[str(b[1]) for b in LARGE_BAD])
def test_first_bad_row_large_parallel(bad, first, dtype):
    n = 100_000
    x = valid("logits", n=n, dtype=dtype, c=8)
    faults = [(np.nan, "NaN at class 3"), (np.inf, "+inf at class 3")]
    for i, r in enumerate(sorted(bad, reverse=True)):
        x[r, 3] = faults[i % 2][0]
    expected_fault = faults[(len(bad) - 1) % 2][1]  # the lowest row got the last fault written
    for name in ("entropy", "margin", "energy"):
        with pytest.raises(ValueError) as ei:
            fn(name)(logits=x)
        assert_contains(msg_of(ei), [f"logits row {first}:", expected_fault], name)
    res = px.scores.entropy(logits=x, nan_policy="omit")
    np.testing.assert_array_equal(np.flatnonzero(np.isnan(res)), sorted(bad))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_first_bad_row_large_all_rows_after(dtype):
    x = valid("confidences", n=100_000, dtype=dtype, c=5)
    x[70_001:, 2] = -0.25
    x[88_888, 0] = np.nan
    with pytest.raises(ValueError) as ei:
        px.scores.least_confidence(confidences=x)
    assert_contains(msg_of(ei), ["confidences row 70001:", "negative", "class 2"])
    x[:] = np.nan
    with pytest.raises(ValueError) as ei:
        px.scores.least_confidence(confidences=x)
    assert_contains(msg_of(ei), ["confidences row 0:", "NaN at class 0"])


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("field", R.FIELDS_3D)
def test_first_bad_row_large_3d_names_member(field, dtype):
    n = 100_000
    x = valid(field, n=n, dtype=dtype, c=4, m=3)
    x[77_777, 0, 1] = np.nan
    x[50_000, 2, 3] = np.inf
    x[50_000, 1, 0] = np.nan
    x[99_999, 0, 0] = -1.0
    word = MEMBER_WORD[field]
    for name in FNS_FOR[field]:
        with pytest.raises(ValueError) as ei:
            fn(name)(**{field: x})
        assert_contains(msg_of(ei), [f"{field} row 50000, {word} 1", "NaN at class 0"], name)
    res = fn(FNS_FOR[field][0])(**{field: x}, nan_policy="omit")
    np.testing.assert_array_equal(np.flatnonzero(np.isnan(res)), [50_000, 77_777, 99_999])


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_row_index_is_logical_not_physical(dtype):
    base = valid("confidences", n=20, dtype=dtype)
    base[19, 1] = np.nan  # physical last row
    with pytest.raises(ValueError, match=r"confidences row 0: NaN at class 1"):
        px.scores.entropy(confidences=base[::-1])
    with pytest.raises(ValueError, match=r"confidences row 19: NaN at class 1"):
        px.scores.entropy(confidences=np.asfortranarray(base))
    with pytest.raises(ValueError, match=r"confidences row 2: NaN at class 2"):
        px.scores.entropy(confidences=base[1::9, ::-1])  # rows 1, 10, 19; classes reversed
    q = valid("mc_dropout", n=6, dtype=dtype, m=4, c=4)
    q[4, 3, 0] = np.nan
    with pytest.raises(ValueError, match=r"mc_dropout row 1, pass 0: NaN at class 3"):
        px.scores.variance(mc_dropout=q[::-1, ::-1, ::-1])


def test_row_index_logical_3d_moveaxis():
    q = valid("query_by_committee", n=6, m=4)
    t = np.ascontiguousarray(np.moveaxis(q, 1, 0))  # stored (M, N, C)
    t[3, 4, 0] = np.nan
    view = np.moveaxis(t, 0, 1)
    with pytest.raises(ValueError, match=r"query_by_committee row 4, member 3: NaN at class 0"):
        px.scores.vote_entropy(query_by_committee=view)
    with pytest.raises(ValueError, match=r"query_by_committee row 1, member 0: NaN at class 3"):
        px.scores.vote_entropy(query_by_committee=view[::-1, ::-1, ::-1])


# ---------------------------------------------------------------------------------------------
# call faults: missing / duplicate / unknown fields, positional arrays
# ---------------------------------------------------------------------------------------------


def listing_parts(name):
    parts = [f"{name}("]
    for f in R.ACCEPTS[name]:
        parts += [f, R.SHAPES[f]]
    return parts


def example(field, n=3):
    return valid(field, n=n)


@pytest.mark.parametrize("name", SCORE_NAMES)
def test_missing_field(name):
    with pytest.raises(TypeError) as ei:
        fn(name)()
    assert_contains(msg_of(ei), listing_parts(name), name)


@pytest.mark.parametrize("name", SCORE_NAMES)
def test_field_given_as_none_is_missing(name):
    f = R.ACCEPTS[name][0]
    with pytest.raises(TypeError) as ei:
        fn(name)(**{f: None})
    assert_contains(msg_of(ei), listing_parts(name), name)


TWO_FIELDS = [(n, a, b) for n, acc in R.ACCEPTS.items() for a in acc for b in acc if a < b]


@pytest.mark.parametrize("name,a,b", TWO_FIELDS)
def test_two_fields(name, a, b):
    with pytest.raises(TypeError) as ei:
        fn(name)(**{a: example(a), b: example(b)})
    assert_contains(msg_of(ei), listing_parts(name), name)


WRONG_FIELD = [(n, f) for n, acc in R.ACCEPTS.items() for f in R.ALL_FIELDS if f not in acc]


@pytest.mark.parametrize("name,field", WRONG_FIELD)
def test_field_not_accepted(name, field):
    with pytest.raises(TypeError) as ei:
        fn(name)(**{field: example(field)})
    assert_contains(msg_of(ei), listing_parts(name), name)


@pytest.mark.parametrize("name", SCORE_NAMES)
def test_unknown_keyword(name):
    f = R.ACCEPTS[name][0]
    with pytest.raises(TypeError) as ei:
        fn(name)(**{f + "_typo": example(f)})
    assert_contains(msg_of(ei), listing_parts(name), name)


@pytest.mark.parametrize("name", SCORE_NAMES)
def test_positional_array(name):
    f = R.ACCEPTS[name][0]
    with pytest.raises(TypeError) as ei:
        fn(name)(example(f))
    assert_contains(msg_of(ei), listing_parts(name), name)


def test_two_fields_mixed_with_valid_second_field():
    p = example("confidences")
    with pytest.raises(TypeError, match="confidences"):
        px.scores.entropy(confidences=p, logits=np.log(p + 1e-9))


# ---------------------------------------------------------------------------------------------
# shapes and dtypes
# ---------------------------------------------------------------------------------------------

WRONG_NDIM = [
    ("confidence", (3, 2)), ("confidence", (2, 3, 4)), ("confidence", ()),
    ("confidences", (3,)), ("confidences", (2, 3, 4)), ("confidences", ()), ("confidences", (0,)),
    ("logits", (3,)), ("logits", (2, 3, 4)), ("logits", ()),
    ("embeddings", (5,)), ("embeddings", (2, 3, 4)),
    ("query_by_committee", (3, 4)), ("query_by_committee", (2, 3, 4, 5)), ("query_by_committee", (4,)),
    ("mc_dropout", (3, 4)), ("mc_dropout", (2, 3, 4, 5)),
]


@pytest.mark.parametrize("field,shape", WRONG_NDIM, ids=[f"{f}-{s}" for f, s in WRONG_NDIM])
def test_wrong_ndim(field, shape):
    x = np.full(shape, 0.25)
    for name in FNS_FOR[field]:
        with pytest.raises(ValueError) as ei:
            fn(name)(**{field: x})
        assert_contains(msg_of(ei), [f"{name}()", field, "shape", R.SHAPES[field]], name)


def test_empty_list_for_2d_field_is_wrong_ndim():
    with pytest.raises(ValueError, match="confidences"):
        px.scores.entropy(confidences=[])
    res = px.scores.least_confidence(confidence=[])
    assert res.shape == (0,) and res.dtype == np.float64


BAD_DTYPES = [
    ("object", lambda: np.array([[0.5, 0.5]], dtype=object), ["object"]),
    ("str", lambda: np.array([["0.5", "0.5"]]), ["dtype"]),
    ("bytes", lambda: np.array([[b"a", b"b"]]), ["dtype"]),
    ("complex128", lambda: np.array([[0.5 + 0j, 0.5]]), ["complex128"]),
    ("complex64", lambda: np.array([[0.5, 0.5]], dtype=np.complex64), ["complex64"]),
    ("datetime64", lambda: np.array([["2020-01-01", "2020-01-02"]], dtype="datetime64[D]"), ["datetime64"]),
    ("timedelta64", lambda: np.array([[1, 2]], dtype="timedelta64[s]"), ["timedelta64"]),
    ("list-with-str", lambda: [[0.5, "a"]], ["dtype"]),
    ("list-with-complex", lambda: [[0.5, 0.5j]], ["complex"]),
]


@pytest.mark.parametrize("field", ["confidences", "logits", "embeddings", "query_by_committee"])
@pytest.mark.parametrize("kind,make,parts", BAD_DTYPES, ids=[b[0] for b in BAD_DTYPES])
def test_bad_dtype(kind, make, parts, field):
    x = make()
    if field in R.FIELDS_3D:
        x = np.asarray(x)[None]  # (1, 1, 2)
    for name in FNS_FOR[field]:
        with pytest.raises(TypeError) as ei:
            fn(name)(**{field: x})
        assert_contains(msg_of(ei), [field] + parts, f"{name} {kind}")


def test_bad_dtype_confidence_1d():
    with pytest.raises(TypeError, match="complex128"):
        px.scores.least_confidence(confidence=np.array([0.5 + 0j]))
    with pytest.raises(TypeError, match="object"):
        px.scores.least_confidence(confidence=np.array([0.5], dtype=object))


EMPTY_AXIS = [
    ("confidences", (3, 0), "0 classes"),
    ("logits", (3, 0), "0 classes"),
    ("query_by_committee", (2, 0, 3), "0 members"),
    ("mc_dropout", (2, 0, 3), "0 passes"),
    ("query_by_committee", (2, 3, 0), "0 classes"),
    ("mc_dropout", (2, 3, 0), "0 classes"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("field,shape,text", EMPTY_AXIS, ids=[f"{f}-{s}" for f, s, _ in EMPTY_AXIS])
def test_zero_classes_members_passes(field, shape, text, dtype):
    x = np.zeros(shape, dtype=dtype)
    for name in FNS_FOR[field]:
        with pytest.raises(ValueError) as ei:
            fn(name)(**{field: x})
        assert_contains(msg_of(ei), [field, text], name)


# ---------------------------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------------------------


def test_class_weights_length():
    p = valid("confidences", n=5, c=4)
    with pytest.raises(ValueError) as ei:
        px.scores.entropy(confidences=p, class_weights=[1.0, 1.0, 1.0])
    assert_contains(msg_of(ei), ["class_weights", "3 entries", "confidences", "4 classes"])
    with pytest.raises(ValueError) as ei:
        px.scores.entropy(logits=p, class_weights=np.ones(5))
    assert_contains(msg_of(ei), ["class_weights", "5 entries", "logits", "4 classes"])
    # binary logits are two classes
    with pytest.raises(ValueError) as ei:
        px.scores.entropy(logits=np.zeros((3, 1)), class_weights=[1.0])
    assert_contains(msg_of(ei), ["class_weights", "1 entries", "2 classes"])
    res = px.scores.entropy(logits=np.zeros((3, 1)), class_weights=[1.0, 2.0])
    R.assert_close(res, np.full(3, 1.5 * np.log(2)), 1e-10)


@pytest.mark.parametrize("bad", [[1.0, -0.5, 1.0, 1.0], [1.0, np.nan, 1.0, 1.0],
                                 [np.inf, 1.0, 1.0, 1.0], [1.0, 1.0, -np.inf, 1.0]],
                         ids=["negative", "nan", "inf", "-inf"])
def test_class_weights_values(bad):
    p = valid("confidences", n=5, c=4)
    with pytest.raises(ValueError, match="class_weights"):
        px.scores.entropy(confidences=p, class_weights=bad)


def test_class_weights_wrong_shape():
    p = valid("confidences", n=5, c=4)
    with pytest.raises((TypeError, ValueError), match="class_weights"):
        px.scores.entropy(confidences=p, class_weights=np.ones((2, 2)))
    with pytest.raises((TypeError, ValueError), match="class_weights"):
        px.scores.entropy(confidences=p, class_weights=[1.0, 1.0, 1.0, 1.0j])


@pytest.mark.parametrize("t", [0.0, -1.0, np.nan, np.inf, -np.inf])
def test_temperature(t):
    with pytest.raises(ValueError, match="temperature"):
        px.scores.energy(logits=valid("logits"), temperature=t)


@pytest.mark.parametrize("o", [0, 0.0, -1, -2.5, np.nan, -np.inf])
def test_ord(o):
    with pytest.raises(ValueError, match="ord"):
        px.scores.activation(embeddings=valid("embeddings"), ord=o)


@pytest.mark.parametrize("r", ["sum", "median", "MAX", ""])
def test_reduce(r):
    with pytest.raises(ValueError, match="reduce"):
        px.scores.kl_disagreement(query_by_committee=valid("query_by_committee"), reduce=r)


@pytest.mark.parametrize("name", SCORE_NAMES)
@pytest.mark.parametrize("policy", ["ignore", "propagate", "", "Omit"])
def test_nan_policy_value(name, policy):
    f = R.ACCEPTS[name][0]
    with pytest.raises(ValueError, match="nan_policy"):
        fn(name)(**{f: example(f)}, nan_policy=policy)


# ---------------------------------------------------------------------------------------------
# top_k arguments
# ---------------------------------------------------------------------------------------------


def test_top_k_scores_must_be_1d():
    for s in (np.zeros((3, 2)), np.zeros((1, 1)), np.array(1.0)):
        with pytest.raises(ValueError) as ei:
            px.select.top_k(s, 1)
        assert_contains(msg_of(ei), ["scores", "shape"])


@pytest.mark.parametrize("s", [np.array([1 + 1j, 2]), np.array([1.0, 2.0], dtype=object), np.array(["a", "b"])],
                         ids=["complex", "object", "str"])
def test_top_k_scores_dtype(s):
    with pytest.raises(TypeError):
        px.select.top_k(s, 1)


def test_top_k_negative_k():
    with pytest.raises(ValueError) as ei:
        px.select.top_k(np.arange(5.0), -1)
    assert_contains(msg_of(ei), ["k must be an int >= 0", "-1"])


@pytest.mark.parametrize("k", [1.0, 1.5, True, False, "2", None, np.float64(2.0), [2]],
                         ids=["1.0", "1.5", "True", "False", "str", "None", "np.float64", "list"])
def test_top_k_non_integer_k(k):
    with pytest.raises(TypeError):
        px.select.top_k(np.arange(5.0), k)


# ---------------------------------------------------------------------------------------------
# hostile inputs: never crash the interpreter (run in a subprocess so a crash is a clean failure)
# ---------------------------------------------------------------------------------------------

HOSTILE_SCRIPT = textwrap.dedent(r'''
    import json, sys
    import numpy as np
    import pickaxe as px
    S = px.scores
    cases = {}
    def case(name):
        def deco(f):
            cases[name] = f
            return f
        return deco

    def unaligned(shape, fill):
        n = int(np.prod(shape))
        a = np.frombuffer(bytearray(n * 8 + 1), dtype=np.float64, count=n, offset=1).reshape(shape)
        a[...] = fill
        assert not a.flags.aligned
        return a

    case("huge C one row")(lambda: S.entropy(confidences=np.full((1, 10**7), 1e-7, np.float32)))
    case("huge C one row logits")(lambda: S.margin(logits=np.zeros((1, 10**7), np.float32)))
    case("N=0 C=0 confidences")(lambda: S.entropy(confidences=np.empty((0, 0))))
    case("N=0 C=0 logits")(lambda: S.energy(logits=np.empty((0, 0))))
    case("N=0 C=0 embeddings")(lambda: S.activation(embeddings=np.empty((0, 0))))
    case("C=0 embeddings")(lambda: S.activation(embeddings=np.empty((3, 0))))
    case("N=0 M=0 C=0")(lambda: S.vote_entropy(query_by_committee=np.empty((0, 0, 0))))
    case("N=3 T=0 C=0")(lambda: S.mutual_information(mc_dropout=np.empty((3, 0, 0))))
    case("0-d confidence")(lambda: S.least_confidence(confidence=np.float64(0.5)))
    case("0-d array confidences")(lambda: S.entropy(confidences=np.array(0.5)))
    case("python scalar")(lambda: S.entropy(confidences=0.5))
    case("python scalar confidence")(lambda: S.least_confidence(confidence=0.5))
    case("None")(lambda: S.entropy(confidences=None))
    case("str")(lambda: S.entropy(confidences="abc"))
    case("dict")(lambda: S.entropy(confidences={"a": 1}))
    case("ragged list")(lambda: S.entropy(confidences=[[0.5, 0.5], [1.0]]))
    case("list of empty list")(lambda: S.entropy(confidences=[[]]))
    case("4-d")(lambda: S.entropy(confidences=np.ones((2, 2, 2, 2))))
    case("5-d committee")(lambda: S.vote_entropy(query_by_committee=np.ones((1, 1, 1, 1, 1))))
    case("unaligned f64")(lambda: S.entropy(confidences=unaligned((4, 2), 0.5)))
    case("big-endian")(lambda: S.entropy(confidences=np.full((3, 4), 0.25, dtype=">f8")))
    case("big-endian f32")(lambda: S.entropy(confidences=np.full((3, 4), 0.25, dtype=">f4")))
    case("masked array")(lambda: S.entropy(confidences=np.ma.masked_array(np.full((2, 2), 0.5), mask=[[1, 0], [0, 0]])))
    case("matrix-like subclass")(lambda: S.entropy(confidences=np.full((2, 2), 0.5).view(type("Sub", (np.ndarray,), {}))))
    case("huge logits f32")(lambda: S.entropy(logits=np.array([[3e38, -3e38, 0.0]], np.float32)))
    case("huge logits f64")(lambda: S.energy(logits=np.array([[1.7e308, -1.7e308]])))
    case("subnormal temperature")(lambda: S.energy(logits=np.ones((2, 3)), temperature=5e-324))
    case("huge temperature")(lambda: S.energy(logits=np.ones((2, 3)), temperature=1e308))
    case("huge embeddings")(lambda: S.activation(embeddings=np.full((2, 3), 1e300), ord=2))
    case("tiny ord")(lambda: S.activation(embeddings=np.ones((2, 3)), ord=1e-300))
    case("huge ord")(lambda: S.activation(embeddings=np.ones((2, 3)), ord=1e300))
    case("class_weights str")(lambda: S.entropy(confidences=np.full((2, 2), 0.5), class_weights="ab"))
    case("class_weights huge")(lambda: S.entropy(confidences=np.full((2, 2), 0.5), class_weights=[1e308, 1e308]))
    case("temperature str")(lambda: S.energy(logits=np.ones((2, 3)), temperature="hot"))
    case("ord str")(lambda: S.activation(embeddings=np.ones((2, 3)), ord="fro"))
    case("nan_policy None")(lambda: S.entropy(confidences=np.full((2, 2), 0.5), nan_policy=None))
    case("logits flag str")(lambda: S.variance(mc_dropout=np.full((2, 2, 2), 0.5), logits="yes"))
    case("broadcast huge C")(lambda: S.entropy(confidences=np.broadcast_to(np.float64(2.0**-20), (3, 2**20))))
    case("all -inf f32 big")(lambda: S.entropy(logits=np.full((1000, 17), -np.inf, np.float32), nan_policy="omit"))
    case("top_k empty")(lambda: px.select.top_k(np.empty(0), 5))
    case("top_k 0-d")(lambda: px.select.top_k(np.array(3.0), 1))
    case("top_k None")(lambda: px.select.top_k(None, 1))
    case("top_k huge k")(lambda: px.select.top_k(np.array([1.0, 2.0]), 10**30))
    case("top_k very negative k")(lambda: px.select.top_k(np.array([1.0, 2.0]), -10**30))
    case("top_k k=2**63")(lambda: px.select.top_k(np.array([1.0, 2.0]), 2**63))
    case("top_k k=2**64")(lambda: px.select.top_k(np.array([1.0, 2.0]), 2**64))
    case("top_k all nan")(lambda: px.select.top_k(np.full(10, np.nan), 3))
    case("top_k list")(lambda: px.select.top_k([3.0, 1.0, 2.0], 2))
    case("top_k bool")(lambda: px.select.top_k(np.array([True, False, True]), 2))
    case("top_k unaligned")(lambda: px.select.top_k(unaligned((5,), 1.0), 2))
    case("top_k big-endian")(lambda: px.select.top_k(np.arange(5, dtype=">f8"), 2))
    case("set_num_threads 0")(lambda: px.set_num_threads(0))
    case("set_num_threads -1")(lambda: px.set_num_threads(-1))
    case("set_num_threads huge")(lambda: px.set_num_threads(2**70))
    case("set_num_threads str")(lambda: px.set_num_threads("2"))
    case("after set_num_threads")(lambda: S.entropy(confidences=np.full((100000, 4), 0.25)))

    OK_EXC = (TypeError, ValueError, OverflowError, MemoryError)
    only = sys.argv[1:] or list(cases)
    for name in only:
        print("START " + json.dumps(name), flush=True)
        try:
            out = cases[name]()
        except BaseException as e:
            kind = "ok-exc" if isinstance(e, OK_EXC) else "bad-exc"
            print(json.dumps({"case": name, "kind": kind, "type": type(e).__name__, "msg": str(e)[:300]}), flush=True)
            continue
        if out is None:
            info = {"case": name, "kind": "none"}
        else:
            a = np.asarray(out)
            info = {"case": name, "kind": "result", "type": type(out).__name__, "dtype": str(a.dtype),
                    "shape": list(a.shape), "head": [repr(v) for v in a.ravel()[:6].tolist()]}
        print(json.dumps(info), flush=True)
''')

EXPECT_EXCEPTION = {  # invalid by the contract: a Python exception (TypeError / ValueError) is required
    "0-d confidence", "0-d array confidences", "python scalar", "python scalar confidence", "None", "str",
    "dict", "ragged list", "list of empty list", "4-d", "5-d committee", "top_k 0-d",
    "top_k None", "top_k very negative k", "class_weights str", "temperature str", "ord str",
    "nan_policy None", "N=3 T=0 C=0",
}


@pytest.fixture(scope="module")
def hostile_results():
    env = dict(os.environ)
    p = subprocess.run([sys.executable, "-c", HOSTILE_SCRIPT], capture_output=True, text=True, env=env,
                       timeout=600)
    started, results = [], {}
    for line in p.stdout.splitlines():
        if line.startswith("START "):
            started.append(json.loads(line[6:]))
        elif line.startswith("{"):
            d = json.loads(line)
            results[d["case"]] = d
    return p, started, results


def _hostile_names():
    return re.findall(r'case\("([^"]+)"\)', HOSTILE_SCRIPT)


@pytest.mark.parametrize("case", _hostile_names())
def test_hostile_input_does_not_crash(hostile_results, case):
    p, started, results = hostile_results
    if case not in results:
        crashed = started[-1] if started else None
        pytest.fail(f"interpreter died (exit code {p.returncode}) while running hostile case "
                    f"{crashed!r}; this case never ran or never finished.\nstderr tail:\n{p.stderr[-2000:]}")
    d = results[case]
    assert d["kind"] != "bad-exc", f"{case}: raised {d['type']}: {d['msg']}"
    if case in EXPECT_EXCEPTION:
        assert d["kind"] == "ok-exc", f"{case}: expected TypeError/ValueError, got {d}"
    if d["kind"] == "result" and not case.startswith("set_num_threads"):
        assert d["type"] == "ndarray", d
        if not case.startswith("top_k"):
            assert len(d["shape"]) == 1 and d["dtype"] in ("float32", "float64"), d


def test_hostile_valid_results_are_right():
    """The hostile inputs that are valid must give the right numbers when they do not raise."""
    # unaligned buffer
    raw = bytearray(8 * 8 + 1)
    un = np.frombuffer(raw, dtype=np.float64, count=8, offset=1).reshape(4, 2)
    un[:] = [[0.5, 0.5], [1.0, 0.0], [0.25, 0.75], [0.9, 0.1]]
    assert not un.flags.aligned
    try:
        res = px.scores.entropy(confidences=un)
    except (TypeError, ValueError):
        pass
    else:
        R.assert_close(res, R.entropy(confidences=np.array(un)), 1e-10)
    try:
        res = px.select.top_k(un[:, 0], 4)
    except (TypeError, ValueError):
        pass
    else:
        np.testing.assert_array_equal(res, [1, 3, 0, 2])
    # big-endian
    for dt in (">f8", ">f4"):
        x = R.random_probs(np.random.default_rng(1), (5, 4)).astype(dt)
        try:
            res = px.scores.entropy(confidences=x)
        except (TypeError, ValueError):
            continue
        R.assert_close(res, R.entropy(confidences=x.astype(np.float64)), 1e-5)
    s = np.array([0.3, 0.9, 0.1], dtype=">f8")
    try:
        res = px.select.top_k(s, 2)
    except (TypeError, ValueError):
        pass
    else:
        np.testing.assert_array_equal(res, [1, 0])
    # masked arrays: the data is read (masks are not a pickaxe concept) or rejected
    m = np.ma.masked_array(np.full((2, 2), 0.5), mask=[[1, 0], [0, 0]])
    try:
        res = px.scores.entropy(confidences=m)
    except (TypeError, ValueError):
        pass
    else:
        R.assert_close(np.asarray(res), np.full(2, np.log(2)), 1e-10)
    # broadcast row of 2^20 equal probabilities
    b = np.broadcast_to(np.float64(2.0**-20), (3, 2**20))
    R.assert_close(px.scores.entropy(confidences=b), np.full(3, 20 * np.log(2)), 1e-10)
