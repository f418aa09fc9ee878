"""Reading the next batches on a thread of their own while the caller scores this one.

A Parquet pool's batches cost mostly decoding (pyarrow, which releases the GIL), and the
kernels that score them release it too: `prefetched` runs the batch iterator on a reader
thread, handing batches over through a queue of at most `DEPTH`, so that decoding and
scoring overlap on two cores while memory stays a few batches. Order is unchanged (one
reader, one queue). An error on the reader thread is raised in the caller, the same
exception object (message, attributes, type); when the caller stops early (a break, an
error of its own, Ctrl-C), the reader is told to stop and is joined before the caller
goes on: no reader thread outlives the iteration.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, Optional, TypeVar

__all__ = ["prefetched", "DEPTH", "THREAD_NAME"]

T = TypeVar("T")

#: Batches read ahead at most (besides the one the reader holds while it waits to hand
#: it over): one being scored, the next ready.
DEPTH = 2
THREAD_NAME = "pickaxe-reader"

_DONE = object()
_POLL_S = 0.05


def prefetched(items: Iterator[T], on_stop: Optional[Callable[[], None]] = None) -> Iterator[T]:
    """`items`, read ahead on a reader thread. `on_stop` is called (repeatedly, until the
    reader has ended) when the caller stops before the end: to interrupt work the reader
    may be blocked in, such as a DuckDB query. When no thread can be started (a process
    at its thread limit or address-space cap), the items are read on this thread."""
    q: "queue.Queue" = queue.Queue(maxsize=DEPTH)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((True, _DONE))
        except BaseException as e:  # handed to the caller, raised there
            put((False, e))
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # a generator's files are closed on this thread
                try:
                    close()
                except Exception:
                    pass

    reader = threading.Thread(target=read, name=THREAD_NAME, daemon=True)
    try:
        reader.start()
    except RuntimeError:  # "can't start new thread"
        yield from items
        return
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item  # type: ignore[misc]
            if item is _DONE:
                break
            yield item
    finally:
        stop.set()
        while reader.is_alive():
            if on_stop is not None:
                on_stop()
            reader.join(_POLL_S)
