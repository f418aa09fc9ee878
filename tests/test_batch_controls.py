"""Batch controls of the per-row miners and combine (issue 16 points 1-2): quotas by group
(stratify, quota) and stochastic batches (sampling, beta, seed), on every pool kind,
streamed and in memory, against references written here from the definitions."""

import itertools
import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import pickaxe as px
import pickaxe.engine as engine
from pickaxe.cli import main
from pickaxe.miners.combine import split_budget

N = 400


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(16)
    logits = rng.normal(size=(N, 4))
    logits[:, 3] -= 2.5  # class 3 rarely predicted: a small group
    return {
        "logits": logits,
        "camera": rng.choice(np.array(["north", "south", "east"], dtype=object), N, p=[0.6, 0.3, 0.1]),
        "site": rng.integers(0, 5, N),
    }


def _arrow(data):
    return pa.table({
        "logits": pa.FixedSizeListArray.from_arrays(pa.array(data["logits"].reshape(-1)), 4),
        "camera": pa.array(data["camera"].tolist()),
        "site": pa.array(data["site"]),
    })


@pytest.fixture(scope="module")
def pools(data, tmp_path_factory):
    d = tmp_path_factory.mktemp("pools")
    t = _arrow(data)
    pq.write_table(t, d / "pool.parquet", row_group_size=37)
    (d / "folder").mkdir()
    for i, start in enumerate(range(0, N, 150)):
        pq.write_table(t.slice(start, 150), d / "folder" / f"part-{i}.parquet", row_group_size=41)
    frame = pd.DataFrame({"logits": list(data["logits"]), "camera": data["camera"], "site": data["site"]})
    return {
        "mapping": data,
        "pandas": frame,
        "arrow": t,
        "parquet": str(d / "pool.parquet"),
        "folder": str(d / "folder"),
    }


def _margin(logits):
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    s = np.sort(p, axis=1)
    return 1.0 - (s[:, -1] - s[:, -2])


CONTROLS = [
    dict(stratify="predicted"),
    dict(stratify="camera", quota="proportional"),
    dict(stratify="site", quota={0: 3, 4: 1}),
    dict(sampling="power", beta=2.0, seed=5),
    dict(sampling="softmax", beta=4.0),
    dict(sampling="rank", beta=1.5, seed=2),
    dict(stratify="camera", sampling="rank", seed=9),
    dict(stratify="predicted", quota="proportional", sampling="power"),
]


@pytest.mark.parametrize("controls", CONTROLS, ids=[json.dumps(c, default=str) for c in CONTROLS])
def test_every_pool_kind_streamed_equals_in_memory(pools, controls, monkeypatch):
    miner = px.MarginMiner(23, **controls)
    want = miner.mine(pools["mapping"])
    assert len(want) == 23 and len(set(want.ids.tolist())) == 23
    monkeypatch.setattr(engine, "BATCH_ROWS", 29)  # many batches, none aligned with a group
    for kind, pool in pools.items():
        got = miner.mine(pool)
        assert got.ids.tolist() == want.ids.tolist(), kind
        np.testing.assert_allclose(got.scores, want.scores)
        assert (got.groups is None) == (want.groups is None)
        if got.groups is not None:
            assert got.groups.tolist() == want.groups.tolist()
        assert got.info == want.info


def _shares(size, weights, available):
    """The quota rule written out: largest remainder over the groups with rows, what a
    group cannot fill passed on to those with rows left."""
    take = {g: 0 for g in weights}
    left = size
    open_ = [g for g in weights if available[g] and weights[g] > 0]
    while left and open_:
        for g, a in zip(open_, split_budget(left, [weights[g] for g in open_])):
            got = min(a, available[g] - take[g])
            take[g] += got
            left -= got
        open_ = [g for g in open_ if take[g] < available[g]]
    return take


