"""pickaxe._exact: exact kNN and k-center greedy against plain float64 numpy."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import pickaxe as px
from pickaxe import _core, _exact
from pickaxe._exact import exact_knn, kcenter_greedy

METRICS = ["l2", "cosine", "ip"]
DTYPES = [np.float32, np.float64]


def brute_dist(q, r, metric):
    """Every pair's distance, directly, in float64."""
    q = np.asarray(q, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    if metric == "l2":
        return np.sqrt(((q[:, None, :] - r[None, :, :]) ** 2).sum(-1))
    dot = q @ r.T
    if metric == "ip":
        return 1.0 - dot
    nq = np.linalg.norm(q, axis=1)[:, None]
    nr = np.linalg.norm(r, axis=1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        d = 1.0 - dot / (nq * nr)
    return np.clip(np.where((nq == 0) | (nr == 0), 1.0, d), 0.0, 2.0)


def brute_knn(q, r, k, metric):
    d = brute_dist(q, r, metric)
    ids = np.argsort(d, axis=1, kind="stable")[:, :k]  # ties: lower id first
    return ids, np.take_along_axis(d, ids, 1)


def assert_knn(got, q, r, k, metric, dtype):
    ids, dist = got
    want_ids, want_d = brute_knn(q, r, k, metric)
    assert ids.dtype == np.int64 and ids.shape == want_ids.shape
    assert dist.dtype == dtype and dist.shape == want_ids.shape
    np.testing.assert_array_equal(ids, want_ids)
    tol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(dist, want_d, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric", METRICS)
def test_matches_brute_force(rng, metric, dtype):
    q = rng.standard_normal((40, 12)).astype(dtype)
    r = rng.standard_normal((300, 12)).astype(dtype)
    for k in (1, 5, 20):
        assert_knn(exact_knn(q, r, k, metric), q, r, k, metric, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric", METRICS)
def test_large_k_direct_search_matches_brute_force(rng, metric, dtype, monkeypatch):
    """k near the reference's size goes to the direct search of every pair; in query
    blocks (the progress loop) it gives what one call gives and what numpy gives."""
    import pickaxe._exact as ex

    q = rng.standard_normal((37, 9)).astype(dtype)
    r = rng.standard_normal((60, 9)).astype(dtype)
    r[7] = r[3]  # a tie, to the lower id
    for k in (30, 59, 60):
        assert k + max(ex._MIN_MARGIN, k // 4) >= ex.DIRECT_MIN_FRACTION * 60  # direct for any D
        whole = exact_knn(q, r, k, metric)
        assert_knn(whole, q, r, k, metric, dtype)
        monkeypatch.setattr(ex, "DIRECT_BLOCK_PAIRS", 60 * 4)  # blocks of 4 queries
        blocks = exact_knn(q, r, k, metric)
        monkeypatch.undo()
        np.testing.assert_array_equal(blocks[0], whole[0])
        np.testing.assert_array_equal(blocks[1], whole[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric", METRICS)
def test_knn_scores_on_both_paths(rng, metric, dtype, monkeypatch):
    """knn_scores: the k-th distance is exact_knn's last column bit for bit, on the Gram
    path (small k) and the direct path (k near m, selected in the kernel); the mean is
    their mean up to the order of its float64 sum; query blocks give what one call gives."""
    from pickaxe._exact import knn_scores

    q = rng.standard_normal((37, 40)).astype(dtype)
    r = rng.standard_normal((2000, 40)).astype(dtype)
    r[7] = r[3]  # a tie
    for k in (1, 3, 1500, 1999, 2000):
        assert _exact._direct(q, k + max(_exact._MIN_MARGIN, k // 4), 2000) == (k >= 1500)
        _, dist = exact_knn(q, r, k, metric)
        kth = knn_scores(q, r, k, metric, "kth")
        assert kth.dtype == dtype
        np.testing.assert_array_equal(kth, dist[:, -1])
        mean = knn_scores(q, r, k, metric, "mean")
        assert mean.dtype == dtype
        want = brute_knn(q, r, k, metric)[1].mean(axis=1)
        tol = 1e-12 if dtype == np.float64 else 1e-6
        np.testing.assert_allclose(mean, want, rtol=tol, atol=tol)
        monkeypatch.setattr(_exact, "DIRECT_BLOCK_PAIRS", 2000 * 4)  # blocks of 4 queries
        np.testing.assert_array_equal(knn_scores(q, r, k, metric, "mean"), mean)
        np.testing.assert_array_equal(knn_scores(q, r, k, metric, "kth"), kth)
        monkeypatch.undo()


def test_knn_scores_errors(rng):
    from pickaxe._exact import knn_scores

    q, r = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    with pytest.raises(ValueError, match="k = 6 but the reference has 5 rows"):
        knn_scores(q, r, 6, "l2")
    with pytest.raises(ValueError, match="aggregate"):
        knn_scores(q, r, 2, "l2", "median")
    bad = q.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="embeddings"):
        knn_scores(bad, r, 5, "l2")
    with pytest.raises(ValueError, match="k must be at least 1"):
        _core.knn_direct_scores(q, r, 0, "l2", "mean")
    with pytest.raises(ValueError, match="aggregate"):
        _core.knn_direct_scores(q, r, 2, "l2", "median")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric", METRICS)
def test_direct_search_is_pair_distances_at_every_simd_level(rng, metric, dtype):
    """knn_direct computes register blocks of queries x reference rows (a shape per SIMD
    level, with remainders) from rows prepared once per chunk, and sorts large k by a
    radix sort of the distance bits: at each level its distances are pair_distances' bits
    for the same pairs and its ids the (distance, id) order of every pair."""
    q = rng.standard_normal((37, 21)).astype(dtype)
    cases = []
    for m in (61, 1100):  # one chunk of prepared rows; several (1,024 rows at D = 21)
        r = rng.standard_normal((m, 21)).astype(dtype)
        r[9] = r[4]  # exact ties, to the lower id
        r[30] = 0.0  # a zero row (cosine: 1 from everything)
        cases.append((r, (3, m // 4 - 1, m // 4, m - 1, m)))  # selection below m/4, radix from it
    q[5] = cases[0][0][4]
    from reference import SUPPORTED_LEVELS as levels

    before = px.build_info()["simd"]
    try:
        for lv in levels:
            _core.set_simd_level(lv)
            for r, ks in cases:
                everything = np.tile(np.arange(len(r)), (len(q), 1))
                want_i, want_d = _core.pair_distances(q, r, everything, metric)
                for k in ks:
                    ids, d = _core.knn_direct(q, r, k, metric)
                    np.testing.assert_array_equal(ids, want_i[:, :k], err_msg=f"{lv} m={len(r)} k={k}")
                    assert d.dtype == dtype
                    np.testing.assert_array_equal(d.view(np.uint8), np.ascontiguousarray(want_d[:, :k]).view(np.uint8))
    finally:
        _core.set_simd_level(before)


@pytest.mark.parametrize("metric", METRICS)
def test_k_above_m_and_a_single_reference_row(rng, metric):
    q = rng.standard_normal((7, 4))
    r = rng.standard_normal((5, 4))
    ids, d = exact_knn(q, r, 9, metric)
    assert ids.shape == d.shape == (7, 5)
    assert_knn((ids, d), q, r, 5, metric, np.float64)
    ids, d = exact_knn(q, r[:1], 3, metric)
    assert ids.shape == (7, 1) and (ids == 0).all()
    np.testing.assert_allclose(d[:, 0], brute_dist(q, r[:1], metric)[:, 0], atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric", METRICS)
def test_duplicate_reference_rows_tie_to_the_lower_id(rng, metric, dtype):
    base = rng.standard_normal((30, 6)).astype(dtype)
    r = np.concatenate([base, base[::-1], base])  # every row three times, spread out
    q = rng.standard_normal((25, 6)).astype(dtype)
    for k in (1, 2, 4, 8):  # k cuts through groups of equal rows
        got = exact_knn(q, r, k, metric)
        assert_knn(got, q, r, k, metric, dtype)
        # Within a group of equal distances the ids ascend.
        ids, d = got
        same = d[:, 1:] == d[:, :-1]
        assert (ids[:, 1:][same] > ids[:, :-1][same]).all()


@pytest.mark.parametrize("metric", METRICS)
def test_layouts_read_in_place(rng, metric):
    q = rng.standard_normal((30, 9))
    r = rng.standard_normal((80, 9))
    want = exact_knn(q, r, 6, metric)
    for qq, rr in [
        (np.asfortranarray(q), np.asfortranarray(r)),
        (q[:, ::-1], r[:, ::-1]),  # reversing every vector keeps every distance
        (np.repeat(q, 2, axis=1)[:, ::2], np.repeat(r, 2, axis=1)[:, ::2]),
    ]:
        ids, d = exact_knn(qq, rr, 6, metric)
        np.testing.assert_array_equal(ids, want[0])
        np.testing.assert_allclose(d, want[1], rtol=1e-12, atol=1e-12)
    # Every other reference row: a strided view, checked against the brute force.
    assert_knn(exact_knn(q, r[::2], 6, metric), q, r[::2], 6, metric, np.float64)
    assert_knn(exact_knn(q[::-3], r, 6, metric), q[::-3], r, 6, metric, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric", METRICS)
def test_many_small_blocks_equal_one_block(rng, metric, dtype):
    q = rng.standard_normal((53, 5)).astype(dtype)
    r = rng.standard_normal((211, 5)).astype(dtype)
    one = exact_knn(q, r, 7, metric)
    for block_bytes in (1, 64, 1000, 10_000):
        many = exact_knn(q, r, 7, metric, block_bytes=block_bytes)
        np.testing.assert_array_equal(many[0], one[0])
        np.testing.assert_array_equal(many[1], one[1])
    assert_knn(one, q, r, 7, metric, dtype)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("metric", METRICS)
def test_threaded_gram_stage_equals_one_block(rng, metric, threads, restore_threads, monkeypatch):
    """Above THREADED_GRAM_MACS the Gram blocks run on pickaxe's threads with BLAS on one
    thread each: the same ids and bits as one block on the caller's thread."""
    from threadpoolctl import threadpool_info

    # D = 64 and k + margin = 17 of 1,000 rows: the Gram stage, not the direct search.
    q = rng.standard_normal((101, 64)).astype(np.float32)
    r = rng.standard_normal((1000, 64)).astype(np.float32)
    one = exact_knn(q, r, 9, metric)
    real = _core.knn_update
    blas_before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    monkeypatch.setattr(_exact, "THREADED_GRAM_MACS", 1)
    px.set_num_threads(threads)
    for block_bytes in (64 << 20, 4 * 1000 * 7, 5000):  # one block per thread, several, many
        calls = []
        monkeypatch.setattr(_exact._core, "knn_update", lambda *a: calls.append(1) or real(*a))
        many = exact_knn(q, r, 9, metric, block_bytes=block_bytes)
        monkeypatch.setattr(_exact._core, "knn_update", real)
        assert len(calls) > 1 or block_bytes == 64 << 20 and threads == 1  # the Gram stage ran
        np.testing.assert_array_equal(many[0], one[0])
        np.testing.assert_array_equal(many[1], one[1])
    # BLAS gets its thread count back.
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == blas_before


def test_threaded_gram_stage_errors_propagate(rng, restore_threads, monkeypatch):
    """An error in a worker's block reaches the caller, and BLAS's threads are restored."""
    from threadpoolctl import threadpool_info

    q = rng.standard_normal((64, 64))
    r = rng.standard_normal((1000, 64))
    blas_before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    monkeypatch.setattr(_exact, "THREADED_GRAM_MACS", 1)
    px.set_num_threads(2)
    calls = []

    def failing(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("block 3 failed")
        return real(*args)

    real = _core.knn_update
    monkeypatch.setattr(_exact._core, "knn_update", failing)
    with pytest.raises(RuntimeError, match="block 3 failed"):
        exact_knn(q, r, 3, "l2", block_bytes=8 * 8 * 1000)
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == blas_before


def _threaded_knn_in_child(q, r):
    _exact.THREADED_GRAM_MACS = 1
    px.set_num_threads(2)
    return exact_knn(q, r, 5, "l2")


def test_threaded_gram_stage_after_fork(rng, restore_threads, monkeypatch):
    """The Gram stage's worker threads are the process's own: a forked child (which has
    none of its parent's threads) makes its own instead of waiting on the parent's."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    q = rng.standard_normal((64, 64))
    r = rng.standard_normal((1000, 64))
    monkeypatch.setattr(_exact, "THREADED_GRAM_MACS", 1)
    px.set_num_threads(2)
    want = exact_knn(q, r, 5, "l2")  # the parent's pool exists now
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(_threaded_knn_in_child, (q, r)).get(timeout=120)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_blas_one_thread_nests_and_overlaps():
    """Nested and overlapping limits (other threads) leave BLAS at its own thread count
    once the last one is gone; the first limit holds while it lasts."""
    import threading

    from threadpoolctl import threadpool_info

    from pickaxe import _blas

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    with _blas.one_thread():
        with _blas.one_thread():
            assert all(t == 1 for t in blas_threads())
        assert all(t == 1 for t in blas_threads())
    assert blas_threads() == before

    entered, release = threading.Barrier(5), threading.Event()

    def user():
        with _blas.one_thread():
            entered.wait(10)
            release.wait(10)

    workers = [threading.Thread(target=user) for _ in range(4)]
    with _blas.one_thread():
        for w in workers:
            w.start()
        entered.wait(10)
        assert all(t == 1 for t in blas_threads())
    release.set()
    for w in workers:
        w.join(10)
    assert blas_threads() == before
    with _blas.one_thread():  # another thread's limit still takes hold afterwards
        assert all(t == 1 for t in blas_threads())
    assert blas_threads() == before


def test_dtypes_and_inputs():
    q = [[0, 0], [3, 4]]
    r = np.array([[0, 1], [3, 3]], dtype=np.int32)
    ids, d = exact_knn(q, r, 1, "l2")
    assert d.dtype == np.float64
    np.testing.assert_array_equal(ids, [[0], [1]])
    np.testing.assert_allclose(d, [[1.0], [1.0]])
    # float32 queries keep float32; the reference follows the queries' dtype.
    q32 = np.asarray(q, dtype=np.float32)
    assert exact_knn(q32, r.astype(np.float64), 1, "l2")[1].dtype == np.float32
    assert exact_knn(q32, r.astype(np.float32), 1, "l2")[1].dtype == np.float32
    assert exact_knn(q, r.astype(np.float32), 1, "l2")[1].dtype == np.float32
    assert exact_knn(q32.astype(np.float64), r.astype(np.float32), 1, "l2")[1].dtype == np.float64
    # No queries: (0, k).
    ids, d = exact_knn(np.empty((0, 2)), r, 5, "l2")
    assert ids.shape == d.shape == (0, 2)


def test_zero_vectors_under_cosine():
    q = np.array([[0.0, 0.0], [1.0, 0.0]])
    r = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    ids, d = exact_knn(q, r, 3, "cosine")
    np.testing.assert_array_equal(ids, [[0, 1, 2], [1, 0, 2]])
    np.testing.assert_array_equal(d, [[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])


def test_given_norms_either_sign(rng):
    q = rng.standard_normal((10, 4))
    r = rng.standard_normal((30, 4))
    want = exact_knn(q, r, 3, "cosine")
    qn = _core.score_rows("embeddings", "norm", q)  # -‖q‖
    rn = _core.score_rows("reference", "norm", r)
    assert (qn < 0).all()
    for a, b in [(qn, rn), (-qn, -rn)]:
        got = exact_knn(q, r, 3, "cosine", q_norms=a, r_norms=b)
        np.testing.assert_array_equal(got[0], want[0])
    with pytest.raises(ValueError, match=r"norms of reference must have shape \(30,\)"):
        exact_knn(q, r, 3, "cosine", r_norms=rn[:5])


def test_knn_errors(rng):
    q = rng.standard_normal((6, 3))
    r = rng.standard_normal((8, 3))
    bad = q.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="embeddings row 3: NaN at dimension 1"):
        exact_knn(bad, r, 2)
    bad = r.copy()
    bad[5, 2] = np.inf
    with pytest.raises(ValueError, match=r"reference row 5: \+inf at dimension 2"):
        exact_knn(q, bad, 2)
    with pytest.raises(ValueError, match=r"queries \(6, 3\) and reference \(8, 2\)"):
        exact_knn(q, r[:, :2], 2)
    for k in (0, -1):
        with pytest.raises(ValueError, match="k must be an int >= 1"):
            exact_knn(q, r, k)
    with pytest.raises(ValueError, match="reference is empty"):
        exact_knn(q, r[:0], 2)
    with pytest.raises(ValueError, match="metric must be one of"):
        exact_knn(q, r, 2, "euclidean")
    with pytest.raises(ValueError, match="2-D"):
        exact_knn(q[0], r, 2)
    with pytest.raises(TypeError, match="real numbers"):
        exact_knn(q.astype(complex), r, 2)
    with pytest.raises(ValueError, match="0 dimensions"):
        exact_knn(np.empty((2, 0)), np.empty((3, 0)), 1)


def test_core_knn_update_errors():
    g = np.zeros((2, 3))
    n2, n3 = np.ones(2), np.ones(3)

    def state(dtype=np.float64, k=4):
        return np.full((2, k), -1, np.int64), np.full((2, k), np.inf, dtype)

    ids, d = state()
    _core.knn_update(g, n2, n3, 10, "l2", ids, d)
    np.testing.assert_array_equal(ids, [[10, 11, 12, -1]] * 2)
    with pytest.raises(TypeError, match="dists must be a 2-D numpy array of float64"):
        _core.knn_update(g, n2, n3, 0, "l2", *state(np.float32))
    with pytest.raises(TypeError, match="q_norms must be a 1-D numpy array of float64"):
        _core.knn_update(g, n2.astype(np.float32), n3, 0, "l2", *state())
    with pytest.raises(TypeError, match="ids must be a 2-D numpy array of int64"):
        _core.knn_update(g, n2, n3, 0, "l2", state()[0].astype(np.int32), state()[1])
    with pytest.raises(TypeError, match="gram must be a 2-D numpy array"):
        _core.knn_update(g.astype(int), n2, n3, 0, "l2", *state())
    with pytest.raises(ValueError, match="r_norms has 2 entries"):
        _core.knn_update(g, n2, n2, 0, "l2", *state())
    with pytest.raises(ValueError, match="ids"):
        _core.knn_update(g, n2, n3, 0, "l2", state()[0], state(k=5)[1])
    with pytest.raises(ValueError, match="metric must be"):
        _core.knn_update(g, n2, n3, 0, "manhattan", *state())
    ids, d = state()
    ids.flags.writeable = False
    with pytest.raises(ValueError, match="ids: .*not writeable"):
        _core.knn_update(g, n2, n3, 0, "l2", ids, d)
    with pytest.raises(ValueError, match="overflows"):
        _core.knn_update(g, n2, n3, 2**63 - 2, "l2", *state())
    with pytest.raises(OverflowError):
        _core.knn_update(g, n2, n3, -1, "l2", *state())
    q, r = np.zeros((2, 3)), np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"ids\[1, 0\] = 4 is not a reference row"):
        _core.pair_distances(q, r, np.array([[0], [4]]), "l2")
    with pytest.raises(TypeError, match="reference must be a 2-D numpy array of float64"):
        _core.pair_distances(q, r.astype(np.float32), np.zeros((2, 1), np.int64), "l2")


# --- k-center greedy -------------------------------------------------------------------


def numpy_kcenter(x, size, initial=None, metric="l2"):
    """The plain algorithm in float64: argmax of the distance to the nearest center, then
    the distances to the new center, every pick."""
    x64 = np.asarray(x, dtype=np.float64)
    n = len(x64)

    def dist_to(c):
        return brute_dist(x64, c[None], metric)[:, 0]

    picks = []
    if initial is None:
        if n == 0 or size == 0:
            return np.array(picks, dtype=np.int64)
        mean = np.asarray(x).mean(axis=0, dtype=np.float64).astype(np.asarray(x).dtype)
        first = int(np.argmax(dist_to(mean.astype(np.float64))))
        md = dist_to(x64[first])
        md[first] = -np.inf
        picks.append(first)
    else:
        md = np.asarray(initial, dtype=np.float64).copy()
    while len(picks) < size and (md > -np.inf).any():
        p = int(np.argmax(md))  # the first of the largest
        picks.append(p)
        md = np.minimum(md, dist_to(x64[p]))
        md[picks] = -np.inf
    return np.array(picks, dtype=np.int64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_kcenter_matches_numpy(rng, metric, dtype):
    x = rng.standard_normal((400, 10)).astype(dtype)
    picks, d = kcenter_greedy(x, 25, metric=metric)
    np.testing.assert_array_equal(picks, numpy_kcenter(x, 25, metric=metric))
    assert picks.dtype == np.int64 and d.dtype == dtype and len(d) == 25
    assert d[0] == np.inf and (np.diff(d[1:]) <= 0).all()


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_kcenter_with_initial_distances(rng, metric):
    x = rng.standard_normal((300, 6))
    labeled = rng.standard_normal((20, 6))
    _, to_labeled = exact_knn(x, labeled, 1, metric)
    initial = to_labeled[:, 0]
    picks, d = kcenter_greedy(x, 30, initial=initial, metric=metric)
    np.testing.assert_array_equal(picks, numpy_kcenter(x, 30, initial, metric))
    assert d[0] == initial.max()
    # -inf marks a center already: never picked.
    initial = initial.copy()
    initial[picks[0]] = -np.inf
    again, _ = kcenter_greedy(x, 30, initial=initial, metric=metric)
    assert picks[0] not in again
    np.testing.assert_array_equal(again, numpy_kcenter(x, 30, initial, metric))


def test_kcenter_size_above_n_and_duplicates(rng):
    base = rng.standard_normal((5, 3))
    x = np.tile(base, (4, 1))  # every row four times
    for metric in ("l2", "cosine"):
        picks, d = kcenter_greedy(x, 100, metric=metric)
        assert sorted(picks) == list(range(20))  # every row once, none twice
        assert (d[5:] == 0).all()
        # Past the cover every distance is 0: the rest go in row order.
        np.testing.assert_array_equal(picks[5:], np.sort(picks[5:]))
        if metric == "l2":  # numpy's 1 - cos leaves ~1e-16 between equal rows
            np.testing.assert_array_equal(picks, numpy_kcenter(x, 100, metric=metric))
    picks, d = kcenter_greedy(x, 0)
    assert picks.shape == d.shape == (0,)
    picks, d = kcenter_greedy(np.empty((0, 3)), 4)
    assert picks.shape == (0,)


def test_kcenter_threads_agree(rng, restore_threads):
    x = rng.standard_normal((20_000, 16)).astype(np.float32)
    px.set_num_threads(1)
    one = kcenter_greedy(x, 30)
    px.set_num_threads(2)
    two = kcenter_greedy(x, 30)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    # The knn kernels too.
    q = x[:500]
    px.set_num_threads(1)
    a = exact_knn(q, x, 5, "l2")
    px.set_num_threads(2)
    b = exact_knn(q, x, 5, "l2")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_kcenter_layouts(rng):
    x = rng.standard_normal((200, 7))
    want = kcenter_greedy(x, 15)
    for xx in (np.asfortranarray(x), np.repeat(x, 2, axis=1)[:, ::2]):
        got = kcenter_greedy(xx, 15)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=1e-12)
    # A strided view of rows, against numpy on the same rows.
    np.testing.assert_array_equal(kcenter_greedy(x[::-2], 15)[0], numpy_kcenter(x[::-2], 15))


def test_kcenter_errors(rng):
    x = rng.standard_normal((10, 3))
    bad = x.copy()
    bad[4, 0] = np.nan
    with pytest.raises(ValueError, match="embeddings row 4: NaN at dimension 0"):
        kcenter_greedy(bad, 3)
    with pytest.raises(ValueError, match="metric must be one of 'l2', 'cosine'"):
        kcenter_greedy(x, 3, metric="ip")
    with pytest.raises(ValueError, match="size must be an int >= 0"):
        kcenter_greedy(x, -1)
    init = np.full(10, np.inf)
    init[2] = np.nan
    with pytest.raises(ValueError, match=r"initial\[2\] is nan"):
        kcenter_greedy(x, 3, initial=init)
    init[2] = -0.5
    with pytest.raises(ValueError, match=r"initial\[2\] is -0.5"):
        kcenter_greedy(x, 3, initial=init)
    with pytest.raises(ValueError, match=r"initial must have shape \(10,\)"):
        kcenter_greedy(x, 3, initial=np.ones(9))
    with pytest.raises(ValueError, match=r"min_dist\[1\]"):
        _core.kcenter_greedy(x, 3, np.array([0.0, np.nan] + [1.0] * 8), "l2")
    with pytest.raises(TypeError, match="min_dist must be a 1-D numpy array of float64"):
        _core.kcenter_greedy(x, 3, np.ones(10, np.float32), "l2")
    with pytest.raises(ValueError, match="min_dist has 9 entries"):
        _core.kcenter_greedy(x, 3, np.ones(9), "l2")
    with pytest.raises(ValueError, match="not \"ip\""):
        _core.kcenter_greedy(x, 3, np.ones(10), "ip")


def test_docstring_examples():
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = doctest.DocTestFinder().find(_exact, globs={"np": np})
    assert sum(len(t.examples) for t in tests) > 0
    for t in tests:
        runner.run(t)
    assert runner.summarize(verbose=False).failed == 0
