"""Sliding windows, stitching in logit space, ClearCLIP padding, upsampling order."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipsam.config import dense_config
from clipsam.dense.inference import infer_logits
from clipsam.dense.windows import pad_to_patch, window_grid


@pytest.mark.parametrize(
    "h,w,crop,stride,expected",
    [
        (224, 224, 224, 112, [(0, 224, 0, 224)]),
        (100, 150, 224, 112, [(0, 100, 0, 150)]),  # image smaller than the crop: one window, no padding
        (336, 448, 224, 112, [(y, y + 224, x, x + 224) for y in (0, 112) for x in (0, 112, 224)]),
        (300, 300, 224, 112, [(0, 224, 0, 224), (0, 224, 76, 300), (76, 300, 0, 224), (76, 300, 76, 300)]),
    ],
)
def test_window_grid_by_hand(h, w, crop, stride, expected):
    assert window_grid(h, w, crop, stride) == expected


def test_window_counts_cover_every_pixel():
    h, w = 337, 501
    count = torch.zeros(h, w)
    windows = window_grid(h, w, 224, 112)
    assert len(windows) == 3 * 4  # n = max(H - c + t - 1, 0) // t + 1: (337+111-224)//112+1, (501+111-224)//112+1
    for y1, y2, x1, x2 in windows:
        assert y2 - y1 == 224 and x2 - x1 == 224
        count[y1:y2, x1:x2] += 1
    assert count.min() >= 1
    assert windows[-1] == (337 - 224, 337, 501 - 224, 501)  # the last window is shifted back inside the image


def test_pad_to_patch():
    assert pad_to_patch(224, 224, 16) == (0, 0, 0, 0)
    assert pad_to_patch(100, 150, 16) == (5, 5, 6, 6)  # w 150 -> 160, h 100 -> 112
    assert pad_to_patch(17, 31, 16) == (0, 1, 7, 8)


class FakeEncoder:
    """Logits = per-patch mean of channel 0, for every query: checks stitching without a model."""

    patch = 16

    def __init__(self, q=2):
        self.q = q
        self.calls = []

    def __call__(self, crops, text):
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
        preds[:, :, y1:y2, x1:x2] += F.interpolate(FakeEncoder()(crop, None), size=(224, 224), mode="bilinear", align_corners=False)
        count[:, :, y1:y2, x1:x2] += 1
    ref = F.interpolate(preds / count, size=(150, 170), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(out, ref)
    assert len(enc.calls) == len(window_grid(300, 340, 224, 112)) and all(c[0] == 1 for c in enc.calls)


def test_whole_image_two_step_vs_one_step():
    img = torch.randn(3, 64, 96)
    two = infer_logits(FakeEncoder(), img, None, dense_config("resclip", "voc21"), (40, 50))
    grid = FakeEncoder()(img[None], None)
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
    ref = F.interpolate(FakeEncoder()(padded, None), size=(112, 160), mode="bilinear")[:, :, 6:106, 5:155]
    torch.testing.assert_close(out, ref[0])
