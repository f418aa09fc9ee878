"""pickaxe.detection.localization_disagreement against a plain float64 reference of the
same definition, written here: greedy IoU matching by confidence, per box
(1 - mean IoU) + unmatched fraction + mean KL of the matched members from their mean."""

from __future__ import annotations

import re

import numpy as np
import pytest

import pickaxe as px

try:
    from hypothesis import given, strategies as st
except ImportError:  # pragma: no cover
    given = None


# -- the reference -----------------------------------------------------------------------


def probs_ref(x, logits):
    x = np.asarray(x, dtype=np.float64)
    if not logits:
        return np.clip(x, 0, None)
    if x.shape[1] == 1:
        p1 = 1.0 / (1.0 + np.exp(-x[:, 0]))
        return np.stack([1.0 - p1, p1], axis=1)
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(axis=1, keepdims=True)


def iou_ref(a, b):
    a = [float(v) for v in a]
    b = [float(v) for v in b]
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return min(inter / union, 1.0) if union > 0 else 0.0


def kl_ref(p, q):
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def loc_ref(boxes, cls, logits, off, mboxes, mcls, mlogits, moff, m, thr=0.5, per_class=False,
            reduce="max", obj=None):
    boxes = np.asarray(boxes, dtype=np.float64)
    mboxes = np.asarray(mboxes, dtype=np.float64)
    p = probs_ref(cls, logits)
    mp = probs_ref(mcls, mlogits)
    n = len(off) - 1
    per_box = np.zeros(len(boxes))
    for i in range(n):
        rb = list(range(off[i], off[i + 1]))
        conf = {r: p[r].max() for r in rb}
        order = sorted(rb, key=lambda r: (-conf[r], r))
        ious = {r: [] for r in rb}
        dists = {r: [] for r in rb}
        for mm in range(m):
            cand = list(range(moff[i * m + mm], moff[i * m + mm + 1]))
            taken = set()
            for r in order:
                best, best_v = None, -1.0
                for j in cand:
                    if j in taken:
                        continue
                    if per_class and np.argmax(mp[j]) != np.argmax(p[r]):
                        continue
                    v = iou_ref(boxes[r], mboxes[j])
                    if v >= thr and v > best_v:
                        best, best_v = j, v
                if best is not None:
                    taken.add(best)
                    ious[r].append(best_v)
                    dists[r].append(mp[best])
        for r in rb:
            k = len(ious[r])
            d = 0.0
            if k >= 2:
                mean = np.mean(dists[r], axis=0)
                d = np.mean([kl_ref(q, mean) for q in dists[r]])
            per_box[r] = (1 - sum(ious[r]) / m) + (m - k) / m + d
    if reduce is None:
        return per_box
    out = np.empty(n)
    for i in range(n):
        s = per_box[off[i]:off[i + 1]]
        o = np.ones_like(s) if obj is None else np.asarray(obj[off[i]:off[i + 1]], dtype=np.float64)
        if s.size == 0:
            out[i] = np.nan
        elif reduce == "max":
            out[i] = (o * s).max()
        elif reduce == "sum":
            out[i] = (o * s).sum()
        else:
            out[i] = (o * s).sum() / o.sum() if o.sum() > 0 else np.nan
    return out


# -- random detections -------------------------------------------------------------------


def offsets_of(counts):
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def random_boxes(rng, n, scale=20.0, zero_area_frac=0.1):
    xy = rng.uniform(0, scale, size=(n, 2))
    wh = rng.uniform(0, scale / 2, size=(n, 2))
    wh[rng.random(n) < zero_area_frac] = 0.0
    return np.concatenate([xy, xy + wh], axis=1)


def jitter(rng, boxes, amount=1.0):
    """Member boxes near the reference ones: mostly overlapping, some matched."""
    b = boxes + rng.normal(scale=amount, size=boxes.shape)
    x1, x2 = np.minimum(b[:, 0], b[:, 2]), np.maximum(b[:, 0], b[:, 2])
    y1, y2 = np.minimum(b[:, 1], b[:, 3]), np.maximum(b[:, 1], b[:, 3])
    return np.stack([x1, y1, x2, y2], axis=1)


