"""A `ReferenceIndex` file's hnswlib graph (``index.hnsw``), checked before hnswlib sees it.

hnswlib trusts its file: an entry point, neighbour id or offset out of range makes it read
outside its buffers on the first query (a segfault, or wrong answers), and it takes the
dimension from the caller, not the file. So the graph's header is checked against
``meta.json`` (element count, dimension through the per element sizes and offsets, M,
ef_construction) and against itself (entry point, maximum level); then, with numpy over
the whole level-0 block in bounded chunks, every link count, neighbour id, delete mark,
label and vector; then every upper-level link list (size, level, link count, neighbour
ids, and that a neighbour at level l has a level >= l, which hnswlib's greedy descent
assumes), and that the data ends where the layout says. The checked bytes go into one
buffer that pickaxe searches in place (`pickaxe._graph.Graph`); hnswlib never loads them.
"""

from __future__ import annotations

import bisect
import math
import struct
import zipfile
from typing import Any, NoReturn

import numpy as np

from .members import CHUNK_BYTES, META, check_vectors, expect_end, fail, read_bytes

#: hnswlib 0.8's graph header: offsetLevel0_, max_elements_, cur_element_count,
#: size_data_per_element_, label_offset_, offsetData_ (size_t each), maxlevel_ (int),
#: enterpoint_node_ (unsigned int), maxM_, maxM0_, M_ (size_t), mult_ (double),
#: ef_construction_ (size_t); little-endian, no padding.
HNSW_HEADER = struct.Struct("<QQQQQQiIQQQdQ")
HNSW_HEADER_FIELDS = (
    "offsetLevel0_",
    "max_elements_",
    "cur_element_count",
    "size_data_per_element_",
    "label_offset_",
    "offsetData_",
    "maxlevel_",
    "enterpoint_node_",
    "maxM_",
    "maxM0_",
    "M_",
    "mult_",
    "ef_construction_",
)
#: hnswlib caps M here (with a warning) and builds maxM_ = M_, maxM0_ = 2 M_.
HNSW_M_CAP = 10_000
#: hnswlib draws an element's level as int(-ln(u) * mult_) with u a double in (0, 1);
#: -ln of the smallest positive double is 744.4, so no level exceeds 745 * mult_.
HNSW_MAX_NEG_LOG = 745.0
#: Link counts are 16-bit; the other two bytes of a count word hold hnswlib's delete mark
#: (which pickaxe never sets) and padding.
LINK_COUNT_MASK = 0xFFFF


class Layout:
    """What meta.json implies about the graph file."""

    def __init__(self, meta: dict) -> None:
        self.n, self.dim = meta["size"], meta["dim"]
        self.M = min(meta["M"], HNSW_M_CAP)
        self.maxM, self.maxM0 = self.M, 2 * self.M
        self.ef_construction = max(meta["ef_construction"], self.M)
        self.mult = 1.0 / math.log(self.M)
        self.links0_bytes = 4 + 4 * self.maxM0  # count word + maxM0 ids
        self.vector_bytes = 4 * self.dim  # float32 in every hnswlib space
        self.element_bytes = self.links0_bytes + self.vector_bytes + 8  # + size_t label
        self.level_bytes = 4 + 4 * self.maxM  # one upper-level list: count word + maxM ids
        self.max_level = int(HNSW_MAX_NEG_LOG * self.mult)
        self.level0_end = HNSW_HEADER.size + self.n * self.element_bytes
        # Every element has a u32 size word after level 0, then its upper lists.
        self.min_size = self.level0_end + 4 * self.n
        self.max_size = self.min_size + self.n * self.max_level * self.level_bytes


def _check_header(h: dict, lay: Layout) -> None:
    def bad(field: str, what: str) -> NoReturn:
        fail(f"index.hnsw header {field}", f"{h[field]}: {what}")

    n = lay.n
    if h["offsetLevel0_"] != 0:
        bad("offsetLevel0_", "hnswlib writes 0")
    if h["cur_element_count"] != n:
        bad("cur_element_count", f"{META} size is {n}")
    if h["max_elements_"] < n:
        bad("max_elements_", f"fewer than the {n} elements")
    if h["maxM_"] != lay.maxM or h["M_"] != lay.M:
        field = "maxM_" if h["maxM_"] != lay.maxM else "M_"
        bad(field, f"{META} M = {lay.M} gives maxM_ = M_ = {lay.M}")
    if h["maxM0_"] != lay.maxM0:
        bad("maxM0_", f"hnswlib uses 2 M = {lay.maxM0} links at level 0")
    if h["size_data_per_element_"] != lay.element_bytes:
        graph_dim = (h["size_data_per_element_"] - lay.links0_bytes - 8) / 4
        plausible = graph_dim.is_integer() and 0 < graph_dim < 2**31
        also = f" (the graph's vectors have {int(graph_dim)})" if plausible else ""
        bad(
            "size_data_per_element_",
            f"{lay.maxM0} links at level 0, {lay.dim} float32 dimensions ({META} dim){also} "
            f"and a label take {lay.element_bytes} bytes",
        )
    if h["offsetData_"] != lay.links0_bytes:
        bad("offsetData_", f"the vector follows the {lay.links0_bytes}-byte level-0 link list")
    if h["label_offset_"] != lay.links0_bytes + lay.vector_bytes:
        bad(
            "label_offset_",
            f"the label follows the {lay.vector_bytes}-byte vector at "
            f"{lay.links0_bytes + lay.vector_bytes}",
        )
    mult = h["mult_"]
    if not (math.isfinite(mult) and math.isclose(mult, lay.mult, rel_tol=1e-9)):
        bad("mult_", f"hnswlib uses 1/ln(M) = {lay.mult!r}")
    if h["ef_construction_"] != lay.ef_construction:
        bad(
            "ef_construction_",
            f"{META} ef_construction and M give max(ef_construction, M) = {lay.ef_construction}",
        )
    if not 0 <= h["maxlevel_"] <= lay.max_level:
        bad("maxlevel_", f"levels run from 0 to at most {lay.max_level} for M = {lay.M}")
    if h["enterpoint_node_"] >= n:
        bad("enterpoint_node_", f"not an element of the {n}-element graph")


