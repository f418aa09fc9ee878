"""Bad data raises pickaxe.errors.InvalidInputError (a ValueError) whose attributes say
where the fault is: the kernels set them, miners re-base them to the pool's rows (across
batches, files and Ray workers) by the attributes, never by the message."""

import pickle

import numpy as np
import pytest

import pickaxe as px
from pickaxe import engine
from pickaxe.errors import InvalidInputError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def test_kernel_errors_carry_their_location():
    x = np.zeros((5, 4), dtype=np.float32)
    x[3, 2] = np.inf
    with pytest.raises(InvalidInputError) as e:
        px.scores.margin(logits=x)
    err = e.value
    assert isinstance(err, ValueError)
    assert (err.field, err.row, err.member, err.reason) == ("logits", 3, None, "+inf at class 2")
    assert str(err) == "logits row 3: +inf at class 2"

    q = np.full((4, 3, 5), 0.2)
    q[2, 1, 4] = -0.5
    with pytest.raises(InvalidInputError) as e:
        px.scores.mutual_information(mc_dropout=q)
    assert (e.value.field, e.value.row, e.value.member) == ("mc_dropout", 2, 1)
    assert str(e.value).startswith("mc_dropout row 2, pass 1: probability -0.5 at class 4 is negative")


def test_pixel_and_box_errors_carry_their_location():
    seg = np.zeros((2, 3, 4, 5), dtype=np.float32)
    seg[1, 2, 3, 4] = np.nan
    with pytest.raises(InvalidInputError) as e:
        px.segmentation.entropy(logits=seg)
    assert (e.value.row, e.value.image, e.value.pixel) == (1, 1, (3, 4))
    assert str(e.value) == "logits image 1, pixel (row 3, column 4): NaN at class 2"

    boxes = np.zeros((6, 3))
    boxes[4, 0] = np.nan
    with pytest.raises(InvalidInputError) as e:
        px.detection.entropy(logits=boxes, offsets=np.array([0, 2, 6]))
    assert (e.value.row, e.value.image, e.value.box, e.value.box_in_image) == (1, 1, 4, 2)
    assert str(e.value) == "logits box 4 (image 1, box 2 of the image): NaN at class 0"


def test_streamed_parquet_folder_third_batch(tmp_path, monkeypatch):

    monkeypatch.setattr(engine, "BATCH_ROWS", 10)  # batches of 10 rows across 3 files
    rng = np.random.default_rng(0)
    x = rng.normal(size=(36, 4))
    bad = 25  # in the third batch (rows 20-29) and the third file (rows 24-35)
    x[bad, 1] = np.nan
    folder = tmp_path / "pool"
    folder.mkdir()
    ids = np.array([f"img-{i}" for i in range(36)])
    for k in range(3):
        part = slice(12 * k, 12 * (k + 1))
        pq.write_table(pa.table({"id": pa.array(ids[part]),
                                 "logits": pa.FixedSizeListArray.from_arrays(pa.array(x[part].ravel()), 4)}),
                       folder / f"part-{k}.parquet")
    with pytest.raises(InvalidInputError) as e:
        px.EntropyMiner(3).mine(str(folder))
    err = e.value
    assert (err.field, err.row, err.id, err.reason) == ("logits", bad, "img-25", "NaN at class 1")
    assert str(err) == "logits row 25 (id 'img-25'): NaN at class 1"
    # and under a query that drops the first rows: still the pool's row
    with pytest.raises(InvalidInputError) as e:
        px.EntropyMiner(3, query="id >= 'img-2'").mine(str(folder))
    assert (e.value.row, e.value.id) == (bad, "img-25")


def test_vision_miner_errors_name_the_pool_row():
    rng = np.random.default_rng(1)
    pix = rng.normal(size=(6, 3, 4, 4)).astype(np.float32)
    pix[4, 0, 1, 2] = np.nan
    with pytest.raises(InvalidInputError) as e:
        px.SegmentationMiner(2).mine({"id": np.arange(6) * 10, "pixel_logits": pix})
    err = e.value
    assert (err.column, err.row, err.id, err.pixel) == ("pixel_logits", 4, 40, (1, 2))
    assert str(err) == "column 'pixel_logits': logits of row 4 (id 40), pixel (y 1, x 2): NaN at class 0"


def test_errors_pickle_with_their_attributes():
    x = np.zeros((3, 2))
    x[1, 0] = np.nan
    with pytest.raises(InvalidInputError) as e:
        px.EntropyMiner(1).mine({"id": np.array(["a", "b", "c"]), "logits": x})
    back = pickle.loads(pickle.dumps(e.value))
    assert type(back) is InvalidInputError
    assert (back.row, back.id, str(back)) == (1, "b", str(e.value))
    moved = back.with_row(7, id="z")
    assert (moved.row, moved.id, str(moved)) == (7, "z", "logits row 7 (id 'z'): NaN at class 0")
