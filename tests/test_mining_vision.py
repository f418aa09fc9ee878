"""DetectionMiner, LocalizationMiner and SegmentationMiner on mappings, Arrow tables,
pandas, Parquet files and folders: the same picks as the direct pickaxe.detection /
pickaxe.segmentation calls + top_k, streamed in batches of a few rows; bad rows raise
errors naming the column and the row."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import pickaxe as px
from pickaxe import engine
from pickaxe.pools.boxes import boxes_from_arrow
from pickaxe.cli import main
from pool_kinds import table_as

N, C, M = 57, 3, 3


def _boxes(rng, k):
    xy = rng.uniform(0, 50, size=(k, 2))
    wh = rng.uniform(0, 20, size=(k, 2))
    return np.concatenate([xy, xy + wh], axis=1)


@pytest.fixture(scope="module")
def data():
    """Flat detections of N images (0 to 4 reference boxes each, M members), pixel
    logits and metadata."""
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 5, size=N)
    counts[[0, 9]] = 0
    off = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    boxes = _boxes(rng, int(off[-1]))
    logits = rng.normal(scale=2, size=(len(boxes), C))
    obj = rng.random(len(boxes))
    mb, mc, mcounts = [], [], []
    for i in range(N):
        own = boxes[off[i]:off[i + 1]]
        for m in range(M):
            keep = own[rng.random(len(own)) < 0.75] + rng.normal(scale=1.5, size=(0, 4)).sum()
            keep = keep + np.abs(rng.normal(scale=1.0, size=keep.shape)) * [0, 0, 1, 1]
            extra = _boxes(rng, int(rng.integers(0, 2)))
            b = np.concatenate([keep, extra])
            if i == 5 and m == 1:
                b = b[:0]  # a member without boxes
            mb.append(b)
            mc.append(rng.normal(scale=2, size=(len(b), C)))
            mcounts.append(len(b))
    return {
        "off": off, "bbox": boxes, "logits": logits, "obj": obj,
        "mbbox": np.concatenate(mb), "mlogits": np.concatenate(mc),
        "moff": np.concatenate([[0], np.cumsum(mcounts)]).astype(np.int64),
        "pixels": rng.normal(size=(N, C, 6, 5)).astype(np.float32),
        "split": np.where(rng.random(N) < 0.6, "unlabeled", "train").astype(object),
    }


def _struct_list(offsets, bbox, logits, obj=None):
    fields = [pa.FixedSizeListArray.from_arrays(pa.array(bbox.ravel()), 4),
              pa.ListArray.from_arrays(pa.array(np.arange(0, len(logits) * C + 1, C, dtype=np.int32)),
                                       pa.array(logits.ravel()))]
    names = ["bbox", "logits"]
    if obj is not None:
        fields.append(pa.array(obj))
        names.append("objectness")
    structs = pa.StructArray.from_arrays(fields, names=names)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), structs)


def arrow_table(d, ids=None):
    boxes = _struct_list(d["off"], d["bbox"], d["logits"], d["obj"])
    inner = _struct_list(d["moff"], d["mbbox"], d["mlogits"])
    member = pa.ListArray.from_arrays(pa.array(np.arange(0, N * M + 1, M, dtype=np.int32)), inner)
    px_arr = pa.array(d["pixels"].ravel())
    for size in (5, 6, C):
        px_arr = pa.FixedSizeListArray.from_arrays(px_arr, size)
    cols = {"boxes": boxes, "member_boxes": member, "pixel_logits": px_arr, "split": pa.array(d["split"].tolist())}
    if ids is not None:
        cols = {"id": pa.array(ids), **cols}
    return pa.table(cols)


def make_pool(kind, d, tmp_path, ids=None):
    table = arrow_table(d, ids)
    if kind == "arrow":
        return table
    if kind == "mapping":
        m = {"boxes": table.column("boxes").to_pylist(),  # python lists of dicts
             "member_boxes": table.column("member_boxes"),  # an Arrow column
             "pixel_logits": d["pixels"], "split": d["split"]}
        if ids is not None:
            m["id"] = ids
        return m
    parts = [("a.parquet", 0, 20, 6), ("b.parquet", 20, None, 9)]
    return table_as(kind, table, tmp_path / "vision", row_group_size=11, parts=parts)


def expected(d, miner, rows=None):
    """Scores of every image by the direct calls, and the picks by top_k."""
    if isinstance(miner, px.DetectionMiner):
        s = getattr(px.detection, miner.measure)(
            logits=d["logits"], offsets=d["off"], reduce=miner.reduce,
            objectness=d["obj"] if miner.objectness else None)
    elif isinstance(miner, px.LocalizationMiner):
        s = px.detection.localization_disagreement(
            boxes=d["bbox"], logits=d["logits"], offsets=d["off"], member_boxes=d["mbbox"],
            member_logits=d["mlogits"], member_offsets=d["moff"], members=M,
            iou_threshold=miner.iou_threshold, per_class=miner.per_class, reduce=miner.reduce,
            objectness=d["obj"] if miner.objectness else None)
    else:
        s = getattr(px.segmentation, miner.measure)(logits=d["pixels"], reduce=miner.reduce)
    s = np.asarray(s, dtype=np.float64)
    if rows is not None:
        masked = np.full_like(s, np.nan)
        masked[rows] = s[rows]
        s = masked
    picks = px.select.top_k(s, miner.size)
    return picks, s[picks]


MINERS = [
    lambda: px.DetectionMiner(9),
    lambda: px.DetectionMiner(9, measure="margin", reduce="mean", objectness=True),
    lambda: px.DetectionMiner(9, measure="energy", reduce="sum"),
    lambda: px.LocalizationMiner(9),
    lambda: px.LocalizationMiner(9, iou_threshold=0.3, per_class=True, reduce="mean", objectness=True),
    lambda: px.SegmentationMiner(9),
    lambda: px.SegmentationMiner(9, measure="least_confidence", reduce=("top", 0.1)),
]


@pytest.mark.parametrize("kind", ["mapping", "arrow", "pandas", "polars", "parquet", "folder"])
@pytest.mark.parametrize("with_ids", [False, True])
def test_miners_equal_direct_calls(data, tmp_path, monkeypatch, kind, with_ids):
    monkeypatch.setattr(engine, "BATCH_ROWS", 5)  # many batches: the streaming merge
    ids = np.arange(N) * 3 + 100 if with_ids else None
    pool = make_pool(kind, data, tmp_path, ids)
    for make in MINERS:
        miner = make()
        picks, scores = expected(data, miner)
        got = miner.mine(pool)
        want_ids = ids[picks] if with_ids else picks
        np.testing.assert_array_equal(got.ids, want_ids, err_msg=f"{miner!r} on {kind}")
        np.testing.assert_allclose(got.scores, scores, rtol=1e-5, err_msg=f"{miner!r} on {kind}")
        assert got.metadata["split"].astype(str).tolist() == data["split"][picks].astype(str).tolist()
        assert not np.isin(picks, [0, 9]).any() or isinstance(miner, px.SegmentationMiner)


@pytest.mark.parametrize("kind", ["mapping", "arrow", "parquet"])
def test_miners_with_query(data, tmp_path, monkeypatch, kind):
    monkeypatch.setattr(engine, "BATCH_ROWS", 4)
    pool = make_pool(kind, data, tmp_path)
    rows = np.flatnonzero(data["split"] == "unlabeled")
    for make in MINERS:
        miner = make()
        miner.query = "split = 'unlabeled'"
        picks, scores = expected(data, miner, rows)
        got = miner.mine(pool)
        np.testing.assert_array_equal(got.ids, picks, err_msg=f"{miner!r} on {kind}")
        np.testing.assert_allclose(got.scores, scores, rtol=1e-5)


def test_box_column_matches_flat_arrays(data):
    t = arrow_table(data)
    col = boxes_from_arrow("boxes", t.column("boxes"))
    np.testing.assert_array_equal(col.offsets, data["off"])
    np.testing.assert_array_equal(col.bbox, data["bbox"])
    np.testing.assert_array_equal(col.classes, data["logits"])
    np.testing.assert_array_equal(col.objectness, data["obj"])
    mem = boxes_from_arrow("member_boxes", t.column("member_boxes").slice(4, 10))
    assert mem.members == M and mem.n_rows == 10
    lo, hi = data["moff"][4 * M], data["moff"][14 * M]
    np.testing.assert_array_equal(mem.offsets, data["moff"][4 * M:14 * M + 1] - lo)
    np.testing.assert_array_equal(mem.bbox, data["mbbox"][lo:hi])
    sub = mem[np.array([3, 0])]
    np.testing.assert_array_equal(sub.bbox, np.concatenate([
        data["mbbox"][data["moff"][7 * M]:data["moff"][8 * M]],
        data["mbbox"][data["moff"][4 * M]:data["moff"][5 * M]]]))


def _rows(**box):
    good = {"bbox": [0.0, 0.0, 2.0, 2.0], "logits": [0.1, 0.2]}
    rows = [[good], [good, good], [], [good]]
    return rows, {**good, **box}


@pytest.mark.parametrize("kind", ["mapping", "arrow", "parquet"])
def test_bad_rows_name_column_and_row(tmp_path, kind):
    def pool_of(rows):
        if kind == "mapping":
            return {"boxes": rows}
        t = pa.table({"boxes": pa.array(rows)})
        if kind == "arrow":
            return t
        path = tmp_path / f"bad{len(list(tmp_path.iterdir()))}.parquet"
        pq.write_table(t, path)
        return str(path)

    rows, bad = _rows(bbox=[0.0, 0.0, 2.0])
    rows[3] = [rows[3][0], bad]
    with pytest.raises(ValueError, match=re.escape("column 'boxes.bbox' row 3")):
        px.DetectionMiner(2).mine(pool_of(rows))
    rows, _ = _rows()
    rows[2] = None
    with pytest.raises(ValueError, match=re.escape("column 'boxes' row 2 is null")):
        px.DetectionMiner(2).mine(pool_of(rows))
    rows, bad = _rows(logits=[0.1, float("nan")])
    rows[1] = [rows[1][0], bad]
    with pytest.raises(ValueError, match=re.escape("column 'boxes': logits of row 1, box 1: NaN at class 1")):
        px.DetectionMiner(2).mine(pool_of(rows))
    rows, bad = _rows(bbox=[3.0, 0.0, 2.0, 2.0])
    rows[3] = [bad]
    member = [[r, r] for r in _rows()[0]]
    with pytest.raises(ValueError, match=re.escape("column 'boxes': boxes of row 3 (box 0 of the image): x2 = 2 < x1 = 3")):
        px.LocalizationMiner(2).mine({"boxes": rows, "member_boxes": member} if kind == "mapping"
                                     else pa.table({"boxes": pa.array(rows), "member_boxes": pa.array(member)}))
    rows, _ = _rows()
    member = [[r, r] for r in rows]
    member[2] = [rows[2]]
    with pytest.raises(ValueError, match=re.escape("column 'member_boxes' row 2: 1 members where row 0 has 2")):
        px.LocalizationMiner(2).mine({"boxes": rows, "member_boxes": member})


def test_bad_row_in_a_later_batch_names_the_pool_row(data, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "BATCH_ROWS", 5)
    d = dict(data)
    d["logits"] = d["logits"].copy()
    row = 23
    d["logits"][d["off"][row] + 1 if data["off"][row + 1] - data["off"][row] > 1 else d["off"][row], 2] = np.inf
    path = tmp_path / "bad.parquet"
    table = arrow_table(d)
    if data["off"][row + 1] == data["off"][row]:
        pytest.skip("row without boxes")
    pq.write_table(table, path, row_group_size=7)
    with pytest.raises(ValueError, match=rf"column 'boxes': logits of row {row}, box \d: \+inf at class 2"):
        px.DetectionMiner(3).mine(str(path))
    pix = data["pixels"].copy()
    pix[31, 1, 4, 2] = np.nan
    with pytest.raises(ValueError, match=re.escape("column 'pixel_logits': logits of row 31, pixel (y 4, x 2): NaN at class 1")):
        px.SegmentationMiner(3).mine({"pixel_logits": pix})


def test_missing_fields_and_options():
    with pytest.raises(ValueError, match="needs the field boxes"):
        px.DetectionMiner(2).mine({"logits": np.zeros((3, 2))})
    rows, _ = _rows()
    with pytest.raises(ValueError, match="needs the reference prediction's boxes"):
        px.LocalizationMiner(2).mine({"member_boxes": [[r] for r in rows]})
    with pytest.raises(ValueError, match="objectness=True needs an objectness"):
        px.DetectionMiner(2, objectness=True).mine({"boxes": rows})
    with pytest.raises(ValueError, match="pixel_logits must be"):
        px.SegmentationMiner(2).mine({"pixel_logits": np.zeros((3, 2, 4))})
    with pytest.raises(ValueError, match="measure"):
        px.DetectionMiner(2, measure="vote_entropy")
    with pytest.raises(ValueError, match="reduce"):
        px.DetectionMiner(2, reduce="median")
    with pytest.raises(ValueError, match="iou_threshold"):
        px.LocalizationMiner(2, iou_threshold=0)
    with pytest.raises(ValueError, match="reduce"):
        px.SegmentationMiner(2, reduce=None)
    with pytest.raises(ValueError, match="class_axis"):
        px.SegmentationMiner(2, class_axis=2)
    with pytest.raises(ValueError, match="exactly one of confidences or logits"):
        px.DetectionMiner(2).mine({"boxes": [[{"bbox": [0, 0, 1, 1]}]]})


def test_segmentation_channels_last(data):
    x = np.moveaxis(data["pixels"], 1, -1)
    got = px.SegmentationMiner(5, class_axis=-1).mine({"pixel_logits": x})
    picks, scores = expected(data, px.SegmentationMiner(5))
    np.testing.assert_array_equal(got.ids, picks)
    np.testing.assert_allclose(got.scores, scores, rtol=1e-5)


def test_cli_names_and_mine(data, tmp_path):
    assert px.DetectionMiner(1).name == "detection"
    assert px.LocalizationMiner(1).name == "localization"
    assert px.SegmentationMiner(1).name == "segmentation"
    path = tmp_path / "vision.parquet"
    pq.write_table(arrow_table(data), path)
    runner = CliRunner()
    for args, miner in [
        (["--miner", "detection", "--reduce", "mean", "--objectness", "--measure", "margin"],
         px.DetectionMiner(6, measure="margin", reduce="mean", objectness=True)),
        (["--miner", "localization", "--iou-threshold", "0.3", "--per-class"],
         px.LocalizationMiner(6, iou_threshold=0.3, per_class=True)),
        (["--miner", "segmentation", "--reduce", "top:0.2"], px.SegmentationMiner(6, reduce=("top", 0.2))),
    ]:
        out = tmp_path / "picks.csv"
        r = runner.invoke(main, ["mine", str(path), "--size", "6", "--out", str(out), *args])
        assert r.exit_code == 0, r.output
        picks, _ = expected(data, miner)
        assert pd.read_csv(out)["id"].tolist() == picks.tolist()
    r = runner.invoke(main, ["fields"])
    for text in ("detection", "localization", "segmentation", "boxes (N, *) box structs",
                 "member_boxes (N, M, *) box structs", "pixel_logits (N, C, H, W)", "bbox: [x1, y1, x2, y2]"):
        assert text in r.output


def test_batches_without_any_box(monkeypatch):
    monkeypatch.setattr(engine, "BATCH_ROWS", 2)
    box = {"bbox": [0.0, 0.0, 2.0, 2.0], "logits": [0.1, 0.2]}
    rows = [[], [], [box], [], []]
    members = [[r, []] for r in rows]
    for pool in ({"boxes": rows, "member_boxes": members},
                 pa.table({"boxes": pa.array(rows), "member_boxes": pa.array(members)})):
        got = px.DetectionMiner(3).mine(pool)
        assert got.ids.tolist() == [2]
        np.testing.assert_allclose(got.scores, px.scores.entropy(logits=np.array([[0.1, 0.2]])))
        got = px.LocalizationMiner(3).mine(pool)
        assert got.ids.tolist() == [2] and got.scores.tolist() == [1.0]  # one of two members matches exactly


def test_pool_without_any_box():
    got = px.DetectionMiner(3).mine({"boxes": [[], [], []]})
    assert got.ids.tolist() == []
    got = px.LocalizationMiner(3).mine({"boxes": [[], []], "member_boxes": [[[]], [[]]]})
    assert got.ids.tolist() == []
