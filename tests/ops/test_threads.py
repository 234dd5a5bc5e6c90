"""Host threads: blocks cover the range once, the thread count follows CLIPSAM_HOST_THREADS."""

from __future__ import annotations

import threading

import pytest

from clipsam.errors import ConfigError
from clipsam.ops.threads import host_threads, parallel_blocks


@pytest.mark.parametrize("threads", ["1", "2", "3", "7"])
@pytest.mark.parametrize("n", [0, 1, 2, 5, 64])
def test_blocks_cover_the_range_once(monkeypatch, threads, n):
    monkeypatch.setenv("CLIPSAM_HOST_THREADS", threads)
    seen, names, lock = [], set(), threading.Lock()

    def fn(a, b):
        with lock:
            seen.extend(range(a, b))
            names.add(threading.current_thread().name)

    parallel_blocks(fn, n)
    assert sorted(seen) == list(range(n))
    assert len(names) <= min(int(threads), max(n, 1))


def test_thread_count_setting(monkeypatch):
    monkeypatch.setenv("CLIPSAM_HOST_THREADS", "3")
    assert host_threads() == 3
    monkeypatch.delenv("CLIPSAM_HOST_THREADS")
    assert host_threads() >= 1
    for bad in ("0", "-2", "two", "1.5", "\u00b2", "02", "+2"):  # "²" passes str.isdigit but not int()
        monkeypatch.setenv("CLIPSAM_HOST_THREADS", bad)
        with pytest.raises(ConfigError, match="CLIPSAM_HOST_THREADS"):
            host_threads()


def test_an_error_in_a_block_reaches_the_caller(monkeypatch):
    monkeypatch.setenv("CLIPSAM_HOST_THREADS", "2")

    def fn(a, b):
        if a > 0:
            raise RuntimeError("block failed")

    with pytest.raises(RuntimeError, match="block failed"):
        parallel_blocks(fn, 10)


def test_a_forked_child_gets_a_working_pool(monkeypatch):
    import multiprocessing as mp

    monkeypatch.setenv("CLIPSAM_HOST_THREADS", "2")
    parallel_blocks(lambda a, b: None, 8)  # the parent's pool exists before the fork
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply_async(_sum_in_blocks).get(timeout=60) == sum(range(100))


def _sum_in_blocks() -> int:
    parts, lock = [], threading.Lock()

    def fn(a, b):
        with lock:
            parts.append(sum(range(a, b)))

    parallel_blocks(fn, 100)
    return sum(parts)
