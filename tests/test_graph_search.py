"""pickaxe's search of hnswlib's graph (pickaxe._graph, rust/pickaxe-core/src/hnsw.rs)
answers as hnswlib's own knn_query on the same graph: the same neighbours for the same ef
(up to float rounding, which may swap near ties), at every SIMD level and thread count, and
the graph it keeps is hnswlib's saved bytes, once."""

import io
import os

import numpy as np
import pytest

import pickaxe as px
from pickaxe import _core
from pickaxe import index as index_module
from pickaxe.index_file.graph import read_graph

hnswlib = pytest.importorskip("hnswlib")


def clustered(rng, n, d, centers=20):
    c = np.random.default_rng(3).normal(size=(centers, d))
    return (c[rng.integers(centers, size=n)] + 0.4 * rng.normal(size=(n, d))).astype(np.float32)


def build(ref, metric, M, threads=1):
    """hnswlib's graph, as ReferenceIndex builds it, and pickaxe's copy of its bytes."""
    h = hnswlib.Index(space=metric, dim=ref.shape[1])
    h.init_index(max_elements=len(ref), ef_construction=60, M=M, random_seed=4)
    h.add_items(ref, np.arange(len(ref)), num_threads=threads)
    return h


def graph_of(h, metric, tmp_path):
    path = os.path.join(tmp_path, f"{metric}.hnsw")
    h.save_index(path)
    meta = {"size": h.element_count, "dim": h.dim, "M": h.M, "ef_construction": 60, "metric": metric}
    with open(path, "rb") as f:
        return read_graph(f, os.path.getsize(path), meta), path


def agreement(a, b):
    """The share of (row, rank) positions with the same id."""
    return float((a == b).mean())


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
@pytest.mark.parametrize("M", [3, 12])
def test_same_neighbours_as_hnswlib_knn_query(rng, tmp_path, metric, M):
    # M = 3 puts a third of the elements on upper levels; threads=2 inserts out of order
    # (labels a permutation of the internal ids).
    ref = clustered(rng, 4000, 24)
    q = clustered(rng, 300, 24)
    h = build(ref, metric, M, threads=2)
    graph, _ = graph_of(h, metric, tmp_path)
    for ef, k in ((10, 10), (40, 5), (120, 30)):
        h.set_ef(ef)
        want_ids, want_d = h.knn_query(q, k=k, num_threads=1)
        ids, d = graph.search(q, k, ef, 1)
        assert agreement(ids, want_ids) >= 0.995, (metric, M, ef, k)
        np.testing.assert_allclose(d, want_d, rtol=1e-4, atol=1e-4)


def test_written_bytes_are_hnswlibs(rng, tmp_path):
    ref = clustered(rng, 3000, 8)
    h = build(ref, "l2", 4, threads=2)
    graph, path = graph_of(h, "l2", tmp_path)
    buf = io.BytesIO()
    graph.write(buf)
    with open(path, "rb") as f:
        assert buf.getvalue() == f.read()
    assert graph.nbytes == os.path.getsize(path)
    # Level 0 and the upper lists are views of one buffer: the graph is held once.
    assert graph.level0.base is not None and graph.level0.base is graph.upper.base
    want = h.get_items(np.arange(3000), return_type="numpy")
    np.testing.assert_array_equal(graph.vectors(), want)
    np.testing.assert_array_equal(graph.vectors(np.array([7, 3])), want[[7, 3]])


@pytest.mark.parametrize("level", ["portable", "avx2", "avx512"])
def test_every_simd_level_and_thread_count_find_the_same(rng, tmp_path, level):
    if level != "portable" and ["portable", "avx2", "avx512"].index(level) > [
        "portable", "avx2", "avx512"
    ].index(px.build_info()["simd_detected"]):
        pytest.skip(f"the CPU has no {level}")
    ref = clustered(rng, 3000, 40)
    q = clustered(rng, 500, 40)
    h = build(ref, "cosine", 8)
    graph, _ = graph_of(h, "cosine", tmp_path)
    h.set_ef(50)
    want, _ = h.knn_query(q, k=10, num_threads=1)
    before = px.build_info()["simd"]
    try:
        _core.set_simd_level(level)
        one = graph.search(q, 10, 50, 1)
        two = graph.search(q, 10, 50, 2)
    finally:
        _core.set_simd_level(before)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    assert agreement(one[0], want) >= 0.995


def test_reference_index_holds_no_hnswlib_index(rng, monkeypatch):
    monkeypatch.setattr(index_module, "EXACT_MAX_ROWS", 0)
    index = px.ReferenceIndex(clustered(rng, 2000, 16), metric="cosine", threads=1)
    assert not isinstance(index._hnsw, hnswlib.Index)
    assert index._hnsw.level0.shape[0] == 2000


def test_a_damaged_graph_is_an_error_not_a_crash(rng, tmp_path):
    h = build(clustered(rng, 2000, 8), "l2", 4)
    graph, _ = graph_of(h, "l2", tmp_path)
    q = clustered(rng, 20, 8)
    graph.level0 = graph.level0.copy()
    graph.level0[:, 1] = 2000  # every element's first link points past the end
    with pytest.raises(ValueError, match="link to element 2000"):
        graph.search(q, 5, 20, 1)
    with pytest.raises(ValueError, match="dimensions"):
        graph.search(np.zeros((2, 9), np.float32), 5, 20, 1)
