"""``pickaxe demo``: the whole active-learning loop on scikit-learn's bundled digits, over
several seeds, by `pickaxe.simulate`.

Each seed holds out 30% of the 1,797 images for testing, labels 20 random ones, then for
10 rounds fits a logistic regression on the labeled images, lets each miner pick 20 more
from the rest and reveals their labels; the test accuracy after each round shows which
picks teach the model fastest. Miners compared: random (the baseline), margin (the one
showcased: it measured best or tied for best on digits and on synthetic data, see
benches/RESULTS.md), TypiClust (the cold-start miner: it needs no model), BADGE, coreset
and entropy. The seeds give the spread: every number is a mean over seeds ± one standard
error, and the plot draws it as a band.

Writes to the output folder: ``results.csv`` (mean accuracy and its standard error per
miner and number of labels), ``rounds.csv`` (every round of every seed), ``table.csv``
(per miner: final accuracy, area under the learning curve, differences to random and to
the best), ``selection.csv`` (margin's picks for one labeling round, as a user gets them
from a pool of predictions) and ``learning_curves.png``.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import numpy as np

SEEDS = 5
ROUNDS = 10
BATCH = 20
START = 20
SHOWCASE = "margin"
#: The showcase first, then the others by what they are for; random is always added.
STRATEGIES = (SHOWCASE, "typiclust", "badge", "coreset", "entropy")


def run_demo(out_dir: str, echo: Callable[[str], Any] = print, seeds: int = SEEDS) -> Any:
    """Simulate the labeling rounds on digits, write the results to `out_dir`, print the
    learning curves (mean ± standard error over `seeds`) and the verdict; return the
    `pickaxe.simulation_report.SimulationReport`."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "pickaxe demo needs scikit-learn and matplotlib: pip install 'pickaxe[demo]'"
        ) from None
    from .simulation import simulate

    os.makedirs(out_dir, exist_ok=True)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    echo(
        f"pickaxe demo: digits, {len(x)} images of 10 digits (30% held out for testing); "
        f"the model starts from {START} random labels and gets {BATCH} more per round, picked by "
        f"each miner, for {ROUNDS} rounds; {seeds} seeds (splits and start sets)."
    )
    began = time.perf_counter()
    report = simulate({"embeddings": x, "label": y}, "label", list(STRATEGIES), batch=BATCH,
                      rounds=ROUNDS, start=START, seeds=seeds)
    took = time.perf_counter() - began

    # the showcase first, then best area under the learning curve first
    names = [SHOWCASE] + [n for n in report.table["strategy"] if n != SHOWCASE]
    labels, curves = _curves(report, names)
    with open(os.path.join(out_dir, "results.csv"), "w") as f:
        f.write("labels," + ",".join(f"{n},{n}_se" for n in names) + "\n")
        for i, n in enumerate(labels):
            f.write(f"{n}," + ",".join(f"{curves[m][0][i]:.4f},{curves[m][1][i]:.4f}" for m in names) + "\n")
    report.to_csv(os.path.join(out_dir, "rounds.csv"))
    report.to_csv(os.path.join(out_dir, "table.csv"), table=True)
    _one_round(x, y).to_csv(os.path.join(out_dir, "selection.csv"))
    report.plot(os.path.join(out_dir, "learning_curves.png"))

    echo("")
    echo(f"held-out accuracy, mean ± standard error over {seeds} seeds:")
    echo("| labels | " + " | ".join(names) + " |")
    echo("|---:|" + "---:|" * len(names))
    for i, n in enumerate(labels):
        echo(f"| {n} | " + " | ".join(_pm(*curves[m], i) for m in names) + " |")
    echo("")
    echo(report.summary())
    echo("")
    first, last = (max(names, key=lambda m: curves[m][0][i]) for i in (1, -1))
    echo(f"Highest mean accuracy after the first round ({labels[1]} labels): {first}; "
         f"after the last ({labels[-1]} labels): {last}.")
    echo(
        f"Showcased: {SHOWCASE}, which needs the model's probabilities. TypiClust needs none: it is "
        "the miner for a cold start, before there is a model worth asking. BADGE spreads large "
        "batches. Check which one helps your own model on your own labeled rows with "
        "px.simulate or `pickaxe simulate` (docs/simulate.md)."
    )
    echo(f"{len(names)} miners x {seeds} seeds x {ROUNDS} rounds in {took:.0f} s")
    names_out = ", ".join(f"{out_dir}/{f}" for f in
                          ("results.csv", "rounds.csv", "table.csv", "selection.csv", "learning_curves.png"))
    echo(f"wrote {names_out}")
    return report


def _curves(report: Any, names: list[str]) -> tuple[list[int], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Labels after each round, and per miner the mean accuracy and its standard error
    over seeds (0 with one seed)."""
    rounds = report.rounds
    labels = sorted(int(n) for n in rounds["labeled"].unique())
    curves = {}
    for name in names:
        g = rounds[rounds["strategy"] == name].groupby("labeled")["accuracy"]
        mean = g.mean().reindex(labels).to_numpy()
        se = np.nan_to_num(g.std(ddof=1).reindex(labels).to_numpy() / np.sqrt(g.count().reindex(labels).to_numpy()))
        curves[name] = (mean, se)
    return labels, curves


def _pm(mean: np.ndarray, se: np.ndarray, i: int) -> str:
    return f"{mean[i]:.3f} ± {se[i]:.3f}"


def _one_round(x: np.ndarray, y: np.ndarray) -> Any:
    """One labeling round as a user runs it: a model fitted on `START` labeled images
    predicts the rest, and the showcased miner picks `BATCH` of them from that pool (the
    true label rides along as a metadata column, to look at)."""
    import pickaxe as px
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    labeled = rng.choice(len(x), size=START, replace=False)
    rest = np.setdiff1d(np.arange(len(x)), labeled)
    model = LogisticRegression(max_iter=1000).fit(x[labeled], y[labeled])
    pool = {"id": rest, "confidences": model.predict_proba(x[rest]), "label": y[rest]}
    return px.MarginMiner(BATCH).mine(pool)
