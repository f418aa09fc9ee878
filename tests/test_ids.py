"""Ids are exact: integer ids stay integers of their type, nulls and duplicates are errors
naming the column and rows, and string and integer ids round-trip through every pool kind,
`Selection.to_*` and the command line."""

import numpy as np
import pytest

import pickaxe as px
from pickaxe import engine

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pd = pytest.importorskip("pandas")
pl = pytest.importorskip("polars")
from click.testing import CliRunner  # noqa: E402

from pickaxe.cli import main  # noqa: E402
from pool_kinds import table_as

N = 40
BIG = [2**60 + 1, 2**60 + 3, 2**63 - 1, -(2**62) - 7]  # not exact as float64


def logits(n=N, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 4))


def int_ids(n=N):
    ids = np.arange(n, dtype=np.int64) * 7 + 2**60
    ids[: len(BIG)] = BIG
    return ids


def str_ids(n=N):
    return np.array([f"img/{i:04d}.png" for i in range(n)], dtype=object)


def fsl(x):
    return pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])


def as_kind(kind, ids, x, tmp_path, arrow_ids=None):
    """The pool {id, logits} as `kind`; `arrow_ids` (a pyarrow array) overrides the ids
    where the kind is Arrow-backed (for nulls)."""
    a_ids = arrow_ids if arrow_ids is not None else pa.array(ids)
    table = pa.table({"id": a_ids, "logits": fsl(x)})
    if kind == "mapping":
        return {"id": ids, "logits": x}
    kind = "arrow" if kind == "table" else kind
    parts = [("a.parquet", 0, 25, None), ("b.parquet", 25, None, None)]
    pool = table_as(kind, table, tmp_path / "pool", row_group_size=16, parts=parts)
    return str(pool) if kind == "folder" else pool


KINDS = ["mapping", "table", "pandas", "polars", "parquet", "folder"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("make_ids", [int_ids, str_ids], ids=["int", "str"])
def test_ids_round_trip_exactly(tmp_path, kind, make_ids):
    ids, x = make_ids(), logits()
    pool = as_kind(kind, ids, x, tmp_path)
    sel = px.EntropyMiner(N).mine(pool)
    expected = px.EntropyMiner(N).mine({"logits": x}).ids  # row numbers
    assert sel.ids.tolist() == [ids[i] for i in expected.tolist()]
    if make_ids is int_ids:
        assert sel.ids.dtype == np.int64
        assert sel.to_arrow().column("id").type == pa.int64()
        assert sel.to_pandas()["id"].dtype == np.int64
    # and through the files a selection is written to
    sel.write(tmp_path / "s.parquet")
    assert pq.read_table(tmp_path / "s.parquet").column("id").to_pylist() == sel.ids.tolist()
    sel.write(tmp_path / "s.csv")
    lines = (tmp_path / "s.csv").read_text().splitlines()[1:]
    assert [ln.split(",")[0] for ln in lines] == [str(v) for v in sel.ids.tolist()]


@pytest.mark.parametrize("kind", ["table", "pandas", "polars", "parquet", "folder"])
def test_null_id_is_an_error_naming_the_rows(tmp_path, kind):
    ids = int_ids()
    with_nulls = pa.array([None if i in (3, 30) else int(v) for i, v in enumerate(ids)], pa.int64())
    pool = as_kind(kind, ids, logits(), tmp_path, arrow_ids=with_nulls)
    with pytest.raises(ValueError, match=r"the id column has no value at row 3") as e:
        px.EntropyMiner(3).mine(pool)
    if kind in ("table", "pandas", "polars"):  # checked whole when opened
        assert "row 30" in str(e.value)


@pytest.mark.parametrize(
    "ids",
    [
        np.array([1.0, 2.0, np.nan, 4.0] * 10),
        np.array(["a", None, "c", "d"] * 10, dtype=object),
    ],
    ids=["nan", "none"],
)
def test_null_id_in_a_mapping(ids):
    with pytest.raises(ValueError, match="the id column has no value at row"):
        px.EntropyMiner(3).mine({"id": ids, "logits": logits()})


@pytest.mark.parametrize("kind", ["mapping", "table", "pandas", "polars"])
@pytest.mark.parametrize("make_ids", [int_ids, str_ids], ids=["int", "str"])
def test_duplicate_ids_in_memory_are_an_error(tmp_path, kind, make_ids):
    ids = make_ids()
    ids[33] = ids[5]
    pool = as_kind(kind, ids, logits(), tmp_path)
    with pytest.raises(ValueError, match=r"duplicates: id .* is at row 5 and row 33; ids name rows and must be unique"):
        px.EntropyMiner(1).mine(pool)
    with pytest.raises(ValueError, match="duplicates"):
        px.combine([px.EntropyMiner(1), px.MarginMiner(1)], size=2).mine(pool)


@pytest.mark.parametrize("kind", ["parquet", "folder"])
def test_duplicate_ids_in_a_streamed_pool(tmp_path, kind):
    # within one batch: refused when the batch is read
    ids = int_ids()
    ids[12] = ids[2]
    with pytest.raises(ValueError, match="is at row 2 and row 12"):
        px.EntropyMiner(1).mine(as_kind(kind, ids, logits(), tmp_path))


def test_streamed_duplicates_never_reach_a_selection(tmp_path, monkeypatch):
    # in different batches: the picks are checked whole, so a selection that would hold
    # one id twice is refused (naming both rows)

    x = logits()
    x[[3, 35]] = 0.0  # two rows of maximal entropy: both picked first
    ids = int_ids()
    ids[35] = ids[3]
    path = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"id": pa.array(ids), "logits": fsl(x)}), path, row_group_size=8)
    monkeypatch.setattr(engine, "BATCH_ROWS", 8)
    with pytest.raises(ValueError, match="is at row 3 and row 35"):
        px.EntropyMiner(2).mine(str(path))
    px.EntropyMiner(1).mine(str(path))  # one pick: no id twice, nothing to refuse


