"""RF-CLIP and CorrCLIP end to end: latency and images/s of ``segment_batch``, FLOPs, and CorrCLIP's time shares.

    pytest benchmarks/bench_methods.py --benchmark-enable --benchmark-json out.json
    clipsam bench --suite methods [--device cpu] [--rounds 3]
    clipsam bench --suite methods --smoke                 # tiny CLIP and images (CorrCLIP's SAM2 case is skipped)

Configurations (ViT-B/16 and DINO ViT-B/8 with random weights; latency does not depend on the weights):
    rfclip    voc21 (whole image) and context60 (224/112 windows, the whole image's global semantics)
    corrclip  voc21 (336/112 windows padded to 56) with SAM2 automatic masks (8 x 8 points, one decoder call per
              64 points; CLIPSAM_BENCH_AMG_SAM2 picks the model, default sam2.1_hiera_t, upstream uses sam2_hiera_l),
              and with no masks (DINO + CLIP only)
Each runs ``segment_batch`` over ``BATCH`` copies of a VOC-sized photograph; ``extra_info`` holds images/s, GFLOP
per image (``clipsam.eval.flops``) and, for CorrCLIP, the share of the time in the automatic masks, DINO, the CLIP
trunk and the region-dependent last block. ``test_automask_batching`` times the automatic masks' decoding with
one decoder call per batch of points against one call per point (the same masks).
"""

from __future__ import annotations

import os
import time
import warnings

import pytest
import torch

from clipsam.config import dense_config
from clipsam.eval.flops import VitSpec, image_flops, measure_matmul_peak, sam2_flops
from clipsam.eval.machine import machine_info, versions

SMOKE = os.environ.get("CLIPSAM_BENCH_SMOKE", "") not in ("", "0")
TINY_VIT = os.path.join(os.path.dirname(__file__), os.pardir, "tests", "configs", "clipsam-test-vit.json")
CLIP = TINY_VIT if SMOKE else os.environ.get("CLIPSAM_BENCH_CLIP", "ViT-B-16")
AMG_SAM2 = os.environ.get("CLIPSAM_BENCH_AMG_SAM2", "sam2.1_hiera_t")
HW = (40, 56) if SMOKE else (375, 500)
BATCH = 2
_DEV = os.environ.get("CLIPSAM_BENCH_DEVICE", "auto")
TARGETS = ([("cpu", "fp32")] if _DEV in ("auto", "cpu") else []) + (
    [("cuda", "fp32"), ("cuda", "fp16")] if _DEV in ("auto", "cuda") and torch.cuda.is_available() else []
)
CASES = [
    ("rfclip", "voc21", "-"),
    ("rfclip", "context60", "-"),
    ("corrclip", "voc21", "sam2"),
    ("corrclip", "voc21", "none"),
]
_CACHE: dict = {}


def _median(benchmark) -> float | None:
    """The timed median in seconds, or None when timing is off (``--benchmark-disable``, smoke runs)."""
    stats = getattr(benchmark, "stats", None)
    return stats.stats.median if stats is not None else None


def _sam2(device):
    key = ("sam2", device)
    if key not in _CACHE:
        from clipsam.refine.sam2_backend import Sam2Refiner

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _CACHE[key] = Sam2Refiner.from_pretrained(AMG_SAM2, device=device, random_weights=True)
    return _CACHE[key]


