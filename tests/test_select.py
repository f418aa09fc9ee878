"""pickaxe.select.top_k against the stable full sort in reference.top_k."""

from __future__ import annotations

import numpy as np
import pytest

import pickaxe as px
import reference as R

top_k = px.select.top_k


def random_scores(rng, n, dtype, nan_frac=0.1, inf_frac=0.05):
    """Scores with many ties (few distinct values), NaN and +-inf."""
    if np.issubdtype(dtype, np.integer):
        return rng.integers(-20, 21, size=n).astype(dtype)
    s = np.round(rng.normal(size=n), 1)  # ~60 distinct values: lots of ties
    u = rng.random(n)
    s[u < nan_frac] = np.nan
    s[(u >= nan_frac) & (u < nan_frac + inf_frac / 2)] = np.inf
    s[(u >= nan_frac + inf_frac / 2) & (u < nan_frac + inf_frac)] = -np.inf
    return s.astype(dtype)


def check(s, k):
    before = np.array(s, copy=True)
    got = top_k(s, k)
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.int64, got.dtype
    assert got.ndim == 1
    np.testing.assert_array_equal(got, R.top_k(s, k))
    np.testing.assert_array_equal(np.asarray(s), before)  # the scores are not reordered in place
    return got


DTYPES = [np.float32, np.float64, np.int64, np.int32, np.int16, np.uint8]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", [0, 1, 2, 7, 100, 1000, 10_000])
def test_matches_stable_sort(n, dtype, rng):
    s = random_scores(rng, n, dtype)
    if dtype == np.uint8:
        s = rng.integers(0, 10, size=n).astype(np.uint8)
    for k in sorted({0, 1, 3, n // 2, max(n - 1, 0), n, n + 5}):
        check(s, k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_special_values(dtype):
    s = np.array([1.0, np.nan, 3.0, 3.0, -np.inf, np.inf, -0.0, 0.0, np.inf, -np.inf, np.nan], dtype=dtype)
    np.testing.assert_array_equal(top_k(s, 100), [5, 8, 2, 3, 0, 6, 7, 4, 9])
    np.testing.assert_array_equal(top_k(s, 3), [5, 8, 2])
    np.testing.assert_array_equal(top_k(s, 0), np.zeros(0, dtype=np.int64))
    assert top_k(s, 0).dtype == np.int64
    # -0.0 and 0.0 are equal scores: ascending position
    np.testing.assert_array_equal(top_k(np.array([-0.0, 0.0, -0.0, 0.0], dtype=dtype), 4), [0, 1, 2, 3])
    np.testing.assert_array_equal(top_k(np.array([0.0, -0.0], dtype=dtype), 1), [0])
    # only -inf left
    np.testing.assert_array_equal(top_k(np.array([np.nan, -np.inf, np.nan, -np.inf], dtype=dtype), 5), [1, 3])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_nan_never_selected(dtype, rng):
    s = np.full(50, np.nan, dtype=dtype)
    got = top_k(s, 10)
    assert got.shape == (0,) and got.dtype == np.int64
    s[[3, 40]] = [1.0, 2.0]
    np.testing.assert_array_equal(top_k(s, 10), [40, 3])


def test_fewer_than_k_finite_returns_all():
    s = np.array([np.nan, 0.5, np.nan, 0.25])
    np.testing.assert_array_equal(top_k(s, 10), [1, 3])


def test_empty():
    for dtype in (np.float32, np.float64, np.int64):
        got = top_k(np.zeros(0, dtype=dtype), 3)
        assert got.shape == (0,) and got.dtype == np.int64


def test_all_equal_is_ascending_positions():
    for n in (1, 5, 1000, 100_003):
        np.testing.assert_array_equal(top_k(np.ones(n), n), np.arange(n))
        np.testing.assert_array_equal(top_k(np.ones(n, dtype=np.float32), 7), np.arange(min(n, 7)))


@pytest.mark.parametrize("kind", ["strided", "negative", "reversed", "readonly", "step3"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_strided_input(kind, dtype, rng):
    a = random_scores(rng, 1001, dtype)
    if kind == "step3":
        base = random_scores(rng, 3003, dtype)
        x = base[1::3]
    else:
        x = R.layout(a, kind)
        assert np.array_equal(x, a, equal_nan=True)
    for k in (0, 1, 10, 500, 2000):
        check(x, k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_a_million_elements(dtype, rng):
    n = 10**6
    s = random_scores(rng, n, dtype, nan_frac=0.2)
    ref_full = R.top_k(s, n)
    for k in (1, 1000, 100_000, n - 1, n, n + 1):
        got = top_k(s, k)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, ref_full[:k])


def test_a_million_ints(rng):
    s = rng.integers(0, 50, size=10**6)
    np.testing.assert_array_equal(top_k(s, 5000), R.top_k(s, 5000))


def test_a_million_sorted_and_reverse_sorted():
    a = np.arange(10**6, dtype=np.float64)
    np.testing.assert_array_equal(top_k(a, 10), np.arange(10**6 - 1, 10**6 - 11, -1))
    np.testing.assert_array_equal(top_k(a[::-1], 10), np.arange(10))


def test_extreme_int64_values():
    s = np.array([np.iinfo(np.int64).min, 0, np.iinfo(np.int64).max, -1, np.iinfo(np.int64).max])
    np.testing.assert_array_equal(top_k(s, 5), [2, 4, 1, 3, 0])


def test_numpy_integer_k():
    s = np.array([0.1, 0.9, 0.5])
    for k in (np.int64(2), np.int32(2), np.uint8(2)):
        np.testing.assert_array_equal(top_k(s, k), [1, 2])


def test_selects_from_scores_with_omitted_rows(rng):
    """The usual pipeline: omitted rows (NaN scores) are never selected."""
    p = R.random_probs(rng, (200, 5))
    p[[3, 50, 199]] = np.nan
    scores = px.scores.entropy(confidences=p, nan_policy="omit")
    got = top_k(scores, 200)
    assert len(got) == 197
    assert not set(got.tolist()) & {3, 50, 199}
    np.testing.assert_array_equal(got, R.top_k(scores, 200))
