"""Resampling in numpy, torch-free: the arithmetic of the torch ops the PyTorch backend runs.

Each function follows the arithmetic of the PyTorch CPU kernel it replaces, in float32 and in the same order
(source-index formulas, clamping, weight normalisation, sum order), so results agree with torch to float32
rounding (tests/ops/test_resize.py). ``resize_bilinear`` runs the compiled kernel ``compiled.bilinear_rows``;
``resize_bilinear_ref`` is its numpy reference (equal bit for bit).

    resize_bilinear       F.interpolate(x, size, mode="bilinear", align_corners=False|True)
    resize_bilinear_aa    F.interpolate(x, size, mode="bilinear", antialias=True)   (SAM2's image squash)
    interpolate_pos_embed DenseEncoder._pos_embed: bicubic, scale_factor=((h+0.1)/n, (w+0.1)/n), A = -0.75
    neighbourhood_window  kernels.rcs_attention.neighbourhood_window (NACLIP's Omega)
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .threads import parallel_blocks

_F = np.float32


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """exp(x - max) / sum, in the dtype of x."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@lru_cache(maxsize=256)
def linear_taps(in_size: int, out_size: int, align_corners: bool):
    """(i0, i1, w0, w1) of torch's ``compute_indices_weights_linear``, float32 arithmetic."""
    dst = np.arange(out_size, dtype=_F)
    if align_corners:
        scale = _F(in_size - 1) / _F(out_size - 1) if out_size > 1 else _F(0)
        real = scale * dst
    else:
        scale = _F(in_size) / _F(out_size)
        real = np.maximum(scale * (dst + _F(0.5)) - _F(0.5), _F(0))
    i0 = real.astype(np.int64)
    i1 = i0 + (i0 < in_size - 1)
    w1 = np.minimum(real - i0.astype(_F), _F(1))
    return i0, i1, (_F(1) - w1).astype(_F), w1.astype(_F)


def rows_read(in_size: int, out_size: int, align_corners: bool, r0: int, r1: int) -> tuple[int, int]:
    """[lo, hi): the input rows that output rows [r0, r1) of a bilinear resize read ((r0, r0) when none)."""
    if r1 <= r0:
        return r0, r0
    y0, y1, _, _ = linear_taps(in_size, out_size, align_corners)
    return min(int(y0[r0:r1].min()), int(y1[r0:r1].min())), max(int(y0[r0:r1].max()), int(y1[r0:r1].max())) + 1


_BLOCK_BYTES = 1 << 21  # output bytes per block of leading planes: temporaries stay in cache


def resize_bilinear(
    x: np.ndarray,
    size: tuple[int, int],
    align_corners: bool = False,
    rows=None,
    out: np.ndarray | None = None,
    src_rows: tuple[int, int] | None = None,
) -> np.ndarray:
    """Bilinear resize of the last two axes, as torch's CPU ``upsample_bilinear2d`` (compiled kernel
    ``compiled.bilinear_rows``, planes on the host threads; equal to ``resize_bilinear_ref`` bit for bit).

    Arguments:
        x: (..., h, w) float32.
        size: (H, W) output size.
        rows: optional (r0, r1): compute output rows [r0, r1) only (equal to slicing the full result).
        src_rows: optional (a, H_in): ``x`` holds only rows [a, a + h) of an input H_in rows high, whose taps are
            used; every output row asked for must read only those rows (else ValueError).
        out: optional C-contiguous float32 array of the result's size to write into (then always written, even
            when nothing changes).

    Returns:
        (..., H, W) float32, or (..., r1 - r0, W) (``x`` itself when nothing changes and no ``out`` is given).
    """
    from .compiled import bilinear_rows

    h, w = x.shape[-2:]
    out_h, out_w = int(size[0]), int(size[1])
    if (h, w) == (out_h, out_w) and not align_corners and rows is None and out is None and src_rows is None:
        return x
    r0, r1 = (0, out_h) if rows is None else (int(rows[0]), int(rows[1]))
    flat = np.ascontiguousarray(x, dtype=_F).reshape(-1, h, w)
    first, in_h = (0, h) if src_rows is None else (int(src_rows[0]), int(src_rows[1]))
    y0, y1, wy0, wy1 = linear_taps(in_h, out_h, align_corners)
    if src_rows is not None:
        lo, hi = rows_read(in_h, out_h, align_corners, r0, r1)
        if hi > lo and (lo < first or hi > first + h):
            raise ValueError(
                f"resize_bilinear: output rows {r0}..{r1} read input rows {lo}..{hi - 1}, not in x's {src_rows}"
            )
        y0, y1 = y0 - first, y1 - first
    taps = (y0, y1, wy0, wy1) + linear_taps(w, out_w, align_corners)
    shape = (flat.shape[0], r1 - r0, out_w)
    if out is not None and (out.dtype != _F or not out.flags.c_contiguous or out.size != np.prod(shape)):
        raise ValueError(f"resize_bilinear: out must be a C-contiguous float32 array of {shape} elements")
    dst: np.ndarray = np.empty(shape, dtype=_F) if out is None else out.reshape(shape)
    parallel_blocks(lambda c0, c1: bilinear_rows(flat, *taps, dst, c0, c1, r0), flat.shape[0])
    return dst.reshape(x.shape[:-2] + shape[-2:])


