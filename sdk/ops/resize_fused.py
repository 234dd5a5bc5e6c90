"""Bilinear resizes fused with what follows them, torch-free, bit for bit the numbers of the plain steps.

    resize_bilinear_twice  resize(flip?(resize(x, mid)), size) computing only the middle rows the output reads
    resize_bilinear_add    dst[block] += a crop of resize(x, size), without the resized array (window stitching)

Both exist so that nothing of size queries x pixels is allocated per call: two-step upsampling (NACLIP, ResCLIP)
and the sum of sliding-window logits (each window (Q, h, w), 100 MB for 500 queries on a 224 x 224 window).
"""

from __future__ import annotations

import numpy as np

from .resize import linear_taps, resize_bilinear, rows_read
from .threads import parallel_blocks

_F = np.float32


def resize_bilinear_twice(
    x: np.ndarray, mid: tuple[int, int], size: tuple[int, int], rows=None, flip: bool = False
) -> np.ndarray:
    """``resize_bilinear(f(resize_bilinear(x, mid)), size, rows=rows)``, f a flip of the width when ``flip``, with
    only the rows of the middle image that the output rows read (bit for bit the same numbers).

    A two-step upsampling (patch grid -> the resized input -> the original size, as NACLIP and ResCLIP do) then never
    holds the middle image whole: (Q, h, w) floats per call, 300 MB for 500 queries on a 336 x 448 input.

    Arguments:
        x: (..., gh, gw) float32.
        mid: (h, w) the middle size; size: (H, W) the output size.
        rows: optional (r0, r1) output rows (default all).

    Returns:
        (..., r1 - r0, W) float32.
    """
    r0, r1 = (0, int(size[0])) if rows is None else (int(rows[0]), int(rows[1]))
    if tuple(mid) == tuple(size) or r1 <= r0:  # the second step is the identity
        m = resize_bilinear(x, mid, rows=(r0, r1))
        return np.ascontiguousarray(m[..., ::-1]) if flip else m
    a, b = rows_read(int(mid[0]), int(size[0]), False, r0, r1)
    m = resize_bilinear(x, mid, rows=(a, b))
    if flip:
        m = np.ascontiguousarray(m[..., ::-1])
    return resize_bilinear(m, size, rows=(r0, r1), src_rows=(a, int(mid[0])))


def resize_bilinear_add(
    x: np.ndarray,
    size: tuple[int, int],
    dst: np.ndarray,
    at: tuple[int, int],
    crop: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """``dst[:, oy:oy + n, ox:ox + m] += resize_bilinear(x, size)[:, top:top + n, left:left + m]`` with the resized
    values computed row by row in cache (compiled kernel ``compiled.bilinear_add_rows``, planes on the host threads),
    bit for bit the same numbers.

    Arguments:
        x: (C, h, w) float32 (e.g. a window's patch logits).
        size: (H, W) the size of the whole resize.
        dst: (C, H', W') C-contiguous float32, updated in place.
        at: (oy, ox) where the block starts in ``dst``.
        crop: (top, left, n, m) the part of the resized image added (default: all of it).

    Returns:
        ``dst``.
    """
    from .compiled import bilinear_add_rows

    out_h, out_w = int(size[0]), int(size[1])
    top, left, n, m = (0, 0, out_h, out_w) if crop is None else (int(v) for v in crop)
    oy, ox = int(at[0]), int(at[1])
    if x.ndim != 3 or dst.ndim != 3 or x.shape[0] != dst.shape[0]:
        raise ValueError(
            f"resize_bilinear_add: x (C, h, w) and dst (C, H, W) with the same C, got {x.shape}, {dst.shape}"
        )
    if dst.dtype != _F or not dst.flags.c_contiguous or not dst.flags.writeable:
        raise ValueError("resize_bilinear_add: dst must be a writeable C-contiguous float32 array")
    if min(top, left, n, m, oy, ox) < 0 or top + n > out_h or left + m > out_w:
        raise ValueError(f"resize_bilinear_add: crop {(top, left, n, m)} is not inside the resize {(out_h, out_w)}")
    if oy + n > dst.shape[1] or ox + m > dst.shape[2]:
        raise ValueError(f"resize_bilinear_add: a {n} x {m} block at {(oy, ox)} does not fit dst {dst.shape}")
    src = np.ascontiguousarray(x, dtype=_F)
    h, w = src.shape[-2:]
    ys = tuple(t[top : top + n] for t in linear_taps(h, out_h, False))
    xs = tuple(t[left : left + m] for t in linear_taps(w, out_w, False))
    parallel_blocks(lambda c0, c1: bilinear_add_rows(src, *ys, *xs, dst, oy, ox, c0, c1), src.shape[0])
    return dst
