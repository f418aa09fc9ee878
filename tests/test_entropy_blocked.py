"""Entropy of short logits rows on the row-blocked path (several rows side by side in the
SIMD lanes, `rust/pickaxe-core/src/blocked.rs`) against the float64 reference, at every SIMD
level this CPU runs: C = 1..64 (C = 1 and C above the threshold take the row kernel), N not a
multiple of the 64-row tile, ties, -inf, a dominant class, NaN / inf rows under both NaN
policies, strided and Fortran-ordered input, both float dtypes."""

from __future__ import annotations

import math

import numpy as np
import pytest

import pickaxe as px

import reference as R

SUPPORTED = R.SUPPORTED_LEVELS
RTOL = {np.float32: 1e-5, np.float64: 1e-10}


def _logits(rng, n, c, dtype):
    x = rng.normal(0.0, 4.0, size=(n, c))
    for i in range(n):
        k = i % 7
        if k == 1:
            x[i] = 3.0  # all tied
        elif k == 2:
            x[i, i % c] = -np.inf
        elif k == 3:
            x[i, i % c] = 60.0  # one class dominates: H ~ 1e-24
        elif k == 4 and c > 1:
            x[i, 0] = x[i, -1] = x[i].max() + 1.0  # a tie for the max
    return x.astype(dtype)


@pytest.mark.parametrize("level", SUPPORTED, indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_short_rows_match_reference(level, dtype):
    rng = np.random.default_rng(18)
    # 64 and 100 / 160: the register-transposing kernel's limits at AVX2 (float64 / float32)
    for c in list(range(1, 65)) + [71, 99, 100, 101, 128, 159, 160, 161, 200]:
        for n in (1, 63, 64, 131):
            x = _logits(rng, n, c, dtype)
            for normalize in (False, True):
                want = R.entropy(logits=x, normalize=normalize)
                for name, v in (("C order", x), ("Fortran", np.asfortranarray(x))):
                    got = px.scores.entropy(logits=v, normalize=normalize)
                    assert got.dtype == dtype
                    R.assert_close(got, want, RTOL[dtype], what=f"{level} C={c} N={n} {name} {normalize}")
            # steps and negative strides, rows and classes
            v = x[::-2]
            R.assert_close(px.scores.entropy(logits=v), R.entropy(logits=v), RTOL[dtype],
                           what=f"{level} C={c} N={n} reversed rows")
            if c >= 4:
                v = x[:, ::2]
                R.assert_close(px.scores.entropy(logits=v), R.entropy(logits=v), RTOL[dtype],
                               what=f"{level} C={c} N={n} every other class")


@pytest.mark.parametrize("level", SUPPORTED, indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("c", [2, 3, 10, 33, 64, 100, 160])
def test_invalid_rows(level, dtype, c):
    rng = np.random.default_rng(c)
    n = 150
    x = _logits(rng, n, c, dtype)
    x[5, c - 1] = np.nan
    x[70, 0] = np.inf
    x[100] = -np.inf
    x[149, 0] = np.nan
    with pytest.raises(ValueError, match=r"row 5\b.*NaN"):
        px.scores.entropy(logits=x)
    got = px.scores.entropy(logits=x, nan_policy="omit")
    np.testing.assert_array_equal(np.flatnonzero(np.isnan(got)), [5, 70, 100, 149])
    good = np.ones(n, bool)
    good[[5, 70, 100, 149]] = False
    R.assert_close(got[good], R.entropy(logits=x[good]), RTOL[dtype])
    # the fault names the first bad row when it is the only one, wherever it sits in a tile
    for r in (0, 63, 64, 149):
        y = _logits(rng, n, c, dtype)
        y[r, c // 2] = np.inf
        with pytest.raises(ValueError, match=rf"row {r}\b"):
            px.scores.entropy(logits=y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_large_inputs_threads_and_tiles(dtype):
    """Above the parallel threshold: tasks of rows that are not whole tiles."""
    rng = np.random.default_rng(3)
    for c in (10, 37):
        x = _logits(rng, 70_001, c, dtype)
        R.assert_close(px.scores.entropy(logits=x), R.entropy(logits=x), RTOL[dtype], what=f"C={c}")
        x[65_537, 1] = np.nan
        with pytest.raises(ValueError, match=r"row 65537\b"):
            px.scores.entropy(logits=x)
        got = px.scores.entropy(logits=x, nan_policy="omit")
        assert np.flatnonzero(np.isnan(got)).tolist() == [65_537]


def test_tiny_entropy_is_relative():
    """One dominant class: H ~ 1e-20 right to rtol 1e-5 on the blocked path too."""
    x = np.array([[0.0, -50.0, -60.0], [20.0, -20.0, -25.0], [-3.0, -33.0, -40.0]] * 30)
    for dtype in (np.float32, np.float64):
        got = px.scores.entropy(logits=x.astype(dtype))
        R.assert_close(got, R.entropy(logits=x.astype(dtype)), 1e-5)
        R.assert_close(px.scores.entropy(logits=x.astype(dtype), normalize=True),
                       R.entropy(logits=x.astype(dtype)) / math.log(3), 1e-5)


@pytest.mark.parametrize("level", SUPPORTED, indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_one_finite_class_is_exactly_zero(level, dtype):
    """Every class but one -inf: e = 0 exactly for them (the exp's bottom is an exact 0), H = 0."""
    for c in (2, 4, 5, 8, 9, 10, 17, 64):
        x = np.full((70, c), -np.inf)
        x[np.arange(70), np.arange(70) % c] = np.linspace(-50.0, 50.0, 70)
        got = px.scores.entropy(logits=x.astype(dtype))
        assert np.all(got == 0.0), f"{level} C={c}: {got[got != 0][:3]}"
