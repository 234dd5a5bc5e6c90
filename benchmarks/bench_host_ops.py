"""The host softmax kernels alone (CPU): the compiled kernels and their numpy references side by side.

    pytest benchmarks/bench_host_ops.py --benchmark-enable --benchmark-json out.json

What one ResCLIP first-pass window at 500 queries and one post-processing strip cost outside the ViT and PAMR
(``clipsam/ops/softmax.py``): ``softmax_labels`` (SFR's first-pass decision), ``query_softmax`` (the softmax over the
queries) and ``class_decision`` (labels and scores from class probabilities), each on CLIP-like cosine logits of
shape (Q, H, W), on the host threads (``CLIPSAM_HOST_THREADS``). Both variants give the same numbers bit for bit
(tests/ops/test_softmax.py); ``ns_per_value`` is the median time per element of the (Q, H, W) input. These are
element-wise and memory-bound, so no share of the matmul peak is reported (``bench_vocabulary.py`` reports it for
the whole image).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from clipsam.eval.machine import machine_info, versions

SMOKE = os.environ.get("CLIPSAM_BENCH_SMOKE", "") not in ("", "0")
SHAPE = (21, 16, 24) if SMOKE else (500, 224, 224)  # queries, window rows, window columns
SCALE, THD = 40.0, 0.2


def _logits(shape: tuple[int, int, int]) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (0.2 + 0.03 * rng.standard_normal(shape)).astype(np.float32)


def _cases():
    from clipsam.ops import softmax
    from clipsam.postprocess import decide, query_probs, thresholded_argmax

    return {
        "softmax_labels": (
            lambda x: softmax.softmax_labels(x, SCALE, THD),
            lambda x: thresholded_argmax(query_probs(x, SCALE), THD),
            _logits,
        ),
        "query_softmax": (lambda x: softmax.query_softmax(x, SCALE), lambda x: query_probs(x, SCALE), _logits),
        "class_decision": (
            lambda p: softmax.class_decision(p, THD),
            lambda p: decide(p, THD, with_probs=False)[:2],
            lambda shape: query_probs(_logits(shape), SCALE),
        ),
    }


@pytest.mark.parametrize("impl", ["compiled", "reference"])
@pytest.mark.parametrize("op", ["softmax_labels", "query_softmax", "class_decision"])
def test_host_softmax(benchmark, device_info, op, impl):
    compiled, reference, make = _cases()[op]
    fn = compiled if impl == "compiled" else reference
    x = make(SHAPE)
    got = fn(x)  # kernel compilation or cache load
    if impl == "compiled":  # the reference's numbers, bit for bit
        want = reference(x)
        for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            np.testing.assert_array_equal(a, b)
    rounds = int(os.environ.get("CLIPSAM_BENCH_ROUNDS", 0)) or (1 if SMOKE else 7)
    benchmark.pedantic(lambda: fn(x), rounds=rounds, warmup_rounds=0, iterations=1)
    info = dict(
        config=f"{op} {impl} q{SHAPE[0]} {SHAPE[1]}x{SHAPE[2]}",
        op=op,
        impl=impl,
        shape=list(SHAPE),
        device="cpu",
        host_threads=os.environ.get("CLIPSAM_HOST_THREADS", "all"),
        smoke=SMOKE,
        machine=machine_info(),
        versions=versions(),
        **device_info,
    )
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    if stats is not None and stats.median > 0:
        info.update(median_ms=stats.median * 1e3, ns_per_value=stats.median * 1e9 / x.size)
    benchmark.extra_info.update(info)