def random_case(rng, ref_counts, m, c, logits=True, mlogits=True):
    off = offsets_of(ref_counts)
    boxes = random_boxes(rng, int(off[-1]))
    cls = rng.normal(scale=2, size=(len(boxes), c)) if logits else rng.dirichlet(np.ones(c), len(boxes))
    mb, mcounts = [], []
    for i in range(len(ref_counts)):
        own = boxes[off[i]:off[i + 1]]
        for _ in range(m):
            keep = own[rng.random(len(own)) < 0.7]  # some reference boxes missed
            extra = random_boxes(rng, int(rng.integers(0, 3)))  # and some spurious boxes
            mine = np.concatenate([jitter(rng, keep), extra])
            mb.append(mine[rng.permutation(len(mine))])
            mcounts.append(len(mine))
    mboxes = np.concatenate(mb) if mb else np.zeros((0, 4))
    mcls = (rng.normal(scale=2, size=(len(mboxes), c)) if mlogits
            else rng.dirichlet(np.ones(c), len(mboxes)))
    return boxes, cls, off, mboxes, mcls, offsets_of(mcounts)


def call(boxes, cls, off, mboxes, mcls, moff, m, logits=True, mlogits=True, **kw):
    ck = "logits" if logits else "confidences"
    mk = "member_logits" if mlogits else "member_confidences"
    return px.detection.localization_disagreement(
        boxes=boxes, **{ck: cls}, offsets=off, member_boxes=mboxes, **{mk: mcls},
        member_offsets=moff, members=m, **kw)


COUNTS = [3, 0, 1, 6, 0, 2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("per_class", [False, True])
@pytest.mark.parametrize("thr", [0.5, 0.1, 0.9])
@pytest.mark.parametrize("logits,mlogits", [(True, True), (False, False), (False, True)])
def test_against_reference(rng, dtype, per_class, thr, logits, mlogits):
    m = 3
    boxes, cls, off, mboxes, mcls, moff = random_case(rng, COUNTS, m, 4, logits, mlogits)
    obj = rng.random(len(boxes))
    args = [a.astype(dtype) for a in (boxes, cls)] + [off] + [a.astype(dtype) for a in (mboxes, mcls)] + [moff, m]
    ref_args = (args[0], args[1], logits, off, args[3], args[4], mlogits, moff, m, thr, per_class)
    rtol, atol = (2e-4, 2e-5) if dtype == np.float32 else (1e-10, 1e-12)
    for reduce in ("max", "mean", "sum", None):
        for o in (None, obj.astype(dtype)):
            got = call(*args, logits=logits, mlogits=mlogits, iou_threshold=thr, per_class=per_class,
                       reduce=reduce, objectness=o)
            want = loc_ref(*ref_args, reduce=reduce, obj=o)
            assert got.dtype == dtype
            assert got.shape == ((len(COUNTS),) if reduce else (len(boxes),))
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"{reduce}")
            if reduce is not None:
                assert np.isnan(got[[1, 4]]).all()  # images without reference boxes


def test_many_images_in_parallel_equal_reference(rng):
    counts = rng.integers(0, 6, size=300)
    boxes, cls, off, mboxes, mcls, moff = random_case(rng, counts, 4, 3)
    got = call(boxes, cls, off, mboxes, mcls, moff, 4, reduce=None)
    np.testing.assert_allclose(got, loc_ref(boxes, cls, True, off, mboxes, mcls, True, moff, 4, reduce=None),
                               rtol=1e-10, atol=1e-12)
    before = px.build_info()["threads"]
    px.set_num_threads(1)
    try:
        one = call(boxes, cls, off, mboxes, mcls, moff, 4, reduce="mean")
    finally:
        px.set_num_threads(before)
    px.set_num_threads(2)
    try:
        two = call(boxes, cls, off, mboxes, mcls, moff, 4, reduce="mean")
    finally:
        px.set_num_threads(before)
    np.testing.assert_array_equal(one, two)


