"""``warmup``: run once everything a first request would otherwise pay for, before an app takes traffic.

A first ``segment`` call loads lazily and compiles: the text embeddings of the vocabulary (then cached), the
ONNX Runtime sessions of an engine folder (and TensorRT engines, built on first run), Triton kernels (compiled
per dtype and shape) and cuDNN/cuBLAS plans on CUDA, the SAM2 refiner. ``warmup`` segments one synthetic image per
requested size, so that the shapes the app will see are compiled too.

Thread safety, for apps that share one segmenter between threads (web servers, worker pools): ``segment``,
``segment_batch`` and ``segment_stream`` keep their state in local variables; the text-embedding cache is a
bounded LRU behind a lock (two threads missing the same key both compute it, and the results are equal); the
positional-embedding caches are filled with idempotent values; ONNX Runtime's ``InferenceSession.run`` is
thread-safe and sessions are created once under a lock; autocast and inference mode are thread-local in torch.
Nothing global (torch threads, grad mode, environment) is changed by a call. Calling ``warmup`` once before the
threads start avoids several threads compiling the same kernels at once.
"""

from __future__ import annotations

import numbers
import time

import numpy as np

from .errors import ConfigError

MAX_WARMUP_PIXELS = 100_000_000  # a synthetic image of this size is 300 MB before any processing


def default_warmup_sizes(config) -> tuple[tuple[int, int], ...]:
    """One (H, W) per shape class a real image produces: the preset's resize target (whole-image methods see
    each image's own shape, so this covers the common landscape case only)."""
    return ((int(config.schedule.short_side), int(config.schedule.long_side)),)


def _masks(segmenter, image: np.ndarray):
    """CorrCLIP with ``corr_mask_source="given"`` needs masks in every call: two regions (left and right halves)."""
    cfg = segmenter.config
    if cfg.attention.base != "corrclip" or cfg.corrclip.corr_mask_source != "given":
        return None
    ids = np.zeros(image.shape[:2], np.int32)
    ids[:, : image.shape[1] // 2] = 1
    return ids


def warmup(segmenter, classes=None, class_file=None, sizes=None) -> dict:
    """Segment one synthetic image per size with ``segmenter``'s own pipeline; returns what was done and timings.

    Arguments:
        segmenter: a ``clipsam.Segmenter`` or an engine segmenter (``Segmenter.from_engines``).
        classes, class_file: the vocabulary the app will use (default: the preset's); its embeddings stay cached.
        sizes: image sizes (H, W) to run, e.g. the sizes the app receives; default: the preset's resize target.

    Returns:
        {"sizes": [...], "vocabulary": number of classes, "first_call_s": [...], "second_call_s": float}: the
        second call repeats the first size and shows the warm latency.
    """
    given = sizes
    try:
        sizes = default_warmup_sizes(segmenter.config) if sizes is None else tuple(tuple(s) for s in sizes)
        ok = bool(sizes) and all(
            len(s) == 2 and all(isinstance(v, numbers.Integral) and int(v) >= 1 for v in s) for s in sizes
        )
    except TypeError:  # not an iterable of pairs
        ok = False
    if not ok:
        raise ConfigError(f"warmup sizes must be (height, width) pairs of positive integers, got {given!r}")
    for h, w in sizes:
        if int(h) * int(w) > MAX_WARMUP_PIXELS:
            raise ConfigError(
                f"warmup size ({h}, {w}) is {int(h) * int(w):,} pixels, more than {MAX_WARMUP_PIXELS:,}: warm up "
                "with the sizes the app receives (each image is resized to the preset's short side first, so a "
                "few typical sizes cover it)"
            )
    vocab = segmenter.vocabulary(classes, class_file)
    rng = np.random.default_rng(0)
    first = []
    for h, w in sizes:
        image = rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8)
        t0 = time.perf_counter()
        segmenter.segment(image, classes=vocab, masks=_masks(segmenter, image))  # a class file is read once
        first.append(round(time.perf_counter() - t0, 4))
    h, w = sizes[0]
    t0 = time.perf_counter()
    image = rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8)
    segmenter.segment(image, classes=vocab, masks=_masks(segmenter, image))
    return {
        "sizes": [list(map(int, s)) for s in sizes],
        "vocabulary": vocab.num_classes,
        "first_call_s": first,
        "second_call_s": round(time.perf_counter() - t0, 4),
    }