def _segmenter(method, preset, source, device, precision):
    from clipsam.models import load_clip
    from clipsam.segmenter import Segmenter

    kw: dict = {"templates": "single"}
    if SMOKE:
        kw["short_side"] = 32
        if method == "rfclip":
            kw.update(rf_sink_channels=(4, 50, 100))
        if dense_config(method, preset).slide_crop:
            kw.update(slide_crop=32 if method == "rfclip" else 56, slide_stride=16)
    extra: dict = {}
    if method == "corrclip":
        from clipsam.dense.dino import load_dino

        kw["corr_mask_source"] = source
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extra["dino"] = load_dino(None)
        if source == "sam2":
            extra["mask_sam2"] = _sam2(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_clip(CLIP, None)
    return Segmenter(loaded, dense_config(method, preset, **kw), device=device, precision=precision, **extra)


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t[0]}-{t[1]}")
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(x for x in c if x != "-"))
def test_methods(benchmark, device_info, sample_photo, case, target):
    method, preset, source = case
    device, precision = target
    if source == "sam2" and SMOKE and device == "cpu":
        pytest.skip("SAM2 encodes at 1024 px: not in the CPU smoke run")
    seg = _segmenter(method, preset, source, device, precision)
    images = [sample_photo(HW)] * BATCH
    cuda = device == "cuda"

    def run():
        out = seg.segment_batch(images)
        if cuda:
            torch.cuda.synchronize()
        return out

    first_s = None
    if not SMOKE:
        start = time.perf_counter()
        run()
        first_s = time.perf_counter() - start
    enc = seg.encoder
    if method == "corrclip":
        enc.timings = {}
        if seg.automask is not None:
            seg.automask.seconds = 0.0
    rounds = int(os.environ.get("CLIPSAM_BENCH_ROUNDS", 0)) or (1 if SMOKE else 3)
    t0 = time.perf_counter()
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=0, iterations=1)
    wall = time.perf_counter() - t0
    vocab = seg.vocabulary()
    amg = 0.0
    if seg.automask is not None:
        p = seg.automask.refiner.model
        encoder = sum(x.numel() for x in p.image_encoder.parameters())
        decoder = sum(x.numel() for m in (p.sam_prompt_encoder, p.sam_mask_decoder) for x in m.parameters())
        amg = sam2_flops(seg.config.corrclip.corr_amg_points_per_side**2, AMG_SAM2, encoder, decoder)
    flops = image_flops(VitSpec.from_visual(seg.model.visual), seg.config, HW, vocab.num_queries, sam2=amg)
    shares = None
    if method == "corrclip":
        parts = dict(enc.timings or {})
        if seg.automask is not None:
            parts["sam2_automatic_masks"] = seg.automask.seconds
        shares = {k: round(v / wall, 4) for k, v in parts.items()}
    med = _median(benchmark)
    benchmark.extra_info.update(
        config=f"{method}-{preset}{'' if source == '-' else '-' + source} {device}-{precision} {HW[0]}x{HW[1]} x{BATCH}",
        method=method,
        preset=preset,
        mask_source=source,
        device=device,
        precision=precision,
        batch=BATCH,
        images_per_s=BATCH / med if med else None,
        gflop=flops.gflop * BATCH,
        gflop_parts={k: v / 1e9 for k, v in flops.parts.items()},
        windows=flops.windows,
        time_shares=shares,
        first_call_s=first_s,
        clip=CLIP,
        amg_sam2=AMG_SAM2 if source == "sam2" else None,
        smoke=SMOKE,
        peak_gflops=measure_matmul_peak(device, "fp32" if device == "cpu" else precision, 256 if SMOKE else None),
        machine=machine_info(),
        versions=versions(),
        **device_info,
    )


@pytest.mark.parametrize("device", [t[0] for t in TARGETS if t[1] == "fp32"])
def test_automask_batching(benchmark, device_info, sample_photo, device):
    """The automatic masks' decoder: one call per batch of 64 points vs one per point (8 x 8 grid)."""
    if SMOKE and device == "cpu":
        pytest.skip("SAM2 encodes at 1024 px: not in the CPU smoke run")
    from clipsam.refine.automask import AutoMaskGenerator, AutoMaskSettings

    sam2 = _sam2(device)
    rgb = sample_photo(HW)
    emb = sam2.embed_images([rgb])[0]
    gen = AutoMaskGenerator(sam2, AutoMaskSettings(pred_iou_thresh=0.0, stability_score_thresh=0.0))
    start = time.perf_counter()
    loop = gen.masks(emb, HW, per_point=True)
    per_point_s = time.perf_counter() - start
    batched = benchmark.pedantic(lambda: gen.masks(emb, HW), rounds=3, warmup_rounds=1, iterations=1)
    assert len(batched[0]) == len(loop[0])
    med = _median(benchmark)
    benchmark.extra_info.update(
        config=f"automask-decode {AMG_SAM2} 8x8 {device} {HW[0]}x{HW[1]}",
        per_point_s=per_point_s,
        speedup=per_point_s / med if med else None,
        **device_info,
    )
