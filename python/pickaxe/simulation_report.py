"""The report of `pickaxe.simulate`: learning curves compared, paired by seed.

Each seed gives every strategy the same split and start set, so the strategies' curves on
one seed differ only by their picks; differences are taken per seed and then averaged
(a paired comparison), which removes the seed-to-seed spread they share.

pandas loads when a report is made; matplotlib only in `SimulationReport.plot`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["SimulationReport", "aulc", "SEPARATION"]

#: A strategy is recommended when its paired AULC difference over the runner-up, and over
#: random, each exceed this many standard errors.
SEPARATION = 2.0

ROUND_COLUMNS = ("seed", "strategy", "round", "labeled", "accuracy", "macro_f1")
TABLE_COLUMNS = (
    "strategy", "final_accuracy", "final_accuracy_se", "final_macro_f1", "final_macro_f1_se",
    "aulc", "aulc_se", "aulc_vs_random", "aulc_vs_random_se", "aulc_vs_best", "aulc_vs_best_se",
)


def aulc(labeled: Sequence[float], accuracy: Sequence[float]) -> float:
    """Area under a learning curve, normalised by its width: the trapezoid area under
    accuracy against the number of labels, divided by (last - first labels). Its unit is
    accuracy: the mean accuracy over the budget.

    >>> aulc([20, 40, 60], [0.5, 0.7, 0.9])
    0.7
    """
    x = np.asarray(labeled, dtype=np.float64)
    y = np.asarray(accuracy, dtype=np.float64)
    if len(x) < 2 or x[-1] == x[0]:
        return float(y[-1]) if len(y) else math.nan
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
    return round(area / float(x[-1] - x[0]), 12)


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard error (ddof = 1) over seeds; NaN error for one seed."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, math.nan
    return mean, float(np.std(values, ddof=1) / math.sqrt(len(values)))


@dataclass(eq=False, repr=False)
class SimulationReport:
    """What `pickaxe.simulate` measured.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per strategy, best AULC first: ``final_accuracy`` (after the last round),
        ``final_macro_f1``, ``aulc`` (`aulc` of the accuracy curve), their standard errors
        over seeds (``*_se``), and ``aulc_vs_random`` / ``aulc_vs_best``: the mean over
        seeds of the strategy's AULC minus random's (the best's) on the same seed, with
        their standard errors.
    rounds : pandas.DataFrame
        Every round of every seed: ``seed``, ``strategy``, ``round`` (0 = the start set),
        ``labeled``, ``accuracy``, ``macro_f1`` (held-out).
    recommendation : str or None
        The best strategy when its paired AULC difference over the runner-up and over
        random each exceed `SEPARATION` (2) standard errors; None when the evidence does
        not separate them.
    reason : str
        The recommendation, or its absence, in words.
    setting : dict
        Rows, test rows, classes, batch, rounds, start, seeds and the probe.
    """

    table: Any
    rounds: Any
    recommendation: Optional[str]
    reason: str
    setting: dict[str, Any]

    @classmethod
    def from_records(cls, records: list[tuple], strategies: list[str], setting: dict[str, Any]) -> "SimulationReport":
        """A report from the rounds, one tuple of `ROUND_COLUMNS` each."""
        import pandas as pd

        rounds = pd.DataFrame.from_records(records, columns=list(ROUND_COLUMNS))
        seeds = sorted(rounds["seed"].unique())
        per_seed: dict[str, dict[str, np.ndarray]] = {}
        for name in strategies:
            mine = rounds[rounds["strategy"] == name]
            curves = [mine[mine["seed"] == s].sort_values("round") for s in seeds]
            per_seed[name] = {
                "aulc": np.array([aulc(c["labeled"], c["accuracy"]) for c in curves]),
                "final_accuracy": np.array([c["accuracy"].iloc[-1] for c in curves]),
                "final_macro_f1": np.array([c["macro_f1"].iloc[-1] for c in curves]),
            }
        best = max(strategies, key=lambda n: (per_seed[n]["aulc"].mean(), n == "random"))
        rows = []
        for name in strategies:
            v = per_seed[name]
            row: dict[str, Any] = {"strategy": name}
            for key in ("final_accuracy", "final_macro_f1", "aulc"):
                row[key], row[key + "_se"] = _mean_se(v[key])
            for key, other in (("aulc_vs_random", "random"), ("aulc_vs_best", best)):
                row[key], row[key + "_se"] = _mean_se(v["aulc"] - per_seed[other]["aulc"])
            rows.append(row)
        table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
        table = table.sort_values("aulc", ascending=False, kind="stable").reset_index(drop=True)
        recommendation, reason = _recommend(table, {n: v["aulc"] for n, v in per_seed.items()})
        return cls(table, rounds, recommendation, reason, dict(setting))

    # -- output ----------------------------------------------------------------------------

    def summary(self) -> str:
        """The setting, the table and the recommendation, in words."""
        s = self.setting
        end = s["start"] + s["rounds"] * s["batch"]
        lines = [
            f"Simulated {s['rounds']} rounds of {s['batch']} labels after {s['start']} random ones "
            f"({end} labels at the end), {s['seeds']} seeds, on {s['rows']} labeled rows of "
            f"{s['classes']} classes ({s['test_rows']} held out for testing); probe: {s['model']}.",
            "Mean over seeds ± one standard error; AULC is the mean held-out accuracy over the "
            "budget (area under the learning curve); differences are paired by seed.",
            "",
        ]
        header = ("strategy", "final accuracy", "AULC", "AULC vs random", "AULC vs best")
        body = [
            (
                r.strategy,
                _pm(r.final_accuracy, r.final_accuracy_se),
                _pm(r.aulc, r.aulc_se),
                _pm(r.aulc_vs_random, r.aulc_vs_random_se, signed=True),
                _pm(r.aulc_vs_best, r.aulc_vs_best_se, signed=True),
            )
            for r in self.table.itertuples()
        ]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        for row in [header, *body]:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        lines += ["", self.reason]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return (f"<SimulationReport: {len(self.table)} strategies, {self.setting['seeds']} seeds, "
                f"recommendation={self.recommendation!r}>")

    def to_csv(self, path: Any, table: bool = False) -> None:
        """Write every round of every seed (`rounds`) to `path`, or the per-strategy
        `table` with ``table=True``."""
        (self.table if table else self.rounds).to_csv(path, index=False)

    def plot(self, path: Any) -> None:
        """Write the learning curves (mean held-out accuracy against labels, with a band of
        ± one standard error over seeds; random dashed) as an image (PNG by the suffix)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("SimulationReport.plot() needs matplotlib: pip install matplotlib") from None
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        names = list(self.table["strategy"])
        colors = plt.get_cmap("tab10" if len(names) <= 10 else "tab20").colors
        for i, name in enumerate(names):
            mine = self.rounds[self.rounds["strategy"] == name]
            g = mine.groupby("round")
            x = g["labeled"].mean().to_numpy()
            mean = g["accuracy"].mean().to_numpy()
            n = g["accuracy"].count().to_numpy()
            se = np.nan_to_num(g["accuracy"].std(ddof=1).to_numpy() / np.sqrt(n))
            color = colors[i % len(colors)]
            ax.plot(x, mean, marker="o", markersize=3, label=name, color=color,
                    linestyle="--" if name == "random" else "-", linewidth=2.2 if name == self.recommendation else 1.3)
            ax.fill_between(x, mean - se, mean + se, color=color, alpha=0.15, linewidth=0)
        s = self.setting
        ax.set_xlabel("labeled rows")
        ax.set_ylabel("held-out accuracy")
        ax.set_title(f"{s['seeds']} seeds, band: ± one standard error; recommended: {self.recommendation or 'none'}",
                     fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def _pm(mean: float, se: float, signed: bool = False) -> str:
    m = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return m if math.isnan(se) else f"{m} ± {se:.3f}"


def _separated(diff: np.ndarray) -> tuple[bool, float, float]:
    mean, se = _mean_se(diff)
    return (not math.isnan(se) and mean > 0 and mean > SEPARATION * se), mean, se


def _recommend(table: Any, aulcs: dict[str, np.ndarray]) -> tuple[Optional[str], str]:
    """The rule: the best mean AULC is recommended when its paired difference over the
    runner-up and over random each exceed `SEPARATION` standard errors."""
    order = list(table["strategy"])
    if len(order) < 2:
        return None, "No recommendation: only random was simulated."
    best, runner = order[0], order[1]
    if len(aulcs[best]) < 2:
        return None, "No recommendation: one seed shows no spread; run two or more (5 or more to separate small gains)."
    rule = (f"(the rule: a paired AULC difference over the runner-up and over random above "
            f"{SEPARATION:g} standard errors)")
    ok_runner, d_run, se_run = _separated(aulcs[best] - aulcs[runner])
    if not ok_runner:
        return None, (f"No recommendation: the best, {best}, is {d_run:+.3f} ± {se_run:.3f} AULC above the "
                      f"runner-up, {runner}: the evidence does not separate them {rule}. Treat them as "
                      f"equal, or run more seeds.")
    if best != "random":
        ok_random, d_rand, se_rand = _separated(aulcs[best] - aulcs["random"])
        if not ok_random:
            return None, (f"No recommendation: the best, {best}, is {d_rand:+.3f} ± {se_rand:.3f} AULC above "
                          f"random: the evidence does not separate it from random {rule}.")
        return best, (f"Recommended: {best}. Its area under the learning curve is {d_rand:+.3f} ± {se_rand:.3f} "
                      f"above random and {d_run:+.3f} ± {se_run:.3f} above the runner-up, {runner} {rule}.")
    return "random", (f"Recommended: random. No strategy beats random labeling here; random is "
                      f"{d_run:+.3f} ± {se_run:.3f} AULC above the runner-up, {runner} {rule}.")
