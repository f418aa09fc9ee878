"""A Parquet pool is decoded on reader threads (`pickaxe.pools.prefetch`): its errors
reach the caller as they did when it was read on the caller's thread (same type, message
and attributes), batches come in the same order with the same rows whatever the number
of readers, and no reader thread outlives a run that ends early, fails or finishes."""

import subprocess
import sys
import threading

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import pickaxe as px
import pickaxe.pools.parquet as parquet_mod
from pickaxe.errors import InvalidInputError
from pickaxe.pools import open_pool
from pickaxe.pools.prefetch import THREAD_NAME, in_order, prefetched

N, C, GROUP = 200_000, 8, 50_000


def readers() -> list:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME and t.is_alive()]


def write(path, logits, nulls=None):
    values = pa.array(logits.ravel())
    lists = pa.FixedSizeListArray.from_arrays(values, C)
    if nulls is not None:  # rows whose vector is null
        valid = np.ones(len(logits), dtype=bool)
        valid[nulls] = False
        lists = pa.FixedSizeListArray.from_arrays(values, C, mask=pa.array(~valid))
    n = len(logits)
    table = pa.table({
        "id": pa.array(np.arange(n, dtype=np.int64) * 7),
        "split": pa.array(np.where(np.arange(n) % 2 == 0, "train", "unlabeled")),
        "logits": lists,
    })
    pq.write_table(table, path, row_group_size=GROUP)
    return str(path)


@pytest.fixture(scope="module")
def logits():
    return np.random.default_rng(3).normal(size=(N, C)).astype(np.float32)


@pytest.fixture
def serial(monkeypatch):
    """Read on the caller's thread, as before the reader threads: the reference."""
    def use():
        monkeypatch.setattr(parquet_mod, "READERS", 0)
    return use


def outcome(fn):
    try:
        fn()
    except BaseException as e:  # noqa: B036 - the test compares what is raised
        return e
    raise AssertionError("no error raised")


def same_error(threaded, serial_error):
    assert type(threaded) is type(serial_error)
    assert str(threaded) == str(serial_error)
    assert threaded.args == serial_error.args
    for name in ("kind", "field", "row", "id", "reason"):
        assert getattr(threaded, name, None) == getattr(serial_error, name, None), name


@pytest.mark.parametrize("query", [None, "split = 'unlabeled'"])
def test_a_bad_row_is_the_same_error(tmp_path, logits, serial, query):
    path = write(tmp_path / "p.parquet", logits, nulls=[123_457])
    mine = lambda: px.EntropyMiner(10, query=query).mine(path)
    threaded = outcome(mine)
    assert "123457" in str(threaded) and not readers()
    serial()
    same_error(threaded, outcome(mine))


@pytest.mark.parametrize("query", [None, "split = 'unlabeled'"])
def test_a_kernel_error_names_the_same_row(tmp_path, logits, serial, query):
    x = logits.copy()
    x[150_001, 2] = np.nan
    path = write(tmp_path / "p.parquet", x)
    mine = lambda: px.EntropyMiner(10, query=query).mine(path)
    threaded = outcome(mine)
    assert isinstance(threaded, InvalidInputError) and threaded.row == 150_001, threaded
    assert not readers()
    serial()
    same_error(threaded, outcome(mine))


def corrupt(path, group=2):
    """Overwrite the page header that starts a row group's logits (the third's)."""
    col = pq.ParquetFile(path).metadata.row_group(group).column(2)
    start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(b"\xff" * 64)


@pytest.mark.parametrize("query", [None, "split = 'unlabeled'"])
def test_a_corrupt_row_group_is_the_same_error(tmp_path, logits, serial, query):
    path = write(tmp_path / "p.parquet", logits)
    corrupt(path)
    mine = lambda: px.EntropyMiner(10, query=query).mine(path)
    threaded = outcome(mine)
    assert not isinstance(threaded, (AssertionError, InvalidInputError)), threaded  # not data: unreadable
    assert not readers()
    serial()
    same_error(threaded, outcome(mine))