@pytest.mark.parametrize("quota", ["equal", "proportional", {"north": 1, "east": 3}])
def test_stratified_top_is_each_groups_best_rows(data, quota):
    size = 50
    sel = px.MarginMiner(size, stratify="camera", quota=quota).mine(data)
    s = _margin(data["logits"])
    groups = sorted(set(data["camera"].tolist()))
    counts = {g: int((data["camera"] == g).sum()) for g in groups}
    if quota == "equal":
        weights = {g: 1.0 for g in groups}
    elif quota == "proportional":
        weights = {g: float(counts[g]) for g in groups}
    else:
        weights = {g: float(quota.get(g, 0)) for g in groups}
    shares = _shares(size, weights, counts)
    assert sel.info["picked"] == {g: n for g, n in shares.items() if n}
    for g in groups:
        rows = np.flatnonzero(data["camera"] == g)
        best = rows[np.lexsort((rows, -s[rows]))][: shares[g]]
        assert sorted(sel.ids[sel.groups == g].tolist()) == sorted(best.tolist())
    np.testing.assert_allclose(sel.scores, s[sel.ids])
    assert np.all(np.diff(sel.scores) <= 1e-12)  # highest first across groups


def test_a_short_group_passes_its_share_on():
    # groups of 2, 10 and 10 rows, 12 to pick equally: 4 each, the first has 2, its
    # other 2 split 1 and 1 between the others
    g = np.array(["a"] * 2 + ["b"] * 10 + ["c"] * 10, dtype=object)
    pool = {"confidence": np.linspace(0.1, 0.9, 22), "g": g}
    sel = px.LeastConfidenceMiner(12, stratify="g").mine(pool)
    assert sel.info["picked"] == {"a": 2, "b": 5, "c": 5}
    # largest remainder: 10 over 3 groups is 4, 3, 3, the extra row to the first group
    sel = px.LeastConfidenceMiner(10, stratify="g", quota={"b": 1, "c": 1, "a": 1}).mine(pool)
    assert sel.info["picked"] == {"a": 2, "b": 4, "c": 4}
    # unnamed groups are picked only when the named ones run out
    sel = px.LeastConfidenceMiner(15, stratify="g", quota={"a": 1}).mine(pool)
    assert sel.info["picked"] == {"a": 2, "b": 7, "c": 6}
    assert len(px.LeastConfidenceMiner(40, stratify="g").mine(pool)) == 22


def test_predicted_classes_and_binary_logits(data):
    sel = px.EntropyMiner(40, stratify="predicted").mine(data)
    pred = np.argmax(data["logits"], axis=1)
    assert sel.groups.tolist() == pred[sel.ids].tolist()
    assert set(sel.info["picked"]) == set(np.unique(pred).tolist())
    # a quota may name a class the model never predicts; a class past C is unknown
    never = data["logits"].copy()
    never[:, 3] = -100.0
    sel = px.EntropyMiner(6, stratify="predicted", quota={0: 1, 3: 1}).mine({"logits": never})
    assert sel.info["picked"] == {0: 6}  # class 3 has no row: its share passes to class 0
    with pytest.raises(ValueError, match="quota names the group 7"):
        px.EntropyMiner(5, stratify="predicted", quota={7: 1}).mine(data)
    binary = {"logits": np.array([[2.0], [-1.0], [0.1], [-0.2], [0.0]])}
    sel = px.MarginMiner(4, stratify="predicted").mine(binary)
    assert dict(zip(sel.ids.tolist(), sel.groups.tolist())) == {0: 1, 2: 1, 3: 0, 4: 0}  # x > 0: class 1
    # a miner of another field groups by the pool's logits
    pool = {"embeddings": np.random.default_rng(1).normal(size=(N, 3)), "logits": data["logits"]}
    sel = px.ActivationMiner(12, field="embeddings", stratify="predicted").mine(pool)
    assert sel.groups.tolist() == pred[sel.ids].tolist()


def _ordered_pair_probabilities(w):
    """Exact probability of each ordered pair (i, j) as the first two rows of a draw
    without replacement, probability ∝ w (successive sampling)."""
    total = w.sum()
    return {(i, j): w[i] / total * w[j] / (total - w[i]) for i, j in itertools.permutations(range(len(w)), 2)}


