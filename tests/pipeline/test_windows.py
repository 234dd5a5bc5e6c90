"""Sliding-window geometry and ClearCLIP's crop padding."""

from __future__ import annotations

import pytest
import torch

from clipsam.pipeline.windows import pad_to_patch, window_grid


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
