"""Miners on mapping pools: field checks, uncertainty miners, and the diversity miners
against plain numpy / scikit-learn references."""

import numpy as np
import pytest

import pickaxe as px
from pickaxe import engine
from pickaxe.miners import neighbours

from reference import top_k as stable_top_k


def numpy_kcenter(x, size, initial=None):
    """Plain k-center greedy: the farthest row from every center so far."""
    x = x.astype(np.float64)
    if initial is None:
        first = int(np.argmax(np.linalg.norm(x - x.mean(axis=0), axis=1)))
        min_d = np.linalg.norm(x - x[first], axis=1)
        picks, dists = [first], [np.linalg.norm(x[first] - x.mean(axis=0))]
    else:
        min_d = initial.astype(np.float64).copy()
        picks, dists = [], []
    while len(picks) < size:
        d = min_d.copy()
        d[picks] = -np.inf
        i = int(np.argmax(d))
        picks.append(i)
        dists.append(min_d[i])
        min_d = np.minimum(min_d, np.linalg.norm(x - x[i], axis=1))
    return np.array(picks), np.array(dists)


# -- fields and pools -----------------------------------------------------------------


def test_missing_field_lists_what_is_needed_and_what_the_pool_has(rng):
    pool = {"embeddings": rng.normal(size=(10, 4)), "split": np.zeros(10)}
    with pytest.raises(ValueError) as e:
        px.EntropyMiner(3).mine(pool)
    msg = str(e.value)
    assert "logits (N, C)" in msg and "confidences (N, C)" in msg
    assert "10 rows of embeddings (N, 4), split (N,)" in msg


def test_wrong_ndim_and_unequal_columns(rng):
    with pytest.raises(ValueError, match=r"logits must be \(N, C\); the pool's is \(10,\)"):
        px.MarginMiner(3).mine({"logits": rng.normal(size=10)})
    with pytest.raises(ValueError, match="different numbers of rows"):
        px.MarginMiner(3).mine({"logits": rng.normal(size=(10, 3)), "id": np.arange(9)})
    with pytest.raises(TypeError, match="mapping of field name to array"):
        px.MarginMiner(3).mine(rng.normal(size=(10, 3)))
    with pytest.raises(ValueError, match="size must be an int >= 0"):
        px.MarginMiner(-1)
    with pytest.raises(ValueError, match="field must be one of"):
        px.MarginMiner(3, field="embeddings")


@pytest.mark.parametrize(
    "miner, score",
    [
        (px.LeastConfidenceMiner(7), px.scores.least_confidence),
        (px.MarginMiner(7), px.scores.margin),
        (px.RatioMiner(7), px.scores.ratio),
        (px.EntropyMiner(7), px.scores.entropy),
    ],
)
def test_uncertainty_miners_pick_the_top_scores(rng, miner, score):
    logits = rng.normal(size=(500, 6))
    ids = np.arange(1000, 1500)
    split = np.where(rng.random(500) < 0.5, "a", "b")
    sel = miner.mine({"logits": logits, "id": ids, "split": split})
    s = score(logits=logits)
    rows = stable_top_k(s, 7)
    np.testing.assert_array_equal(sel.ids, ids[rows])
    np.testing.assert_array_equal(sel.scores, s[rows])
    np.testing.assert_array_equal(sel.metadata["split"], split[rows])
    assert set(sel.miners) == {miner.name}


def test_miner_names_are_the_command_line_names():
    names = [
        px.RandomMiner(1).name,
        px.LeastConfidenceMiner(1).name,
        px.CommitteeMiner(1).name,
        px.MCDropoutMiner(1).name,
        px.EmbeddingDistanceMiner(1, np.eye(2), k=1).name,
        px.NoveltyMiner(1, np.eye(2), k=1).name,
        px.ActivationMiner(1).name,
        px.CoresetMiner(1).name,
    ]
    assert names == [
        "random", "least_confidence", "committee", "mc_dropout",
        "embedding_distance", "novelty", "activation", "coreset",
    ]