@pytest.mark.parametrize("sampling,beta", [("power", 1.0), ("power", 2.0), ("softmax", 3.0), ("rank", 1.0)])
def test_draw_follows_the_exact_distribution(sampling, beta):
    from scipy.stats import chisquare

    scores = np.array([0.05, 0.15, 0.2, 0.25, 0.35])  # least confidence: 1 - confidence
    pool = {"confidence": 1.0 - scores}
    if sampling == "power":
        w = scores**beta
    elif sampling == "softmax":
        w = np.exp(beta * scores)
    else:
        w = (5.0 - np.argsort(np.argsort(scores))) ** -beta  # rank 1 = highest score
    exact = _ordered_pair_probabilities(w)
    draws = 3000
    seen = {pair: 0 for pair in exact}
    for seed in range(draws):
        sel = px.LeastConfidenceMiner(2, sampling=sampling, beta=beta, seed=seed).mine(pool)
        seen[tuple(sel.ids.tolist())] += 1
    pairs = list(exact)
    stat, p = chisquare([seen[q] for q in pairs], [exact[q] * draws for q in pairs])
    assert p > 1e-3, (sampling, beta, stat)


def test_draw_is_deterministic_and_keeps_the_miners_scores(data):
    a = px.MarginMiner(30, sampling="power", seed=4).mine(data)
    b = px.MarginMiner(30, sampling="power", seed=4).mine(data)
    c = px.MarginMiner(30, sampling="power", seed=5).mine(data)
    assert a.ids.tolist() == b.ids.tolist() != c.ids.tolist()
    np.testing.assert_allclose(a.scores, _margin(data["logits"])[a.ids])
    assert a.info == {"field": "logits", "sampling": "power", "beta": 1.0, "seed": 4}
    # a draw's first rows are a smaller draw's
    assert px.MarginMiner(10, sampling="power", seed=4).mine(data).ids.tolist() == a.ids[:10].tolist()
    # beta 0 is uniform: the scores do not matter
    u = px.MarginMiner(10, sampling="power", beta=0, seed=1).mine(data)
    v = px.MarginMiner(10, sampling="power", beta=0, seed=1).mine({"logits": -data["logits"]})
    assert u.ids.tolist() == v.ids.tolist()


def test_power_zero_scores_come_last_and_nan_never():
    conf = np.array([1.0, 0.6, 1.0, 0.7, 1.0])  # least confidence 0 for rows 0, 2, 4
    sel = px.LeastConfidenceMiner(4, sampling="power", seed=3).mine({"confidence": conf})
    assert sorted(sel.ids[:2].tolist()) == [1, 3] and sel.ids[2:].tolist() == [0, 2]
    logits = np.array([[0.0, 1.0], [np.nan, 0.0], [1.0, 0.2]])
    sel = px.MarginMiner(3, sampling="softmax", nan_policy="omit").mine({"logits": logits})
    assert sorted(sel.ids.tolist()) == [0, 2]


def test_combine_takes_quotas_and_draws(data):
    both = px.combine([px.MarginMiner(1), px.EntropyMiner(1)], 30, stratify="camera", quota="proportional")
    sel = both.mine(data)
    assert len(sel) == 30 and len(set(sel.ids.tolist())) == 30
    assert sel.info["picked"] == {"east": 3, "north": 18, "south": 9} or sum(sel.info["picked"].values()) == 30
    for g, n in sel.info["picked"].items():
        assert (sel.groups == g).sum() == n
        assert set(data["camera"][sel.ids[sel.groups == g]].tolist()) == {g}
    assert set(sel.miners.tolist()) == {"margin", "entropy"}
    by_class = px.combine([px.MarginMiner(1), px.ActivationMiner(1, field="logits")], 12, stratify="predicted").mine(data)
    assert by_class.groups.tolist() == np.argmax(data["logits"], axis=1)[by_class.ids].tolist()
    drawn = px.combine([px.MarginMiner(1), px.EntropyMiner(1)], 20, sampling="softmax", beta=2, seed=1).mine(data)
    assert drawn.info["sampling"] == "softmax" and len(set(drawn.ids.tolist())) == 20
    assert drawn.groups is None


