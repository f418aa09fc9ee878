"""Vision miners: images ranked by their boxes' uncertainty, by a committee's disagreement
on where the objects are, or by their pixels' uncertainty."""

from __future__ import annotations

import numbers
from typing import Any, Optional

import numpy as np

from .. import _checks as checks
from .._catalog import ROW_MEASURES
from .._fields import check_nan_policy
from ..errors import InvalidInputError
from ..pools import Pool
from .base import Miner

__all__ = ["DetectionMiner", "LocalizationMiner", "SegmentationMiner"]


#: Per-box / per-pixel scores a detection or segmentation miner can rank by.
_ROW_MEASURES = ROW_MEASURES


def _check_measure(who: str, measure: Any, measures: tuple[str, ...]) -> str:
    return checks.choice(who, "measure", measure, measures)

def _check_box_reduce(who: str, reduce: Any) -> str:
    return checks.choice(who, "reduce", reduce, ("max", "mean", "sum"))

class DetectionMiner(Miner):
    """Images whose detections are most uncertain: each box of the ``boxes`` field is
    scored by ``measure`` (any per-row score of `pickaxe.scores` on its ``confidences``
    or ``logits``), and the boxes of an image reduced by ``reduce`` (``"max"``,
    ``"mean"`` or ``"sum"``), weighted by each box's ``objectness`` when
    ``objectness=True`` (see `pickaxe.detection`).

    ``boxes``: per row a list of structs ``{bbox: [x1, y1, x2, y2], confidences or logits:
    [C], objectness: float (optional)}``. **An image without boxes scores NaN and is never
    picked.**

    >>> import pyarrow as pa, pickaxe as px
    >>> pool = pa.table({"boxes": [[{"bbox": [0, 0, 5, 5], "confidences": [0.9, 0.1]}],
    ...                            [{"bbox": [1, 1, 4, 4], "confidences": [0.5, 0.5]}], []]})
    >>> px.DetectionMiner(size=2).mine(pool).ids.tolist()
    [1, 0]
    """

    fields = ("boxes",)

    def __init__(
        self,
        size: int,
        measure: str = "entropy",
        reduce: str = "max",
        objectness: bool = False,
        *,
        nan_policy: str = "raise",
        query: Optional[str] = None,
        **controls: Any,
    ) -> None:
        who = f"{type(self).__name__}()"
        super().__init__(size, query=query, **controls)
        self.measure = _check_measure(who, measure, _ROW_MEASURES)
        self.reduce = _check_box_reduce(who, reduce)
        self.objectness = bool(objectness)
        self.nan_policy = check_nan_policy(type(self).__name__, nan_policy)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, measure={self.measure!r}, "
                f"reduce={self.reduce!r}, objectness={self.objectness})")

    def score(self, pool: Pool, field: Optional[str]) -> tuple[np.ndarray, dict[str, Any]]:
        from .. import detection

        assert field is not None
        col = pool.columns[field]
        obj = _objectness(field, col) if self.objectness else None
        fn = getattr(detection, self.measure)
        info = {"field": field, "measure": self.measure, "reduce": self.reduce, "objectness": self.objectness}
        if len(col.bbox) == 0:  # no image of the batch has a box (its classes may be (0, 0))
            return np.full(pool.n_rows, np.nan), info
        try:
            values = fn(**{col.kind: col.classes}, offsets=col.offsets, reduce=self.reduce,
                        objectness=obj, nan_policy=self.nan_policy)
        except InvalidInputError as e:
            raise e.in_column(field) from None
        return values, info


def _objectness(column: str, col: Any) -> np.ndarray:
    if col.objectness is None:
        raise ValueError(
            f"column {column!r}: objectness=True needs an objectness value in every box struct; "
            "its structs have none"
        )
    return col.objectness


