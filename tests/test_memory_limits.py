"""Mining a Parquet pool under an address-space cap (``ulimit -v``) either completes with
the same picks or raises MemoryError: never a crash (a signal, glibc's exit 127 for
thread-local data it cannot allocate, an abort in pyarrow, DuckDB or Rust)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("duckdb")

if not sys.platform.startswith("linux"):
    pytest.skip("RLIMIT_AS caps are tested on Linux", allow_module_level=True)

CHILD = textwrap.dedent(
    """
    import resource, sys
    cap = int(sys.argv[1])
    if cap:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    query = sys.argv[3] or None
    try:
        import pickaxe as px
        sel = px.EntropyMiner(50, query=query).mine(sys.argv[2])
    except MemoryError as e:
        print("MEMORYERROR", str(e)[:200])
        sys.exit(0)
    print("OK", ",".join(map(str, sel.ids.tolist())))
    """
)

MiB = 1 << 20


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    n, c = 300_000, 32
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, c)).astype(np.float32)
    path = tmp_path_factory.mktemp("mem") / "pool.parquet"
    pq.write_table(
        pa.table({
            "id": pa.array(np.arange(n, dtype=np.int64) * 3),
            "logits": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), c),
            "split": pa.array(np.where(np.arange(n) % 2 == 0, "train", "unlabeled")),
        }),
        path,
        row_group_size=65536,
    )
    return str(path)


def run(cap, path, query, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    return subprocess.run(
        [sys.executable, str(script), str(cap), path, query or ""],
        capture_output=True, text=True, timeout=300, env=env,
    )


@pytest.mark.parametrize("query", [None, "split = 'unlabeled'"], ids=["plain", "query"])
def test_caps_complete_or_raise_memory_error(pool, tmp_path, query):
    free = run(0, pool, query, tmp_path)
    assert free.returncode == 0 and free.stdout.startswith("OK"), free.stderr[-2000:]
    picks = free.stdout.split()[1]
    outcomes = {}
    # from comfortably above what streaming needs to below what the interpreter needs
    for cap_mib in (3072, 2048, 1536, 1024, 768, 512, 384, 256):
        r = run(cap_mib * MiB, pool, query, tmp_path)
        tail = (r.stdout + r.stderr)[-1500:]
        assert r.returncode == 0, f"cap {cap_mib} MiB: exit status {r.returncode}\n{tail}"
        word = r.stdout.split()[0] if r.stdout.split() else ""
        assert word in ("OK", "MEMORYERROR"), f"cap {cap_mib} MiB:\n{tail}"
        if word == "OK":
            assert r.stdout.split()[1] == picks, f"cap {cap_mib} MiB: other picks"
        outcomes[cap_mib] = word
    # streaming needs far less than 3 GiB of address space, with or without a query
    assert outcomes[3072] == "OK" and outcomes[2048] == "OK", outcomes
    # and the lowest cap is too small to mine at all: the MemoryError path is exercised
    assert outcomes[256] == "MEMORYERROR", outcomes


def test_a_kernel_output_too_large_for_the_cap_is_a_memory_error(tmp_path):
    # the input is a broadcast view (no memory); its (N,) result cannot be allocated
    # under the cap: Rust's own allocation failure would abort the process
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(
        """
        import resource
        import numpy as np
        import pickaxe as px
        px.scores.entropy(logits=np.zeros((10, 3), np.float32))  # load everything first
        resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
        x = np.broadcast_to(np.array([[0.1, 0.2, 0.3]], np.float32), (400_000_000, 3))
        try:
            px.scores.entropy(logits=x)
        except MemoryError as e:
            print("MEMORYERROR", e)
        """
    ))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("MEMORYERROR"), r.stdout + r.stderr[-2000:]
