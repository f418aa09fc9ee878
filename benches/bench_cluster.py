"""Benchmark the clustering kernels of pickaxe.clustering (issue #15 points 4 and 7).

Run::

    python benches/bench_cluster.py [--quick] [--only TEXT] [--skip-reference] [--threads N] [--repeats R]

Cases, each in this one process on the same arrays (float32 unless said, fixed seed);
time is wall time of one call, peak memory the largest resident-set growth above the
resident set before the call, sampled every 5 ms by a thread (numpy and Rust allocations
alike):

* **badge**: ``badge_seeds`` on 5,000 rows x 100 classes x 768 dimensions, batch 100,
  against scikit-activeml's ``Badge`` (which forms the 76,800-value gradient embeddings)
  through a classifier that returns the same probabilities and embeddings; then pickaxe
  alone at 20,000 rows (scikit-activeml needs ~25 GB there).
* **typiclust**: 50,000 x 128 (50 blobs), batch 100: ``TypiClustMiner(100).mine``, and
  its kernels (``kmeans`` into 100 clusters on TypiClust's samples, ``most_typical`` with
  k = 20), against
  scikit-activeml's ``TypiClust(k=20)`` on an unlabeled pool (scikit-learn's KMeans +
  NearestNeighbors), alternating in this process (``--repeats`` runs each), medians.
* **growth** (only with ``--only growth``): the three miners on in-memory pools of D = 256,
  C = 100 as N grows at batch 1,000 (``--growth-n``) and as the batch grows at N =
  ``--growth-base`` (``--growth-batch``); Cluster-Margin's time is ``px.cluster`` into
  ``batch`` clusters (once per pool) plus the mining.
* **scale**: 1,000,000 x 256 (C = 100, batch 1,000): ``badge_seeds``, ``kmeans`` into
  1,000 clusters (TypiClust's and Cluster-Margin's clustering) and ``most_typical`` in
  all 1,000, each with its time and peak memory against the embeddings' bytes.
  ``--quick`` runs 200,000 rows instead.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from typing import Any, Callable

import numpy as np


import pickaxe as px

from pickaxe import clustering as pc

SEED = 20260615
MIB = 1 << 20


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(call: Callable[[], Any]) -> tuple[Any, float, int]:
    """(result, seconds, peak resident growth in bytes) of one call."""
    before = rss()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    start = time.perf_counter()
    try:
        out = call()
    finally:
        elapsed = time.perf_counter() - start
        done.set()
        t.join()
    peak[0] = max(peak[0], rss())
    return out, elapsed, peak[0] - before


def machine() -> list[str]:
    from _machine import describe

    return [
        describe(),
        f"numpy {np.__version__}, Python {platform.python_version()}",
    ]


def report(name: str, seconds: float, peak: int, extra: str = "") -> None:
    print(f"| {name} | {seconds:.3g} s | {peak / MIB:.0f} MiB | {extra} |", flush=True)


# -- data -----------------------------------------------------------------------------------


def blobs(rng, n, d, centers, spread=0.5, dtype=np.float32):
    c = rng.normal(scale=3.0, size=(centers, d)).astype(dtype)
    out = np.empty((n, d), dtype=dtype)
    step = 100_000
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        out[lo:hi] = c[rng.integers(0, centers, hi - lo)]
        out[lo:hi] += rng.standard_normal((hi - lo, d), dtype=dtype) * dtype(spread)
    return out


def class_probabilities(rng, n, c, dtype=np.float32):
    out = np.empty((n, c), dtype=dtype)
    step = 100_000
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        z = rng.standard_normal((hi - lo, c)) * 3.0
        z = np.exp(z - z.max(axis=1, keepdims=True))
        out[lo:hi] = z / z.sum(axis=1, keepdims=True)
    return out


# -- scikit-activeml ------------------------------------------------------------------------


def skactiveml_badge(p: np.ndarray, h: np.ndarray, batch: int, seed: int) -> np.ndarray:
    from skactiveml.base import SkactivemlClassifier
    from skactiveml.pool import Badge

    class Fixed(SkactivemlClassifier):
        """Returns the given probabilities and embeddings of the rows X[:, 0] names."""

        def __init__(self, P=None, H=None, classes=None, missing_label=np.nan):
            super().__init__(classes=classes, missing_label=missing_label)
            self.P, self.H = P, H

        def fit(self, X, y, sample_weight=None):
            return self

        def predict_proba(self, X, return_embeddings=False):
            idx = np.asarray(X)[:, 0].astype(int)
            return (self.P[idx], self.H[idx]) if return_embeddings else self.P[idx]

    n, c = p.shape
    X = np.arange(n, dtype=float)[:, None]
    clf = Fixed(P=p, H=h, classes=np.arange(c))
    strategy = Badge(clf_embedding_flag_name="return_embeddings", random_state=seed)
    return strategy.query(X, np.full(n, np.nan), clf=clf, fit_clf=False, batch_size=batch)


def skactiveml_typiclust(z: np.ndarray, batch: int, seed: int) -> np.ndarray:
    from skactiveml.pool import TypiClust

    return TypiClust(random_state=seed, k=20).query(z, np.full(len(z), np.nan), batch_size=batch)


# -- cases ----------------------------------------------------------------------------------


def case_badge(args) -> None:
    rng = np.random.default_rng(SEED)
    n, c, d, batch = 5_000, 100, 768, 100
    p = class_probabilities(rng, n, c)
    h = rng.standard_normal((n, d), dtype=np.float32)
    print(f"\nBADGE, {n:,} x {c} classes x {d} dims, batch {batch}\n")
    print("| run | time | peak memory | notes |\n|---|---|---|---|")
    (picks, _), t_px, m_px = measure(lambda: pc.badge_seeds(h, batch, confidences=p, seed=0))
    report("pickaxe badge_seeds (float32)", t_px, m_px)
    _, t64, m64 = measure(lambda: pc.badge_seeds(h.astype(np.float64), batch, confidences=p.astype(np.float64), seed=0))
    report("pickaxe badge_seeds (float64, incl. the casts)", t64, m64)
    if not args.skip_reference:
        try:
            _, t_sk, m_sk = measure(lambda: skactiveml_badge(p, h, batch, 0))
            report(
                "scikit-activeml Badge",
                t_sk,
                m_sk,
                f"pickaxe {t_sk / t_px:.0f}x faster, {100 * m_px / max(m_sk, 1):.2f}% of its peak",
            )
        except ImportError as e:
            print(f"scikit-activeml not installed: {e}")
    n2 = 20_000
    p2 = class_probabilities(rng, n2, c)
    h2 = rng.standard_normal((n2, d), dtype=np.float32)
    _, t2, m2 = measure(lambda: pc.badge_seeds(h2, batch, confidences=p2, seed=0))
    report(f"pickaxe badge_seeds at {n2:,} rows", t2, m2, "scikit-activeml: ~25 GB, not run")


def case_typiclust(args) -> None:
    rng = np.random.default_rng(SEED + 1)
    n, d, batch = 50_000, 128, 100
    z = blobs(rng, n, d, 50)
    runs = args.repeats
    print(f"\nTypiClust, {n:,} x {d}, batch {batch} (no labeled rows: {batch} clusters)")
    print(f"pickaxe and scikit-activeml alternate in this process, {runs} runs each; medians\n")
    print("| run | median time | runs | CPU | peak memory | notes |\n|---|---|---|---|---|---|")

    from pickaxe.miners.batch import _typiclust_rows

    fit_rows, init_rows = _typiclust_rows(n, batch)

    def kernels() -> np.ndarray:
        labels = pc.kmeans(z, batch, seed=0, fit_rows=fit_rows, init_rows=init_rows).labels
        sizes = np.bincount(labels, minlength=batch)
        return pc.most_typical(z, labels, np.argsort(-sizes, kind="stable")[:batch], k=20)

    miner = px.TypiClustMiner(batch, seed=0)
    cases = {
        "pickaxe TypiClustMiner(100).mine": lambda: miner.mine({"embeddings": z}),
        "pickaxe kmeans + most_typical (kernels)": kernels,
        f"  of which kmeans (Lloyd on {fit_rows:,} rows, seeded from {init_rows:,})": lambda: pc.kmeans(
            z, batch, seed=0, fit_rows=fit_rows, init_rows=init_rows
        ),
    }
    if not args.skip_reference:
        try:
            import skactiveml  # noqa: F401

            cases["scikit-activeml TypiClust(k=20)"] = lambda: skactiveml_typiclust(z, batch, 0)
        except ImportError as e:
            print(f"scikit-activeml not installed: {e}")
    print(f"threads: pickaxe {px.build_info().get('threads')}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}; load average {os.getloadavg()[0]:.1f}")
    times: dict[str, list[float]] = {name: [] for name in cases}
    cpus: dict[str, list[float]] = {name: [] for name in cases}
    peaks: dict[str, int] = {name: 0 for name in cases}
    for _ in range(runs):
        for name, call in cases.items():
            cpu = time.process_time()
            _, t, m = measure(call)
            cpus[name].append(time.process_time() - cpu)
            times[name].append(t)
            peaks[name] = max(peaks[name], m)
    med = {name: float(np.median(v)) for name, v in times.items()}
    cmed = {name: float(np.median(v)) for name, v in cpus.items()}
    ref = med.get("scikit-activeml TypiClust(k=20)")
    cref = cmed.get("scikit-activeml TypiClust(k=20)")
    print(f"(CPU: the process's CPU time, all threads; ratios: of the medians; load average now {os.getloadavg()[0]:.1f})")
    for name in cases:
        note = (
            f"scikit-activeml / this: {ref / med[name]:.1f}x wall, {cref / cmed[name]:.1f}x CPU"
            if ref and not name.startswith("scikit")
            else ""
        )
        runs_s = ", ".join(f"{t:.2f}" for t in times[name])
        cpu_s = ", ".join(f"{t:.2f}" for t in cpus[name])
        print(
            f"| {name} | {med[name]:.3g} s | {runs_s} | CPU {cmed[name]:.3g} s: {cpu_s} | {peaks[name] / MIB:.0f} MiB | {note} |",
            flush=True,
        )


def case_growth(args) -> None:
    """Time and peak memory of the three miners as N and the batch grow (issue 15 point 7):
    D = 256, C = 100, float32; each miner on an in-memory pool, one run each."""
    d, c = 256, 100
    sizes = [int(v) for v in args.growth_n.split(",")]
    batches = [int(v) for v in args.growth_batch.split(",")]
    base = int(args.growth_base)
    plan = [(n, 1000) for n in sizes] + [(base, b) for b in batches if b != 1000 or base not in sizes]
    print(f"\nGrowth, D = {d}, C = {c}, float32 (one run each; CPU = the process's CPU time)\n")
    print("| miner | N | batch | time | CPU | peak memory | notes |\n|---|---|---|---|---|---|---|")
    for n, batch in plan:
        rng = np.random.default_rng(SEED + 3)
        h = blobs(rng, n, d, 300)
        p = class_probabilities(rng, n, c)
        pool = {"embeddings": h, "confidences": p}
        emb = f"embeddings {h.nbytes / MIB:.0f} MiB"
        for name in args.growth_miners.split(","):
            cpu = time.process_time()
            if name == "typiclust":
                sel, t, m = measure(lambda: px.TypiClustMiner(batch, seed=0).mine({"embeddings": h}))
                note = f"{sel.info['kmeans_iterations']} Lloyd iterations; {emb}"
            elif name == "badge":
                sel, t, m = measure(lambda: px.BADGEMiner(batch, seed=0).mine(pool))
                note = emb
            else:
                k = batch
                labels, t1, m1 = measure(lambda: pc.cluster(h, k, seed=0))
                pool["cluster"] = labels
                sel, t2, m2 = measure(lambda: px.ClusterMarginMiner(batch, "cluster").mine(pool))
                t, m = t1 + t2, max(m1, m2)
                note = f"px.cluster({k} clusters) {t1:.3g} s (once per pool) + mine {t2:.3g} s; {emb}"
                del pool["cluster"]
            cpu = time.process_time() - cpu
            load = os.getloadavg()[0]
            print(
                f"| {name} | {n:,} | {batch:,} | {t:.3g} s | {cpu:.3g} s | {m / MIB:.0f} MiB | {note}; load {load:.1f} |",
                flush=True,
            )
        del h, p, pool


def case_scale(args) -> None:
    n = 200_000 if args.quick else 1_000_000
    d, c, batch = 256, 100, 1_000
    rng = np.random.default_rng(SEED + 2)
    h = blobs(rng, n, d, 300)
    p = class_probabilities(rng, n, c)
    print(f"\nScale, {n:,} x {d} (embeddings {h.nbytes / MIB:.0f} MiB), C = {c}, batch {batch}\n")
    print("| run | time | peak memory | notes |\n|---|---|---|---|")
    _, t, m = measure(lambda: pc.badge_seeds(h, batch, confidences=p, seed=0))
    report("badge_seeds", t, m, f"{100 * m / h.nbytes:.0f}% of the embeddings' bytes")
    r, t, m = measure(lambda: pc.kmeans(h, batch, seed=0))
    report(
        f"kmeans k={batch} (auto: Lloyd on {min(n, 256 * batch):,} rows)",
        t,
        m,
        f"{r.iterations} iterations, converged={r.converged}; {100 * m / h.nbytes:.0f}% of the embeddings' bytes",
    )
    sizes = np.bincount(r.labels, minlength=batch)
    _, t, m = measure(lambda: pc.most_typical(h, r.labels, np.argsort(-sizes, kind="stable")[:batch], k=20))
    report(f"most_typical in {batch} clusters (k=20)", t, m, f"largest cluster {sizes.max():,} rows")


CASES = {"badge": case_badge, "typiclust": case_typiclust, "scale": case_scale, "growth": case_growth}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3, help="typiclust: runs of each, alternating")
    ap.add_argument("--growth-n", default="100000,300000,1000000", help="growth: N at batch 1,000")
    ap.add_argument("--growth-batch", default="100,1000,3000", help="growth: batches at N = --growth-base")
    ap.add_argument("--growth-base", default="300000")
    ap.add_argument("--growth-miners", default="typiclust,badge,cluster_margin")
    args = ap.parse_args()
    if args.threads:
        px.set_num_threads(args.threads)
    for line in machine():
        print(line)
    print(f"command: {' '.join(sys.argv)}")
    for name, case in CASES.items():
        if args.only in name and (name != "growth" or args.only == "growth"):
            case(args)


if __name__ == "__main__":
    main()
