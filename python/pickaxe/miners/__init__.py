"""Miners: configured once, run on a pool, return the rows worth labeling.

Uncertainty miners (`pickaxe.miners.uncertainty`) find confusing in-domain rows from the
model's predictions; diversity miners (`pickaxe.miners.diversity`) find rows unlike the
training data from their embeddings (or logits); vision miners
(`pickaxe.miners.vision`) rank images by their boxes or pixels; batch-aware miners
(`pickaxe.miners.batch`) choose the batch as a set; `combine` splits one
budget across several. Every miner checks the fields it needs before doing any work, and
returns a `Selection`, highest score first. The mining itself is `pickaxe.engine`'s.

>>> import numpy as np, pickaxe as px
>>> logits = np.random.default_rng(0).normal(size=(1000, 10))
>>> px.EntropyMiner(size=3).mine({"logits": logits}).ids.shape
(3,)
"""

from __future__ import annotations

from .._catalog import MINERS
from .base import Miner
from .batch import BADGEMiner, ClusterMarginMiner, TypiClustMiner
from .diversity import ActivationMiner, CoresetMiner, EmbeddingDistanceMiner, NoveltyMiner, SimilarityMiner
from .uncertainty import (
    CommitteeMiner,
    EntropyMiner,
    LeastConfidenceMiner,
    MarginMiner,
    MCDropoutMiner,
    RandomMiner,
    RatioMiner,
)
from .vision import DetectionMiner, LocalizationMiner, SegmentationMiner

__all__ = ["Miner", *(m.cls for m in MINERS if m.module == "miners")]
