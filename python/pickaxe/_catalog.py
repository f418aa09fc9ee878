"""The catalogue: every score and every miner, declared once.

`pickaxe`'s exports, the modules' ``__all__``, the command line's ``--miner`` choices and
options, ``pickaxe fields``, the API reference in ``docs/`` and the tests read these
tables; adding a miner is its class and one `MinerSpec` here.

This module imports nothing heavy: ``import pickaxe`` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The prediction fields a score reads, by family.
ROW_FIELDS = ("confidences", "logits")
STACK_FIELDS = ("mc_dropout", "query_by_committee")


@dataclass(frozen=True)
class ScoreSpec:
    """One score of `pickaxe.scores`.

    ``family``: ``"row"`` (one row of class probabilities or logits), ``"committee"``
    (query_by_committee only), ``"stack"`` (dropout passes or committee members) or
    ``"activation"``. ``fields``: the fields it takes, in the order its signature lists
    them. ``options``: its keyword options besides the fields and ``nan_policy``.
    ``vision``: also per pixel (`pickaxe.segmentation`) and per box (`pickaxe.detection`).
    """

    name: str
    family: str
    fields: tuple[str, ...]
    options: tuple[str, ...] = ()
    formula: str = ""
    vision: bool = True


SCORES: tuple[ScoreSpec, ...] = (
    ScoreSpec("least_confidence", "row", ("confidence", "confidences", "logits"), (), "1 - p(1)"),
    ScoreSpec("margin", "row", ROW_FIELDS, (), "1 - (p(1) - p(2))"),
    ScoreSpec("ratio", "row", ROW_FIELDS, (), "p(2) / p(1)"),
    ScoreSpec("entropy", "row", ROW_FIELDS, ("normalize", "class_weights"),
              "H(p) = -sum_c p_c ln p_c, or -sum_c w_c p_c ln p_c; normalize divides by ln C"),
    ScoreSpec("energy", "row", ("logits",), ("temperature",), "-T logsumexp(x / T)"),
    ScoreSpec("max_logit", "row", ("logits",), (), "-max_c x_c"),
    ScoreSpec("activation", "activation", ("embeddings", "logits"), ("ord",),
              "embeddings: -||z||_ord; logits: energy with T = 1", vision=False),
    ScoreSpec("vote_entropy", "committee", ("query_by_committee",), ("logits",),
              "entropy of the histogram of the members' argmax votes"),
    ScoreSpec("consensus_entropy", "committee", ("query_by_committee",), ("logits",), "H(p-bar)"),
    ScoreSpec("kl_disagreement", "committee", ("query_by_committee",), ("logits", "reduce"),
              "mean (or max) over members of KL(p_m || p-bar)"),
    ScoreSpec("mutual_information", "stack", STACK_FIELDS, ("logits",), "H(p-bar) - mean_t H(p_t) (BALD)"),
    ScoreSpec("predictive_entropy", "stack", STACK_FIELDS, ("logits",), "H(p-bar)"),
    ScoreSpec("variation_ratio", "stack", STACK_FIELDS, ("logits",),
              "1 - (votes for the modal class) / (passes or members)"),
    ScoreSpec("variance", "stack", STACK_FIELDS, ("logits",),
              "mean over classes of the variance over passes (ddof = 0)"),
)

SCORE_NAMES: tuple[str, ...] = tuple(s.name for s in SCORES)
#: Scores also computed per pixel and per box.
VISION_SCORE_NAMES: tuple[str, ...] = tuple(s.name for s in SCORES if s.vision)
#: Per-row scores a detection or segmentation miner can rank boxes or pixels by.
ROW_MEASURES: tuple[str, ...] = tuple(s.name for s in SCORES if s.family == "row")
#: Measures of CommitteeMiner and MCDropoutMiner.
COMMITTEE_MEASURES: tuple[str, ...] = tuple(s.name for s in SCORES if s.family in ("committee", "stack"))
DROPOUT_MEASURES: tuple[str, ...] = tuple(s.name for s in SCORES if s.family == "stack")


def score(name: str) -> ScoreSpec:
    for s in SCORES:
        if s.name == name:
            return s
    raise KeyError(name)


@dataclass(frozen=True)
class MinerSpec:
    """One miner: its class (in `module`), its command-line name, and the command-line
    options it takes beyond ``--size``, ``--query`` and ``--out`` (without dashes), each
    with the default ``pickaxe fields`` shows (None: none shown)."""

    cls: str
    cli: str
    options: dict = field(default_factory=dict)
    module: str = "miners"
    summary: str = ""


MINERS: tuple[MinerSpec, ...] = (
    MinerSpec("RandomMiner", "random", {"seed": "0"}, summary="the baseline"),
    MinerSpec("LeastConfidenceMiner", "least_confidence", {"field": None, "nan_policy": "raise"},
              summary="confusing in-domain data: 1 - p(1)"),
    MinerSpec("MarginMiner", "margin", {"field": None, "nan_policy": "raise"},
              summary="confusing in-domain data: the two top classes close"),
    MinerSpec("RatioMiner", "ratio", {"field": None, "nan_policy": "raise"},
              summary="confusing in-domain data: p(2) / p(1)"),
    MinerSpec("EntropyMiner", "entropy", {"field": None, "nan_policy": "raise"},
              summary="confusing in-domain data: H(p)"),
    MinerSpec("CommitteeMiner", "committee", {"measure": "vote_entropy", "logits": None, "nan_policy": "raise"},
              summary="committee members disagree"),
    MinerSpec("MCDropoutMiner", "mc_dropout", {"measure": "mutual_information", "logits": None, "nan_policy": "raise"},
              summary="Monte Carlo dropout passes disagree"),
    MinerSpec("EmbeddingDistanceMiner", "embedding_distance", {"reference": "required", "k": "10", "metric": "cosine"},
              summary="far from the training data"),
    MinerSpec("NoveltyMiner", "novelty", {"reference": "required", "k": "20", "metric": "l2"},
              summary="local outliers against the training data (LOF)"),
    MinerSpec("ActivationMiner", "activation", {"field": "logits if present, else embeddings"},
              summary="low activation: out of domain (energy of logits, else -‖z‖ of embeddings)"),
    MinerSpec("CoresetMiner", "coreset", {"reference": "labeled set", "metric": "l2"},
              summary="k-center greedy cover of what is not yet labeled"),
    MinerSpec("SimilarityMiner", "similarity", {"examples": "required", "k": "1", "metric": "cosine"},
              summary='nearest to given example embeddings ("more like these")'),
    MinerSpec("TypiClustMiner", "typiclust", {"reference": "labeled set", "k": "20", "clusters": "labeled + size", "seed": "0"},
              summary="the most typical row of each uncovered k-means cluster (cold start)"),
    MinerSpec("BADGEMiner", "badge", {"seed": "0", "field": None},
              summary="k-means++ over gradient embeddings: uncertain and diverse (needs embeddings too)"),
    MinerSpec("ClusterMarginMiner", "cluster_margin",
              {"clusters": "required", "candidates": "10", "seed": "0", "field": None, "nan_policy": "raise"},
              summary="lowest-margin candidates, round-robin over clusters, smallest first"),
    MinerSpec("DetectionMiner", "detection",
              {"measure": "entropy", "reduce": "max", "objectness": None, "nan_policy": "raise"},
              summary="images whose boxes are uncertain"),
    MinerSpec("LocalizationMiner", "localization",
              {"iou_threshold": "0.5", "per_class": None, "reduce": "max", "objectness": None},
              summary="a committee disagrees where the objects are"),
    MinerSpec("SegmentationMiner", "segmentation",
              {"measure": "entropy", "reduce": "mean", "class_axis": "1", "field": None, "nan_policy": "raise"},
              summary="images whose pixels are uncertain"),
)

#: The batch controls (`pickaxe.batch_controls`) every per-row miner takes, with the
#: defaults ``pickaxe fields`` shows: quotas by group and stochastic batches.
BATCH_OPTIONS: dict = {"stratify": None, "quota": "equal", "sampling": "top", "beta": "1.0", "seed": "0"}
#: Miners that pick a batch as a set (the whole pool at once, or a re-pick of nominees):
#: they take no batch controls.
SET_MINERS = ("coreset", "typiclust", "badge", "cluster_margin")
MINERS = tuple(
    m if m.cli in SET_MINERS else MinerSpec(m.cls, m.cli, {**m.options, **BATCH_OPTIONS}, m.module, m.summary)
    for m in MINERS
)

MINER_CLASSES: tuple[str, ...] = tuple(m.cls for m in MINERS)
MINER_CLI_NAMES: tuple[str, ...] = tuple(m.cli for m in MINERS)


def miner(cli: str) -> MinerSpec:
    for m in MINERS:
        if m.cli == cli:
            return m
    raise KeyError(cli)


#: Public names of `pickaxe` other than the miners, and the module each lives in.
OTHER_EXPORTS: dict[str, str] = {
    "ReferenceIndex": "index",
    "Selection": "selection",
    "combine": "miners.combine",
    "set_query_limits": "pools",
    "Miner": "miners",
    "cluster": "clustering",
    "simulate": "simulation",
}


def lazy_exports() -> dict[str, str]:
    """Public name -> the submodule it loads from on first use."""
    out = dict(OTHER_EXPORTS)
    out.update({m.cls: m.module for m in MINERS})
    return out


def cli_options_text(cli: str) -> str:
    """A miner's command-line options as ``pickaxe fields`` lists them."""
    opts = miner(cli).options
    return ", ".join(
        "--" + o.replace("_", "-") + (f" ({d})" if d else "") for o, d in opts.items()
    ) or "(none)"
