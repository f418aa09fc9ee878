"""`Selection`: what a miner (or `combine`) picked, highest score first."""

from __future__ import annotations

import datetime
import decimal
import json
import math
import numbers
from typing import Any, Mapping, Optional

import numpy as np

from .pools.ids import check_unique
from ._output import KINDS_TEXT, atomic_output, output_kind

__all__ = ["Selection"]


class Selection:
    """The rows a miner picked, highest score first.

    Attributes:
        ids: (k,) the picked rows' ids (the pool's ``id`` column, or row numbers).
        scores: (k,) float, each row's score under the miner that picked it (higher
            means more worth labeling; scores of different miners are not comparable).
        miners: (k,) str, the name of the miner that picked each row.
        metadata: column name -> (k,) array, the pool's metadata columns for the rows.
        info: how the selection was made (e.g. ``{"search": "exact"}`` for embedding
            miners: whether exact search or the hnswlib index found the neighbours).
        groups: (k,) object, each row's group when the miner was stratified
            (``stratify=``, `pickaxe.batch_controls`), else None. Written as a ``group``
            column (after ``miner``) by `columns` and the writers only when present.

    >>> s = Selection(np.array([7, 3]), np.array([0.9, 0.4]), "entropy")
    >>> s.ids.tolist(), s.miners.tolist()
    ([7, 3], ['entropy', 'entropy'])
    """

    __slots__ = ("ids", "scores", "miners", "metadata", "info", "_groups")

    def __init__(
        self,
        ids: np.ndarray,
        scores: np.ndarray,
        miners: "str | np.ndarray",
        metadata: Optional[Mapping[str, np.ndarray]] = None,
        info: Optional[Mapping[str, Any]] = None,
        groups: Optional[Any] = None,
    ) -> None:
        self.ids = np.asarray(ids)
        self.scores = np.asarray(scores)
        if isinstance(miners, str):
            miners = np.full(len(self.ids), miners, dtype=object)
        self.miners = np.asarray(miners, dtype=object)
        self.metadata = {k: np.asarray(v) for k, v in (metadata or {}).items()}
        self.info = dict(info or {})
        n = len(self.ids)
        for name, col in [("scores", self.scores), ("miners", self.miners)] + list(
            self.metadata.items()
        ):
            if len(col) != n:
                raise ValueError(f"Selection: {name} has {len(col)} rows; ids has {n}")
        if self.ids.ndim != 1:
            raise ValueError(f"Selection: ids must be 1-D; got shape {self.ids.shape}")
        check_unique("Selection", self.ids, lambda p: f"position {p}")
        self._groups: Optional[np.ndarray] = None
        self.groups = groups

    @property
    def groups(self) -> Optional[np.ndarray]:
        return self._groups

    @groups.setter
    def groups(self, value: Any) -> None:
        if value is None:
            self._groups = None
            return
        g = np.empty(len(value), dtype=object)
        g[:] = list(value)
        if len(g) != len(self.ids):
            raise ValueError(f"Selection: groups has {len(g)} rows; ids has {len(self.ids)}")
        self._groups = g

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        head = ", ".join(str(i) for i in self.ids[:5].tolist())
        more = ", ..." if len(self) > 5 else ""
        names = sorted(set(self.miners.tolist()))
        return f"Selection({len(self)} rows by {', '.join(names) or 'no miner'}: ids [{head}{more}])"

    def columns(self) -> dict[str, np.ndarray]:
        """The selection as columns: ``id``, ``score``, ``miner``, then the metadata."""
        cols: dict[str, np.ndarray] = {
            "id": self.ids,
            "score": self.scores,
            "miner": self.miners.astype(str),
        }
        if self._groups is not None:
            cols["group"] = self._groups
        for name, col in self.metadata.items():
            cols.setdefault(name, col)
        return cols

    def to_arrow(self) -> Any:
        """A ``pyarrow.Table`` with columns id, score, miner and the metadata."""
        try:
            import pyarrow as pa
        except ImportError:
            raise ImportError("Selection.to_arrow() needs pyarrow: pip install pyarrow") from None
        return pa.table({k: pa.array(v) for k, v in self.columns().items()})

    def to_parquet(self, path: Any) -> None:
        """Write the selection (`to_arrow`'s columns) to a Parquet file.

        The file is written beside `path` under a temporary name and renamed over it
        once complete: on any failure (a full disk, an interrupt) the previous file at
        `path` is untouched and no partial file is left.
        """
        import pyarrow.parquet as pq

        table = self.to_arrow()
        with atomic_output(path, "wb") as f:
            pq.write_table(table, f)

    def to_csv(self, path_or_buf: Any) -> None:
        """Write the selection (`to_arrow`'s columns) as CSV to a path or a text stream.

        A path is written atomically, as `to_parquet` does.
        """
        import csv

        cols = self.columns()
        names = list(cols)
        rows = zip(*(_csv_cells(cols[n]) for n in names))
        if hasattr(path_or_buf, "write"):
            _write_csv(csv.writer(path_or_buf), names, rows)
        else:
            with atomic_output(path_or_buf, "w", newline="") as f:
                _write_csv(csv.writer(f), names, rows)

    def write(self, path: Any) -> None:
        """Write to ``.parquet``, ``.csv`` or ``.json`` (`to_label_studio`'s tasks, every
        metadata column under ``data``), chosen by the path's suffix (atomically: see
        `to_parquet`)."""
        kind = output_kind(path)
        if kind == "parquet":
            self.to_parquet(path)
        elif kind == "csv":
            self.to_csv(path)
        elif kind == "json":
            self.to_label_studio(path)
        else:
            raise ValueError(f"Selection.write(): write {KINDS_TEXT}; got {str(path)!r}")

    def to_label_studio(self, path: Any, data: Any = None) -> None:
        """Write the selection as Label Studio's task import JSON: a list of tasks, one per
        picked row, highest score first, to import into a project (Data Import, or the
        API's task import).

        Each task is ``{"data": {...}, "meta": {"id": ..., "score": ..., "miner": ...}}``
        (and ``"group"`` in ``meta`` when the miner was stratified). ``data`` holds what the
        labeling configuration's ``$key`` variables read — e.g. ``<Image value="$image"/>``
        reads ``data["image"]``; ``meta`` is kept with the task, so the picked row's id,
        score and miner travel with it. The pool's id is not the task's top-level ``"id"``,
        which Label Studio reserves for its own numbering.

        Parameters
        ----------
        path : str or os.PathLike
            The ``.json`` file, written atomically as `to_parquet` writes.
        data : None, str, sequence of str, or mapping of str to str
            Which columns go under ``"data"``: None, every metadata column (the row's id
            under ``"id"`` when the selection has none); a column name or a list of them,
            each under its own name; or a mapping of task key to column name
            (``{"image": "url"}`` puts the ``url`` column under ``"image"``). ``"id"``,
            ``"score"``, ``"miner"`` and ``"group"`` name the selection's own columns.

        Values become JSON: numbers, text, booleans; NaN, infinities and missing values
        ``null``; vectors lists; dates and times ISO 8601 text.

        >>> import json, os, tempfile
        >>> s = Selection(np.array([7, 3]), np.array([0.9, 0.4]), "margin",
        ...               {"image": np.array(["s3://b/7.png", "s3://b/3.png"])})
        >>> path = os.path.join(tempfile.mkdtemp(), "tasks.json")
        >>> s.to_label_studio(path)
        >>> json.load(open(path))[0]
        {'data': {'image': 's3://b/7.png'}, 'meta': {'id': 7, 'score': 0.9, 'miner': 'margin'}}
        """
        cols = self.columns()
        chosen = _task_data_columns(data, list(self.metadata), cols)
        data_cells = {key: _json_cells(name, cols[name]) for key, name in chosen.items()}
        meta_names = ["id", "score", "miner"] + (["group"] if self._groups is not None else [])
        meta_cells = {name: _json_cells(name, cols[name]) for name in meta_names}
        with atomic_output(path, "w", encoding="utf-8") as f:
            f.write("[")
            for i in range(len(self)):
                task = {"data": {k: v[i] for k, v in data_cells.items()},
                        "meta": {k: v[i] for k, v in meta_cells.items()}}
                f.write(("\n" if i == 0 else ",\n") + json.dumps(task, ensure_ascii=False, allow_nan=False))
            f.write("\n]\n")

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with columns id, score, miner and the metadata."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Selection.to_pandas() needs pandas: pip install pandas") from None
        return pd.DataFrame(self.columns())


