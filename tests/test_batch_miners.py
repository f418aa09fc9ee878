"""The batch-aware miners (TypiClust, BADGE, Cluster-Margin) against plain numpy float64
references of the same algorithms, their invariants, bad input and the command line.
(Every pool kind and Ray: tests/test_mining_pools.py and tests/test_ray.py; the kernels
themselves: tests/test_cluster.py.)"""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pickaxe as px
from pickaxe import _core, engine
from pickaxe.cli import main
from pickaxe.errors import InvalidInputError


def blobs(rng, centres, per, dim=2, spread=0.1):
    c = rng.normal(scale=10.0, size=(centres, dim))
    return np.concatenate([rng.normal(c[i], spread, size=(per, dim)) for i in range(centres)])


def softmax(z):
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


# -- TypiClust ---------------------------------------------------------------------------


def typiclust_reference(x, labels, n_pool, k, size):
    """TypiClust from k-means labels, in numpy float64: uncovered clusters largest first
    (ties: lower label), each its row of highest typicality (ties: lower row)."""
    pool_labels = labels[:n_pool]
    covered = set(labels[n_pool:].tolist())
    n_clusters = labels.max() + 1
    sizes = np.bincount(pool_labels, minlength=n_clusters)
    order = sorted((c for c in range(n_clusters) if sizes[c] and c not in covered), key=lambda c: (-sizes[c], c))
    picks, values = [], []
    for c in order[:size]:
        rows = np.flatnonzero(pool_labels == c)
        pts = x[rows].astype(np.float64)
        d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
        kk = min(k, len(rows) - 1)
        if kk == 0:
            typ = np.full(len(rows), np.inf)
        else:
            nearest = np.sort(d, axis=1)[:, 1 : kk + 1]  # without the row itself
            typ = 1.0 / nearest.mean(axis=1)
        best = int(np.lexsort((rows, -typ))[0])
        picks.append(int(rows[best]))
        values.append(typ[best])
    return np.array(picks), np.array(values)


