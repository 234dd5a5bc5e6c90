"""End-to-end latency of ``Segmenter.segment`` per configuration, with FLOPs and the fraction of the matmul peak.

    pytest benchmarks/bench_pipeline.py --benchmark-enable --benchmark-json out.json [-k "resclip and voc21"]
    clipsam bench --suite pipeline [--device cpu] [--rounds 3]          # the same, then a table
    pytest benchmarks --smoke --benchmark-disable                       # CI: tiny test ViT and images, runs once

A configuration is (method, preset, backend, refinement, scales) x image size x (device, precision):
    methods   resclip, naclip, sclip, clearclip
    presets   voc21 (NACLIP/ResCLIP whole image; SCLIP slides 224/112, ClearCLIP 448/224) and ade20k (sliding)
    backend   torch (on the CPU: the compiled host kernels, cpu_ops="compiled"); torch-refops (cpu_ops="torch",
              PyTorch's own host ops, the reference; CPU only) on resclip and naclip/ade20k; onnxruntime on resclip/voc21: the same model exported once per session into a
              temporary folder (or CLIPSAM_BENCH_ENGINES, a folder exported with ``clipsam export``), run on
              the CPU provider (and CUDA when the device is cuda); skips with the reason when onnx or
              onnxruntime is missing
    refine    off; sam2 (SAM2.1 hiera-t, random weights) on resclip/voc21 (skipped in smoke mode on the CPU:
              SAM2 encodes at 1024 px). Random CLIP weights give low-confidence maps, so the refinement runs
              with min_confidence 0 (at most 16 prompts); the prompt count is recorded as ``prompts``:
              the encoder (one pass per image) dominates, the decoder cost grows with the prompts
    scales    single scale (the reference presets), and MULTI_SCALE_5 (0.5..1.5) on naclip/voc21
    device    the CPU, and CUDA (fp32 and fp16 autocast) whenever available; CLIPSAM_BENCH_DEVICE=cpu|cuda|auto

Default model: ViT-B/16 with random weights (latency does not depend on the weights; CLIPSAM_BENCH_CLIP picks
another open_clip architecture), VOC-like images of 375x500 and 500x333 (the bundled photograph, resized).
Text embeddings are computed once per vocabulary and cached, so they are outside the timed call (their
FLOPs are recorded as ``text_gflop``). Rounds: CLIPSAM_BENCH_ROUNDS (default 3 on the CPU, 10 on CUDA).
"""

from __future__ import annotations

import os
import time
import warnings

import pytest
import torch

from clipsam.config import MULTI_SCALE_5, dense_config
from clipsam.eval.flops import TextSpec, VitSpec, image_flops, measure_matmul_peak, sam2_flops, text_flops
from clipsam.eval.machine import machine_info, versions

SMOKE = os.environ.get("CLIPSAM_BENCH_SMOKE", "") not in ("", "0")
TINY_VIT = os.path.join(os.path.dirname(__file__), os.pardir, "tests", "configs", "clipsam-test-vit.json")
CLIP = TINY_VIT if SMOKE else os.environ.get("CLIPSAM_BENCH_CLIP", "ViT-B-16")
SIZES = [(40, 56)] if SMOKE else [(375, 500), (500, 333)]
_DEV = os.environ.get("CLIPSAM_BENCH_DEVICE", "auto")
TARGETS = ([("cpu", "fp32")] if _DEV in ("auto", "cpu") else []) + (
    [("cuda", "fp32"), ("cuda", "fp16")] if _DEV in ("auto", "cuda") and torch.cuda.is_available() else []
)

METHODS = ("resclip", "naclip", "sclip", "clearclip")
PRESETS = ("voc21", "ade20k")
SCALES = {"s1": (1.0,), "ms5": MULTI_SCALE_5}
CASES = [(m, p, "torch", "off", "s1") for m in METHODS for p in PRESETS] + [("naclip", "voc21", "torch", "off", "ms5")]
# ---- other backends and SAM2 refinement; each skips with its reason where it cannot run here (see _require).
# ---- Add ("<method>", "<preset>", "onnxruntime" | "torch", "off" | "sam2", scales).
CASES += [("resclip", "voc21", "onnxruntime", "off", "s1"), ("resclip", "voc21", "torch", "sam2", "s1")]
# ---- the PyTorch backend with PyTorch's own host ops on the CPU (cpu_ops="torch": before the compiled kernels)
CASES += [
    (m, p, "torch-refops", "off", "s1") for m, p in (("resclip", "voc21"), ("resclip", "ade20k"), ("naclip", "ade20k"))
]