def test_exact_agreement_scores_zero_and_no_members_boxes_scores_two():
    boxes = np.array([[0, 0, 4, 4], [10, 10, 12, 15]], dtype=np.float64)
    cls = np.array([[0.9, 0.1], [0.2, 0.8]])
    off = np.array([0, 2])
    # every member repeats the reference exactly (in another order)
    mboxes = np.concatenate([boxes[::-1]] * 3)
    mcls = np.concatenate([cls[::-1]] * 3)
    moff = np.array([0, 2, 4, 6])
    s = px.detection.localization_disagreement(
        boxes=boxes, confidences=cls, offsets=off, member_boxes=mboxes, member_confidences=mcls,
        member_offsets=moff, members=3, reduce=None)
    np.testing.assert_allclose(s, [0.0, 0.0], atol=1e-12)
    # members with zero boxes: every reference box unmatched, 1 + 1 + 0
    s = px.detection.localization_disagreement(
        boxes=boxes, confidences=cls, offsets=off, member_boxes=np.zeros((0, 4)),
        member_confidences=np.zeros((0, 2)), member_offsets=[0, 0, 0, 0], members=3, reduce=None)
    np.testing.assert_array_equal(s, [2.0, 2.0])


def test_members_with_zero_boxes_in_some_images(rng):
    boxes, cls, off, mboxes, mcls, moff = random_case(rng, [2, 3, 1], 3, 5)
    # empty member 1 of image 0 and member 2 of image 2
    keep = np.ones(len(mboxes), bool)
    counts = np.diff(moff)
    for slot in (0 * 3 + 1, 2 * 3 + 2):
        keep[moff[slot]:moff[slot + 1]] = False
        counts[slot] = 0
    mboxes, mcls, moff = mboxes[keep], mcls[keep], offsets_of(counts)
    got = call(boxes, cls, off, mboxes, mcls, moff, 3, reduce=None)
    want = loc_ref(boxes, cls, True, off, mboxes, mcls, True, moff, 3, reduce=None)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert (got >= 1 / 3 + 1 / 3 - 1e-12).all()  # at least one member never matches


def test_zero_area_boxes_never_match():
    z = np.array([[1.0, 1.0, 1.0, 5.0]])  # zero width
    cls = np.array([[0.5, 0.5]])
    s = px.detection.localization_disagreement(
        boxes=z, confidences=cls, offsets=[0, 1], member_boxes=z.copy(), member_confidences=cls,
        member_offsets=[0, 1], members=1, reduce=None)
    np.testing.assert_array_equal(s, [2.0])
    # a zero-area member box inside a real reference box: IoU 0, no match
    s = px.detection.localization_disagreement(
        boxes=np.array([[0.0, 0.0, 4.0, 4.0]]), confidences=cls, offsets=[0, 1], member_boxes=z,
        member_confidences=cls, member_offsets=[0, 1], members=1, iou_threshold=1e-9, reduce=None)
    np.testing.assert_array_equal(s, [2.0])


def test_threshold_is_inclusive():
    ref_box = np.array([[0.0, 0.0, 4.0, 4.0]])
    half = np.array([[0.0, 0.0, 4.0, 2.0]])  # IoU exactly 0.5
    cls = np.array([[1.0, 0.0]])
    kw = dict(boxes=ref_box, confidences=cls, offsets=[0, 1], member_boxes=half, member_confidences=cls,
              member_offsets=[0, 1], members=1, reduce=None)
    np.testing.assert_allclose(px.detection.localization_disagreement(**kw, iou_threshold=0.5), [0.5])
    np.testing.assert_array_equal(px.detection.localization_disagreement(**kw, iou_threshold=0.5001), [2.0])


def test_greedy_order_and_per_class():
    # Two reference boxes overlap one member box; the more confident reference box takes it.
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 11.0]])
    cls = np.array([[0.6, 0.4], [0.1, 0.9]])  # box 1 more confident (0.9), class 1
    mbox = np.array([[0.0, 0.0, 10.0, 10.5]])
    mcls = np.array([[0.7, 0.3]])  # class 0
    kw = dict(boxes=boxes, confidences=cls, offsets=[0, 2], member_boxes=mbox, member_confidences=mcls,
              member_offsets=[0, 1], members=1, reduce=None)
    s = px.detection.localization_disagreement(**kw)
    assert s[0] == 2.0 and s[1] < 0.1  # box 1 matched, box 0 left over
    s = px.detection.localization_disagreement(**kw, per_class=True)
    assert s[1] == 2.0 and s[0] < 0.1  # only box 0 (class 0) may take it


