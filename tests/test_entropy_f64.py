"""float64 scores from logits at every SIMD level, against an extended-precision reference.

The AVX2 path (and AVX-512's exp-sums) compute exp of float64 logits from a 256-entry table
(`logits_x86_f64.rs`). test_scores.py holds float64 scores to rtol 1e-10; these hold
entropy and least confidence to rtol 1e-13 at every level, on rows that reach every part
of that loop: the 4-wide chunks and their tails, unique maxima (the fast pass) and ties
(the exact pass), -inf and huge logit ranges (the bottom of exp's range), one dominant
class (entropies of 1e-20), and a scaled energy.
"""

from __future__ import annotations

import numpy as np
import pytest

import pickaxe as px
from pickaxe import _core

import reference as R

SUPPORTED = R.SUPPORTED_LEVELS
LD = np.longdouble


def sums(x: np.ndarray, t: float = 1.0):
    """(m, S − 1, Σ e·y, S) per row in long double: y = (x − m)/t, e = exp(y), S = Σ e."""
    xl = x.astype(LD)
    m = xl.max(axis=1, keepdims=True)
    y = (xl - m) / LD(t)
    e = np.exp(y)
    top = (y == 0).sum(axis=1)
    rest = np.where(y == 0, LD(0), e).sum(axis=1)
    with np.errstate(invalid="ignore"):
        ey = np.where(np.isneginf(y), LD(0), e * y).sum(axis=1)
    return m[:, 0], (top - 1) + rest, ey, top + rest


def rows(c: int, rng) -> np.ndarray:
    x = rng.standard_normal((40, c)) * 3.0
    x[np.arange(40), rng.integers(0, c, 40)] += rng.uniform(0, 8, 40)
    if c > 1:
        x[1, :] = x[1, 0]  # all tied
        x[2, 1] = x[2].max()  # a tie for the max
        x[3, 0] = 40.0  # one dominant class: entropy ~ 1e-15 and below
        x[4, 0] = 80.0
        x[5, :] = rng.uniform(-700.0, 700.0, c)  # the bottom of exp's range
        x[6, 1:] = -np.inf
        x[7, ::2] = -np.inf
        x[7, 1] = 3.0
    return x


@pytest.mark.parametrize("level", SUPPORTED, indirect=True)
@pytest.mark.parametrize("c", [2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 100, 1000, 1001, 4099])
def test_float64_logit_scores_to_1e_13(level, c):
    rng = np.random.default_rng(c)
    x = rows(c, rng)
    m, s1, ey, s = sums(x)
    h = np.log1p(s1) - ey / s
    got = px.scores.entropy(logits=x)
    np.testing.assert_allclose(got, h.astype(np.float64), rtol=1e-13, atol=0, err_msg=f"{level} entropy C={c}")
    np.testing.assert_allclose(px.scores.least_confidence(logits=x), (s1 / s).astype(np.float64), rtol=1e-13,
                               atol=0, err_msg=f"{level} least_confidence C={c}")
    for t in (1.0, 0.5, 4.0):
        m, s1, _, _ = sums(x, t)
        want = -(m + LD(t) * np.log1p(s1))
        scale = np.abs(m.astype(np.float64)) + t * np.log(c) + 1.0
        err = np.abs(px.scores.energy(logits=x, temperature=t) - want.astype(np.float64))
        assert np.all(err <= 1e-14 * scale), f"{level} energy T={t} C={c}: {err.max()}"


@pytest.mark.parametrize("c", [5, 1000])
def test_float64_levels_agree(c):
    x = rows(c, np.random.default_rng(100 + c))
    before = px.build_info()["simd"]
    try:
        got = {}
        for lv in SUPPORTED:
            _core.set_simd_level(lv)
            got[lv] = px.scores.entropy(logits=x)
    finally:
        _core.set_simd_level(before)
    for lv in SUPPORTED:
        np.testing.assert_allclose(got[lv], got["portable"], rtol=1e-13, atol=0, err_msg=lv)
