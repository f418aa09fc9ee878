"""Reading a `ReferenceIndex` file: every field is checked before numpy or hnswlib sees it.

A saved index is a zip (members stored, not compressed) holding ``meta.json`` and either
``reference.npy`` (method ``"exact"``) or ``index.hnsw`` (method ``"hnsw"``, hnswlib 0.8's
``save_index`` output). docs/index-format.md describes the layout for users.

hnswlib trusts its file (an entry point, neighbour id or offset out of range makes it read
outside its buffers), and pickaxe searches the graph's bytes as hnswlib would, so
`read_index` checks, before anything is searched:

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

Anything else is a ValueError naming the member and the field. `members` checks the file,
its members, ``meta.json`` and ``reference.npy``; `graph` checks the hnswlib graph and
keeps the checked bytes in the buffer pickaxe searches (`pickaxe._graph.Graph`).
"""

from __future__ import annotations

import zipfile
import zlib
from typing import Any, Optional

import numpy as np

from .graph import Layout, load_graph
from .members import (
    FORMAT,
    FORMAT_VERSION,
    META,
    META_MAX_BYTES,
    MEMBERS,
    METRICS,
    NPY_MAX_HEADER,
    IndexFileError,
    check_member,
    drain,
    fail,
    open_regular,
    parse_meta,
    read_reference,
)

__all__ = ["read_index", "FORMAT", "FORMAT_VERSION", "META", "MEMBERS", "METRICS", "IndexFileError"]


def read_index(who: str, path: str) -> tuple[dict, Optional[np.ndarray], Any]:
    """Read and check a ReferenceIndex file: ``(meta, exact reference or None, graph
    (`pickaxe._graph.Graph`) or None)``. `who` prefixes every message.

    Raises
    ------
    ValueError
        The path is not a regular file, or any check fails; the message names the member
        and field.
    FileNotFoundError, PermissionError
        As `os.open` raises them.
    """
    fh, file_size = open_regular(who, path)
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
        fail("zip directory", f"member {dup[0]!r} appears {names.count(dup[0])} times")
    if META not in names:
        fail("zip directory", f"no {META} (members: {names}); not a pickaxe ReferenceIndex file")
    meta_info = zf.getinfo(META)
    check_member(meta_info, file_size, 2, META_MAX_BYTES, "a pickaxe meta.json")
    try:
        raw = zf.read(meta_info)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        fail(META, f"truncated or corrupted ({e})")
    meta = parse_meta(raw)
    member = MEMBERS[meta["method"]]
    expected = {META, member}
    if set(names) != expected:
        extra = sorted(set(names) - expected)
        if extra:
            fail(
                "zip directory",
                f"unexpected member {extra[0]!r}; method {meta['method']!r} files hold "
                f"{sorted(expected)}",
            )
        fail("zip directory", f"no {member} (method {meta['method']!r} in {META})")
    info = zf.getinfo(member)
    n, d = meta["size"], meta["dim"]
    if meta["method"] == "exact":
        lo = 10 + n * d * 4  # npy magic, version and header length, then the values
        hi = 12 + NPY_MAX_HEADER + n * d * 8
        why = f"a .npy of {META}'s size {n} x dim {d} float32 or float64 values"
    else:
        lay = Layout(meta)
        lo, hi = lay.min_size, lay.max_size
        why = f"an hnswlib graph of {META}'s size {n}, dim {d} and M {lay.M}"
    check_member(info, file_size, lo, hi, why)
    try:
        f = zf.open(info)
    except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as e:
        fail(member, f"cannot be read ({e})")
    with f:
        try:
            if meta["method"] == "exact":
                return meta, read_reference(f, info, meta), None
            return meta, None, load_graph(f, info, meta)
        except IndexFileError:
            drain(f, member)  # bytes that fail their CRC: say so, not what they broke
            raise
