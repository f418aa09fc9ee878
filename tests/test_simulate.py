"""px.simulate and `pickaxe simulate`: the protocol (deterministic, random always in), the
report (AULC, paired differences, the recommendation's rule) and clear errors before any
work."""

import subprocess
import sys

import numpy as np
import pytest

import pickaxe as px

pytest.importorskip("sklearn")
pd = pytest.importorskip("pandas")

from pickaxe import simulation  # noqa: E402
from pickaxe.miners import Miner  # noqa: E402
from pickaxe.simulation_report import SEPARATION, TABLE_COLUMNS, aulc  # noqa: E402


def blobs(n=900, classes=4, dim=6, spread=1.6, seed=0):
    """Overlapping Gaussian classes: the probe's boundary is worth learning."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centers = rng.normal(size=(classes, dim)) * 2.0
    x = centers[y] + spread * rng.normal(size=(n, dim))
    return {"embeddings": x.astype(np.float32), "label": y}


def linear_classes(n=800, classes=4, dim=10, seed=1):
    """Classes by the largest of random linear scores: the rows far from every boundary
    (the ones a probe is surest of) say little about where the boundaries are."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    y = np.argmax(x @ rng.normal(size=(dim, classes)), axis=1)
    return {"embeddings": x.astype(np.float32), "label": y}


class Cheat(Miner):
    """Picks the rows the probe gets wrong, by their true label: must win."""

    fields = ("confidences",)

    def __init__(self, size, truth):
        super().__init__(size)
        self.truth = truth

    def score(self, pool, field):
        wrong = pool.columns[field].argmax(axis=1) != self.truth[pool.columns["id"]]
        return wrong + 0.5 * (1 - pool.columns[field].max(axis=1)), {}


class MostCertain(Miner):
    """Picks the rows the probe is surest of: must lose."""

    fields = ("confidences",)

    def score(self, pool, field):
        return pool.columns[field].max(axis=1), {}


def test_aulc_by_hand():
    assert aulc([20, 40, 60], [0.5, 0.7, 0.9]) == pytest.approx(0.7)
    # uneven steps: (0 + 1) / 2 * 10 + 1 * 20 = 25 over a width of 30
    assert aulc([0, 10, 30], [0.0, 1.0, 1.0]) == pytest.approx(25 / 30)


def test_table_shape_random_in_and_aulc_from_rounds():
    report = px.simulate(blobs(), "label", ["margin", "coreset"], batch=10, rounds=3, seeds=3, progress=False)
    table, rounds = report.table, report.rounds
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert sorted(table.strategy) == ["coreset", "margin", "random"]
    assert list(rounds.columns) == ["seed", "strategy", "round", "labeled", "accuracy", "macro_f1"]
    assert len(rounds) == 3 * 3 * 4  # seeds x strategies x (start + rounds)
    assert sorted(rounds.labeled.unique()) == [20, 30, 40, 50]
    # every strategy starts each seed from the same rows, so round 0 agrees
    first = rounds[rounds["round"] == 0].groupby("seed").accuracy.nunique()
    assert (first == 1).all()
    # the table's numbers are the rounds' numbers
    m = rounds[rounds.strategy == "margin"]
    per_seed = [aulc(g.labeled, g.accuracy) for _, g in m.sort_values("round").groupby("seed")]
    row = table.set_index("strategy").loc["margin"]
    assert row.aulc == pytest.approx(np.mean(per_seed))
    assert row.aulc_se == pytest.approx(np.std(per_seed, ddof=1) / np.sqrt(3))
    r = rounds[rounds.strategy == "random"].sort_values("round")
    paired = [aulc(g.labeled, g.accuracy) for _, g in r.groupby("seed")]
    assert row.aulc_vs_random == pytest.approx(np.mean(np.subtract(per_seed, paired)))
    assert table.set_index("strategy").loc["random"].aulc_vs_random == 0
    assert table.aulc_vs_best.iloc[0] == 0 and (table.aulc_vs_best <= 0).all()
    assert list(table.aulc) == sorted(table.aulc, reverse=True)


