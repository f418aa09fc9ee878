"""Running a pool's ``query`` within limits: memory, threads and time.

A checked condition (`pickaxe.pools.query_check`) runs on a `Session`: a connection of its
own (`pickaxe.pools.connection`) for one pass over a pool, on a worker thread while the
caller waits, so that a query past its time limit, or Ctrl-C, interrupts it.

Limits (`set_query_limits`, or the environment variables ``PICKAXE_QUERY_MEMORY``,
``PICKAXE_QUERY_THREADS``, ``PICKAXE_QUERY_TIMEOUT``): DuckDB's memory limit, its threads,
and the seconds a query may run in one pass over a pool (no limit by default). A query
past its time limit is interrupted and raises TimeoutError; Ctrl-C interrupts it too.
See docs/query.md.
"""

from __future__ import annotations

import math
import numbers
import os
import queue
import threading
import time
from typing import Any, Callable, Optional

import numpy as np

from .arrow import primitive_values
from .connection import ROW, TABLE, clean_message, connect, load_duckdb, query_error, shown
from .query_check import Condition, compile_query

__all__ = ["set_query_limits", "limits", "Session", "match_rows"]

ENV_MEMORY = "PICKAXE_QUERY_MEMORY"
ENV_THREADS = "PICKAXE_QUERY_THREADS"
ENV_TIMEOUT = "PICKAXE_QUERY_TIMEOUT"
_DEFAULT_MEMORY = "1GB"
#: DuckDB's threads by default: one. The condition is a cheap per-row expression on data
#: pickaxe streams to it (a few milliseconds per million rows), and every DuckDB worker
#: thread is one more thread whose first touch of DuckDB's thread-local allocator state
#: glibc cannot fail cleanly under an address-space cap (it exits the process).
_DEFAULT_THREADS = 1

# -- limits -----------------------------------------------------------------------------

_UNSET: Any = object()
_limits: Optional[dict] = None
_limits_lock = threading.Lock()


def set_query_limits(*, memory_limit: Any = _UNSET, threads: Any = _UNSET, timeout: Any = _UNSET) -> dict:
    """Bound what a pool's ``query`` may use; returns the limits now in force.

    Each query runs on a DuckDB connection of its own with these limits (arguments not
    given keep their value; call with none to read them). The defaults come from the
    environment variables ``PICKAXE_QUERY_MEMORY``, ``PICKAXE_QUERY_THREADS`` and
    ``PICKAXE_QUERY_TIMEOUT`` when set, else 1GB, one thread and no time limit.

    Parameters
    ----------
    memory_limit : str or int
        DuckDB's memory limit: a size such as ``"2GB"`` or ``"512MiB"``, or a number of
        bytes (at least 1 MiB).
    threads : int
        Threads DuckDB may use to evaluate a query (>= 1).
    timeout : float or None
        Seconds a query may run in one pass over a pool (over a folder of Parquet
        files, summed over its files); None for no limit. A query past it is
        interrupted and raises TimeoutError.

    Returns
    -------
    dict
        ``{"memory_limit": str, "threads": int, "timeout": float or None}``.

    Raises
    ------
    TypeError, ValueError
        A limit of the wrong type or out of range (named).

    Examples
    --------
    >>> import pickaxe as px
    >>> before = px.set_query_limits(timeout=30.0, threads=2)
    >>> px.set_query_limits()["timeout"]
    30.0
    >>> _ = px.set_query_limits(**before)
    """
    who = "set_query_limits()"
    changes: dict[str, Any] = {}
    if memory_limit is not _UNSET:
        changes["memory_limit"] = _check_memory(memory_limit, f"{who}: memory_limit")
    if threads is not _UNSET:
        changes["threads"] = _check_threads(threads, f"{who}: threads")
    if timeout is not _UNSET:
        changes["timeout"] = _check_timeout(timeout, f"{who}: timeout")
    with _limits_lock:
        current = _load_limits()
        current.update(changes)
        return dict(current)