def test_outputs_gain_a_group_column_only_when_stratified(data, tmp_path):
    plain = px.MarginMiner(5).mine(data)
    assert list(plain.to_arrow().column_names) == ["id", "score", "miner", "camera", "site"]
    sel = px.MarginMiner(5, stratify="camera").mine(data)
    assert list(sel.to_arrow().column_names) == ["id", "score", "miner", "group", "camera", "site"]
    sel.write(tmp_path / "s.csv")
    sel.write(tmp_path / "s.parquet")
    assert pd.read_csv(tmp_path / "s.csv")["group"].tolist() == sel.groups.tolist()
    assert pq.read_table(tmp_path / "s.parquet").column("group").to_pylist() == sel.groups.tolist()


def test_cli_end_to_end(pools, tmp_path):
    out = tmp_path / "picks.csv"
    r = CliRunner().invoke(main, [
        "mine", pools["parquet"], "--miner", "margin", "--size", "12", "--stratify", "camera",
        "--quota", '{"north": 2, "south": 1, "east": 1}', "--sampling", "power", "--beta", "2", "--seed", "3",
        "--out", str(out),
    ])
    assert r.exit_code == 0, r.output
    got = pd.read_csv(out)
    want = px.MarginMiner(12, stratify="camera", quota={"north": 2, "south": 1, "east": 1},
                          sampling="power", beta=2.0, seed=3).mine(pools["parquet"])
    assert got["id"].tolist() == want.ids.tolist() and got["group"].tolist() == want.groups.tolist()
    r = CliRunner().invoke(main, ["mine", pools["parquet"], "--miner", "entropy", "--size", "8", "--stratify", "predicted",
                                  "--quota", '{"0": 1, "1": 1}'])
    assert r.exit_code == 0, r.output
    assert set(pd.read_csv(__import__("io").StringIO(r.output))["group"]) <= {0, 1, 2, 3}


@pytest.mark.parametrize("args,words", [
    (["--stratify", "nosuch"], "stratify='nosuch' names no column"),
    (["--stratify", "camera", "--quota", '{"west": 1}'], "quota names the group 'west'"),
    (["--stratify", "camera", "--quota", '{"north": 0}'], "sum to 0"),
    (["--stratify", "camera", "--quota", "{bad"], "--quota {bad: not a JSON mapping"),
    (["--sampling", "power", "--beta", "-1"], "beta must be a finite number >= 0"),
    (["--quota", "proportional"], "needs stratify="),
])
def test_cli_bad_input(pools, args, words):
    r = CliRunner().invoke(main, ["mine", pools["parquet"], "--miner", "margin", "--size", "3", *args])
    assert r.exit_code != 0 and words in r.output, r.output


def test_cli_set_miners_take_no_controls(pools):
    r = CliRunner().invoke(main, ["mine", pools["parquet"], "--miner", "coreset", "--size", "3", "--sampling", "power"])
    assert r.exit_code == 2 and "--sampling does not apply" in r.output


@pytest.mark.parametrize("kwargs,error,words", [
    (dict(stratify=3), TypeError, "stratify must be None"),
    (dict(stratify=""), ValueError, "empty string"),
    (dict(stratify="camera", quota=5), TypeError, "quota must be"),
    (dict(stratify="camera", quota="half"), ValueError, "quota must be one of"),
    (dict(stratify="camera", quota={}), ValueError, "at least one group"),
    (dict(stratify="camera", quota={"north": "x"}), TypeError, "quota weights must be real numbers"),
    (dict(stratify="camera", quota={"north": -1}), ValueError, ">= 0"),
    (dict(stratify="camera", quota={"north": 0, "south": 0}), ValueError, "sum to 0"),
    (dict(quota="proportional"), ValueError, "needs stratify="),
    (dict(sampling="gumbel"), ValueError, "sampling must be one of"),
    (dict(sampling=1), TypeError, "sampling must be one of"),
    (dict(sampling="power", beta=-0.5), ValueError, "beta must be a finite number >= 0"),
    (dict(sampling="power", beta="x"), TypeError, "beta must be a real number"),
    (dict(sampling="power", beta=math.inf), ValueError, "beta"),
    (dict(sampling="power", seed=1.5), TypeError, "seed must be an int"),
])
def test_bad_arguments(kwargs, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace("=", "=")):
        px.MarginMiner(3, **kwargs)