def test_committee_and_dropout_miners(rng):
    p = rng.dirichlet(np.ones(4), size=(300, 5))
    sel = px.CommitteeMiner(10, measure="kl_disagreement").mine({"query_by_committee": p})
    s = px.scores.kl_disagreement(query_by_committee=p)
    np.testing.assert_array_equal(sel.ids, stable_top_k(s, 10))
    sel = px.MCDropoutMiner(10).mine({"mc_dropout": p})
    s = px.scores.mutual_information(mc_dropout=p)
    np.testing.assert_array_equal(sel.ids, stable_top_k(s, 10))
    with pytest.raises(ValueError, match="measure must be one of"):
        px.MCDropoutMiner(3, measure="vote_entropy")


def test_random_miner_is_reproducible_and_needs_no_field():
    a = px.RandomMiner(5, seed=1).mine({"x": np.zeros(100)})
    b = px.RandomMiner(5, seed=1).mine({"x": np.zeros(100)})
    np.testing.assert_array_equal(a.ids, b.ids)
    assert len(set(a.ids.tolist())) == 5


def test_selection_to_pandas_and_arrow(rng):
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    sel = px.EntropyMiner(4).mine({"logits": rng.normal(size=(50, 3)), "split": np.arange(50) % 3})
    df = sel.to_pandas()
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["id", "score", "miner", "split"]
    table = sel.to_arrow()
    assert isinstance(table, pa.Table) and table.num_rows == 4
    assert table.column("miner").to_pylist() == ["entropy"] * 4


