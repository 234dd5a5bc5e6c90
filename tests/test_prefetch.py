"""Decoding ahead (``clipsam.prefetch``): a plain ``map`` in order, errors and cancellation, on threads."""

from __future__ import annotations

import threading
import time

import pytest

from clipsam.errors import ConfigError
from clipsam.prefetch import decode_workers, prefetched


def test_results_in_order_computed_ahead_on_other_threads():
    seen: list = []
    main = threading.get_ident()

    def fn(i):
        seen.append(i)
        time.sleep(0.002 * (5 - i % 5))  # later items finish first: the order must still hold
        return i * i, threading.get_ident()

    out = list(prefetched(fn, range(20), ahead=4, workers=3))
    assert [r for r, _ in out] == [i * i for i in range(20)]
    assert all(t != main for _, t in out)
    assert list(prefetched(lambda i: (i, threading.get_ident()), range(3), ahead=0, workers=3)) == [
        (i, main) for i in range(3)
    ]  # ahead 0 (or workers 0): map() in the calling thread


def test_reads_lazily_and_only_ahead():
    pulled: list = []

    def source():
        for i in range(100):
            pulled.append(i)
            yield i

    gen = prefetched(lambda i: i, source(), ahead=3, workers=2)
    assert next(gen) == 0
    assert len(pulled) <= 5  # the one consumed, three ahead, and one being submitted
    gen.close()


def test_an_error_comes_at_its_item_after_every_earlier_result():
    def fn(i):
        if i == 3:
            raise ValueError("bad item 3")
        return i

    got = []
    with pytest.raises(ValueError, match="bad item 3"):
        for r in prefetched(fn, range(10), ahead=4, workers=2):
            got.append(r)
    assert got == [0, 1, 2]


def test_closing_early_leaves_no_thread_behind():
    started = threading.Event()

    def fn(i):
        started.set()
        time.sleep(0.01)
        return i

    before = {t.ident for t in threading.enumerate()}
    for r in prefetched(fn, range(50), ahead=8, workers=2):
        if r == 2:
            break
    assert started.is_set()
    time.sleep(0.05)
    left = [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("clipsam-decode")]
    assert left == []


def test_decode_workers_defaults_and_errors(monkeypatch):
    monkeypatch.delenv("CLIPSAM_DECODE_WORKERS", raising=False)
    assert decode_workers(None, on_gpu=True) == 2 and decode_workers(None, on_gpu=False) == 0
    assert decode_workers(3, on_gpu=False) == 3 and decode_workers(0, on_gpu=True) == 0
    monkeypatch.setenv("CLIPSAM_DECODE_WORKERS", "1")
    assert decode_workers(None, on_gpu=False) == 1
    for bad in (-1, 1.5, True, "two", "2", 2.0):  # "2" and 2.0 were read as 2 (batch_size=2.0 is refused)
        with pytest.raises(ConfigError, match="decode_workers must be an integer >= 0"):
            decode_workers(bad, on_gpu=False)  # type: ignore[arg-type]
    for text in ("x", "²", "02", "-1", "1.0"):  # "²" passed str.isdigit and then failed int() with a ValueError
        monkeypatch.setenv("CLIPSAM_DECODE_WORKERS", text)
        with pytest.raises(ConfigError, match="CLIPSAM_DECODE_WORKERS"):
            decode_workers(None, on_gpu=False)
