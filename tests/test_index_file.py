"""ReferenceIndex.load checks the file before hnswlib or numpy sees it.

The fuzz test loads thousands of damaged files in a subprocess, so a segfault inside
hnswlib fails the test (with the mutation that caused it) instead of killing pytest.
"""

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile

import numpy as np
import pytest

import pickaxe as px
from pickaxe import index as index_module

pytest.importorskip("hnswlib")

HEADER = struct.Struct("<QQQQQQiIQQQdQ")
FIELDS = (
    "offsetLevel0_", "max_elements_", "cur_element_count", "size_data_per_element_",
    "label_offset_", "offsetData_", "maxlevel_", "enterpoint_node_", "maxM_", "maxM0_",
    "M_", "mult_", "ef_construction_",
)


def members(path):
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i.filename) for i in z.infolist()}


def write_zip(path, parts, compress_type=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in parts:
            z.writestr(name, data, compress_type=compress_type if name != "meta.json" else zipfile.ZIP_STORED)


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory):
    """A 5,000 x 8 l2 graph (above EXACT_MAX_ROWS, so hnswlib), built on one thread."""
    path = tmp_path_factory.mktemp("graph") / "graph.pxi"
    ref = np.random.default_rng(11).normal(size=(5000, 8))
    index = px.ReferenceIndex(ref, metric="l2", threads=1, seed=1)
    assert index.method == "hnsw"
    index.save(path)
    return path, ref, index


def load_error(path):
    with pytest.raises(ValueError) as e:
        px.ReferenceIndex.load(path)
    return str(e.value)


# -- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("M", [2, 8])
def test_graph_round_trip_answers_as_before(rng, tmp_path, monkeypatch, metric, threads, M):
    # Two threads insert rows out of order: labels are then a permutation of the internal
    # ids, which load must accept. M = 2 puts half the elements on upper levels.
    monkeypatch.setattr(index_module, "EXACT_MAX_ROWS", 0)
    ref = rng.normal(size=(1500, 6)).astype(np.float32)
    q = rng.normal(size=(30, 6))
    index = px.ReferenceIndex(ref, metric=metric, threads=threads, M=M)
    index.save(tmp_path / "g.pxi")
    loaded = px.ReferenceIndex.load(tmp_path / "g.pxi")
    assert (loaded.method, loaded.metric, loaded.dim, len(loaded)) == ("hnsw", metric, 6, 1500)
    a, b = index.query(q, 9), loaded.query(q, 9)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
def test_exact_round_trip_keeps_dtype_and_values(rng, tmp_path, dtype, order):
    ref = np.asarray(rng.normal(size=(200, 5)), dtype=dtype, order=order)
    index = px.ReferenceIndex(ref, metric="cosine")
    index.save(tmp_path / "e.pxi")
    loaded = px.ReferenceIndex.load(tmp_path / "e.pxi")
    assert loaded.method == "exact" and loaded.vectors().dtype == dtype
    np.testing.assert_array_equal(loaded.vectors(), ref)
    q = rng.normal(size=(10, 5))
    np.testing.assert_array_equal(index.query(q, 4)[0], loaded.query(q, 4)[0])


# -- what the path may be --------------------------------------------------------------


