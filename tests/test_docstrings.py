"""The examples in the docstrings are run, so the documentation stays true."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import pickaxe
import pickaxe.detection
import pickaxe.miners
import pickaxe.miners.combine
import pickaxe.miners.diversity
import pickaxe.miners.uncertainty
import pickaxe.miners.vision
import pickaxe.scores
import pickaxe.segmentation
import pickaxe.select


@pytest.mark.parametrize("module", [pickaxe, pickaxe.scores, pickaxe.select, pickaxe.detection, pickaxe.segmentation, pickaxe.miners,
                                    pickaxe.miners.uncertainty, pickaxe.miners.diversity, pickaxe.miners.vision,
                                    pickaxe.miners.combine], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(module, globs={"np": np, "px": pickaxe, **vars(module)})
    examples = sum(len(t.examples) for t in tests)
    assert examples > 0 or module is pickaxe
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0
