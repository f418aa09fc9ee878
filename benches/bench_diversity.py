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
* **large k**: `EmbeddingDistanceMiner` on 500 pool rows against 5,000 reference rows
  (clustered, 384-D, cosine, exact search) at k = 10 and k = 4,999, interleaved, medians.
  Target: k = 4,999 within 3x the time of k = 10. k = 10 runs through numpy's BLAS (a
  Gram matrix), k = 4,999 through pickaxe's exact direct kernel, so the ratio depends on
  both: to see an AVX2 machine on an AVX-512 one, run both on AVX2,
  ``PICKAXE_SIMD=avx2 OPENBLAS_CORETYPE=Haswell python benches/bench_diversity.py --only
  large_k`` (the machine line names the BLAS kernels used).
* **novelty**: `NoveltyMiner(k=20)` (its default: an hnswlib graph) against scikit-learn's
  ``LocalOutlierFactor(novelty=True)`` fit + ``score_samples``, both single-threaded
  (``px.set_num_threads(1)``, ``threads=1``, threadpoolctl), timed interleaved, medians;
  50,000 x 64 reference, 20,000 pool rows whose first 5 % are planted outliers, on two
  8-dimensional manifolds with noise (like a model's embeddings): ``manifold`` (an
  orthonormal map of 30 clusters) and ``linear`` (a random linear map of 20 clusters).
  Spearman of the scores and AUROC of both at finding the planted rows. Target: 5x
  faster end to end at Spearman >= 0.99 and AUROC within 0.002 of scikit-learn's.
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
from bench_scores import CpuShare, machine_lines  # noqa: E402

SEED = 20241126
SLOW_S = 10.0  # numpy baselines slower than this are timed once (after an untimed run)


def median_time(fn, repeats):
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def interleaved(fns, repeats, cpu=None):
    """Median seconds of each function, run in turns (a, b, a, b, ...) so that a noisy
    machine slows both alike. With a list `cpu`, each function's CPU times (this
    process, all threads) are appended to it as a list."""
    times = [[] for _ in fns]
    cpus = [[] for _ in fns]
    for _ in range(max(1, repeats)):
        for t, c, fn in zip(times, cpus, fns):
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
            c.append(time.process_time() - c0)
    if cpu is not None:
        cpu.extend(cpus)
    return [float(np.median(t)) for t in times]


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


def linear(rng, n, d=64, latent=8, centers=20):
    """Rows of 8-D Gaussian clusters through a random (not orthonormal) linear map into d
    dimensions, plus a little noise."""
    g = np.random.default_rng(SEED + 1)
    a = g.normal(size=(latent, d)) / np.sqrt(latent)
    c = g.normal(size=(centers, latent)) * 3
    z = c[rng.integers(centers, size=n)] + rng.normal(size=(n, latent))
    return (z @ a + 0.05 * rng.normal(size=(n, d))).astype(np.float32)


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


def bench_large_k(rows, repeats, quick, log):
    rng = np.random.default_rng(SEED)
    m, n = 5_000, 500
    ref = clustered(rng, m, 384)
    pool = {"embeddings": clustered(rng, n, 384)}
    log(f"large k: pool {n}, reference {m} x 384, k = 10 and {m - 1}")
    cpu = []
    t10, tbig = interleaved(
        [lambda: px.EmbeddingDistanceMiner(100, ref, k=10).mine(pool),
         lambda: px.EmbeddingDistanceMiner(100, ref, k=m - 1).mine(pool)],
        repeats,
        cpu,
    )
    c10, cbig = (float(np.median(c)) for c in cpu)
    per_round = np.array(cpu[1]) / np.array(cpu[0])
    spread = f"CPU {c10:.3g} s"
    rows.append((f"EmbeddingDistanceMiner pool {n} x ref {m:,}, k = 10", t10, "", spread))
    rows.append(
        (f"EmbeddingDistanceMiner pool {n} x ref {m:,}, k = {m - 1:,}", tbig, f"{tbig / t10:.2f}x k = 10",
         f"CPU {cbig:.3g} s, {cbig / c10:.2f}x k = 10 (rounds {per_round.min():.2f}-{per_round.max():.2f}x)")
    )
    return {"large_k_ratio": tbig / t10, "large_k_cpu_ratio": cbig / c10}