def test_fifo_device_and_directory_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "index.fifo"
    os.mkfifo(fifo)
    script = textwrap.dedent(
        """
        import sys
        import pickaxe as px
        for path in sys.argv[1:]:
            try:
                px.ReferenceIndex.load(path)
            except ValueError as e:
                print(e)
            else:
                print("LOADED", path)
        """
    )
    # A subprocess with a timeout: opening a FIFO for reading blocks until a writer comes,
    # and reading /dev/zero never ends, so a regression hangs there, not in pytest.
    proc = subprocess.run(
        [sys.executable, "-c", script, str(fifo), "/dev/zero", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3, proc.stdout
    assert f"ReferenceIndex.load({str(fifo)!r}): the path is a FIFO" in lines[0]
    assert "ReferenceIndex.load('/dev/zero'): the path is a character device" in lines[1]
    assert "the path is a directory" in lines[2]


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        px.ReferenceIndex.load(tmp_path / "missing.pxi")


# -- sizes are checked before anything is read -----------------------------------------


def test_a_deflated_member_is_refused_without_inflating(graph_file, tmp_path):
    path, _, _ = graph_file
    parts = members(path)
    bomb = tmp_path / "bomb.pxi"
    # 256 MB of zeros deflate to about 250 KB; inflating them would allocate 256 MB.
    zeros = bytes(1 << 20)
    with zipfile.ZipFile(bomb, "w") as z:
        z.writestr("meta.json", parts["meta.json"])
        info = zipfile.ZipInfo("index.hnsw")
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as w:
            for _ in range(256):
                w.write(zeros)
    assert bomb.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        message = load_error(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "index.hnsw: compression method 8" in message
    assert peak < 16 << 20, peak


def test_a_huge_declared_size_is_refused_before_reading(graph_file, tmp_path):
    path, _, _ = graph_file
    data = bytearray(path.read_bytes())
    # The central directory entry of index.hnsw: its sizes are at +20 (stored) and +24.
    entry = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 4)
    assert data[entry + 46 : entry + 56] == b"index.hnsw"
    struct.pack_into("<I", data, entry + 24, 0xFFFFFFF0)
    declared = tmp_path / "declared.pxi"
    declared.write_bytes(bytes(data))
    assert "declared size 4294967280 bytes differs from its stored size" in load_error(declared)
    struct.pack_into("<II", data, entry + 20, 0xFFFFFFF0, 0xFFFFFFF0)
    declared.write_bytes(bytes(data))
    assert "runs past the end of the" in load_error(declared)


def test_oversized_meta_json_is_refused(graph_file, tmp_path):
    path, _, _ = graph_file
    parts = members(path)
    meta = parts["meta.json"].rstrip(b"}") + b" " * (70 * 1024) + b"}"
    big = tmp_path / "big-meta.pxi"
    write_zip(big, [("meta.json", meta), ("index.hnsw", parts["index.hnsw"])])
    assert "meta.json: declared size" in load_error(big)


# -- the graph against meta.json -------------------------------------------------------


def with_meta(path, out, **changes):
    parts = members(path)
    meta = json.loads(parts["meta.json"])
    meta.update(changes)
    parts["meta.json"] = json.dumps(meta).encode()
    write_zip(out, parts.items())
    return out


def test_a_dim_mismatch_is_refused(graph_file, tmp_path):
    path, _, _ = graph_file
    message = load_error(with_meta(path, tmp_path / "dim9.pxi", dim=9))
    assert message.startswith(
        f"ReferenceIndex.load({str(tmp_path / 'dim9.pxi')!r}): index.hnsw header "
        "size_data_per_element_: 172: 32 links at level 0, 9 float32 dimensions (meta.json "
        "dim) (the graph's vectors have 8)"
    )
    # A dim that makes the graph far larger than the member is refused by its size alone.
    message = load_error(with_meta(path, tmp_path / "dim64.pxi", dim=64))
    assert "index.hnsw: declared size" in message and "dim 64" in message
    # dim 16 with M 12 keeps every element at 172 bytes, so the sizes alone agree: the
    # header's fields do not.
    message = load_error(with_meta(path, tmp_path / "dim16.pxi", dim=16, M=12))
    assert "index.hnsw header maxM_: 16" in message


def test_a_metric_the_vectors_do_not_fit_is_refused(graph_file, tmp_path):
    path, _, _ = graph_file
    message = load_error(with_meta(path, tmp_path / "cos.pxi", metric="cosine"))
    assert "index.hnsw vectors: row 0 has norm" in message and "'cosine'" in message


def patched_graph(path, out, patch):
    parts = members(path)
    g = bytearray(parts["index.hnsw"])
    patch(g)
    parts["index.hnsw"] = bytes(g)
    write_zip(out, parts.items())
    return out


def test_out_of_range_entry_point_and_link_are_refused(graph_file, tmp_path):
    path, _, _ = graph_file

    def entry_point(g):
        h = list(HEADER.unpack_from(g))
        h[FIELDS.index("enterpoint_node_")] = 5000
        HEADER.pack_into(g, 0, *h)

    message = load_error(patched_graph(path, tmp_path / "ep.pxi", entry_point))
    assert message == (
        f"ReferenceIndex.load({str(tmp_path / 'ep.pxi')!r}): index.hnsw header "
        "enterpoint_node_: 5000: not an element of the 5000-element graph"
    )

    def link(g):
        h = dict(zip(FIELDS, HEADER.unpack_from(g)))
        base = HEADER.size + 1234 * h["size_data_per_element_"]
        assert struct.unpack_from("<I", g, base)[0] > 0
        struct.pack_into("<I", g, base + 4, 70000)

    message = load_error(patched_graph(path, tmp_path / "link.pxi", link))
    assert "index.hnsw level 0, element 1234: link 0 is 70000, not an element" in message


def test_the_existing_load_messages_still_say_what_is_wrong(graph_file, tmp_path):
    path, _, _ = graph_file
    data = path.read_bytes()
    (tmp_path / "half.pxi").write_bytes(data[: len(data) // 2])
    assert "truncated" in load_error(tmp_path / "half.pxi")
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x10
    (tmp_path / "flip.pxi").write_bytes(bytes(flipped))
    assert "corrupted" in load_error(tmp_path / "flip.pxi")
    assert "format version 2" in load_error(with_meta(path, tmp_path / "v2.pxi", format_version=2))


# -- fuzzing ---------------------------------------------------------------------------

FUZZ = r'''
import io, json, struct, sys, warnings, zipfile
import numpy as np
import pickaxe as px

warnings.simplefilter("ignore")  # zipfile warns about the duplicate-name mutations
HEADER = struct.Struct("<QQQQQQiIQQQdQ")
FIELDS = (
    "offsetLevel0_", "max_elements_", "cur_element_count", "size_data_per_element_",
    "label_offset_", "offsetData_", "maxlevel_", "enterpoint_node_", "maxM_", "maxM0_",
    "M_", "mult_", "ef_construction_",
)
graph_l2, graph_cos, exact, work = sys.argv[1:5]
rng = np.random.default_rng(20240613)
qrng = np.random.default_rng(1)


def members(path):
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def rezip(parts, compress=None):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in parts:
            z.writestr(name, data, compress_type=compress.get(name, zipfile.ZIP_STORED) if compress else zipfile.ZIP_STORED)
    return buf.getvalue()


def flip(data, bits):
    b = bytearray(data)
    for _ in range(bits):
        pos = int(rng.integers(len(b)))
        b[pos] ^= 1 << int(rng.integers(8))
    return bytes(b)


def parse(g):
    h = dict(zip(FIELDS, HEADER.unpack_from(g)))
    n, sdpe, maxM = h["cur_element_count"], h["size_data_per_element_"], h["maxM_"]
    pos = HEADER.size + n * sdpe
    levels, lists = [], []
    for e in range(n):
        size = struct.unpack_from("<I", g, pos)[0]
        pos += 4
        L = size // (4 + 4 * maxM)
        levels.append(L)
        lists += [(e, l + 1, pos + l * (4 + 4 * maxM)) for l in range(L)]
        pos += size
    assert pos == len(g)
    return h, np.array(levels), lists


bases = {}
for tag, path in (("l2", graph_l2), ("cos", graph_cos), ("exact", exact)):
    parts = members(path)
    bases[tag] = (open(path, "rb").read(), dict(parts), json.loads(dict(parts)["meta.json"]))


def with_member(tag, name, data, meta=None):
    _, parts, m = bases[tag]
    out = []
    for n, d in parts.items():
        if n == "meta.json":
            out.append((n, json.dumps(meta).encode() if meta is not None else d))
        else:
            out.append((n, data if n == name else d))
    return rezip(out)


def with_meta(tag, **changes):
    meta = dict(bases[tag][2])
    for k, v in changes.items():
        if v is DELETE:
            meta.pop(k)
        else:
            meta[k] = v
    return with_member(tag, None, None, meta)


DELETE = object()


def mutations():
    """(label, must_refuse, file bytes). must_refuse marks the files whose structural
    fields disagree; the rest may load, but must then answer."""
    for tag, count in (("l2", 260), ("exact", 100)):
        raw = bases[tag][0]
        for i in range(count):
            yield f"{tag} raw flip {i}", False, flip(raw, int(rng.integers(1, 4)))
        for i in range(60):
            cut = int(rng.integers(len(raw)))
            yield f"{tag} raw truncation at {cut}", True, raw[:cut]
    for tag, name, count in (("l2", "index.hnsw", 560), ("cos", "index.hnsw", 260),
                             ("exact", "reference.npy", 150), ("l2", "meta.json", 80),
                             ("exact", "meta.json", 40)):
        data = bases[tag][1][name]
        for i in range(count):
            m = flip(data, int(rng.integers(1, 4)))
            if name == "meta.json":
                yield f"{tag} meta.json flip {i}", False, rezip([(n, m if n == name else d) for n, d in bases[tag][1].items()])
            else:
                yield f"{tag} {name} flip {i}", False, with_member(tag, name, m)
    for tag, name in (("l2", "index.hnsw"), ("exact", "reference.npy")):
        data = bases[tag][1][name]
        for i in range(60):
            cut = int(rng.integers(len(data)))
            yield f"{tag} {name} truncated to {cut}", True, with_member(tag, name, data[:cut])
        for extra in (1, 4, 8, 172, 4096):
            yield f"{tag} {name} + {extra} bytes", True, with_member(tag, name, data + bytes(rng.integers(0, 256, extra, dtype=np.uint8)))

    for tag in ("l2", "cos"):
        g = bases[tag][1]["index.hnsw"]
        h, levels, lists = parse(g)
        n, sdpe, maxM0, maxM = h["cur_element_count"], h["size_data_per_element_"], h["maxM0_"], h["maxM_"]

        def header(**kw):
            v = dict(h, **kw)
            b = bytearray(g)
            HEADER.pack_into(b, 0, *(v[f] for f in FIELDS))
            return with_member(tag, "index.hnsw", bytes(b))

        def put(off, fmt, *values, data=None):
            b = bytearray(g if data is None else data)
            struct.pack_into(fmt, b, off, *values)
            return with_member(tag, "index.hnsw", bytes(b))

        # header fields
        top = int(h["maxlevel_"])
        low_elements = np.flatnonzero(levels < top)
        crafted = {
            "offsetLevel0_": [4, 8, 2**63],
            "max_elements_": [n - 1, 0, 1],
            "cur_element_count": [n - 1, n + 1, 0, 2**64 - 1],
            "size_data_per_element_": [sdpe - 4, sdpe + 4, sdpe + 8, 0, 2**64 - 1],
            "label_offset_": [h["label_offset_"] - 8, h["label_offset_"] + 4, 0, 2**63],
            "offsetData_": [h["offsetData_"] - 4, h["offsetData_"] + 4, 0, 2**63],
            "maxlevel_": [-1, top + 1, top - 1, 2**31 - 1, -2**31],
            "enterpoint_node_": [n, n + 1, 2**32 - 1, int(low_elements[0]), int(low_elements[-1])],
            "maxM_": [maxM - 1, maxM + 1, 0, 2**63],
            "maxM0_": [maxM0 - 1, maxM0 + 1, 0, 2**16],
            "M_": [maxM - 1, maxM + 1, 0],
            "mult_": [0.5, float("nan"), float("inf"), -h["mult_"], 0.0, h["mult_"] * 1.01],
            "ef_construction_": [h["ef_construction_"] - 1, h["ef_construction_"] + 1, 0],
        }
        for field, values in crafted.items():
            for v in values:
                yield f"{tag} header {field} = {v}", True, header(**{field: v})
        # level-0 links, link counts, delete marks, labels, vectors
        elements = rng.choice(n, size=40, replace=False)
        for e in elements:
            base = HEADER.size + int(e) * sdpe
            c = struct.unpack_from("<I", g, base)[0] & 0xFFFF
            if c:
                j = int(rng.integers(c))
                for v in (n, n + int(rng.integers(1, 1000)), 2**32 - 1):
                    yield f"{tag} level 0 element {e} link {j} = {v}", True, put(base + 4 + 4 * j, "<I", v)
            for v in (maxM0 + 1, 0xFFFF):
                yield f"{tag} level 0 element {e} count = {v}", True, put(base, "<I", v)
            yield f"{tag} level 0 element {e} delete mark", True, put(base, "<I", c | 0x10000)
            other = int((e + 1) % n)
            label_other = struct.unpack_from("<Q", g, HEADER.size + other * sdpe + h["label_offset_"])[0]
            yield f"{tag} element {e} duplicate label", True, put(base + h["label_offset_"], "<Q", label_other)
            yield f"{tag} element {e} label = {n}", True, put(base + h["label_offset_"], "<Q", n)
            off = base + h["offsetData_"] + 4 * int(rng.integers(8))
            for v in (float("nan"), float("inf"), 1e30):
                yield f"{tag} element {e} vector value {v}", True, put(off, "<f", v)
            if tag == "cos":
                vec = np.frombuffer(g, dtype="<f4", count=8, offset=base + h["offsetData_"]) * 2
                yield f"{tag} element {e} vector doubled", True, put(base + h["offsetData_"], "<8f", *vec.tolist())
        # upper levels
        picks = rng.choice(len(lists), size=min(30, len(lists)), replace=False)
        for p in picks:
            e, level, off = lists[int(p)]
            c = struct.unpack_from("<I", g, off)[0] & 0xFFFF
            if c:
                j = int(rng.integers(c))
                yield f"{tag} level {level} element {e} link {j} = {n}", True, put(off + 4 + 4 * j, "<I", n)
                lower = int(np.flatnonzero(levels < level)[int(rng.integers(np.count_nonzero(levels < level)))])
                yield f"{tag} level {level} element {e} link {j} -> level-{levels[lower]} element {lower}", True, put(off + 4 + 4 * j, "<I", lower)
            yield f"{tag} level {level} element {e} count = {maxM + 1}", True, put(off, "<I", maxM + 1)
            yield f"{tag} level {level} element {e} padding bits", True, put(off, "<I", c | 0x1000000)
        owners = sorted({e for e, _, _ in lists})
        for e in rng.choice(owners, size=min(15, len(owners)), replace=False):
            size_at = [off for el, l, off in lists if el == e and l == 1][0] - 4
            size = struct.unpack_from("<I", g, size_at)[0]
            yield f"{tag} element {e} list size + 4", True, put(size_at, "<I", size + 4)
            yield f"{tag} element {e} list size - 4", True, put(size_at, "<I", size - 4)
            yield f"{tag} element {e} level above maxlevel_", True, put(size_at, "<I", (top + 1) * (4 + 4 * maxM))
            yield f"{tag} element {e} list size 0", False, put(size_at, "<I", 0)

    # meta.json against the graph and the exact reference
    edits = [("dim", v) for v in (7, 9, 16, 4, 0, -1, "8", 8.0, True, None, DELETE)]
    edits += [("size", v) for v in (4999, 5001, 0, -1, 2**40, "5000", DELETE)]
    edits += [("M", v) for v in (15, 17, 8, 1, 0, 10001, DELETE)]
    edits += [("ef_construction", v) for v in (199, 201, 0, DELETE)]
    edits += [("metric", v) for v in ("euclid", None, DELETE)]
    edits += [("method", v) for v in ("exact", "brute", DELETE)]
    edits += [("format_version", v) for v in (2, 0, "1", True, DELETE)]
    edits += [("format", v) for v in ("other", DELETE)]
    edits += [("ef", v) for v in (0, -5, "x", DELETE)]
    edits += [("threads", v) for v in (0, 1.5, DELETE)]
    edits += [("seed", v) for v in (-1, 2**64, DELETE)]
    for key, v in edits:
        yield f"l2 meta {key} = {v if v is not DELETE else 'deleted'}", True, with_meta("l2", **{key: v})
    yield "l2 meta metric = cosine (l2 vectors)", True, with_meta("l2", metric="cosine")
    yield "cos meta metric = l2 (unit vectors)", False, with_meta("cos", metric="l2")
    for key, v in (("dim", 7), ("dim", 9), ("size", 299), ("size", 301), ("method", "hnsw"), ("dim", "8")):
        yield f"exact meta {key} = {v}", True, with_meta("exact", **{key: v})
    yield "exact meta M = 1", False, with_meta("exact", M=1)

    # zip members
    for tag in ("l2", "exact"):
        parts = list(bases[tag][1].items())
        data_name = parts[1][0]
        yield f"{tag} member renamed", True, rezip([parts[0], ("renamed.bin", parts[1][1])])
        yield f"{tag} extra member", True, rezip(parts + [("extra.txt", b"x")])
        yield f"{tag} duplicate member", True, rezip(parts + [parts[1]])
        yield f"{tag} duplicate meta.json", True, rezip(parts + [parts[0]])
        yield f"{tag} no meta.json", True, rezip(parts[1:])
        yield f"{tag} only meta.json", True, rezip(parts[:1])
        yield f"{tag} deflated data", True, rezip(parts, {data_name: zipfile.ZIP_DEFLATED})
        yield f"{tag} deflated meta.json", True, rezip(parts, {"meta.json": zipfile.ZIP_DEFLATED})
    npy = bases["exact"][1]["reference.npy"]
    hlen = struct.unpack_from("<H", npy, 8)[0]
    head = npy[10 : 10 + hlen].decode("latin1")
    for old, new in (("'<f8'", "'|O' "), ("'<f8'", "'<i8'"), ("'<f8'", "'<f2'"), ("(300, 8)", "(8, 300)"),
                     ("(300, 8)", "(300, 9)"), ("(300, 8)", "(2400,) ")):
        assert old in head, head
        changed = head.replace(old, new)
        yield f"exact npy header {new}", True, with_member("exact", "reference.npy", npy[:10] + changed.encode("latin1") + npy[10 + hlen :])
    yield "exact npy header length", True, with_member("exact", "reference.npy", npy[:8] + struct.pack("<H", hlen + 16) + npy[10:])
    yield "exact npy version 3", True, with_member("exact", "reference.npy", npy[:6] + b"\x03\x00" + npy[8:])


def exercise(index):
    q = qrng.normal(size=(6, index.dim))
    k = min(10, len(index))
    ids, dist = index.query(q, k)
    assert ids.shape == (6, k) and dist.shape == (6, k), (ids.shape, dist.shape)
    assert ((ids >= 0) & (ids < len(index))).all(), ids
    assert np.isfinite(dist).all(), dist
    v = index.vectors()
    assert v.shape == (len(index), index.dim) and np.isfinite(v).all()


target = f"{work}/mutant.pxi"
total = refused = loaded = structural = 0
failures, structural_loaded = [], []
for label, must_refuse, data in mutations():
    print("MUT", label, flush=True)  # the last line names the mutation if this process dies
    with open(target, "wb") as f:
        f.write(data)
    total += 1
    structural += must_refuse
    try:
        index = px.ReferenceIndex.load(target)
    except ValueError as e:
        refused += 1
        if not str(e).startswith(f"ReferenceIndex.load({target!r}): "):
            failures.append(f"{label}: message without the path: {e}")
        continue
    except Exception as e:
        failures.append(f"{label}: {type(e).__name__}: {e}")
        continue
    loaded += 1
    if must_refuse:
        structural_loaded.append(label)
    try:
        exercise(index)
    except Exception as e:
        failures.append(f"{label}: loaded, then {type(e).__name__}: {e}")
print("SUMMARY", json.dumps(dict(total=total, refused=refused, loaded=loaded, structural=structural,
                                 failures=failures, structural_loaded=structural_loaded)), flush=True)
'''


def test_fuzzed_files_are_refused_or_answer(tmp_path):
    ref = np.random.default_rng(5).normal(size=(5000, 8))
    paths = []
    for name, metric, rows in (("l2", "l2", 5000), ("cos", "cosine", 5000), ("exact", "l2", 300)):
        index = px.ReferenceIndex(ref[:rows], metric=metric, threads=1, seed=2)
        assert index.method == ("exact" if rows == 300 else "hnsw")
        paths.append(str(tmp_path / f"{name}.pxi"))
        index.save(paths[-1])
    script = tmp_path / "fuzz.py"
    script.write_text(FUZZ)
    try:
        proc = subprocess.run(
            [sys.executable, str(script), *paths, str(tmp_path)],
            capture_output=True, text=True, timeout=600,
        )
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        pytest.fail(f"the fuzz run hung; last mutation: {out.splitlines()[-1:] }")
    lines = proc.stdout.splitlines()
    if proc.returncode != 0:
        pytest.fail(
            f"the fuzz process died with return code {proc.returncode} "
            f"(negative: killed by signal {-proc.returncode}) on {lines[-1:]}\n{proc.stderr[-3000:]}"
        )
    summary = json.loads(lines[-1].removeprefix("SUMMARY "))
    assert summary["failures"] == [], summary["failures"][:20]
    assert summary["structural_loaded"] == [], summary["structural_loaded"]
    assert summary["total"] >= 2000
    assert summary["structural"] >= 600
    # Both outcomes occur: random flips in vector bits or in a zip timestamp leave a file
    # that loads and answers, most others are refused.
    assert summary["loaded"] >= 50 and summary["refused"] >= 1000, summary
