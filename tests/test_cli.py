"""The pickaxe command: mine, fields, demo, --version; errors as one line, exit 1."""

import subprocess
import sys

import numpy as np
import pytest

import pickaxe as px

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
from click.testing import CliRunner  # noqa: E402

from pickaxe.cli import MINER_NAMES, main  # noqa: E402


@pytest.fixture
def pool_file(tmp_path):
    rng = np.random.default_rng(3)
    n = 300
    logits = rng.normal(size=(n, 4)).astype(np.float32)
    emb = rng.normal(size=(n, 6)).astype(np.float32)
    table = pa.table(
        {
            "id": pa.array([f"img-{i}" for i in range(n)]),
            "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.ravel()), 4),
            "embeddings": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 6),
            "split": pa.array(np.where(np.arange(n) % 3 == 0, "train", "unlabeled")),
        }
    )
    path = tmp_path / "pool.parquet"
    pq.write_table(table, path, row_group_size=50)
    return path, logits, emb


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_version():
    assert run("--version")[1].strip() == f"pickaxe, version {px.__version__}"
    out = subprocess.run([sys.executable, "-m", "pickaxe", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and px.__version__ in out.stdout


def test_fields_lists_every_miner_and_shape():
    code, out, _ = run("fields")
    assert code == 0
    for name in MINER_NAMES:
        assert name in out
    assert "query_by_committee (N, M, C)" in out and "embeddings (N, D)" in out


def test_help_of_every_command_has_an_example():
    for cmd in ([], ["mine"], ["fields"], ["demo"]):
        code, out, _ = run(*cmd, "--help")
        assert code == 0 and "Example" in out


def test_mine_to_stdout_matches_the_api(pool_file):
    path, logits, _ = pool_file
    code, out, _ = run("mine", path, "--miner", "entropy", "--size", 5)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0] == "id,score,miner,split"
    sel = px.EntropyMiner(5).mine(str(path))
    assert [ln.split(",")[0] for ln in lines[1:]] == sel.ids.tolist()


def test_mine_with_query_to_parquet_and_csv(pool_file, tmp_path):
    path, _, _ = pool_file
    out = tmp_path / "picks.parquet"
    code, _, err = run("mine", path, "--miner", "margin", "--size", 7, "--query", "split = 'unlabeled'", "--out", out)
    assert code == 0, err
    t = pq.read_table(out)
    assert t.num_rows == 7 and set(t.column("split").to_pylist()) == {"unlabeled"}
    assert set(t.column("miner").to_pylist()) == {"margin"}
    csv_out = tmp_path / "picks.csv"
    assert run("mine", path, "--miner", "margin", "--size", 7, "--out", csv_out)[0] == 0
    assert csv_out.read_text().splitlines()[0] == "id,score,miner,split"


@pytest.mark.parametrize("form", ["npy", "index", "parquet"])
def test_mine_with_a_reference(pool_file, tmp_path, form):
    path, _, emb = pool_file
    ref = np.random.default_rng(9).normal(size=(100, 6)).astype(np.float32)
    if form == "npy":
        ref_path = tmp_path / "ref.npy"
        np.save(ref_path, ref)
    elif form == "index":
        ref_path = tmp_path / "ref.pxi"
        px.ReferenceIndex(ref).save(ref_path)
    else:
        ref_path = tmp_path / "ref.parquet"
        pq.write_table(pa.table({"embeddings": pa.FixedSizeListArray.from_arrays(pa.array(ref.ravel()), 6)}), ref_path)
    code, out, err = run("mine", path, "--miner", "embedding_distance", "--size", 4, "--reference", ref_path, "--k", 3)
    assert code == 0, err
    sel = px.EmbeddingDistanceMiner(4, ref, k=3).mine(str(path))
    assert [ln.split(",")[0] for ln in out.strip().splitlines()[1:]] == sel.ids.tolist()


@pytest.mark.parametrize(
    "args, says",
    [
        (["--miner", "entropy", "--size", 3, "--query", "nope > 1"], "nope"),
        (["--miner", "committee", "--size", 3], "needs the field query_by_committee"),
        (["--miner", "coreset", "--size", 3, "--reference", "missing.npy"], "no such file"),
    ],
)
def test_errors_are_one_line_and_exit_1(pool_file, args, says):
    # bad arguments (exit 2) are in test_outputs.py
    path, _, _ = pool_file
    code, out, err = run("mine", path, *args)
    assert code == 1
    assert err.startswith("Error: ") and says in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out


def test_demo_writes_table_selection_and_plot(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo"
    code, stdout, err = run("demo", "--out", out)
    assert code == 0, err
    assert (out / "results.csv").read_text().startswith("labels,margin,margin_se,")
    assert (out / "rounds.csv").read_text().startswith("seed,strategy,round,labeled,accuracy")
    assert (out / "selection.csv").read_text().splitlines()[0].startswith("id,score,miner")
    assert (out / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "| labels |" in stdout and "mean ± standard error over 5 seeds" in stdout