def test_binary_logits(rng):
    boxes, cls, off, mboxes, mcls, moff = random_case(rng, [2, 4], 2, 1)
    got = call(boxes, cls, off, mboxes, mcls, moff, 2, reduce=None, per_class=True)
    want = loc_ref(boxes, cls, True, off, mboxes, mcls, True, moff, 2, per_class=True, reduce=None)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_no_images_and_no_boxes():
    e2 = np.zeros((0, 2))
    e4 = np.zeros((0, 4))
    s = px.detection.localization_disagreement(boxes=e4, logits=e2, offsets=[0], member_boxes=e4,
                                               member_logits=e2, member_offsets=[0], members=2)
    assert s.shape == (0,)
    s = px.detection.localization_disagreement(boxes=e4, logits=e2, offsets=[0, 0, 0], member_boxes=e4,
                                               member_logits=e2, member_offsets=[0] * 5, members=2)
    assert s.shape == (2,) and np.isnan(s).all()


def _base():
    return dict(boxes=np.array([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0]]),
                logits=np.zeros((3, 2)), offsets=np.array([0, 2, 3]),
                member_boxes=np.array([[0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 1.0, 1.0]]),
                member_logits=np.zeros((3, 2)), member_offsets=np.array([0, 1, 2, 2, 3]), members=2)


def _with(path, value, **more):
    kw = _base()
    kw.update(more)
    if path is not None:
        name, index = path
        kw[name] = kw[name].copy()
        kw[name][index] = value
    return kw


ERRORS = [
    (_with(("boxes", (1, 2)), np.nan), "boxes[1] (image 0, box 1 of the image): x2 is NaN"),
    (_with(("boxes", (2, 0)), np.inf), "boxes[2] (image 1, box 0 of the image): x1 is +inf"),
    (_with(("boxes", (1, 3)), 0.5), "boxes[1] (image 0, box 1 of the image): y2 = 0.5 < y1 = 1"),
    (_with(("boxes", (0, 0)), 3.0), "boxes[0] (image 0, box 0 of the image): x2 = 2 < x1 = 3"),
    (_with(("member_boxes", (1, 1)), -np.inf),
     "member_boxes[1] (image 0, member 1, box 0 of the member's): y1 is -inf"),
    (_with(("member_boxes", (2, 2)), -1.0),
     "member_boxes[2] (image 1, member 1, box 0 of the member's): x2 = -1 < x1 = 0"),
    (_with(("logits", (2, 1)), np.nan), "logits[2] (image 1, box 0 of the image): NaN at class 1"),
    (_with(("member_logits", (0, 0)), np.inf),
     "member_logits[0] (image 0, member 0, box 0 of the member's): +inf at class 0"),
    (_with(None, None, logits=None, confidences=np.array([[0.5, 0.6], [0.5, 0.5], [1.0, 0.0]])),
     "confidences[0] (image 0, box 0 of the image): probabilities sum to 1.1"),
    (_with(None, None, offsets=np.array([0, 3, 2])), "offsets must not decrease: offsets[2] = 2 < offsets[1] = 3"),
    (_with(None, None, offsets=np.array([0, 2, 4])), "offsets[-1] must be the number of boxes, 3; got 4"),
    (_with(None, None, offsets=np.array([1, 2, 3])), "offsets[0] must be 0; got 1"),
    (_with(None, None, member_offsets=np.array([0, 1, 2, 3])),
     "member_offsets must hold N · members = 2 · 2 + 1 = 5 positions; got 4"),
    (_with(None, None, member_offsets=np.array([0, 1, 2, 2, 4])),
     "member_offsets[-1] must be the number of boxes, 3; got 4"),
    (_with(None, None, member_logits=np.zeros((2, 2))), "member_logits has 2 rows but member_boxes has 3"),
    (_with(None, None, logits=np.zeros((3, 5))), "member_logits has 2 classes but logits has 5"),
    (_with(None, None, boxes=np.zeros((3, 5))), "boxes must be (B, 4)"),
    (_with(None, None, objectness=np.array([0.5, 2.0, 0.1])), "objectness[1] is 2.0"),
    (_with(None, None, objectness=np.array([0.5])), "objectness must be (B,) = (3,)"),
    (_with(None, None, iou_threshold=0.0), "iou_threshold must be in (0, 1]"),
    (_with(None, None, iou_threshold=1.5), "iou_threshold must be in (0, 1]"),
    (_with(None, None, members=0), "members must be an int >= 1"),
    (_with(None, None, reduce="median"), "reduce must be"),
]


