"""Selection.to_label_studio and `pickaxe mine --out picks.json`: Label Studio's task import JSON.

The format checked here is Label Studio's documented "Basic Label Studio JSON format"
(guide: tasks.html#Basic-Label-Studio-JSON-format, and the API's task create): a JSON list
of tasks; each task an object whose ``data`` object holds the values the labeling
configuration's ``$key`` variables read; optional ``meta`` (an object kept with the task),
``annotations`` and ``predictions``; a top-level ``id`` is reserved for Label Studio's own
numbering and is best left out. Without a ``data`` key the whole task would be read as its
data, so every task here must have one.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import pickaxe as px
from pickaxe.cli import main

#: Keys Label Studio reads in an imported task.
TASK_KEYS = {"data", "meta", "annotations", "predictions"}


def _strict_json(path):
    """The file as JSON, refusing NaN and Infinity (which are not JSON, and which
    Label Studio's importer rejects)."""

    def no_constant(name):
        raise AssertionError(f"{path} holds {name}, which is not JSON")

    with open(path, encoding="utf-8") as f:
        return json.loads(f.read(), parse_constant=no_constant)


def check_label_studio_tasks(tasks, n):
    """`tasks` has the shape of Label Studio's task import: a list of n tasks, each an
    object with a non-empty ``data`` object of JSON values, a ``meta`` object, nothing
    else Label Studio does not read, and no reserved top-level ``id``."""
    assert isinstance(tasks, list) and len(tasks) == n
    for task in tasks:
        assert isinstance(task, dict)
        assert set(task) <= TASK_KEYS, set(task) - TASK_KEYS
        assert "id" not in task
        assert isinstance(task["data"], dict) and task["data"]
        assert all(isinstance(k, str) for k in task["data"])
        assert isinstance(task["meta"], dict)
        assert {"id", "score", "miner"} <= set(task["meta"])
        assert isinstance(task["meta"]["score"], float)
        assert isinstance(task["meta"]["miner"], str)


@pytest.fixture
def pool():
    rng = np.random.default_rng(3)
    n = 40
    return {
        "id": np.arange(n, dtype=np.int64) + 2**60 + 1,
        "logits": rng.normal(size=(n, 4)).astype(np.float32),
        "image": np.array([f"s3://bucket/img/{i}.png" for i in range(n)]),
        "split": np.array(["unlabeled", "train"] * (n // 2)),
        "weight": np.where(np.arange(n) % 3 == 0, np.nan, np.arange(n) / 7.0),
    }


def test_one_task_per_picked_row_in_the_selection_order(pool, tmp_path):
    sel = px.MarginMiner(7).mine(pool)
    path = tmp_path / "tasks.json"
    sel.to_label_studio(path)
    tasks = _strict_json(path)
    check_label_studio_tasks(tasks, 7)
    assert [t["meta"]["id"] for t in tasks] == sel.ids.tolist()  # exact, 2**60 + 1 included
    assert [t["meta"]["score"] for t in tasks] == sel.scores.tolist()
    assert {t["meta"]["miner"] for t in tasks} == {"margin"}
    # data=None: every metadata column, under its own name; NaN is null
    assert set(tasks[0]["data"]) == {"image", "split", "weight"}
    for t, i in zip(tasks, sel.ids - (2**60 + 1)):
        assert t["data"]["image"] == f"s3://bucket/img/{i}.png"
        assert t["data"]["weight"] == (None if i % 3 == 0 else i / 7.0)


@pytest.mark.parametrize("data, keys", [
    ("image", {"image"}),
    (["image", "split"], {"image", "split"}),
    ({"img": "image", "row": "id"}, {"img", "row"}),
])
def test_data_chooses_the_columns(pool, tmp_path, data, keys):
    sel = px.EntropyMiner(5).mine(pool)
    path = tmp_path / "tasks.json"
    sel.to_label_studio(path, data=data)
    tasks = _strict_json(path)
    check_label_studio_tasks(tasks, 5)
    assert all(set(t["data"]) == keys for t in tasks)
    if isinstance(data, dict):
        assert [t["data"]["row"] for t in tasks] == sel.ids.tolist()
        assert [t["data"]["img"] for t in tasks] == sel.metadata["image"].tolist()


def test_without_metadata_the_id_is_the_data(tmp_path):
    logits = np.random.default_rng(0).normal(size=(10, 3))
    sel = px.MarginMiner(3).mine({"logits": logits})
    sel.to_label_studio(tmp_path / "t.json")
    tasks = _strict_json(tmp_path / "t.json")
    check_label_studio_tasks(tasks, 3)
    assert [t["data"] for t in tasks] == [{"id": i} for i in sel.ids.tolist()]


def test_stratified_selection_keeps_its_group_in_meta(pool, tmp_path):
    sel = px.MarginMiner(6, stratify="split").mine(pool)
    sel.to_label_studio(tmp_path / "t.json")
    tasks = _strict_json(tmp_path / "t.json")
    check_label_studio_tasks(tasks, 6)
    assert [t["meta"]["group"] for t in tasks] == sel.groups.tolist()


def test_vectors_dates_and_strings(tmp_path):
    sel = px.Selection(np.array(["a", "b"]), np.array([0.5, 0.25]), "entropy", {
        "vec": np.array([[1.0, np.inf], [2.0, 3.0]], dtype=np.float32),
        "when": np.array(["2026-01-02T03:04:05", "NaT"], dtype="datetime64[s]"),
        "text": np.array(["é ünïcode", "x"], dtype=object),
    })
    sel.to_label_studio(tmp_path / "t.json")
    tasks = _strict_json(tmp_path / "t.json")
    check_label_studio_tasks(tasks, 2)
    assert tasks[0]["data"] == {"vec": [1.0, None], "when": "2026-01-02T03:04:05", "text": "é ünïcode"}
    assert tasks[1]["data"] == {"vec": [2.0, 3.0], "when": None, "text": "x"}
    assert tasks[1]["meta"] == {"id": "b", "score": 0.25, "miner": "entropy"}


def test_bad_data_argument_and_values(pool, tmp_path):
    sel = px.MarginMiner(3).mine(pool)
    with pytest.raises(ValueError, match="'nope'.*image, split, weight"):
        sel.to_label_studio(tmp_path / "t.json", data=["nope"])
    with pytest.raises(TypeError, match="data must be"):
        sel.to_label_studio(tmp_path / "t.json", data=3)
    with pytest.raises(ValueError, match="names no column"):
        sel.to_label_studio(tmp_path / "t.json", data=[])
    # a value JSON cannot hold: an error naming the column; the old file is untouched
    old = tmp_path / "old.json"
    old.write_text("[]")
    odd = px.Selection(np.array([1]), np.array([0.5]), "margin", {"blob": np.array([object()], dtype=object)})
    with pytest.raises(TypeError, match="column 'blob'"):
        odd.to_label_studio(old)
    assert old.read_text() == "[]"
    assert sorted(os.listdir(tmp_path)) == ["old.json"]


def test_write_and_the_command_line_choose_json_by_suffix(pool, tmp_path):
    path = tmp_path / "pool.parquet"
    pq.write_table(pa.table({
        "id": pa.array(pool["id"]),
        "logits": pa.FixedSizeListArray.from_arrays(pa.array(pool["logits"].ravel()), 4),
        "image": pa.array(pool["image"]),
    }), path)
    out = tmp_path / "picks.json"
    r = CliRunner().invoke(main, ["mine", str(path), "--miner", "margin", "--size", "5", "--out", str(out)])
    assert r.exit_code == 0, r.output
    tasks = _strict_json(out)
    check_label_studio_tasks(tasks, 5)
    sel = px.MarginMiner(5).mine(str(path))
    assert [t["meta"]["id"] for t in tasks] == sel.ids.tolist()
    assert [t["data"] for t in tasks] == [{"image": v} for v in sel.metadata["image"].tolist()]
    sel.write(tmp_path / "again.json")
    assert _strict_json(tmp_path / "again.json") == tasks