_LOADED: dict = {}
_SEGMENTERS: dict = {}
_REFINERS: dict = {}
_ENGINES: dict = {}


def _require(backend: str, refine: str, device: str) -> None:
    """Skip, with the reason, a case whose backend or refinement integration is not available here."""
    if backend == "torch-refops" and device != "cpu":
        pytest.skip("cpu_ops='torch' is a CPU setting (a GPU always runs torch and Triton)")
    if backend == "onnxruntime":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as e:
            pytest.skip(f"ONNX Runtime backend: onnx and onnxruntime are needed ({e})")
    if refine == "sam2":
        try:
            import sam2  # noqa: F401

            from clipsam.refine.sam2_backend import Sam2Refiner  # noqa: F401
        except ImportError as e:
            pytest.skip(f"SAM2 refinement: clipsam.refine.sam2_backend cannot run here ({e})")
        if SMOKE and device == "cpu":
            pytest.skip("SAM2 refinement: smoke mode on the CPU (SAM2 encodes at 1024 px, seconds per image)")


def _overrides(method: str, preset: str, scales: str) -> dict:
    # text is cached outside the timed call: the template count does not matter
    kw: dict = {"templates": "single", "scales": SCALES[scales]}
    if SMOKE:
        kw["short_side"] = 32  # MULTI_SCALE_5's 0.5 still leaves one 16-pixel patch row
        if dense_config(method, preset).slide_crop:
            kw.update(slide_crop=32, slide_stride=16)
    return kw


def _clip(device: str):
    """The benchmark's CLIP (random weights), one per device: ``Segmenter`` moves it there."""
    if device not in _LOADED:
        from clipsam.models import load_clip

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _LOADED[device] = load_clip(CLIP, None)
    return _LOADED[device]


def _engines(method: str, preset: str, precision: str, tmp_root) -> str:
    """An engine folder of the benchmark's model: CLIPSAM_BENCH_ENGINES, or exported once per session."""
    given = os.environ.get("CLIPSAM_BENCH_ENGINES")
    if given:
        return given
    key = (method, preset, precision)
    if key not in _ENGINES:
        from clipsam.export import export_engines

        folder = tmp_root / f"engines-{method}-{preset}-{precision}"
        export_engines(
            folder,
            clip=_clip("cpu"),
            method=method,
            preset=preset,
            precision=precision,
            templates="single",
            validate=False,
            log=None,
            max_side=max(max(hw) for hw in SIZES) * 2,
        )
        _ENGINES[key] = str(folder)
    return _ENGINES[key]


def _segmenter(method: str, preset: str, backend: str, scales: str, device: str, precision: str, tmp_root):
    key = (method, preset, backend, scales, device, precision)
    if key not in _SEGMENTERS:
        kw = _overrides(method, preset, scales)
        if backend == "onnxruntime":
            from clipsam.segmenter import Segmenter

            providers = ["cuda"] if device == "cuda" else ["cpu"]
            folder = _engines(method, preset, precision, tmp_root)
            _SEGMENTERS[key] = Segmenter.from_engines(folder, providers, method=method, preset=preset, **kw)
        else:
            from clipsam.segmenter import Segmenter

            cfg = dense_config(method, preset, **kw)
            ops = "torch" if backend == "torch-refops" else "compiled"
            _SEGMENTERS[key] = Segmenter(_clip(device), cfg, device=device, precision=precision, cpu_ops=ops)
    return _SEGMENTERS[key]


def _refiner(device: str):
    if device not in _REFINERS:
        from clipsam.refine.sam2_backend import Sam2Refiner

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _REFINERS[device] = Sam2Refiner.from_pretrained("sam2.1_hiera_t", random_weights=True, device=device)
    return _REFINERS[device]


def _refine_config():
    from clipsam.refine import RefineConfig

    return RefineConfig(min_confidence=0.0, max_prompts_per_image=16)


