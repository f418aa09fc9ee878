"""The catalogue (`pickaxe._catalog`) is the one declaration of every score and miner:
the functions, classes, exports, command line and type stubs agree with it."""

import ast
import inspect
from pathlib import Path

import pytest

import pickaxe as px
from pickaxe import _catalog as cat

click = pytest.importorskip("click")


@pytest.mark.parametrize("spec", cat.SCORES, ids=lambda s: s.name)
def test_every_score_function_matches_its_entry(spec):
    fn = getattr(px.scores, spec.name)
    params = inspect.signature(fn).parameters
    assert fn.__pickaxe_fields__ == spec.fields  # set by @takes_fields from the catalogue
    for option in spec.options + ("nan_policy",):
        assert option in params, f"{spec.name} lacks {option}"
    extra = set(params) - set(spec.fields) - set(spec.options) - {"nan_policy"}
    assert not extra, f"{spec.name} takes {extra}, not in the catalogue"
    for module in (px.segmentation, px.detection):
        assert hasattr(module, spec.name) == spec.vision


def test_scores_module_exports_exactly_the_catalogue():
    public = {n for n, v in vars(px.scores).items() if inspect.isfunction(v) and not n.startswith("_")
              and v.__module__ == "pickaxe.scores"}
    assert public == set(cat.SCORE_NAMES) == set(px.scores.__all__)


@pytest.mark.parametrize("spec", cat.MINERS, ids=lambda m: m.cli)
def test_every_miner_class_matches_its_entry(spec):
    cls = getattr(px, spec.cls)
    assert issubclass(cls, px.Miner) and cls.__name__ == spec.cls
    assert spec.cls in px.__all__ and spec.cls in px.miners.__all__


def test_command_line_reads_the_catalogue():
    from pickaxe.cli import MINER_NAMES, main, miner_class

    assert MINER_NAMES == cat.MINER_CLI_NAMES
    mine = main.commands["mine"]
    params = {p.name: p for p in mine.params}
    assert list(params["miner_name"].type.choices) == list(cat.MINER_CLI_NAMES)
    for spec in cat.MINERS:
        assert miner_class(spec.cli).__name__ == spec.cls
        for option in spec.options:
            assert option in params, f"{spec.cli}: --{option} is not an option of pickaxe mine"


def test_type_checking_imports_name_every_export():
    # the TYPE_CHECKING block of __init__ is for type checkers; it must name what the
    # catalogue exports lazily
    tree = ast.parse(Path(px.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for imp in node.body:
                if isinstance(imp, ast.ImportFrom):
                    names |= {a.name for a in imp.names}
    assert set(cat.lazy_exports()) <= names


def test_core_stub_lists_every_score_kernel_name():
    stub = (Path(px.__file__).parent / "_core.pyi").read_text()
    assert "def score_rows" in stub and "def score_stack" in stub
