"""Box-list pool columns: per row a list of boxes (``boxes``) or a list over committee
members of lists of boxes (``member_boxes``), each box a struct

    {bbox: [x1, y1, x2, y2], confidences: [C] | logits: [C], objectness: float (optional)}

(other struct fields are ignored). In memory such a column is a `BoxColumn`: the boxes of
all rows stacked, ``bbox`` (B, 4), ``classes`` (B, C) and ``objectness`` (B,) or None,
with ``offsets`` over slots, a slot being a row (``boxes``) or a (row, member) pair
(``member_boxes``, image-major then member: the layout `pickaxe.detection` takes).

Arrow list-of-struct columns convert from their buffers (list offsets, struct children),
with no per-row Python loop. Nulls, a bbox that is not 4 numbers, class lists of
different lengths and rows with different numbers of members raise ValueError naming the
column, the row and the fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from .arrow import RowLabel, array_to_numpy, first_invalid, is_list_type, is_list_view, plain_label

#: The box-list fields and how deep their lists go (1: boxes, 2: members then boxes).
BOX_FIELDS: dict[str, int] = {"boxes": 1, "member_boxes": 2}


@dataclass(eq=False, slots=True)
class BoxColumn:
    """A box-list column of ``n_rows`` rows (see the module's docstring)."""

    bbox: np.ndarray
    classes: np.ndarray
    kind: str
    objectness: Optional[np.ndarray]
    offsets: np.ndarray
    members: Optional[int] = None

    @property
    def n_rows(self) -> int:
        return (len(self.offsets) - 1) // (self.members or 1) if self.members != 0 else 0

    def __len__(self) -> int:
        return self.n_rows

    @property
    def shape(self) -> tuple:
        """(n,) plus the per-row dims: (None,) boxes, or (M, None)."""
        if self.members is None:
            return (self.n_rows, None)
        return (self.n_rows, self.members, None)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.classes.dtype

    def __repr__(self) -> str:
        m = "" if self.members is None else f", {self.members} members"
        return f"BoxColumn({self.n_rows} rows{m}, {len(self.bbox)} boxes, {self.kind} {self.classes.shape})"

    def _slots(self, rows: np.ndarray) -> np.ndarray:
        if self.members is None:
            return rows
        m = self.members
        return (rows[:, None] * m + np.arange(m)).reshape(-1)

    def __getitem__(self, rows: Any) -> "BoxColumn":
        """The rows `rows` (a slice, or integer positions) as a new BoxColumn."""
        n = self.n_rows
        if isinstance(rows, slice):
            rows = np.arange(n)[rows]
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64, copy=False).reshape(-1)
        rows = np.where(rows < 0, rows + n, rows)
        slots = self._slots(rows)
        starts = self.offsets[slots]
        lengths = self.offsets[slots + 1] - starts
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        take = np.repeat(starts - offsets[:-1], lengths) + np.arange(int(offsets[-1]), dtype=np.int64)
        obj = None if self.objectness is None else self.objectness[take]
        return BoxColumn(self.bbox[take], self.classes[take], self.kind, obj, offsets, self.members)

    @staticmethod
    def concatenate(parts: Sequence["BoxColumn"]) -> "BoxColumn":
        first = parts[0]
        ms = {p.members for p in parts if p.n_rows}
        kinds = {p.kind for p in parts if len(p.bbox)}
        if len(ms) > 1 or len(kinds) > 1:
            raise ValueError("box columns of different members or class fields cannot be concatenated")
        nonempty = [p for p in parts if len(p.bbox)] or [first]
        widths = {p.classes.shape[1] for p in nonempty}
        if len(widths) > 1:
            raise ValueError(f"box columns with different numbers of classes {sorted(widths)}")
        c = widths.pop()
        dtype = np.result_type(*[p.classes.dtype for p in parts])
        bbox_dtype = np.result_type(*[p.bbox.dtype for p in parts])
        bbox = np.concatenate([p.bbox.astype(bbox_dtype, copy=False) for p in parts])
        classes = np.concatenate([p.classes.astype(dtype, copy=False).reshape(-1, c) for p in parts])
        has_obj = [p.objectness is not None for p in parts]
        obj = None
        if all(has_obj):
            obj = np.concatenate([p.objectness for p in parts])  # type: ignore[misc]
        base = np.cumsum([0] + [int(p.offsets[-1]) for p in parts[:-1]])
        offsets = np.concatenate([[0]] + [p.offsets[1:] + b for p, b in zip(parts, base)]).astype(np.int64)
        kind = next(iter(kinds)) if kinds else first.kind
        members = next(iter(ms)) if ms else first.members
        return BoxColumn(bbox, classes, kind, obj, offsets, members)