def test_bad_input_against_the_pool(data):
    with pytest.raises(ValueError, match="stratify='nosuch' names no column of the pool"):
        px.MarginMiner(3, stratify="nosuch").mine(data)
    with pytest.raises(ValueError, match="is a prediction field"):
        px.MarginMiner(3, stratify="logits").mine(data)
    with pytest.raises(ValueError, match='stratify="predicted" .* has neither'):
        px.ActivationMiner(3, field="embeddings", stratify="predicted").mine({"embeddings": np.ones((4, 2))})
    with pytest.raises(ValueError, match="quota names the group 'west'"):
        px.MarginMiner(3, stratify="camera", quota={"west": 1}).mine(data)
    with pytest.raises(ValueError, match="ranks the whole pool"):
        px.CoresetMiner(3, stratify="camera")
    with pytest.raises(ValueError, match="ranks the whole pool"):
        px.CoresetMiner(3, sampling="power")
    # power needs scores >= 0: activation scores are -||z||
    with pytest.raises(px.errors.InvalidInputError, match=r'embeddings row 0: .*sampling="power"'):
        px.ActivationMiner(3, field="embeddings", sampling="power").mine({"embeddings": np.ones((4, 2))})
    with pytest.raises(ValueError, match="its own stratify="):
        px.combine([px.MarginMiner(1, stratify="camera")], 3)
    with pytest.raises(ValueError, match="not both"):
        px.combine([px.MarginMiner(1, sampling="power")], 3, sampling="softmax")
    with pytest.raises(ValueError, match="does not rank rows one by one"):
        px.combine([px.CoresetMiner(1)], 3, stratify="camera")


def test_proportional_quota_counts_rows_of_batches_that_keep_none(monkeypatch):
    # The first batch holds both groups' best rows; every later batch scores below what
    # is kept (below the groups' floors), so it keeps no row but still counts its rows:
    # proportional shares follow the whole pool (a: 10 rows, b: 190), not the first batch.
    n = 200
    confidence = np.concatenate([np.full(10, 0.1), np.full(10, 0.2), np.linspace(0.5, 0.9, n - 20)])
    group = np.array(["a"] * 10 + ["b"] * (n - 10))
    pool = {"confidence": confidence, "site": group}
    miner = px.LeastConfidenceMiner(5, stratify="site", quota="proportional")
    want = miner.mine(pool)
    monkeypatch.setattr(engine, "BATCH_ROWS", 20)
    got = miner.mine(pool)
    assert got.groups.tolist() == want.groups.tolist() == ["b"] * 5
    assert got.ids.tolist() == want.ids.tolist() == list(range(10, 15))
    assert got.info == want.info


# -- sampling="rank" without a sort of the pool (per_row.rank_candidates) ------------------


def _rank_values(kind, n, rng):
    if kind == "continuous":
        return rng.random(n)
    if kind == "ties":  # a few distinct scores: long runs share a rank
        return rng.integers(0, 6, n).astype(np.float64)
    if kind == "equal":
        return np.full(n, 0.25)
    if kind == "inf":
        v = rng.normal(size=n)
        v[rng.random(n) < 0.05] = np.inf
        v[rng.random(n) < 0.05] = -np.inf
        v[rng.random(n) < 0.05] = 0.0
        v[rng.random(n) < 0.05] = -0.0
        return v
    if kind == "sorted":  # the pool in score order: the draw's floors rise late
        return np.sort(rng.random(n))
    raise AssertionError(kind)


def _rank_tops(values, keys, groups=None):
    from pickaxe.per_row import Tops

    counts = None
    if groups is not None:
        uniq, n = np.unique(groups, return_counts=True)
        counts = {g: int(c) for g, c in zip(uniq.tolist(), n.tolist())}
    return Tops(keys, values, values, groups, counts, {})


