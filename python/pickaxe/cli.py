"""The ``pickaxe`` command: ``mine``, ``fields``, ``demo``, ``simulate``.

Errors are one line on stderr (``Error: ...``), never a traceback. Exit status 1: the data
or a file cannot be mined (a bad row, a missing field, a query that is not allowed); 2: the
command line cannot work (an unknown or inapplicable option, a bad value, an --out that
cannot be written).
"""

from __future__ import annotations

import os
import sys
import zipfile
from typing import Any, Callable, Optional

import click

from . import __version__
from ._catalog import MINERS, cli_options_text
from ._catalog import miner as catalog_miner
from ._fields import BOX_STRUCT, FIELD_SHAPES
from ._output import check_output

#: The options each miner takes beyond --size, --query and --out, by command-line name
#: (from the catalogue); an option given to a miner that does not take it is an error.
MINER_OPTIONS: dict[str, dict[str, Optional[str]]] = {m.cli: m.options for m in MINERS}

MINER_NAMES = tuple(MINER_OPTIONS)

#: Options of `pickaxe mine` that every miner takes.
COMMON_OPTIONS = ("pool", "miner_name", "size", "query", "query_timeout", "out")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def options_text(miner: str) -> str:
    """The options of `miner` as `pickaxe fields` lists them, e.g. ``--k (10), --metric``."""
    return cli_options_text(miner)


def miner_class(name: str) -> Any:
    """The miner class of a command-line name."""
    import pickaxe as px

    return getattr(px, catalog_miner(name).cls)


def load_reference(path: str, option: str = "reference") -> Any:
    """Embeddings from a path (``--reference``, ``--examples``): a ``.npy`` array, a saved
    `ReferenceIndex`, or a Parquet file or folder with an ``embeddings`` column."""
    import numpy as np

    from .pools import open_pool
    from .index import ReferenceIndex

    flag = _flag(option)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{flag} {path}: no such file or folder")
    if path.endswith(".npy"):
        return np.load(path, mmap_mode="r", allow_pickle=False)
    if os.path.isfile(path) and zipfile.is_zipfile(path):
        return ReferenceIndex.load(path)
    source = open_pool(path, who=f"{flag} {path}")
    if "embeddings" not in source.column_names:
        raise ValueError(
            f"{flag} {path}: a Parquet {option} file needs an embeddings column; it has {source.describe()}"
        )
    return source.read(["embeddings"]).columns["embeddings"]


def reduce_option(value: str) -> Any:
    """``--reduce``: a name, or ``top:Q`` for segmentation's ``("top", Q)``."""
    if not value.startswith("top"):
        return value
    try:
        return ("top", float(value.split(":", 1)[1]))
    except (IndexError, ValueError):
        raise BadArgument(f"--reduce {value}: write top:Q, e.g. top:0.05") from None


def clusters_option(value: str) -> Any:
    """``--clusters``: a number of clusters (typiclust) or the pool's column of cluster
    labels (cluster_margin)."""
    return int(value) if value.isdigit() else value


def quota_option(value: str) -> Any:
    """``--quota``: equal, proportional, or a JSON mapping of group to weight, e.g.
    ``'{"0": 2, "1": 1}'`` (keys match groups by their text: ``"3"`` is class 3)."""
    import json

    if not value.lstrip().startswith("{"):
        return value
    try:
        mapping = json.loads(value)
    except json.JSONDecodeError as e:
        raise BadArgument(f"--quota {value}: not a JSON mapping ({e.msg}); write e.g. '{{\"cat\": 2, \"dog\": 1}}'") from None
    if not isinstance(mapping, dict):
        raise BadArgument(f"--quota {value}: give equal, proportional or a JSON mapping of group to weight")
    return mapping


#: How a command-line value becomes a miner's argument, where it is not the value itself.
CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "reference": load_reference,
    "examples": lambda path: load_reference(path, "examples"),
    "class_axis": int,
    "reduce": reduce_option,
    "clusters": clusters_option,
    "quota": quota_option,
}