@pytest.mark.parametrize("query", [None, "split = 'unlabeled'"])
def test_batches_and_picks_are_those_read_serially(tmp_path, logits, serial, query):
    path = write(tmp_path / "p.parquet", logits)
    src = open_pool(path, query=query)
    threaded = [(b.offset, b.source_rows(np.arange(b.n_rows)), b.columns["logits"]) for b in src.batches(["logits"], 30_000)]
    picks = px.EntropyMiner(100, query=query).mine(path)
    serial()
    plain = [(b.offset, b.source_rows(np.arange(b.n_rows)), b.columns["logits"]) for b in src.batches(["logits"], 30_000)]
    assert len(threaded) == len(plain)
    for (o1, r1, x1), (o2, r2, x2) in zip(threaded, plain):
        assert o1 == o2 and np.array_equal(r1, r2) and np.array_equal(x1, x2)
    again = px.EntropyMiner(100, query=query).mine(path)
    assert np.array_equal(picks.ids, again.ids) and np.array_equal(picks.scores, again.scores)


@pytest.mark.parametrize("query", [None, "split = 'unlabeled'"])
def test_no_reader_left_after_an_early_stop(tmp_path, logits, query):
    path = write(tmp_path / "p.parquet", logits)
    it = open_pool(path, query=query).batches(["logits"], 10_000)
    next(it)
    assert len(readers()) == min(parquet_mod.reader_count(), 4)  # a reader per row group at most
    it.close()
    assert not readers()
    # an error of the caller's own while scoring a batch
    with pytest.raises(RuntimeError, match="stop here"):
        for i, _ in enumerate(open_pool(path, query=query).batches(["logits"], 10_000)):
            if i == 2:
                raise RuntimeError("stop here")
    assert not readers()
    px.EntropyMiner(5, query=query).mine(path)
    assert not readers()


def test_prefetched_keeps_order_bounds_memory_and_passes_errors_on():
    made = []

    def items():
        for i in range(50):
            made.append(i)
            yield i
    it = prefetched(items())
    assert next(it) == 0
    threading.Event().wait(0.3)
    assert len(made) <= 4  # one being used, two queued, one waiting to be queued
    assert list(it) == list(range(1, 50))
    assert not readers()

    class Odd(ValueError):
        def __init__(self, msg, row):
            super().__init__(msg)
            self.row = row

    def failing():
        yield 1
        raise Odd("row 5 is odd", 5)
    with pytest.raises(Odd, match="row 5 is odd") as info:
        list(prefetched(failing()))
    assert info.value.row == 5 and not readers()

    def interrupted():
        yield 1
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        list(prefetched(interrupted()))
    assert not readers()


def test_stopping_interrupts_work_the_reader_waits_on():
    release = threading.Event()
    stops = []

    def slow():
        yield 1
        release.wait(30)  # as a DuckDB pass the reader is blocked in
        yield 2
    it = prefetched(slow(), on_stop=lambda: (stops.append(1), release.set()))
    assert next(it) == 1
    it.close()
    assert stops and not readers()


def test_in_order_keeps_unit_order_bounds_memory_and_raises_errors_where_they_fall():
    made = []
    units = [(u, n) for u, n in enumerate([3, 0, 5, 1, 4, 2, 6])]  # (unit, items)

    def read(share):
        for u, n in share:
            def items(u=u, n=n):
                for k in range(n):
                    made.append((u, k))
                    yield (u, k)
            yield items()
    want = [(u, k) for u, n in units for k in range(n)]
    for workers in (0, 1, 2, 3, 8):
        assert list(in_order(units, read, workers, depth=1)) == want, workers
        assert not readers()
    made.clear()
    it = in_order(units, read, 3, depth=1)
    assert next(it) == (0, 0)
    threading.Event().wait(0.3)
    assert len(made) <= 3 * 2 + 1  # each reader: one queued, one held; the one taken
    it.close()
    assert not readers()

    def failing(share):  # unit 4 fails after one item while unit 2 is still being read
        for u, n in share:
            def items(u=u, n=n):
                for k in range(n):
                    if u == 4 and k == 1:
                        raise KeyError(f"unit {u}")
                    yield (u, k)
            yield items()
    got = []
    with pytest.raises(KeyError, match="unit 4"):
        for item in in_order(units, failing, 2, depth=8):
            got.append(item)
    assert got == want[: want.index((4, 0)) + 1] and not readers()


