"""How the cost of one image grows with the vocabulary, and what the shared compiled CPU kernels change.

    pytest benchmarks/bench_vocabulary.py --benchmark-enable --benchmark-json out.json
    clipsam bench --suite vocabulary                     # the same, then the table and the scaling table

The same photo (375x500), the same settings (the voc21 preset's short side 336) and vocabularies of 21, 60, 150
and 500 single-name classes, for SCLIP and ResCLIP, side by side in one run: in the whole-image layout (one window)
with the PyTorch backend's host operations in the compiled kernels (``cpu_ops="compiled"``, the default) and in
PyTorch (``cpu_ops="torch"``, the reference, i.e. before the compiled kernels), and in the sliding layout of the
ade20k-style presets (224 x 224 windows, stride 112: six windows) with the compiled kernels. Text embeddings are
computed before the timed calls (one template). ``test_resclip_over_sclip`` calls the two methods alternately at
the largest vocabulary, for a ratio that the box's drifts between separate tests do not skew. FLOPs are
``clipsam.eval.flops.image_flops`` (the ViT, the dense head and PAMR); the matmul peak is measured in the same run;
``minor_faults_per_image`` counts the fresh pages each call touched (what a per-call allocation of queries x pixels
floats costs, independent of other load). CPU only (on CUDA the host kernels are not used).
"""

from __future__ import annotations

import os
import time
import warnings

import pytest

from clipsam.config import dense_config
from clipsam.eval.flops import VitSpec, image_flops, measure_matmul_peak
from clipsam.eval.machine import machine_info, versions

SMOKE = os.environ.get("CLIPSAM_BENCH_SMOKE", "") not in ("", "0")
TINY_VIT = os.path.join(os.path.dirname(__file__), os.pardir, "tests", "configs", "clipsam-test-vit.json")
CLIP = TINY_VIT if SMOKE else os.environ.get("CLIPSAM_BENCH_CLIP", "ViT-B-16")
HW = (40, 56) if SMOKE else (375, 500)
SIZES = (21, 60) if SMOKE else (21, 60, 150, 500)
# (method, cpu_ops, layout): both methods in each layout; the sliding layout with the default host operations only
CASES = [(m, ops, "whole") for m in ("sclip", "resclip") for ops in ("compiled", "torch")]
CASES += [(m, "compiled", "sliding") for m in ("sclip", "resclip")]
SLIDE = (24, 16) if SMOKE else (224, 112)  # window, stride
_STATE: dict = {}


def _names(n: int) -> list[str]:
    """n distinct class names: the shipped dataset vocabularies, then qualified variants of them."""
    from clipsam.vocabulary import builtin_vocabulary

    names: list[str] = []
    for ds in ("ade20k", "coco_stuff164k", "context60", "coco_object", "voc21", "cityscapes"):
        for c in builtin_vocabulary(ds).classes:
            if c not in names:
                names.append(c)
    base = list(names)
    for prefix in ("small ", "old ", "red ", "wooden "):
        names += [prefix + c for c in base]
    return names[:n]


