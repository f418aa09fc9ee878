"""Batch controls (issue 16): their cost, and what they do to a learning curve.

(a) Overhead of quotas by group and of a draw over plain top-k: a miner over a
    10,000,000-row score array (`LeastConfidenceMiner` on a ``confidence`` column, the
    cheapest score, so the selection is most of the time), in the engine's 65,536-row
    batches: plain top-k, ``stratify=<column of 10 groups>``, ``stratify`` with
    ``quota="proportional"``, ``sampling="power"``, ``sampling="softmax"``,
    ``sampling="rank"`` (β = 1, 0.1, 5; with ``stratify``; and β = 1 ranked by one sort
    of the pool, as before `pickaxe.per_row.rank_candidates`); runs
    interleaved, median of R, in wall time and in this process's CPU time (the latter
    less sensitive to other jobs on a shared machine).
(b) Held-out learning curve on scikit-learn's digits: logistic regression, 40 labeled to
    start, batches of 20 for 12 rounds, S seeds (pool/test split and start set per seed):
    margin, margin with stratify="predicted", margin with sampling="power", random. Area
    under the learning curve = mean test accuracy over the rounds; mean ± standard error
    over the seeds.

    python benches/bench_batch_controls.py [--rows 10000000] [--repeats 5] [--seeds 8] [--no-curves]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import pickaxe as px
from pickaxe import per_row
from _machine import describe


def overhead(rows: int, repeats: int, k: int = 500) -> None:
    rng = np.random.default_rng(0)
    pool = {"confidence": rng.random(rows), "site": rng.integers(0, 10, rows)}
    runs = {
        "top-k": dict(),
        "stratify (10 groups)": dict(stratify="site"),
        "stratify, proportional": dict(stratify="site", quota="proportional"),
        "sampling=power": dict(sampling="power"),
        "sampling=softmax": dict(sampling="softmax"),
        "sampling=rank": dict(sampling="rank"),
        "sampling=rank, beta=0.1": dict(sampling="rank", beta=0.1),
        "sampling=rank, beta=5": dict(sampling="rank", beta=5.0),
        "rank, stratify (10 groups)": dict(sampling="rank", stratify="site"),
        "rank, full sort (before)": dict(sampling="rank"),
    }
    sort_below = per_row.RANK_SORT_BELOW
    times: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, kw in runs.items():  # interleaved: drift hits every variant alike
            miner = px.LeastConfidenceMiner(k, **kw)
            # the rank draw as it was: every row ranked by one sort of the pool
            per_row.RANK_SORT_BELOW = 1 << 62 if name.endswith("(before)") else sort_below
            t0, c0 = time.perf_counter(), time.process_time()
            miner.mine(pool)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    per_row.RANK_SORT_BELOW = sort_below
    base, cpu_base = np.median(times["top-k"]), np.median(cpu["top-k"])
    print(f"\n(a) {rows:,} rows, k = {k}, median of {repeats} interleaved runs (wall; CPU of this process)")
    print(f"{'run':<28}{'median s':>10}{'min s':>10}{'x top-k':>10}{'CPU s':>10}{'CPU x':>8}")
    for name, ts in times.items():
        c = np.median(cpu[name])
        print(f"{name:<28}{np.median(ts):>10.3f}{np.min(ts):>10.3f}{np.median(ts) / base:>10.2f}{c:>10.3f}{c / cpu_base:>8.2f}")


def learning_curves(seeds: int, start: int = 40, batch: int = 20, rounds: int = 12) -> None:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x = StandardScaler().fit_transform(x)
    strategies = {
        "margin": lambda s: px.MarginMiner(batch),
        'margin, stratify="predicted"': lambda s: px.MarginMiner(batch, stratify="predicted"),
        'margin, sampling="power"': lambda s: px.MarginMiner(batch, sampling="power", seed=s),
        "random": lambda s: px.RandomMiner(batch, seed=s),
    }
    aulc: dict[str, list[float]] = {name: [] for name in strategies}
    for seed in range(seeds):
        xp, xt, yp, yt = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
        first = np.random.default_rng(seed).choice(len(xp), start, replace=False)
        for name, make in strategies.items():
            labeled = np.zeros(len(xp), bool)
            labeled[first] = True
            accs = []
            for r in range(rounds + 1):
                model = LogisticRegression(max_iter=2000).fit(xp[labeled], yp[labeled])
                accs.append(model.score(xt, yt))
                if r == rounds:
                    break
                rest = np.flatnonzero(~labeled)
                pool = {"confidences": model.predict_proba(xp[rest])}
                # a class the model has not seen yet has no column: pad to 10 classes
                if pool["confidences"].shape[1] < 10:
                    full = np.zeros((len(rest), 10))
                    full[:, model.classes_] = pool["confidences"]
                    pool["confidences"] = full
                picks = make(seed * 100 + r).mine(pool).ids
                labeled[rest[picks]] = True
            aulc[name].append(float(np.mean(accs)))
    print(f"\n(b) digits, logistic regression: {start} labeled, {rounds} rounds of {batch}, {seeds} seeds")
    print(f"{'strategy':<32}{'AULC':>8}{'s.e.':>8}{'vs random':>11}")
    rand = np.asarray(aulc["random"])
    for name, v in aulc.items():
        a = np.asarray(v)
        diff = a - rand
        print(f"{name:<32}{a.mean():>8.4f}{a.std(ddof=1) / np.sqrt(len(a)):>8.4f}"
              f"{diff.mean():>+8.4f} ± {diff.std(ddof=1) / np.sqrt(len(a)):.4f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--no-curves", action="store_true", help="(a) only")
    args = ap.parse_args()
    print(f"{describe()}; numpy {np.__version__}")
    overhead(args.rows, args.repeats)
    if not args.no_curves:
        learning_curves(args.seeds)


if __name__ == "__main__":
    main()
