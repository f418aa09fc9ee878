"""ReferenceIndex: recall against exact search, persistence, edge cases and errors."""

import json
import zipfile

import numpy as np
import pytest

import pickaxe as px
from pickaxe import index as index_module

pytest.importorskip("hnswlib")


def clustered(rng, n, d, centers=40, spread=1.0, seed_centers=7):
    """Rows around `centers` cluster centres (the centres are fixed by seed_centers so
    reference and queries share them), like a trained model's embeddings."""
    c = np.random.default_rng(seed_centers).normal(size=(centers, d)) * 4
    return (c[rng.integers(centers, size=n)] + spread * rng.normal(size=(n, d))).astype(np.float32)


def brute_force(q, ref, k, metric):
    q = q.astype(np.float64)
    ref = ref.astype(np.float64)
    if metric == "l2":
        d = np.sqrt(np.maximum(((q[:, None, :] - ref[None]) ** 2).sum(-1), 0))
    elif metric == "cosine":
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-300)
        rn = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-300)
        d = 1 - qn @ rn.T
    else:
        d = 1 - q @ ref.T
    ids = np.argsort(d, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(d, ids, axis=1)


def recall(found, truth):
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)])


def many_clusters(rng, n, d=384, centers=100, spread=0.35):
    """benches/bench_diversity.py's data: unit-scale centres, tight clusters, high D,
    where hnswlib's recall is hardest to keep."""
    c = np.random.default_rng(20241126).normal(size=(centers, d)).astype(np.float32)
    return c[rng.integers(centers, size=n)] + spread * rng.normal(size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("metric, data", [("cosine", "many_clusters"), ("l2", "clustered")])
def test_recall_at_10_on_clustered_data(rng, metric, data):
    if data == "many_clusters":
        ref, q = many_clusters(rng, 20000), many_clusters(rng, 300)
    else:
        ref, q = clustered(rng, 20000, 64), clustered(rng, 300, 64)
    index = px.ReferenceIndex(ref, metric=metric)
    assert index.method == "hnsw"
    ids, dist = index.query(q, k=10)
    truth, truth_d = brute_force(q, ref, 10, metric)
    assert recall(ids, truth) >= 0.98
    # distances are the metric's, nearest first
    assert np.all(np.diff(dist, axis=1) >= -1e-6)
    np.testing.assert_allclose(dist[:, 0], truth_d[:, 0], rtol=1e-3, atol=1e-4)


def test_default_ef_grows_with_k():
    index = px.ReferenceIndex(np.eye(3), metric="l2")
    assert index.ef_for(10) >= 50  # hnswlib's default of 10 loses recall
    assert index.ef_for(100) >= 100
    fixed = px.ReferenceIndex(np.eye(3), metric="l2", ef=20)
    assert fixed.ef_for(5) == 20 and fixed.ef_for(50) == 50


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
@pytest.mark.parametrize("force_graph", [False, True])
def test_small_references_match_brute_force(rng, monkeypatch, metric, force_graph):
    if force_graph:
        monkeypatch.setattr(index_module, "EXACT_MAX_ROWS", 0)
    ref = rng.normal(size=(200, 16))
    q = rng.normal(size=(50, 16))
    index = px.ReferenceIndex(ref, metric=metric, threads=1)
    assert index.method == ("hnsw" if force_graph else "exact")
    ids, dist = index.query(q, k=5)
    truth, truth_d = brute_force(q, ref, 5, metric)
    assert ids.dtype == np.int64 and ids.shape == (50, 5)
    assert recall(ids, truth) >= 0.99
    np.testing.assert_allclose(np.sort(dist, axis=1), truth_d, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("force_graph", [False, True])
def test_k_larger_than_the_reference_and_one_row(rng, monkeypatch, force_graph):
    if force_graph:
        monkeypatch.setattr(index_module, "EXACT_MAX_ROWS", 0)
    ref = rng.normal(size=(7, 4))
    index = px.ReferenceIndex(ref, metric="l2")
    with pytest.raises(ValueError, match=r"k=50 is more than the 7 rows of the reference; use k <= 7"):
        index.query(rng.normal(size=(3, 4)), k=50)
    ids, dist = index.query(rng.normal(size=(3, 4)), k=7)
    assert ids.shape == dist.shape == (3, 7)
    assert sorted(ids[0].tolist()) == list(range(7))
    one = px.ReferenceIndex(ref[:1], metric="cosine")
    with pytest.raises(ValueError, match=r"k=10 is more than the 1 rows"):
        one.query(ref, k=10)
    ids, dist = one.query(ref, k=1)
    assert ids.shape == (7, 1) and np.all(ids == 0)
    assert dist[0, 0] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("force_graph", [False, True])
def test_duplicate_vectors(rng, monkeypatch, force_graph):
    if force_graph:
        monkeypatch.setattr(index_module, "EXACT_MAX_ROWS", 0)
    ref = np.repeat(rng.normal(size=(3, 8)), 100, axis=0)  # 300 rows, 3 distinct
    index = px.ReferenceIndex(ref, metric="l2", threads=1)
    ids, dist = index.query(ref[:5], k=150)
    assert ids.shape == (5, 150)
    assert np.all(dist[:, :100] <= 1e-5)  # the 100 copies come first
    assert np.all(dist[:, 100:] > 0.1)
    assert all(len(set(row)) == 150 for row in ids.tolist())


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_locality_order_gives_every_query_its_own_answer(rng, tmp_path, monkeypatch, metric):
    """Many queries go to hnswlib grouped by their nearest pivot (and in blocks): each
    row's answer is the one it gets searched in the caller's order, in float64 and
    strided input too, and on an index loaded from a file (no pivots yet)."""
    monkeypatch.setattr(index_module, "EXACT_MAX_ROWS", 0)
    monkeypatch.setattr(index_module, "LOCALITY_MIN_ROWS", 100)
    monkeypatch.setattr(index_module, "QUERY_BLOCK_ROWS", 64)
    ref = clustered(rng, 3000, 16)
    q = clustered(rng, 700, 16)
    index = px.ReferenceIndex(ref, metric=metric, threads=1)
    ordered = index.query(q, 10)
    assert index._locality_order(q).tolist() != list(range(700))  # the order does change
    monkeypatch.setattr(index_module, "LOCALITY_MIN_ROWS", 10**9)
    plain = index.query(q, 10)
    np.testing.assert_array_equal(ordered[0], plain[0])
    np.testing.assert_array_equal(ordered[1], plain[1])
    monkeypatch.setattr(index_module, "LOCALITY_MIN_ROWS", 100)
    wide = np.zeros((700, 32))
    wide[:, ::2] = q
    got = index.query(wide[:, ::2], 10)
    np.testing.assert_array_equal(got[0], plain[0])
    index.save(tmp_path / "i.pxi")
    loaded = px.ReferenceIndex.load(tmp_path / "i.pxi")
    np.testing.assert_array_equal(loaded.query(q, 10)[0], plain[0])


def test_single_threaded_build_is_reproducible(rng, tmp_path, monkeypatch):
    monkeypatch.setattr(index_module, "EXACT_MAX_ROWS", 0)
    ref = clustered(rng, 3000, 16)
    q = clustered(rng, 100, 16)
    a = px.ReferenceIndex(ref, metric="l2", threads=1, seed=3)
    b = px.ReferenceIndex(ref, metric="l2", threads=1, seed=3)
    np.testing.assert_array_equal(a.query(q, 10)[0], b.query(q, 10)[0])
    a.save(tmp_path / "a.pxi")
    b.save(tmp_path / "b.pxi")
    with zipfile.ZipFile(tmp_path / "a.pxi") as za, zipfile.ZipFile(tmp_path / "b.pxi") as zb:
        assert za.read("index.hnsw") == zb.read("index.hnsw")


@pytest.mark.parametrize("force_graph", [False, True])
def test_save_and_load_keep_metric_parameters_and_ef(rng, tmp_path, monkeypatch, force_graph):
    if force_graph:
        monkeypatch.setattr(index_module, "EXACT_MAX_ROWS", 0)
    ref = rng.normal(size=(500, 12)).astype(np.float32)
    q = rng.normal(size=(20, 12)).astype(np.float32)
    index = px.ReferenceIndex(ref, metric="ip", M=8, ef_construction=40, ef=33, seed=5)
    path = tmp_path / "ref.pxi"
    index.save(path)
    loaded = px.ReferenceIndex.load(path)
    assert (loaded.metric, loaded.M, loaded.ef_construction, loaded.ef, loaded.seed) == ("ip", 8, 40, 33, 5)
    assert (loaded.dim, len(loaded), loaded.method) == (12, 500, index.method)
    a_ids, a_d = index.query(q, 7)
    b_ids, b_d = loaded.query(q, 7)
    np.testing.assert_array_equal(a_ids, b_ids)
    np.testing.assert_allclose(a_d, b_d)


def test_load_rejects_truncated_corrupted_and_foreign_files(rng, tmp_path, monkeypatch):
    monkeypatch.setattr(index_module, "EXACT_MAX_ROWS", 0)
    path = tmp_path / "ref.pxi"
    px.ReferenceIndex(rng.normal(size=(300, 8)), metric="l2").save(path)
    data = path.read_bytes()

    truncated = tmp_path / "truncated.pxi"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated|corrupted"):
        px.ReferenceIndex.load(truncated)

    corrupted = tmp_path / "corrupted.pxi"
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF  # inside the graph: the zip CRC catches it
    corrupted.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="truncated|corrupted"):
        px.ReferenceIndex.load(corrupted)

    other = tmp_path / "other.pxi"
    other.write_text("not an index")
    with pytest.raises(ValueError, match="not a complete pickaxe ReferenceIndex"):
        px.ReferenceIndex.load(other)

    newer = tmp_path / "newer.pxi"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(newer, "w") as dst:
        meta = json.loads(src.read("meta.json"))
        meta["format_version"] = 99
        dst.writestr("meta.json", json.dumps(meta))
        dst.writestr("index.hnsw", src.read("index.hnsw"))
    with pytest.raises(ValueError, match="format version 99"):
        px.ReferenceIndex.load(newer)

    with pytest.raises(FileNotFoundError):
        px.ReferenceIndex.load(tmp_path / "missing.pxi")


def test_a_failed_save_leaves_no_file(rng, tmp_path):
    index = px.ReferenceIndex(rng.normal(size=(10, 3)))
    with pytest.raises(OSError):
        index.save(tmp_path / "no-such-dir" / "ref.pxi")
    assert list(tmp_path.iterdir()) == []


def test_errors_name_the_problem(rng):
    ref = rng.normal(size=(20, 4))
    with pytest.raises(ValueError, match="empty"):
        px.ReferenceIndex(np.empty((0, 4)))
    bad = ref.copy()
    bad[13, 2] = np.nan
    with pytest.raises(ValueError, match=r"reference row 13"):
        px.ReferenceIndex(bad)
    index = px.ReferenceIndex(ref)
    with pytest.raises(ValueError, match=r"5 dimensions.*reference has 4"):
        index.query(rng.normal(size=(2, 5)), 3)
    q = rng.normal(size=(3, 4))
    q[1, 0] = np.inf
    with pytest.raises(ValueError, match=r"row 1"):
        index.query(q, 3)
    for k in (0, -2):
        with pytest.raises(ValueError, match="k must be an int >= 1"):
            index.query(ref, k)
    with pytest.raises(TypeError, match="k must be an int"):
        index.query(ref, 2.5)
    with pytest.raises(ValueError, match="metric must be one of"):
        px.ReferenceIndex(ref, metric="manhattan")
    with pytest.raises(ValueError, match="must be 2-D"):
        px.ReferenceIndex(ref[0])