def _both_rank_picks(tops, c, k, monkeypatch):
    """(the picks of the bounded path, the picks of the full sort, whether the bounded
    path ran): keys, scores, groups."""
    import pickaxe.per_row as per_row

    monkeypatch.setattr(per_row, "RANK_SORT_BELOW", 0)
    ran = per_row.rank_candidates(tops, c, k, engine.key_numbers) is not None
    fast = per_row.pick(per_row.drawn(tops, c, engine.key_numbers, k), c, k, "t", None)
    full = per_row.pick(per_row.drawn(tops, c, engine.key_numbers, None), c, k, "t", None)
    return fast, full, ran


def _same_picks(fast, full):
    assert fast[0].tolist() == full[0].tolist()
    assert fast[1].tobytes() == full[1].tobytes()
    assert (fast[3] is None) == (full[3] is None)
    if fast[3] is not None:
        assert fast[3].tolist() == full[3].tolist()
        assert fast[2]["picked"] == full[2]["picked"]


@pytest.mark.parametrize("kind", ["continuous", "ties", "equal", "inf", "sorted"])
@pytest.mark.parametrize("beta", [0.0, 0.1, 1.0, 5.0])
def test_rank_draw_without_a_sort_picks_what_the_sort_picks(kind, beta, monkeypatch):
    from pickaxe.batch_controls import check_controls

    ran = 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(3000, 9000))
        values = _rank_values(kind, n, rng)
        keys = rng.permutation(3 * n)[:n].astype(np.int64)  # row numbers, out of order
        for k in (1, 7, 250):
            c = check_controls("t", sampling="rank", beta=beta, seed=seed * 31 + k)
            fast, full, r = _both_rank_picks(_rank_tops(values, keys), c, k, monkeypatch)
            _same_picks(fast, full)
            ran += r
    assert ran >= 12  # the bounded path ran (it gives up only when most rows could be drawn)


@pytest.mark.parametrize("beta", [0.1, 1.0, 5.0])
def test_rank_draw_without_a_sort_by_group_and_string_ids(beta, monkeypatch):
    from pickaxe.batch_controls import check_controls

    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        n = 6000
        values = _rank_values(["continuous", "ties", "inf", "continuous"][seed], n, rng)
        # a big group, a middling one and groups of fewer rows than k
        groups = rng.choice(np.array(["a", "b", "c", "d"]), n, p=[0.8, 0.195, 0.004, 0.001])
        keys = rng.permutation(n).astype(np.int64)
        for k in (5, 40):
            for quota in ("equal", "proportional", {"b": 1, "c": 2}):
                c = check_controls("t", stratify="camera", quota=quota, sampling="rank", beta=beta, seed=seed)
                fast, full, _ = _both_rank_picks(_rank_tops(values, keys, groups), c, k, monkeypatch)
                _same_picks(fast, full)
        # string ids (a Ray Dataset's keys): the uniforms hash them
        ids = np.array([f"row-{i}" for i in keys], dtype=object)
        c = check_controls("t", sampling="rank", beta=beta, seed=seed)
        fast, full, ran = _both_rank_picks(_rank_tops(values, ids), c, 30, monkeypatch)
        _same_picks(fast, full)
        assert ran


def test_rank_draw_small_pools_and_k_past_the_pool(monkeypatch):
    from pickaxe.batch_controls import check_controls

    for n in (1, 2, 3, 10, 57):
        rng = np.random.default_rng(n)
        values = rng.integers(0, 3, n).astype(np.float64)
        keys = np.arange(n, dtype=np.int64)
        for k in (1, 2, n - 1, n, n + 4):
            if k <= 0:
                continue
            c = check_controls("t", sampling="rank", beta=1.0, seed=n)
            fast, full, _ = _both_rank_picks(_rank_tops(values, keys), c, k, monkeypatch)
            _same_picks(fast, full)
            assert len(fast[0]) == min(k, n)


