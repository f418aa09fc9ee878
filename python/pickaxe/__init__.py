"""pickaxe: pick the unlabeled data worth labeling next.

Uncertainty scores (`pickaxe.scores`) and selection (`pickaxe.select`) computed by a Rust
core: exact, parallel, SIMD-dispatched at run time, with input validation that names the
field, the row and the fault.

>>> import numpy as np, pickaxe as px
>>> logits = np.random.default_rng(0).normal(size=(1000, 10)).astype(np.float32)
>>> picks = px.select.top_k(px.scores.entropy(logits=logits), 5)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import _core
from ._catalog import MINER_CLASSES, OTHER_EXPORTS, lazy_exports

# Everything but the compiled core loads on first use (PEP 562): `import pickaxe` costs a
# few milliseconds; numpy loads with the first score, the index and pools with the first
# miner, and production jobs that only score never load the rest.
_LAZY = lazy_exports()

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these load lazily
    from . import detection, errors, scores, segmentation, select
    from .miners.combine import combine
    from .pools import set_query_limits
    from .index import ReferenceIndex
    from .clustering import cluster
    from .miners import (
        ActivationMiner,
        BADGEMiner,
        ClusterMarginMiner,
        CommitteeMiner,
        CoresetMiner,
        DetectionMiner,
        EmbeddingDistanceMiner,
        EntropyMiner,
        LeastConfidenceMiner,
        LocalizationMiner,
        MarginMiner,
        MCDropoutMiner,
        Miner,
        NoveltyMiner,
        RandomMiner,
        RatioMiner,
        SegmentationMiner,
        SimilarityMiner,
        TypiClustMiner,
    )
    from .selection import Selection
    from .simulation import simulate


_SUBMODULES = (
    "errors",
    "scores",
    "select",
    "segmentation",
    "detection",
    "index",
    "miners",
    "selection",
    "cli",
    "demo",
    "ray",
    "torch",  # pickaxe.torch imports torch only when predict runs
)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pickaxe' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__: str = _core.__version__

__all__ = [
    "scores",
    "select",
    "segmentation",
    "detection",
    "errors",
    "build_info",
    "set_num_threads",
    "__version__",
    *OTHER_EXPORTS,
    *MINER_CLASSES,
]


def build_info() -> dict[str, Any]:
    """What this build runs with: ``version``, ``simd`` (the level in use: "avx512",
    "avx2" or "portable"), ``simd_detected`` (the best this CPU has) and ``threads``."""
    return dict(_core.build_info())


def set_num_threads(n: int) -> None:
    """Bound the threads the kernels use (1: none besides the caller's). The default is
    ``PICKAXE_NUM_THREADS`` if set, else the number of cores. Exact neighbour search runs
    its BLAS products on these threads too, with BLAS limited to one thread each while it
    lasts (process-wide, as threadpoolctl sets it): BLAS's own threads would spin after
    each product and slow the kernels that follow."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads(): n must be an int >= 1; got {n!r}")
    _core.set_num_threads(n)
