"""Learning curves of the batch-aware miners against scikit-activeml's implementations of
the same methods, with the same model (issue #15 point 6).

Protocol, per dataset, batch size and seed: a stratified held-out test set (30 %), 20
random labeled rows to start, then rounds of: fit a logistic regression on the labeled
rows (standardised features), let each strategy pick ``batch`` unlabeled rows, reveal
their labels. Accuracy on the test set after each fit; the area under the learning curve
(AULC) is the mean accuracy over the fits (the first included). Strategies: random,
pickaxe's MarginMiner, pickaxe's TypiClustMiner and BADGEMiner, and scikit-activeml's
TypiClust (k = 20, as pickaxe's) and Badge. BADGE's embeddings are the features (the
logistic regression's last layer reads them), as scikit-activeml uses them.

    python benches/bench_batch_quality.py                 # digits and a synthetic set
    python benches/bench_batch_quality.py --seeds 8 --batches 20 100
    python benches/bench_batch_quality.py --datasets synthetic-50k --batches 100 \
        --strategies random pickaxe_typiclust skactiveml_typiclust

Prints, per dataset and batch, mean AULC ± standard error over seeds, and each pickaxe
method's paired difference from its scikit-activeml counterpart (± its standard error).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def datasets(wanted: tuple = (), seed_data: int = 0) -> dict:
    from sklearn.datasets import load_digits, make_classification

    x, y = load_digits(return_X_y=True)
    xs, ys = make_classification(
        n_samples=3000, n_features=30, n_informative=12, n_redundant=6, n_classes=6,
        n_clusters_per_class=3, class_sep=1.2, random_state=seed_data,
    )
    out = {"digits": (x.astype(np.float64), y), "synthetic": (xs, ys)}
    if "synthetic-50k" in wanted:
        # the synthetic set's recipe at 50,000 rows: a pool of 35,000, so TypiClust's k-means
        # iterates on a sample (64 rows per cluster) at every batch size, and seeds from one
        xl, yl = make_classification(
            n_samples=50_000, n_features=30, n_informative=12, n_redundant=6, n_classes=6,
            n_clusters_per_class=3, class_sep=1.2, random_state=seed_data,
        )
        out["synthetic-50k"] = (xl, yl)
    return out


def model():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def run_curve(strategy: str, x, y, x_test, y_test, start: np.ndarray, batch: int, rounds: int, seed: int) -> list[float]:
    import pickaxe as px

    labeled = list(start)
    accs = []
    for r in range(rounds + 1):
        clf = model().fit(x[labeled], y[labeled])
        accs.append(float((clf.predict(x_test) == y_test).mean()))
        if r == rounds:
            break
        unlabeled = np.setdiff1d(np.arange(len(x)), labeled)
        # the features as the model reads them (standardised) are the embeddings
        z = clf[0].transform(x)
        if strategy == "random":
            picks = np.random.default_rng([seed, r]).choice(unlabeled, batch, replace=False)
        elif strategy == "margin":
            sel = px.MarginMiner(batch).mine({"confidences": clf.predict_proba(x[unlabeled])})
            picks = unlabeled[sel.ids]
        elif strategy == "pickaxe_typiclust":
            sel = px.TypiClustMiner(batch, reference=z[labeled], k=20, seed=seed + r).mine({"embeddings": z[unlabeled]})
            picks = unlabeled[sel.ids]
        elif strategy == "pickaxe_badge":
            pool = {"confidences": clf.predict_proba(x[unlabeled]), "embeddings": z[unlabeled]}
            picks = unlabeled[px.BADGEMiner(batch, seed=seed + r).mine(pool).ids]
        else:
            picks = skactiveml_picks(strategy, z, y, labeled, batch, seed + r)
        labeled.extend(int(i) for i in picks)
    return accs


def skactiveml_picks(strategy: str, z, y, labeled, batch: int, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from skactiveml.classifier import SklearnClassifier
    from skactiveml.pool import Badge, TypiClust

    y_partial = np.full(len(y), np.nan)
    y_partial[labeled] = y[labeled]
    if strategy == "skactiveml_typiclust":
        return TypiClust(random_state=seed, k=20).query(z, y_partial, batch_size=batch)
    clf = SklearnClassifier(LogisticRegression(max_iter=2000), classes=np.unique(y), random_state=seed)
    return Badge(random_state=seed).query(z, y_partial, clf=clf, batch_size=batch)


STRATEGIES = ["random", "margin", "pickaxe_typiclust", "skactiveml_typiclust", "pickaxe_badge", "skactiveml_badge"]
PAIRS = [("pickaxe_typiclust", "skactiveml_typiclust"), ("pickaxe_badge", "skactiveml_badge")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--batches", type=int, nargs="+", default=[20, 100])
    ap.add_argument("--budget", type=int, default=400, help="rows labeled after the start")
    ap.add_argument("--datasets", nargs="+", default=["digits", "synthetic"])
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--strategies", nargs="+", default=STRATEGIES, choices=STRATEGIES)
    args = ap.parse_args()
    from sklearn.model_selection import train_test_split

    from _machine import cpu_model

    import pickaxe as px

    info = px.build_info()
    print(f"# {cpu_model()}, {os.cpu_count()} CPUs, pickaxe SIMD {info.get('simd')}, "
          f"threads {info.get('threads')}; seeds {args.first_seed}..{args.first_seed + args.seeds - 1}; start 20; "
          f"budget {args.budget}")
    strategies = [s for s in STRATEGIES if s in args.strategies]
    for name, (x, y) in datasets(tuple(args.datasets)).items():
        if name not in args.datasets:
            continue
        for batch in args.batches:
            rounds = args.budget // batch
            aulc = {s: [] for s in strategies}
            t0 = time.perf_counter()
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                xp, xt, yp, yt = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
                start = np.random.default_rng(seed).choice(len(xp), 20, replace=False)
                for s in strategies:
                    aulc[s].append(np.mean(run_curve(s, xp, yp, xt, yt, start, batch, rounds, seed)))
            print(f"\n## {name} ({len(x)} rows, {x.shape[1]} features, {len(np.unique(y))} classes), "
                  f"batch {batch}, {rounds} rounds ({time.perf_counter() - t0:.0f} s)")
            print("| strategy | AULC mean | ± s.e. |")
            print("|---|---|---|")
            for s in strategies:
                a = np.asarray(aulc[s])
                print(f"| {s} | {a.mean():.4f} | {a.std(ddof=1) / np.sqrt(len(a)):.4f} |")
            for ours, theirs in PAIRS:
                if ours not in aulc or theirs not in aulc:
                    continue
                a, b = np.asarray(aulc[ours]), np.asarray(aulc[theirs])
                d = a - b
                se_b = b.std(ddof=1) / np.sqrt(len(b))
                verdict = "within one s.e. or better" if a.mean() >= b.mean() - se_b else "WORSE by more than one s.e."
                print(f"{ours} − {theirs}: {d.mean():+.4f} ± {d.std(ddof=1) / np.sqrt(len(d)):.4f} (paired); "
                      f"{verdict} (their s.e. {se_b:.4f})")


if __name__ == "__main__":
    main()
