"""The plan and the batched encoder equal the one-window-at-a-time reference path; memory stays within budget."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipsam.pipeline import finalize_members, infer_logits, plan_members, run_members
from clipsam.pipeline.deferred import materialise
from clipsam.postprocess import postprocess
from clipsam.preprocess import preprocess
from clipsam.vocabulary import Vocabulary

from ..conftest import TINY_VIT


@pytest.fixture(scope="module")
def images(chelsea):
    import cv2

    return [
        cv2.resize(chelsea, (150, 100)),  # landscape
        cv2.resize(chelsea, (90, 130)),  # portrait
        cv2.resize(chelsea, (150, 100))[::-1].copy(),  # same size as the first: shares whole-image buckets
    ]


def _reference_member_logits(seg, rgb, cfg, scale, flip, text):
    short, long = int(round(cfg.short_side * scale)), int(round(cfg.long_side * scale))
    x = torch.from_numpy(preprocess(rgb, short, long))
    if flip:
        x = x.flip(-1)
    out = infer_logits(seg.backend, x, text, cfg.replace(pamr_iters=0), rgb.shape[:2])
    return out.flip(-1) if flip else out


@pytest.mark.parametrize(
    "method,overrides",
    [
        ("resclip", dict(slide_crop=0)),  # whole image, SFR
        ("resclip", dict(slide_crop=48, slide_stride=32)),  # sliding, SFR
        ("sclip", dict(slide_crop=0, scales=(1.0, 0.75), flip=True)),  # one-step whole image, scales, flip
        ("clearclip", dict(slide_crop=56, slide_stride=40, scales=(0.75, 1.25))),  # padded windows
        ("naclip", dict(slide_crop=48, slide_stride=48, flip=True)),
    ],
)
@pytest.mark.parametrize("max_batch", [1, 3, 64])
def test_members_equal_reference_windows(make_segmenter, images, method, overrides, max_batch):
    seg = make_segmenter(method, None, short_side=64, **overrides)
    cfg = seg.config
    vocab = Vocabulary.from_names(["cat", "grass", "wall", "sky"])
    text = seg.text_embeddings(vocab)
    members = plan_members(images, cfg, 16, seg.backend.ops)
    assert len(members) == len(images) * len(cfg.scales) * (2 if cfg.flip else 1)
    with torch.inference_mode():
        run_members(seg.backend, members, text, cfg, max_batch)
        for m in members:
            rgb = images[m.image]
            ours = F.interpolate(materialise(m.logits)[None], size=rgb.shape[:2], mode="bilinear", align_corners=False)[
                0
            ]
            ref = _reference_member_logits(seg, rgb, cfg, m.scale, m.flip, text)
            assert (ours - ref).abs().max().item() <= 1e-5, (m.image, m.scale, m.flip)


def test_segment_batch_labels_equal_reference(make_segmenter, images):
    seg = make_segmenter("resclip", "voc21", short_side=64)
    vocab = seg.vocabulary()
    results = seg.segment_batch(images)
    for rgb, res in zip(images, results):
        logits = seg.logits(rgb).astype(np.float32)
        labels, scores, _ = postprocess(
            logits,
            vocab.query_to_class,
            vocab.num_classes,
            seg.config.logit_scale,
            seg.config.prob_thd,
            seg.config.area_thd,
        )
        assert np.array_equal(res.labels, labels)
        np.testing.assert_allclose(res.scores, scores, atol=1e-6)


def test_area_thd_and_strips_match_whole_map(make_segmenter, images):
    seg = make_segmenter("sclip", "voc21", short_side=64)  # area_thd 0.1
    vocab = seg.vocabulary()
    text = seg.text_embeddings(vocab)
    ops = seg.backend.ops
    members = run_members(seg.backend, plan_members(images[:1], seg.config, 16, ops), text, seg.config, 4)
    args = (
        ops,
        [m.logits for m in members],
        [m.weight for m in members],
        [m.pixels for m in members],
        images[0].shape[:2],
        seg.config,
        vocab,
    )
    whole = finalize_members(*args)
    strips = finalize_members(*args, max_strip_mb=0.05)  # a few rows per strip
    assert np.mean(whole[0] == strips[0]) >= 0.999
    np.testing.assert_allclose(whole[1], strips[1], atol=1e-4)


def test_multiscale_combinations(make_segmenter, images):
    from clipsam.config import MULTI_SCALE_5

    a = make_segmenter("sclip", None, short_side=64, scales=MULTI_SCALE_5).segment(images[0], classes="cat, grass")
    b = make_segmenter("sclip", None, short_side=64, scales=MULTI_SCALE_5, combine="logit_mean").segment(
        images[0], classes="cat, grass"
    )
    c = make_segmenter(
        "sclip", None, short_side=64, scales=MULTI_SCALE_5, combine="weighted", scale_weights=(0, 0, 1, 0, 0)
    ).segment(images[0], classes="cat, grass")
    single = make_segmenter("sclip", None, short_side=64).segment(images[0], classes="cat, grass")
    assert a.labels.shape == b.labels.shape == images[0].shape[:2]
    assert np.array_equal(c.labels, single.labels)  # all weight on scale 1.0 is the single-scale result
    np.testing.assert_allclose(c.scores, single.scores, atol=1e-5)


def test_stream_yields_in_order_with_ragged_last_chunk(make_segmenter, images):
    seg = make_segmenter("naclip", "voc21", short_side=64)
    stream_in = images * 3  # 9 images, batch_size 4: chunks of 4, 4, 1
    out = list(seg.segment_stream(iter(stream_in), batch_size=4))
    assert len(out) == 9
    singles = seg.segment_batch(images)
    for i, res in enumerate(out):
        assert np.array_equal(res.labels, singles[i % 3].labels)


MEMORY_SCRIPT = r"""
import json, sys, warnings
import numpy as np
warnings.simplefilter("ignore")
from clipsam import Segmenter
budget = float(sys.argv[2])
seg = Segmenter.from_pretrained(clip=sys.argv[1], clip_weights=None, method="resclip", preset="context59",
                                templates="single", max_memory_mb=budget)
seg.segment(np.zeros((64, 96, 3), np.uint8))  # warm up allocator, text cache
rng = np.random.default_rng(0)
img = rng.integers(0, 255, size=(4000, 6000, 3), dtype=np.uint8)

def status(key):  # MiB
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current resident size
before = status("VmRSS:")
res = seg.segment(img)
peak = status("VmHWM:")
print(json.dumps({"before": before, "peak": peak, "shape": list(res.labels.shape), "max_batch": res.info["max_batch"]}))
"""


@pytest.mark.slow
def test_huge_image_stays_within_memory_budget():
    budget = 600.0
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, TINY_VIT, str(budget)],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["shape"] == [4000, 6000]
    outputs_mb = 4000 * 6000 * (4 + 4) / 2**20  # labels int32 + scores float32, returned to the caller
    grown = r["peak"] - r["before"]
    # the full-size logits alone would be 59 classes x 24 Mpx x 4 B = 5.4 GiB
    assert grown <= budget + outputs_mb, r