def novelty_data(kind, quick):
    m, n = (10_000, 4_000) if quick else (50_000, 20_000)
    rng = np.random.default_rng(SEED)
    make, shift = (manifold, 0.5) if kind == "manifold" else (linear, 1.0)
    ref, pool = make(rng, m), make(rng, n)
    pool[: n // 20] += rng.normal(size=(n // 20, pool.shape[1])).astype(np.float32) * shift
    planted = np.zeros(n, dtype=bool)
    planted[: n // 20] = True
    return ref, pool, planted


def bench_novelty(rows, repeats, quick, log):
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score
    from sklearn.neighbors import LocalOutlierFactor
    from threadpoolctl import threadpool_limits

    k = 20
    worst = {"novelty_speedup": np.inf, "novelty_rho": np.inf, "novelty_auroc_gap": -np.inf}
    for kind in ("manifold", "linear"):
        ref, pool, planted = novelty_data(kind, quick)
        m, n = len(ref), len(pool)
        log(f"novelty ({kind}): reference {m} x 64, pool {n}, k = {k}, one thread each")
        out = {}

        def sklearn_lof():
            out["sk"] = -LocalOutlierFactor(n_neighbors=k, novelty=True).fit(ref).score_samples(pool)

        def pickaxe_lof():
            sel = px.NoveltyMiner(n, ref, k=k, threads=1).mine({"embeddings": pool})
            got = np.empty(n)
            got[sel.ids] = sel.scores
            out["px"], out["search"] = got, sel.info["search"]

        threads = px.build_info()["threads"]
        px.set_num_threads(1)
        try:
            with threadpool_limits(1):
                t_sk, t_px = interleaved([sklearn_lof, pickaxe_lof], max(1, repeats))
        finally:
            px.set_num_threads(threads)
        rho = spearmanr(out["px"], out["sk"]).statistic
        auc_sk, auc_px = roc_auc_score(planted, out["sk"]), roc_auc_score(planted, out["px"])
        rows.append((f"scikit-learn LOF novelty, {kind} {m:,} x 64 (1 thread)", t_sk, "", f"AUROC {auc_sk:.4f}"))
        rows.append(
            (f"NoveltyMiner ({out['search']}), {kind} (1 thread)", t_px, f"{t_sk / t_px:.1f}x",
             f"Spearman {rho:.4f}, AUROC {auc_px:.4f}")
        )
        worst["novelty_speedup"] = min(worst["novelty_speedup"], t_sk / t_px)
        worst["novelty_rho"] = min(worst["novelty_rho"], rho)
        worst["novelty_auroc_gap"] = max(worst["novelty_auroc_gap"], auc_sk - auc_px)
    return worst


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
    "large_k": bench_large_k,
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
    if "large_k_ratio" in found:
        r = found["large_k_ratio"]
        c = found["large_k_cpu_ratio"]
        targets.append(f"- k = 4,999 within 3x of k = 10: {r:.2f}x wall, {c:.2f}x CPU {'PASS' if r <= 3 else 'FAIL'}")
    if "novelty_speedup" in found:
        s, r, g = found["novelty_speedup"], found["novelty_rho"], found["novelty_auroc_gap"]
        ok = s >= 5 and r >= 0.99 and g <= 0.002
        targets.append(
            f"- novelty >= 5x scikit-learn (1 thread each) at Spearman >= 0.99, AUROC within 0.002: "
            f"worst {s:.1f}x, {r:.4f}, AUROC {g:+.4f} below {'PASS' if ok else 'FAIL'}"
        )
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