@pytest.mark.parametrize("kw,message", ERRORS, ids=[m[:40] for _, m in ERRORS])
def test_errors_name_array_box_image_and_fault(kw, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        px.detection.localization_disagreement(**kw)


def test_argument_errors():
    kw = _base()
    with pytest.raises(TypeError, match="exactly one of confidences"):
        px.detection.localization_disagreement(**{**kw, "confidences": kw["logits"]})
    with pytest.raises(TypeError, match="exactly one of member_confidences"):
        px.detection.localization_disagreement(**{k: v for k, v in kw.items() if k != "member_logits"})
    with pytest.raises(TypeError, match="member_offsets"):
        px.detection.localization_disagreement(**{k: v for k, v in kw.items() if k != "member_offsets"})
    with pytest.raises(ValueError, match="boxes must be 2-D"):
        px.detection.localization_disagreement(**{**kw, "boxes": np.zeros(4)})


def test_mixed_dtypes_give_float64(rng):
    kw = _base()
    kw["boxes"] = kw["boxes"].astype(np.float32)
    assert px.detection.localization_disagreement(**kw).dtype == np.float64
    kw = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype == np.float64 else v)
          for k, v in _base().items()}
    assert px.detection.localization_disagreement(**kw).dtype == np.float32


if given is not None:

    @given(st.data())
    def test_random_cases_property(data):
        seed = data.draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        counts = data.draw(st.lists(st.integers(0, 5), min_size=0, max_size=6))
        m = data.draw(st.integers(1, 4))
        c = data.draw(st.integers(1, 4))
        thr = data.draw(st.sampled_from([0.05, 0.3, 0.5, 0.7, 1.0]))
        per_class = data.draw(st.booleans())
        boxes, cls, off, mboxes, mcls, moff = random_case(rng, counts, m, c)
        # integer grid coordinates make exact IoU ties likely
        boxes, mboxes = np.round(boxes), np.round(mboxes)
        got = call(boxes, cls, off, mboxes, mcls, moff, m, iou_threshold=thr, per_class=per_class, reduce=None)
        want = loc_ref(boxes, cls, True, off, mboxes, mcls, True, moff, m, thr, per_class, reduce=None)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
        assert ((got >= -1e-12) & (got <= 2 + np.log(m) + 1e-9)).all()


def test_empty_side_needs_no_classes():
    """A side without any box may come as (0, 0) class scores (an empty Arrow list column)."""
    boxes = np.array([[0.0, 0.0, 2.0, 2.0]])
    s = px.detection.localization_disagreement(
        boxes=boxes, logits=np.zeros((1, 3)), offsets=[0, 1], member_boxes=np.zeros((0, 4)),
        member_logits=np.zeros((0, 0)), member_offsets=[0, 0, 0], members=2)
    np.testing.assert_array_equal(s, [2.0])
    s = px.detection.localization_disagreement(
        boxes=np.zeros((0, 4)), logits=np.zeros((0, 0)), offsets=[0, 0], member_boxes=boxes,
        member_logits=np.zeros((1, 3)), member_offsets=[0, 1], members=1)
    assert np.isnan(s).all()
    with pytest.raises(ValueError, match="member_logits has 0 classes"):
        px.detection.localization_disagreement(
            boxes=boxes, logits=np.zeros((1, 3)), offsets=[0, 1], member_boxes=boxes,
            member_logits=np.zeros((1, 0)), member_offsets=[0, 1], members=1)
