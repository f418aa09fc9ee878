"""Every miner on every kind of pool gives the selection it gives on in-memory arrays:
streamed in small batches, with and without a query, with and without an id column."""

import numpy as np
import pytest

import pickaxe as px
from pickaxe import engine

from test_pools import KINDS, QUERY, make_pool


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    n = 500
    return {
        "logits": rng.normal(size=(n, 5)).astype(np.float32),
        "embeddings": rng.normal(size=(n, 8)).astype(np.float32),
        "query_by_committee": rng.dirichlet(np.ones(4), size=(n, 3)),
        "split": np.where(rng.random(n) < 0.6, "unlabeled", "train").astype(object),
        "score": rng.random(n),
    }


def miners(reference):
    return [
        px.RandomMiner(15, seed=3),
        px.LeastConfidenceMiner(15),
        px.MarginMiner(15),
        px.RatioMiner(15),
        px.EntropyMiner(15),
        px.CommitteeMiner(15),
        px.CommitteeMiner(15, measure="mutual_information"),
        px.EmbeddingDistanceMiner(15, reference, k=5),
        px.NoveltyMiner(15, reference, k=10),
        px.ActivationMiner(15, field="embeddings"),
        px.ActivationMiner(15, field="logits"),
        px.CoresetMiner(15, reference=reference),
        px.TypiClustMiner(15, reference=reference),
        px.BADGEMiner(15, seed=4),
        px.ClusterMarginMiner(15, "split", candidates=3),
        px.combine([px.EntropyMiner(1), px.EmbeddingDistanceMiner(1, reference, k=5)], 15),
    ]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("with_ids", [False, True])
def test_same_selection_on_every_kind_of_pool(data, tmp_path, monkeypatch, kind, with_ids):
    monkeypatch.setattr(engine, "BATCH_ROWS", 64)  # many batches: the top-k merge
    reference = np.random.default_rng(5).normal(size=(200, 8)).astype(np.float32)
    ids = np.arange(len(data["score"])) * 7 + 1000 if with_ids else None
    pool = make_pool(kind, data, tmp_path, ids)
    expect_pool = make_pool("mapping", data, tmp_path, ids)
    for miner in miners(reference):
        got = miner.mine(pool)
        expect = miner.mine(expect_pool)
        np.testing.assert_array_equal(got.ids, expect.ids, err_msg=f"{miner!r} on {kind}")
        np.testing.assert_allclose(got.scores, expect.scores, rtol=1e-6)
        assert got.miners.tolist() == expect.miners.tolist()
        assert got.metadata["split"].astype(str).tolist() == expect.metadata["split"].astype(str).tolist()


@pytest.mark.parametrize("kind", ["mapping", "arrow", "parquet"])
def test_query_scores_only_matching_rows(data, tmp_path, kind):
    pool = make_pool(kind, data, tmp_path)
    sel = px.EntropyMiner(20, query=QUERY).mine(pool)
    match = np.flatnonzero((data["split"] == "unlabeled") & (data["score"] > 0.5))
    s = px.scores.entropy(logits=data["logits"][match])
    order = match[np.argsort(-s, kind="stable")][:20]
    np.testing.assert_array_equal(sel.ids, order)  # ids are row numbers of the whole pool
    assert set(sel.metadata["split"].astype(str)) == {"unlabeled"}
    assert np.all(sel.metadata["score"] > 0.5)


def test_batches_equal_one_pass(data, monkeypatch):
    pool = {"logits": data["logits"], "split": data["split"]}
    whole = px.MarginMiner(40).mine(pool)
    monkeypatch.setattr(engine, "BATCH_ROWS", 7)
    batched = px.MarginMiner(40).mine(pool)
    np.testing.assert_array_equal(whole.ids, batched.ids)


def test_bad_row_is_named_by_its_row_in_the_pool(data, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "BATCH_ROWS", 64)
    bad = dict(data)
    bad["logits"] = data["logits"].copy()
    bad["logits"][301, 2] = np.nan
    pool = make_pool("parquet", bad, tmp_path)
    with pytest.raises(ValueError, match=r"logits row 301\b"):
        px.EntropyMiner(5).mine(pool)
    px.EntropyMiner(5, nan_policy="omit").mine(pool)


def test_a_bad_query_names_duckdb_and_the_columns(data, tmp_path):
    pool = make_pool("parquet", data, tmp_path)
    with pytest.raises(ValueError) as e:
        px.EntropyMiner(5, query="no_such_column > 1").mine(pool)
    assert "no_such_column" in str(e.value) and "logits" in str(e.value)
