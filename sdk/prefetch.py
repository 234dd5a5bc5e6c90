"""Decode ahead: ``prefetched(fn, items, ahead, workers)`` yields ``fn(item)`` in order while the next items are
already being computed on background threads (image decoding overlapping the segmenter's work in
``segment_stream`` and ``clipsam batch``). No third-party dependency; numpy-free.

Order, errors and cancellation behave as for a plain ``map``: results come in input order; an exception raised by
``fn(item)`` is raised when that item's turn comes (every earlier result is yielded first), and items after it are
not started anew; closing the generator early (``break``, an error downstream) cancels what has not started and
waits for what has, so no thread outlives the loop. ``items`` may be lazy: it is read only as far as ``ahead``
results beyond the one being consumed.
"""

from __future__ import annotations

import numbers
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from .environment import env_int
from .errors import ConfigError

T = TypeVar("T")


def decode_workers(value: int | None, on_gpu: bool, name: str = "decode_workers") -> int:
    """The number of decode threads: ``value`` if given (>= 0; 0 = decode in the calling thread), else 2 when the
    model runs on a GPU (the host is otherwise idle while it computes) and 0 on the CPU (the model's own threads
    already use every core). ``CLIPSAM_DECODE_WORKERS`` overrides the default."""
    if value is None:
        env = env_int("CLIPSAM_DECODE_WORKERS", 0, "0: decode in the calling thread", "for 2 on a GPU and 0 on the CPU")
        return (2 if on_gpu else 0) if env is None else env
    # from Python: an integer ("2" is refused like batch_size=2.0)
    n = int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else -1
    if n < 0:
        raise ConfigError(f"{name} must be an integer >= 0 (0: decode in the calling thread), got {value!r}")
    return n


def prefetched(fn: Callable[[Any], T], items: Iterable[Any], ahead: int, workers: int) -> Iterator[T]:
    """``map(fn, items)``, with up to ``ahead`` results computed in advance on ``workers`` threads.

    With ``workers == 0`` or ``ahead == 0`` it is exactly ``map(fn, items)`` in the calling thread.
    """
    if workers <= 0 or ahead <= 0:
        yield from map(fn, items)
        return
    source = iter(items)
    pending: deque[Future] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clipsam-decode")
    try:
        exhausted = False
        while True:
            while not exhausted and len(pending) <= ahead:
                try:
                    item = next(source)
                except StopIteration:
                    exhausted = True
                    break
                pending.append(pool.submit(fn, item))
            if not pending:
                return
            yield pending.popleft().result()  # re-raises fn's exception at this item's turn
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True)