def resize_bilinear_ref(x: np.ndarray, size: tuple[int, int], align_corners: bool = False, rows=None) -> np.ndarray:
    """``resize_bilinear`` in vectorised numpy (the reference), blocks of planes at a time.

    Arguments:
        x: (..., h, w) float32.
        size: (H, W) output size.
        rows: optional (r0, r1): compute output rows [r0, r1) only (equal to slicing the full result).

    Returns:
        (..., H, W) float32, or (..., r1 - r0, W) (``x`` itself when nothing changes).
    """
    h, w = x.shape[-2:]
    out_h, out_w = int(size[0]), int(size[1])
    if (h, w) == (out_h, out_w) and not align_corners and rows is None:
        return x
    x = np.asarray(x, dtype=_F)
    y0, y1, wy0, wy1 = linear_taps(h, out_h, align_corners)
    if rows is not None:
        y0, y1, wy0, wy1 = (a[rows[0] : rows[1]] for a in (y0, y1, wy0, wy1))
    x0, x1, wx0, wx1 = linear_taps(w, out_w, align_corners)
    need = np.unique(np.concatenate([y0, y1]))  # source rows used (a strip needs only a few)
    y0, y1 = np.searchsorted(need, y0), np.searchsorted(need, y1)
    lead = x.shape[:-2]
    flat = x.reshape(-1, h, w)
    out = np.empty((flat.shape[0], len(y0), out_w), dtype=_F)
    step = max(1, _BLOCK_BYTES // max(1, 4 * len(y0) * out_w))
    wy0, wy1 = wy0[:, None], wy1[:, None]
    for b0 in range(0, flat.shape[0], step):
        src = flat[b0 : b0 + step][:, need]
        # torch: out = (a*wx0 + b*wx1)*wy0 + (c*wx0 + d*wx1)*wy1: columns on the source rows, then rows
        r = np.take(src, x0, axis=-1)
        r *= wx0
        r += np.take(src, x1, axis=-1) * wx1
        blk = out[b0 : b0 + step]
        np.take(r, y0, axis=-2, out=blk)
        blk *= wy0
        blk += np.take(r, y1, axis=-2) * wy1
    return out.reshape(lead + out.shape[-2:])


@lru_cache(maxsize=64)
def _aa_taps(in_size: int, out_size: int):
    """(index (out, taps), weight (out, taps)) of torch's antialiased bilinear (PIL-style triangle filter)."""
    scale = _F(in_size) / _F(out_size)
    support = _F(scale) if scale >= 1.0 else _F(1.0)
    invscale = _F(1.0) / scale if scale >= 1.0 else _F(1.0)
    center = scale * (np.arange(out_size, dtype=_F) + _F(0.5))
    xmin = np.maximum((center - support + _F(0.5)).astype(np.int64), 0)
    xsize = np.minimum((center + support + _F(0.5)).astype(np.int64), in_size) - xmin
    taps = int(xsize.max())
    j = np.arange(taps)
    wts = np.maximum(_F(1) - np.abs((j[None, :] + xmin[:, None] - center[:, None] + _F(0.5)).astype(_F) * invscale), 0)
    wts = np.where(j[None, :] < xsize[:, None], wts, 0).astype(_F)
    total = wts.sum(axis=1, keepdims=True)
    wts = np.where(total != 0, wts / np.where(total != 0, total, 1), wts).astype(_F)
    idx = np.minimum(xmin[:, None] + j[None, :], in_size - 1)
    return idx, wts


def _aa_axis(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    idx, wts = _aa_taps(x.shape[axis], size)
    x = np.moveaxis(x, axis, -1)
    out = x[..., idx[:, 0]] * wts[:, 0]
    for t in range(1, idx.shape[1]):
        out += x[..., idx[:, t]] * wts[:, t]
    return np.moveaxis(out, -1, axis)


def resize_bilinear_aa(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased bilinear resize of the last two axes (torch ``antialias=True``): width first, then height.

    Arguments:
        x: (..., h, w) float32.
        size: (H, W).

    Returns:
        (..., H, W) float32.
    """
    x = np.asarray(x, dtype=_F)
    return _aa_axis(_aa_axis(x, int(size[1]), x.ndim - 1), int(size[0]), x.ndim - 2)


def _cubic_coeffs(t: np.ndarray) -> list[np.ndarray]:
    """torch's ``get_cubic_upsample_coefficients`` (A = -0.75), float32."""
    a = _F(-0.75)

    def conv1(x):
        return ((a + _F(2)) * x - (a + _F(3))) * x * x + _F(1)

    def conv2(x):
        return ((a * x - _F(5) * a) * x + _F(8) * a) * x - _F(4) * a

    x2 = _F(1) - t
    return [conv2(t + _F(1)), conv1(t), conv1(x2), conv2(x2 + _F(1))]


def _cubic_taps(in_size: int, out_size: int, scale_factor: float):
    scale = _F(1.0 / scale_factor)  # compute_scales_value: 1.0 / scale in double, then float
    real = scale * (np.arange(out_size, dtype=_F) + _F(0.5)) - _F(0.5)
    idx = np.minimum(np.floor(real).astype(np.int64), in_size - 1)
    t = np.clip(real - idx.astype(_F), _F(0), _F(1)).astype(_F)
    taps = [np.clip(idx - 1 + k, 0, in_size - 1) for k in range(4)]
    return taps, _cubic_coeffs(t)


def interpolate_pos_embed(pos: np.ndarray, gh: int, gw: int, native: str = "tokens") -> np.ndarray:
    """CLIP positional embedding for an ``gh x gw`` patch grid, as ``DenseEncoder._pos_embed``.

    Arguments:
        pos: (1 + n*n, D) float32 native embedding (CLS first).
        gh, gw: patch grid.
        native: when ``pos`` is returned unchanged: "tokens" (CLIP: when gh*gw == n*n) or "grid" (DINO's rule,
            ``clipsam.dense.dino``: only when gh == gw == n).

    Returns:
        (1 + gh*gw, D) float32: ``pos`` itself when gh*gw == n*n (upstream interpolates only when the token count
        differs), else the bicubic resize with scale factors ((gh+0.1)/n, (gw+0.1)/n), align_corners=False.
    """
    n = int(round(math.sqrt(pos.shape[0] - 1)))
    if (gh * gw == pos.shape[0] - 1) if native == "tokens" else (gh == gw == n):
        return pos
    grid = pos[1:].reshape(n, n, -1).astype(_F)  # (y, x, D)
    ty, cy = _cubic_taps(n, gh, (gh + 0.1) / n)
    tx, cx = _cubic_taps(n, gw, (gw + 0.1) / n)
    out = np.zeros((gh, gw, grid.shape[-1]), _F)
    for k in range(4):
        rows = grid[ty[k]]  # (gh, n, D)
        r = rows[:, tx[0]] * cx[0][None, :, None]
        for j in range(1, 4):
            r = r + rows[:, tx[j]] * cx[j][None, :, None]
        term = r * cy[k][:, None, None]
        out = term if k == 0 else out + term
    return np.concatenate([pos[:1].astype(_F), out.reshape(gh * gw, -1)], axis=0)


def linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """torch.linspace's scalar formula in float32 (first half from start, second half from end)."""
    if steps == 1:
        return np.array([start], dtype=_F)
    s, e = _F(start), _F(end)
    step = (e - s) / _F(steps - 1)
    i = np.arange(steps)
    half = steps // 2
    return np.where(i < half, s + step * i.astype(_F), e - step * (steps - 1 - i).astype(_F)).astype(_F)


@lru_cache(maxsize=32)
def _window(h: int, w: int, std: float) -> np.ndarray:
    constant = 1.0 / (std * math.sqrt(2.0))
    ks = []
    for dim in (2 * h - 1, 2 * w - 1):
        start = -(dim - 1) / 2.0
        ks.append(linspace_f32(start * constant, (start + (dim - 1)) * constant, dim))
    window = np.exp(-(ks[0][:, None] ** 2 + ks[1][None, :] ** 2)).astype(_F)
    rows = np.repeat(np.arange(h), w)
    cols = np.tile(np.arange(w), h)
    dr = rows[None, :] - rows[:, None] + h - 1
    dc = cols[None, :] - cols[:, None] + w - 1
    omega = np.zeros((h * w + 1, h * w + 1), dtype=_F)
    omega[1:, 1:] = window[dr, dc]
    omega.setflags(write=False)
    return omega


def neighbourhood_window(h: int, w: int, std: float) -> np.ndarray:
    """NACLIP's Omega for an h x w grid: (1 + h*w, 1 + h*w) float32, CLS row/column zero (read-only, cached)."""
    return _window(int(h), int(w), float(std))
