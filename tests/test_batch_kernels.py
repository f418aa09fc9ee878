"""The batch controls' Rust kernels (`_core.draw_keys`, `draw_top_k`, `group_top_k`)
against the numpy code they replace (`pickaxe.batch_controls`, `pickaxe.engine.uniforms`,
a stable sort per group), on random inputs with ties, NaN, empty groups and k larger
than a group."""

from __future__ import annotations

import numpy as np
import pytest

from pickaxe import _core
from pickaxe import batch_controls as bc
from pickaxe.engine import uniforms
from pickaxe.per_row import DRAW_STREAM


def _scores(rng, n, dtype=np.float64):
    x = rng.integers(0, 12, n).astype(dtype) / 11  # few distinct values: many ties
    x[rng.random(n) < 0.1] = np.nan
    x[rng.random(n) < 0.05] = 0.0
    return x


def _numpy_keys(scores, numbers, seed, sampling, beta):
    c = bc.Controls(sampling=sampling, beta=beta, seed=seed)
    return bc.gumbel_keys(bc.log_weights(c, scores), uniforms(numbers, seed + DRAW_STREAM))


def _numpy_top(keys, k):
    """Positions of the k best keys: descending, ties by position, NaN never."""
    ok = np.flatnonzero(~np.isnan(keys))
    return ok[np.argsort(-keys[ok], kind="stable")][:k]


@pytest.mark.parametrize("sampling,beta", [("power", 1.0), ("power", 0.0), ("power", 2.5), ("softmax", 3.0), ("softmax", 0.0)])
@pytest.mark.parametrize("seed", [0, -3, 2**70 + 5])
def test_draw_keys_match_numpy(sampling, beta, seed):
    rng = np.random.default_rng(abs(seed) % 1000)
    n = 20_000
    scores = _scores(rng, n)
    numbers = rng.integers(-(2**62), 2**62, n)
    want = _numpy_keys(scores, numbers, seed, sampling, beta)
    s64 = (seed + DRAW_STREAM) % 2**64
    for nums, offset, ref in [(numbers, 0, want), (None, 17, _numpy_keys(scores, np.arange(n) + 17, seed, sampling, beta))]:
        got = _core.draw_keys(scores, nums, offset, s64, sampling, beta)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-13)  # libm and numpy logs: an ulp apart at most
        for k in (0, 1, 37, n + 3):
            rows, keys = _core.draw_top_k(scores, nums, offset, s64, sampling, beta, k)
            np.testing.assert_array_equal(rows, _numpy_top(ref, k))
            np.testing.assert_array_equal(keys, got[rows])


def test_draw_top_k_reads_float32_and_checks_lengths():
    rng = np.random.default_rng(1)
    x = _scores(rng, 500, np.float32)
    a = _core.draw_top_k(x, None, 0, 9, "power", 1.0, 20)
    b = _core.draw_top_k(x.astype(np.float64), None, 0, 9, "power", 1.0, 20)
    np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(ValueError, match="row numbers"):
        _core.draw_top_k(x, np.arange(3), 0, 9, "power", 1.0, 20)
    with pytest.raises(ValueError, match="power"):
        _core.draw_keys(x, None, 0, 9, "rank", 1.0)


def _numpy_groups(keys, codes, groups, k, ties):
    out, scored, sizes = [], [], []
    for g in range(groups):
        idx = np.flatnonzero(codes == g)
        sizes.append(len(idx))
        idx = idx[~np.isnan(keys[idx])]
        scored.append(len(idx))
        out.append(idx[np.lexsort((ties[idx], -keys[idx]))][:k])
    return out, scored, sizes


@pytest.mark.parametrize("n", [0, 1, 300, 5000, (1 << 20) * 2 + 11])
@pytest.mark.parametrize("code_type", [np.int32, np.int64])
def test_group_top_k_matches_a_sort_per_group(n, code_type):
    rng = np.random.default_rng(n)
    groups = 9
    keys = _scores(rng, n)
    codes = rng.choice([0, 1, 2, 4, 5, 6, 8], n).astype(code_type)  # 3 and 7: empty groups
    codes[: min(n, 3)] = 8  # a small group: k larger than it
    ties = rng.permutation(n).astype(np.int64)
    for k in (0, 1, 25, n + 1):
        for tie in (None, ties):
            rows, ends, scored, sizes = _core.group_top_k(keys, codes + 100, 100, groups, k, tie)
            want, want_scored, want_sizes = _numpy_groups(keys, codes, groups, k, np.arange(n) if tie is None else tie)
            assert ends.tolist() == np.cumsum([len(w) for w in want]).tolist()
            start = 0
            for g in range(groups):
                assert rows[start : ends[g]].tolist() == want[g].tolist(), (k, g, tie is None)
                start = ends[g]
            assert scored.tolist() == want_scored and sizes.tolist() == want_sizes


@pytest.mark.parametrize("code_type", [np.int32, np.int64])
def test_group_top_k_floors_cut_what_the_unfloored_top_keeps(code_type):
    # A floor per group (a streamed run's k-th best so far): the rows kept are the
    # unfloored best k of the group that are at or above the floor, counts unchanged.
    rng = np.random.default_rng(3)
    n, groups = 40_000, 5
    keys = np.round(rng.random(n), 3)  # ties at the floors too
    codes = rng.integers(0, groups, n).astype(code_type)
    floors = np.array([-np.inf, 0.5, 0.999, 2.0, np.nan])  # NaN floor: nothing kept
    for k in (1, 30, 3000):
        rows, ends, scored, sizes = _core.group_top_k(keys, codes, 0, groups, k)
        frows, fends, fscored, fsizes = _core.group_top_k(keys, codes, 0, groups, k, None, floors)
        assert fscored.tolist() == scored.tolist() and fsizes.tolist() == sizes.tolist()
        for g in range(groups):
            want = [r for r in rows[(ends[g - 1] if g else 0) : ends[g]] if keys[r] >= floors[g]]
            assert frows[(fends[g - 1] if g else 0) : fends[g]].tolist() == want, (k, g)
    with pytest.raises(ValueError, match="floors: 2 for 5 groups"):
        _core.group_top_k(keys, codes, 0, groups, 3, None, floors[:2])
    with pytest.raises(TypeError, match="floors"):
        _core.group_top_k(keys, codes, 0, groups, 3, None, floors.astype(np.float32))


def test_group_top_k_rejects_a_code_out_of_range():
    with pytest.raises(ValueError, match="row 2 has group code 5"):
        _core.group_top_k(np.ones(4), np.array([0, 1, 5, 0]), 0, 3, 2)
    with pytest.raises(TypeError):
        _core.group_top_k(np.ones(4), np.ones(4), 0, 3, 2)
