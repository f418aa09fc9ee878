"""`Selection`: what a miner (or `combine`) picked, highest score first."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from .pools.ids import check_unique
from ._output import atomic_output, output_kind

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
        """Write to ``.parquet`` or ``.csv``, chosen by the path's suffix (atomically:
        see `to_parquet`)."""
        kind = output_kind(path)
        if kind == "parquet":
            self.to_parquet(path)
        elif kind == "csv":
            self.to_csv(path)
        else:
            raise ValueError(f"Selection.write(): write .parquet or .csv; got {str(path)!r}")

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