#: What an option a miner cannot do without holds, for the error that asks for it.
REQUIRED: dict[str, str] = {
    "clusters": "the pool's column of cluster labels, e.g. from px.cluster",
    "reference": "the training set's embeddings",
    "examples": "the embeddings of the rows to find more of",
}


def build_miner(name: str, size: int, opts: dict[str, Any]) -> Any:
    """The miner `name` from the command line's options: each option its catalogue entry
    lists, converted (`CONVERTERS`); one not given keeps the miner's default."""
    kw: dict[str, Any] = {"query": opts.get("query")}
    for opt, shown in catalog_miner(name).options.items():
        value = opts.get(opt)
        if value is None or value is False:  # not given (a flag not set): the default
            if shown == "required":
                raise BadArgument(f"--miner {name} needs {_flag(opt)} ({REQUIRED[opt]})")
            continue
        kw[opt] = CONVERTERS[opt](value) if opt in CONVERTERS else value
    return miner_class(name)(size, **kw)


class BadArgument(click.ClickException):
    """A command-line argument that cannot work: one line on stderr, exit status 2 (as
    click's own usage errors); bad data exits with 1."""

    exit_code = 2


def _check_applicable(ctx: click.Context, miner: str) -> None:
    """An option given on the command line that `miner` does not take is an error, not
    silently ignored."""
    from click.core import ParameterSource

    takes = MINER_OPTIONS[miner]
    for name in ctx.params:
        if name in COMMON_OPTIONS or name in takes:
            continue
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            raise BadArgument(
                f"{_flag(name)} does not apply to --miner {miner}; it takes {options_text(miner)}"
            )


def _one_line(e: BaseException, miner: Optional[str] = None) -> str:
    """An error as the command line says it: one line, in the command line's words; a bad
    row suggests --nan-policy omit where the miner takes it."""
    from .errors import InvalidInputError, QueryError

    if isinstance(e, InvalidInputError) and e.reason and miner and "nan_policy" in MINER_OPTIONS.get(miner, {}):
        return (str(e).strip().replace("\n", " ")
                + " (--nan-policy omit skips bad rows: they score NaN and are never picked)")

    if isinstance(e, QueryError):
        from .pools import shown

        end = "" if e.reason.endswith((".", "?", "!")) else "."
        return (f"--query {shown(e.query)}: {e.reason}{end} --query takes one condition over "
                f"the pool's columns (SQL types): {e.columns}")
    return str(e).strip().replace("\n", " ") or type(e).__name__


