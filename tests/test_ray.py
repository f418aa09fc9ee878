"""pickaxe.ray: the miners on a local Ray cluster give the in-memory selections."""

import os
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

import pickaxe as px  # noqa: E402
import pickaxe.ray as pxray  # noqa: E402
from pickaxe.pools import open_pool  # noqa: E402

N = 1200
BLOCKS = 8  # row groups of the Parquet pool, blocks of the Dataset


#: A run takes seconds here; a deadlocked one never ends. Generous for 2 busy cores.
WATCHDOG_S = 120
#: What a watchdog found deadlocked: its run still holds the cluster's CPUs.
_HUNG = []


def finishes(what, fn, timeout=WATCHDOG_S):
    """fn() run in a thread: the test fails (instead of hanging CI) when it has not
    returned after `timeout` seconds."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # re-raised in the test's thread
            box["error"] = e

    t = threading.Thread(target=run, daemon=True, name=f"watchdog: {what}")
    t.start()
    t.join(timeout)
    if t.is_alive():
        _HUNG.append(what)
        pytest.fail(f"{what} did not finish within {timeout} s (deadlocked?)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def mine(pool, miner, **kwargs):
    """`pickaxe.ray.mine` under the watchdog."""
    return finishes(f"pickaxe.ray.mine({miner!r})", lambda: pxray.mine(pool, miner, **kwargs))


@pytest.fixture(autouse=True)
def _cluster_not_held(request):
    # after a deadlock the cluster's CPUs stay held: the other Ray tests fail, not hang
    if _HUNG and "cluster" in request.fixturenames:
        pytest.fail(f"the Ray cluster is held by {_HUNG[0]!r}, which never finished")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    flag_dir = tmp_path_factory.mktemp("flags")
    flag = str(flag_dir / "fail-once")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {pxray.FAIL_ONCE_ENV: flag}},
        # the task workers stay up (imports done) while an embedding miner's actors run,
        # instead of being killed as idle workers beyond num_cpus and restarted after
        _system_config={"num_workers_soft_limit": 6},
    )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    try:
        yield flag
    finally:
        # not under a thread still waiting in a deadlocked run: ray.shutdown() then takes
        # the process down a minute later (its core worker loses the GCS); Ray's exit
        # hook ends it cleanly when Python exits
        if not _HUNG:
            ray.shutdown()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    return {
        "id": np.arange(N, dtype=np.int64) * 3 + 7,  # increasing with the rows
        "logits": rng.normal(size=(N, 5)).astype(np.float32),
        "embeddings": rng.normal(size=(N, 8)).astype(np.float32),
        "query_by_committee": rng.dirichlet(np.ones(4), size=(N, 3)).astype(np.float32),
        "split": np.where(rng.random(N) < 0.6, "unlabeled", "train").astype(object),
    }


def _table(data, with_id=True):
    cols = {}
    for k, v in data.items():
        if k == "id" and not with_id:
            continue
        if v.ndim == 1:
            cols[k] = pa.array(v.tolist() if v.dtype == object else v)
        else:
            flat = pa.array(v.reshape(-1))
            for width in reversed(v.shape[1:]):
                flat = pa.FixedSizeListArray.from_arrays(flat, width)
            cols[k] = flat
    return pa.table(cols)


@pytest.fixture(scope="module")
def parquet_path(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("pool") / "pool.parquet"
    pq.write_table(_table(data, with_id=False), path, row_group_size=N // BLOCKS)
    return str(path)


@pytest.fixture(scope="module")
def dataset(cluster, data):
    t = _table(data)
    ds = ray.data.from_arrow([t.slice(i * N // BLOCKS, N // BLOCKS) for i in range(BLOCKS)])
    assert ds.num_blocks() >= BLOCKS
    return ds


@pytest.fixture(scope="module")
def reference():
    return np.random.default_rng(9).normal(size=(300, 8)).astype(np.float32)


def miners(reference, query=None):
    q = {"query": query} if query else {}
    return [
        px.RandomMiner(15, seed=3, **q),
        px.LeastConfidenceMiner(15, **q),
        px.MarginMiner(15, **q),
        px.RatioMiner(15, **q),
        px.EntropyMiner(15, **q),
        px.CommitteeMiner(15, **q),
        px.CommitteeMiner(15, measure="mutual_information", **q),
        px.EmbeddingDistanceMiner(15, reference, k=5, **q),
        px.EmbeddingDistanceMiner(15, px.ReferenceIndex(np.tile(reference, (20, 1)) + np.float32(0.01) * np.arange(6000, dtype=np.float32)[:, None], metric="l2"), k=5, **q),
        px.NoveltyMiner(15, reference, k=10, **q),
        px.ActivationMiner(15, field="embeddings", **q),
        px.ActivationMiner(15, field="logits", **q),
        px.combine([px.EntropyMiner(1), px.EmbeddingDistanceMiner(1, reference, k=5)], 15, **q),
        px.CoresetMiner(15, **q),
        px.CoresetMiner(15, reference, **q),
        px.CoresetMiner(15, reference, metric="cosine", **q),
        px.TypiClustMiner(15, reference, **q),
        px.BADGEMiner(15, seed=4, **q),
        px.ClusterMarginMiner(15, "split", candidates=3, **q),
        px.combine([px.EntropyMiner(1), px.MarginMiner(1)], 15, diversity="coreset", candidates=3, **q),
        px.combine([px.EntropyMiner(1), px.CoresetMiner(1, reference)], 15, [2, 1], diversity="coreset", **q),
    ]


def same(a, b):
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
    assert a.miners.tolist() == b.miners.tolist()
    assert sorted(a.metadata) == sorted(b.metadata)
    for k in a.metadata:
        assert a.metadata[k].tolist() == b.metadata[k].tolist()
    assert a.info == b.info


def test_import_pickaxe_does_not_import_ray():
    code = "import pickaxe, sys; assert 'ray' not in sys.modules and 'pickaxe.ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# Embedding miners (7 to 9, and 12 which holds one) start an actor pool per run, seconds
# each on 2 busy cores: each runs once, in one of the four settings; every other miner
# runs in most of them (their Ray tasks reuse pooled workers).
QUERY = "split = 'unlabeled'"
# (An EmbeddingDistanceMiner with exact search, like 7, runs in test_failed_batch_is_retried.)
CASES = [
    ("parquet", None, [0, 1, 2, 3, 4, 5, 6, 10, 11, 13, 14, 17]),
    ("parquet", QUERY, [0, 4, 6, 12, 14, 16]),
    ("dataset", None, [1, 2, 3, 5, 8, 10, 11, 13, 15, 16, 17]),
    ("dataset", QUERY, [4, 9, 14, 16, 17]),
]


@pytest.mark.parametrize("kind,query,which", CASES, ids=[f"{k}-{q is not None}" for k, q, _ in CASES])
def test_equals_in_memory(cluster, parquet_path, dataset, data, reference, kind, query, which):
    all_miners = miners(reference, query)
    for i in which:
        miner = all_miners[i]
        concurrency = 2 if i == 8 else 1  # one run with two actors
        if kind == "parquet":
            want = miner.mine(parquet_path)
            got = mine(parquet_path, miner, concurrency=concurrency)
        else:
            want = miner.mine(data)
            got = mine(dataset, miner, concurrency=concurrency, batch_rows=N // BLOCKS)
        same(got, want)


def test_dataset_random_miner_hashes_the_id(cluster, data):
    pool = dict(data, id=np.arange(N, dtype=np.int64))
    t = _table(pool)
    ds = ray.data.from_arrow([t.slice(i * N // BLOCKS, N // BLOCKS) for i in range(BLOCKS)])
    miner = px.RandomMiner(20, seed=1)
    same(mine(ds, miner, concurrency=2), miner.mine(pool))


def test_dataset_without_id_is_refused(cluster, data):
    ds = ray.data.from_arrow(_table(data, with_id=False))
    with pytest.raises(ValueError, match="id column"):
        mine(ds, px.EntropyMiner(3))


def test_reference_index_pickles(reference):
    big = np.random.default_rng(1).normal(size=(5000, 8)).astype(np.float32)
    index = px.ReferenceIndex(big, metric="l2")
    assert index.method == "hnsw"
    back = pickle.loads(pickle.dumps(index))
    a, b = index.query(reference, 5), back.query(reference, 5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_failed_batch_is_retried(cluster, parquet_path, dataset, data):
    miner = px.EntropyMiner(25)
    want = miner.mine(parquet_path)
    open(cluster, "w").close()
    got = mine(parquet_path, miner, concurrency=2, retry_exceptions=True)
    assert not os.path.exists(cluster)  # the failure did happen
    same(got, want)
    # an embedding miner: its actor's task is retried
    miner = px.EmbeddingDistanceMiner(25, data["embeddings"][:100], k=3)
    open(cluster, "w").close()
    got = mine(dataset, miner, concurrency=1, batch_rows=N // BLOCKS, retry_exceptions=True)
    assert not os.path.exists(cluster)
    same(got, miner.mine(data))
    # the coreset's gathering tasks, retried for a listed exception type
    miner = px.CoresetMiner(10)
    open(cluster, "w").close()
    got = mine(parquet_path, miner, retry_exceptions=[pxray.TransientBatchError])
    assert not os.path.exists(cluster)
    same(got, miner.mine(parquet_path))
    # without retries the injected failure fails the run
    open(cluster, "w").close()
    with pytest.raises(Exception, match="injected failure"):
        mine(parquet_path, px.EntropyMiner(3))
    assert not os.path.exists(cluster)


def test_dataset_source_reads_on_the_driver(cluster, dataset, data):
    # the driver-side reader of a Dataset (rows numbered in the Dataset's order): the
    # rows and row numbers of the same pool in memory
    for query in (None, QUERY):
        src = pxray.dataset.DatasetSource("test", dataset, query)
        want = open_pool(data, query=query)
        got, exp = src.read(["logits", "split"]), want.read(["logits", "split"])
        assert got.n_rows == exp.n_rows
        np.testing.assert_array_equal(got.source_rows(np.arange(got.n_rows)), exp.source_rows(np.arange(exp.n_rows)))
        for c in ("logits", "split", "id"):
            np.testing.assert_array_equal(got.columns[c], exp.columns[c])
        batches = list(src.batches(["logits"], 250))
        assert [b.n_rows for b in batches[:-1]] == [250] * (len(batches) - 1)
        rows = np.array([1100, 3, 640, 150])
        t = src.take(rows, ["embeddings"])
        np.testing.assert_array_equal(t.columns["embeddings"], data["embeddings"][rows])
        np.testing.assert_array_equal(t.columns["id"], data["id"][rows])


def test_bad_rows_are_named_as_in_memory(cluster, data, tmp_path):
    # a NaN found in a Ray task (entropy) or on the driver (the coreset greedy): the same
    # ValueError, naming the field and the row, as in memory
    pool = {k: v.copy() for k, v in data.items() if k != "id"}
    pool["logits"][700, 2] = np.nan
    pool["embeddings"][901, 5] = np.inf
    path = str(tmp_path / "bad.parquet")
    pq.write_table(_table(pool, with_id=False), path, row_group_size=N // BLOCKS)
    for miner, where in ((px.EntropyMiner(5), "logits row 700"), (px.CoresetMiner(5), "embeddings row 901")):
        with pytest.raises(ValueError) as mem:
            miner.mine(path)
        assert where in str(mem.value)
        with pytest.raises(ValueError) as on_ray:
            mine(path, miner, concurrency=1)
        assert str(on_ray.value) == str(mem.value)
        # the exception itself crosses from the Ray worker: its type and attributes
        assert type(on_ray.value) is type(mem.value) is px.errors.InvalidInputError
        assert (on_ray.value.field, on_ray.value.row, on_ray.value.reason) == (
            mem.value.field, mem.value.row, mem.value.reason)
        assert on_ray.value.row == int(where.rsplit(" ", 1)[1])  # a row of a later block, re-based
    # a Dataset names the row by its id (it has no row numbers): in the greedy on the
    # driver and in a batch's scores
    ds = ray.data.from_arrow(_table(dict(pool, id=data["id"])))
    with pytest.raises(ValueError, match=f"embeddings row with id {data['id'][901]}"):
        mine(ds, px.CoresetMiner(5))
    with pytest.raises(ValueError, match=f"^logits row with id {data['id'][700]}: NaN at class 2$") as e:
        mine(ds, px.EntropyMiner(5))
    assert (e.value.row, e.value.id) == (None, data["id"][700])


@pytest.mark.parametrize("kind", ["fixed_size_list", "list", "large_list"])
def test_batch_fields_reach_the_kernels_without_a_copy(kind):
    # what the batch function does with a batch Ray hands over (zero_copy_batch=True,
    # a slice of a block): the field becomes a numpy view on the Arrow values buffer
    from pickaxe.pools import to_pool as _to_pool

    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    flat = pa.array(x.reshape(-1))
    if kind == "fixed_size_list":
        arr = pa.FixedSizeListArray.from_arrays(flat, 4)
    elif kind == "list":
        arr = pa.ListArray.from_arrays(pa.array(np.arange(0, 44, 4, dtype=np.int32)), flat)
    else:
        arr = pa.LargeListArray.from_arrays(pa.array(np.arange(0, 44, 4, dtype=np.int64)), flat)
    batch = pa.table({"logits": arr}).slice(3, 5)
    got = _to_pool("test", batch, ["logits"], 5, 3, None).columns["logits"]
    np.testing.assert_array_equal(got, x[3:8])
    values = arr.values.buffers()[1]
    assert got.__array_interface__["data"][0] == values.address + 3 * 4 * 4  # row 3, in place
    assert not got.flags.owndata


def test_dataset_coreset_orders_rows_by_id(cluster, data):
    # blocks in reverse order: the gathered rows are put back in id order, the order of
    # the in-memory pool (whose ids increase with the rows); duplicate ids are refused
    t = _table(data)
    ds = ray.data.from_arrow([t.slice(i * N // BLOCKS, N // BLOCKS) for i in range(BLOCKS)][::-1])
    miner = px.CoresetMiner(12)
    same(mine(ds, miner), miner.mine(data))
    # in one batch or across batches, in the greedy's gathering or in a batch's scores
    dup = _table(dict(data, id=np.arange(N, dtype=np.int64) // 2))
    for ds in (ray.data.from_arrow(dup), ray.data.from_arrow([dup.slice(0, 501), dup.slice(501)])):
        for m in (miner, px.EntropyMiner(3)):
            with pytest.raises(ValueError, match=f"{type(m).__name__}\\): the id (0|250) names more than one row; ids must be unique"):
                mine(ds, m)


def _vision_table(n_images=64, classes=3, members=2):
    """Detections (0 to 3 boxes per image, `members` committee members) and pixel logits
    as the pool columns of issue #5: list<struct> boxes, nested member lists, (C, H, W)."""
    rng = np.random.default_rng(11)

    def boxes_column(counts):
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        k = int(offsets[-1])
        xy = rng.uniform(0, 40, size=(k, 2))
        bbox = np.concatenate([xy, xy + rng.uniform(0, 15, size=(k, 2))], axis=1)
        logits = rng.normal(scale=2, size=(k, classes))
        structs = pa.StructArray.from_arrays(
            [pa.FixedSizeListArray.from_arrays(pa.array(bbox.ravel()), 4),
             pa.FixedSizeListArray.from_arrays(pa.array(logits.ravel()), classes),
             pa.array(rng.random(k))],
            names=["bbox", "logits", "objectness"])
        return pa.ListArray.from_arrays(pa.array(offsets), structs)

    counts = rng.integers(0, 4, size=n_images)
    counts[3] = 0  # an image without boxes
    member = pa.ListArray.from_arrays(
        pa.array(np.arange(0, n_images * members + 1, members, dtype=np.int32)),
        boxes_column(rng.integers(0, 4, size=n_images * members)))
    pixels = pa.array(rng.normal(size=n_images * classes * 4 * 5).astype(np.float32))
    for size in (5, 4, classes):
        pixels = pa.FixedSizeListArray.from_arrays(pixels, size)
    return pa.table({"boxes": boxes_column(counts), "member_boxes": member,
                     "pixel_logits": pixels,
                     "split": pa.array(np.where(rng.random(n_images) < 0.6, "unlabeled", "train"))})


