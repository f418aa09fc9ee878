"""Selections are written whole or not at all (a temporary file renamed over the target),
and `pickaxe mine --out` is checked before any mining."""

import contextlib
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest

import pickaxe as px

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
from click.testing import CliRunner  # noqa: E402

from pickaxe.cli import main  # noqa: E402


def selection(n=50, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 5))
    return px.EntropyMiner(n).mine({"id": np.arange(n) + 1000, "logits": logits, "note": np.array([f"r{i}" for i in range(n)])})


def leftovers(folder, keep):
    return sorted(set(os.listdir(folder)) - set(keep))


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_write_failure_keeps_the_old_file(tmp_path, monkeypatch, suffix):
    target = tmp_path / f"picks.{suffix}"
    old = selection(10, seed=1)
    old.write(target)
    before = target.read_bytes()
    new = selection(40, seed=2)
    # fail halfway through the write, as a full disk would
    if suffix == "parquet":
        import pyarrow.parquet as pqm

        real = pqm.write_table

        def failing(table, where, **kw):
            real(table.slice(0, 5), where, **kw)
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(pqm, "write_table", failing)
    else:
        import pickaxe.selection as selmod

        real_rows = selmod._write_csv

        def failing(writer, names, rows):
            writer.writerow(names)
            writer.writerow(next(iter(rows)))
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(selmod, "_write_csv", failing)
        assert real_rows is not failing
    with pytest.raises(OSError, match="No space"):
        new.write(target)
    assert target.read_bytes() == before
    assert leftovers(tmp_path, [target.name]) == []


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_new_file_after_failure_does_not_exist(tmp_path, monkeypatch, suffix):
    target = tmp_path / f"picks.{suffix}"
    import pickaxe._output as out

    monkeypatch.setattr(out.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError, match="I/O error"):
        selection().write(target)
    assert not target.exists()
    assert leftovers(tmp_path, []) == []


def test_written_file_has_the_usual_permissions(tmp_path):
    target = tmp_path / "picks.csv"
    old_umask = os.umask(0o022)
    try:
        selection().write(target)
    finally:
        os.umask(old_umask)
    assert (os.stat(target).st_mode & 0o777) == 0o644
    os.chmod(target, 0o600)
    selection(seed=3).write(target)  # replacing keeps the file's own permissions
    assert (os.stat(target).st_mode & 0o777) == 0o600


@contextlib.contextmanager
def small_tmpfs(path, size="64k"):
    path.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        done = None
    if done is None or done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True, timeout=30)


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_full_filesystem_keeps_the_old_file(tmp_path, suffix):
    with small_tmpfs(tmp_path / "disk") as disk:
        target = disk / f"picks.{suffix}"
        selection(3).write(target)
        before = target.read_bytes()
        big = px.Selection(
            np.arange(20000), np.random.default_rng(0).random(20000), "entropy",
            {"blob": np.array([uuid.UUID(int=i).hex * 4 for i in range(20000)])},
        )
        with pytest.raises(OSError):
            big.write(target)
        assert target.read_bytes() == before
        assert leftovers(disk, [target.name]) == []
        # and the CLI: exit 1, old file intact, nothing left behind
        pool = tmp_path / "pool.parquet"
        n = 20000
        logits = np.random.default_rng(1).normal(size=(n, 3)).astype(np.float32)
        pq.write_table(pa.table({
            "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.ravel()), 3),
            "blob": pa.array([uuid.UUID(int=i).hex * 4 for i in range(n)]),
        }), pool)
        r = CliRunner().invoke(main, ["mine", str(pool), "--miner", "entropy", "--size", str(n), "--out", str(target)])
        assert r.exit_code == 1 and "Error:" in r.stderr
        assert target.read_bytes() == before
        assert leftovers(disk, [target.name]) == []


