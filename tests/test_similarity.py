"""SimilarityMiner ("more like these") against a numpy brute force on every kind of pool,
with array and ReferenceIndex examples, k > 1 and every metric; its bad input; the command
line's --examples; and ActivationMiner's default field."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import pickaxe as px
from pickaxe import engine
from pickaxe.cli import main

from test_pools import KINDS, QUERY, data, make_pool  # noqa: F401  (data: the pool's columns, a fixture)


def brute_scores(x, examples, k, metric):
    """−(mean distance to the k nearest examples) of each row, by numpy alone."""
    x = np.asarray(x, dtype=np.float64)
    e = np.asarray(examples, dtype=np.float64)
    if metric == "l2":
        d = np.sqrt(np.maximum(((x[:, None, :] - e[None, :, :]) ** 2).sum(-1), 0))
    elif metric == "cosine":
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        en = e / np.linalg.norm(e, axis=1, keepdims=True)
        d = 1 - xn @ en.T
    else:  # ip
        d = 1 - x @ e.T
    k = min(k, len(e))
    return -np.sort(d, axis=1)[:, :k].mean(axis=1)


def check(sel, scores, size, rows=None, tol=1e-5):
    """The selection is the `size` best rows by the brute-force `scores` (of `rows`, the
    rows that pass a query; every row otherwise), best first, its scores theirs."""
    rows = np.arange(len(scores)) if rows is None else rows
    s = scores[rows]
    order = rows[np.argsort(-s, kind="stable")][:size]
    np.testing.assert_allclose(sel.scores, scores[order], rtol=tol, atol=tol)
    # the picks' own brute-force scores are what the miner reports, in descending order
    np.testing.assert_allclose(scores[np.asarray(sel.ids, dtype=np.int64)], sel.scores, rtol=tol, atol=tol)
    assert np.all(np.diff(sel.scores) <= 0)
    gap = np.sort(s)[::-1]
    if len(gap) > size and gap[size - 1] - gap[size] > 10 * tol:  # a clear boundary: same set
        assert set(np.asarray(sel.ids).tolist()) == set(order.tolist())


@pytest.fixture(scope="module")
def examples():
    return np.random.default_rng(3).normal(size=(6, 8)).astype(np.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_pool_streamed(data, examples, tmp_path, monkeypatch, kind):
    monkeypatch.setattr(engine, "BATCH_ROWS", 64)  # many batches: the top-k merge
    pool = make_pool(kind, data, tmp_path)
    miner = px.SimilarityMiner(20, examples, k=2)
    sel = miner.mine(pool)
    check(sel, brute_scores(data["embeddings"], examples, 2, "cosine"), 20)
    assert sel.info == {"search": "exact", "metric": "cosine", "k": 2}
    assert set(sel.miners) == {"similarity"}
    # with a query: only the matching rows, named by their row in the whole pool
    sel = px.SimilarityMiner(20, examples, query=QUERY).mine(pool)
    match = np.flatnonzero((data["split"] == "unlabeled") & (data["score"] > 0.5))
    check(sel, brute_scores(data["embeddings"], examples, 1, "cosine"), 20, rows=match)


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
@pytest.mark.parametrize("k", [1, 3, 6])  # 6: every example
def test_metrics_and_k(rng, metric, k):
    x = rng.normal(size=(300, 5))
    ex = rng.normal(size=(6, 5))
    sel = px.SimilarityMiner(25, ex, k=k, metric=metric).mine({"embeddings": x})
    check(sel, brute_scores(x, ex, k, metric), 25, tol=1e-9)
    assert sel.info["k"] == k and sel.info["metric"] == metric


def test_k_above_the_examples_is_an_error(rng):
    # No silent cap: k = 50 of 6 examples would score as k = 6.
    with pytest.raises(ValueError, match=r"k=50 is more than the 6 rows of the examples; use k <= 6"):
        px.SimilarityMiner(25, rng.normal(size=(6, 5)), k=50)


def test_nearest_rows_come_first_and_ties_go_by_row(rng):
    ex = np.array([[1.0, 0.0], [0.0, 1.0]])
    x = np.array([[5.0, 5.0], [1.0, 0.1], [0.0, 1.0], [3.0, 0.0], [0.0, 2.0], [-1.0, -1.0]])
    sel = px.SimilarityMiner(4, ex, metric="cosine").mine({"embeddings": x})
    # rows 2, 3 and 4 lie on an example's direction (distance 0): row order among them
    assert sel.ids.tolist() == [2, 3, 4, 1]
    sel = px.SimilarityMiner(6, ex, metric="l2").mine({"embeddings": x})
    assert sel.ids.tolist()[:2] == [2, 1] and sel.ids.tolist()[-1] == 0


def test_reference_index_examples(rng):
    x = rng.normal(size=(400, 8)).astype(np.float32)
    ex = rng.normal(size=(30, 8)).astype(np.float32)
    direct = px.SimilarityMiner(15, ex, k=3, metric="l2").mine({"embeddings": x})
    index = px.ReferenceIndex(ex, metric="l2")  # a small index: searched exactly
    via = px.SimilarityMiner(15, index, k=3).mine({"embeddings": x})
    np.testing.assert_array_equal(via.ids, direct.ids)
    np.testing.assert_allclose(via.scores, direct.scores, rtol=1e-6)
    assert via.info["metric"] == "l2"
    with pytest.raises(ValueError, match="metric='cosine' but the ReferenceIndex was built with metric='l2'"):
        px.SimilarityMiner(15, index, metric="cosine")


def test_graph_search(rng):
    # many examples (a whole class the model misses) searched through a graph, a saved
    # index's or one built for the examples: nearly the exact picks
    centers = rng.normal(size=(20, 16)) * 4
    ex = (centers[rng.integers(0, 20, 5000)] + rng.normal(size=(5000, 16))).astype(np.float32)
    x = (centers[rng.integers(0, 20, 2000)] + rng.normal(size=(2000, 16)) * 1.5).astype(np.float32)
    index = px.ReferenceIndex(ex, metric="l2")
    assert index.method == "hnsw"
    exact = px.SimilarityMiner(50, ex, metric="l2", search="exact").mine({"embeddings": x})
    check(exact, brute_scores(x, ex, 1, "l2"), 50, tol=1e-4)
    for miner in (px.SimilarityMiner(50, index, search="hnsw"), px.SimilarityMiner(50, ex, metric="l2", search="hnsw")):
        sel = miner.mine({"embeddings": x})
        assert sel.info["search"] == "hnsw"
        assert len(set(sel.ids.tolist()) & set(exact.ids.tolist())) >= 45


@pytest.mark.parametrize(
    "examples, error, match",
    [
        (np.ones((3, 5)), ValueError, "embeddings have 8 dimensions; examples has 5"),
        (np.empty((0, 8)), ValueError, r"examples is empty \(shape \(0, 8\)\)"),
        (np.ones(8), ValueError, r"examples must be 2-D"),
        (np.array([["a"] * 8]), TypeError, "examples has dtype"),
    ],
)
def test_bad_examples_name_the_argument(rng, examples, error, match):
    pool = {"embeddings": rng.normal(size=(20, 8))}
    with pytest.raises(error, match=match):
        px.SimilarityMiner(3, examples).mine(pool)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_examples_name_the_row(bad):
    ex = np.ones((4, 3))
    ex[2, 1] = bad
    with pytest.raises(px.errors.InvalidInputError) as info:
        px.SimilarityMiner(3, ex)
    e = info.value
    assert e.field == "examples" and e.row == 2 and "dimension 1" in e.reason
    assert str(e).startswith("SimilarityMiner(): examples row 2")


def test_bad_settings():
    ex = np.ones((2, 3))
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        px.SimilarityMiner(3, ex, k=0)
    with pytest.raises(ValueError, match="metric must be one of"):
        px.SimilarityMiner(3, ex, metric="manhattan")
    with pytest.raises(ValueError, match="search must be one of"):
        px.SimilarityMiner(3, ex, search="fast")


def test_pool_without_embeddings_is_refused(rng):
    with pytest.raises(ValueError, match="SimilarityMiner needs the field embeddings"):
        px.SimilarityMiner(3, np.ones((2, 4))).mine({"logits": rng.normal(size=(5, 3))})


# -- command line ---------------------------------------------------------------------------


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def pool_file(tmp_path):
    rng = np.random.default_rng(4)
    emb = rng.normal(size=(200, 6)).astype(np.float32)
    path = tmp_path / "pool.parquet"
    pq.write_table(pa.table({
        "id": pa.array([f"img-{i}" for i in range(200)]),
        "embeddings": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 6),
    }), path, row_group_size=50)
    return path, emb


@pytest.mark.parametrize("form", ["npy", "index", "parquet"])
def test_cli_examples(pool_file, tmp_path, form):
    path, emb = pool_file
    ex = emb[[3, 77]] + np.float32(0.01)
    if form == "npy":
        ex_path = tmp_path / "failures.npy"
        np.save(ex_path, ex)
    elif form == "index":
        ex_path = tmp_path / "failures.pxi"
        px.ReferenceIndex(ex, metric="l2").save(ex_path)
    else:
        ex_path = tmp_path / "failures.parquet"
        pq.write_table(pa.table({"embeddings": pa.FixedSizeListArray.from_arrays(pa.array(ex.ravel()), 6)}), ex_path)
    metric = ["--metric", "l2"] if form == "index" else []
    code, out, err = run("mine", path, "--miner", "similarity", "--size", 5, "--examples", ex_path, "--k", 1, *metric)
    assert code == 0, err
    got = [ln.split(",")[0] for ln in out.strip().splitlines()[1:]]
    expect = px.SimilarityMiner(5, ex, metric="l2" if metric else None).mine(str(path))
    assert got == expect.ids.tolist()
    assert set(got[:2]) == {"img-3", "img-77"}  # the rows the examples were made from


def test_cli_examples_errors(pool_file, tmp_path):
    path, _ = pool_file
    code, _, err = run("mine", path, "--miner", "similarity", "--size", 5)
    assert code == 2 and "--miner similarity needs --examples" in err
    code, _, err = run("mine", path, "--miner", "entropy", "--size", 5, "--examples", "x.npy")
    assert code == 2 and "--examples does not apply to --miner entropy" in err
    code, _, err = run("mine", path, "--miner", "similarity", "--size", 5, "--examples", tmp_path / "missing.npy")
    assert code == 1 and "--examples" in err and "no such file" in err
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.ones((2, 4), dtype=np.float32))
    code, _, err = run("mine", path, "--miner", "similarity", "--size", 5, "--examples", wrong)
    assert code == 1 and "examples has 4" in err and len(err.strip().splitlines()) == 1
    no_emb = tmp_path / "no_emb.parquet"
    pq.write_table(pa.table({"x": [1.0]}), no_emb)
    code, _, err = run("mine", path, "--miner", "similarity", "--size", 5, "--examples", no_emb)
    assert code == 1 and "--examples" in err and "needs an embeddings column" in err


# -- ActivationMiner's default field --------------------------------------------------------


@pytest.mark.parametrize("kind", ["mapping", "pandas", "arrow", "parquet"])
def test_activation_reads_logits_when_the_pool_has_them(data, tmp_path, kind):
    pool = make_pool(kind, data, tmp_path)  # logits and embeddings
    sel = px.ActivationMiner(10).mine(pool)
    assert sel.info["field"] == "logits"
    energy = -np.log(np.exp(data["logits"].astype(np.float64)).sum(axis=1))
    check(sel, energy, 10)
    forced = px.ActivationMiner(10, field="embeddings").mine(pool)
    assert forced.info["field"] == "embeddings"
    check(forced, -np.linalg.norm(data["embeddings"].astype(np.float64), axis=1), 10)


def test_activation_reads_embeddings_without_logits(data, tmp_path):
    table = pa.table({"embeddings": pa.FixedSizeListArray.from_arrays(pa.array(data["embeddings"].ravel()), 8)})
    path = tmp_path / "emb.parquet"
    pq.write_table(table, path)
    for pool in ({"embeddings": data["embeddings"]}, table, str(path)):
        sel = px.ActivationMiner(10).mine(pool)
        assert sel.info["field"] == "embeddings"
        check(sel, -np.linalg.norm(data["embeddings"].astype(np.float64), axis=1), 10)
    with pytest.raises(ValueError, match="needs the field logits"):
        px.ActivationMiner(10, field="logits").mine({"embeddings": data["embeddings"]})
    with pytest.raises(ValueError, match="needs the field logits .* or embeddings"):
        px.ActivationMiner(10).mine({"confidences": np.full((3, 2), 0.5)})


def test_activation_clip_defaults_to_embeddings(data):
    ref = np.abs(np.random.default_rng(0).normal(size=(50, 8)))
    miner = px.ActivationMiner(10, clip=90, reference=ref)
    sel = miner.mine({"logits": data["logits"], "embeddings": data["embeddings"]})
    assert sel.info["field"] == "embeddings"