def test_random_given_twice_is_once():
    report = px.simulate(blobs(), "label", ["random", px.RandomMiner(3)], batch=10, rounds=2, seeds=2, progress=False)
    assert list(report.table.strategy) == ["random"]
    assert report.recommendation is None and "only random" in report.reason


def test_same_numbers_twice_on_digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    pool = {"embeddings": (x / 16.0).astype(np.float32), "label": y}
    kw = dict(strategies=["margin", "coreset", "committee"], batch=10, rounds=2, seeds=2, progress=False)
    a = px.simulate(pool, "label", **kw)
    b = px.simulate(pool, "label", **kw)
    pd.testing.assert_frame_equal(a.rounds, b.rounds)
    pd.testing.assert_frame_equal(a.table, b.table)
    # another seed count changes the split and the start set: the first seeds stay
    c = px.simulate(pool, "label", **{**kw, "seeds": 3})
    pd.testing.assert_frame_equal(c.rounds[c.rounds.seed < 2].reset_index(drop=True), a.rounds)


def test_cheat_wins_and_most_certain_loses():
    pool = linear_classes()
    report = px.simulate(pool, "label", {"cheat": Cheat(1, pool["label"]), "most_certain": MostCertain(1)},
                         batch=10, rounds=6, seeds=5, progress=False)
    t = report.table.set_index("strategy")
    assert report.recommendation == "cheat", report.summary()
    assert t.loc["cheat"].aulc_vs_random > SEPARATION * t.loc["cheat"].aulc_vs_random_se
    assert t.loc["most_certain"].aulc_vs_random < -SEPARATION * t.loc["most_certain"].aulc_vs_random_se
    assert "Recommended: cheat" in str(report)


def test_indistinguishable_strategies_give_none():
    # the same miner twice picks the same rows: no evidence can separate them
    report = px.simulate(blobs(), "label", {"margin": "margin", "margin again": px.MarginMiner(7)},
                         batch=10, rounds=3, seeds=3, progress=False)
    t = report.table.set_index("strategy")
    assert t.loc["margin"].aulc == t.loc["margin again"].aulc
    assert report.recommendation in (None, "random")
    if report.recommendation is None:
        assert "does not separate" in report.reason


def test_one_seed_recommends_nothing():
    report = px.simulate(blobs(), "label", ["margin"], batch=10, rounds=2, seeds=1, progress=False)
    assert report.recommendation is None and "one seed" in report.reason
    assert np.isnan(report.table.aulc_se).all()


def test_reference_miners_get_the_labeled_set():
    seen = []

    class Spy(px.EmbeddingDistanceMiner):
        def score(self, pool, field):
            seen.append(self._neighbours.size)
            return super().score(pool, field)

    px.simulate(blobs(), "label", {"spy": Spy(5, np.zeros((3, 6)), k=3)}, batch=10, rounds=3, seeds=1,
                progress=False)
    assert seen == [20, 30, 40]


def test_unlabeled_rows_are_not_used_and_strings_are_labels():
    pool = blobs(n=600)
    names = np.array(["a", "b", "c", "d"], dtype=object)[pool["label"]]
    names[::3] = None
    report = px.simulate(pd.DataFrame({"embeddings": list(pool["embeddings"]), "label": names}), "label",
                         ["entropy"], batch=10, rounds=2, seeds=2, progress=False)
    assert report.setting["rows"] == 400 and report.setting["classes"] == 4


def test_any_classifier_with_predict_proba():
    from sklearn.naive_bayes import GaussianNB

    report = px.simulate(blobs(), "label", ["margin"], batch=10, rounds=2, seeds=2, model=GaussianNB(),
                         progress=False)
    assert report.setting["model"] == "GaussianNB"
    assert (report.rounds.accuracy > 0.25).all()


