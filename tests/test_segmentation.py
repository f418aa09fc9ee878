"""pickaxe.segmentation against float64 numpy references: every pixel is a row of the
references in reference.py (plain float64 numpy), reduced per image here in numpy."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import pickaxe as px
import reference as ref

N, H, W = 3, 5, 70  # W > 64: tiles of pixels have a tail

ROW_SCORES = {
    "least_confidence": ("confidences", "logits"),
    "margin": ("confidences", "logits"),
    "ratio": ("confidences", "logits"),
    "entropy": ("confidences", "logits"),
    "energy": ("logits",),
    "max_logit": ("logits",),
}
STACK_SCORES = {
    "vote_entropy": ("query_by_committee",),
    "consensus_entropy": ("query_by_committee",),
    "kl_disagreement": ("query_by_committee",),
    "mutual_information": ("mc_dropout", "query_by_committee"),
    "predictive_entropy": ("mc_dropout", "query_by_committee"),
    "variation_ratio": ("mc_dropout", "query_by_committee"),
    "variance": ("mc_dropout", "query_by_committee"),
}


def make_rows(rng, field, n_rows, c, dtype, t=3, logits=False):
    return ref.random_field(rng, field, n_rows, c, m=t, dtype=dtype, logits=logits)


def to_layout(rows, stacked, class_axis, t=3):
    """(N·H·W, [T,] C) rows -> (N, [T,] C, H, W) or (N, [T,] H, W, C)."""
    c = rows.shape[-1]
    if not stacked:
        x = rows.reshape(N, H, W, c)  # (N, H, W, C)
        return x if class_axis == -1 else np.moveaxis(x, 3, 1)
    x = rows.reshape(N, H, W, t, c)  # pixel-major rows
    x = np.moveaxis(x, 3, 1)  # (N, T, H, W, C)
    return x if class_axis == -1 else np.moveaxis(x, 4, 2)


def reduce_ref(maps, reduce, mask):
    """Per-image reduction of (N, H, W) float64 maps (NaN for an all-masked image)."""
    out = np.empty(maps.shape[0])
    for i in range(maps.shape[0]):
        v = maps[i][~mask[i]] if mask is not None else maps[i].ravel()
        if v.size == 0:
            out[i] = np.nan
        elif reduce == "mean":
            out[i] = v.mean()
        elif reduce == "max":
            out[i] = v.max()
        else:
            k = max(1, math.ceil(reduce[1] * v.size))
            out[i] = np.sort(v)[::-1][:k].mean()
    return out


def tolerances(dtype):
    return (2e-4, 2e-5) if dtype == np.float32 else (1e-9, 1e-12)


REDUCES = ["mean", "max", ("top", 0.1), None]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("class_axis", [1, -1])
@pytest.mark.parametrize("c", [2, 150])
@pytest.mark.parametrize("score,field", [(s, f) for s, fs in ROW_SCORES.items() for f in fs])
def test_row_scores_per_pixel(rng, score, field, c, class_axis, dtype):
    rows = make_rows(rng, field, N * H * W, c, dtype)
    x = to_layout(rows, False, class_axis)
    maps = ref.score(score, **{field: rows}).reshape(N, H, W)
    mask = rng.random((N, H, W)) < 0.3
    mask[1] = True  # an image with every pixel ignored
    rtol, atol = tolerances(dtype)
    for reduce in REDUCES:
        for m in (None, mask):
            got = getattr(px.segmentation, score)(**{field: x}, class_axis=class_axis,
                                                  reduce=reduce, mask=m)
            assert got.dtype == dtype
            if reduce is None:
                want = maps.copy()
                if m is not None:
                    want[m] = np.nan
                assert got.shape == (N, H, W)
                ref.assert_close(got.ravel(), want.ravel(), rtol, atol, f"{score} map")
            else:
                want = reduce_ref(maps, reduce, m)
                assert got.shape == (N,)
                ref.assert_close(got, want, rtol, atol, f"{score} {reduce}")
                if m is not None:
                    assert np.isnan(got[1])


@pytest.mark.parametrize("class_axis", [2, -1])
@pytest.mark.parametrize("c", [2, 150])
@pytest.mark.parametrize("logits", [False, True])
@pytest.mark.parametrize("score,field", [(s, f) for s, fs in STACK_SCORES.items() for f in fs])
def test_stack_scores_per_pixel(rng, score, field, c, class_axis, logits):
    dtype = np.float64 if c == 2 else np.float32
    rows = make_rows(rng, field, N * H * W, c, dtype, logits=logits)
    x = to_layout(rows, True, class_axis)
    maps = ref.score(score, **{field: rows}, logits=logits).reshape(N, H, W)
    mask = rng.random((N, H, W)) < 0.2
    rtol, atol = tolerances(dtype)
    for reduce in ["mean", ("top", 0.25), None]:
        got = getattr(px.segmentation, score)(**{field: x}, class_axis=class_axis, reduce=reduce,
                                              mask=mask, logits=logits)
        assert got.dtype == dtype
        if reduce is None:
            want = np.where(mask, np.nan, maps)
            ref.assert_close(got.ravel(), want.ravel(), rtol, atol, score)
        else:
            ref.assert_close(got, reduce_ref(maps, reduce, mask), rtol, atol, score)


def test_kl_disagreement_member_reduce(rng):
    rows = make_rows(rng, "query_by_committee", N * H * W, 4, np.float64)
    x = to_layout(rows, True, -1)
    maps = ref.kl_disagreement(query_by_committee=rows, reduce="max").reshape(N, H, W)
    got = px.segmentation.kl_disagreement(query_by_committee=x, class_axis=-1, reduce="max",
                                          member_reduce="max")
    ref.assert_close(got, maps.reshape(N, -1).max(1), 1e-9, 1e-12)


@pytest.mark.parametrize("kind", ["F", "strided", "negative", "transposed_hw"])
@pytest.mark.parametrize("class_axis", [1, -1])
@pytest.mark.parametrize("score", ["entropy", "margin"])
def test_layouts(rng, kind, class_axis, score):
    rows = make_rows(rng, "logits", N * H * W, 21, np.float32)
    x = to_layout(rows, False, class_axis)
    want = getattr(px.segmentation, score)(logits=np.ascontiguousarray(x), class_axis=class_axis)
    if kind == "F":
        y = np.asfortranarray(x)
    elif kind == "strided":
        base = np.full(tuple(2 * d for d in x.shape), np.nan, dtype=x.dtype)
        y = base[::2, ::2, ::2, ::2]
        y[...] = x
    elif kind == "negative":
        base = np.full(x.shape, np.nan, dtype=x.dtype)
        y = base[::-1, ::-1, ::-1, ::-1]
        y[...] = x
    else:  # H and W swapped in memory
        y = np.ascontiguousarray(np.swapaxes(x, -1, -2) if class_axis == 1
                                 else np.swapaxes(x, 1, 2))
        y = np.swapaxes(y, -1, -2) if class_axis == 1 else np.swapaxes(y, 1, 2)
    assert not y.flags.c_contiguous
    got = getattr(px.segmentation, score)(logits=y, class_axis=class_axis)
    ref.assert_close(got, want, 2e-6, 1e-7, kind)
    maps = ref.score(score, logits=rows).reshape(N, H, W)
    ref.assert_close(got, maps.reshape(N, -1).mean(1), 2e-4, 2e-5, kind)


def test_all_masked_is_nan_and_never_selected(rng):
    x = make_rows(rng, "logits", N * H * W, 5, np.float32)
    x = to_layout(x, False, 1)
    mask = np.zeros((N, H, W), dtype=bool)
    mask[0] = True
    for reduce in ["mean", "max", ("top", 0.5)]:
        s = px.segmentation.entropy(logits=x, mask=mask, reduce=reduce)
        assert np.isnan(s[0]) and np.isfinite(s[1:]).all()
        assert 0 not in px.select.top_k(s, N).tolist()


def test_nan_error_names_field_image_pixel(rng):
    for class_axis in (1, -1):
        x = to_layout(make_rows(rng, "logits", N * H * W, 6, np.float32), False, class_axis)
        x = np.array(x)
        idx = (2, 4, 3, 66)
        if class_axis == 1:
            x[idx[0], idx[1], idx[2], idx[3]] = np.nan
        else:
            x[idx[0], idx[2], idx[3], idx[1]] = np.nan
        for score in ("entropy", "least_confidence"):
            with pytest.raises(ValueError, match=re.escape(
                    "logits image 2, pixel (row 3, column 66): NaN at class 4")):
                getattr(px.segmentation, score)(logits=x, class_axis=class_axis)
            mask = np.zeros((N, H, W), dtype=bool)
            mask[2, 3, 66] = True  # masked pixels are not validated
            assert np.isfinite(getattr(px.segmentation, score)(logits=x, class_axis=class_axis,
                                                               mask=mask)).all()
            s = getattr(px.segmentation, score)(logits=x, class_axis=class_axis, nan_policy="omit")
            assert np.isnan(s[2]) and np.isfinite(s[:2]).all()
            m = getattr(px.segmentation, score)(logits=x, class_axis=class_axis, reduce=None,
                                                nan_policy="omit")
            assert np.isnan(m[2, 3, 66]) and np.isfinite(m).sum() == N * H * W - 1


def test_stack_error_names_member(rng):
    x = to_layout(make_rows(rng, "mc_dropout", N * H * W, 4, np.float64), True, 2)
    x = np.array(x)
    x[1, 2, 0, 4, 5] = 1.5
    with pytest.raises(ValueError, match=re.escape(
            "mc_dropout image 1, pixel (row 4, column 5), pass 2: probability 1.5 at class 0 is above 1")):
        px.segmentation.mutual_information(mc_dropout=x)


def test_probabilities_validated(rng):
    x = to_layout(make_rows(rng, "confidences", N * H * W, 3, np.float64), False, 1)
    x = np.array(x)
    x[0, :, 1, 1] = [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match=r"confidences image 0, pixel \(row 1, column 1\): "
                                         r"probabilities sum to 1.5"):
        px.segmentation.entropy(confidences=x)


def test_argument_errors(rng):
    x = np.zeros((2, 3, 4, 5), dtype=np.float32)
    with pytest.raises(ValueError, match="class_axis"):
        px.segmentation.entropy(logits=x, class_axis=2)
    with pytest.raises(ValueError, match="reduce"):
        px.segmentation.entropy(logits=x, reduce="median")
    with pytest.raises(ValueError, match="q"):
        px.segmentation.entropy(logits=x, reduce=("top", 0))
    with pytest.raises(ValueError, match="mask"):
        px.segmentation.entropy(logits=x, mask=np.zeros((2, 4, 4), dtype=bool))
    with pytest.raises(TypeError, match="mask"):
        px.segmentation.entropy(logits=x, mask=np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="4-D"):
        px.segmentation.entropy(logits=np.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match="exactly one"):
        px.segmentation.entropy()
    with pytest.raises(ValueError, match="0 classes"):
        px.segmentation.entropy(logits=np.zeros((2, 0, 4, 5)))
    with pytest.raises(ValueError, match="temperature"):
        px.segmentation.energy(logits=np.zeros((2, 3, 4, 5)), temperature=0)


def test_empty_shapes():
    assert px.segmentation.entropy(logits=np.zeros((0, 3, 4, 5), np.float32)).shape == (0,)
    s = px.segmentation.entropy(logits=np.zeros((2, 3, 0, 5), np.float32))
    assert s.shape == (2,) and np.isnan(s).all()
    assert px.segmentation.entropy(logits=np.zeros((2, 3, 0, 5)), reduce=None).shape == (2, 0, 5)


def test_binary_logits_and_normalize(rng):
    rows = make_rows(rng, "logits", N * H * W, 1, np.float64)
    x = to_layout(rows, False, 1)
    want = ref.entropy(logits=rows, normalize=True).reshape(N, -1).mean(1)
    ref.assert_close(px.segmentation.entropy(logits=x, normalize=True), want, 1e-9, 1e-12)
    rows = make_rows(rng, "logits", N * H * W, 7, np.float32)
    x = to_layout(rows, False, 1)
    want = ref.entropy(logits=rows, normalize=True).reshape(N, -1).max(1)
    ref.assert_close(px.segmentation.entropy(logits=x, normalize=True, reduce="max"), want, 2e-4, 2e-5)
    w = rng.random(7)
    want = ref.entropy(logits=rows, class_weights=w).reshape(N, -1).mean(1)
    ref.assert_close(px.segmentation.entropy(logits=x, class_weights=w), want, 2e-4, 2e-5)


def test_lazy_submodules():
    import pickaxe

    assert "segmentation" in pickaxe._SUBMODULES and "detection" in pickaxe._SUBMODULES
