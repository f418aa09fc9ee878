"""combine(): the budget split, no row twice, each row's miner, the coreset re-pick."""

import numpy as np
import pytest

import pickaxe as px
from pickaxe.miners.combine import split_budget

from reference import top_k as stable_top_k
from test_pools import data  # noqa: F401  (the pool's columns, a fixture)


@pytest.mark.parametrize(
    "size, weights, expect",
    [
        (10, [1, 1, 1], [4, 3, 3]),
        (10, [1, 2, 2], [2, 4, 4]),
        (7, [0.5, 0.25, 0.25], [3, 2, 2]),
        (0, [1, 3], [0, 0]),
        (5, [0, 1], [0, 5]),
        (100, [1] * 7, [15, 15, 14, 14, 14, 14, 14]),
    ],
)
def test_split_budget_largest_remainder(size, weights, expect):
    assert split_budget(size, weights) == expect
    assert sum(split_budget(size, weights)) == size


def test_no_row_twice_and_each_row_records_its_miner(rng):
    logits = rng.normal(size=(400, 5))
    pool = {"logits": logits, "id": np.arange(400) + 10_000}
    # entropy and margin rank many rows alike: the later miner must skip the shared ones
    sel = px.combine([px.EntropyMiner(1), px.MarginMiner(1)], size=40, weights=[1, 1]).mine(pool)
    assert len(sel) == 40 and len(set(sel.ids.tolist())) == 40
    names = sel.miners.tolist()
    assert names == ["entropy"] * 20 + ["margin"] * 20
    entropy_rows = stable_top_k(px.scores.entropy(logits=logits), 20)
    np.testing.assert_array_equal(sel.ids[:20], entropy_rows + 10_000)
    margin = px.scores.margin(logits=logits)
    order = [r for r in stable_top_k(margin, 400).tolist() if r not in set(entropy_rows.tolist())]
    np.testing.assert_array_equal(sel.ids[20:], np.array(order[:20]) + 10_000)
    np.testing.assert_allclose(sel.scores[20:], margin[order[:20]])
    assert sel.info["quotas"] == {"entropy": 20, "margin": 20}


def test_a_share_that_cannot_be_filled_passes_on(rng):
    logits = rng.normal(size=(30, 3))
    logits[5:] = np.nan  # only 5 rows can be scored
    pool = {"logits": logits, "embeddings": rng.normal(size=(30, 4))}
    sel = px.combine(
        [px.EntropyMiner(1, nan_policy="omit"), px.ActivationMiner(1, field="embeddings")], size=20
    ).mine(pool)
    assert sel.miners.tolist().count("entropy") == 5
    assert sel.miners.tolist().count("activation") == 15
    assert len(set(sel.ids.tolist())) == 20


def test_fields_are_checked_before_any_miner_runs(rng):
    pool = {"logits": rng.normal(size=(10, 3))}
    with pytest.raises(ValueError, match="needs the field embeddings"):
        px.combine([px.EntropyMiner(1), px.CoresetMiner(1)], size=4).mine(pool)


def test_coreset_diversity_spreads_the_batch(rng):
    # 200 confusing rows in one tight cluster, 200 confident rows spread out
    centre = rng.normal(size=8) * 10
    emb = np.vstack([centre + 0.01 * rng.normal(size=(200, 8)), rng.normal(size=(200, 8)) * 5])
    logits = np.vstack([np.zeros((200, 4)), rng.normal(size=(200, 4)) * 3])
    pool = {"logits": logits, "embeddings": emb}
    plain = px.combine([px.EntropyMiner(1)], size=10).mine(pool)
    assert all(i < 200 for i in plain.ids.tolist())  # one cluster fills the budget
    diverse = px.combine([px.EntropyMiner(1)], size=10, diversity="coreset", candidates=40).mine(pool)
    assert len(set(diverse.ids.tolist())) == 10
    assert sum(i < 200 for i in diverse.ids.tolist()) <= 2
    assert set(diverse.miners.tolist()) == {"entropy"}


def test_argument_errors():
    m = px.EntropyMiner(1)
    with pytest.raises(ValueError, match="at least one miner"):
        px.combine([], size=3)
    with pytest.raises(TypeError, match="pickaxe miner"):
        px.combine([m, "entropy"], size=3)
    with pytest.raises(ValueError, match="2 weights for 1 miners"):
        px.combine([m], size=3, weights=[1, 2])
    with pytest.raises(ValueError, match="weights must be finite"):
        px.combine([m, m], size=3, weights=[1, -1])
    with pytest.raises(ValueError, match="sum to 0"):
        px.combine([m, m], size=3, weights=[0, 0])
    with pytest.raises(ValueError, match="diversity"):
        px.combine([m], size=3, diversity="kmeans")