def _minor_faults() -> int:
    """Minor page faults of this process so far (pages it touched for the first time)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _clip():
    if "clip" not in _STATE:
        from clipsam.models import load_clip

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _STATE["clip"] = load_clip(CLIP, None)
    return _STATE["clip"]


@pytest.fixture(scope="module")
def cpu_peak() -> float:
    n, sec = (256, 0.05) if SMOKE else (None, 1.0)
    return measure_matmul_peak("cpu", "fp32", n, sec)


@pytest.mark.parametrize("queries", SIZES, ids=lambda q: f"q{q}")
@pytest.mark.parametrize("method,cpu_ops,layout", CASES, ids=lambda c: str(c))
def test_vocabulary(benchmark, device_info, cpu_peak, sample_photo, method, cpu_ops, layout, queries):
    from clipsam.segmenter import Segmenter

    kw: dict = {"templates": "single"}
    if SMOKE:
        kw["short_side"] = 32
    if layout == "whole":  # SCLIP's voc21 preset slides: the whole-image layout of ResCLIP's for both
        kw.update(slide_crop=0)
    else:
        kw.update(slide_crop=SLIDE[0], slide_stride=SLIDE[1])
    cfg = dense_config(method, "voc21", **kw)
    seg = Segmenter(_clip(), cfg, cpu_ops=cpu_ops)
    classes = _names(queries)
    rgb = sample_photo(HW)
    start = time.perf_counter()
    seg.segment(rgb, classes)  # text embeddings, kernel compilation or cache load
    first_s = time.perf_counter() - start
    rounds = int(os.environ.get("CLIPSAM_BENCH_ROUNDS", 0)) or (1 if SMOKE else 3)
    faults = _minor_faults()
    res = benchmark.pedantic(lambda: seg.segment(rgb, classes), rounds=rounds, warmup_rounds=0, iterations=1)
    faults = (_minor_faults() - faults) / rounds
    assert res.labels.shape == HW and len(res.classes) == queries

    flops = image_flops(VitSpec.from_visual(seg.model.visual), seg.config, HW, queries)
    info = dict(
        config=f"{method} q{queries} {layout} cpu_ops={cpu_ops} {HW[0]}x{HW[1]}",
        method=method,
        cpu_ops=cpu_ops,
        layout=layout,
        queries=queries,
        device="cpu",
        precision="fp32",
        image_hw=list(HW),
        windows=flops.windows,
        clip=seg.arch,
        smoke=SMOKE,
        first_call_s=first_s,
        minor_faults_per_image=faults,  # fresh pages the process touched per call (4 KiB each); load-independent
        gflop=flops.gflop,
        gflop_parts={k: v / 1e9 for k, v in flops.parts.items()},
        peak_gflops=cpu_peak,
        machine=machine_info(),
        versions=versions(),
        **device_info,
    )
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    if stats is not None and stats.median > 0:
        rate = flops.gflop / stats.median
        info.update(median_ms=stats.median * 1e3, images_per_s=1.0 / stats.median, gflops_per_s=rate)
        info.update(pct_peak=100.0 * rate / cpu_peak)
    benchmark.extra_info.update(info)


@pytest.mark.parametrize("layout", ["whole", "sliding"])
def test_resclip_over_sclip(benchmark, device_info, sample_photo, layout):
    """ResCLIP's cost over SCLIP's at the largest vocabulary, the two called alternately in every round (ResCLIP,
    then SCLIP, on the same image, layout and classes) so that the box's drifts hit both: the ratio of their
    median times, and each round's ratio. One round times one call of each."""
    from clipsam.segmenter import Segmenter

    queries = SIZES[-1]
    kw: dict = {"templates": "single", "short_side": 32} if SMOKE else {"templates": "single"}
    if layout == "whole":
        kw.update(slide_crop=0)
    else:
        kw.update(slide_crop=SLIDE[0], slide_stride=SLIDE[1])
    segs = {m: Segmenter(_clip(), dense_config(m, "voc21", **kw)) for m in ("resclip", "sclip")}
    classes, rgb = _names(queries), sample_photo(HW)
    for seg in segs.values():
        seg.segment(rgb, classes)  # text embeddings, kernel compilation or cache load
    times: dict[str, list[float]] = {m: [] for m in segs}

    def pair() -> None:
        for m, seg in segs.items():
            start = time.perf_counter()
            seg.segment(rgb, classes)
            times[m].append(time.perf_counter() - start)

    rounds = int(os.environ.get("CLIPSAM_BENCH_ROUNDS", 0)) or (1 if SMOKE else 5)
    benchmark.pedantic(pair, rounds=rounds, warmup_rounds=0, iterations=1)
    res, scl = sorted(times["resclip"]), sorted(times["sclip"])
    per_round = sorted(r / s for r, s in zip(times["resclip"], times["sclip"]))
    ratio = res[len(res) // 2] / scl[len(scl) // 2]
    assert len(per_round) == rounds and ratio > 0
    benchmark.extra_info.update(
        config=f"resclip then sclip alternating, q{queries} {layout} {HW[0]}x{HW[1]} (s per pair)",
        layout=layout,
        queries=queries,
        device="cpu",
        precision="fp32",
        image_hw=list(HW),
        resclip_median_s=res[len(res) // 2],
        sclip_median_s=scl[len(scl) // 2],
        resclip_over_sclip=ratio,
        round_ratios=per_round,
        smoke=SMOKE,
        machine=machine_info(),
        versions=versions(),
        **device_info,
    )
