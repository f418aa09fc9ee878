"""pickaxe.clustering: k-means, BADGE seeding and typicality against plain float64 numpy
references of the same algorithms (same random numbers: SplitMix64 re-implemented here),
determinism across thread counts, float32 against float64, bad input, Ctrl-C."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pickaxe.errors import InvalidInputError

from pickaxe import clustering as pc

MASK = (1 << 64) - 1


class SplitMix64:
    """The kernels' random numbers (rust/pickaxe-core/src/kmeans.rs)."""

    def __init__(self, seed: int) -> None:
        self.s = seed

    def next(self) -> int:
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def uniform(self) -> float:
        return (self.next() >> 11) * 2.0**-53

    def below(self, n: int) -> int:
        return (self.next() * n) >> 64


# -- references ---------------------------------------------------------------------------


def sqdist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(n, k) squared distances from differences."""
    return ((x[:, None, :] - c[None, :, :]) ** 2).sum(axis=2)


def ref_kmeans(x, k, seed, max_iter=100, tol=1e-4):
    """k-means++ with 2 + ⌊ln k⌋ local trials, then Lloyd (scikit-learn's loop), float64."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    rng = SplitMix64(seed)
    trials = 2 + int(np.log(k))
    centers = np.empty((k, x.shape[1]))
    centers[0] = x[rng.below(n)]
    closest = sqdist(x, centers[:1])[:, 0]
    for c in range(1, k):
        pot = closest.sum()
        targets = [rng.uniform() * pot for _ in range(trials)]
        ids = np.minimum(np.searchsorted(np.cumsum(closest), targets, side="right"), n - 1)
        dist = np.minimum(closest[None, :], sqdist(x, x[ids]).T)
        best = int(np.argmin(dist.sum(axis=1)))
        closest = dist[best]
        centers[c] = x[ids[best]]
    tol_abs = tol * np.var(x, axis=0).mean()
    prev = np.full(n, -1)
    strict = False
    iterations = 0
    labels = mind = None
    for _ in range(max_iter):
        iterations += 1
        d = sqdist(x, centers)
        labels = d.argmin(axis=1)
        mind = d[np.arange(n), labels]
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(centers)
        np.add.at(sums, labels, x)
        far = iter(sorted(range(n), key=lambda i: (-mind[i], i)))
        for e in np.flatnonzero(counts == 0):
            i = next((i for i in far if counts[labels[i]] > 1), None)
            if i is None:
                break
            sums[labels[i]] -= x[i]
            counts[labels[i]] -= 1
            sums[e] = x[i]
            counts[e] = 1
        new = centers.copy()
        has = counts > 0
        new[has] = sums[has] / counts[has, None]
        shift = ((new - centers) ** 2).sum()
        centers = new
        if np.array_equal(labels, prev):
            strict = True
            break
        if shift <= tol_abs:
            break
        prev = labels.copy()
    if not strict:
        d = sqdist(x, centers)
        labels = d.argmin(axis=1)
        mind = d[np.arange(n), labels]
    return labels, centers, mind.sum(), iterations


def ref_badge(p, h, k, seed):
    """k-means++ seeding over explicit gradient embeddings g = (p − e_ŷ) ⊗ h."""
    p = np.asarray(p, dtype=np.float64)
    h = np.asarray(h, dtype=np.float64)
    n, c = p.shape
    a = p - np.eye(c)[p.argmax(axis=1)]
    g = np.einsum("nc,nd->ncd", a, h).reshape(n, -1)
    rng = SplitMix64(seed)
    nxt = int(np.argmax((g * g).sum(axis=1)))
    md = np.full(n, np.inf)
    picked = np.zeros(n, bool)
    picks, d2 = [], []
    nd = np.inf
    while True:
        picks.append(nxt)
        d2.append(nd)
        picked[nxt] = True
        if len(picks) == k:
            return np.array(picks), np.array(d2)
        md = np.minimum(md, ((g - g[nxt]) ** 2).sum(axis=1))
        md[picked] = 0.0
        total = md.sum()
        if total > 0:
            nxt = int(np.searchsorted(np.cumsum(md), rng.uniform() * total, side="right"))
        else:
            nxt = int(np.flatnonzero(~picked)[rng.below(n - len(picks))])
        nd = md[nxt]


def ref_typicality(x, labels, k):
    x = np.asarray(x, dtype=np.float64)
    out = np.full(len(x), np.nan)
    for c in np.unique(labels[labels >= 0]):
        rows = np.flatnonzero(labels == c)
        if len(rows) == 1:
            out[rows] = np.inf
            continue
        d = np.sqrt(sqdist(x[rows], x[rows]))
        np.fill_diagonal(d, np.inf)
        kk = min(k, len(rows) - 1)
        out[rows] = 1.0 / np.sort(d, axis=1)[:, :kk].mean(axis=1)
    return out


def blobs(n, d, centers, seed, spread=0.3):
    rng = np.random.default_rng(seed)
    c = rng.normal(scale=5.0, size=(centers, d))
    return c[rng.integers(0, centers, n)] + rng.normal(scale=spread, size=(n, d))


def probabilities(n, c, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=2.0, size=(n, c))
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


# -- k-means --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("k", [1, 3, 8])
def test_kmeans_matches_the_numpy_reference(seed, k):
    x = blobs(300, 4, 5, seed)
    want_labels, want_centers, want_inertia, want_iter = ref_kmeans(x, k, seed)
    got = pc.kmeans(x, k, seed=seed, method="full")
    np.testing.assert_array_equal(got.labels, want_labels)
    np.testing.assert_allclose(got.centers, want_centers, rtol=1e-12, atol=1e-12)
    assert got.inertia == pytest.approx(want_inertia, rel=1e-12)
    assert got.iterations == want_iter
    assert got.converged


def test_kmeans_max_iter_and_no_convergence():
    x = blobs(400, 3, 12, 2, spread=2.0)
    for it in (0, 1, 2):
        want = ref_kmeans(x, 6, 3, max_iter=it, tol=0.0)
        got = pc.kmeans(x, 6, seed=3, max_iter=it, tol=0.0, method="full")
        np.testing.assert_array_equal(got.labels, want[0])
        np.testing.assert_allclose(got.centers, want[1], rtol=1e-12, atol=1e-12)
        assert got.iterations == it
        assert not got.converged


def test_kmeans_is_the_same_whatever_the_threads_and_dtype():
    x = blobs(30_000, 16, 20, 4)
    for method in ("full", "auto"):
        one = pc.kmeans(x, 20, seed=5, method=method, fit_rows=6000 if method == "auto" else None, threads=1)
        two = pc.kmeans(x, 20, seed=5, method=method, fit_rows=6000 if method == "auto" else None, threads=2)
        np.testing.assert_array_equal(one.labels, two.labels)
        np.testing.assert_array_equal(one.centers, two.centers)
        assert one.inertia == two.inertia and one.iterations == two.iterations
        f32 = pc.kmeans(x.astype(np.float32), 20, seed=5, method=method, fit_rows=6000 if method == "auto" else None)
        assert f32.centers.dtype == np.float32
        assert (f32.labels == one.labels).mean() > 0.999
        assert f32.inertia == pytest.approx(one.inertia, rel=1e-3)


def test_sampled_kmeans_labels_every_row_by_its_nearest_centre():
    x = blobs(20_000, 8, 10, 6)
    r = pc.kmeans(x, 10, seed=2, fit_rows=1000, init_rows=200)
    d = sqdist(x, r.centers)
    np.testing.assert_array_equal(r.labels, d.argmin(axis=1))
    assert r.inertia == pytest.approx(d.min(axis=1).sum(), rel=1e-9)
    full = pc.kmeans(x, 10, seed=2, method="full")
    assert r.inertia <= 1.05 * full.inertia


def test_cluster_returns_the_labels_and_handles_duplicates():
    base = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    x = np.repeat(base, 7, axis=0)
    labels = pc.cluster(x, 3, seed=0)
    assert labels.dtype == np.int64 and labels.shape == (21,)
    assert len(set(labels.tolist())) == 3
    # More clusters than distinct rows: some stay empty, labels stay in range.
    r = pc.kmeans(x, 21, seed=0, method="full")
    assert r.inertia == 0.0 and labels.min() >= 0 and r.labels.max() < 21


# -- BADGE ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 3])
def test_badge_matches_explicit_gradient_embeddings(seed):
    p = probabilities(200, 5, seed)
    h = np.random.default_rng(seed + 10).normal(size=(200, 7))
    want_picks, want_d2 = ref_badge(p, h, 30, seed)
    picks, d2 = pc.badge_seeds(h, 30, confidences=p, seed=seed)
    np.testing.assert_array_equal(picks, want_picks)
    assert d2[0] == np.inf
    np.testing.assert_allclose(d2[1:], want_d2[1:], rtol=1e-9, atol=1e-12)


def test_badge_factorised_distances_equal_explicit_ones():
    # Each pick's D² is its squared distance to the nearest earlier pick in g-space.
    p = probabilities(80, 4, 1)
    h = np.random.default_rng(2).normal(size=(80, 6))
    a = p - np.eye(4)[p.argmax(axis=1)]
    g = np.einsum("nc,nd->ncd", a, h).reshape(80, -1)
    picks, d2 = pc.badge_seeds(h, 80, confidences=p, seed=4)
    assert sorted(picks.tolist()) == list(range(80))
    for i in range(1, 80):
        explicit = ((g[picks[:i]] - g[picks[i]]) ** 2).sum(axis=1).min()
        assert d2[i] == pytest.approx(explicit, rel=1e-9, abs=1e-12)


def test_badge_logits_threads_and_float32():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(20_000, 10))
    h = rng.normal(size=(20_000, 32))
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    one = pc.badge_seeds(h, 50, confidences=p, seed=9, threads=1)
    two = pc.badge_seeds(h, 50, confidences=p, seed=9, threads=2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    from_logits = pc.badge_seeds(h, 50, logits=z, seed=9)
    np.testing.assert_array_equal(from_logits[0], one[0])
    f32 = pc.badge_seeds(h.astype(np.float32), 50, confidences=p.astype(np.float32), seed=9)
    np.testing.assert_array_equal(f32[0], one[0])


def test_badge_all_duplicates_fall_back_to_uniform():
    p = np.tile([[0.7, 0.3]], (10, 1))
    h = np.ones((10, 3))
    picks, d2 = pc.badge_seeds(h, 10, confidences=p, seed=1)
    want, _ = ref_badge(p, h, 10, 1)
    np.testing.assert_array_equal(picks, want)
    assert (d2[1:] == 0).all()


# -- typicality -----------------------------------------------------------------------------


def test_typicality_matches_brute_force():
    x = blobs(600, 5, 4, 8)
    labels = np.random.default_rng(0).integers(-1, 6, 600)
    labels[17] = 99  # a cluster of one row
    for k in (1, 5, 20, 1000):
        want = ref_typicality(x, labels, k)
        for threads in (1, 2):
            got = pc.typicality(x, labels, k, threads=threads)
            np.testing.assert_allclose(got, want, rtol=1e-10)
    got = pc.typicality(x.astype(np.float32), labels, 20)
    np.testing.assert_allclose(got, ref_typicality(x.astype(np.float32), labels, 20), rtol=1e-5)
    part = pc.typicality(x, labels, 20, clusters=[2, 99])
    computed = ~np.isnan(part)
    np.testing.assert_array_equal(computed, np.isin(labels, [2, 99]))
    assert part[17] == np.inf


def test_most_typical_picks_each_clusters_best_row():
    x = blobs(500, 3, 5, 9)
    labels = pc.cluster(x, 5, seed=0)
    want = ref_typicality(x, labels, 20)
    rows = pc.most_typical(x, labels, [4, 0, 2, 77])
    for c, r in zip([4, 0, 2], rows[:3]):
        members = np.flatnonzero(labels == c)
        assert r == members[np.argmax(want[members])]
    assert rows[3] == -1


def test_most_typical_equals_the_typicality_argmax_bit_for_bit():
    # the kernel skips rows its bound proves beaten: the same rows, and the miner's scores
    # (the kernel's values) bit for bit those of `typicality`, in float32 and float64
    from pickaxe import _core

    for dtype, seed in [(np.float64, 1), (np.float32, 2)]:
        x = blobs(3000, 24, 6, seed).astype(dtype)
        labels = pc.kmeans(x, 12, seed=seed).labels
        for k in (1, 20):
            t = pc.typicality(x, labels, k)
            ids = np.array([3, 0, 11, 7, 40], dtype=np.int64)
            rows, values = _core.most_typical(np.ascontiguousarray(x), labels, k, ids)
            for c, r, v in zip(ids.tolist(), rows.tolist(), values.tolist()):
                members = np.flatnonzero(labels == c)
                if not len(members):
                    assert r == -1 and np.isnan(v)
                    continue
                best = members[np.lexsort((members, -t[members]))[0]]
                assert r == best and np.float64(v).tobytes() == np.float64(t[best]).tobytes()


# -- errors ---------------------------------------------------------------------------------


def test_bad_input_is_a_clear_error():
    x = blobs(50, 3, 2, 0)
    bad = x.copy()
    bad[13, 2] = np.nan
    for call in (
        lambda: pc.kmeans(bad, 2),
        lambda: pc.badge_seeds(bad, 2, confidences=probabilities(50, 3, 0)),
        lambda: pc.typicality(bad, np.zeros(50, int)),
    ):
        with pytest.raises(InvalidInputError) as e:
            call()
        assert e.value.field == "embeddings" and e.value.row == 13
    with pytest.raises(ValueError, match="larger than the number of rows"):
        pc.kmeans(x, 51)
    with pytest.raises(ValueError, match="larger than the pool"):
        pc.badge_seeds(x, 51, confidences=probabilities(50, 3, 0))
    with pytest.raises(ValueError, match="rows"):
        pc.badge_seeds(x, 2, confidences=probabilities(49, 3, 0))
    with pytest.raises(TypeError, match="exactly one"):
        pc.badge_seeds(x, 2)
    with pytest.raises(InvalidInputError) as e:
        p = probabilities(50, 3, 0)
        p[4] = [0.5, 0.6, -0.1]
        pc.badge_seeds(x, 2, confidences=p)
    assert e.value.row == 4
    with pytest.raises(InvalidInputError) as e:
        z = np.zeros((50, 3))
        z[6, 1] = np.nan
        pc.badge_seeds(x, 2, logits=z)
    assert e.value.field == "logits" and e.value.row == 6
    with pytest.raises(TypeError):
        pc.kmeans(x, 2.0)
    with pytest.raises(TypeError):
        pc.kmeans(x, 2, method=3)
    with pytest.raises(ValueError):
        pc.kmeans(x, 2, method="minibatch")
    with pytest.raises(ValueError):
        pc.kmeans(x, 2, threads=0)
    with pytest.raises(ValueError):
        pc.kmeans(x, 2, seed=-1)
    with pytest.raises(TypeError):
        pc.typicality(x, np.zeros(50))
    with pytest.raises(ValueError):
        pc.typicality(x, np.zeros(49, int))
    with pytest.raises(TypeError):
        pc.kmeans(np.array([["a", "b"]]), 1)
    # Strided input is copied once, not refused.
    xf = np.asfortranarray(x)
    np.testing.assert_array_equal(pc.cluster(xf, 2), pc.cluster(x, 2))


def test_ctrl_c_stops_kmeans():
    """A SIGINT during a long k-means reaches Python as KeyboardInterrupt within 2 s."""
    script = textwrap.dedent(
        """
        import os, signal, threading, time
        import numpy as np
        from pickaxe import clustering as pc
        x = np.random.default_rng(0).standard_normal((200_000, 64), dtype=np.float32)
        t = {}
        def fire():
            t["sent"] = time.perf_counter()
            os.kill(os.getpid(), signal.SIGINT)
        threading.Timer(1.0, fire).start()
        try:
            pc.kmeans(x, 3000, method="full", max_iter=1000, tol=0.0)
            print("FINISHED")
        except KeyboardInterrupt:
            print("LATENCY", time.perf_counter() - t["sent"])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    assert "LATENCY" in out.stdout, out.stdout + out.stderr
    assert float(out.stdout.split()[-1]) < 2.0
