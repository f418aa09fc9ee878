"""Mining on Ray Data: the same miners over a cluster, with the same answers.

``pip install "pickaxe[ray]"``, then::

    import pickaxe.ray
    sel = pickaxe.ray.mine("s3://lake/preds/", px.EntropyMiner(500))   # a Parquet path
    sel = pickaxe.ray.mine(ray.data.read_parquet(...), miner)          # a Dataset with an id column

How it runs: the mining algorithm is `pickaxe.engine`'s, the one ``miner.mine`` runs in
process; this package is its Ray backend (`pickaxe.ray.backend`). The miner is configured
and prepared on the driver (a NoveltyMiner is fitted there, an hnswlib graph is built
there). A miner that holds such state (``Miner.ships_state``) is put into the object
store once (``ray.put``) and loaded once per actor of an actor pool (a callable class
given to ``map_batches``; the actors reserve at most all CPUs but one, so that the
operators feeding them, a read or a repartition, always have one: see ``concurrency`` in
`mine`); the others run as Ray tasks. Each batch arrives as an Arrow table, its field
column is handed to the kernels without a copy (fixed-size lists of numbers are numpy
views), and each batch returns only its own top ``k`` rows (`pickaxe.engine.batch_top`)
with their ids and metadata. The driver merges those (at most k x batches rows) with the
in-memory tie rule: score descending, then row ascending.

Row numbers. In memory a row without an ``id`` is named by its row number in the pool,
and equal scores are ordered by row number. A Ray Dataset has no stable global row
number, so:

- a **Parquet path** (file or folder, the same files in the same order as the in-memory
  Parquet pool) is read by pickaxe through Ray, one task per row group, each knowing the
  number of its first row from the Parquet metadata: ids, ties and `RandomMiner` are
  exactly those of ``miner.mine(path)``;
- a **Dataset** must have an ``id`` column (integers or strings; they come back as they
  are, int64 ids exact). Equal scores are ordered by id ascending, errors name the row by
  its id, and `RandomMiner` hashes the id in place of the row number (a string id: the
  first 8 bytes of its BLAKE2b digest): its selection equals the in-memory one when the
  ids are the row numbers.

``query`` (the miner's, or `combine`'s) is run by DuckDB on each Arrow batch before
scoring: a ``WHERE`` clause over one row at a time, so batch by batch gives the rows the
whole-pool query gives.

A miner that ranks the whole pool at once (``Miner.whole_pool``: `CoresetMiner`, whose
k-center greedy reads every row at each pick) has no per-row score. Ray tasks return only
the columns it reads, of the rows that pass the query, with their keys (row numbers, or
ids); the driver copies the blocks, in pool order, into one array per column of the
stored dtype (N x D for the embeddings) and runs the miner's ``select`` on them, then
fetches the picks' ids and metadata (Ray tasks on the row groups that hold them, or one
filtering pass over a Dataset). ``combine(..., diversity="coreset")`` runs its miners' nominating
passes on Ray and fetches only the nominees' embeddings for the greedy. `BADGEMiner`'s
k-means++ seeding reads every row at each pick: it runs on the driver over the gathered
rows, like the coreset greedy.

`TypiClustMiner` runs its k-means where the rows are (`pickaxe.ray.shards`): the
embeddings of the rows that pass the query are held by a few Ray actors (one per CPU of
the cluster, each holding a contiguous run of blocks); each Lloyd iteration the driver
sends the centres and every actor returns per-cluster counts and sums over its rows
(exact integer sums, so they add up to the in-process result bit for bit); the driver
updates the centres. The k-means++ seeding runs on the driver over the seeding sample
(at most max(10,000, 20 k) rows, fetched from the actors), and the typicality too, over
the rows of the clusters it picks from (every row when it picks from every cluster, as
without a labeled reference): the selection equals ``miner.mine(pool)``.

A batch that finds bad input (a NaN, a null row, a ragged list) returns the error, and
the driver raises the in-memory `ValueError` for the pool's first bad batch.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from ..engine import mine as mine_with
from ..miners import Miner
from ..selection import Selection
from .backend import MAX_RETRIES, RayBackend, actor_pool, load_ray
from .worker import FAIL_ONCE_ENV, TransientBatchError

__all__ = ["mine", "FAIL_ONCE_ENV", "MAX_RETRIES", "TransientBatchError"]


def mine(
    pool: Any,
    miner: Miner,
    *,
    concurrency: Union[None, int, tuple[int, int]] = None,
    batch_rows: Optional[int] = 65536,
    retry_exceptions: Union[bool, list] = False,
) -> Selection:
    """The `Selection` ``miner.mine(pool)`` gives, computed on Ray Data.

    Parameters
    ----------
    pool : ray.data.Dataset or str or os.PathLike
        A Dataset with an ``id`` column (integers or strings, one per row), or a path to
        a Parquet file or folder (read through Ray, one task per row group; ids and row
        numbers as in memory).
    miner : Miner
        Any pickaxe miner, or a `combine` of them.
    concurrency : int or (int, int), optional
        The actor pool of an embedding miner (`EmbeddingDistanceMiner`, `NoveltyMiner`,
        also inside `combine`); the other miners run as Ray tasks and ignore it. ``n``:
        a pool of ``n`` actors; ``(min, max)``: a pool that Ray Data grows from ``min``
        to ``max`` actors while batches wait. Default: ``(1, max(1, CPUs - 1))``, CPUs
        being the cluster's (``ray.cluster_resources()``). The actors together reserve at most
        CPUs - 1 CPUs, so the operators that feed them (``read_parquet``,
        ``repartition``, a ``map``) always have a CPU for their tasks: a pool holding
        every CPU would wait for their blocks forever. Each actor reserves one CPU, or
        less when more actors are asked for than that leaves room for
        (``concurrency=4`` on 2 CPUs: four actors of 0.25 CPU; on a single CPU the
        actors reserve none). An upstream operator that needs more than one CPU per
        task is not covered: give it its own resources.
    batch_rows : int or None
        Rows per batch of a Dataset (None: one batch per block).
    retry_exceptions : bool or list of exception types
        The errors of a batch that Ray retries (up to `MAX_RETRIES` times), True for
        any (``DataContext.actor_task_retry_on_errors`` for the actors;
        ``retried_map_errors``, matching the class names, for tasks on Ray versions that
        have it, else the tasks' ``retry_exceptions``). Errors of bad input (ValueError,
        TypeError) are never retried: they are raised as in memory.

    Returns
    -------
    Selection
        ``ids`` (size,), ``scores`` (size,), ``miners``, ``metadata``, ``info``: equal to
        the in-memory one. Ids keep their type: int64 ids come back exact (no float on
        the way), strings as strings.

    Raises
    ------
    TypeError
        `miner` is not a pickaxe miner, `pool` is neither a Dataset nor a path,
        `concurrency` is not an int or a pair of ints.
    ValueError
        A Dataset without an ``id`` column, ``concurrency`` below 1 or with min > max,
        bad input in the pool (the in-memory error: field, row or id, fault).

    Notes
    -----
    `CoresetMiner`: its greedy needs every row at each step, so Ray tasks read the
    embeddings column only (plus the row numbers, or ids) and the driver holds them
    (N x D, as stored: float32 stays float32) and runs the in-memory greedy; the picks'
    ids and metadata are then fetched. ``combine(..., diversity="coreset")``: the
    miners nominate their candidates on Ray as above, then only the nominees'
    embeddings are fetched to the driver for the greedy. `TypiClustMiner`: k-means on
    actors that hold the embeddings (see the module), the typicality on the driver over
    the rows of the clusters picked from.

    Examples
    --------
    >>> import pickaxe as px, pickaxe.ray                      # doctest: +SKIP
    >>> sel = pickaxe.ray.mine("preds/", px.EntropyMiner(500))  # doctest: +SKIP
    >>> sel.ids.shape                                           # doctest: +SKIP
    (500,)
    >>> ds = ray.data.read_parquet("preds/")                    # doctest: +SKIP
    >>> sel = pickaxe.ray.mine(ds, px.NoveltyMiner(200, train_embeddings), concurrency=(1, 4))  # doctest: +SKIP
    """
    ray = load_ray()
    who = f"pickaxe.ray.mine({type(miner).__name__})"
    if not isinstance(miner, Miner):
        raise TypeError(f"{who}: miner must be a pickaxe miner; got {type(miner).__name__}")
    # the cluster's CPUs, not the ones free right now: an actor of the previous run still
    # holds its CPU for a moment after the run ends
    actors = actor_pool(who, concurrency, ray.cluster_resources().get("CPU", 0))
    backend = RayBackend(pool, miner.query, who, batch_rows, actors, retry_exceptions)
    ctx = (getattr(backend.ds, "context", None) or ray.data.DataContext.get_current()) if backend.ds is not None else None
    before = getattr(ctx, "actor_task_retry_on_errors", None)
    if ctx is not None and retry_exceptions:
        ctx.actor_task_retry_on_errors = retry_exceptions
    try:
        return mine_with(miner, backend)
    finally:
        if ctx is not None:
            ctx.actor_task_retry_on_errors = before