@pytest.fixture
def no_work(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("a simulation started before the input was checked")

    monkeypatch.setattr(simulation, "_Run", fail)


@pytest.mark.parametrize("pool, kw, message", [
    (blobs(), {"labels": "y"}, "no column 'y'"),
    ({"label": np.arange(10) % 2}, {"labels": "label"}, "no column 'embeddings'"),
    ({**blobs(n=100), "label": np.zeros(100)}, {"labels": "label"}, "1 class"),
    (blobs(n=100), {"labels": "label", "batch": 10, "rounds": 10}, r"fewer than start \+ rounds \* batch"),
    (blobs(), {"labels": "label", "strategies": ["no_such_miner"]}, "unknown strategy 'no_such_miner'"),
    (blobs(), {"labels": "label", "strategies": ["mc_dropout"]}, "reads mc_dropout"),
    (blobs(), {"labels": "label", "test_size": 1.5}, "test_size"),
], ids=["no label column", "no embeddings", "one class", "too few rows", "unknown", "mc_dropout", "test_size"])
def test_bad_input_is_a_clear_error_before_any_work(no_work, pool, kw, message):
    with pytest.raises(ValueError, match=message):
        px.simulate(pool, progress=False, **kw)


def test_wrong_kinds_are_type_errors(no_work):
    with pytest.raises(TypeError, match="strategy is a pickaxe miner"):
        px.simulate(blobs(), "label", [object()], progress=False)
    with pytest.raises(TypeError, match="predict_proba"):
        px.simulate(blobs(), "label", ["margin"], model=object(), progress=False)
    with pytest.raises(TypeError, match="batch"):
        px.simulate(blobs(), "label", ["margin"], batch=2.5, progress=False)


def test_report_files(tmp_path):
    pytest.importorskip("matplotlib")
    report = px.simulate(blobs(), "label", ["margin"], batch=10, rounds=2, seeds=2, progress=False)
    report.to_csv(tmp_path / "rounds.csv")
    report.to_csv(tmp_path / "table.csv", table=True)
    report.plot(tmp_path / "curves.png")
    assert len(pd.read_csv(tmp_path / "rounds.csv")) == len(report.rounds)
    assert list(pd.read_csv(tmp_path / "table.csv").columns) == list(TABLE_COLUMNS)
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_import_pickaxe_loads_none_of_it():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, pickaxe; pickaxe.simulate; "
         "print([m for m in ('sklearn', 'pandas', 'matplotlib') if m in sys.modules])"],
        capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_end_to_end(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pytest.importorskip("matplotlib")
    from click.testing import CliRunner

    from pickaxe.cli import main

    pool = blobs(n=500)
    label = pa.array([None if i % 5 == 0 else int(v) for i, v in enumerate(pool["label"])])
    emb = pa.FixedSizeListArray.from_arrays(pa.array(pool["embeddings"].ravel()), 6)
    path = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"embeddings": emb, "label": label}), path)
    out = tmp_path / "sim"
    args = ["simulate", str(path), "--labels", "label", "--strategy", "margin", "--strategy", "coreset",
            "--batch", "10", "--rounds", "2", "--seeds", "2", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "400 labeled rows" in result.stdout
    assert ("Recommended" in result.stdout) or ("No recommendation" in result.stdout)
    assert {p.name for p in out.iterdir()} == {"table.csv", "rounds.csv", "learning_curves.png"}
    table = pd.read_csv(out / "table.csv")
    assert sorted(table.strategy) == ["coreset", "margin", "random"]

    missing = CliRunner().invoke(main, [*args[:3], "nope", *args[4:]])
    assert missing.exit_code == 1 and "no column 'nope'" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    unknown = CliRunner().invoke(main, [*args[:5], "no_such", *args[6:]])
    assert unknown.exit_code == 2


@pytest.mark.parametrize("module", [simulation, pytest.importorskip("pickaxe.simulation_report")],
                         ids=lambda m: m.__name__)
def test_docstring_examples(module):
    import doctest

    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_combine_is_a_strategy_and_its_cover_gets_the_labeled_set():
    both = px.combine([px.MarginMiner(1), px.CoresetMiner(1)], 1, diversity="coreset")
    report = px.simulate(blobs(), "label", [both, px.combine([px.EntropyMiner(1), px.MarginMiner(1)], 1)],
                         batch=10, rounds=2, seeds=2, progress=False)
    assert sorted(report.table.strategy) == ["entropy+margin", "margin+coreset", "random"]
    built = simulation._Strategy("x", both).build(10, np.zeros((7, 6)), 0)
    assert built.size == 10 and built.cover is not None and built.cover.size == 7
