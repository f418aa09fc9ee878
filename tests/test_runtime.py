"""The package in the places production jobs run it: forked workers, a bounded thread pool,
a light import."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys

import numpy as np
import pytest

import pickaxe as px


def _entropy_in_child(x, queue):
    queue.put(px.scores.entropy(logits=x))


def test_fork_after_parallel_use_gives_correct_results():
    # Large enough that the parent ran the kernel on its thread pool before forking; the
    # child has no pool threads and must build its own rather than wait forever.
    x = np.random.default_rng(0).normal(size=(20_000, 100)).astype(np.float32)
    px.set_num_threads(2)
    want = px.scores.entropy(logits=x)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_entropy_in_child, args=(x, queue))
    child.start()
    try:
        got = queue.get(timeout=60)
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
            pytest.fail("the forked child deadlocked")
    assert child.exitcode == 0
    np.testing.assert_array_equal(got, want)


def test_environment_bounds_threads():
    code = "import pickaxe as px; print(px.build_info()['threads'])"
    env = {"PICKAXE_NUM_THREADS": "1", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_import_loads_no_heavy_dependencies():
    heavy = ["pandas", "polars", "duckdb", "hnswlib", "matplotlib", "ray", "pyarrow", "sklearn"]
    code = (
        "import sys, pickaxe; "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_set_num_threads_rejects_nonsense():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="set_num_threads"):
            px.set_num_threads(bad)
