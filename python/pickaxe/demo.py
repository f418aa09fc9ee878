"""``pickaxe demo``: the whole active-learning loop on scikit-learn's bundled digits.

A model starts from 30 labeled images of the digits 0-5 only: 6-9 are data it has never
seen, as after a drift. Each round it scores the unlabeled pool, a miner picks 25 images
to label, their labels are added and the model is retrained. Miners compared: random (the
baseline), entropy and margin (uncertainty), embedding distance and coreset (diversity,
against the labeled set), and ``combine`` of entropy and embedding distance. The test
accuracy after each round shows which picks help the model most.

Writes to the output folder: ``results.csv`` (accuracy per miner and round),
``selection.csv`` (the last round's picks of the combined miner, with their miner and
true label) and ``learning_curves.png``.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

ROUNDS = 6
PER_ROUND = 25
START = 30
SEED = 0


def _strategies(labeled_x: np.ndarray) -> dict[str, Any]:
    import pickaxe as px

    return {
        "random": px.RandomMiner(PER_ROUND, seed=SEED),
        "entropy": px.EntropyMiner(PER_ROUND),
        "margin": px.MarginMiner(PER_ROUND),
        "embedding_distance": px.EmbeddingDistanceMiner(PER_ROUND, labeled_x, k=5),
        "coreset": px.CoresetMiner(PER_ROUND, reference=labeled_x),
        "entropy+embedding_distance": px.combine(
            [px.EntropyMiner(1), px.EmbeddingDistanceMiner(1, labeled_x, k=5)], PER_ROUND
        ),
    }


def run_demo(out_dir: str, echo: Callable[[str], Any] = print) -> dict[str, list[float]]:
    try:
        from sklearn.datasets import load_digits
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise ImportError(
            "pickaxe demo needs scikit-learn and matplotlib: pip install 'pickaxe[demo]'"
        ) from None

    os.makedirs(out_dir, exist_ok=True)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_pool, x_test, y_pool, y_test = train_test_split(x, y, test_size=0.3, random_state=SEED, stratify=y)
    rng = np.random.default_rng(SEED)
    seen = np.flatnonzero(y_pool <= 5)
    start = rng.choice(seen, size=START, replace=False)
    echo(
        f"pickaxe demo: digits, {len(x_pool)} unlabeled images, {len(x_test)} test images; "
        f"the model starts from {START} labels of the digits 0-5 and gets "
        f"{PER_ROUND} more per round for {ROUNDS} rounds."
    )

    def fit(rows: np.ndarray) -> Any:
        return LogisticRegression(max_iter=2000).fit(x_pool[rows], y_pool[rows])

    names = list(_strategies(x_pool[start]))
    curves: dict[str, list[float]] = {}
    last_selection = None
    for name in names:
        labeled = start.copy()
        model = fit(labeled)
        acc = [float(model.score(x_test, y_test))]
        for _ in range(ROUNDS):
            unlabeled = np.setdiff1d(np.arange(len(x_pool)), labeled)
            miner = _strategies(x_pool[labeled])[name]
            pool = {
                "id": unlabeled,
                "logits": model.decision_function(x_pool[unlabeled]).astype(np.float32),
                "embeddings": x_pool[unlabeled],
                "label": y_pool[unlabeled],
            }
            selection = miner.mine(pool)
            labeled = np.concatenate([labeled, selection.ids])
            model = fit(labeled)
            acc.append(float(model.score(x_test, y_test)))
            if name == names[-1]:
                last_selection = selection
        curves[name] = acc
        unseen = int((y_pool[labeled] >= 6).sum())
        echo(f"  {name:<28} accuracy {acc[0]:.3f} -> {acc[-1]:.3f}   labels of unseen digits 6-9: {unseen}")

    labels = [START + PER_ROUND * r for r in range(ROUNDS + 1)]
    with open(os.path.join(out_dir, "results.csv"), "w") as f:
        f.write("labels," + ",".join(names) + "\n")
        for i, n in enumerate(labels):
            f.write(f"{n}," + ",".join(f"{curves[m][i]:.4f}" for m in names) + "\n")
    assert last_selection is not None
    last_selection.to_csv(os.path.join(out_dir, "selection.csv"))
    _plot(os.path.join(out_dir, "learning_curves.png"), labels, curves)

    echo("")
    echo("| labels | " + " | ".join(names) + " |")
    echo("|---:|" + "---:|" * len(names))
    for i, n in enumerate(labels):
        echo(f"| {n} | " + " | ".join(f"{curves[m][i]:.3f}" for m in names) + " |")
    echo("")
    echo(f"wrote {out_dir}/results.csv, {out_dir}/selection.csv, {out_dir}/learning_curves.png")
    return curves


def _plot(path: str, labels: list[int], curves: dict[str, list[float]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("pickaxe demo needs matplotlib for its plot: pip install 'pickaxe[demo]'") from None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, acc in curves.items():
        ax.plot(labels, acc, marker="o", label=name, linestyle="--" if name == "random" else "-")
    ax.set_xlabel("labeled images")
    ax.set_ylabel("test accuracy")
    ax.set_title("digits: the model starts from 0-5 only")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