def limits() -> dict:
    """The limits in force (see `set_query_limits`)."""
    with _limits_lock:
        return dict(_load_limits())


def _load_limits() -> dict:
    global _limits
    if _limits is None:
        memory = os.environ.get(ENV_MEMORY, "").strip()
        threads = os.environ.get(ENV_THREADS, "").strip()
        timeout = os.environ.get(ENV_TIMEOUT, "").strip()
        _limits = {
            "memory_limit": _check_memory(memory, f"{ENV_MEMORY}={memory!r}") if memory else _DEFAULT_MEMORY,
            "threads": _from_env(ENV_THREADS, threads, int, "an int >= 1", _check_threads)
            if threads else _DEFAULT_THREADS,
            "timeout": _from_env(ENV_TIMEOUT, timeout, float, "a number of seconds > 0, or 'none'", _check_timeout)
            if timeout and timeout.lower() != "none" else None,
        }
    return _limits


def _from_env(name: str, text: str, parse: Callable[[str], Any], want: str, check: Callable[[Any, str], Any]) -> Any:
    try:
        value = parse(text)
    except ValueError:
        raise ValueError(f"{name}={text!r}: must be {want}") from None
    return check(value, f"{name}={text!r}")


def _check_memory(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, str)):
        raise TypeError(f"{name} must be a size such as '2GB' or a number of bytes; got {type(value).__name__}")
    if isinstance(value, numbers.Integral):
        if value < 1 << 20:
            raise ValueError(f"{name} must be at least 1 MiB (1048576 bytes); got {value}")
        text = f"{int(value)}B"
    else:
        text = value.strip()
    duckdb = load_duckdb()

    try:  # DuckDB's own parser of sizes decides
        duckdb.connect(":memory:", config={"memory_limit": text, "threads": 1, "async_threads": 0}).close()
    except duckdb.Error:
        raise ValueError(f"{name} must be a size such as '2GB', '512MiB' or a number of bytes; got {value!r}") from None
    return text