def test_rank_candidates_carry_exact_ranks(monkeypatch):
    import pickaxe.per_row as per_row
    from pickaxe.batch_controls import check_controls, competition_ranks

    monkeypatch.setattr(per_row, "RANK_SORT_BELOW", 0)
    rng = np.random.default_rng(3)
    for kind in ("continuous", "ties", "inf"):
        values = _rank_values(kind, 20000, rng)
        tops = _rank_tops(values, np.arange(len(values), dtype=np.int64))
        for beta in (0.5, 2.0):
            at, ranks = per_row.rank_candidates(tops, check_controls("t", sampling="rank", beta=beta), 100, engine.key_numbers)
            assert 100 <= len(at) < 20000 // 4 and np.all(np.diff(at) > 0)
            assert ranks.tolist() == competition_ranks(values)[at].tolist()
    # NaN is never a candidate nor counted in a rank; a bad group code names its row
    from pickaxe import _core

    v = np.array([np.nan, 1.0, 2.0, np.nan, 0.5] * 20)
    at, ranks, scored = _core.rank_draw_candidates(v, None, 0, 1, 1.0, 3)
    assert not np.isnan(v[at]).any() and scored.tolist() == [60]
    ok = ~np.isnan(v)
    assert ranks.tolist() == competition_ranks(v[ok])[np.searchsorted(np.flatnonzero(ok), at)].tolist()
    with pytest.raises(ValueError, match="row 2's group code 5"):
        _core.rank_draw_candidates(v, None, 0, 1, 1.0, 3, np.array([0, 0, 5] + [0] * 97), 2)


@pytest.mark.parametrize("controls", [
    dict(sampling="rank", beta=1.0, seed=3),
    dict(sampling="rank", beta=0.1, seed=4),
    dict(sampling="rank", beta=5.0, seed=5),
    dict(stratify="site", sampling="rank", beta=1.0, seed=6),
    dict(stratify="site", quota="proportional", sampling="rank", beta=0.5, seed=7),
])
def test_rank_draw_of_a_large_pool_is_the_sorted_draw(controls, monkeypatch):
    """Through the engine, streamed in batches, a pool past `RANK_SORT_BELOW` rows with
    NaN scores and ties: the same selection as with every row's rank from one sort."""
    import pickaxe.per_row as per_row

    rng = np.random.default_rng(11)
    n = 150_000
    conf = np.round(rng.random(n), 3)  # ties
    conf[rng.random(n) < 0.01] = np.nan
    pool = {"confidence": conf, "site": rng.integers(0, 4, n)}
    miner = px.LeastConfidenceMiner(300, nan_policy="omit", **controls)
    got = miner.mine(pool)
    # every row kept as a batch `Tops` and merged (`Backend.drawn`, as on Ray) rather
    # than in `LocalBackend`'s buffers (`per_row.RankRows`)
    with monkeypatch.context() as m:
        m.setattr(engine.LocalBackend, "drawn", engine.Backend.drawn)
        merged = miner.mine(pool)
    monkeypatch.setattr(per_row, "RANK_SORT_BELOW", 10**12)
    want = miner.mine(pool)
    for other in (got, merged):
        assert other.ids.tolist() == want.ids.tolist()
        assert other.scores.tobytes() == want.scores.tobytes() and other.info == want.info
    assert not np.isnan(got.scores).any()
    if "stratify" in controls:
        assert got.groups.tolist() == want.groups.tolist()
        inner = {key: v for key, v in controls.items() if key in ("sampling", "beta", "seed")}
        both = px.combine([px.LeastConfidenceMiner(1, nan_policy="omit", **inner), px.RandomMiner(1)], 200,
                          stratify="site")
        monkeypatch.setattr(per_row, "RANK_SORT_BELOW", 1 << 16)
        a = both.mine(pool)
        monkeypatch.setattr(per_row, "RANK_SORT_BELOW", 10**12)
        b = both.mine(pool)
        assert a.ids.tolist() == b.ids.tolist() and a.groups.tolist() == b.groups.tolist()


