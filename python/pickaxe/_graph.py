"""`Graph`: an hnswlib graph held in hnswlib's own saved layout and searched by pickaxe.

hnswlib builds the graph (`ReferenceIndex`); once built it is written out with hnswlib's
``save_index``, hnswlib's copy is dropped, and the file's bytes are read back through the
same checks as `ReferenceIndex.load` (`pickaxe.index_file.graph`) into one buffer: the
96-byte header, the level-0 block (per element its links, vector and label) and the
upper-level lists. ``_core.graph_search`` (rust/pickaxe-core/src/hnsw.rs) searches that
buffer in place as hnswlib's ``knn_query`` does (same visits, same neighbours up to float
rounding), with pickaxe's run-time-dispatched SIMD distances, on pickaxe's threads, with
the GIL released and Ctrl-C honoured. So the graph lives once in memory (as hnswlib's
did), plus 12 bytes an element for the level and list offsets.
"""

from __future__ import annotations

from typing import BinaryIO, Optional

import numpy as np

from . import _core
from .index_file.graph import HNSW_HEADER


class Graph:
    """One hnswlib graph: ``header`` (the header's fields by name), ``level0`` (n, W)
    uint32 words, ``upper`` (the size words and upper-level lists, uint32), and per element
    its level and the word of its level-1 list in ``upper``."""

    def __init__(
        self,
        header: dict,
        level0: np.ndarray,
        upper: np.ndarray,
        levels: np.ndarray,
        upper_start: np.ndarray,
        metric: str,
    ) -> None:
        self.header = header
        self.level0 = level0
        self.upper = upper
        self.levels = np.ascontiguousarray(levels, dtype=np.uint32)
        self.upper_start = np.ascontiguousarray(upper_start, dtype=np.uint64)
        self.metric = metric
        self.size = int(level0.shape[0])
        self.offset_data = header["offsetData_"] // 4
        self.label_offset = header["label_offset_"] // 4
        self.dim = self.label_offset - self.offset_data
        self._rows: Optional[np.ndarray] = None  # element of each label, on first use

    def _layout(self) -> tuple[int, ...]:
        h = self.header
        return (
            self.offset_data,
            self.label_offset,
            self.dim,
            h["maxM0_"],
            h["maxM_"],
            h["enterpoint_node_"],
            h["maxlevel_"],
        )

    def search(self, queries: np.ndarray, k: int, ef: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        """hnswlib's ``knn_query`` of float32 (n, D) `queries` at search ef max(ef, k):
        labels (int64) and hnswlib's distances (float32: squared for l2), (n, k); a row
        short of k neighbours ends in (-1, inf)."""
        return _core.graph_search(
            self.level0,
            self.upper,
            self.upper_start,
            self.levels,
            self._layout(),
            self.metric,
            queries,
            k,
            ef,
            threads,
        )

    def labels(self) -> np.ndarray:
        """Each element's label (the reference row it holds), int64."""
        lo = self.level0[:, self.label_offset].astype(np.int64)
        return lo | (self.level0[:, self.label_offset + 1].astype(np.int64) << 32)

    def vectors(self, rows: Optional[np.ndarray] = None) -> np.ndarray:
        """The float32 vectors of reference `rows` (all by default), as the graph holds
        them (normalised for the cosine metric): a copy."""
        if self._rows is None:
            order = np.empty(self.size, dtype=np.int64)
            order[self.labels()] = np.arange(self.size)
            self._rows = order
        elements = self._rows if rows is None else self._rows[rows]
        words = self.level0[elements, self.offset_data : self.label_offset]
        return words.view(np.float32)

    @property
    def nbytes(self) -> int:
        """The size of `write`'s output."""
        return HNSW_HEADER.size + self.level0.nbytes + self.upper.nbytes

    def write(self, out: BinaryIO) -> None:
        """hnswlib's ``save_index`` bytes: the header, level 0, the upper lists."""
        out.write(HNSW_HEADER.pack(*self.header.values()))
        out.write(memoryview(self.level0).cast("B"))
        out.write(memoryview(self.upper).cast("B"))