class _OneLineErrors(click.Group):
    """Bad input and failed runs end as one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except (ValueError, TypeError, KeyError, IndexError, OSError, ImportError, RuntimeError, MemoryError) as e:
            message = _one_line(e)
            raise click.ClickException(message) from None


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="pickaxe")
def main() -> None:
    """pickaxe: pick the unlabeled data worth labeling next.

    \b
    Example:
      pickaxe mine predictions.parquet --miner margin --size 500 --out picks.csv
    """


@main.command()
@click.argument("pool", type=click.Path(exists=True, dir_okay=True))
@click.option("--miner", "miner_name", required=True, type=click.Choice(MINER_NAMES), help="Which miner.")
@click.option("--size", required=True, type=click.IntRange(min=0), help="How many rows to pick.")
@click.option("--query", help="One SQL condition over the pool's columns, e.g. \"split = 'unlabeled'\" (DuckDB; no statements, files or settings).")
@click.option("--query-timeout", type=click.FloatRange(min=0, min_open=True), help="Stop the query after this many seconds (default: no limit).")
@click.option("--reference", type=click.Path(), help="Training embeddings: .npy, Parquet, or a saved ReferenceIndex.")
@click.option("--out", "out", help="Write .parquet, .csv or .json (Label Studio tasks: metadata columns under data; id, score, miner under meta), checked before mining; default: CSV on stdout.")
@click.option("--examples", type=click.Path(), help="Embeddings to find more rows like (similarity): .npy, Parquet, or a saved ReferenceIndex.")
@click.option("--k", type=click.IntRange(min=1), help="Neighbours (embedding_distance, novelty, similarity).")
@click.option("--metric", type=click.Choice(["cosine", "l2", "ip"]), help="Distance (embedding miners).")
@click.option("--measure", help="Committee / dropout score, e.g. vote_entropy, mutual_information.")
@click.option("--field", help="Which field to score when the pool has several.")
@click.option("--logits", is_flag=True, help="Committee / dropout fields hold logits.")
@click.option("--nan-policy", type=click.Choice(["raise", "omit"]), default="raise", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the miner's randomness (random, --sampling, k-means, graphs).")
@click.option("--stratify", help="Quotas by group: predicted (argmax class of logits/confidences) or a column name.")
@click.option("--quota", help="With --stratify: equal (default), proportional, or a JSON mapping of group to weight.")
@click.option("--sampling", type=click.Choice(["top", "power", "softmax", "rank"]), help="top rows (default), or a draw with probability ∝ score^beta, exp(beta·score), rank^-beta.")
@click.option("--beta", type=float, help="Sharpness of --sampling (1.0); 0 draws uniformly.")
@click.option("--reduce", help="Per image: max, mean, sum (detection, localization); mean, max, top:Q (segmentation).")
@click.option("--objectness", is_flag=True, help="Weight boxes by their objectness (detection, localization).")
@click.option("--iou-threshold", type=float, help="IoU a committee box needs to match (localization, 0.5).")
@click.option("--per-class", is_flag=True, help="Match only boxes of the same class (localization).")
@click.option("--clusters", help="typiclust: number of k-means clusters; cluster_margin: the pool's cluster label column.")
@click.option("--candidates", type=click.IntRange(min=1), help="cluster_margin: nominees per picked row (10).")
@click.option("--class-axis", type=click.Choice(["1", "-1"]), help="Segmentation rows are (C, H, W) (1) or (H, W, C) (-1).")
@click.pass_context
def mine(ctx: click.Context, pool: str, miner_name: str, size: int, out: Optional[str], **opts: Any) -> None:
    """Mine POOL (a Parquet file or folder) and write the picked rows.

    \b
    Margin measured best, or tied for best, on the data simulated so far; TypiClust (no
    model needed) for a cold start, BADGE for large batches (benches/RESULTS.md). Check on
    your own labeled rows with `pickaxe simulate`.

    \b
    Examples:
      pickaxe mine preds.parquet --miner margin --size 500 --out picks.parquet
      pickaxe mine preds/ --miner margin --size 100 --query "split = 'unlabeled'"
      pickaxe mine preds.parquet --miner typiclust --size 100 --out picks.csv
      pickaxe mine preds.parquet --miner badge --size 1000 --out picks.parquet
      pickaxe mine preds.parquet --miner embedding_distance --size 200 \\
          --reference train_embeddings.npy --out picks.csv
      pickaxe mine preds.parquet --miner similarity --size 100 --examples failures.npy
      pickaxe mine preds.parquet --miner margin --size 100 --out tasks.json   # Label Studio import
    """
    _check_applicable(ctx, miner_name)
    timeout = opts.pop("query_timeout", None)
    if timeout is not None:
        from .pools import set_query_limits

        set_query_limits(timeout=timeout)
    if out not in (None, "-"):
        try:
            check_output(out, "--out")
        except ValueError as e:
            raise BadArgument(f"{e} (or leave --out out for CSV on stdout)") from None
    miner = build_miner(miner_name, size, opts)
    from .errors import InvalidInputError

    try:
        selection = miner.mine(pool)
    except InvalidInputError as e:
        raise click.ClickException(_one_line(e, miner_name)) from None
    if out is None or out == "-":
        selection.to_csv(sys.stdout)
    else:
        selection.write(out)
        click.echo(f"pickaxe: {len(selection)} rows by {miner_name} -> {out}", err=True)


@main.command()
def fields() -> None:
    """Print which fields each miner needs, and their shapes.

    \b
    Example:
      pickaxe fields
    """
    rows = [("miner", "fields", "options")]
    for name in MINER_NAMES:
        cls = miner_class(name)
        need = " or ".join(f"{f} {FIELD_SHAPES[f]}" for f in cls.fields) or "(none)"
        for also in cls.also_reads:
            need += f" and {also} {FIELD_SHAPES[also]}"
        rows.append((name, need, options_text(name)))
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    for r in rows:
        click.echo(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}")
    click.echo("")
    click.echo("fields: " + "; ".join(f"{k} {v}" for k, v in FIELD_SHAPES.items()))
    click.echo(f"box struct: {BOX_STRUCT}; * is any number of boxes per row (per member for member_boxes).")
    click.echo("pixel_confidences / pixel_logits rows may also be (H, W, C) (--class-axis -1).")
    click.echo("A pool may also hold an id column (names the rows) and metadata columns.")


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="pickaxe-demo", show_default=True)
def demo(out_dir: str) -> None:
    """Run the whole active-learning loop on scikit-learn's digits over 5 seeds (by
    px.simulate); write the learning curves (mean ± standard error), one round's
    selection and the plot to OUT.

    \b
    Example:
      pickaxe demo --out ./pickaxe-demo
    """
    from .demo import run_demo

    run_demo(out_dir, echo=click.echo)


@main.command()
@click.argument("pool", type=click.Path(exists=True, dir_okay=True))
@click.option("--labels", required=True, help="The pool's label column (rows without a label are not used).")
@click.option("--strategy", "strategies", multiple=True, type=click.Choice(MINER_NAMES),
              help="A miner to compare (repeat the option); random is always in. Default: every miner a probe can feed.")
@click.option("--batch", required=True, type=click.IntRange(min=1), help="Labels per round.")
@click.option("--rounds", required=True, type=click.IntRange(min=1), help="Labeling rounds.")
@click.option("--start", type=click.IntRange(min=2), default=20, show_default=True, help="Random labels before the first round.")
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True, help="Repetitions (split, start set, random choices).")
@click.option("--test-size", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.3, show_default=True,
              help="Share of the labeled rows held out for testing.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="pickaxe-simulate", show_default=True,
              help="Folder for table.csv, rounds.csv and learning_curves.png.")
def simulate(pool: str, labels: str, strategies: tuple[str, ...], batch: int, rounds: int, start: int,
             seeds: int, test_size: float, out_dir: str) -> None:
    """Replay labeling rounds on POOL's labeled rows (a linear probe on its embeddings)
    with each strategy over several seeds, and say which one helps.

    \b
    Examples:
      pickaxe simulate labeled.parquet --labels label --batch 100 --rounds 10
      pickaxe simulate labeled.parquet --labels label --strategy margin \\
          --strategy coreset --batch 50 --rounds 8 --seeds 10 --out sim/
    """
    from .simulation import simulate as run_simulation

    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise BadArgument(f"--out {out_dir}: cannot create the folder ({e.strerror})") from None
    report = run_simulation(pool, labels, list(strategies) or None, batch=batch, rounds=rounds, start=start,
                            seeds=seeds, test_size=test_size)
    paths = [os.path.join(out_dir, name) for name in ("table.csv", "rounds.csv", "learning_curves.png")]
    report.to_csv(paths[0], table=True)
    report.to_csv(paths[1])
    report.plot(paths[2])
    click.echo(report.summary())
    click.echo("")
    click.echo("wrote " + ", ".join(paths))


if __name__ == "__main__":  # pragma: no cover
    main()
