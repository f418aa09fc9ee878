"""Reading ahead on threads of their own while the caller scores.

A Parquet pool's batches cost mostly decoding (pyarrow, which releases the GIL), and the
kernels that score them release it too. Two ways to overlap them:

- `prefetched` runs one iterator on a reader thread, handing its items over through a
  queue of at most `DEPTH`;
- `in_order` reads units of work (a Parquet file's row groups) on several reader
  threads, unit ``i`` on thread ``i % workers``, each thread with a bounded queue of its
  own, and hands the items over in unit order: decoding runs on every core while the
  order of the batches, and so every result, is that of one reader.

An error on a reader thread is raised in the caller when the caller reaches it in that
order: the same exception object (message, attributes, type) one reader would have
raised at that point. When the caller stops early (a break, an error of its own,
Ctrl-C), the readers are told to stop and are joined before the caller goes on: no
reader thread outlives the iteration.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator, Optional, Sequence, TypeVar

__all__ = ["prefetched", "in_order", "DEPTH", "THREAD_NAME"]

T = TypeVar("T")
U = TypeVar("U")

#: Batches read ahead at most (besides the one the reader holds while it waits to hand
#: it over): one being scored, the next ready.
DEPTH = 2
THREAD_NAME = "pickaxe-reader"

_ITEM, _END, _ERROR = 0, 1, 2
_POLL_S = 0.05


class _Readers:
    """Reader threads, each putting (kind, value) on a bounded queue of its own, and
    the caller's side: taking from them, stopping and joining them."""

    def __init__(self, count: int, depth: int, on_stop: Optional[Callable[[], None]]) -> None:
        self.queues: list["queue.Queue"] = [queue.Queue(maxsize=depth) for _ in range(count)]
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.on_stop = on_stop

    def put(self, w: int, kind: int, value: object) -> bool:
        """Queue an item for the caller; False once the caller has stopped."""
        q = self.queues[w]
        while not self.stop.is_set():
            try:
                q.put((kind, value), timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def start(self, targets: Sequence[Callable[[], None]]) -> bool:
        """Start a thread per target; False (none left running) when the process cannot
        start one (at its thread limit or address-space cap)."""
        for target in targets:
            t = threading.Thread(target=target, name=THREAD_NAME, daemon=True)
            try:
                t.start()
            except RuntimeError:  # "can't start new thread"
                self.close()
                self.threads = []
                return False
            self.threads.append(t)
        return True

    def take(self, w: int) -> tuple[int, object]:
        kind, value = self.queues[w].get()
        if kind == _ERROR:
            raise value  # type: ignore[misc]
        return kind, value

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            while t.is_alive():
                if self.on_stop is not None:
                    self.on_stop()
                t.join(_POLL_S)


def _closing(it: object) -> None:
    close = getattr(it, "close", None)
    if close is not None:  # a generator's files are closed on its own thread
        try:
            close()
        except Exception:
            pass


def prefetched(items: Iterator[T], on_stop: Optional[Callable[[], None]] = None) -> Iterator[T]:
    """`items`, read ahead on a reader thread. `on_stop` is called (repeatedly, until the
    reader has ended) when the caller stops before the end: to interrupt work the reader
    may be blocked in, such as a DuckDB query. When no thread can be started (a process
    at its thread limit or address-space cap), the items are read on this thread."""
    readers = _Readers(1, DEPTH, on_stop)

    def read() -> None:
        try:
            for item in items:
                if not readers.put(0, _ITEM, item):
                    return
            readers.put(0, _END, None)
        except BaseException as e:  # handed to the caller, raised there
            readers.put(0, _ERROR, e)
        finally:
            _closing(items)

    if not readers.start([read]):
        yield from items
        return
    try:
        while True:
            kind, item = readers.take(0)
            if kind == _END:
                break
            yield item  # type: ignore[misc]
    finally:
        readers.close()


def in_order(
    units: Sequence[U],
    read: Callable[[Sequence[U]], Iterator[Iterable[T]]],
    workers: int,
    depth: int = DEPTH,
    on_stop: Optional[Callable[[], None]] = None,
) -> Iterator[T]:
    """The items of every unit, in unit order, read on up to `workers` threads.

    Thread ``w`` runs ``read(units[w::workers])``, a generator that yields, for each of
    its units in turn, an iterable of that unit's items (so that a thread can keep a
    file open across its units); it queues at most `depth` items ahead of the caller.
    Memory: at most ``workers * (depth + 1)`` items read and not yet taken. With
    ``workers <= 1``, or when no thread can be started, everything is read on the
    caller's thread, in the same order. `on_stop` as for `prefetched`.
    """
    units = list(units)
    workers = min(workers, len(units))
    if workers < 1:
        for items in read(units):
            yield from items
        return
    readers = _Readers(workers, max(1, depth), on_stop)

    def work(w: int) -> None:
        it = read(units[w::workers])
        try:
            for items in it:
                for item in items:
                    if not readers.put(w, _ITEM, item):
                        return
                    del item  # the caller's alone now: the reader may check what it still uses
                if not readers.put(w, _END, None):
                    return
        except BaseException as e:  # handed to the caller when it reaches this unit
            readers.put(w, _ERROR, e)
        finally:
            _closing(it)

    if not readers.start([lambda w=w: work(w) for w in range(workers)]):
        for items in read(units):
            yield from items
        return
    try:
        for i in range(len(units)):
            while True:
                kind, item = readers.take(i % workers)
                if kind == _END:
                    break
                yield item  # type: ignore[misc]
    finally:
        readers.close()
