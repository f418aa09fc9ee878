"""Type stubs of the compiled module (rust/pickaxe-py). Private: use pickaxe.scores."""

from typing import Any, Literal, Optional, Sequence

import numpy as np
import numpy.typing as npt

__version__: str

_Float = np.float32 | np.float64

def score_rows(
    field: Literal["confidence", "confidences", "logits", "embeddings"],
    score: Literal["least_confidence", "margin", "ratio", "entropy", "energy", "max_logit", "norm"],
    x: npt.NDArray[_Float],
    nan_policy: Literal["raise", "omit"] = "raise",
    normalize: bool = False,
    class_weights: Optional[Sequence[float]] = None,
    temperature: float = 1.0,
    ord: float = 2.0,
) -> npt.NDArray[_Float]: ...
def score_stack(
    field: Literal["query_by_committee", "mc_dropout"],
    score: Literal[
        "vote_entropy",
        "consensus_entropy",
        "kl_disagreement",
        "mutual_information",
        "predictive_entropy",
        "variation_ratio",
        "variance",
    ],
    x: npt.NDArray[_Float],
    logits: bool = False,
    nan_policy: Literal["raise", "omit"] = "raise",
    reduce: Literal["mean", "max"] = "mean",
) -> npt.NDArray[_Float]: ...
def top_k(scores: npt.NDArray[_Float], k: int) -> npt.NDArray[np.int64]: ...
def build_info() -> dict[str, Any]: ...
def set_num_threads(n: int) -> None: ...
def set_simd_level(level: Literal["portable", "avx2", "avx512"]) -> None: ...
