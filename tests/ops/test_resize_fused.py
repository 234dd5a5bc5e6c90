"""Fused resizes: bit for bit the numbers of the plain resize followed by the step they are fused with."""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.ops.resize import resize_bilinear as resize
from clipsam.ops.resize import resize_bilinear_ref
from clipsam.ops.resize_fused import resize_bilinear_add, resize_bilinear_twice


@pytest.mark.parametrize(
    "grid,mid,size",
    [
        ((21, 28), (336, 448), (375, 500)),
        ((7, 9), (112, 144), (50, 61)),
        ((5, 6), (80, 96), (80, 96)),
        ((4, 4), (64, 64), (301, 17)),
        ((3, 5), (48, 80), (1, 1)),
    ],
)
@pytest.mark.parametrize("flip", [False, True])
def test_resize_twice_equals_both_steps_bit_for_bit(grid, mid, size, flip):
    """Only the middle rows the output rows read are computed: the numbers of resize(flip(resize(x, mid)), size),
    whole and in strips of every height (upsampling, downsampling, the identity second step, a 1 x 1 output)."""
    x = np.random.default_rng(sum(mid)).standard_normal((3, *grid)).astype(np.float32)
    m = resize(x, mid)
    full = resize(np.ascontiguousarray(m[..., ::-1]) if flip else m, size)
    np.testing.assert_array_equal(resize_bilinear_twice(x, mid, size, flip=flip), full)
    for step in (1, 3, 8):
        for r0 in range(0, size[0], step):
            r1 = min(size[0], r0 + step)
            got = resize_bilinear_twice(x, mid, size, rows=(r0, r1), flip=flip)
            np.testing.assert_array_equal(got, full[:, r0:r1])


@pytest.mark.parametrize(
    "grid,size,crop,at,dst_hw",
    [
        ((14, 14), (224, 224), None, (112, 224), (336, 448)),  # a sliding window of ViT-B/16
        ((7, 10), (112, 160), (6, 10, 100, 150), (0, 0), (100, 150)),  # ClearCLIP: padded window cropped back
        ((5, 6), (80, 96), (3, 0, 1, 96), (7, 2), (20, 100)),  # one row
        ((9, 9), (5, 7), (1, 2, 3, 4), (0, 3), (3, 7)),  # downsampling
        ((4, 4), (4, 4), None, (1, 1), (6, 6)),  # the identity
    ],
)
def test_resize_add_equals_resize_then_add(grid, size, crop, at, dst_hw):
    """dst[block] += crop of the resize, for the compiled kernel's reference (numpy) and its plain form; the rest of
    dst untouched."""
    rng = np.random.default_rng(sum(size) + sum(at))
    x = rng.standard_normal((5, *grid)).astype(np.float32)
    dst = rng.standard_normal((5, *dst_hw)).astype(np.float32)
    top, left, n, m = (0, 0, *size) if crop is None else crop
    oy, ox = at
    want = dst.copy()
    want[:, oy : oy + n, ox : ox + m] += resize_bilinear_ref(x, size)[:, top : top + n, left : left + m]
    plain = dst.copy()
    plain[:, oy : oy + n, ox : ox + m] += resize(x, size)[:, top : top + n, left : left + m]
    x_before = x.copy()
    got = resize_bilinear_add(x, size, dst, at, crop)
    assert got is dst
    np.testing.assert_array_equal(dst, want)
    np.testing.assert_array_equal(dst, plain)
    np.testing.assert_array_equal(x, x_before)


def test_resize_add_checks_its_arguments_before_writing():
    x = np.ones((2, 3, 3), np.float32)
    dst = np.zeros((2, 10, 10), np.float32)
    bad = [
        (dict(dst=np.zeros((3, 10, 10), np.float32)), "same C"),
        (dict(dst=np.zeros((2, 10, 10), np.float64)), "C-contiguous float32"),
        (dict(dst=np.zeros((2, 10, 20), np.float32)[:, :, ::2]), "C-contiguous float32"),
        (dict(crop=(0, 0, 7, 6)), "not inside the resize"),
        (dict(crop=(-1, 0, 2, 2)), "not inside the resize"),
        (dict(at=(5, 0)), "does not fit"),
    ]
    for kw, match in bad:
        args = dict(x=x, size=(6, 6), dst=dst, at=(0, 0), crop=None) | kw
        with pytest.raises(ValueError, match=match):
            resize_bilinear_add(**args)
    assert not dst.any()