def _check_level0(
    block: np.ndarray, first: int, lay: Layout, labels: np.ndarray, metric: str
) -> None:
    """Elements `first`.. of level 0, as a (rows, element_bytes) uint8 block."""
    rows = block.shape[0]
    n, maxM0 = lay.n, lay.maxM0
    words = block[:, : lay.links0_bytes].view("<u4")  # (rows, 1 + maxM0)
    head = words[:, 0]
    counts = head & LINK_COUNT_MASK
    marks = head >> 16
    if (marks != 0).any():
        i = int(np.flatnonzero(marks)[0])
        fail(
            f"index.hnsw level 0, element {first + i}",
            f"link count word {int(head[i]):#010x} has the delete mark or padding set; "
            "pickaxe never deletes",
        )
    if (counts > maxM0).any():
        i = int(np.flatnonzero(counts > maxM0)[0])
        fail(
            f"index.hnsw level 0, element {first + i}",
            f"link count {int(counts[i])} exceeds maxM0_ = {maxM0}",
        )
    links = words[:, 1:]
    bad = (links >= n) & (np.arange(maxM0) < counts[:, None])
    if bad.any():
        i, j = (int(x) for x in np.argwhere(bad)[0])
        fail(
            f"index.hnsw level 0, element {first + i}",
            f"link {j} is {int(links[i, j])}, not an element of the {n}-element graph",
        )
    vec = block[:, lay.links0_bytes : lay.links0_bytes + lay.vector_bytes].view("<f4")
    check_vectors("index.hnsw vectors", vec, first, metric, cosine_unit=metric == "cosine")
    labels[first : first + rows] = block[:, lay.links0_bytes + lay.vector_bytes :].view("<u8")[:, 0]


def _check_labels(labels: np.ndarray, n: int) -> None:
    """pickaxe labels the rows 0..n-1 (in the order threads inserted them)."""
    big = labels >= n
    if big.any():
        i = int(np.flatnonzero(big)[0])
        fail(
            f"index.hnsw level 0, element {i}",
            f"label {int(labels[i])} is not a row of the {n}-row reference",
        )
    counts = np.bincount(labels.astype(np.intp), minlength=n)
    if (counts != 1).any():
        row = int(np.flatnonzero(counts != 1)[0])
        what = "no element carries" if counts[row] == 0 else f"{int(counts[row])} elements carry"
        fail("index.hnsw labels", f"{what} label {row}; each row 0..{n - 1} labels one element")