def test_selection_never_holds_one_id_twice():
    with pytest.raises(ValueError, match="duplicates: id 7 is at position 0 and position 2"):
        px.Selection(np.array([7, 3, 7]), np.array([0.9, 0.5, 0.1]), "entropy")


def test_combine_with_unique_ids_returns_each_id_once(tmp_path):
    ids, x = str_ids(), logits()
    for kind in KINDS:
        sub = tmp_path / kind
        sub.mkdir()
        sel = px.combine([px.EntropyMiner(10), px.MarginMiner(10), px.LeastConfidenceMiner(10)],
                         size=30).mine(as_kind(kind, ids, x, sub))
        assert len(set(sel.ids.tolist())) == len(sel) == 30


def test_ids_through_the_command_line(tmp_path):
    ids, x = int_ids(), logits()
    path = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"id": pa.array(ids), "logits": fsl(x)}), path)
    expected = px.EntropyMiner(5).mine(str(path)).ids.tolist()
    r = CliRunner().invoke(main, ["mine", str(path), "--miner", "entropy", "--size", "5"])
    assert r.exit_code == 0, r.stderr
    assert [int(ln.split(",")[0]) for ln in r.stdout.strip().splitlines()[1:]] == expected
    out = tmp_path / "picks.parquet"
    r = CliRunner().invoke(main, ["mine", str(path), "--miner", "entropy", "--size", "5", "--out", str(out)])
    assert r.exit_code == 0
    got = pq.read_table(out).column("id")
    assert got.type == pa.int64() and got.to_pylist() == expected
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"id": pa.array([None] + ids[1:].tolist(), pa.int64()), "logits": fsl(x)}), nulls)
    r = CliRunner().invoke(main, ["mine", str(nulls), "--miner", "entropy", "--size", "5"])
    assert r.exit_code == 1 and "the id column has no value at row 0" in r.stderr
