"""Benchmark the diversity miners against the numpy / scikit-learn code a user would write.

Run::

    python benches/bench_diversity.py [--quick] [--repeats R] [--markdown-out PATH] [--only TEXT]

Cases, each in this one process on the same arrays (float32, fixed seed), timed as the
median of R runs (default 3; the 100,000-row graph build once):

* **neighbours**: a clustered 100,000 x 384 reference, 10,000 pool rows, k = 10, cosine.
  numpy exact kNN (normalise, ``Q @ R.T`` in blocks of 1,000 query rows,
  ``np.argpartition`` then a sort of the k) against `ReferenceIndex` build, its query,
  and pickaxe's exact search; recall@10 of the index against numpy's exact answer.
* **embedding distance end to end**: `EmbeddingDistanceMiner(k=10)` from raw reference
  embeddings (it chooses exact search or a graph by the sizes) against numpy exact kNN
  followed by the mean distance and a top-k, at several (pool, reference) sizes; a new
  miner each run, so a graph's build is timed. Baselines slower than 10 s are timed once
  after an untimed run, and pickaxe then once too. Target: never slower than numpy.
* **novelty**: `NoveltyMiner(k=20)` against scikit-learn's ``LocalOutlierFactor(novelty=True)``
  fit + ``score_samples``, 50,000 x 64 reference, 20,000 pool rows, embeddings on an
  8-dimensional manifold with noise (like a model's embeddings); Spearman of the scores.
  Target: 5x faster end to end at Spearman >= 0.95.
* **coreset**: `CoresetMiner` against a plain numpy k-center greedy (``np.linalg.norm(x -
  x[c], axis=1)`` per pick, ``np.minimum``, ``np.argmax``). 100,000 x 128 pool, 200 picks.
  Target: 10x faster.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pickaxe as px  # noqa: E402
from bench_scores import CpuShare, machine_lines, median_time  # noqa: E402

SEED = 20241126
SLOW_S = 10.0  # numpy baselines slower than this are timed once (after an untimed run)


# -- data ---------------------------------------------------------------------------------


def clustered(rng, n, d, centers=100, spread=0.35):
    """Unit-scale clusters, like a trained model's embeddings of many classes."""
    c = np.random.default_rng(SEED).normal(size=(centers, d)).astype(np.float32)
    x = c[rng.integers(centers, size=n)]
    x += spread * rng.normal(size=(n, d)).astype(np.float32)
    return x


def manifold(rng, n, d=64, latent=8, centers=30):
    """Rows on an 8-dimensional manifold in d dimensions plus a little noise."""
    g = np.random.default_rng(SEED)
    rot = np.linalg.qr(g.normal(size=(d, d)))[0][:latent]
    c = g.normal(size=(centers, latent)) * 4
    z = c[rng.integers(centers, size=n)] + rng.normal(size=(n, latent)) * rng.uniform(0.5, 1.5, size=(n, 1))
    return (z @ rot + 0.05 * rng.normal(size=(n, d))).astype(np.float32)


# -- numpy / scikit-learn baselines ---------------------------------------------------------