def write_groups(path, x, groups, ids=None, split=None):
    """A pool of row groups of these sizes, an id column and a split."""
    n = len(x)
    table = pa.table({
        "id": pa.array(np.arange(n, dtype=np.int64) * 3) if ids is None else ids,
        "split": pa.array(split if split is not None else np.where(np.arange(n) % 3 == 1, "train", "unlabeled")),
        "logits": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1]),
    })
    with pq.ParquetWriter(path, table.schema) as w:
        start = 0
        for g in groups:
            w.write_table(table.slice(start, g), row_group_size=max(g, 1))
            start += g
    return str(path)


def stream(path, query, batch_rows, columns=("logits",)):
    return [
        (b.offset, b.source_rows(np.arange(b.n_rows)), {c: v.copy() for c, v in b.columns.items()})
        for b in open_pool(path, query=query).batches(list(columns), batch_rows)
    ]


def same_streams(a, b):
    assert len(a) == len(b)
    for (o1, r1, c1), (o2, r2, c2) in zip(a, b):
        assert o1 == o2 and np.array_equal(r1, r2) and c1.keys() == c2.keys()
        for k in c1:
            assert c1[k].dtype == c2[k].dtype and np.array_equal(c1[k], c2[k]), k


@pytest.mark.parametrize("query", [None, "split = 'unlabeled'", "id % 97 = 0", "id < 3000 OR id >= 21000"])
def test_batches_are_the_same_for_any_number_of_readers(tmp_path, monkeypatch, query):
    # row groups of uneven sizes, none a multiple of the batch: batches span groups and
    # files, gather matching rows from several decoded batches, or few of them (sparse)
    rng = np.random.default_rng(5)
    root = tmp_path / "f"
    root.mkdir()
    x = rng.normal(size=(9_000, 6)).astype(np.float32)
    rows = np.arange(9_000)
    ids = rows * 3
    split = np.where(rows % 3 == 1, "train", "unlabeled")
    write_groups(root / "a.parquet", x[:4_000], [1_000, 1_700, 1, 1_299], split=split[:4_000])
    write_groups(root / "b.parquet", x[4_000:], [2_500, 0, 2_500], ids=pa.array(ids[4_000:]), split=split[4_000:])
    keep = {
        None: np.ones(9_000, bool), "split = 'unlabeled'": rows % 3 != 1,
        "id % 97 = 0": ids % 97 == 0, "id < 3000 OR id >= 21000": (ids < 3000) | (ids >= 21000),
    }[query]
    want = np.flatnonzero(keep)
    runs = {}
    for readers_ in (0, 1, 2, 3):
        monkeypatch.setattr(parquet_mod, "READERS", readers_)
        for batch_rows in (700, 4096):
            runs[readers_, batch_rows] = got = stream(root, query, batch_rows, ("logits", "split"))
            assert [len(r) for _, r, _ in got][:-1] == [batch_rows] * (len(got) - 1)
            assert np.array_equal(np.concatenate([r for _, r, _ in got]), want)
            assert np.array_equal(np.concatenate([c["logits"] for _, _, c in got]), x[want])
            assert np.array_equal(np.concatenate([c["id"] for _, _, c in got]), ids[want])
            assert not readers()
    for (r, batch_rows), got in runs.items():
        same_streams(got, runs[0, batch_rows])


def test_a_small_read_ahead_budget_keeps_the_same_batches(tmp_path, logits, monkeypatch):
    path = write(tmp_path / "p.parquet", logits)
    want = stream(path, "split = 'unlabeled'", 30_000)
    monkeypatch.setattr(parquet_mod, "READ_AHEAD_BYTES", 1)  # one batch queued per reader
    same_streams(stream(path, "split = 'unlabeled'", 30_000), want)
    monkeypatch.setattr(parquet_mod, "READ_AHEAD_BYTES", 1 << 40)
    same_streams(stream(path, "split = 'unlabeled'", 30_000), want)