@pytest.mark.parametrize("query", [None, QUERY])
def test_vision_miners_equal_in_memory(cluster, tmp_path, query):
    # the miners of issue #5 read several columns (boxes and member_boxes) of list<struct>
    path = tmp_path / "vision.parquet"
    pq.write_table(_vision_table(), path, row_group_size=8)  # 8 row groups
    q = {"query": query} if query else {}
    for miner in [px.DetectionMiner(7, measure="margin", objectness=True, **q),
                  px.LocalizationMiner(7, reduce="mean", **q),
                  px.SegmentationMiner(7, reduce=("top", 0.2), **q)]:
        same(mine(str(path), miner), miner.mine(str(path)))


# -- Ray never deadlocks itself (issue #13, point 7) --------------------------------------

def test_actor_pool_leaves_a_cpu_for_upstream_operators():
    # the actors together reserve at most CPUs - 1: a read or a repartition upstream of
    # them always has a CPU for its tasks
    pool = pxray.backend.actor_pool
    assert pool("t", None, 2.0) == (1, 1, 1.0)
    assert pool("t", None, 8.0) == (1, 7, 1.0)
    assert pool("t", 3, 8.0) == (3, 3, 1.0)
    assert pool("t", 4, 2.0) == (4, 4, 0.25)  # more actors than room: a share of a CPU
    assert pool("t", (1, 3), 2.0) == (1, 3, 0.3333)  # rounded down to Ray's 1e-4 unit
    assert pool("t", (2, 8), 4.0) == (2, 8, 0.375)
    assert pool("t", None, 1.0) == (1, 1, 0.0)  # a single CPU: the actor reserves none
    for cpus in (1.0, 2.0, 3.0, 16.0):
        for c in (None, 1, 2, 5, (1, 4), (3, 9)):
            lo, hi, each = pool("t", c, cpus)
            assert 1 <= lo <= hi and hi * each <= cpus - 1


