"""The repository documents itself: docs/api.md is generated from the catalogue and the
docstrings and must be current; README and docs link only to files the repository has."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

pytestmark = pytest.mark.skipif(not (DOCS / "generate_api.py").exists(),
                                reason="the source tree's docs/ is not beside these tests (installed-wheel run)")


def test_api_reference_is_current():
    pytest.importorskip("ray")  # the reference documents pickaxe.ray.mine too
    out = subprocess.run([sys.executable, str(DOCS / "generate_api.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_api_reference_names_every_public_name():
    import pickaxe as px
    from pickaxe import _catalog

    text = (DOCS / "api.md").read_text()
    for name in px.__all__:
        assert f"`{name}`" in text or f"pickaxe.{name}" in text, name
    for spec in _catalog.SCORES:
        assert f"pickaxe.scores.{spec.name}" in text
    for spec in _catalog.MINERS:
        assert f"`{spec.cls}`" in text and f"`{spec.cli}`" in text


def test_links_point_inside_the_repository():
    for page in [ROOT / "README.md", *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#]+)", page.read_text()):
            if "://" in target:
                continue
            assert not target.startswith("../shared"), f"{page.name} links outside the repository: {target}"
            assert (page.parent / target).exists(), f"{page.name}: {target} does not exist"
