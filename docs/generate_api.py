"""Write docs/api.md, pickaxe's API reference, from the catalogue and the docstrings.

    python docs/generate_api.py            # rewrite docs/api.md
    python docs/generate_api.py --check    # exit 1 if docs/api.md is not what it would write

tests/test_docs.py runs the check, so the reference cannot drift from the code: every
score, miner and public name is listed from `pickaxe._catalog` and `pickaxe.__all__`.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pickaxe as px
from pickaxe import _catalog as cat
from pickaxe._fields import FIELD_SHAPES

OUT = Path(__file__).with_name("api.md")


def summary(obj: object) -> str:
    """The first paragraph of a docstring, on one line."""
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


class _Unchanged:
    """Shown for a default that is a private sentinel (e.g. "leave this limit as it is")."""

    def __repr__(self) -> str:
        return "<unchanged>"


def signature(name: str, obj: object) -> str:
    """``name(params)`` without annotations (the docstrings say the types), with
    defaults that print the same in every process."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return f"{name}(...)"
    params = []
    for p in sig.parameters.values():
        p = p.replace(annotation=inspect.Parameter.empty)
        if p.default is not inspect.Parameter.empty and " object at 0x" in repr(p.default):
            p = p.replace(default=_Unchanged())
        params.append(p)
    return f"{name}{sig.replace(parameters=params, return_annotation=inspect.Signature.empty)}"


def section(title: str, lines: list[str]) -> list[str]:
    return [f"## {title}", "", *lines, ""]


def fields_section() -> list[str]:
    rows = ["| field | shape |", "|---|---|"]
    rows += [f"| `{name}` | {shape} |" for name, shape in FIELD_SHAPES.items()]
    return section("Fields", [
        "Predictions reach pickaxe as named fields, one row per datapoint:", "", *rows, "",
        "float32 stays float32 and float64 stays float64; other real dtypes become float64. "
        "Arrays are read in place whatever their strides. `pickaxe fields` prints the table "
        "with each miner's needs.",
    ])


def scores_section() -> list[str]:
    lines = [summary(px.scores), "",
             "| function | family | fields | options | score |", "|---|---|---|---|---|"]
    for s in cat.SCORES:
        opts = ", ".join(f"`{o}`" for o in (*s.options, "nan_policy"))
        lines.append(f"| `pickaxe.scores.{s.name}` | {s.family} | {', '.join(f'`{f}`' for f in s.fields)} "
                     f"| {opts} | {s.formula} |")
    lines += ["", "Per pixel and per box, with the same names: "
              + ", ".join(f"`{n}`" for n in cat.VISION_SCORE_NAMES) + " in `pickaxe.segmentation` "
              "and `pickaxe.detection` (plus `pickaxe.detection.localization_disagreement`).", ""]
    for s in cat.SCORES:
        fn = getattr(px.scores, s.name)
        lines += [f"### `pickaxe.scores.{signature(s.name, fn)}`", "", summary(fn), ""]
    for module in (px.segmentation, px.detection):
        lines += [f"### `{module.__name__}`", "", summary(module), ""]
    fn = px.detection.localization_disagreement
    lines += [f"### `pickaxe.detection.{signature('localization_disagreement', fn)}`", "", summary(fn), ""]
    lines += [f"### `pickaxe.select.{signature('top_k', px.select.top_k)}`", "", summary(px.select.top_k), ""]
    return section("Scores", lines)


