"""The exceptions pickaxe raises for bad data.

`InvalidInputError` is a `ValueError`, so ``except ValueError`` keeps working; its
attributes say where the fault is, so a program never has to parse the message:

>>> import numpy as np, pickaxe as px
>>> x = np.zeros((4, 3)); x[2, 1] = np.nan
>>> try:
...     px.scores.entropy(logits=x)
... except px.errors.InvalidInputError as e:
...     print(e.field, e.row, e.reason)
logits 2 NaN at class 1

Wrong kinds of argument raise `TypeError` and wrong values `ValueError`, as in numpy.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["InvalidInputError", "QueryError"]

_UNSET: Any = object()


class InvalidInputError(ValueError):
    """Bad data: a value, row, pixel or box that cannot be scored or a column that cannot
    be read.

    Attributes
    ----------
    field : str or None
        The field or array holding the fault (``"logits"``, ``"query_by_committee"``,
        ``"boxes"``, ``"id"``, ...).
    row : int or None
        The row: of the whole pool when the error comes from a miner (before any query,
        across batches, files and Ray workers), else of the array given. For segmentation
        and detection the row is the image.
    member : int or None
        The committee member or dropout pass, for stacked fields.
    image : int or None
        The image, for segmentation and detection arrays.
    pixel : tuple of int or None
        ``(y, x)`` of the pixel, for segmentation.
    box : int or None
        The box: its position among all boxes stacked (detection arrays), or within its
        image (``box_in_image``).
    box_in_image : int or None
        The box's position within its image (or its member's boxes).
    id : object or None
        The row's value in the pool's ``id`` column, where the pool has one.
    column : str or None
        The pool column holding the field, where it differs from the field (the box and
        pixel columns of the vision miners).
    reason : str
        What is wrong, e.g. ``"NaN at class 1"``.
    """

    def __init__(
        self,
        message: Optional[str] = None,
        *,
        kind: str = "message",
        field: Optional[str] = None,
        row: Optional[int] = None,
        member: Optional[int] = None,
        member_word: str = "member",
        image: Optional[int] = None,
        pixel: Optional[tuple[int, int]] = None,
        box: Optional[int] = None,
        box_in_image: Optional[int] = None,
        id: Any = _UNSET,
        column: Optional[str] = None,
        reason: str = "",
        prefix: str = "",
    ) -> None:
        self.kind = kind
        self.field = field
        self.row = row
        self.member = member
        self.member_word = member_word
        self.image = image
        self.pixel = pixel
        self.box = box
        self.box_in_image = box_in_image
        self.has_id = id is not _UNSET
        self.id = None if id is _UNSET else id
        self.column = column
        self.reason = reason if reason or message is None else message
        self.prefix = prefix
        self._message = message
        super().__init__(str(self))

    # -- the message, made from the attributes -----------------------------------------

    def __str__(self) -> str:
        if self.kind == "message":
            text = self._message if self._message is not None else self.reason
        else:
            text = f"{self._where()}: {self.reason}"
        return self.prefix + text

    def _id_value(self) -> Any:
        v = self.id
        return v.item() if hasattr(v, "item") and not isinstance(v, (str, bytes)) else v

    def _id_text(self) -> str:
        return f" (id {self._id_value()!r})" if self.has_id else ""

    def _member_text(self) -> str:
        return "" if self.member is None else f", {self.member_word} {self.member}"

    def _where(self) -> str:
        k, f = self.kind, self.field
        if k == "row":
            if self.row is None and self.has_id:  # a Ray Dataset: rows have ids, no numbers
                return f"{f} row with id {self._id_value()!r}{self._member_text()}"
            return f"{f} row {self.row}{self._id_text()}{self._member_text()}"
        if self.column is None:  # an array given to pickaxe.segmentation / detection
            if k == "pixel":
                y, x = self.pixel or (None, None)
                return f"{f} image {self.image}, pixel (row {y}, column {x}){self._member_text()}"
            if k == "box":
                return f"{f} box {self.box} (image {self.image}, box {self.box_in_image} of the image){self._member_text()}"
            if k == "box_array":
                if self.member is None:
                    return f"{f}[{self.box}] (image {self.image}, box {self.box_in_image} of the image)"
                return f"{f}[{self.box}] (image {self.image}, member {self.member}, box {self.box_in_image} of the member's)"
        else:  # a pool column read by a vision miner: the image is the pool's row
            head = f"column {self.column!r}: {f} of row {self.row}{self._id_text()}"
            if k == "pixel":
                y, x = self.pixel or (None, None)
                return f"{head}, pixel (y {y}, x {x}){self._member_text()}"
            if k == "box":
                return f"{head}, box {self.box_in_image}{self._member_text()}"
            if k == "box_array":
                if self.member is None:
                    return f"{head} (box {self.box_in_image} of the image)"
                return f"{head} (member {self.member}, box {self.box_in_image} of the member's)"
        raise AssertionError(f"unknown InvalidInputError kind {k!r}")

    # -- re-basing, as a batch's row becomes the pool's --------------------------------

    def _replace(self, **changes: Any) -> "InvalidInputError":
        attrs = self._attrs()
        attrs.update(changes)
        message = attrs.pop("message")
        return type(self)(message, **attrs)

    def _attrs(self) -> dict[str, Any]:
        attrs = {
            "message": self._message, "kind": self.kind, "field": self.field, "row": self.row,
            "member": self.member, "member_word": self.member_word, "image": self.image,
            "pixel": self.pixel, "box": self.box, "box_in_image": self.box_in_image,
            "column": self.column, "reason": self.reason, "prefix": self.prefix,
        }
        if self.has_id:
            attrs["id"] = self.id
        return attrs

    def with_row(self, row: Optional[int], id: Any = _UNSET) -> "InvalidInputError":
        """The same fault with its row re-based (a batch's row number becomes the
        pool's; None where rows have only ids), and the row's id where the pool has one."""
        changes: dict[str, Any] = {"row": None if row is None else int(row)}
        if id is not _UNSET:
            changes["id"] = id
        return self._replace(**changes)

    def in_column(self, column: str) -> "InvalidInputError":
        """The same fault, located in a pool column whose rows are the images of a
        segmentation or detection array (the image becomes the row)."""
        return self._replace(column=column, row=self.image)

    def with_prefix(self, prefix: str) -> "InvalidInputError":
        """The same fault, its message led by `prefix` (e.g. the function's name)."""
        return self._replace(prefix=prefix + self.prefix)

    def __reduce__(self) -> Any:
        # keyword arguments survive pickling (Ray ships the exception itself)
        return (_rebuild, (type(self), self._attrs()))


def _rebuild(cls: type, attrs: dict[str, Any]) -> InvalidInputError:
    attrs = dict(attrs)
    message = attrs.pop("message")
    return cls(message, **attrs)


class QueryError(ValueError):
    """A ``query`` that is not one condition over the pool's columns, or that fails on
    them (an unknown column, a type mismatch, a function that is not allowed).

    Attributes
    ----------
    query : str
        The query as given.
    reason : str
        What is wrong with it.
    columns : str
        The pool's columns with their SQL types, ``"name TYPE, ..."``.
    """

    def __init__(self, who: str, query: str, reason: str, columns: str) -> None:
        self.who = who
        self.query = query
        self.reason = reason
        self.columns = columns
        super().__init__(self.message())

    def message(self, name: str = "A query is", quoted: Optional[str] = None) -> str:
        """The message; the command line words it for ``--query``."""
        from .pools.connection import shown

        end = "" if self.reason.endswith((".", "?", "!")) else "."
        head = f"{self.who}: the query {quoted or shown(self.query)} failed"
        return f"{head}: {self.reason}{end}\n{name} one condition over the pool's columns (SQL types): {self.columns}"

    def __reduce__(self) -> Any:
        return (type(self), (self.who, self.query, self.reason, self.columns))
