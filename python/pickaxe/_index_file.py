"""Reading a `ReferenceIndex` file: every field is checked before numpy or hnswlib sees it.

A saved index is a zip (members stored, not compressed) holding ``meta.json`` and either
``reference.npy`` (method ``"exact"``) or ``index.hnsw`` (method ``"hnsw"``, hnswlib 0.8's
``save_index`` output). docs/index-format.md describes the layout for users.

hnswlib trusts its file: an entry point, neighbour id or offset out of range makes it read
outside its buffers on the first query (a segfault, or wrong answers), and it takes the
dimension from the caller, not the file. So `read_index` checks, before hnswlib loads
anything:

- the path is a regular file (a FIFO or ``/dev/zero`` would hang or never end);
- the zip holds exactly the expected members, stored uncompressed, with declared sizes
  that agree with each other, with the file's size and with what ``meta.json`` implies;
- ``meta.json``: its size, its keys and their types, the format and its version;
- the graph's header against ``meta.json`` (element count, dimension through the per
  element sizes and offsets, M, ef_construction) and against itself (entry point, maximum
  level), then, with numpy over the whole level-0 block in bounded chunks, every link count,
  neighbour id, delete mark, label and vector; then every upper-level link list (size,
  level, link count, neighbour ids, and that a neighbour at level l has a level >= l, which
  hnswlib's greedy descent assumes), and that the data ends where the layout says;
- the stored vectors: finite, with squared norms that float32 (hnswlib) or the reference's
  dtype (exact search) can hold with room to spare, and of unit length (or zero) for the
  cosine metric, the only trace the graph keeps of its metric (hnswlib normalises them).

Anything else is a ValueError naming the member and the field. Only the checked bytes are
written to the temporary file hnswlib loads.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from typing import Any, BinaryIO, NoReturn, Optional

import numpy as np

FORMAT = "pickaxe-reference-index"
FORMAT_VERSION = 1

META = "meta.json"
#: The data member of each method.
MEMBERS = {"exact": "reference.npy", "hnsw": "index.hnsw"}
METRICS = ("cosine", "l2", "ip")

#: meta.json is a dozen keys; anything longer is not one of ours.
META_MAX_BYTES = 64 * 1024
#: The .npy header np.save writes is about 128 bytes; numpy refuses over 10,000 by default.
NPY_MAX_HEADER = 10_000

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
#: Internal ids are 32-bit.
HNSW_MAX_ELEMENTS = 2**32 - 1
#: Cosine vectors are stored normalised; float32 normalisation is good to ~1e-6 · D.
UNIT_NORM_TOLERANCE = 1e-3
#: Level-0 bytes checked per numpy pass: bounds the temporaries for any graph size.
CHUNK_BYTES = 16 * 1024 * 1024
#: Bytes copied per read when streaming a member.
COPY_BYTES = 1024 * 1024


class IndexFileError(ValueError):
    """A check of the file failed (turned into the caller's ValueError)."""


def _fail(where: str, what: str) -> NoReturn:
    raise IndexFileError(f"{where}: {what}")


# -- the file itself -----------------------------------------------------------------------


def _open_regular(who: str, path: str) -> tuple[BinaryIO, int]:
    """`path` opened for reading, and its size, if it is a regular file.

    The path is stat'ed before it is opened, so a device (``/dev/zero``) is never opened,
    and opened with O_NONBLOCK, so a FIFO swapped in between cannot block; the open file is
    stat'ed again. FileNotFoundError and PermissionError pass through.
    """
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )

    def refuse(mode: int) -> NoReturn:
        kind = next((name for test, name in kinds if test(mode)), "not a regular file")
        raise ValueError(
            f"{who}: the path is {kind}; a ReferenceIndex is a regular file written by "
            "ReferenceIndex.save"
        )

    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        refuse(st.st_mode)
    flags = os.O_RDONLY
    for name in ("O_NONBLOCK", "O_NOCTTY", "O_CLOEXEC", "O_BINARY"):
        flags |= getattr(os, name, 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            refuse(st.st_mode)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def _read(f: Any, n: int, where: str) -> bytes:
    """Exactly `n` bytes of a member (the CRC is checked when its last byte is read)."""
    try:
        data = f.read(n)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        _fail(where, f"the data is truncated or corrupted ({e})")
    if len(data) != n:
        _fail(where, f"the data is truncated: {len(data)} bytes where {n} were expected")
    return data


def _read_into(f: Any, buf: memoryview, where: str) -> None:
    pos = 0
    while pos < len(buf):
        piece = _read(f, min(COPY_BYTES, len(buf) - pos), where)
        buf[pos : pos + len(piece)] = piece
        pos += len(piece)


def _expect_end(f: Any, where: str) -> None:
    """The member is fully read: reading on hits its end and its CRC matches."""
    try:
        extra = f.read(1)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        _fail(where, f"the data is corrupted ({e})")
    if extra:
        _fail(where, "the data runs past the size its header implies")


def _check_member(info: zipfile.ZipInfo, file_size: int, lo: int, hi: int, why: str) -> None:
    """A member's directory entry, before any of its bytes are read: stored (pickaxe never
    compresses, so nothing is inflated), not encrypted, the same size stored and declared,
    inside the file, and between `lo` and `hi` bytes as meta.json implies."""
    name = info.filename
    if info.compress_type != zipfile.ZIP_STORED:
        _fail(
            name,
            f"compression method {info.compress_type}; pickaxe stores members uncompressed "
            f"(method {zipfile.ZIP_STORED})",
        )
    if info.flag_bits & 0x1:
        _fail(name, "the member is encrypted")
    if info.compress_size != info.file_size:
        _fail(
            name,
            f"declared size {info.file_size} bytes differs from its stored size "
            f"{info.compress_size} bytes (an uncompressed member has one size)",
        )
    # 30 bytes: the fixed part of the member's local header, which precedes its data.
    if info.header_offset + 30 + info.compress_size > file_size:
        _fail(
            name,
            f"declared size {info.compress_size} bytes at offset {info.header_offset} runs "
            f"past the end of the {file_size}-byte file (truncated)",
        )
    if not lo <= info.file_size <= hi:
        span = f"{lo} bytes" if lo == hi else f"between {lo} and {hi} bytes"
        _fail(name, f"declared size {info.file_size} bytes, but {why} takes {span}")


# -- meta.json -----------------------------------------------------------------------------


def _int_field(meta: dict, key: str, lo: int, hi: Optional[int] = None, none: bool = False) -> Any:
    where = f"{META} {key}"
    if key not in meta:
        _fail(where, "missing")
    v = meta[key]
    if v is None and none:
        return None
    if type(v) is not int:  # bool is an int subclass; floats and strings are not ints here
        _fail(where, f"must be an integer{' or null' if none else ''}; got {v!r}")
    if v < lo or (hi is not None and v > hi):
        bound = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        _fail(where, f"must be {bound}; got {v}")
    return v


def _parse_meta(raw: bytes) -> dict:
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        _fail(META, f"not valid JSON ({e})")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        _fail(META, f'not a pickaxe ReferenceIndex file (no "format": "{FORMAT}")')
    version = meta.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise IndexFileError(
            f"written in format version {version!r} (by pickaxe "
            f"{meta.get('pickaxe_version')}); this pickaxe reads version {FORMAT_VERSION}. "
            "Rebuild the index from the embeddings."
        )
    out: dict[str, Any] = {"pickaxe_version": meta.get("pickaxe_version")}
    for key in ("metric", "method"):
        if key not in meta:
            _fail(f"{META} {key}", "missing")
    metric = meta.get("metric")
    if not (isinstance(metric, str) and metric in METRICS):
        _fail(f"{META} metric", f'must be one of "cosine", "l2", "ip"; got {metric!r}')
    method = meta.get("method")
    if not (isinstance(method, str) and method in MEMBERS):
        _fail(f"{META} method", f'must be "exact" or "hnsw"; got {method!r}')
    out["metric"], out["method"] = metric, method
    out["dim"] = _int_field(meta, "dim", 1, 2**31 - 1)  # hnswlib keeps dim as a C int
    hi = HNSW_MAX_ELEMENTS if method == "hnsw" else None
    out["size"] = _int_field(meta, "size", 1, hi)
    # M = 1 gives hnswlib mult_ = 1/ln(1) = inf: it cannot build that graph.
    out["M"] = _int_field(meta, "M", 2 if method == "hnsw" else 1)
    out["ef_construction"] = _int_field(meta, "ef_construction", 1)
    out["ef"] = _int_field(meta, "ef", 1, none=True)
    out["threads"] = _int_field(meta, "threads", 1, none=True)
    out["seed"] = _int_field(meta, "seed", 0, 2**64 - 1)
    return out


# -- the stored vectors --------------------------------------------------------------------


def _check_vectors(
    where: str, v: np.ndarray, first_row: int, metric: str, cosine_unit: bool
) -> None:
    """Finite rows whose squared norms leave room in `v`'s dtype (an eighth of its largest
    value, so distances to ordinary queries stay finite), of unit length or zero if
    `cosine_unit`. `first_row` numbers the rows in messages."""
    sq = np.square(v, dtype=np.float64).sum(axis=1)
    limit = float(np.finfo(v.dtype).max) / 8
    bad = ~(sq <= limit)  # NaN compares False
    if cosine_unit:
        norm = np.sqrt(sq)
        bad |= ~((np.abs(norm - 1.0) <= UNIT_NORM_TOLERANCE) | (sq == 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        row = first_row + i
        if not np.isfinite(v[i]).all():
            j = int(np.flatnonzero(~np.isfinite(v[i]))[0])
            _fail(where, f"row {row} holds {v[i, j]} at position {j}; vectors must be finite")
        if not sq[i] <= limit:
            _fail(
                where,
                f"row {row} has squared norm {sq[i]:.3g}, beyond {limit:.3g}: distances to it "
                f"overflow {v.dtype}",
            )
        _fail(
            where,
            f"row {row} has norm {math.sqrt(sq[i]):.6g}; an index with metric {metric!r} "
            "stores unit-length (or zero) vectors, so the graph was built for another "
            "metric or is corrupted",
        )


# -- reference.npy -------------------------------------------------------------------------


def _read_exact(f: Any, info: zipfile.ZipInfo, meta: dict) -> np.ndarray:
    name = info.filename
    n, d = meta["size"], meta["dim"]
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, NPY_MAX_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, NPY_MAX_HEADER)
        else:
            _fail(name, f"npy format version {version}; np.save writes 1.0 or 2.0 for floats")
        offset = f.tell()
    except IndexFileError:
        raise
    except (ValueError, SyntaxError, TypeError, EOFError, OSError, zipfile.BadZipFile) as e:
        _fail(name, f"not a readable .npy header ({e})")
    if not (dtype.kind == "f" and dtype.itemsize in (4, 8) and dtype.fields is None):
        _fail(f"{name} dtype", f"{dtype}; the reference is float32 or float64")
    if tuple(shape) != (n, d):
        _fail(f"{name} shape", f"{tuple(shape)}, but {META} says size {n} and dim {d}")
    nbytes = n * d * dtype.itemsize
    if info.file_size != offset + nbytes:
        _fail(
            name,
            f"declared size {info.file_size} bytes, but its header ({offset} bytes) and "
            f"{n} x {d} {dtype} values take {offset + nbytes}",
        )
    buf = bytearray(nbytes)
    _read_into(f, memoryview(buf), name)
    _expect_end(f, name)
    ref = np.frombuffer(buf, dtype=dtype).reshape((n, d), order="F" if fortran else "C")
    if not dtype.isnative:
        ref = ref.astype(dtype.newbyteorder("="))
    rows = max(1, CHUNK_BYTES // (8 * d))  # bounds the float64 squares
    for first in range(0, n, rows):
        _check_vectors(name, ref[first : first + rows], first, meta["metric"], cosine_unit=False)
    return ref


# -- index.hnsw ----------------------------------------------------------------------------


class _Layout:
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


def _check_header(h: dict, lay: _Layout) -> None:
    def bad(field: str, what: str) -> NoReturn:
        _fail(f"index.hnsw header {field}", f"{h[field]}: {what}")

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
    block: np.ndarray, first: int, lay: _Layout, labels: np.ndarray, metric: str
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
        _fail(
            f"index.hnsw level 0, element {first + i}",
            f"link count word {int(head[i]):#010x} has the delete mark or padding set; "
            "pickaxe never deletes",
        )
    if (counts > maxM0).any():
        i = int(np.flatnonzero(counts > maxM0)[0])
        _fail(
            f"index.hnsw level 0, element {first + i}",
            f"link count {int(counts[i])} exceeds maxM0_ = {maxM0}",
        )
    links = words[:, 1:]
    bad = (links >= n) & (np.arange(maxM0) < counts[:, None])
    if bad.any():
        i, j = (int(x) for x in np.argwhere(bad)[0])
        _fail(
            f"index.hnsw level 0, element {first + i}",
            f"link {j} is {int(links[i, j])}, not an element of the {n}-element graph",
        )
    vec = block[:, lay.links0_bytes : lay.links0_bytes + lay.vector_bytes].view("<f4")
    _check_vectors("index.hnsw vectors", vec, first, metric, cosine_unit=metric == "cosine")
    labels[first : first + rows] = block[:, lay.links0_bytes + lay.vector_bytes :].view("<u8")[:, 0]


def _check_labels(labels: np.ndarray, n: int) -> None:
    """pickaxe labels the rows 0..n-1 (in the order threads inserted them)."""
    big = labels >= n
    if big.any():
        i = int(np.flatnonzero(big)[0])
        _fail(
            f"index.hnsw level 0, element {i}",
            f"label {int(labels[i])} is not a row of the {n}-row reference",
        )
    counts = np.bincount(labels.astype(np.intp), minlength=n)
    if (counts != 1).any():
        row = int(np.flatnonzero(counts != 1)[0])
        what = "no element carries" if counts[row] == 0 else f"{int(counts[row])} elements carry"
        _fail("index.hnsw labels", f"{what} label {row}; each row 0..{n - 1} labels one element")


def _check_upper(tail: np.ndarray, lay: _Layout, maxlevel: int, enterpoint: int) -> None:
    """The part after level 0, as little-endian u32 words: per element a byte count, then
    that many bytes of upper-level lists (count word + maxM ids per level)."""
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
            _fail(
                where,
                f"link list size {size} bytes is not a whole number of "
                f"{lay.level_bytes}-byte levels",
            )
        level = size // lay.level_bytes
        if level > maxlevel:
            _fail(where, f"level {level} exceeds the header's maxlevel_ = {maxlevel}")
        if j + 1 + level * per_level > T:
            _fail(where, f"its {size}-byte link list runs past the end of the data (truncated)")
        levels[k] = level
        owners.append(k)
        starts.append(j + 1)
        j += 1 + level * per_level
        k += 1
    if j > T:
        _fail(
            "index.hnsw",
            f"the data ends {4 * (j - T)} bytes before its last element's size word (truncated)",
        )
    if j < T:
        _fail("index.hnsw", f"{4 * (T - j)} bytes follow the last element's link lists")
    top = int(levels.max())
    if top != maxlevel:
        _fail("index.hnsw header maxlevel_", f"{maxlevel}, but the highest element level is {top}")
    if levels[enterpoint] != maxlevel:
        _fail(
            "index.hnsw header enterpoint_node_",
            f"{enterpoint} has level {int(levels[enterpoint])}; the entry point is on the top "
            f"level {maxlevel}",
        )
    if not owners:
        return
    own = np.asarray(owners, dtype=np.int64)
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
        _fail(where(i), f"link count word {int(head[i]):#010x} has padding bits set")
    if (counts > lay.maxM).any():
        i = int(np.flatnonzero(counts > lay.maxM)[0])
        _fail(where(i), f"link count {int(counts[i])} exceeds maxM_ = {lay.maxM}")
    links = tail[list_start[:, None] + 1 + np.arange(lay.maxM)]
    used = np.arange(lay.maxM) < counts[:, None]
    bad = used & (links >= n)
    if bad.any():
        i, c = (int(x) for x in np.argwhere(bad)[0])
        _fail(where(i), f"link {c} is {int(links[i, c])}, not an element of the {n}-element graph")
    # hnswlib's descent reads the neighbour's list at this level: it must have one.
    low = used & (levels[np.where(used, links, 0)] < list_level[:, None])
    if low.any():
        i, c = (int(x) for x in np.argwhere(low)[0])
        t = int(links[i, c])
        _fail(
            where(i),
            f"link {c} is element {t}, whose level {int(levels[t])} is below {int(list_level[i])}",
        )


def _copy_graph(f: Any, info: zipfile.ZipInfo, meta: dict, out: BinaryIO) -> None:
    """Check index.hnsw while copying it to `out`."""
    lay = _Layout(meta)
    raw = _read(f, HNSW_HEADER.size, "index.hnsw header")
    h = dict(zip(HNSW_HEADER_FIELDS, HNSW_HEADER.unpack(raw)))
    _check_header(h, lay)
    out.write(raw)
    labels = np.empty(lay.n, dtype=np.uint64)
    rows = max(1, CHUNK_BYTES // lay.element_bytes)
    for first in range(0, lay.n, rows):
        count = min(rows, lay.n - first)
        chunk = _read(f, count * lay.element_bytes, "index.hnsw level 0")
        block = np.frombuffer(chunk, dtype=np.uint8).reshape(count, lay.element_bytes)
        _check_level0(block, first, lay, labels, meta["metric"])
        out.write(chunk)
    _check_labels(labels, lay.n)
    rest = info.file_size - lay.level0_end
    if rest % 4:
        _fail("index.hnsw", f"the {rest} bytes after level 0 are not whole 4-byte words")
    chunk = _read(f, rest, "index.hnsw upper levels")
    _expect_end(f, "index.hnsw")
    _check_upper(np.frombuffer(chunk, dtype="<u4"), lay, h["maxlevel_"], h["enterpoint_node_"])
    out.write(chunk)


def _load_graph(f: Any, info: zipfile.ZipInfo, meta: dict) -> Any:
    import hnswlib

    d = tempfile.mkdtemp(prefix="pickaxe-index-")
    try:
        graph = os.path.join(d, "index.hnsw")
        with open(graph, "wb") as out:
            _copy_graph(f, info, meta, out)
        index = hnswlib.Index(space=meta["metric"], dim=meta["dim"])
        try:
            index.load_index(graph, max_elements=meta["size"])
        except RuntimeError as e:  # not expected after the checks; still not a crash
            _fail("index.hnsw", f"hnswlib refused the checked graph ({e})")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if index.element_count != meta["size"]:
        _fail(
            "index.hnsw",
            f"hnswlib loaded {index.element_count} elements, {META} says {meta['size']}",
        )
    return index


# -- the whole file ------------------------------------------------------------------------


def read_index(who: str, path: str) -> tuple[dict, Optional[np.ndarray], Any]:
    """Read and check a ReferenceIndex file: ``(meta, exact reference or None, hnswlib
    index or None)``. `who` prefixes every message.

    Raises
    ------
    ValueError
        The path is not a regular file, or any check fails; the message names the member
        and field.
    FileNotFoundError, PermissionError
        As `os.open` raises them.
    """
    fh, file_size = _open_regular(who, path)
    with fh:
        try:
            zf = zipfile.ZipFile(fh, "r")
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise ValueError(
                f"{who}: not a complete pickaxe ReferenceIndex file "
                f"(truncated, corrupted or another kind of file: {e})"
            ) from None
        with zf:
            try:
                return _read_members(zf, file_size)
            except IndexFileError as e:
                raise ValueError(f"{who}: {e}") from None


def _read_members(zf: zipfile.ZipFile, file_size: int) -> tuple[dict, Optional[np.ndarray], Any]:
    infos = zf.infolist()
    names = [i.filename for i in infos]
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        _fail("zip directory", f"member {dup[0]!r} appears {names.count(dup[0])} times")
    if META not in names:
        _fail("zip directory", f"no {META} (members: {names}); not a pickaxe ReferenceIndex file")
    meta_info = zf.getinfo(META)
    _check_member(meta_info, file_size, 2, META_MAX_BYTES, "a pickaxe meta.json")
    try:
        raw = zf.read(meta_info)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        _fail(META, f"truncated or corrupted ({e})")
    meta = _parse_meta(raw)
    member = MEMBERS[meta["method"]]
    expected = {META, member}
    if set(names) != expected:
        extra = sorted(set(names) - expected)
        if extra:
            _fail(
                "zip directory",
                f"unexpected member {extra[0]!r}; method {meta['method']!r} files hold "
                f"{sorted(expected)}",
            )
        _fail("zip directory", f"no {member} (method {meta['method']!r} in {META})")
    info = zf.getinfo(member)
    n, d = meta["size"], meta["dim"]
    if meta["method"] == "exact":
        lo = 10 + n * d * 4  # npy magic, version and header length, then the values
        hi = 12 + NPY_MAX_HEADER + n * d * 8
        why = f"a .npy of {META}'s size {n} x dim {d} float32 or float64 values"
    else:
        lay = _Layout(meta)
        lo, hi = lay.min_size, lay.max_size
        why = f"an hnswlib graph of {META}'s size {n}, dim {d} and M {lay.M}"
    _check_member(info, file_size, lo, hi, why)
    try:
        f = zf.open(info)
    except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as e:
        _fail(member, f"cannot be read ({e})")
    with f:
        try:
            if meta["method"] == "exact":
                return meta, _read_exact(f, info, meta), None
            return meta, None, _load_graph(f, info, meta)
        except IndexFileError:
            _drain(f, member)  # bytes that fail their CRC: say so, not what they broke
            raise


def _drain(f: Any, where: str) -> None:
    """Read the rest of a member: a CRC mismatch raises, naming the member corrupted."""
    try:
        while f.read(COPY_BYTES):
            pass
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        _fail(where, f"the data is corrupted ({e})")
