"""A `ReferenceIndex` file's container: a regular file, a zip of the expected members
stored uncompressed, ``meta.json``, and the exact reference ``reference.npy``.

Also the reading primitives the graph's checks share (`read_bytes`, `expect_end`, `fail`)
and the check of stored vectors (`check_vectors`). Anything wrong is an `IndexFileError`
naming the member and the field.
"""

from __future__ import annotations

import json
import math
import os
import stat
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
#: hnswlib's internal ids are 32-bit.
HNSW_MAX_ELEMENTS = 2**32 - 1
#: Cosine vectors are stored normalised; float32 normalisation is good to ~1e-6 · D.
UNIT_NORM_TOLERANCE = 1e-3
#: Level-0 bytes checked per numpy pass: bounds the temporaries for any graph size.
CHUNK_BYTES = 16 * 1024 * 1024
#: Bytes copied per read when streaming a member.
COPY_BYTES = 1024 * 1024


class IndexFileError(ValueError):
    """A check of the file failed (turned into the caller's ValueError)."""


def fail(where: str, what: str) -> NoReturn:
    raise IndexFileError(f"{where}: {what}")


# -- the file itself -----------------------------------------------------------------------


def open_regular(who: str, path: str) -> tuple[BinaryIO, int]:
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


def read_bytes(f: Any, n: int, where: str) -> bytes:
    """Exactly `n` bytes of a member (the CRC is checked when its last byte is read)."""
    try:
        data = f.read(n)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        fail(where, f"the data is truncated or corrupted ({e})")
    if len(data) != n:
        fail(where, f"the data is truncated: {len(data)} bytes where {n} were expected")
    return data


def read_into(f: Any, buf: memoryview, where: str) -> None:
    pos = 0
    while pos < len(buf):
        piece = read_bytes(f, min(COPY_BYTES, len(buf) - pos), where)
        buf[pos : pos + len(piece)] = piece
        pos += len(piece)


def expect_end(f: Any, where: str) -> None:
    """The member is fully read: reading on hits its end and its CRC matches."""
    try:
        extra = f.read(1)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        fail(where, f"the data is corrupted ({e})")
    if extra:
        fail(where, "the data runs past the size its header implies")


def check_member(info: zipfile.ZipInfo, file_size: int, lo: int, hi: int, why: str) -> None:
    """A member's directory entry, before any of its bytes are read: stored (pickaxe never
    compresses, so nothing is inflated), not encrypted, the same size stored and declared,
    inside the file, and between `lo` and `hi` bytes as meta.json implies."""
    name = info.filename
    if info.compress_type != zipfile.ZIP_STORED:
        fail(
            name,
            f"compression method {info.compress_type}; pickaxe stores members uncompressed "
            f"(method {zipfile.ZIP_STORED})",
        )
    if info.flag_bits & 0x1:
        fail(name, "the member is encrypted")
    if info.compress_size != info.file_size:
        fail(
            name,
            f"declared size {info.file_size} bytes differs from its stored size "
            f"{info.compress_size} bytes (an uncompressed member has one size)",
        )
    # 30 bytes: the fixed part of the member's local header, which precedes its data.
    if info.header_offset + 30 + info.compress_size > file_size:
        fail(
            name,
            f"declared size {info.compress_size} bytes at offset {info.header_offset} runs "
            f"past the end of the {file_size}-byte file (truncated)",
        )
    if not lo <= info.file_size <= hi:
        span = f"{lo} bytes" if lo == hi else f"between {lo} and {hi} bytes"
        fail(name, f"declared size {info.file_size} bytes, but {why} takes {span}")


# -- meta.json -----------------------------------------------------------------------------


def _int_field(meta: dict, key: str, lo: int, hi: Optional[int] = None, none: bool = False) -> Any:
    where = f"{META} {key}"
    if key not in meta:
        fail(where, "missing")
    v = meta[key]
    if v is None and none:
        return None
    if type(v) is not int:  # bool is an int subclass; floats and strings are not ints here
        fail(where, f"must be an integer{' or null' if none else ''}; got {v!r}")
    if v < lo or (hi is not None and v > hi):
        bound = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        fail(where, f"must be {bound}; got {v}")
    return v


def parse_meta(raw: bytes) -> dict:
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        fail(META, f"not valid JSON ({e})")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        fail(META, f'not a pickaxe ReferenceIndex file (no "format": "{FORMAT}")')
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
            fail(f"{META} {key}", "missing")
    metric = meta.get("metric")
    if not (isinstance(metric, str) and metric in METRICS):
        fail(f"{META} metric", f'must be one of "cosine", "l2", "ip"; got {metric!r}')
    method = meta.get("method")
    if not (isinstance(method, str) and method in MEMBERS):
        fail(f"{META} method", f'must be "exact" or "hnsw"; got {method!r}')
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


def check_vectors(
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
            fail(where, f"row {row} holds {v[i, j]} at position {j}; vectors must be finite")
        if not sq[i] <= limit:
            fail(
                where,
                f"row {row} has squared norm {sq[i]:.3g}, beyond {limit:.3g}: distances to it "
                f"overflow {v.dtype}",
            )
        fail(
            where,
            f"row {row} has norm {math.sqrt(sq[i]):.6g}; an index with metric {metric!r} "
            "stores unit-length (or zero) vectors, so the graph was built for another "
            "metric or is corrupted",
        )


# -- reference.npy -------------------------------------------------------------------------


def read_reference(f: Any, info: zipfile.ZipInfo, meta: dict) -> np.ndarray:
    name = info.filename
    n, d = meta["size"], meta["dim"]
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, NPY_MAX_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, NPY_MAX_HEADER)
        else:
            fail(name, f"npy format version {version}; np.save writes 1.0 or 2.0 for floats")
        offset = f.tell()
    except IndexFileError:
        raise
    except (ValueError, SyntaxError, TypeError, EOFError, OSError, zipfile.BadZipFile) as e:
        fail(name, f"not a readable .npy header ({e})")
    if not (dtype.kind == "f" and dtype.itemsize in (4, 8) and dtype.fields is None):
        fail(f"{name} dtype", f"{dtype}; the reference is float32 or float64")
    if tuple(shape) != (n, d):
        fail(f"{name} shape", f"{tuple(shape)}, but {META} says size {n} and dim {d}")
    nbytes = n * d * dtype.itemsize
    if info.file_size != offset + nbytes:
        fail(
            name,
            f"declared size {info.file_size} bytes, but its header ({offset} bytes) and "
            f"{n} x {d} {dtype} values take {offset + nbytes}",
        )
    buf = bytearray(nbytes)
    read_into(f, memoryview(buf), name)
    expect_end(f, name)
    ref = np.frombuffer(buf, dtype=dtype).reshape((n, d), order="F" if fortran else "C")
    if not dtype.isnative:
        ref = ref.astype(dtype.newbyteorder("="))
    rows = max(1, CHUNK_BYTES // (8 * d))  # bounds the float64 squares
    for first in range(0, n, rows):
        check_vectors(name, ref[first : first + rows], first, meta["metric"], cosine_unit=False)
    return ref


def drain(f: Any, where: str) -> None:
    """Read the rest of a member: a CRC mismatch raises, naming the member corrupted."""
    try:
        while f.read(COPY_BYTES):
            pass
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        fail(where, f"the data is corrupted ({e})")