@pytest.fixture
def pool_file(tmp_path):
    rng = np.random.default_rng(3)
    n = 60
    logits = rng.normal(size=(n, 4)).astype(np.float32)
    path = tmp_path / "pool.parquet"
    pq.write_table(pa.table({
        "id": pa.array(np.arange(n, dtype=np.int64) + 2**60),
        "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.ravel()), 4),
    }), path)
    return path


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.stdout, r.stderr


@pytest.mark.parametrize(
    "args, says",
    [
        (["--miner", "entropy", "--size", 3, "--out", "picks.txt"], "write .parquet or .csv"),
        (["--miner", "entropy", "--size", 3, "--out", "no/such/folder/picks.csv"], "does not exist"),
        (["--miner", "entropy", "--size", 3, "--out", "."], "write .parquet or .csv"),
        (["--miner", "entropy", "--size", 3, "--out", "sub.csv"], "is a folder"),
        (["--miner", "entropy", "--size", 3, "--k", 5], "--k does not apply to --miner entropy"),
        (["--miner", "coreset", "--size", 3, "--seed", 1], "--seed does not apply to --miner coreset"),
        (["--miner", "random", "--size", 3, "--nan-policy", "omit"], "--nan-policy does not apply to --miner random"),
        (["--miner", "margin", "--size", 3, "--logits"], "--logits does not apply"),
        (["--miner", "novelty", "--size", 3], "needs --reference"),
    ],
)
def test_bad_arguments_exit_2_before_any_work(pool_file, tmp_path, monkeypatch, args, says):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub.csv").mkdir()
    from pickaxe import engine

    def no_mining(*a, **k):
        raise AssertionError("mined before checking the arguments")

    monkeypatch.setattr(engine, "mine", no_mining)
    code, out, err = run("mine", pool_file, *args)
    assert code == 2, err
    assert err.startswith("Error: ") and says in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "picks.txt").exists()


def test_a_bad_row_names_its_id(tmp_path):
    n = 30
    logits = np.random.default_rng(0).normal(size=(n, 3))
    logits[17, 1] = np.nan
    path = tmp_path / "pool.parquet"
    pq.write_table(pa.table({
        "id": pa.array([f"img-{i}" for i in range(n)]),
        "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.ravel()), 3),
    }), path, row_group_size=8)
    code, out, err = run("mine", path, "--miner", "entropy", "--size", 3)
    assert code == 1
    assert "row 17 (id 'img-17')" in err and "NaN" in err
    assert "--nan-policy omit" in err  # the miner takes it: the error says so
    code, out, err = run("mine", path, "--miner", "entropy", "--size", 3, "--nan-policy", "omit")
    assert code == 0 and "img-17" not in out


def test_no_doubled_parentheses_in_messages():
    bad = [
        lambda: px.EmbeddingDistanceMiner(5, reference=np.zeros(3)),
        lambda: px.NoveltyMiner(5, reference=np.zeros((3, 2, 2))),
        lambda: px.CoresetMiner(5, reference=np.zeros(3)),
        lambda: px.EmbeddingDistanceMiner(5, reference=np.array([["a", "b"]])),
        lambda: px.ReferenceIndex(np.zeros(3)),
        lambda: px.ReferenceIndex(np.ones((10, 2))).query(np.ones(3)),
    ]
    for make in bad:
        with pytest.raises((ValueError, TypeError)) as e:
            make()
        assert "()(" not in str(e.value), str(e.value)


def test_cli_subprocess_exit_statuses(pool_file, tmp_path):
    def status(*args):
        return subprocess.run([sys.executable, "-m", "pickaxe", "mine", str(pool_file), *map(str, args)],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)

    assert status("--miner", "entropy", "--size", 2).returncode == 0
    assert status("--miner", "entropy", "--size", 2, "--k", 3).returncode == 2
    assert status("--miner", "nope", "--size", 2).returncode == 2
    assert status("--miner", "committee", "--size", 2).returncode == 1  # no such field in the pool
