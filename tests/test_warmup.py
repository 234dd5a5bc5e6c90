"""warmup() and sharing one segmenter between threads (clipsam/warmup.py documents the guarantees)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

VOCABS = [None, "cat, grass", "cat, dog, sofa, floor", "sky, tree, road", "person, bicycle"]  # None: preset's
SIZES = [(48, 64), (64, 40), (56, 56)]


def _images():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]


def _jobs(n: int):
    """(vocabulary, image index) for call i: every vocabulary with every size, in a fixed mixed order."""
    rng = np.random.default_rng(2)
    return [(VOCABS[int(rng.integers(len(VOCABS)))], int(rng.integers(len(SIZES)))) for _ in range(n)]


def _global_state():
    return (
        torch.get_num_threads(),
        torch.is_grad_enabled(),
        torch.is_inference_mode_enabled(),
        torch.is_autocast_enabled("cpu"),
        torch.get_default_dtype(),
    )


def _check_threads(seg, calls_per_thread: int, threads: int = 8):
    images, jobs = _images(), _jobs(threads * calls_per_thread)
    expected = {}
    for vocab, i in sorted(set(jobs), key=str):  # sequential reference, one call each
        expected[vocab, i] = seg.segment(images[i], classes=vocab)
    seg.text_cache._data.clear()  # the threads start cold: they race to fill the cache
    sizes, stop = [0], threading.Event()

    def watch():  # the largest cache size seen, sampled every 0.2 ms (a busy loop held the GIL from the workers)
        while not stop.wait(0.0002):
            sizes[0] = max(sizes[0], len(seg.text_cache))

    watcher = threading.Thread(target=watch)
    watcher.start()
    before = _global_state()
    try:
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(lambda job: seg.segment(images[job[1]], classes=job[0]), jobs))
    finally:
        stop.set()
        watcher.join()
    assert _global_state() == before
    for job, res in zip(jobs, results):
        ref = expected[job]
        assert res.classes == ref.classes
        assert np.array_equal(res.labels, ref.labels), job
        assert np.array_equal(res.scores, ref.scores), job
    assert sizes[0] <= seg.text_cache.max_entries and len(seg.text_cache) <= seg.text_cache.max_entries
    return results


def test_eight_threads_give_the_sequential_results(tiny_clip):
    from clipsam.config import dense_config
    from clipsam.segmenter import Segmenter

    seg = Segmenter(
        tiny_clip, dense_config("resclip", "voc21", short_side=48, templates=("a photo of a {}.",)), text_cache_size=3
    )  # 5 vocabularies: the LRU must evict while threads use it
    results = _check_threads(seg, calls_per_thread=10)
    assert len(results) == 80 and {r.classes for r in results} >= {("cat", "grass"), ("sky", "tree", "road")}


def test_warmup_runs_the_pipeline_and_fills_the_cache(make_segmenter):
    seg = make_segmenter("sclip", "voc21", short_side=48)
    seg.text_cache._data.clear()
    info = seg.warmup(classes="cat, grass", sizes=[(40, 60), (60, 40)])
    assert info["sizes"] == [[40, 60], [60, 40]] and info["vocabulary"] == 2
    assert len(info["first_call_s"]) == 2 and info["second_call_s"] > 0
    assert len(seg.text_cache) == 1  # the app's vocabulary is now cached
    default = seg.warmup()  # the preset's vocabulary and resize target
    assert default["sizes"] == [[48, seg.config.long_side]] and default["vocabulary"] == 21


@pytest.mark.parametrize("sizes", [[], [(0, 10)], [(10,)], "big"])
def test_warmup_rejects_bad_sizes(make_segmenter, sizes):
    from clipsam.errors import ConfigError

    with pytest.raises(ConfigError, match="warmup sizes"):
        make_segmenter("sclip", "voc21", short_side=48).warmup(sizes=sizes)


def test_warmup_refuses_a_size_no_app_receives_before_allocating_it(make_segmenter):
    from clipsam.errors import ConfigError
    from clipsam.warmup import MAX_WARMUP_PIXELS

    seg = make_segmenter("sclip", "voc21", short_side=48)
    with pytest.raises(ConfigError, match=r"warmup size \(1000000, 1000000\) is 1,000,000,000,000 pixels"):
        seg.warmup(sizes=[(48, 64), (10**6, 10**6)])  # was a MemoryError for 2.7 TiB; nothing ran before it
    assert len(seg.text_cache) == 0
    side = int(MAX_WARMUP_PIXELS**0.5)
    with pytest.raises(ConfigError, match="more than 100,000,000"):
        seg.warmup(sizes=[(side + 1, side + 1)])
