"""pickaxe.detection against float64 numpy references (reference.py per box, reduced here)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import pickaxe as px
import reference as ref

COUNTS = [3, 0, 1, 5, 0, 2]  # boxes per image, with images that have none


def offsets_of(counts):
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def reduce_ref(box_scores, offsets, reduce, obj=None):
    out = []
    for i in range(len(offsets) - 1):
        s = box_scores[offsets[i]:offsets[i + 1]]
        o = np.ones_like(s) if obj is None else obj[offsets[i]:offsets[i + 1]].astype(np.float64)
        if s.size == 0:
            out.append(np.nan)
        elif reduce == "max":
            out.append((o * s).max())
        elif reduce == "sum":
            out.append((o * s).sum())
        else:
            out.append((o * s).sum() / o.sum() if o.sum() > 0 else np.nan)
    return np.array(out)


ROW = [("least_confidence", "confidences"), ("margin", "logits"), ("ratio", "confidences"),
       ("entropy", "logits"), ("entropy", "confidences"), ("energy", "logits"),
       ("max_logit", "logits")]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [2, 150])
@pytest.mark.parametrize("score,field", ROW)
def test_row_scores_per_box(rng, score, field, c, dtype):
    off = offsets_of(COUNTS)
    boxes = ref.random_field(rng, field, int(off[-1]), c, dtype=dtype)
    per_box = ref.score(score, **{field: boxes})
    obj = rng.random(off[-1]).astype(dtype)
    rtol, atol = (2e-4, 2e-5) if dtype == np.float32 else (1e-9, 1e-12)
    for reduce in ("max", "mean", "sum"):
        for o in (None, obj):
            got = getattr(px.detection, score)(**{field: boxes}, offsets=off, reduce=reduce,
                                               objectness=o)
            assert got.dtype == dtype and got.shape == (len(COUNTS),)
            want = reduce_ref(per_box, off, reduce, o)
            ref.assert_close(got, want, rtol, atol, f"{score} {reduce}")
            assert np.isnan(got[[1, 4]]).all()  # images without boxes


@pytest.mark.parametrize("score", ["mutual_information", "variation_ratio", "variance",
                                   "predictive_entropy"])
@pytest.mark.parametrize("logits", [False, True])
def test_stack_scores_per_box(rng, score, logits):
    off = offsets_of(COUNTS)
    boxes = ref.random_field(rng, "mc_dropout", int(off[-1]), 7, m=4, logits=logits)
    per_box = ref.score(score, mc_dropout=boxes, logits=logits)
    got = getattr(px.detection, score)(mc_dropout=boxes, offsets=off, logits=logits, reduce="mean")
    ref.assert_close(got, reduce_ref(per_box, off, "mean"), 1e-9, 1e-12, score)


def test_committee_and_layout(rng):
    off = offsets_of(COUNTS)
    boxes = ref.random_field(rng, "query_by_committee", int(off[-1]), 5, m=3)
    per_box = ref.vote_entropy(query_by_committee=boxes)
    got = px.detection.vote_entropy(query_by_committee=np.asfortranarray(boxes), offsets=off)
    ref.assert_close(got, reduce_ref(per_box, off, "max"), 1e-12, 1e-12)
    lg = ref.random_field(rng, "logits", int(off[-1]), 9, dtype=np.float32)
    want = px.detection.entropy(logits=lg, offsets=off)
    ref.assert_close(px.detection.entropy(logits=np.asfortranarray(lg), offsets=off), want, 1e-6)


def test_no_boxes_at_all():
    s = px.detection.entropy(logits=np.zeros((0, 4), np.float32), offsets=np.zeros(4, np.int64))
    assert s.shape == (3,) and s.dtype == np.float32 and np.isnan(s).all()
    assert px.detection.entropy(logits=np.zeros((0, 4)), offsets=[0]).shape == (0,)
    assert px.select.top_k(s, 2).size == 0


def test_offsets_validation():
    x = np.full((4, 3), 1 / 3)
    for off, msg in [([1, 2, 4], r"offsets\[0\] must be 0"),
                     ([0, 3, 2, 4], r"must not decrease: offsets\[2\] = 2 < offsets\[1\] = 3"),
                     ([0, 2, 3], r"offsets\[-1\] must be the number of boxes, 4; got 3"),
                     ([], "empty")]:
        with pytest.raises(ValueError, match=msg):
            px.detection.entropy(confidences=x, offsets=np.array(off, dtype=np.int64))
    with pytest.raises(ValueError, match="integer"):
        px.detection.entropy(confidences=x, offsets=np.array([0.0, 4.0]))
    with pytest.raises(ValueError, match="1-D"):
        px.detection.entropy(confidences=x, offsets=np.array([[0, 4]]))
    with pytest.raises(TypeError, match="offsets"):
        px.detection.entropy(confidences=x)
    with pytest.raises(ValueError, match="reduce"):
        px.detection.entropy(confidences=x, offsets=[0, 4], reduce="median")
    with pytest.raises(ValueError, match=r"objectness\[1\]"):
        px.detection.entropy(confidences=x, offsets=[0, 4], objectness=[0.5, 1.5, 0, 0])
    with pytest.raises(ValueError, match="objectness"):
        px.detection.entropy(confidences=x, offsets=[0, 4], objectness=[0.5])


def test_nan_error_names_box_and_image(rng):
    off = offsets_of(COUNTS)
    x = ref.random_field(rng, "logits", int(off[-1]), 4, dtype=np.float32)
    x[off[3] + 2, 1] = np.nan
    with pytest.raises(ValueError, match=re.escape(
            f"logits box {off[3] + 2} (image 3, box 2 of the image): NaN at class 1")):
        px.detection.margin(logits=x, offsets=off)
    s = px.detection.margin(logits=x, offsets=off, nan_policy="omit")
    assert np.isnan(s[3]) and np.isfinite(s[[0, 2, 5]]).all()


def test_zero_objectness_mean_is_nan(rng):
    x = ref.random_field(rng, "confidences", 3, 4)
    s = px.detection.entropy(confidences=x, offsets=[0, 2, 3], reduce="mean",
                             objectness=[0.0, 0.0, 1.0])
    assert np.isnan(s[0]) and np.isfinite(s[1])
