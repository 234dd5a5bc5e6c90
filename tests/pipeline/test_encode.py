"""The reference path: stitching in logit space, ClearCLIP padding, upsampling order (with a fake backend)."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from clipsam.config import dense_config
from clipsam.dense.ops import TorchOps
from clipsam.ops.base import EncoderSpec
from clipsam.pipeline import infer_logits
from clipsam.pipeline.windows import window_grid


class FakeEncoder:
    """A ``DenseBackend`` whose logits are the per-patch mean of channel 0, for every query: checks stitching
    without a model."""

    spec = EncoderSpec(patch=16, heads=1, width=1)
    ops = TorchOps("cpu")

    def __init__(self, q=2):
        self.q = q
        self.calls = []

    def inference(self):
        return contextlib.nullcontext()

    def patch_logits(self, crops, text):
        self.calls.append(tuple(crops.shape))
        g = F.avg_pool2d(crops[:, :1], 16)
        return g.repeat(1, self.q, 1, 1) * torch.arange(1, self.q + 1).view(1, -1, 1, 1)


def test_infer_logits_sliding_is_mean_of_window_logits():
    cfg = dense_config("sclip", "context59")  # slide 224/112, two-step
    img = torch.randn(3, 300, 340)
    enc = FakeEncoder()
    out = infer_logits(enc, img, torch.zeros(2, 4), cfg, (150, 170))
    preds = torch.zeros(1, 2, 300, 340)
    count = torch.zeros(1, 1, 300, 340)
    for y1, y2, x1, x2 in window_grid(300, 340, 224, 112):
        crop = img[None, :, y1:y2, x1:x2]
        preds[:, :, y1:y2, x1:x2] += F.interpolate(
            FakeEncoder().patch_logits(crop, None), size=(224, 224), mode="bilinear", align_corners=False
        )
        count[:, :, y1:y2, x1:x2] += 1
    ref = F.interpolate(preds / count, size=(150, 170), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(out, ref)
    assert len(enc.calls) == len(window_grid(300, 340, 224, 112)) and all(c[0] == 1 for c in enc.calls)


def test_whole_image_two_step_vs_one_step():
    img = torch.randn(3, 64, 96)
    two = infer_logits(FakeEncoder(), img, None, dense_config("resclip", "voc21"), (40, 50))
    grid = FakeEncoder().patch_logits(img[None], None)
    ref_two = F.interpolate(F.interpolate(grid, size=(64, 96), mode="bilinear"), size=(40, 50), mode="bilinear")[0]
    torch.testing.assert_close(two, ref_two)
    one = infer_logits(FakeEncoder(), img, None, dense_config("sclip", "voc21", slide_crop=0), (40, 50))
    torch.testing.assert_close(one, F.interpolate(grid, size=(40, 50), mode="bilinear")[0])


def test_clearclip_pads_windows_and_crops_logits_back():
    cfg = dense_config("clearclip", "voc21")  # 448/224 windows, padding
    img = torch.randn(3, 100, 150)  # smaller than the crop: one 100x150 window, padded to 112x160
    enc = FakeEncoder()
    out = infer_logits(enc, img, torch.zeros(2, 4), cfg, (100, 150))
    assert enc.calls == [(1, 3, 112, 160)]
    padded = F.pad(img[None], (5, 5, 6, 6))
    ref = F.interpolate(FakeEncoder().patch_logits(padded, None), size=(112, 160), mode="bilinear")[:, :, 6:106, 5:155]
    torch.testing.assert_close(out, ref[0])


@pytest.mark.parametrize(
    "method,expected",
    [
        ("clip", "one_step"),
        ("sclip", "one_step"),
        ("clearclip", "one_step"),  # SCLIP's and ClearCLIP's forward_feature
        ("naclip", "two_step"),
        ("resclip", "two_step"),
        ("resclip_sclip", "two_step"),
        ("resclip_clearclip", "two_step"),
    ],
)
def test_whole_image_upsampling_order_per_method(method, expected):
    """Whole-image inference resizes grid -> original size in one step (SCLIP, ClearCLIP) or through the resized
    input (NACLIP, ResCLIP), as each method's upstream code does."""
    cfg = dense_config(method, "voc21", slide_crop=0, pamr_iters=0)
    assert cfg.schedule.upsample == expected
    img = torch.randn(3, 64, 96)
    out = infer_logits(FakeEncoder(), img, None, cfg, (40, 50))
    grid = FakeEncoder().patch_logits(img[None], None)
    one = F.interpolate(grid, size=(40, 50), mode="bilinear")[0]
    two = F.interpolate(F.interpolate(grid, size=(64, 96), mode="bilinear"), size=(40, 50), mode="bilinear")[0]
    assert (one - two).abs().max() > 1e-3  # the order matters on this input
    torch.testing.assert_close(out, one if expected == "one_step" else two)


@pytest.mark.parametrize(
    "method,kw",
    [
        ("sclip", dict(slide_crop=32, slide_stride=16, flip=True)),
        ("resclip", dict(slide_crop=48, slide_stride=32, scales=(1.0, 0.75))),
        ("clearclip", dict(slide_crop=40, slide_stride=24)),  # windows padded to 48 and cropped back
    ],
)
def test_sliding_windows_resized_into_the_sum_equal_the_materialised_path(make_segmenter, chelsea_small, method, kw):
    """Through ``segment``: each window's logits resized straight into the stitched sum (the CPU default) and
    resized whole then added give identical labels and scores."""
    import numpy as np

    seg = make_segmenter(method, None, short_side=64, templates=("a photo of a {}.",), **kw)
    classes = "cat, grass, wall, floor, sky, tree, dog, car"
    ops = seg.backend.ops
    calls = []
    fused = ops.resize_add
    assert fused is not None
    ops.resize_add = lambda *a: calls.append((tuple(a[1]), a[4][2:])) or fused(*a)  # (resized size, block size)
    got = seg.segment(chelsea_small, classes=classes)
    assert len(calls) > 2  # every window went through it
    assert any(size != block for size, block in calls) == (method == "clearclip")  # padding cropped off
    ops.resize_add = None  # the materialised path
    want = seg.segment(chelsea_small, classes=classes)
    assert np.array_equal(got.labels, want.labels)
    np.testing.assert_array_equal(got.scores, want.scores)
    assert len(np.unique(want.labels)) > 1 and np.ptp(want.scores) > 0