@pytest.mark.parametrize("with_reference", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_typiclust_equals_numpy_reference(rng, with_reference, dtype):
    x = blobs(rng, 12, 40, dim=5).astype(dtype)
    ref = x[::97][:4] + dtype(0.01) if with_reference else None
    size, k = 6, 7
    sel = px.TypiClustMiner(size, reference=ref, k=k, seed=3).mine({"embeddings": x})
    both = x if ref is None else np.concatenate([x, ref])
    n_clusters = (0 if ref is None else len(ref)) + size
    labels = np.asarray(_core.kmeans(both, n_clusters, seed=3)[0], dtype=np.int64)
    picks, values = typiclust_reference(x, labels, len(x), k, size)
    np.testing.assert_array_equal(sel.ids, picks)
    np.testing.assert_allclose(sel.scores, values, rtol=1e-4 if dtype == np.float32 else 1e-9)
    assert sel.info["clusters"] == n_clusters


def test_typiclust_kmeans_runs_on_its_samples(rng):
    # past 4,096 rows TypiClust's k-means iterates on a sample and seeds from a smaller one
    # (batch.TYPICLUST_*): the picks are the reference's on those k-means labels
    from pickaxe.miners.batch import _typiclust_rows

    x = blobs(rng, 30, 200, dim=6).astype(np.float32)
    size, k = 12, 20
    fit, init = _typiclust_rows(len(x), size)
    assert (fit, init) == (4096, 1000)
    sel = px.TypiClustMiner(size, k=k, seed=2).mine({"embeddings": x})
    labels = np.asarray(_core.kmeans(x, size, seed=2, fit_rows=fit, init_rows=init)[0], dtype=np.int64)
    picks, values = typiclust_reference(x, labels, len(x), k, size)
    np.testing.assert_array_equal(sel.ids, picks)
    np.testing.assert_allclose(sel.scores, values, rtol=1e-4)


def test_typiclust_never_picks_a_covered_cluster_while_one_is_uncovered(rng):
    x = blobs(rng, 8, 30)
    labeled = x[[0, 30, 60]]  # one row of each of the first three blobs
    sel = px.TypiClustMiner(5, reference=labeled, clusters=8).mine({"embeddings": x})
    blob = sel.ids // 30
    assert len(set(blob.tolist())) == 5 and not set(blob.tolist()) & {0, 1, 2}


def test_typiclust_goes_round_the_covered_clusters_when_the_uncovered_run_out(rng):
    x = blobs(rng, 4, 30)
    sel = px.TypiClustMiner(6, reference=x[[0, 30]], clusters=4).mine({"embeddings": x})
    blob = (sel.ids // 30).tolist()
    assert sorted(blob[:2]) == [2, 3]  # the uncovered clusters first
    assert len(sel) == 6 and len(set(sel.ids.tolist())) == 6


def test_typiclust_is_deterministic_whatever_the_threads(rng, restore_threads):
    x = blobs(rng, 20, 50, dim=16).astype(np.float32)
    px.set_num_threads(1)
    one = px.TypiClustMiner(10, seed=5).mine({"embeddings": x})
    px.set_num_threads(2)
    two = px.TypiClustMiner(10, seed=5).mine({"embeddings": x})
    np.testing.assert_array_equal(one.ids, two.ids)
    np.testing.assert_array_equal(one.scores, two.scores)


# -- BADGE --------------------------------------------------------------------------------


def test_badge_picks_the_kernel_seeds_of_the_softmax(rng):
    logits = rng.normal(size=(300, 6))
    h = rng.normal(size=(300, 9))
    sel = px.BADGEMiner(12, seed=7).mine({"logits": logits, "embeddings": h})
    picks, d2 = _core.badge_seeds(softmax(logits), np.ascontiguousarray(h), 12, seed=7)
    np.testing.assert_array_equal(sel.ids, picks)
    np.testing.assert_allclose(sel.scores[1:], d2[1:], rtol=1e-12)
    # the first pick: the row of largest gradient norm, scored by its squared norm
    p = softmax(logits)
    a = p - np.eye(6)[p.argmax(axis=1)]
    g = np.einsum("nc,nd->ncd", a, h).reshape(300, -1)  # explicit gradient embeddings
    norms = (g**2).sum(axis=1)
    assert sel.ids[0] == np.argmax(norms)
    np.testing.assert_allclose(sel.scores[0], norms.max(), rtol=1e-12)
    # each later score is the squared distance to the nearest earlier pick, explicitly
    for i in range(1, 12):
        earlier = g[sel.ids[:i]]
        want = ((g[sel.ids[i]] - earlier) ** 2).sum(axis=1).min()
        np.testing.assert_allclose(sel.scores[i], want, rtol=1e-9)


def test_badge_reads_confidences_and_logits_alike(rng):
    logits = rng.normal(size=(200, 4))
    h = rng.normal(size=(200, 5))
    a = px.BADGEMiner(8, seed=1).mine({"logits": logits, "embeddings": h})
    b = px.BADGEMiner(8, seed=1).mine({"confidences": softmax(logits), "embeddings": h})
    np.testing.assert_array_equal(a.ids, b.ids)


def test_badge_picks_spread_over_the_clusters(rng):
    h = blobs(rng, 5, 60, dim=4)
    logits = np.tile([0.1, 0.0, -0.1], (300, 1))  # one gradient factor a: k-means++ on h itself
    sel = px.BADGEMiner(5, seed=0).mine({"logits": logits, "embeddings": h})
    assert len(set((sel.ids // 60).tolist())) == 5


# -- Cluster-Margin ---------------------------------------------------------------------------


def cluster_margin_reference(conf, clusters, size, candidates, seed):
    p1, p2 = np.sort(conf, axis=1)[:, ::-1][:, :2].T
    score = 1.0 - (p1 - p2)
    nominees = np.lexsort((np.arange(len(score)), -score))[: candidates * size]
    labels = clusters[nominees]
    u = engine.uniforms(nominees.astype(np.int64), seed)
    values, counts = np.unique(labels, return_counts=True)
    order = [values[i] for i in np.lexsort((np.arange(len(values)), counts))]
    queues = [list(nominees[labels == c][np.lexsort((np.flatnonzero(labels == c), u[labels == c]))]) for c in order]
    picks = []
    while len(picks) < min(size, len(nominees)):
        for q in queues:
            if q and len(picks) < size:
                picks.append(int(q.pop(0)))
    return np.array(picks), score[picks]


@pytest.mark.parametrize("seed", [0, 11])
def test_cluster_margin_equals_numpy_reference(rng, seed):
    conf = rng.dirichlet(np.ones(5), size=400)
    clusters = rng.integers(0, 7, size=400)
    sel = px.ClusterMarginMiner(20, "cluster", candidates=4, seed=seed).mine({"confidences": conf, "cluster": clusters})
    picks, values = cluster_margin_reference(conf, clusters, 20, 4, seed)
    np.testing.assert_array_equal(sel.ids, picks)
    np.testing.assert_allclose(sel.scores, values, rtol=1e-12)
    assert sel.info["candidates"] == 80


def test_cluster_margin_with_px_cluster_labels_stored_in_parquet(rng, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "BATCH_ROWS", 50)  # streamed in batches; labels fetched for the nominees
    emb = blobs(rng, 6, 50, dim=3).astype(np.float32)
    labels = px.cluster(emb, 6, seed=0)
    logits = rng.normal(size=(300, 4)).astype(np.float32)
    pool = {"logits": logits, "embeddings": emb, "cluster": labels}
    path = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.ravel()), 4),
                             "cluster": pa.array(labels)}), path, row_group_size=64)
    a = px.ClusterMarginMiner(12, "cluster", candidates=5).mine(pool)
    b = px.ClusterMarginMiner(12, "cluster", candidates=5).mine(str(path))
    np.testing.assert_array_equal(a.ids, b.ids)
    assert len(set(labels[a.ids].tolist())) == 6  # every cluster gives rows


