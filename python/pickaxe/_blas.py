"""BLAS on the calling thread only, for the stretches where pickaxe runs its own threads.

OpenBLAS's worker threads busy-wait for a while after every product (so that the next
one starts at once); when pickaxe's Rust kernels run right after a product, those
spinning workers take the cores the kernels' threads need. Measured on 2 cores: a
k = 4,999 exact search (500 x 5,000 x 384) right after a k = 10 one took 0.083-0.094 s
wall with BLAS's 2 threads spinning and 0.057-0.065 s with the k = 10 Gram products run
as one BLAS thread per pickaxe thread. scikit-learn's KMeans limits BLAS the same way
around its own threads.

With OpenBLAS on pthreads (numpy's wheels) the limit is process-wide while it lasts:
another Python thread's BLAS call in that window runs single-threaded too.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

_lock = threading.Lock()
_controller: Any = None
# Overlapping callers (nested, or on other Python threads) share one limit: the first in
# sets it, the last out restores the count BLAS had before the first. A limit per caller
# would record the first caller's 1 as the second's "original" and, if the first left
# first, leave BLAS on one thread for good.
_users = 0
_original: list[int] = []


def _libraries() -> list[Any]:
    """threadpoolctl's controllers of this process's BLAS libraries, found once (a scan of
    the loaded libraries, ~7 ms); none without threadpoolctl. Called with _lock held."""
    global _controller
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # a dependency; an environment without it runs unlimited
            _controller = False
        else:
            _controller = ThreadpoolController().select(user_api="blas")
    return list(_controller.lib_controllers) if _controller else []


def _set(libs: list[Any], counts: list[int]) -> None:
    if not libs:  # no threadpoolctl, or no BLAS it knows
        return
    for lib, n in zip(libs, counts):
        if n is not None:
            lib.set_num_threads(n)
    # threadpoolctl (>= 3.6) hands OpenBLAS's setting to the thread that set it until that
    # thread leaves a `with` block of its own; ours is not one, and the last caller out
    # may be another thread, so the setting is left to no thread.
    from threadpoolctl import OpenBLASController

    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """A context in which BLAS runs on one thread (~15 µs to enter and leave).

    With a BLAS whose setting is per thread (OpenMP builds) only the thread that entered
    is limited; numpy's wheels use OpenBLAS on pthreads, whose setting is process-wide.
    """
    global _users, _original
    with _lock:
        if _users == 0:
            libs = _libraries()
            _original = [lib.num_threads for lib in libs]
            _set(libs, [1] * len(libs))
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                _set(_libraries(), _original)
