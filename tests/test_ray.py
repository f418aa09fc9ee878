"""pickaxe.ray: the miners on a local Ray cluster give the in-memory selections."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

import pickaxe as px  # noqa: E402
import pickaxe.ray as pxray  # noqa: E402
from pickaxe._pool import open_pool  # noqa: E402

N = 1200
BLOCKS = 8  # row groups of the Parquet pool, blocks of the Dataset


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
        px.ActivationMiner(15, **q),
        px.ActivationMiner(15, field="logits", **q),
        px.combine([px.EntropyMiner(1), px.EmbeddingDistanceMiner(1, reference, k=5)], 15, **q),
        px.CoresetMiner(15, **q),
        px.CoresetMiner(15, reference, **q),
        px.CoresetMiner(15, reference, metric="cosine", **q),
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
            got = pxray.mine(parquet_path, miner, concurrency=concurrency)
        else:
            want = miner.mine(data)
            got = pxray.mine(dataset, miner, concurrency=concurrency, batch_rows=N // BLOCKS)
        same(got, want)


def test_dataset_random_miner_hashes_the_id(cluster, data):
    pool = dict(data, id=np.arange(N, dtype=np.int64))
    t = _table(pool)
    ds = ray.data.from_arrow([t.slice(i * N // BLOCKS, N // BLOCKS) for i in range(BLOCKS)])
    miner = px.RandomMiner(20, seed=1)
    same(pxray.mine(ds, miner, concurrency=2), miner.mine(pool))


def test_dataset_without_id_is_refused(cluster, data):
    ds = ray.data.from_arrow(_table(data, with_id=False))
    with pytest.raises(ValueError, match="id column"):
        pxray.mine(ds, px.EntropyMiner(3))


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
    got = pxray.mine(parquet_path, miner, concurrency=2, retry_exceptions=True)
    assert not os.path.exists(cluster)  # the failure did happen
    same(got, want)
    # an embedding miner: its actor's task is retried
    miner = px.EmbeddingDistanceMiner(25, data["embeddings"][:100], k=3)
    open(cluster, "w").close()
    got = pxray.mine(dataset, miner, concurrency=1, batch_rows=N // BLOCKS, retry_exceptions=True)
    assert not os.path.exists(cluster)
    same(got, miner.mine(data))
    # the coreset's gathering tasks, retried for a listed exception type
    miner = px.CoresetMiner(10)
    open(cluster, "w").close()
    got = pxray.mine(parquet_path, miner, retry_exceptions=[pxray.TransientBatchError])
    assert not os.path.exists(cluster)
    same(got, miner.mine(parquet_path))
    # without retries the injected failure fails the run
    open(cluster, "w").close()
    with pytest.raises(Exception, match="injected failure"):
        pxray.mine(parquet_path, px.EntropyMiner(3))
    assert not os.path.exists(cluster)


def test_dataset_source_reads_on_the_driver(cluster, dataset, data):
    # the driver-side reader of a Dataset (rows numbered in the Dataset's order): the
    # rows and row numbers of the same pool in memory
    for query in (None, QUERY):
        src = pxray._DatasetSource("test", dataset, query)
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
            pxray.mine(path, miner, concurrency=1)
        assert str(on_ray.value) == str(mem.value)
    # a Dataset names the row by its id
    ds = ray.data.from_arrow(_table(dict(pool, id=data["id"])))
    with pytest.raises(ValueError, match=f"embeddings row with id {data['id'][901]}"):
        pxray.mine(ds, px.CoresetMiner(5))


@pytest.mark.parametrize("kind", ["fixed_size_list", "list", "large_list"])
def test_batch_fields_reach_the_kernels_without_a_copy(kind):
    # what the batch function does with a batch Ray hands over (zero_copy_batch=True,
    # a slice of a block): the field becomes a numpy view on the Arrow values buffer
    from pickaxe._pool import _to_pool

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
    same(pxray.mine(ds, miner), miner.mine(data))
    dup = ray.data.from_arrow(_table(dict(data, id=np.arange(N, dtype=np.int64) // 2)))
    with pytest.raises(ValueError, match="the id 0 names more than one row"):
        pxray.mine(dup, miner)


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
        same(pxray.mine(str(path), miner), miner.mine(str(path)))