# -- embedding distance --------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
@pytest.mark.parametrize("aggregate", ["mean", "kth"])
def test_embedding_distance_matches_numpy(rng, metric, aggregate):
    ref = rng.normal(size=(300, 8))
    x = rng.normal(size=(200, 8)) * rng.uniform(0.5, 3, size=(200, 1))
    miner = px.EmbeddingDistanceMiner(20, ref, k=5, metric=metric, aggregate=aggregate)
    sel = miner.mine({"embeddings": x})
    assert sel.info["search"] == "exact"
    if metric == "l2":
        d = np.sqrt(((x[:, None] - ref[None]) ** 2).sum(-1))
    elif metric == "cosine":
        d = 1 - (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (ref / np.linalg.norm(ref, axis=1, keepdims=True)).T
    else:
        d = 1 - x @ ref.T
    d = np.sort(d, axis=1)[:, :5]
    expect = d[:, -1] if aggregate == "kth" else d.mean(axis=1)
    np.testing.assert_allclose(sel.scores, np.sort(expect)[::-1][:20], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(np.sort(sel.ids), np.sort(np.argsort(-expect, kind="stable")[:20]))


def test_embedding_distance_exact_and_graph_agree(rng, monkeypatch):
    monkeypatch.setattr(px.index, "EXACT_MAX_ROWS", 0)
    ref = rng.normal(size=(2000, 16)).astype(np.float32)
    x = np.vstack([rng.normal(size=(300, 16)), rng.normal(size=(20, 16)) * 4]).astype(np.float32)
    exact = px.EmbeddingDistanceMiner(20, ref, search="exact").mine({"embeddings": x})
    graph = px.EmbeddingDistanceMiner(20, ref, search="hnsw").mine({"embeddings": x})
    assert (exact.info["search"], graph.info["search"]) == ("exact", "hnsw")
    assert len(set(exact.ids.tolist()) & set(graph.ids.tolist())) >= 18
    # a built index is used as is; its metric is the miner's
    index = px.ReferenceIndex(ref, metric="l2")
    miner = px.EmbeddingDistanceMiner(5, index)
    assert miner.metric == "l2"
    with pytest.raises(ValueError, match="metric='cosine' but the ReferenceIndex"):
        px.EmbeddingDistanceMiner(5, index, metric="cosine")


def test_auto_search_chooses_by_size():
    small = neighbours.Neighbours("t", np.ones((100, 8)), "l2", None, 0)
    assert small.method_for(1_000_000) == "exact"
    cost_exact = neighbours.exact_cost(1_000_000, 1_000_000, 384)
    cost_graph = neighbours.graph_cost(1_000_000, 1_000_000, 384, built=False)
    assert cost_graph < cost_exact  # a million by a million: build the graph


def test_embedding_distance_small_references(rng):
    x = rng.normal(size=(50, 3))
    sel = px.EmbeddingDistanceMiner(5, x[:1], k=1, metric="l2").mine({"embeddings": x})
    d = np.linalg.norm(x - x[0], axis=1)
    np.testing.assert_allclose(sel.scores, np.sort(d)[::-1][:5])
    assert sel.info["k"] == 1
    # k = M: every reference row, the mean distance to all of them
    sel = px.EmbeddingDistanceMiner(5, x[:4], k=4, metric="l2").mine({"embeddings": x[4:]})
    d = np.linalg.norm(x[4:, None] - x[None, :4], axis=2).mean(axis=1)
    np.testing.assert_allclose(sel.scores, np.sort(d)[::-1][:5], rtol=1e-12)


def test_k_larger_than_the_reference_is_an_error(rng):
    ref = rng.normal(size=(30, 4))
    with pytest.raises(ValueError, match=r"k=31 is more than the 30 rows of the reference"):
        px.EmbeddingDistanceMiner(3, ref, k=31)
    index = px.ReferenceIndex(ref, metric="l2")
    with pytest.raises(ValueError, match=r"k=40 is more than the 30 rows"):
        px.EmbeddingDistanceMiner(3, index, k=40)
    # LOF leaves each reference row out of its own neighbours: k = M is too many.
    with pytest.raises(ValueError, match=r"k=30 but the reference has 30 rows; LOF needs k < 30.*itself"):
        px.NoveltyMiner(3, ref, k=30)
    with pytest.raises(ValueError, match=r"k=20 but the reference has 1 rows"):
        px.NoveltyMiner(3, ref[:1])
    sel = px.NoveltyMiner(3, ref, k=29).mine({"embeddings": rng.normal(size=(10, 4))})
    assert sel.info["k"] == 29 and np.all(np.isfinite(sel.scores))


def test_large_k_matches_brute_force(rng):
    # k > 32 takes the Rust kernel's batched selection; k = M - 1 and M the extremes.
    ref = rng.normal(size=(300, 6))
    x = rng.normal(size=(40, 6))
    d = np.sort(np.linalg.norm(x[:, None] - ref[None], axis=2), axis=1)
    for k in (33, 150, 299, 300):
        sel = px.EmbeddingDistanceMiner(40, ref, k=k, metric="l2", aggregate="mean").mine({"embeddings": x})
        got = np.empty(40)
        got[sel.ids] = sel.scores
        np.testing.assert_allclose(got, d[:, :k].mean(axis=1), rtol=1e-12)
        sel = px.EmbeddingDistanceMiner(40, ref, k=k, metric="l2", aggregate="kth").mine({"embeddings": x})
        got[sel.ids] = sel.scores
        np.testing.assert_allclose(got, d[:, k - 1], rtol=1e-12)


def test_embedding_miner_errors(rng):
    ref = rng.normal(size=(30, 4))
    x = rng.normal(size=(20, 4))
    with pytest.raises(ValueError, match="empty"):
        px.EmbeddingDistanceMiner(3, np.empty((0, 4)))
    with pytest.raises(ValueError, match=r"5 dimensions.*reference has 4"):
        px.EmbeddingDistanceMiner(3, ref).mine({"embeddings": rng.normal(size=(20, 5))})
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        px.EmbeddingDistanceMiner(3, ref, k=0)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        px.NoveltyMiner(3, ref, k=-1)
    bad = ref.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match="reference row 7"):
        px.NoveltyMiner(3, bad)


def test_nan_pool_row_names_its_row_across_blocks(rng, monkeypatch):
    monkeypatch.setattr(engine, "BATCH_ROWS", 16)
    x = rng.normal(size=(100, 4))
    x[57, 2] = np.nan
    for miner in (
        px.EmbeddingDistanceMiner(3, rng.normal(size=(30, 4))),
        px.NoveltyMiner(3, rng.normal(size=(30, 4))),
    ):
        with pytest.raises(ValueError, match=r"embeddings row 57\b"):
            miner.mine({"embeddings": x})
    with pytest.raises(ValueError, match=r"embeddings row 57\b"):
        px.CoresetMiner(3).mine({"embeddings": x})


# -- novelty --------------------------------------------------------------------------------


@pytest.mark.parametrize("search, min_rho", [("exact", 0.99), ("hnsw", 0.95)])
def test_novelty_agrees_with_scikit_learn(rng, monkeypatch, search, min_rho):
    sklearn_neighbors = pytest.importorskip("sklearn.neighbors")
    stats = pytest.importorskip("scipy.stats")
    monkeypatch.setattr(px.index, "EXACT_MAX_ROWS", 0)
    latent = rng.normal(size=(3000, 6)) @ rng.normal(size=(6, 24))
    ref = latent[:2500] + 0.05 * rng.normal(size=(2500, 24))
    x = np.vstack([latent[2500:], rng.normal(size=(50, 24)) * 3])
    lof = sklearn_neighbors.LocalOutlierFactor(n_neighbors=20, novelty=True).fit(ref)
    expect = -lof.score_samples(x)
    sel = px.NoveltyMiner(len(x), ref, k=20, search=search).mine({"embeddings": x})
    assert sel.info["search"] == search
    got = np.empty(len(x))
    got[sel.ids] = sel.scores
    rho = stats.spearmanr(got, expect).statistic
    assert rho >= min_rho
    if search == "exact":
        np.testing.assert_allclose(got, expect, rtol=1e-6)


def test_novelty_with_duplicates_in_the_reference(rng):
    ref = np.repeat(rng.normal(size=(10, 5)), 30, axis=0)
    x = np.vstack([ref[:5] + 0.01, rng.normal(size=(5, 5)) * 10])
    sel = px.NoveltyMiner(5, ref, k=10).mine({"embeddings": x})
    assert np.all(np.isfinite(sel.scores))
    assert set(sel.ids.tolist()) == set(range(5, 10))


# -- activation ------------------------------------------------------------------------------


def test_activation_miner(rng):
    z = rng.normal(size=(100, 8)) * rng.uniform(0.1, 2, size=(100, 1))
    sel = px.ActivationMiner(5).mine({"embeddings": z})
    np.testing.assert_array_equal(sel.ids, np.argsort(np.linalg.norm(z, axis=1), kind="stable")[:5])
    logits = rng.normal(size=(100, 4))
    sel = px.ActivationMiner(5, field="logits").mine({"logits": logits})
    energy = -np.log(np.exp(logits).sum(axis=1))
    np.testing.assert_allclose(sel.scores, np.sort(energy)[::-1][:5])


def test_activation_miner_react_clipping(rng, monkeypatch):
    monkeypatch.setattr(engine, "BATCH_ROWS", 7)
    ref = np.abs(rng.normal(size=(200, 8)))
    z = np.abs(rng.normal(size=(50, 8))) * 3
    sel = px.ActivationMiner(50, clip=90, reference=ref).mine({"embeddings": z})
    c = np.percentile(ref, 90)
    expect = -np.linalg.norm(np.minimum(z, c), axis=1)
    got = np.empty(50)
    got[sel.ids] = sel.scores
    np.testing.assert_allclose(got, expect)
    with pytest.raises(ValueError, match="needs the reference"):
        px.ActivationMiner(5, clip=90)
    with pytest.raises(ValueError, match="percentile"):
        px.ActivationMiner(5, clip=0, reference=ref)


# -- coreset --------------------------------------------------------------------------------


def test_coreset_matches_numpy_k_center_greedy(rng):
    x = rng.normal(size=(400, 6))
    sel = px.CoresetMiner(30).mine({"embeddings": x})
    picks, dists = numpy_kcenter(x, 30)
    np.testing.assert_array_equal(sel.ids, picks)
    np.testing.assert_allclose(sel.scores[1:], dists[1:], rtol=1e-9)
    assert np.all(np.diff(sel.scores[1:]) <= 1e-12)  # farthest-first: non-increasing


def test_coreset_starts_from_the_labeled_reference(rng):
    x = rng.normal(size=(300, 5))
    ref = rng.normal(size=(40, 5))
    sel = px.CoresetMiner(25, reference=ref).mine({"embeddings": x})
    initial = np.sqrt(((x[:, None] - ref[None]) ** 2).sum(-1)).min(axis=1)
    picks, dists = numpy_kcenter(x, 25, initial=initial)
    np.testing.assert_array_equal(sel.ids, picks)
    np.testing.assert_allclose(sel.scores, dists, rtol=1e-9)


def test_coreset_size_above_pool_and_duplicates(rng):
    x = np.repeat(rng.normal(size=(4, 3)), 5, axis=0)
    sel = px.CoresetMiner(50).mine({"embeddings": x})
    assert sorted(sel.ids.tolist()) == list(range(20))  # every row once, none twice