def test_string_ids_variable_lists_and_nulls_outside_the_query(tmp_path, monkeypatch):
    # columns the numpy gather does not take (strings, lists with a null row) go
    # through Arrow; a null in a row the query drops is never read as a value
    n, c = 5_000, 4
    x = np.random.default_rng(1).normal(size=(n, c)).astype(np.float32)
    valid = np.ones(n, bool)
    valid[[17, 2_500]] = False
    lists = pa.ListArray.from_arrays(pa.array(np.arange(0, n * c + 1, c, dtype=np.int32)), pa.array(x.ravel()))
    lists = pa.ListArray.from_arrays(lists.offsets, lists.values, mask=pa.array(~valid))
    table = pa.table({
        "id": pa.array([f"r{i}" for i in range(n)]),
        "split": pa.array(np.where(valid, "unlabeled", "train")),
        "embeddings": lists,
    })
    path = tmp_path / "s.parquet"
    pq.write_table(table, path, row_group_size=1_234)
    rows = np.flatnonzero(valid)
    for readers_ in (0, 2):
        monkeypatch.setattr(parquet_mod, "READERS", readers_)
        got = stream(path, "split = 'unlabeled'", 1_000, ("embeddings",))
        assert np.array_equal(np.concatenate([c["embeddings"] for _, _, c in got]), x[rows])
        assert np.concatenate([c["id"] for _, _, c in got]).tolist() == [f"r{i}" for i in rows]
        with pytest.raises(ValueError, match=r"column 'embeddings' row 17 \(id 'r17'\) is null"):
            list(open_pool(path).batches(["embeddings"], 1_000))


def test_a_corrupt_row_group_the_query_skips_is_never_an_error(tmp_path, logits, serial, monkeypatch):
    # the first row group (rows 0-49,999) holds no matching row: whether a reader
    # reaches it before the matches are known (here made slow to find: the second
    # reader starts with it) or after, nothing of it is used or raised
    path = write(tmp_path / "p.parquet", logits)
    corrupt(path, group=0)
    query = "id >= 350000"  # ids are 7 * row
    find = parquet_mod.ParquetSource._match_mask
    for delay in (0.0, 0.5):
        def slow(self, con, i, delay=delay):
            threading.Event().wait(delay)
            return find(self, con, i)
        monkeypatch.setattr(parquet_mod.ParquetSource, "_match_mask", slow)
        picks = px.EntropyMiner(50, query=query).mine(path)
        assert not readers()
    serial()
    again = px.EntropyMiner(50, query=query).mine(path)
    assert np.array_equal(picks.ids, again.ids) and (picks.ids >= 350_000).all()


@pytest.mark.parametrize("kind", ["parquet", "mapping"])
@pytest.mark.parametrize("query", [None, "split = 'unlabeled'"])
def test_mining_does_not_import_pandas(tmp_path, logits, kind, query):
    path = write(tmp_path / "p.parquet", logits)
    pool = repr(path) if kind == "parquet" else (
        "{'logits': np.ones((100, 3), np.float32), 'split': np.array(['unlabeled', 'train'] * 50)}"
    )
    code = (
        "import sys, numpy as np, pickaxe as px\n"
        f"px.EntropyMiner(5, query={query!r}).mine({pool})\n"
        "print(sorted(m for m in ('pandas', 'polars') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout


def test_dictionary_coded_strings_give_the_rows_strings_give(tmp_path):
    # a low-cardinality column stored dictionary-encoded is read as a dictionary for the
    # query; a column of unique strings (its dictionary overflows to plain pages) is not
    n = 120_000
    rows = np.arange(n)
    names = np.array([f"name-{i:07d}" for i in rows], dtype=object)
    split = np.where(rows % 3 == 0, "train", np.where(rows % 3 == 1, "unlabeled", None)).astype(object)
    table = pa.table({
        "split": pa.array(split.tolist(), pa.string()),
        "name": pa.array(names.tolist(), pa.large_string()),
        "logits": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(n * 2, np.float32)), 2),
    })
    path = tmp_path / "d.parquet"
    pq.write_table(table, path, row_group_size=50_000)
    assert parquet_mod._coded_strings(path, ["split", "name"]) == ["split"]
    cases = {
        "split = 'unlabeled'": rows % 3 == 1,
        "upper(split) LIKE 'UN%' OR split IS NULL": rows % 3 != 0,
        "split IS NULL AND name >= 'name-0100000'": (rows % 3 == 2) & (rows >= 100_000),
        "name LIKE '%7' AND split = 'train'": (rows % 10 == 7) & (rows % 3 == 0),
    }
    for query, keep in cases.items():
        got = open_pool(path, query=query).read(["logits"])
        assert np.array_equal(got.source_rows(np.arange(got.n_rows)), np.flatnonzero(keep)), query
