"""pickaxe.torch.predict: a PyTorch model's logits, dropout passes, committee and layer
embeddings as a pool, in memory or streamed to Parquet. Models are tiny (CPU, milliseconds).
"""

from __future__ import annotations

import doctest
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch",
    reason="pickaxe.torch's tests need PyTorch (pip install 'pickaxe[torch]'); .ci/run installs it "
    "in its torch stage, the installed-wheel stage runs without it",
)

import pyarrow.parquet as pq  # noqa: E402

import pickaxe as px  # noqa: E402
import pickaxe.torch as pt  # noqa: E402
from pickaxe.torch import predict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
D_IN, HIDDEN, C = 6, 16, 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: torch's second thread only waits for the first (on a busy 2-core
    machine two threads ran them several times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mlp(seed=0, dropout=0.3, classes=C):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(D_IN, HIDDEN), torch.nn.BatchNorm1d(HIDDEN), torch.nn.ReLU(),
        torch.nn.Dropout(dropout), torch.nn.Linear(HIDDEN, classes),
    )
    net.train()  # a few training-mode batches: BatchNorm's running statistics are not 0 / 1
    with torch.no_grad():
        for _ in range(4):
            net(torch.randn(32, D_IN) * 2 + 1)
    return net


def inputs(n=50, seed=1):
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed))