@pytest.mark.parametrize("bad,error,match", [
    (0, ValueError, "concurrency must be at least 1 actor; got 0"),
    ((2, 1), ValueError, r"needs min <= max; got \(2, 1\)"),
    ((1, 2, 3), ValueError, r"\(min, max\) actors; got \(1, 2, 3\)"),
    (1.5, TypeError, "concurrency must be an int or a \\(min, max\\) pair of ints; got 1.5"),
    (True, TypeError, "got True"),
    (("1", 2), TypeError, "got \\('1', 2\\)"),
])
def test_bad_concurrency_is_refused(cluster, parquet_path, bad, error, match):
    with pytest.raises(error, match=match):
        mine(parquet_path, px.EntropyMiner(3), concurrency=bad)


def test_repartitioned_dataset_with_an_embedding_miner_finishes(cluster, data, reference):
    # the case of the issue: a repartition splits its blocks in Ray tasks while the pool
    # is starting; a pool holding both CPUs left them none, for ever. Three runs: the
    # race was lost in about one run of three, and each run starts its pool anew.
    t = _table(data)
    miner = px.EmbeddingDistanceMiner(100, reference, k=5)
    want = miner.mine(data)
    for i in range(3):
        got = finishes(f"run {i}", lambda: pxray.mine(ray.data.from_arrow(t).repartition(10), miner))
        same(got, want)
    # with more actors than CPUs asked for: they share the CPUs left over
    got = mine(ray.data.from_arrow(t).repartition(10), miner, concurrency=(1, 3))
    same(got, want)


