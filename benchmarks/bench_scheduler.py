"""Batched scheduler vs the one-window-at-a-time reference path, same inputs, same run.

    pytest benchmarks/bench_scheduler.py --benchmark-enable --benchmark-json bench_scheduler.json
    CLIPSAM_BENCH_SMOKE=1 pytest benchmarks/bench_scheduler.py --benchmark-disable      # tiny model, CI
    CLIPSAM_BENCH_IMAGES=2 pytest benchmarks/bench_scheduler.py -k ms5 --benchmark-enable  # fewer images

ViT-B/16 with random weights; 8 images of PASCAL-VOC-like sizes; ResCLIP with VOC21 settings but sliding
224/112 windows at short side 336; single scale and the 5-scale ensemble. The timed function returns after
every label map is on the host (and synchronises CUDA when it is used).
"""

from __future__ import annotations

import os
import platform
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

SMOKE = os.environ.get("CLIPSAM_BENCH_SMOKE") == "1"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SIZES = [(375, 500), (500, 333), (375, 500), (333, 500), (500, 375), (281, 500), (375, 500), (500, 400)]
if SMOKE:
    SIZES = [(60, 80), (80, 50)]
SIZES = SIZES[: int(os.environ.get("CLIPSAM_BENCH_IMAGES", len(SIZES)))]  # fewer images for quick CPU runs
SCALES = {"single": (1.0,), "ms5": (0.5, 0.75, 1.0, 1.25, 1.5)}


def _images():
    rng = np.random.default_rng(0)
    import cv2
    import skimage.data

    base = skimage.data.astronaut()
    return [cv2.resize(np.roll(base, int(rng.integers(0, 200)), axis=1), (w, h)) for h, w in SIZES]


@pytest.fixture(scope="module", params=DEVICES)
def segmenter(request):
    from clipsam import Segmenter

    clip = str(Path(__file__).parents[1] / "tests" / "configs" / "clipsam-test-vit.json") if SMOKE else "ViT-B-16"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = Segmenter.from_pretrained(
            clip=clip,
            clip_weights=None,
            method="resclip",
            preset="voc21",
            slide_crop=224,
            slide_stride=112,
            short_side=64 if SMOKE else 336,
            device=request.param,
            templates="single",
        )  # default max_batch
    seg.text_embeddings(seg.vocabulary())
    return seg


def _sync(seg):
    if seg.device.type == "cuda":
        torch.cuda.synchronize()


def reference(seg, images, scales):
    """Each image, scale and window alone through ``infer_logits``; probabilities averaged over scales."""
    from clipsam.pipeline import infer_logits
    from clipsam.postprocess import decide, merge_synonyms, query_probs
    from clipsam.preprocess import preprocess

    cfg, vocab = seg.config, seg.vocabulary()
    sc = cfg.schedule
    text = seg.text_embeddings(vocab)
    out = []
    with torch.inference_mode():
        for rgb in images:
            probs = 0
            for s in scales:
                x = torch.from_numpy(preprocess(rgb, round(sc.short_side * s), round(sc.long_side * s))).to(seg.device)
                logits = infer_logits(seg.backend, x, text, cfg, rgb.shape[:2]).cpu().numpy()
                probs = probs + query_probs(logits, cfg.post.logit_scale) / len(scales)
            out.append(decide(merge_synonyms(probs, vocab.query_to_class, vocab.num_classes), cfg.post.prob_thd)[0])
    _sync(seg)
    return out


def batched(seg, images, scales):
    out = [r.labels for r in seg.with_options(scales=scales).segment_batch(images)]
    _sync(seg)
    return out


@pytest.mark.parametrize("scales", list(SCALES))
@pytest.mark.parametrize("provider", ["reference", "batched"])
def test_scheduler_throughput(benchmark, segmenter, provider, scales):
    from clipsam.pipeline.windows import window_grid
    from clipsam.preprocess import resize_shape

    images = _images()
    sc = segmenter.config.schedule
    windows = sum(
        len(
            window_grid(
                *resize_shape(*im.shape[:2], round(sc.short_side * s), round(sc.long_side * s)),
                sc.slide_crop,
                sc.slide_stride,
            )
        )
        for im in images
        for s in SCALES[scales]
    )
    fn = reference if provider == "reference" else batched
    cuda = (
        segmenter.device.type == "cuda"
    )  # one warm-up on the GPU (kernel compilation, cuDNN plans), none on the slow CPU
    labels = benchmark.pedantic(
        fn,
        args=(segmenter, images, SCALES[scales]),
        rounds=3 if cuda else 1,
        iterations=1,
        warmup_rounds=1 if cuda else 0,
    )
    assert len(labels) == len(images)
    stats = benchmark.stats.stats if benchmark.stats is not None else None
    benchmark.extra_info.update(
        provider=provider,
        scales=SCALES[scales],
        images=len(images),
        sizes=SIZES,
        windows=windows,
        device=str(segmenter.device),
        clip=segmenter.arch,
        max_batch=segmenter.max_batch,
        torch=torch.__version__,
        machine=platform.processor() or platform.machine(),
        cpus=os.cpu_count(),
        images_per_s=(len(images) / stats.median) if stats is not None and stats.median else None,
    )