def state(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def modes(net):
    return [m.training for m in net.modules()]


# --- correct passes -----------------------------------------------------------------------


def test_dropout_passes_differ_and_batchnorm_is_untouched():
    net = mlp()
    net[1].train(False)  # a mixed state, restored module by module
    before, was = state(net), modes(net)
    pool = predict(net, inputs().split(16), passes=8, dropout=True)
    mc = pool["mc_dropout"]
    assert mc.shape == (50, 8, C) and mc.dtype == np.float32
    np.testing.assert_allclose(mc.sum(axis=2), 1.0, atol=1e-6)
    # every pair of passes differs on some row
    for s in range(8):
        for t in range(s + 1, 8):
            assert not np.allclose(mc[:, s], mc[:, t])
    after = net.state_dict()
    for k, v in before.items():  # running mean, variance and num_batches_tracked included
        assert torch.equal(v, after[k]), k
    assert modes(net) == was


def test_without_dropout_every_pass_is_the_eval_output():
    net = mlp()
    x = inputs()
    pool = predict(net, x.split(16), passes=4, probabilities=False)
    net.eval()
    with torch.no_grad():
        expected = net(x).numpy()
    net.train()
    np.testing.assert_allclose(pool["logits"], expected, rtol=1e-6, atol=1e-6)
    for t in range(4):
        np.testing.assert_array_equal(pool["mc_dropout"][:, t], pool["logits"])
    probs = predict(net, x.split(16), passes=3)["mc_dropout"]
    np.testing.assert_allclose(probs[:, 2], torch.softmax(torch.from_numpy(expected), 1).numpy(), atol=1e-6)


def test_mutual_information_equals_a_plain_loop():
    net = mlp(dropout=0.4)
    x, T, seed = inputs(37), 6, 123
    torch.manual_seed(seed)
    pool = predict(net, x.split(10), passes=T, dropout=True)

    # the same passes by hand: per batch an eval pass (which draws nothing), then T passes
    # with the dropout module alone in training mode, from the same generator state
    torch.manual_seed(seed)
    net.eval()
    rows = []
    with torch.no_grad():
        for xb in x.split(10):
            net(xb)
            net[3].train()
            rows.append(torch.stack([torch.softmax(net(xb), 1) for _ in range(T)], 1))
            net[3].eval()
    net.train()
    by_hand = torch.cat(rows).numpy()
    np.testing.assert_allclose(pool["mc_dropout"], by_hand, rtol=1e-6, atol=1e-7)

    def H(p):
        return -sum(q * np.log(q) for q in p if q > 0)

    mi = []
    for row in by_hand.astype(np.float64):
        mean = [sum(row[t][c] for t in range(T)) / T for c in range(C)]
        mi.append(H(mean) - sum(H(row[t]) for t in range(T)) / T)
    np.testing.assert_allclose(px.scores.mutual_information(mc_dropout=pool["mc_dropout"]), mi, atol=1e-5)
    sel = px.MCDropoutMiner(5).mine(pool)
    assert sel.ids.tolist() == np.argsort(-np.asarray(mi), kind="stable")[:5].tolist()


def test_modes_and_hook_are_restored_when_the_model_fails():
    net = mlp()
    calls = []

    class Failing(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            calls.append(1)
            if len(calls) == 5:
                raise RuntimeError("boom")
            return self.net(x)

    model = Failing()
    was = modes(model)
    with pytest.raises(RuntimeError, match="boom"):
        predict(model, inputs().split(10), passes=3, dropout=True, layer="net.2")
    assert modes(model) == was and all(was)
    assert not any(m._forward_hooks for m in model.modules())


def test_binary_model_gives_two_class_probabilities():
    net, member = mlp(classes=1), mlp(1, classes=1)
    pool = predict(net, inputs().split(16), passes=3, dropout=True, committee=[member])
    assert pool["logits"].shape == (50, 1)
    assert pool["mc_dropout"].shape == (50, 3, 2) and pool["query_by_committee"].shape == (50, 1, 2)
    np.testing.assert_allclose(pool["mc_dropout"].sum(axis=2), 1.0, atol=1e-6)
    member.eval()
    with torch.no_grad():
        p = torch.sigmoid(member(inputs())).numpy()[:, 0]
    np.testing.assert_allclose(pool["query_by_committee"][:, 0], np.stack([1 - p, p], 1), atol=1e-6)
    torch.manual_seed(2)
    raw = predict(net, inputs().split(16), passes=3, dropout=True, probabilities=False)["mc_dropout"]
    torch.manual_seed(2)
    probs = predict(net, inputs().split(16), passes=3, dropout=True)["mc_dropout"]
    assert raw.shape == (50, 3, 1)
    np.testing.assert_allclose(px.scores.mutual_information(mc_dropout=raw, logits=True),
                               px.scores.mutual_information(mc_dropout=probs), atol=1e-5)


# --- committee, embeddings, ids ---------------------------------------------------------------


def test_committee_members_probabilities():
    members = [mlp(s) for s in (1, 2, 3)]
    x = inputs()
    pool = predict(mlp(), x.split(16), committee=members)
    assert pool["query_by_committee"].shape == (50, 3, C)
    for j, m in enumerate(members):
        m.eval()
        with torch.no_grad():
            np.testing.assert_allclose(pool["query_by_committee"][:, j], torch.softmax(m(x), 1).numpy(), atol=1e-6)
    logits = predict(mlp(), x.split(16), committee=members, probabilities=False)["query_by_committee"]
    np.testing.assert_allclose(px.scores.vote_entropy(query_by_committee=pool["query_by_committee"]),
                               px.scores.vote_entropy(query_by_committee=logits, logits=True))


def test_layer_embeddings_and_the_hook_is_removed():
    net = mlp()
    x = inputs()
    pool = predict(net, x.split(16), layer="2", passes=3, dropout=True, committee=[net])
    net.eval()
    with torch.no_grad():
        expected = net[:3](x).numpy()
    np.testing.assert_allclose(pool["embeddings"], expected, rtol=1e-6, atol=1e-6)
    assert not any(m._forward_hooks for m in net.modules())


def test_convolutional_maps_are_averaged_over_space():
    torch.manual_seed(0)
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(1, 5, 3, padding=1), torch.nn.ReLU(), torch.nn.Dropout2d(0.2),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(20, 3),
    )
    x = torch.randn(9, 1, 8, 8)
    pool = predict(conv, x.split(4), layer="1")
    conv.eval()
    with torch.no_grad():
        maps = conv[:2](x)
    assert pool["embeddings"].shape == (9, 5)
    np.testing.assert_allclose(pool["embeddings"], maps.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)


def test_a_3d_layer_output_needs_embeddings_of():
    class Tokens(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(20, 8)
            self.head = torch.nn.Linear(8, 3)

        def forward(self, input_ids):
            return self.head(self.embed(input_ids).mean(dim=1))

    model = Tokens()
    ids = torch.randint(0, 20, (10, 5), generator=torch.Generator().manual_seed(0))
    batches = [{"input_ids": b} for b in ids.split(4)]
    with pytest.raises(ValueError, match=r"layer 'embed' gave shape \(4, 5, 8\).*embeddings_of"):
        predict(model, batches, layer="embed")
    pool = predict(model, batches, layer="embed", embeddings_of=lambda h: h.mean(dim=1))
    with torch.no_grad():
        np.testing.assert_allclose(pool["embeddings"], model.embed(ids).mean(dim=1).numpy(), atol=1e-6)


def test_ids_from_a_batch_key_a_tuple_element_or_a_sequence():
    class Keyword(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(D_IN, 3)

        def forward(self, features):  # called with the batch's keys but the id
            return self.lin(features)

    x = inputs(20)
    names = np.array([f"row-{i}" for i in range(20)])
    by_key = predict(Keyword(), [{"features": xb, "path": list(nb)} for xb, nb in zip(x.split(8), np.split(names, [8, 16]))],
                     ids="path")
    assert by_key["id"].tolist() == names.tolist()
    numbers = torch.arange(100, 120)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(20), numbers), batch_size=6)
    by_index = predict(mlp(), loader, ids=2)
    assert by_index["id"].tolist() == list(range(100, 120))
    given = predict(mlp(), x.split(7), ids=names)
    assert given["id"].tolist() == names.tolist()
    assert predict(mlp(), x.split(7))["id"].tolist() == list(range(20))
    with pytest.raises(ValueError, match=r"ids holds 19 values but the data has more rows \(batch 2 ends at row 20\)"):
        predict(mlp(), x.split(7), ids=names[:19].tolist())
    with pytest.raises(ValueError, match="ids holds 21 values but the data gave 20 rows"):
        predict(mlp(), x.split(7), ids=np.arange(21))
    with pytest.raises(ValueError, match="batch 0 has no key 'name'"):
        predict(Keyword(), [{"features": x}], ids="name")
    with pytest.raises(TypeError, match="names a key of each batch"):
        predict(mlp(), x.split(7), ids="path")


def test_logits_of_reads_a_model_output_object():
    class Output:
        def __init__(self, logits):
            self.logits = logits

    class HF(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def forward(self, x):
            return Output(self.net(x))

    x = inputs()
    with pytest.raises(TypeError, match=r"returned Output.*logits_of=lambda out: out.logits"):
        predict(HF(), x.split(16))
    pool = predict(HF(), x.split(16), logits_of=lambda out: out.logits, passes=2, dropout=True)
    assert pool["logits"].shape == (50, C) and pool["mc_dropout"].shape == (50, 2, C)


# --- Parquet: bounded memory, same picks --------------------------------------------------------


def _miners(reference, examples):
    return [
        px.RandomMiner(9), px.LeastConfidenceMiner(9), px.MarginMiner(9), px.RatioMiner(9), px.EntropyMiner(9),
        px.CommitteeMiner(9), px.CommitteeMiner(9, measure="kl_disagreement"),
        px.MCDropoutMiner(9), px.MCDropoutMiner(9, measure="variance"),
        px.EmbeddingDistanceMiner(9, reference, k=3), px.NoveltyMiner(9, reference, k=5),
        px.ActivationMiner(9), px.ActivationMiner(9, field="embeddings"), px.CoresetMiner(9, reference=reference),
        px.SimilarityMiner(9, examples), px.TypiClustMiner(9), px.BADGEMiner(9),
        px.MarginMiner(9, query="id % 2 = 0"),
        px.combine([px.MarginMiner(1), px.MCDropoutMiner(1)], size=9),
    ]


@pytest.mark.parametrize("folder", [False, True], ids=["file", "folder"])
def test_written_pool_gives_the_same_picks_as_the_mapping(tmp_path, monkeypatch, folder):
    monkeypatch.setattr(pt, "ROW_GROUP_ROWS", 64)  # several row groups (and files) from 300 rows
    monkeypatch.setattr(pt, "FILE_ROWS", 128)
    net, members, x = mlp(), [mlp(5), mlp(6)], inputs(300)
    kw = dict(passes=5, dropout=True, committee=members, layer="2")
    torch.manual_seed(7)
    mapping = predict(net, x.split(25), **kw)
    out = tmp_path / ("pool" if folder else "pool.parquet")
    torch.manual_seed(7)
    assert predict(net, x.split(25), out=out, **kw) == str(out)

    if folder:
        parts = sorted(os.listdir(out))
        # row groups of 75 rows (3 batches of 25 reach 64); a new file once one holds 128
        assert parts == ["part-00000.parquet", "part-00001.parquet"]
        files = [out / p for p in parts]
        assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [150, 150]
    else:
        files = [out]
    groups = [g for f in files for g in range(pq.ParquetFile(f).num_row_groups)]
    assert len(groups) >= 4
    for f in files:
        schema = pq.read_schema(f)
        assert str(schema.field("logits").type) == "fixed_size_list<element: float>[4]"
        assert str(schema.field("mc_dropout").type) == \
            "fixed_size_list<element: fixed_size_list<element: float>[4]>[5]"
        assert b"pickaxe.predict" in schema.metadata
    table = pq.read_table(out)
    for k, v in mapping.items():
        np.testing.assert_array_equal(np.asarray(table.column(k).to_pylist(), dtype=v.dtype), v)

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(40, HIDDEN)).astype(np.float32)
    examples = mapping["embeddings"][:3]
    for m_mem, m_file in zip(_miners(reference, examples), _miners(reference, examples)):
        a, b = m_mem.mine(mapping), m_file.mine(str(out))
        assert a.ids.tolist() == b.ids.tolist(), type(m_mem).__name__
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)