def _check_threads(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= 4096:
        raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    return int(value)


def _check_timeout(value: Any, name: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds or None; got {type(value).__name__}")
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a number of seconds > 0 (or None for no limit); got {value!r}")
    return value


# -- evaluating -------------------------------------------------------------------------


class _Worker:
    """The one thread queries run on, started on first use and kept: a thread's first
    call into DuckDB allocates DuckDB's thread-local state, which glibc cannot fail
    cleanly under an address-space cap (it exits the process), so it happens once, early,
    not once per pass over a pool."""

    def __init__(self) -> None:
        self._jobs: "queue.SimpleQueue[Callable[[], None]]" = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="pickaxe-query", daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def _loop(self) -> None:
        while True:
            self._jobs.get()()  # each job catches its own errors


_worker = _Worker()


class Session:
    """A hardened connection for one pass over a pool, with that pass's time budget.

    ``run`` evaluates a condition on Arrow data (a Table or a RecordBatchReader holding
    the condition's columns and the row number) and hands the matching row numbers to
    `consume`, batch by batch. The query runs on a worker thread while this thread waits:
    past the time limit, or on Ctrl-C, the connection is interrupted.
    """

    def __init__(self) -> None:
        lim = limits()
        self._limits = lim
        self.timeout: Optional[float] = lim["timeout"]
        self.spent = 0.0
        self._con: Any = None
        self._running: Optional[threading.Event] = None  # set when the worker is done

    @property
    def con(self) -> Any:
        if self._con is None:
            self._con = connect(self._limits["memory_limit"], self._limits["threads"])
        return self._con

    def close(self) -> None:
        if self._running is not None and not self._running.is_set():
            # a second Ctrl-C left the interrupted query on its thread: closing the
            # connection under it is not safe, it goes when the thread is done
            self._con = None
            return
        if self._con is not None:
            self._con.close()
            self._con = None

    def interrupt(self) -> None:
        """Interrupt the query running now, if any (from another thread: the one that
        started it is waiting on it)."""
        con = self._con
        if con is not None and self._running is not None and not self._running.is_set():
            con.interrupt()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(self, cond: Condition, who: str, data: Any, consume: Callable[[np.ndarray], None]) -> None:
        import duckdb

        def work() -> None:
            # every DuckDB call on the worker thread, whose DuckDB state exists once
            # (see `_Worker`): the caller may be a reader thread of its own
            con = self.con
            con.register(TABLE, data)
            try:
                reader = con.sql(cond.sql).to_arrow_reader(1 << 16)
                for b in reader:
                    # not Array.to_numpy, which imports pandas (about 1 s the first time)
                    consume(primitive_values(b.column(0)))
            finally:
                try:
                    con.unregister(TABLE)
                except Exception:
                    pass

        error = self._bounded(work, cond, who)
        if error is not None:
            if isinstance(error, duckdb.OutOfMemoryException):
                raise MemoryError(
                    f"{who}: the query {shown(cond.query)} ran out of memory ({clean_message(error)}); "
                    f"raise pickaxe.set_query_limits(memory_limit=...) or {ENV_MEMORY}"
                ) from None
            if isinstance(error, duckdb.Error):
                raise query_error(who, cond.query, cond.schema, clean_message(error)) from None
            raise error

    def _bounded(self, work: Callable[[], None], cond: Condition, who: str) -> Optional[BaseException]:
        """Run `work` on a thread within the time left; its error (None when it ran to
        the end). Raises TimeoutError past the limit, KeyboardInterrupt on Ctrl-C, after
        interrupting DuckDB."""
        left = None if self.timeout is None else self.timeout - self.spent
        if left is not None and left <= 0:
            raise self._timeout_error(cond, who)
        done = threading.Event()
        box: list = []

        def target() -> None:
            try:
                work()
            except BaseException as e:  # handed to the waiting thread
                box.append(e)
            finally:
                done.set()

        self._running = done
        start = time.monotonic()
        try:
            _worker.submit(target)
        except RuntimeError as e:  # "can't start new thread": no room for its stack
            done.set()
            raise MemoryError(
                f"{who}: could not start a thread to run the query ({e}): out of memory "
                "(address space) or past the process's thread limit"
            ) from None
        try:
            finished = done.wait(left)
        except KeyboardInterrupt:
            self._stop(done)
            raise
        finally:
            self.spent += time.monotonic() - start
        if not finished:
            self._stop(done)
            if box:  # interrupted (or failed) past the limit
                raise self._timeout_error(cond, who)
        return box[0] if box else None

    def _stop(self, done: threading.Event) -> None:
        # interrupt until the worker is gone: an interrupt that lands before DuckDB
        # has started the query is lost, so it is repeated
        while not done.is_set():
            con = self._con  # None until the worker has connected
            if con is not None:
                con.interrupt()
            done.wait(0.05)

    def _timeout_error(self, cond: Condition, who: str) -> TimeoutError:
        return TimeoutError(
            f"{who}: the query {shown(cond.query)} ran past its time limit of {self.timeout:g} s "
            f"and was stopped; raise the limit with pickaxe.set_query_limits(timeout=...) or "
            f"{ENV_TIMEOUT}, or narrow the query"
        )


def match_rows(who: str, table: Any, query: str) -> np.ndarray:
    """The row numbers (sorted) of an in-memory table's rows that pass the query; the
    table carries the row numbers as column ROW. The query is checked first (see
    `pickaxe.pools.query_check`); DuckDB then reads only the columns it names."""
    visible = table.schema.remove(table.schema.get_field_index(ROW))
    cond = compile_query(query, who, visible)
    parts: list = []
    with Session() as session:
        session.run(cond, who, table.select(list(cond.columns) + [ROW]), parts.append)
    if not parts:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate(parts).astype(np.int64, copy=False))