# -- diversity against the labeled set ------------------------------------------------------


def labeled_and_gaps(rng, n_near=30, n_far=20, d=4):
    """A labeled set, pool rows just beside it (known ground) and pool rows spread far
    from it (gaps); every row equally confusing, so all are nominated."""
    labeled = rng.normal(size=(n_near, d))
    near = labeled + 0.01 * rng.normal(size=(n_near, d))
    far = rng.normal(size=(n_far, d)) * 10 + 30
    emb = np.vstack([near, far])
    pool = {"logits": np.zeros((n_near + n_far, 3)), "embeddings": emb}
    return pool, labeled, n_near


def test_nominees_near_the_reference_are_picked_last(rng):
    pool, labeled, n_near = labeled_and_gaps(rng)
    n = len(pool["embeddings"])
    miner = px.combine([px.EntropyMiner(1)], size=n, diversity="coreset", candidates=n, reference=labeled)
    sel = miner.mine(pool)
    assert sel.info["candidates"] == n and sel.info["reference"] == n_near
    assert sel.info["metric"] == "l2" and sel.info["search"] == "exact"
    ids = sel.ids.tolist()
    assert sorted(ids) == list(range(n))
    assert all(i >= n_near for i in ids[: n - n_near])  # the gaps first
    assert all(i < n_near for i in ids[n - n_near :])  # the known ground last
    # without the reference the first pick is the row farthest from the nominees' mean,
    # and the rows beside the labeled set are as new as any: they come early
    plain = px.combine([px.EntropyMiner(1)], size=n, diversity="coreset", candidates=n).mine(pool)
    assert any(i < n_near for i in plain.ids.tolist()[: n - n_near])
    assert "reference" not in plain.info


def test_reference_as_coreset_miner_counts_it(rng):
    # every row a nominee: combine's greedy over them is CoresetMiner's over the pool
    pool = {"logits": rng.normal(size=(120, 3)), "embeddings": rng.normal(size=(120, 6))}
    labeled = rng.normal(size=(40, 6))
    for reference, metric in [(labeled, "l2"), (px.ReferenceIndex(labeled, metric="cosine"), "cosine")]:
        sel = px.combine([px.EntropyMiner(1)], size=15, diversity="coreset", candidates=120,
                         reference=reference).mine(pool)
        want = px.CoresetMiner(15, reference=reference, metric=metric).mine(pool)
        np.testing.assert_array_equal(sel.ids, want.ids)
        assert sel.info["metric"] == metric


@pytest.mark.parametrize("kind", ["pandas", "arrow", "parquet", "folder"])
def test_reference_on_every_kind_of_pool(rng, data, tmp_path, monkeypatch, kind):
    from pickaxe import engine
    from test_pools import make_pool

    monkeypatch.setattr(engine, "BATCH_ROWS", 64)
    labeled = rng.normal(size=(50, 8)).astype(np.float32)
    miner = px.combine([px.EntropyMiner(1), px.MarginMiner(1)], size=12, diversity="coreset",
                       reference=labeled, query="split = 'unlabeled'")
    want = miner.mine(make_pool("mapping", data, tmp_path))
    got = miner.mine(make_pool(kind, data, tmp_path))
    np.testing.assert_array_equal(got.ids, want.ids)
    assert got.miners.tolist() == want.miners.tolist() and got.info == want.info


def test_reference_errors(rng):
    m = px.EntropyMiner(1)
    labeled = rng.normal(size=(10, 4))
    with pytest.raises(ValueError, match='reference is only used with diversity="coreset"'):
        px.combine([m], size=3, reference=labeled)
    pool = {"logits": rng.normal(size=(20, 3)), "embeddings": rng.normal(size=(20, 5))}
    with pytest.raises(ValueError, match="embeddings have 5 dimensions; reference has 4"):
        px.combine([m], size=3, diversity="coreset", reference=labeled).mine(pool)
    with pytest.raises(ValueError, match="reference is empty"):
        px.combine([m], size=3, diversity="coreset", reference=np.empty((0, 4)))
    bad = labeled.copy()
    bad[7, 2] = np.nan
    with pytest.raises(px.errors.InvalidInputError) as info:
        px.combine([m], size=3, diversity="coreset", reference=bad)
    assert info.value.field == "reference" and info.value.row == 7
    with pytest.raises(ValueError, match="l2 or cosine distance; the reference's metric is 'ip'"):
        px.combine([m], size=3, diversity="coreset", reference=px.ReferenceIndex(labeled, metric="ip"))
