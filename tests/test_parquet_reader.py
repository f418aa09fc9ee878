"""A Parquet pool is decoded on a reader thread (`pickaxe.pools.prefetch`): its errors
reach the caller as they did when it was read on the caller's thread (same type, message
and attributes), batches come in the same order, and no reader thread outlives a run
that ends early, fails or finishes."""

import threading

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import pickaxe as px
import pickaxe.pools.parquet as parquet_mod
from pickaxe.errors import InvalidInputError
from pickaxe.pools import open_pool
from pickaxe.pools.prefetch import THREAD_NAME, prefetched

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
    """Read on the caller's thread, as before the reader thread: the reference."""
    def use():
        monkeypatch.setattr(parquet_mod, "prefetched", lambda items, on_stop=None: items)
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


def corrupt(path):
    """Overwrite the page header that starts the third row group's logits."""
    col = pq.ParquetFile(path).metadata.row_group(2).column(2)
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
    assert len(readers()) == 1
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