# -- bad input -----------------------------------------------------------------------------


def test_bad_input_is_a_clear_error(rng):
    x = rng.normal(size=(30, 4))
    with pytest.raises(ValueError, match=r"BADGEMiner needs the penultimate layer's embeddings \(embeddings \(N, D\)\) next to logits"):
        px.BADGEMiner(3).mine({"logits": x})
    with pytest.raises(ValueError, match=r"TypiClustMiner\.mine\(\): size 31 is larger than the pool's 30 rows"):
        px.TypiClustMiner(31).mine({"embeddings": x})
    with pytest.raises(ValueError, match="size 40 is larger"):
        px.BADGEMiner(40).mine({"logits": x, "embeddings": x})
    bad = x.copy()
    bad[17, 2] = np.nan
    with pytest.raises(InvalidInputError) as e:
        px.TypiClustMiner(3).mine({"embeddings": bad})
    assert e.value.row == 17 and e.value.field == "embeddings"
    with pytest.raises(InvalidInputError) as e:
        px.BADGEMiner(3).mine({"logits": x, "embeddings": bad})
    assert e.value.row == 17
    with pytest.raises(ValueError, match="4 dimensions.*|dimension"):
        px.TypiClustMiner(3, reference=rng.normal(size=(5, 3))).mine({"embeddings": x})
    with pytest.raises(ValueError, match="the pool has no column 'cluster'"):
        px.ClusterMarginMiner(3, "cluster").mine({"logits": x})
    labels = np.arange(30, dtype=float)
    labels[np.argsort(-np.sort(softmax(x), axis=1)[:, -2])[0]] = np.nan
    with pytest.raises(InvalidInputError, match="no cluster label"):
        px.ClusterMarginMiner(3, "cluster").mine({"confidences": softmax(x), "cluster": labels})
    with pytest.raises(TypeError, match="clusters is the name"):
        px.ClusterMarginMiner(3, 5)
    with pytest.raises(ValueError, match="k must be"):
        px.TypiClustMiner(3, k=0)


# -- the command line ------------------------------------------------------------------------


def run(*args):
    from click.testing import CliRunner

    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.stdout, r.stderr


@pytest.mark.parametrize("miner,extra", [("typiclust", []), ("badge", ["--seed", 2]),
                                         ("cluster_margin", ["--clusters", "cluster", "--candidates", 3])])
def test_cli_mines_with_each_batch_miner(rng, tmp_path, miner, extra):
    n = 120
    emb = blobs(rng, 4, 30, dim=3).astype(np.float32)
    logits = rng.normal(size=(n, 3)).astype(np.float32)
    t = pa.table({
        "id": pa.array(np.arange(n) + 1000),
        "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.ravel()), 3),
        "embeddings": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 3),
        "cluster": pa.array(px.cluster(emb, 4)),
    })
    path = tmp_path / "pool.parquet"
    pq.write_table(t, path)
    code, out, err = run("mine", path, "--miner", miner, "--size", 4, *extra)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("id,score,miner") and len(lines) == 5
    assert all(line.split(",")[2] == miner for line in lines[1:])


def test_cli_cluster_margin_needs_its_clusters(tmp_path):
    path = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"logits": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(6, np.float32)), 3)}), path)
    code, _, err = run("mine", path, "--miner", "cluster_margin", "--size", 1)
    assert code == 2 and "--miner cluster_margin needs --clusters" in err