class LocalizationMiner(Miner):
    """Images whose committee (or dropout passes) disagrees about where the objects are:
    `pickaxe.detection.localization_disagreement` of the ``member_boxes`` field (per row
    one box list per member, M members in every row) against the reference prediction's
    ``boxes`` (per row a box list), reduced per image by ``reduce``.

    A reference box matched (greedy by confidence, IoU ≥ ``iou_threshold``, same class
    when ``per_class``) by K of the M members scores (1 − Σ IoU / M) + (M − K) / M + the
    mean KL of the matched members' class distributions from their mean. **An image
    without reference boxes scores NaN and is never picked.**
    """

    fields = ("member_boxes",)
    #: The reference prediction, read next to the field.
    also_reads = {"boxes": "the reference prediction's boxes"}

    def __init__(
        self,
        size: int,
        iou_threshold: float = 0.5,
        per_class: bool = False,
        reduce: str = "max",
        objectness: bool = False,
        *,
        query: Optional[str] = None,
        **controls: Any,
    ) -> None:
        who = f"{type(self).__name__}()"
        super().__init__(size, query=query, **controls)
        if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, numbers.Real) or not 0 < iou_threshold <= 1:
            raise ValueError(f"{who}: iou_threshold must be in (0, 1]; got {iou_threshold!r}")
        self.iou_threshold = float(iou_threshold)
        self.per_class = bool(per_class)
        self.reduce = _check_box_reduce(who, reduce)
        self.objectness = bool(objectness)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, iou_threshold={self.iou_threshold}, "
                f"per_class={self.per_class}, reduce={self.reduce!r})")

    def score(self, pool: Pool, field: Optional[str]) -> tuple[np.ndarray, dict[str, Any]]:
        from ..detection import localization_disagreement

        ref, mem = pool.columns["boxes"], pool.columns["member_boxes"]
        obj = _objectness("boxes", ref) if self.objectness else None
        try:
            values = localization_disagreement(
                boxes=ref.bbox, **{ref.kind: ref.classes}, offsets=ref.offsets,
                member_boxes=mem.bbox, **{f"member_{mem.kind}": mem.classes},
                member_offsets=mem.offsets, members=max(mem.members or 0, 1) if pool.n_rows else 1,
                iou_threshold=self.iou_threshold, per_class=self.per_class, reduce=self.reduce,
                objectness=obj,
            )
        except InvalidInputError as e:
            raise e.in_column("member_boxes" if (e.field or "").startswith("member_") else "boxes") from None
        info = {"iou_threshold": self.iou_threshold, "per_class": self.per_class, "reduce": self.reduce}
        return values, info


class SegmentationMiner(Miner):
    """Images whose segmentation is most uncertain: ``measure`` (any per-row score of
    `pickaxe.scores`) per pixel of the ``pixel_logits`` or ``pixel_confidences`` field
    (per row one image's class scores, (C, H, W) with ``class_axis=1`` or (H, W, C) with
    ``class_axis=-1``; every image of a pool the same size), reduced per image by
    ``reduce``: ``"mean"``, ``"max"`` or ``("top", q)`` (see `pickaxe.segmentation`).

    >>> import numpy as np, pickaxe as px
    >>> x = np.random.default_rng(0).normal(size=(6, 3, 8, 8)).astype(np.float32)
    >>> px.SegmentationMiner(size=2).mine({"pixel_logits": x}).ids.shape
    (2,)
    """

    fields = ("pixel_logits", "pixel_confidences")

    def __init__(
        self,
        size: int,
        measure: str = "entropy",
        reduce: Any = "mean",
        class_axis: int = 1,
        *,
        field: Optional[str] = None,
        nan_policy: str = "raise",
        query: Optional[str] = None,
        **controls: Any,
    ) -> None:
        from ..segmentation import parse_reduce

        who = f"{type(self).__name__}()"
        super().__init__(size, field, query=query, **controls)
        self.measure = _check_measure(who, measure, _ROW_MEASURES)
        if reduce is None:
            raise ValueError(f"{who}: a miner ranks images: reduce must be \"mean\", \"max\" or (\"top\", q); got None")
        parse_reduce(who[:-2], reduce)
        self.reduce = reduce
        if isinstance(class_axis, bool) or class_axis not in (1, -1):
            raise ValueError(f"{who}: class_axis must be 1 (rows (C, H, W)) or -1 (rows (H, W, C)); got {class_axis!r}")
        self.class_axis = int(class_axis)
        self.nan_policy = check_nan_policy(type(self).__name__, nan_policy)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, measure={self.measure!r}, "
                f"reduce={self.reduce!r}, class_axis={self.class_axis})")

    def score(self, pool: Pool, field: Optional[str]) -> tuple[np.ndarray, dict[str, Any]]:
        from .. import segmentation

        assert field is not None
        kind = field[len("pixel_"):]
        fn = getattr(segmentation, self.measure)
        try:
            values = fn(**{kind: pool.columns[field]}, class_axis=self.class_axis, reduce=self.reduce,
                        nan_policy=self.nan_policy)
        except InvalidInputError as e:
            raise e.in_column(field) from None
        # ("top", q) as a list: info stays what JSON gives back (Selection files, Ray)
        reduce = list(self.reduce) if isinstance(self.reduce, tuple) else self.reduce
        info = {"field": field, "measure": self.measure, "reduce": reduce}
        return values, info