def test_memory_is_bounded_by_a_row_group_with_out(tmp_path, monkeypatch):
    monkeypatch.setattr(pt, "ROW_GROUP_ROWS", 512)
    net = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Dropout(0.5), torch.nn.Linear(64, 10))

    def batches(n):  # made on the fly: the input is not held whole either
        g = torch.Generator().manual_seed(0)
        for _ in range(n // 256):
            yield torch.randn(256, 8, generator=g)

    def peak(n, out):
        tracemalloc.start()
        try:
            predict(net, batches(n), passes=8, dropout=True, layer="0", out=out, overwrite=True)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(512, tmp_path / "warm.parquet")  # the first call's imports and caches are not the pool's
    peak(512, None)
    small, large = peak(2048, tmp_path / "a.parquet"), peak(32768, tmp_path / "b.parquet")
    in_memory = peak(32768, None)
    row = 4 * (10 + 8 * 10 + 64) + 8
    assert in_memory > 32768 * row  # the whole pool
    assert large < 2 * small + 512 * row * 4, (small, large)  # 16x the rows, not 16x the memory


def test_out_is_refused_when_it_exists_and_replaced_whole_with_overwrite(tmp_path):
    calls = []

    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def forward(self, x):
            calls.append(1)
            if getattr(self, "fail", False) and len(calls) > 2:
                raise RuntimeError("disk on fire")
            return self.net(x)

    model = Counting()
    path = tmp_path / "pool.parquet"
    path.write_bytes(b"old")
    with pytest.raises(ValueError, match="exists; pass overwrite=True"):
        predict(model, inputs().split(16), out=path)
    assert not calls and path.read_bytes() == b"old"
    model.fail = True
    with pytest.raises(RuntimeError, match="disk on fire"):
        predict(model, inputs().split(16), out=path, overwrite=True)
    assert path.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["pool.parquet"]
    model.fail = False
    predict(model, inputs().split(16), out=path, overwrite=True)
    assert pq.read_table(path).num_rows == 50
    folder = tmp_path / "parts"
    folder.mkdir()  # an empty folder is used
    predict(model, inputs().split(16), out=folder)
    with pytest.raises(ValueError, match="exists"):
        predict(model, inputs().split(16), out=folder)
    predict(model, inputs(20).split(16), out=folder, overwrite=True)
    assert pq.read_table(folder).num_rows == 20
    assert sorted(os.listdir(tmp_path)) == ["parts", "pool.parquet"]


# --- bad input ---------------------------------------------------------------------------------


class NoCalls(torch.nn.Module):
    """Fails the test if run: the error must come before any work."""

    def __init__(self, dropout=True):
        super().__init__()
        self.lin = torch.nn.Linear(D_IN, C)
        self.drop = torch.nn.Dropout(0.2) if dropout else torch.nn.Identity()

    def forward(self, x):
        raise AssertionError("ran a batch before checking the arguments")


@pytest.mark.parametrize("kw, error, says", [
    (dict(passes=0), ValueError, "passes must be an int >= 1; got 0"),
    (dict(passes=2.0), TypeError, "passes must be an int"),
    (dict(dropout="yes"), TypeError, "dropout must be True or False"),
    (dict(layer="lni"), ValueError, r"layer 'lni' is not a module of NoCalls; nearest: 'lin'"),
    (dict(layer=3), TypeError, "layer must be a module's name"),
    (dict(committee=[]), ValueError, "committee is empty"),
    (dict(committee=["a"]), TypeError, r"committee\[0\] must be a torch.nn.Module"),
    (dict(logits_of="logits"), TypeError, "logits_of must be a function"),
    (dict(embeddings_of=lambda h: h), ValueError, "embeddings_of needs layer="),
    (dict(ids=np.zeros((3, 2))), ValueError, "ids must be 1-D"),
])
def test_bad_arguments_fail_before_any_batch(kw, error, says):
    with pytest.raises(error, match=says):
        predict(NoCalls(), inputs().split(16), **kw)


def test_dropout_without_dropout_modules_is_an_error():
    with pytest.raises(ValueError, match="no dropout module with p > 0.*would all be equal"):
        predict(NoCalls(dropout=False), inputs().split(16), passes=5, dropout=True)
    with pytest.raises(ValueError, match="no dropout module with p > 0"):
        predict(mlp(dropout=0.0), inputs().split(16), passes=5, dropout=True)


def test_data_must_be_batches():
    with pytest.raises(TypeError, match=r"got one Tensor.*x.split\(256\)"):
        predict(NoCalls(), inputs())
    with pytest.raises(ValueError, match="data gave no rows"):
        predict(mlp(), [])


def test_output_not_b_by_c_is_an_error_at_the_first_batch(tmp_path):
    class Flat(torch.nn.Module):
        def forward(self, x):
            return x.sum(dim=1)

    out = tmp_path / "pool.parquet"
    with pytest.raises(ValueError, match=r"model's output must be \(B, C\) logits; batch 0 gave shape \(16,\)"):
        predict(Flat(), inputs().split(16), out=out)
    assert not os.listdir(tmp_path)


def test_committee_members_with_other_class_counts(tmp_path):
    out = tmp_path / "pool.parquet"
    with pytest.raises(ValueError, match=r"committee\[1\] gave shape \(16, 5\).*model's 4 classes"):
        predict(mlp(), inputs().split(16), committee=[mlp(1), mlp(2, classes=5)], out=out)
    assert not os.listdir(tmp_path)


# --- packaging, progress, docs, the example ------------------------------------------------------


def test_import_pickaxe_never_imports_torch():
    code = ("import sys, numpy as np, pickaxe as px, pickaxe.torch\n"
            "px.MarginMiner(2).mine({'logits': np.eye(3)})\n"
            "assert px.torch.predict is pickaxe.torch.predict\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_progress_bar_on_a_terminal(monkeypatch, capsys):
    import pickaxe.pools.source as source

    monkeypatch.setattr(source, "_stderr_is_tty", lambda: True)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs(40)), batch_size=16)
    predict(mlp(), loader)
    err = capsys.readouterr().err
    assert "predict" in err and "40.0/40.0" in err and "rows/s" in err


def test_docstring_examples():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(pt, globs={"np": np, "px": px})
    assert sum(len(t.examples) for t in tests) > 0
    for t in tests:
        runner.run(t)
    assert runner.summarize(verbose=False).failed == 0


@pytest.mark.skipif(not (ROOT / "examples" / "torch_digits.py").exists(),
                    reason="the source tree's examples/ is not beside these tests (installed-wheel run)")
def test_the_digits_example_runs(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "torch_digits.py"), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "pool.parquet").exists() and (tmp_path / "tasks.json").exists()
    assert "MC dropout" in r.stdout and "embedding distance" in r.stdout