def _csv_cells(col: np.ndarray) -> list:
    if col.ndim > 1:  # a vector per row: one cell of space-separated numbers
        return [" ".join(repr(v) for v in row.tolist()) for row in col]
    return col.tolist()


def _write_csv(writer: Any, names: list[str], rows: Any) -> None:
    writer.writerow(names)
    writer.writerows(rows)


def _task_data_columns(data: Any, metadata: list[str], cols: Mapping[str, Any]) -> dict[str, str]:
    """`to_label_studio`'s ``data=`` as task key -> column name, checked."""
    who = "Selection.to_label_studio()"
    if data is None:
        return {name: name for name in metadata} or {"id": "id"}
    if isinstance(data, str):
        chosen = {data: data}
    elif isinstance(data, Mapping):
        chosen = dict(data)
    else:
        try:
            chosen = {name: name for name in data}
        except TypeError:
            raise TypeError(f"{who}: data must be a column name, a list of them or a mapping of task key "
                            f"to column name; got {type(data).__name__}") from None
    if not chosen:
        raise ValueError(f"{who}: data names no column; a task needs at least one value under \"data\"")
    for key, name in chosen.items():
        if not isinstance(key, str) or not isinstance(name, str):
            raise TypeError(f"{who}: data's keys and column names must be str; got {key!r}: {name!r}")
        if name not in cols:
            raise ValueError(f"{who}: data names the column {name!r}, which the selection does not have; "
                             f"it has {', '.join(cols)}")
    return chosen


def _json_cells(name: str, col: np.ndarray) -> list:
    """A column as JSON values, one per row."""
    if col.dtype.kind == "M":  # datetime64: ISO 8601 text; NaT is null
        text = np.datetime_as_string(col)
        return [None if t == "NaT" else str(t) for t in text]
    if col.dtype.kind == "m":
        return [None if np.isnat(v) else v / np.timedelta64(1, "s") for v in col]
    return [_json_value(name, v) for v in col.tolist()]


def _json_value(name: str, v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, np.generic):
        return _json_value(name, v.item())
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_json_value(name, x) for x in (v.tolist() if isinstance(v, np.ndarray) else v)]
    if isinstance(v, Mapping):
        return {str(k): _json_value(name, x) for k, x in v.items()}
    if type(v).__name__ in ("NaTType", "NAType"):  # pandas' missing values (NaT is a datetime)
        return None
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, datetime.timedelta):
        return v.total_seconds()
    if isinstance(v, (numbers.Real, decimal.Decimal)):  # Fraction, Decimal
        return _json_value(name, float(v))
    raise TypeError(f"Selection.to_label_studio(): column {name!r} holds a {type(v).__name__} ({v!r:.60}), "
                    "which JSON cannot hold; give data= the columns to write, or convert this one to text")
