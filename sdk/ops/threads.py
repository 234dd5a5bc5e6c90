"""Host threads for the compiled CPU kernels: one shared pool, work split into contiguous row blocks.

The kernels (``@numba.njit(nogil=True)``) release the GIL, so blocks of rows run in parallel on the pool's threads.
Calls from several application threads at once share the pool safely (no kernel waits on another); numba's own
parallel runtime is not used, because its default threading layer does not allow concurrent calls.

``CLIPSAM_HOST_THREADS`` sets the number of threads (default: the CPUs this process may run on).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ..environment import env_int

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def host_threads() -> int:
    """Threads the CPU kernels use: ``CLIPSAM_HOST_THREADS``, else the CPUs available to this process."""
    value = env_int("CLIPSAM_HOST_THREADS", 1, "threads of the CPU kernels", "for all CPUs")
    if value is not None:
        return value
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: start a new pool on first use."""
    global _lock, _pool
    _lock, _pool = threading.Lock(), None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _executor(threads: int) -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None or _pool._max_workers < threads:  # noqa: SLF001 - grow once, never shrink
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="clipsam-host")
        return _pool


def parallel_blocks(fn: Callable[[int, int], None], n: int, min_block: int = 1) -> None:
    """Run ``fn(start, stop)`` over contiguous blocks covering ``range(n)``, on up to ``host_threads()`` threads.

    Arguments:
        fn: processes items [start, stop); must release the GIL to run in parallel (nogil numba kernels).
        n: number of items (rows, channels, windows).
        min_block: fewest items per block (small blocks are not worth a thread).
    """
    threads = min(host_threads(), max(1, n // max(1, min_block)))
    if threads <= 1 or n <= 1:
        fn(0, n)
        return
    bounds = [n * i // threads for i in range(threads + 1)]
    pool = _executor(threads - 1)  # the calling thread takes the first block itself
    futures = [pool.submit(fn, a, b) for a, b in zip(bounds[1:-1], bounds[2:])]
    try:
        fn(bounds[0], bounds[1])
    finally:
        for f in futures:
            f.result()