def _list_level(name: str, arr: Any, label: RowLabel, group: int, what: str) -> tuple[np.ndarray, Any]:
    """A list array's offsets (len + 1, from 0) and its values sliced to them; nulls raise
    naming the row (position // group)."""
    import pyarrow as pa

    t = arr.type
    if is_list_view(t):
        arr = arr.cast(pa.large_list(t.value_type))
        t = arr.type
    if not is_list_type(t):
        raise ValueError(
            f"column {name!r} holds {t}, not {what}: per row a list of box structs "
            "{bbox: [x1, y1, x2, y2], confidences or logits: [C], objectness (optional)}"
        )
    if arr.null_count:
        p = first_invalid(arr)
        what_null = "is null" if group == 1 else "holds a null member list"
        raise ValueError(f"column {name!r} {label(p // group)} {what_null}: a field has a value in every row")
    n = len(arr)
    if pa.types.is_fixed_size_list(t):
        d = int(t.list_size)
        return np.arange(n + 1, dtype=np.int64) * d, arr.values.slice(arr.offset * d, n * d)
    off = arr.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    start = int(off[0]) if off.size else 0
    return off - start, arr.values.slice(start, int(off[-1]) - start if off.size else 0)


def _numbers(name: str, arr: Any, label: RowLabel, dims: int) -> np.ndarray:
    x = array_to_numpy(name, arr, label)
    if x.ndim != 1 + dims:
        raise ValueError(f"column {name!r}: expected {'a list of numbers' if dims else 'a number'} per box; got {arr.type}")
    return x


def boxes_from_arrow(name: str, data: Any, label: RowLabel = plain_label) -> BoxColumn:
    """A box-list column (pa.Array or pa.ChunkedArray) as a `BoxColumn`; `label` names
    a row of `data` by its position (for errors)."""
    import pyarrow as pa

    depth = BOX_FIELDS[name]
    if isinstance(data, pa.ChunkedArray):
        data = data.combine_chunks() if data.num_chunks != 1 else data.chunk(0)
    if pa.types.is_dictionary(data.type):
        data = data.dictionary_decode()
    n = len(data)
    what = "lists of box structs" if depth == 1 else "lists (one per member) of lists of box structs"
    row_off, child = _list_level(name, data, label, 1, what)
    members: Optional[int] = None
    if depth == 2:
        lengths = np.diff(row_off)
        members = int(lengths[0]) if n else 0
        if n and members == 0:
            raise ValueError(f"column {name!r} {label(0)} has no members: a committee has at least one")
        bad = np.flatnonzero(lengths != members)
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"column {name!r} {label(i)}: {int(lengths[i])} members where {label(0)} has "
                f"{members}; every row needs the same committee"
            )
        slot_off, structs = _list_level(name, child, label, max(members, 1), "lists of box structs")
    else:
        slot_off, structs = row_off, child
    m = members or 1

    def box_label(b: int) -> str:
        slot = int(np.searchsorted(slot_off, b, side="right")) - 1
        return label(slot // m)

    t = structs.type
    if pa.types.is_null(t) and len(structs) == 0:  # e.g. pa.array([[], []]): no box anywhere
        return BoxColumn(np.zeros((0, 4)), np.zeros((0, 0)), "logits", None, slot_off, members)
    if not pa.types.is_struct(t):
        raise ValueError(
            f"column {name!r} holds lists of {t}, not box structs "
            "{bbox: [x1, y1, x2, y2], confidences or logits: [C], objectness (optional)}"
        )
    if structs.null_count:
        b = first_invalid(structs)
        raise ValueError(f"column {name!r} {box_label(b)} holds a null box")
    names = [t.field(i).name for i in range(t.num_fields)]
    children = dict(zip(names, structs.flatten()))
    if "bbox" not in children:
        raise ValueError(f"column {name!r}: its box structs have no bbox field (they have {', '.join(names) or 'none'})")
    kinds = [k for k in ("confidences", "logits") if k in children]
    if len(kinds) != 1:
        got = "both" if kinds else "neither"
        raise ValueError(
            f"column {name!r}: a box struct needs exactly one of confidences or logits; it has {got} "
            f"(fields: {', '.join(names)})"
        )
    kind = kinds[0]
    bbox = _numbers(f"{name}.bbox", children["bbox"], box_label, 1)
    if len(bbox) and bbox.shape[1] != 4:
        raise ValueError(
            f"column '{name}.bbox' {box_label(0)}: a bbox of {bbox.shape[1]} values; a bbox is [x1, y1, x2, y2]"
        )
    bbox = bbox.reshape(len(bbox), 4) if len(bbox) else np.zeros((0, 4), dtype=bbox.dtype)
    classes = _numbers(f"{name}.{kind}", children[kind], box_label, 1)
    obj = None
    if "objectness" in children:
        obj = _numbers(f"{name}.objectness", children["objectness"], box_label, 0)
    return BoxColumn(bbox, classes, kind, obj, slot_off, members)


def boxes_column(name: str, value: Any, label: RowLabel = plain_label) -> BoxColumn:
    """Any value a mapping pool may hold for a box-list field: a BoxColumn, an Arrow
    array, or Python lists of dicts (converted by Arrow)."""
    import pyarrow as pa

    if isinstance(value, BoxColumn):
        return value
    if not isinstance(value, (pa.Array, pa.ChunkedArray)):
        try:
            value = pa.array(list(value) if isinstance(value, np.ndarray) else value)
        except (pa.ArrowException, TypeError, ValueError) as e:
            raise ValueError(f"column {name!r} cannot be read as lists of box structs: {e}") from None
    return boxes_from_arrow(name, value, label)