@pytest.fixture(scope="session")
def matmul_peak():
    """peak(device, precision) -> measured matmul GFLOP/s, once per session."""
    cache: dict = {}

    def peak(device: str, precision: str) -> float:
        if (device, precision) not in cache:
            n, sec = (256, 0.05) if SMOKE else (None, 1.0)
            cache[device, precision] = measure_matmul_peak(device, "fp32" if device == "cpu" else precision, n, sec)
        return cache[device, precision]

    return peak


def _case_id(case) -> str:
    method, preset, backend, refine, scales = case
    return (
        f"{method}-{preset}-{backend}"
        + ("" if refine == "off" else f"-{refine}")
        + ("" if scales == "s1" else f"-{scales}")
    )


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t[0]}-{t[1]}")
@pytest.mark.parametrize("hw", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_pipeline(benchmark, device_info, matmul_peak, tmp_path_factory, sample_photo, case, hw, target):
    method, preset, backend, refine, scales = case
    device, precision = target
    _require(backend, refine, device)
    seg = _segmenter(method, preset, backend, scales, device, precision, tmp_path_factory.getbasetemp())
    refiner = _refiner(device) if refine == "sam2" else None
    refine_cfg = _refine_config() if refiner is not None else None
    rgb = sample_photo(hw)
    cuda = device == "cuda"

    def run():
        res = seg.segment(rgb)
        if refiner is not None:
            refiner.refine([rgb], [res.labels], [res.scores], refine_cfg)
        if cuda:
            torch.cuda.synchronize()
        return res

    first_s = None
    if not SMOKE:  # smoke mode runs the pipeline once, inside pedantic
        start = time.perf_counter()
        run()  # first call: text embeddings, allocator and kernel warm-up
        first_s = time.perf_counter() - start
    rounds = int(os.environ.get("CLIPSAM_BENCH_ROUNDS", 0)) or (1 if SMOKE else 10 if cuda else 3)
    res = benchmark.pedantic(run, rounds=rounds, warmup_rounds=0 if SMOKE else (3 if cuda else 1), iterations=1)

    vocab = seg.vocabulary()
    prompts = 0
    if refiner is not None:
        from clipsam.refine import extract_prompts

        prompts = len(extract_prompts(res.labels, res.scores, refine_cfg))
    sam2 = sam2_flops(prompts)
    model = getattr(seg, "model", None)
    if backend == "onnxruntime" and not os.environ.get("CLIPSAM_BENCH_ENGINES"):
        model = _clip("cpu").model  # the engines were exported from it: the same FLOPs
    spec = VitSpec.from_visual(model.visual) if model is not None else None
    flops = image_flops(spec, seg.config, hw, vocab.num_queries, sam2=sam2) if spec else None
    peak = matmul_peak(device, precision)
    info = dict(
        config=f"{_case_id(case)} {device}-{precision} {hw[0]}x{hw[1]}",
        method=method,
        preset=preset,
        backend=backend,
        refine=refine,
        device=device,
        precision=precision,
        scales=list(seg.config.schedule.scales),
        flip=seg.config.schedule.flip,
        image_hw=list(hw),
        clip=getattr(seg, "arch", CLIP),
        weights=getattr(seg, "weights_id", None),
        smoke=SMOKE,
        queries=vocab.num_queries,
        slide=[seg.config.schedule.slide_crop, seg.config.schedule.slide_stride],
        max_batch=getattr(seg, "max_batch", None),
        prompts=prompts,
        first_call_s=first_s,
        peak_gflops=peak,
        machine=machine_info(),
        versions=versions(),
        **device_info,
    )
    if flops is not None:
        info.update(
            gflop=flops.gflop,
            gflop_parts={k: v / 1e9 for k, v in flops.parts.items()},
            input_hw=list(flops.input_hw),
            windows=flops.windows,
            window_shapes=sorted({f"{h}x{w}" for h, w in flops.window_shapes}),
            text_gflop=text_flops(TextSpec.from_model(model), vocab.num_queries * len(seg.templates)) / 1e9,
        )
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    if stats is not None and stats.median > 0:
        info.update(median_ms=stats.median * 1e3, images_per_s=1.0 / stats.median)
        if flops is not None:
            rate = flops.gflop / stats.median
            info.update(gflops_per_s=rate, pct_peak=100.0 * rate / peak)
    benchmark.extra_info.update(info)
    assert res.labels.shape == hw
