"""Pools of every kind (mapping, pandas, polars, pyarrow, Parquet file and folder) give
the same arrays, ids and metadata, stream in bounded batches, and filter by query."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pickaxe.pools import ROW, Pool, as_pool, open_pool, source
from pool_kinds import table_as

N = 500
QUERY = "split = 'unlabeled' AND score > 0.5"
KINDS = ["mapping", "pandas", "polars", "arrow", "parquet", "folder"]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    return {
        "logits": rng.normal(size=(N, 5)).astype(np.float32),
        "embeddings": rng.normal(size=(N, 8)).astype(np.float32),
        "query_by_committee": rng.dirichlet(np.ones(4), size=(N, 3)),  # float64
        "split": np.where(rng.random(N) < 0.6, "unlabeled", "train").astype(object),
        "score": rng.random(N),
    }


def arrow_table(data, ids=None):
    """logits as fixed_size_list<float>[5], embeddings as list<float>, the committee as
    list<list<double>>."""
    n, d = data["embeddings"].shape
    emb = pa.ListArray.from_arrays(
        pa.array(np.arange(0, n * d + 1, d, dtype=np.int32)), pa.array(data["embeddings"].ravel())
    )
    qbc = data["query_by_committee"]
    inner = pa.FixedSizeListArray.from_arrays(pa.array(qbc.ravel()), qbc.shape[2])
    qbc_arr = pa.ListArray.from_arrays(
        pa.array(np.arange(0, n * qbc.shape[1] + 1, qbc.shape[1], dtype=np.int32)),
        inner.cast(pa.list_(pa.float64())),
    )
    cols = {
        "logits": pa.FixedSizeListArray.from_arrays(pa.array(data["logits"].ravel()), 5),
        "embeddings": emb,
        "query_by_committee": qbc_arr,
        "split": pa.array(data["split"].astype(str)),
        "score": pa.array(data["score"]),
    }
    if ids is not None:
        cols = {"id": pa.array(ids), **cols}
    return pa.table(cols)


def make_pool(kind, data, tmp_path, ids=None):
    if kind == "mapping":
        m = dict(data)
        if ids is not None:
            m["id"] = ids
        return m
    table = arrow_table(data, ids)
    if kind == "arrow":
        return table
    if kind == "pandas":
        df = pd.DataFrame({"split": data["split"], "score": data["score"]})
        df["logits"] = list(data["logits"])  # cells: 1-D float32 arrays
        df["embeddings"] = list(data["embeddings"])
        df["query_by_committee"] = list(data["query_by_committee"])  # cells: 2-D arrays
        if ids is not None:
            df.insert(0, "id", ids)
        return df
    # the folder: three files in sorted order a.parquet, part=b/c.parquet, part=b/d.parquet,
    # an empty file, and files pickaxe skips (starting with _ or hidden)
    parts = [
        ("a.parquet", 0, 180, 50), ("part=b/c0.parquet", 180, 180, None), ("part=b/c.parquet", 180, 380, 70),
        ("part=b/d.parquet", 380, None, 33), ("_tmp.parquet", 0, 3, None), (".hidden.parquet", 0, 3, None),
    ]
    pool = table_as(kind, table, tmp_path / "pool", row_group_size=64, parts=parts)
    if kind == "folder":
        (pool / "_SUCCESS").write_text("")
    return pool


def check_pool(p: Pool, data, rows, ids=None):
    assert p.n_rows == len(rows)
    np.testing.assert_array_equal(p.columns["logits"], data["logits"][rows])
    assert p.columns["logits"].dtype == np.float32
    np.testing.assert_array_equal(p.columns["embeddings"], data["embeddings"][rows])
    assert p.columns["embeddings"].dtype == np.float32
    np.testing.assert_array_equal(p.columns["query_by_committee"], data["query_by_committee"][rows])
    assert p.columns["query_by_committee"].dtype == np.float64
    assert p.columns["query_by_committee"].shape == (len(rows), 3, 4)
    np.testing.assert_array_equal(p.columns["score"], data["score"][rows])
    assert p.columns["split"].astype(str).tolist() == data["split"][rows].astype(str).tolist()
    want_ids = rows if ids is None else np.asarray(ids)[rows]
    np.testing.assert_array_equal(p.ids(np.arange(p.n_rows)), want_ids)
    np.testing.assert_array_equal(p.source_rows(np.arange(p.n_rows)), rows)
    assert sorted(p.metadata_names) == ["score", "split"]


def concat(batches):
    batches = list(batches)
    names = batches[0].columns
    cols = {c: np.concatenate([b.columns[c] for b in batches]) for c in names}
    rows = np.concatenate([b.source_rows(np.arange(b.n_rows)) for b in batches])
    return Pool(cols, len(rows), 0, rows), batches


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_reads_the_same_arrays_and_ids(kind, data, tmp_path):
    src = open_pool(make_pool(kind, data, tmp_path))
    assert set(src.column_names) == set(data)
    assert src.shapes["logits"][1:] == (5,)
    assert src.shapes["embeddings"][1:] == (8,)  # a list column: from the first row
    assert src.shapes["query_by_committee"][1:] == (3, 4)
    assert src.shapes["score"][1:] == ()
    assert src.n_rows == N
    assert src.shapes["logits"][0] == (N if kind in ("mapping", "pandas", "polars", "arrow") else None)
    assert "logits (N, 5)" in src.describe() and "score (N,)" in src.describe()
    assert sorted(src.fields) == ["embeddings", "logits", "query_by_committee"]
    check_pool(src.read(), data, np.arange(N))


@pytest.mark.parametrize("kind", KINDS)
def test_batches_concatenate_to_read(kind, data, tmp_path):
    src = open_pool(make_pool(kind, data, tmp_path))
    whole, batches = concat(src.batches(batch_rows=37))
    assert [b.n_rows for b in batches] == [37] * (N // 37) + [N % 37]
    assert [b.offset for b in batches] == list(range(0, N, 37))
    check_pool(whole, data, np.arange(N))


@pytest.mark.parametrize("kind", KINDS)
def test_query_filters_and_ids_are_original_row_numbers(kind, data, tmp_path):
    rows = np.flatnonzero((data["split"] == "unlabeled") & (data["score"] > 0.5))
    src = open_pool(make_pool(kind, data, tmp_path), query=QUERY)
    assert src.query == QUERY
    check_pool(src.read(), data, rows)
    whole, batches = concat(src.batches(batch_rows=29))
    assert all(b.n_rows == 29 for b in batches[:-1]) and 0 < batches[-1].n_rows <= 29
    assert [b.offset for b in batches] == list(range(0, len(rows), 29))
    check_pool(whole, data, rows)


@pytest.mark.parametrize("kind", KINDS)
def test_id_column_names_rows_with_and_without_query(kind, data, tmp_path):
    ids = np.array([f"img-{i:04d}" for i in range(N)][::-1], dtype=object)
    pool = make_pool(kind, data, tmp_path, ids=ids)
    src = open_pool(pool)
    assert src.has_id and "id" not in src.metadata_names
    check_pool(src.read(), data, np.arange(N), ids)
    # the id column comes along even when only a field is asked for
    b = next(iter(src.batches(["logits"], batch_rows=10)))
    assert list(b.columns) == ["logits", "id"]
    assert b.ids([0, 9]).tolist() == [ids[0], ids[9]]
    rows = np.flatnonzero((data["split"] == "unlabeled") & (data["score"] > 0.5))
    check_pool(open_pool(pool, query=QUERY).read(), data, rows, ids)
    whole, _ = concat(open_pool(pool, query=QUERY).batches(batch_rows=31))
    check_pool(whole, data, rows, ids)


@pytest.mark.parametrize("kind", ["mapping", "arrow", "folder"])
def test_only_the_requested_columns_are_read(kind, data, tmp_path):
    pool = make_pool(kind, data, tmp_path)
    src = open_pool(pool, query="score > 0.9")
    p = src.read(["embeddings"])
    assert list(p.columns) == ["embeddings"]
    rows = np.flatnonzero(data["score"] > 0.9)
    np.testing.assert_array_equal(p.columns["embeddings"], data["embeddings"][rows])
    np.testing.assert_array_equal(p.ids(np.arange(p.n_rows)), rows)
    # no columns at all (a random baseline): the rows still count
    assert sum(b.n_rows for b in src.batches([], batch_rows=7)) == len(rows)
    assert sum(b.n_rows for b in open_pool(pool).batches([], 64)) == N
    with pytest.raises(ValueError, match=r"no column 'nope'.*logits \(N, 5\)"):
        src.read(["nope"])


@pytest.mark.parametrize("kind", ["arrow", "folder"])
def test_take_fetches_rows_by_original_number(kind, data, tmp_path):
    src = open_pool(make_pool(kind, data, tmp_path), query=QUERY)
    rows = np.array([499, 3, 250, 180, 179, 3])
    p = src.take(rows, ["logits", "split"])
    np.testing.assert_array_equal(p.columns["logits"], data["logits"][rows])
    assert p.columns["split"].tolist() == data["split"][rows].tolist()
    np.testing.assert_array_equal(p.ids(np.arange(len(rows))), rows)
    with pytest.raises(IndexError, match="row 500"):
        src.take([500])


def test_parquet_streams_in_bounded_batches(tmp_path):
    # one row group of 20,000 rows, read in batches of 1,000: never a larger batch
    n, c = 20_000, 100
    x = np.random.default_rng(0).normal(size=(n, c)).astype(np.float32)
    path = tmp_path / "big.parquet"
    t = pa.table(
        {
            "logits": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), c),
            "confidences": pa.ListArray.from_arrays(
                pa.array(np.arange(0, n * c + 1, c, dtype=np.int32)), pa.array(x.ravel())
            ),
            "split": np.where(np.arange(n) % 3 == 0, "train", "unlabeled"),
        }
    )
    pq.write_table(t, path, row_group_size=n)
    for query in (None, "split = 'unlabeled'"):
        src = open_pool(path, query=query)
        rows = np.arange(n) if query is None else np.flatnonzero(np.arange(n) % 3 != 0)
        seen = 0
        for b in src.batches(["logits", "confidences"], batch_rows=1000):
            assert 0 < b.n_rows <= 1000
            assert b.columns["logits"].shape == (b.n_rows, c)
            assert b.columns["logits"].dtype == np.float32
            want = x[rows[seen : seen + b.n_rows]]
            np.testing.assert_array_equal(b.columns["logits"], want)
            np.testing.assert_array_equal(b.columns["confidences"], want)
            np.testing.assert_array_equal(b.ids(np.arange(b.n_rows)), rows[seen : seen + b.n_rows])
            seen += b.n_rows
        assert seen == len(rows)


def test_metadata_rides_along_with_its_types(data, tmp_path):
    t = arrow_table(data).append_column("when", pa.array(np.arange(N).astype("datetime64[s]")))
    t = t.append_column("tags", pa.array([["a"] * (i % 3) for i in range(N)]))
    path = tmp_path / "m.parquet"
    pq.write_table(t, path)
    p = open_pool(path, query="score > 0.5 AND len(tags) = 2").read()
    rows = np.flatnonzero((data["score"] > 0.5) & (np.arange(N) % 3 == 2))
    assert sorted(p.metadata_names) == ["score", "split", "tags", "when"]
    assert p.columns["when"].dtype.kind == "M"
    np.testing.assert_array_equal(p.columns["when"].astype("datetime64[s]").astype(np.int64), rows)
    assert [list(v) for v in p.metadata([0, 1])["tags"]] == [["a", "a"], ["a", "a"]]


# -- errors ----------------------------------------------------------------------------


def ragged_table():
    return pa.table(
        {
            "id": ["a", "b", "c", "d", "e"],
            "logits": pa.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0], [8.0, 9.0]], pa.list_(pa.float32())),
            "split": ["u"] * 5,
        }
    )


@pytest.mark.parametrize("kind", ["arrow", "pandas", "polars", "parquet"])
def test_ragged_lists_name_column_and_row(kind, tmp_path):
    t = ragged_table()
    pool = {"arrow": t, "pandas": t.to_pandas(), "polars": pl.from_arrow(t)}.get(kind)
    if kind == "parquet":
        pool = tmp_path / "r.parquet"
        pq.write_table(t, pool)
    with pytest.raises(ValueError, match=r"column 'logits' row 3 \(id 'd'\): ragged lists: a list of 1 values"):
        open_pool(pool).read()
    with pytest.raises(ValueError, match=r"column 'logits' row 3 \(id 'd'\)"):
        open_pool(pool, query="id >= 'b'").read()
    # a batch that does not hold row 3 is fine
    b = next(iter(open_pool(pool).batches(["logits"], batch_rows=3)))
    assert b.columns["logits"].shape == (3, 2)


def test_ragged_mapping_and_ragged_across_batches_name_the_row(tmp_path):
    with pytest.raises(ValueError, match=r"column 'logits' row 2: ragged lists: a list of 1 values where row 0 has 2"):
        as_pool({"logits": [[1.0, 2.0], [3.0, 4.0], [5.0]]}, "mine()")
    with pytest.raises(ValueError, match=r"column 'query_by_committee' row 1: ragged lists at depth 2"):
        open_pool({"query_by_committee": [[[0.5, 0.5], [1.0, 0.0]], [[0.5, 0.5], [1.0]]]}).read()
    # every batch rectangular, but the second file's vectors are longer
    root = tmp_path / "f"
    root.mkdir()
    for name, width, n in (("a", 4, 10), ("b", 6, 5)):
        flat = np.ones(n * width, dtype=np.float32)
        arr = pa.ListArray.from_arrays(pa.array(np.arange(0, n * width + 1, width, dtype=np.int32)), pa.array(flat))
        pq.write_table(pa.table({"embeddings": arr}), root / f"{name}.parquet")
    assert open_pool(root).shapes["embeddings"] == (None, 4)
    with pytest.raises(ValueError, match=r"column 'embeddings' row 10: ragged lists: a list of 6 values where row 0 has 4"):
        open_pool(root).read()  # one batch: checked within it
    with pytest.raises(ValueError, match=r"column 'embeddings' row 10: a list of 6 values where earlier rows have a list of 4"):
        list(open_pool(root).batches(batch_rows=5))  # checked across batches


@pytest.mark.parametrize(
    "column, match",
    [
        (pa.array([[0.5, 0.5], None, [0.1, 0.9]]), r"column 'confidences' row 1 is null"),
        (pa.array([[0.5, 0.5], [0.1, None]]), r"column 'confidences' row 1 has a null value inside its vector"),
        (pa.array([[[0.5, 0.5]], [[0.1, None]]]), r"column 'confidences' row 1 has a null value inside"),
        (pa.array([["a", "b"], ["c", "d"]]), r"column 'confidences' holds string values, not numbers"),
        (pa.array(["a", "b"]), r"column 'confidences' holds string values"),
    ],
)
def test_bad_field_values_name_column_and_row(column, match):
    with pytest.raises(ValueError, match=match):
        open_pool(pa.table({"confidences": column})).read()


def test_null_in_a_parquet_field_names_its_global_row(tmp_path):
    root = tmp_path / "n"
    root.mkdir()
    pq.write_table(pa.table({"confidence": [0.1] * 10}), root / "a.parquet")
    pq.write_table(pa.table({"confidence": [0.2, 0.3, None, 0.4]}), root / "b.parquet")
    with pytest.raises(ValueError, match=r"column 'confidence' row 12 has a null value"):
        open_pool(root).read()
    with pytest.raises(ValueError, match=r"column 'confidence' row 12 has a null value"):
        open_pool(root, query="confidence IS NULL OR confidence > 0.15").read()
    assert open_pool(root, query="confidence IS NOT NULL").read().columns["confidence"].shape == (13,)


@pytest.mark.parametrize("kind", ["mapping", "arrow", "parquet", "folder"])
def test_bad_query_names_duckdb_message_and_columns(kind, data, tmp_path):
    pool = make_pool(kind, data, tmp_path)
    with pytest.raises(ValueError) as e:
        open_pool(pool, query="splt = 'unlabeled'", who="EntropyMiner.mine()")
    msg = str(e.value)
    assert msg.startswith("EntropyMiner.mine(): the query \"splt = 'unlabeled'\" failed")
    assert 'Referenced column "splt" not found' in msg
    assert "split VARCHAR" in msg and "score DOUBLE" in msg and "logits FLOAT[" in msg
    assert ROW not in msg
    with pytest.raises(ValueError, match="Parser Error"):
        open_pool(pool, query="split = ")


def test_query_failing_at_run_time_is_a_value_error(tmp_path):
    path = tmp_path / "q.parquet"
    pq.write_table(pa.table({"split": ["1", "2", "x"], "confidence": [0.1, 0.2, 0.3]}), path)
    with pytest.raises(ValueError, match=r"(?s)Conversion Error.*split VARCHAR"):
        open_pool(path, query="CAST(split AS INTEGER) > 1").read()


def test_paths_with_quotes_and_glob_characters(tmp_path):
    pq.write_table(pa.table({"confidence": [0.1, 0.2]}), tmp_path / "it's [1].parquet")
    pq.write_table(pa.table({"confidence": [0.9]}), tmp_path / "it's 1.parquet")
    p = open_pool(tmp_path / "it's [1].parquet", query="confidence > 0").read()
    np.testing.assert_array_equal(p.columns["confidence"], [0.1, 0.2])


def test_not_a_pool():
    with pytest.raises(TypeError, match="a pool is a mapping"):
        open_pool(42)
    with pytest.raises(FileNotFoundError, match="no Parquet file or folder"):
        open_pool("/nonexistent/pool.parquet")
    with pytest.raises(ValueError, match="batch_rows"):
        open_pool({"confidence": np.ones(3)}).batches(batch_rows=0)
    with pytest.raises(ValueError, match="different numbers of rows"):
        open_pool({"confidence": np.ones(3), "split": np.ones(2)})


def test_folder_files_must_agree(tmp_path):
    pq.write_table(pa.table({"confidence": [0.1]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"confidence": [1]}), tmp_path / "b.parquet")
    with pytest.raises(ValueError, match="b.parquet.*confidence int64.*same columns"):
        open_pool(tmp_path)


# -- the mapping path stays pure numpy; progress bars only on a terminal -------------------


def test_mapping_without_query_is_read_in_place_without_arrow():
    code = (
        "import sys, numpy as np; from pickaxe.pools import open_pool, as_pool\n"
        "x = np.ones((10, 3), dtype=np.float32)\n"
        "src = open_pool({'logits': x})\n"
        "b = next(iter(src.batches(batch_rows=4, progress=True)))\n"
        "assert np.shares_memory(b.columns['logits'], x) and as_pool({'logits': x}, 'w').columns['logits'] is x\n"
        "print([m for m in ('pyarrow', 'duckdb', 'pandas', 'polars', 'tqdm') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert out.stderr == ""  # progress=True on a pipe: no bar


def test_progress_bar_on_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(source, "_stderr_is_tty", lambda: True)
    src = open_pool({"confidence": np.full(1000, 0.5)})
    assert sum(b.n_rows for b in src.batches(batch_rows=100, progress=True)) == 1000
    err = capsys.readouterr().err
    assert "1.00k/1.00k" in err and "rows" in err


def test_as_pool_reads_any_kind_whole(data, tmp_path):
    for kind in ("pandas", "polars", "folder"):
        p = as_pool(make_pool(kind, data, tmp_path / kind), "mine()")
        check_pool(p, data, np.arange(N))


@pytest.mark.parametrize("kind", KINDS)
def test_a_query_matching_nothing_gives_empty_columns_of_the_right_shape(kind, data, tmp_path):
    src = open_pool(make_pool(kind, data, tmp_path), query="score > 2")
    assert list(src.batches(batch_rows=10)) == []
    p = src.read()
    assert p.n_rows == 0 and p.ids(np.arange(0)).shape == (0,)
    assert p.columns["logits"].shape == (0, 5) and p.columns["logits"].dtype == np.float32
    assert p.columns["embeddings"].shape == (0, 8)
    assert p.columns["query_by_committee"].shape == (0, 3, 4)


def test_pandas_index_named_id_names_the_rows(data):
    df = pd.DataFrame({"confidence": [0.2, 0.9, 0.5]}, index=pd.Index([10, 20, 30], name="id"))
    p = open_pool(df, query="confidence > 0.3").read()
    assert p.ids([0, 1]).tolist() == [20, 30]