def np_knn_cosine(q, ref, k, block=1000):
    """Exact cosine kNN as a numpy user writes it: normalise, matrix product by blocks,
    argpartition, sort the k."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    rn = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    ids = np.empty((len(q), k), dtype=np.int64)
    dist = np.empty((len(q), k), dtype=q.dtype)
    for s in range(0, len(q), block):
        d = 1 - qn[s : s + block] @ rn.T
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        dp = np.take_along_axis(d, part, axis=1)
        order = np.argsort(dp, axis=1)
        ids[s : s + block] = np.take_along_axis(part, order, axis=1)
        dist[s : s + block] = np.take_along_axis(dp, order, axis=1)
    return ids, dist


def np_embedding_distance(q, ref, k, size):
    _, d = np_knn_cosine(q, ref, k)
    s = d.mean(axis=1)
    top = np.argpartition(-s, size - 1)[:size]
    return top[np.argsort(-s[top], kind="stable")]


def np_kcenter(x, size):
    first = int(np.argmax(np.linalg.norm(x - x.mean(axis=0), axis=1)))
    min_d = np.linalg.norm(x - x[first], axis=1)
    picks = [first]
    for _ in range(size - 1):
        i = int(np.argmax(min_d))
        picks.append(i)
        min_d = np.minimum(min_d, np.linalg.norm(x - x[i], axis=1))
    return np.array(picks)


def recall(found, truth):
    hits = sum(len(set(f) & set(t)) for f, t in zip(found.tolist(), truth.tolist()))
    return hits / truth.size


# -- cases ----------------------------------------------------------------------------------


def bench_neighbours(rows, repeats, quick, log):
    rng = np.random.default_rng(SEED)
    m, n, d, k = (20_000, 2_000, 384, 10) if quick else (100_000, 10_000, 384, 10)
    ref = clustered(rng, m, d)
    q = clustered(rng, n, d)
    log(f"neighbours: reference {m} x {d}, {n} queries, k = {k}")
    truth, _ = np_knn_cosine(q, ref, k)
    t_np = median_time(lambda: np_knn_cosine(q, ref, k), repeats)
    from pickaxe._exact import exact_knn

    t_exact = median_time(lambda: exact_knn(q, ref, k, "cosine"), repeats)
    ids, _ = exact_knn(q, ref, k, "cosine")
    exact_recall = recall(ids, truth)
    t0 = time.perf_counter()
    index = px.ReferenceIndex(ref, metric="cosine")
    t_build = time.perf_counter() - t0
    t_query = median_time(lambda: index.query(q, k), repeats)
    ids, _ = index.query(q, k)
    rows.append(("numpy exact kNN (blocked matmul + argpartition)", t_np, "", "1.000"))
    rows.append(("pickaxe exact kNN (BLAS + Rust top-k)", t_exact, f"{t_np / t_exact:.1f}x", f"{exact_recall:.3f}"))
    rows.append((f"ReferenceIndex build (hnswlib, M={index.M}, ef_construction={index.ef_construction})", t_build, "", ""))
    rows.append((f"ReferenceIndex query (ef={index.ef_for(k)})", t_query, f"{t_np / t_query:.1f}x", f"{recall(ids, truth):.3f}"))
    return {"recall": recall(ids, truth)}


def bench_embedding_distance(rows, repeats, quick, log):
    sizes = [(1_000, 10_000), (10_000, 20_000), (50_000, 5_000)] if quick else [
        (1_000, 100_000),
        (10_000, 100_000),
        (100_000, 10_000),
        (50_000, 100_000),
    ]
    worst = np.inf
    for n, m in sizes:
        rng = np.random.default_rng(SEED + n + m)
        ref = clustered(rng, m, 384)
        q = clustered(rng, n, 384)
        size = 100
        log(f"embedding distance: pool {n}, reference {m}")
        t0 = time.perf_counter()
        np_embedding_distance(q, ref, 10, size)  # untimed first run; slow baselines run once more only
        first = time.perf_counter() - t0
        t_np = median_time(lambda: np_embedding_distance(q, ref, 10, size), 1 if first > SLOW_S else repeats)
        pool = {"embeddings": q}
        # a new miner each run: end to end, a graph's build included
        t_px = median_time(lambda: px.EmbeddingDistanceMiner(size, ref, k=10).mine(pool), 1 if first > SLOW_S else repeats)
        sel = px.EmbeddingDistanceMiner(size, ref, k=10).mine(pool)
        same = len(set(sel.ids.tolist()) & set(np_embedding_distance(q, ref, 10, size).tolist())) / size
        worst = min(worst, t_np / t_px)
        rows.append(
            (f"EmbeddingDistanceMiner pool {n:,} x ref {m:,} ({sel.info['search']}) vs numpy {t_np:.3g} s",
             t_px, f"{t_np / t_px:.1f}x", f"{same:.2f} same picks")
        )
    return {"embedding_worst": worst}


def bench_novelty(rows, repeats, quick, log):
    from scipy.stats import spearmanr
    from sklearn.neighbors import LocalOutlierFactor

    m, n, k = (10_000, 4_000, 20) if quick else (50_000, 20_000, 20)
    rng = np.random.default_rng(SEED)
    ref = manifold(rng, m)
    pool = manifold(rng, n)
    pool[: n // 20] += rng.normal(size=(n // 20, pool.shape[1])).astype(np.float32) * 0.5
    log(f"novelty: reference {m} x 64, pool {n}, k = {k}")

    def sklearn_lof():
        lof = LocalOutlierFactor(n_neighbors=k, novelty=True).fit(ref)
        return -lof.score_samples(pool)

    def pickaxe_lof():
        sel = px.NoveltyMiner(n, ref, k=k).mine({"embeddings": pool})
        out = np.empty(n)
        out[sel.ids] = sel.scores
        return out, sel.info["search"]

    t0 = time.perf_counter()
    lof = LocalOutlierFactor(n_neighbors=k, novelty=True).fit(ref)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    expect = -lof.score_samples(pool)
    t_score = time.perf_counter() - t0
    t_sk = median_time(sklearn_lof, max(1, repeats - 1))
    t_px = median_time(pickaxe_lof, repeats)
    got, method = pickaxe_lof()
    rho = spearmanr(got, expect).statistic
    rows.append((f"scikit-learn LOF novelty (fit {t_fit:.2f} s + score {t_score:.2f} s)", t_sk, "", "1.000"))
    rows.append((f"NoveltyMiner ({method})", t_px, f"{t_sk / t_px:.1f}x", f"Spearman {rho:.4f}"))
    return {"novelty_speedup": t_sk / t_px, "novelty_rho": rho}


def bench_coreset(rows, repeats, quick, log):
    n, d, size = (20_000, 128, 100) if quick else (100_000, 128, 200)
    rng = np.random.default_rng(SEED)
    x = clustered(rng, n, d, spread=1.0)
    log(f"coreset: pool {n} x {d}, {size} picks")
    t_np = median_time(lambda: np_kcenter(x, size), max(1, repeats - 1))
    miner = px.CoresetMiner(size)
    t_px = median_time(lambda: miner.mine({"embeddings": x}), repeats)
    same = np.array_equal(miner.mine({"embeddings": x}).ids, np_kcenter(x, size))
    rows.append(("numpy k-center greedy", t_np, "", ""))
    rows.append(("CoresetMiner (Rust k-center greedy)", t_px, f"{t_np / t_px:.1f}x", "same picks" if same else "DIFFERENT picks"))
    return {"coreset_speedup": t_np / t_px}


CASES = {
    "neighbours": bench_neighbours,
    "embedding": bench_embedding_distance,
    "novelty": bench_novelty,
    "coreset": bench_coreset,
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--markdown-out", help="also write the table to this file")
    ap.add_argument("--only", help="run the cases whose name contains TEXT")
    args = ap.parse_args(argv)

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    start = CpuShare.snapshot()
    rows: list[tuple] = []
    found: dict = {}
    for name, fn in CASES.items():
        if args.only and args.only not in name:
            continue
        found.update(fn(rows, args.repeats, args.quick, log))
    busy = CpuShare.since(start)
    lines = ["| case | seconds | speed-up | quality |", "|---|---:|---:|---|"]
    lines += [f"| {c} | {t:.3g} | {s} | {q} |" for c, t, s, q in rows]
    lines += [""] + machine_lines(busy)
    targets = []
    if "recall" in found:
        targets.append(f"- index recall@10 >= 0.98: {found['recall']:.3f} {'PASS' if found['recall'] >= 0.98 else 'FAIL'}")
    if "embedding_worst" in found:
        w = found["embedding_worst"]
        targets.append(f"- embedding distance never slower than numpy: worst {w:.2f}x {'PASS' if w >= 1 else 'FAIL'}")
    if "novelty_speedup" in found:
        s, r = found["novelty_speedup"], found["novelty_rho"]
        targets.append(f"- novelty >= 5x scikit-learn at Spearman >= 0.95: {s:.1f}x, {r:.4f} {'PASS' if s >= 5 and r >= 0.95 else 'FAIL'}")
    if "coreset_speedup" in found:
        s = found["coreset_speedup"]
        targets.append(f"- coreset >= 10x numpy: {s:.1f}x {'PASS' if s >= 10 else 'FAIL'}")
    lines += ["", "Targets:"] + targets
    text = "\n".join(lines)
    print(text)
    if args.markdown_out:
        with open(args.markdown_out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