@pytest.fixture(scope="module")
def parquet_with_id(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("with-id") / "pool.parquet"
    pq.write_table(_table(data), path, row_group_size=N // BLOCKS)
    return str(path)


def test_read_parquet_dataset_with_an_embedding_miner_finishes(cluster, data, reference, parquet_with_id):
    # the read tasks upstream of the pool need a CPU too
    miner = px.NoveltyMiner(40, reference, k=10)
    same(mine(ray.data.read_parquet(parquet_with_id), miner), miner.mine(data))


def test_combine_with_embedding_miners_finishes(cluster, data, reference, parquet_with_id):
    # two actor pools one after the other (the first one's actors hold their CPUs for a
    # moment after its pass), each behind read tasks
    miner = px.combine(
        [px.EmbeddingDistanceMiner(1, reference, k=5), px.EntropyMiner(1),
         px.EmbeddingDistanceMiner(1, reference[:100], k=3, metric="l2")],
        30,
    )
    same(mine(ray.data.read_parquet(parquet_with_id), miner), miner.mine(data))


def test_similarity_and_labeled_coreset_equal_in_memory(cluster, dataset, parquet_path, data, reference):
    # issue #16: rows like given examples (an actor pool holds them), and combine's
    # coreset counting the labeled rows as covered (the driver's greedy over fetched rows)
    miner = px.SimilarityMiner(15, data["embeddings"][[4, 900]] + np.float32(0.01), k=2)
    same(mine(dataset, miner, batch_rows=N // BLOCKS), miner.mine(data))
    both = px.combine([px.EntropyMiner(1), px.MarginMiner(1)], 12, diversity="coreset", reference=reference)
    same(mine(parquet_path, both), both.mine(parquet_path))


# -- ids keep their type (issue #13, point 3) ---------------------------------------------

ID_ROWS = 240
ID_KINDS = {
    # odd ids past 2**53: a float64 on the way would make them even (its step is 256 there)
    "int64": lambda: pa.array(2**60 + 1 + 2 * np.arange(ID_ROWS, dtype=np.int64)),
    "uint64": lambda: pa.array(np.uint64(2**63 + 1) + np.arange(ID_ROWS, dtype=np.uint64)),
    "int32": lambda: pa.array(np.arange(ID_ROWS, dtype=np.int32) * 7 - 500),
    "string": lambda: pa.array([f"img-{i:05d}" for i in range(ID_ROWS)]),
}


def _id_pool(kind):
    rng = np.random.default_rng(21)
    data = {
        "logits": rng.normal(size=(ID_ROWS, 4)).astype(np.float32),
        "embeddings": rng.normal(size=(ID_ROWS, 6)).astype(np.float32),
    }
    t = _table(data, with_id=False)
    return t.add_column(0, "id", ID_KINDS[kind]()), rng.normal(size=(30, 6)).astype(np.float32)


@pytest.mark.parametrize("kind", list(ID_KINDS))
def test_ids_round_trip_exactly(cluster, tmp_path, kind):
    table, ref = _id_pool(kind)
    path = str(tmp_path / "ids.parquet")
    pq.write_table(table, path, row_group_size=ID_ROWS // 4)
    ds = ray.data.from_arrow([table.slice(i, ID_ROWS // 4) for i in range(0, ID_ROWS, ID_ROWS // 4)])
    want_type = table.schema.field("id").type
    full = kind in ("int64", "string")  # the others: the routes that once lost them
    on_dataset = [
        px.EntropyMiner(9),
        px.combine([px.EntropyMiner(1), px.MarginMiner(1)], 8, diversity="coreset", candidates=2),
    ] + ([px.EmbeddingDistanceMiner(9, ref, k=3), px.CoresetMiner(6),
          px.combine([px.EntropyMiner(1), px.EmbeddingDistanceMiner(1, ref, k=3)], 10)] if full else [])
    on_path = [px.EntropyMiner(9), px.CoresetMiner(6)] if full else []
    runs = [(m, ds) for m in on_dataset] + [(m, path) for m in on_path]
    for miner, pool in runs:
        want = miner.mine(table)
        got = mine(pool, miner, batch_rows=ID_ROWS // 4)
        same(got, want)
        assert got.ids.dtype == want.ids.dtype
        assert got.to_arrow().schema.field("id").type == want_type
        if kind == "int64":
            assert got.ids.dtype == np.int64 and all((int(v) - 2**60) % 2 == 1 for v in got.ids)


def test_random_miner_on_string_ids_is_the_same_whatever_the_blocks(cluster):
    # RandomMiner hashes a Dataset's id in place of the row number: string ids too, the
    # same selection however the rows are split into blocks and in whichever order
    table, _ = _id_pool("string")
    miner = px.RandomMiner(12, seed=4)
    one = mine(ray.data.from_arrow(table), miner)
    parts = [table.slice(i, 50) for i in range(0, ID_ROWS, 50)][::-1]
    other = mine(ray.data.from_arrow(parts), miner, batch_rows=17)
    same(one, other)
    assert one.ids.dtype == object and len(set(one.ids.tolist())) == 12
    assert set(one.ids.tolist()) <= set(table.column("id").to_pylist())
    assert not np.array_equal(one.ids, mine(ray.data.from_arrow(table), px.RandomMiner(12, seed=5)).ids)


def test_batch_controls_equal_in_process(cluster, parquet_path, data):
    # quotas by group and draws: each block keeps its rows per group (or by draw key),
    # the driver merges them as the in-process engine does; a Dataset's draw hashes its
    # ids (here the row numbers, so the picks match the in-memory pool's)
    pool = dict(data, id=np.arange(N, dtype=np.int64))
    t = _table(pool)
    ds = ray.data.from_arrow([t.slice(i * N // BLOCKS, N // BLOCKS) for i in range(BLOCKS)])
    for miner in [
        px.MarginMiner(15, stratify="split", quota={"train": 1, "unlabeled": 2}, sampling="power", seed=2),
        px.EntropyMiner(12, stratify="predicted", sampling="rank"),
        px.combine([px.MarginMiner(1), px.EntropyMiner(1)], 10, stratify="predicted", quota="proportional"),
    ]:
        want = miner.mine(parquet_path)
        for got in (mine(parquet_path, miner), mine(ds, miner, batch_rows=N // BLOCKS)):
            same(got, want)
            assert got.groups.tolist() == want.groups.tolist()


def _shards(pool, field="embeddings", actors=2, batch_rows=None):
    """`pickaxe.ray.shards.Shards` over a Parquet path or a Dataset (as `mine` makes them)."""
    from pickaxe.ray.backend import RayBackend, actor_pool
    from pickaxe.ray.shards import Shards

    backend = RayBackend(pool, None, "test", batch_rows, actor_pool("test", 1, 2), False)
    return Shards(backend, field, actors=actors)


def test_kmeans_on_the_actors_equals_in_process(cluster, tmp_path):
    # Lloyd on the actors that hold the blocks (uneven row groups, three actors, the fit
    # and seeding rows sampled, empty clusters re-seeded from duplicates): the labels,
    # centres, inertia and iterations of pickaxe.clustering.kmeans on the gathered rows,
    # bit for bit
    from pickaxe import clustering as pc

    rng = np.random.default_rng(3)
    dup = (rng.normal(size=(40, 6)) * 4).astype(np.float32)[rng.integers(0, 40, 1500)]
    x = dup.copy()
    x[::7] += rng.normal(size=(len(x[::7]), 6)).astype(np.float32)
    paths = []
    for name, rows in (("km", x), ("dup", dup)):
        paths.append(str(tmp_path / f"{name}.parquet"))
        w = pq.ParquetWriter(paths[-1], _table({"embeddings": rows[:1]}).schema)
        for a, b in ((0, 100), (100, 700), (700, 733), (733, 1500)):
            w.write_table(_table({"embeddings": rows[a:b]}))
        w.close()
    # (40 distinct rows into 45 clusters: some are empty at every iteration)
    cases = [(0, dict(n_clusters=12, seed=1, fit_rows=600, init_rows=150)),
             (0, dict(n_clusters=60, seed=4, method="full")),
             (0, dict(n_clusters=9, seed=2, max_iter=2, tol=0.0)),
             (1, dict(n_clusters=45, seed=5, method="full"))]

    def run():
        out = []
        for i, path in enumerate(paths):
            with _shards(path, actors=3) as shards:
                shards.check("test")
                out += [shards.kmeans(**c) for p, c in cases if p == i]
        return out

    for (p, c), got in zip(sorted(cases, key=lambda pc_: pc_[0]), finishes("Shards.kmeans", run)):
        want = pc.kmeans((x, dup)[p], **c)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.centers, want.centers)
        assert (got.inertia, got.iterations, got.converged) == (want.inertia, want.iterations, want.converged)


def test_typiclust_on_the_actors(cluster, data, parquet_path, reference):
    # TypiClust on Ray: k-means on the actors, the typicality of the picked clusters on the
    # driver; the in-memory selection with and without a reference, on a Dataset whose
    # blocks come in reverse id order, and the in-memory error for a bad row
    t = _table(data)
    ds = ray.data.from_arrow([t.slice(i * N // BLOCKS, N // BLOCKS) for i in range(BLOCKS)][::-1])
    for miner in (px.TypiClustMiner(20, seed=3), px.TypiClustMiner(10, reference[:40], clusters=30, seed=1)):
        same(mine(parquet_path, miner), miner.mine(parquet_path))
        same(mine(ds, miner, batch_rows=N // BLOCKS), miner.mine(data))
    bad = {k: v.copy() for k, v in data.items()}
    bad["embeddings"][777, 3] = np.nan
    ds = ray.data.from_arrow(_table(bad))
    with pytest.raises(ValueError) as mem:
        px.TypiClustMiner(5).mine(bad)
    with pytest.raises(ValueError) as on_ray:
        mine(ds, px.TypiClustMiner(5))
    assert type(on_ray.value) is type(mem.value) is px.errors.InvalidInputError
    assert (on_ray.value.field, on_ray.value.reason) == (mem.value.field, mem.value.reason)
    assert (on_ray.value.row, on_ray.value.id) == (None, data["id"][777])