def _check_upper(
    tail: np.ndarray, lay: Layout, maxlevel: int, enterpoint: int
) -> tuple[np.ndarray, np.ndarray]:
    """The part after level 0, as little-endian u32 words: per element a byte count, then
    that many bytes of upper-level lists (count word + maxM ids per level). Returns each
    element's level and the word of its level-1 list (0 for level-0 elements)."""
    n, T = lay.n, len(tail)
    per_level = lay.level_bytes // 4
    levels = np.zeros(n, dtype=np.int64)
    owners: list[int] = []
    starts: list[int] = []
    # Most elements have no upper levels (size word 0): jump from one nonzero size word to
    # the next, one step per element that has upper levels.
    nonzero = np.flatnonzero(tail).tolist()
    p = 0  # index into `nonzero`
    j = 0  # word position of element k's size word
    k = 0
    while k < n:
        p = bisect.bisect_left(nonzero, j, p)
        q = nonzero[p] if p < len(nonzero) else T
        if k + (q - j) >= n:  # the remaining elements all have size 0
            j += n - k
            k = n
            break
        k += q - j
        j = q
        size = int(tail[j])
        where = f"index.hnsw upper levels, element {k}"
        if size % lay.level_bytes:
            fail(
                where,
                f"link list size {size} bytes is not a whole number of "
                f"{lay.level_bytes}-byte levels",
            )
        level = size // lay.level_bytes
        if level > maxlevel:
            fail(where, f"level {level} exceeds the header's maxlevel_ = {maxlevel}")
        if j + 1 + level * per_level > T:
            fail(where, f"its {size}-byte link list runs past the end of the data (truncated)")
        levels[k] = level
        owners.append(k)
        starts.append(j + 1)
        j += 1 + level * per_level
        k += 1
    if j > T:
        fail(
            "index.hnsw",
            f"the data ends {4 * (j - T)} bytes before its last element's size word (truncated)",
        )
    if j < T:
        fail("index.hnsw", f"{4 * (T - j)} bytes follow the last element's link lists")
    top = int(levels.max())
    if top != maxlevel:
        fail("index.hnsw header maxlevel_", f"{maxlevel}, but the highest element level is {top}")
    if levels[enterpoint] != maxlevel:
        fail(
            "index.hnsw header enterpoint_node_",
            f"{enterpoint} has level {int(levels[enterpoint])}; the entry point is on the top "
            f"level {maxlevel}",
        )
    start = np.zeros(n, dtype=np.uint64)
    if not owners:
        return levels, start
    own = np.asarray(owners, dtype=np.int64)
    start[own] = starts
    per_owner = levels[own]
    total = int(per_owner.sum())
    first_of = np.repeat(np.cumsum(per_owner) - per_owner, per_owner)
    within = np.arange(total) - first_of  # 0-based level index within its owner
    list_level = within + 1
    list_owner = np.repeat(own, per_owner)
    list_start = np.repeat(np.asarray(starts, dtype=np.int64), per_owner) + within * per_level
    head = tail[list_start]
    counts = head & LINK_COUNT_MASK

    def where(i: int) -> str:
        return f"index.hnsw level {int(list_level[i])}, element {int(list_owner[i])}"

    if ((head >> 16) != 0).any():
        i = int(np.flatnonzero(head >> 16)[0])
        fail(where(i), f"link count word {int(head[i]):#010x} has padding bits set")
    if (counts > lay.maxM).any():
        i = int(np.flatnonzero(counts > lay.maxM)[0])
        fail(where(i), f"link count {int(counts[i])} exceeds maxM_ = {lay.maxM}")
    links = tail[list_start[:, None] + 1 + np.arange(lay.maxM)]
    used = np.arange(lay.maxM) < counts[:, None]
    bad = used & (links >= n)
    if bad.any():
        i, c = (int(x) for x in np.argwhere(bad)[0])
        fail(where(i), f"link {c} is {int(links[i, c])}, not an element of the {n}-element graph")
    # hnswlib's descent reads the neighbour's list at this level: it must have one.
    low = used & (levels[np.where(used, links, 0)] < list_level[:, None])
    if low.any():
        i, c = (int(x) for x in np.argwhere(low)[0])
        t = int(links[i, c])
        fail(
            where(i),
            f"link {c} is element {t}, whose level {int(levels[t])} is below {int(list_level[i])}",
        )
    return levels, start


def read_graph(f: Any, size: int, meta: dict) -> Any:
    """Check the `size` bytes of index.hnsw read from `f` into one buffer: the searchable
    `pickaxe._graph.Graph`."""
    from .._graph import Graph

    lay = Layout(meta)
    buf = np.empty(size, dtype=np.uint8)
    raw = read_bytes(f, HNSW_HEADER.size, "index.hnsw header")
    h = dict(zip(HNSW_HEADER_FIELDS, HNSW_HEADER.unpack(raw)))
    _check_header(h, lay)
    buf[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    labels = np.empty(lay.n, dtype=np.uint64)
    rows = max(1, CHUNK_BYTES // lay.element_bytes)
    pos = HNSW_HEADER.size
    for first in range(0, lay.n, rows):
        count = min(rows, lay.n - first)
        chunk = read_bytes(f, count * lay.element_bytes, "index.hnsw level 0")
        block = np.frombuffer(chunk, dtype=np.uint8).reshape(count, lay.element_bytes)
        _check_level0(block, first, lay, labels, meta["metric"])
        buf[pos : pos + len(chunk)] = block.reshape(-1)
        pos += len(chunk)
    _check_labels(labels, lay.n)
    rest = size - lay.level0_end
    if rest % 4:
        fail("index.hnsw", f"the {rest} bytes after level 0 are not whole 4-byte words")
    chunk = read_bytes(f, rest, "index.hnsw upper levels")
    expect_end(f, "index.hnsw")
    buf[pos:] = np.frombuffer(chunk, dtype=np.uint8)
    del chunk
    upper = buf[lay.level0_end :].view("<u4")
    levels, start = _check_upper(upper, lay, h["maxlevel_"], h["enterpoint_node_"])
    level0 = buf[HNSW_HEADER.size : lay.level0_end].view("<u4").reshape(lay.n, -1)
    return Graph(h, level0, upper, levels, start, meta["metric"])


def load_graph(f: Any, info: zipfile.ZipInfo, meta: dict) -> Any:
    return read_graph(f, info.file_size, meta)
