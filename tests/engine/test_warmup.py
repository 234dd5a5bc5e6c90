"""EngineSegmenter shared between threads, and its warmup()."""

from __future__ import annotations

from ..test_warmup import _check_threads


def test_engine_segmenter_threads_share_sessions(engine_dir):
    from clipsam.engine.segmenter import EngineSegmenter

    seg = EngineSegmenter(engine_dir("sclip"), ["cpu"], short_side=48, text_cache_size=2)
    sessions = dict(seg._sessions)
    _check_threads(seg, calls_per_thread=4)
    assert seg._sessions == sessions  # no session created per call or per thread


def test_engine_warmup(engine_dir):
    from clipsam.engine.segmenter import EngineSegmenter

    seg = EngineSegmenter(engine_dir("sclip"), ["cpu"], short_side=48)
    info = seg.warmup(classes="cat, grass")
    assert info["vocabulary"] == 2 and len(seg.text_cache) == 1