def miners_section() -> list[str]:
    lines = ["`miner.mine(pool)` returns a `Selection`, highest score first. A pool is a mapping "
             "of column to array, a pandas or polars DataFrame, a pyarrow Table, or a Parquet file "
             "or folder (see [pools.md](pools.md)); `query=` keeps the rows one condition holds for "
             "(see [query.md](query.md)).", "",
             "Ties are broken by row order everywhere: rows of equal score are picked in "
             "ascending pool row (or id, on a Ray Dataset), whether the pool is read whole, "
             "streamed in batches or mined on Ray. Scores with few distinct values tie often: "
             "`vote_entropy` (one value per way of splitting the members' votes) and "
             "`variation_ratio` (at most T values).", "",
             "| class | command line | fields | what it finds |", "|---|---|---|---|"]
    for m in cat.MINERS:
        cls = getattr(px, m.cls)
        need = " or ".join(f"`{f}`" for f in cls.fields) or "none"
        for also in cls.also_reads:
            need += f" and `{also}`"
        lines.append(f"| `{m.cls}` | `{m.cli}` | {need} | {m.summary} |")
    lines.append("")
    for m in cat.MINERS:
        cls = getattr(px, m.cls)
        lines += [f"### `pickaxe.{signature(m.cls, cls)}`", "", summary(cls), ""]
    lines += [f"### `pickaxe.{signature('combine', px.combine)}`", "", summary(px.combine), ""]
    return section("Miners", lines)


def other_section() -> list[str]:
    lines = []
    for name in ("Selection", "ReferenceIndex", "simulate", "set_query_limits", "build_info", "set_num_threads"):
        obj = getattr(px, name)
        lines += [f"### `pickaxe.{signature(name, obj)}`", "", summary(obj), ""]
        if inspect.isclass(obj):
            for meth, fn in inspect.getmembers(obj, inspect.isfunction):
                if not meth.startswith("_") and fn.__qualname__.startswith(name + "."):
                    lines += [f"- `{signature(meth, fn)}`: {summary(fn)}"]
            lines.append("")
    return section("Selections, the reference index and settings", lines)


def errors_section() -> list[str]:
    from pickaxe import errors

    lines = [summary(errors), ""]
    for name in errors.__all__:
        obj = getattr(errors, name)
        lines += [f"### `pickaxe.errors.{name}`", "", summary(obj), ""]
    return section("Errors", lines)


def ray_section() -> list[str]:
    import importlib

    try:
        ray_mod = importlib.import_module("pickaxe.ray")
    except ImportError:
        return []
    return section("On Ray", [f"### `pickaxe.ray.{signature('mine', ray_mod.mine)}`", "", summary(ray_mod.mine), ""])


def torch_section() -> list[str]:
    from pickaxe import torch as pt  # imports without torch: torch loads when predict runs

    fn = pt.predict
    # the docstring's first two paragraphs, then its table of columns as it is written
    doc = (inspect.getdoc(fn) or "").split("\n\n")
    return section("From PyTorch", [summary(pt), "", f"### `pickaxe.torch.{signature('predict', fn)}`", "",
                                    " ".join(doc[0].split()), "", " ".join(doc[1].split()), "",
                                    "```text", doc[2], "```", "",
                                    "`help(pickaxe.torch.predict)` says how the passes, embeddings, batches, "
                                    "ids and Parquet output work.", ""])


def cli_section() -> list[str]:
    from pickaxe.cli import main

    lines = ["`pickaxe COMMAND --help` prints every option with examples.", ""]
    for name, cmd in main.commands.items():
        lines += [f"### `pickaxe {name}`", "", " ".join((cmd.help or "").split("\n\n")[0].split()), ""]
        for p in cmd.params:
            if p.param_type_name == "option":
                lines.append(f"- `{', '.join(p.opts)}`: {' '.join((p.help or '').split())}")
        lines.append("")
    return section("Command line", lines)


def render() -> str:
    head = [
        "# pickaxe API reference",
        "",
        "Generated by `python docs/generate_api.py` from pickaxe's catalogue of scores and "
        "miners and from the docstrings (`help(px.X)` gives each in full); "
        "`tests/test_docs.py` checks that it is current. `import pickaxe as px`.",
        "",
        "Public names of `pickaxe`: " + ", ".join(f"`{n}`" for n in px.__all__) + ".",
        "",
    ]
    parts = head + fields_section() + scores_section() + miners_section() + other_section()
    parts += errors_section() + ray_section() + torch_section() + cli_section()
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python docs/generate_api.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
