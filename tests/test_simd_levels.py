"""Every SIMD path this CPU can run gives the reference results, not only the fastest.

The dispatcher is forced to each level in turn (`pickaxe._core.set_simd_level`, the
function `PICKAXE_SIMD` uses at import) and every score is compared with the float64
references at the usual tolerances, on inputs long enough to use the vector loops and
their tails (C = 37, 1000).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import pickaxe as px
from pickaxe import _catalog, _core

import reference as R

LEVELS = R.SIMD_LEVELS
SUPPORTED = R.SUPPORTED_LEVELS
RTOL = {np.float32: 1e-5, np.float64: 1e-10}
ROW_SCORES = {
    field: [spec.name for spec in _catalog.SCORES if spec.family == "row" and field in spec.fields]
    for field in ("confidences", "logits")
}
STACK_SCORES = [spec.name for spec in _catalog.SCORES if spec.family in ("committee", "stack")]


@pytest.mark.parametrize("level", SUPPORTED, indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("c", [37, 1000])
def test_row_scores_at_every_level(level, dtype, c):
    rng = np.random.default_rng(c)
    for field, names in ROW_SCORES.items():
        x = R.random_field(rng, field, 64, c, dtype=dtype)
        for name in names:
            got = getattr(px.scores, name)(**{field: x})
            want = R.score(name, **{field: x})
            R.assert_close(got, want, RTOL[dtype], atol=1e-12, what=f"{level} {name}({field})")


@pytest.mark.parametrize("level", SUPPORTED, indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("logits", [False, True])
def test_stack_scores_at_every_level(level, dtype, logits):
    rng = np.random.default_rng(7)
    x = R.random_field(rng, "query_by_committee", 32, 37, m=5, dtype=dtype, logits=logits)
    for name in STACK_SCORES:
        got = getattr(px.scores, name)(query_by_committee=x, logits=logits)
        want = R.score(name, query_by_committee=x, logits=logits)
        # Near-zero disagreement is a difference of entropies: absolute tolerance there.
        R.assert_close(got, want, RTOL[dtype] * 10, atol=1e-6 if dtype == np.float32 else 1e-12,
                       what=f"{level} {name}")


@pytest.mark.parametrize("level", SUPPORTED, indirect=True)
def test_validation_at_every_level(level):
    x = np.random.default_rng(0).normal(size=(100, 40)).astype(np.float32)
    x[57, 33] = np.nan
    with pytest.raises(ValueError, match=r"logits row 57: NaN at class 33"):
        px.scores.entropy(logits=x)
    out = px.scores.entropy(logits=x, nan_policy="omit")
    assert np.isnan(out[57]) and np.isfinite(np.delete(out, 57)).all()


def _run(env_value: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PICKAXE_SIMD=env_value)
    code = "import pickaxe as px; print(px.build_info()['simd'])"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("name", SUPPORTED)
def test_environment_variable_forces_a_level(name):
    res = _run(name)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == name


def test_environment_variable_rejects_unknown_level():
    res = _run("sse9")
    assert res.returncode != 0
    assert "PICKAXE_SIMD" in res.stderr and "portable" in res.stderr


def test_cannot_force_a_level_above_the_cpu():
    above = LEVELS[len(SUPPORTED):]
    for name in above:
        with pytest.raises(ValueError, match="not supported by this CPU"):
            _core.set_simd_level(name)
    with pytest.raises(ValueError, match="portable, avx2 or avx512"):
        _core.set_simd_level("neon")
