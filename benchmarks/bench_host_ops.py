"""The host kernels alone (CPU): the softmax kernels beside their numpy references, and PAMR's kernel variants.

    pytest benchmarks/bench_host_ops.py --benchmark-enable --benchmark-json out.json

What one ResCLIP first-pass window at 500 queries and one post-processing strip cost outside the ViT
(``clipsam/ops/softmax.py``): ``softmax_labels`` (SFR's first-pass decision), ``query_softmax`` (the softmax over the
queries) and ``class_decision`` (labels and scores from class probabilities), each on CLIP-like cosine logits of
shape (Q, H, W), on the host threads (``CLIPSAM_HOST_THREADS``). Both variants give the same numbers bit for bit
(tests/ops/test_softmax.py); ``ns_per_value`` is the median time per element of the (Q, H, W) input. These are
element-wise and memory-bound, so no share of the matmul peak is reported (``bench_vocabulary.py`` reports it for
the whole image). ``test_pamr_iterations`` times PAMR's 10 iterations at 500 queries in each kernel variant
(``clipsam/ops/compiled_pamr.py``; all equal bit for bit, tests/ops/test_compiled.py) and reports multiply-adds per
second and their share of the matmul peak measured in the same run (2 FLOPs each), the variants called in turn.
"""

from __future__ import annotations

import os
import time

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


@pytest.fixture(scope="module")
def cpu_peak() -> float:
    from clipsam.eval.flops import measure_matmul_peak

    n, sec = (256, 0.05) if SMOKE else (None, 1.0)
    return measure_matmul_peak("cpu", "fp32", n, sec)


PAMR_SIZES = [(40, 48)] if SMOKE else [(224, 224), (336, 448)]  # a sliding window; the voc21 whole-image crop
PAMR_QUERIES = 21 if SMOKE else 500
# (dilations, layout as ``pamr._run_blocks`` takes it: channels per block, kernel): the default dilations'
# constant-offset kernels, iteration by iteration ("sweeps") and all iterations in one pass over the rows
# ("wavefront"), and the run-time-offset pair kernel on the same 16 neighbours listed in another order (what other
# dilations run)
PAMR_VARIANTS = {
    "sweeps-b4": ((8, 16), (4, "sweeps")),
    "wavefront-b4": ((8, 16), (4, "wavefront")),
    "wavefront-b2": ((8, 16), (2, "wavefront")),
    "runtime-pairs-b4": ((16, 8), (4, "pairs")),
    "runtime-pairs-b2": ((16, 8), (2, "pairs")),
}


@pytest.mark.parametrize("hw", PAMR_SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_pamr_iterations(benchmark, device_info, cpu_peak, hw):
    """PAMR's 10 iterations over (500, H, W) logits on the host threads (``pamr._run_blocks``, as
    ``pamr.pamr_in_place`` runs them) in every kernel variant, the variants called in turn in each round (the order
    rotating) so that the box's drifts hit them all: per variant the median time, multiply-adds per second and share
    of the matmul peak, and its speed relative to the sweeps in blocks of 4 (the default layout)."""
    from clipsam.ops.compiled_pamr import pamr_weights
    from clipsam.ops.pamr import _offsets, _run_blocks

    rng = np.random.default_rng(1)
    m = (0.2 + 0.03 * rng.standard_normal((PAMR_QUERIES, *hw))).astype(np.float32)  # refined in place every call
    a = rng.random((16, *hw), dtype=np.float32)  # one set of weights for all (the same neighbours, in two orders)
    weights = pamr_weights(a / a.sum(axis=0))
    runs = {}
    for name, (dilations, layout) in PAMR_VARIANTS.items():
        offs = _offsets(dilations)

        def run(offs=offs, layout=layout) -> None:
            _run_blocks(weights, m, offs, 10, 0, len(m), layout)

        runs[name] = run
        run()  # kernel compilation or cache load
    times: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)

    def one_round() -> None:
        for name in order:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
        order.append(order.pop(0))

    rounds = int(os.environ.get("CLIPSAM_BENCH_ROUNDS", 0)) or (1 if SMOKE else 5)
    benchmark.pedantic(one_round, rounds=rounds, warmup_rounds=0, iterations=1)
    madds = PAMR_QUERIES * hw[0] * hw[1] * 16 * 10
    medians = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
    base = medians["sweeps-b4"]
    benchmark.extra_info.update(
        config=f"pamr variants in turn, q{PAMR_QUERIES} {hw[0]}x{hw[1]} (s per round)",
        op="pamr",
        shape=[PAMR_QUERIES, *hw],
        variants={name: dict(dilations=d, block=b, kernel=k) for name, (d, (b, k)) in PAMR_VARIANTS.items()},
        median_ms={name: t * 1e3 for name, t in medians.items()},
        g_madds_per_s={name: madds / t / 1e9 for name, t in medians.items()},
        pct_peak={name: 100.0 * 2 * madds / t / 1e9 / cpu_peak for name, t in medians.items()},
        speedup_over_sweeps_b4={name: base / t for name, t in medians.items()},
        peak_gflops=cpu_peak,
        device="cpu",
        host_threads=os.environ.get("CLIPSAM_HOST_THREADS", "all"),
        smoke=SMOKE,
        machine=machine_info(),
        versions=versions(),
        **device_info,
    )