def test_rank_kernel_candidates_hold_each_groups_top_keys():
    """`_core.rank_draw_candidates` against every row's key from its exact rank: each
    group's k highest keys are candidates, with NaN, ±inf, ties, offset row numbers."""
    from pickaxe import _core
    from pickaxe.batch_controls import competition_ranks

    for rnd in range(24):
        rng = np.random.default_rng(rnd)
        n = int(rng.integers(3000, 6000))
        r = rng.integers(0, 40, n)
        x = rng.integers(0, 7, n).astype(float) if rnd % 3 == 0 else rng.integers(0, 10**6, n) / 1e6
        x[r == 0], x[r == 1], x[r == 2] = np.nan, np.inf, -np.inf
        groups = 1 + rnd % 3
        codes = rng.integers(0, groups, n).astype(np.int32 if rnd % 2 else np.int64)  # both code types
        beta, k = [0.1, 1.0, 5.0][rnd % 3], [1, 10, 200][rnd // 4 % 3]
        at, ranks, scored = _core.rank_draw_candidates(x, None, 5, 17, beta, k, codes if groups > 1 else None, groups)
        ok = ~np.isnan(x)
        assert scored.tolist() == np.bincount(codes[ok] if groups > 1 else np.zeros(ok.sum(), int), minlength=groups).tolist()
        exact = np.ones(n, np.int64)
        exact[ok] = competition_ranks(x[ok])
        assert ok[at].all() and ranks.tolist() == exact[at].tolist()
        key = -beta * np.log(exact.astype(float)) - np.log(-np.log(engine.uniforms(np.arange(n) + 5, 17) + 2.0**-54))
        for g in range(groups):
            rows = np.flatnonzero(ok & ((codes == g) if groups > 1 else True))
            top = rows[np.argsort(-key[rows], kind="stable")[:k]]
            assert np.isin(top, at).all(), (rnd, g)


@pytest.mark.parametrize("sort_below", [0, 10**12])
@pytest.mark.parametrize("controls", [
    dict(sampling="rank", beta=1.0, seed=8),
    dict(stratify="site", sampling="rank", beta=2.0, seed=9),
    dict(stratify="site", quota="proportional", sampling="rank", beta=0.3, seed=10),
])
@pytest.mark.parametrize("labels", ["str", "int"])
def test_rank_rows_of_a_streamed_pool_match_the_merged_tops(sort_below, controls, labels, monkeypatch):
    """`LocalBackend` keeps a rank draw's rows in buffers (`per_row.RankRows`) instead of
    batch `Tops`: with a query (rows numbered out of stream order), string groups or
    integer ones (small ones their own codes, a large one only in some batches), a
    group whose rows all score NaN and many batches, it picks what the merged `Tops`
    pick, on the bounded path and on the sort."""
    import pickaxe.per_row as per_row

    rng = np.random.default_rng(5)
    n = 6000
    conf = np.round(rng.random(n), 2)
    site = rng.choice(np.array(["x", "y", "z", "w"]), n)
    if labels == "int":
        site = np.select([site == "x", site == "y", site == "z"], [3, 0, 5000], 7)
        site[: n // 2][site[: n // 2] == 5000] = 3  # 5000 only in the later batches
    conf[site == ("w" if labels == "str" else 7)] = np.nan
    conf[rng.random(n) < 0.02] = np.nan
    pool = {"confidence": conf, "site": site, "keep": rng.random(n)}
    monkeypatch.setattr(per_row, "RANK_SORT_BELOW", sort_below)
    monkeypatch.setattr(engine, "BATCH_ROWS", 700)
    for query in (None, "keep > 0.3"):
        miner = px.LeastConfidenceMiner(40, nan_policy="omit", query=query, **controls)
        got = miner.mine(pool)
        with monkeypatch.context() as m:
            m.setattr(engine.LocalBackend, "drawn", engine.Backend.drawn)
            want = miner.mine(pool)
        assert got.ids.tolist() == want.ids.tolist() and len(got.ids) == 40
        assert got.scores.tobytes() == want.scores.tobytes() and got.info == want.info
        if "stratify" in controls:
            assert got.groups.tolist() == want.groups.tolist()
