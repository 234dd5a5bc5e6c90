"""Compiled CPU kernels (numba) of the hot host operations, each equal bit for bit to its numpy reference.

    bilinear_rows      bilinear resize, torch's CPU arithmetic order    reference: ``resize.resize_bilinear_ref``
    bilinear_add_rows  the same resize added into a block of an array   reference: ``dst += resize_bilinear_ref``
    path_valid_rows    SFR's straight-path check between patches        reference: ``sfr.path_valid_ref``

Every kernel releases the GIL (``nogil``) and works on a block of rows or channels, so ``threads.parallel_blocks``
runs blocks on the host threads and several application threads may call them at once. Products are accumulated
in the reference's order and never fused into multiply-adds (no ``fastmath``; LLVM does not contract float
operations without it), which is what keeps the results equal. The first call in a process compiles them, or
loads them from numba's on-disk cache (``NUMBA_CACHE_DIR``, else ``__pycache__`` beside this file or the user's
cache folder). This module is imported only when a kernel runs, so ``import clipsam`` does not load numba.
"""

from __future__ import annotations

import warnings

import numba
import numpy as np


def _cache_on_disk() -> bool:
    """Whether numba can keep the compiled kernels on disk here (``NUMBA_CACHE_DIR``, beside this file, or the user's
    cache folder); where none is writable they compile once per process, with one warning."""

    def probe():  # pragma: no cover - compiled only if called
        return 0

    try:
        numba.njit(cache=True)(probe)
        return True
    except RuntimeError as e:  # "cannot cache function ...: no locator available"
        warnings.warn(
            f"clipsam: numba cannot cache the CPU kernels on disk ({e}); they compile in every process (seconds). "
            "Set NUMBA_CACHE_DIR to a writable folder.",
            RuntimeWarning,
            stacklevel=2,
        )
        return False


CACHE_ON_DISK = _cache_on_disk()


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def _source_rows(y0, y1, r0, nr):  # pragma: no cover - compiled
    """(lo, hi): the first and last source row that output rows [r0, r0 + nr) read (nr >= 1)."""
    lo, hi = y0[r0], y1[r0]
    for r in range(r0, r0 + nr):
        lo = min(lo, y0[r], y1[r])
        hi = max(hi, y0[r], y1[r])
    return lo, hi


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def _resample_width(s, x0, x1, wx0, wx1, rr):  # pragma: no cover - compiled
    """rr[x] = s[x0[x]] * wx0[x] + s[x1[x]] * wx1[x]: one source row resampled along the width."""
    for x in range(x0.shape[0]):
        rr[x] = s[x0[x]] * wx0[x] + s[x1[x]] * wx1[x]


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def _blend_rows(o, ra, a, rb, b, n):  # pragma: no cover - compiled
    for x in range(n):
        o[x] = ra[x] * a + rb[x] * b


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def bilinear_rows(src, y0, y1, wy0, wy1, x0, x1, wx0, wx1, out, c0, c1, r0):  # pragma: no cover - compiled
    """Output rows ``r0 .. r0 + out.shape[1]`` of channels [c0, c1) of a bilinear resize.

    Each source row the strip reads is resampled along the width once (``a*wx0 + b*wx1``), then every output
    row blends two of them (``ra*wy0 + rb*wy1``): the arithmetic and order of torch's CPU kernel.

    Arguments:
        src: (C, h, w) float32; y0, y1, wy0, wy1: source rows and weights of every output row; x0, x1, wx0, wx1:
            the same for columns (``resize`` taps).
        out: (C, R, W) float32, written.
    """
    ow = x0.shape[0]
    nr = out.shape[1]
    if nr == 0:
        return
    lo, hi = _source_rows(y0, y1, r0, nr)
    rows = np.empty((hi - lo + 1, ow), np.float32)
    for c in range(c0, c1):
        for y in range(lo, hi + 1):
            _resample_width(src[c, y], x0, x1, wx0, wx1, rows[y - lo])
        for r in range(nr):
            _blend_rows(out[c, r], rows[y0[r0 + r] - lo], wy0[r0 + r], rows[y1[r0 + r] - lo], wy1[r0 + r], ow)


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def _blend_add_rows(o, ra, a, rb, b, n):  # pragma: no cover - compiled
    for x in range(n):
        v = ra[x] * a + rb[x] * b
        o[x] = o[x] + v


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def bilinear_add_rows(src, y0, y1, wy0, wy1, x0, x1, wx0, wx1, dst, oy, ox, c0, c1):  # pragma: no cover - compiled
    """``bilinear_rows``'s values added into a block of ``dst``: dst[c, oy + r, ox + x] += the resized value at
    output row r and column x, for every r < len(y0), x < len(x0) and channel c in [c0, c1). The taps are those of
    the output rows and columns wanted (a crop of a resize is its taps' slice); every value is rounded as
    ``bilinear_rows`` rounds it before the one addition, as ``dst[...] += resize(...)`` does.

    Arguments:
        src: (C, h, w) float32; y0, y1, wy0, wy1: (R,) source rows and weights; x0, x1, wx0, wx1: (X,) columns.
        dst: (C, H, W) float32, rows [oy, oy + R) and columns [ox, ox + X) of channels [c0, c1) updated.
    """
    ow = x0.shape[0]
    nr = y0.shape[0]
    if nr == 0 or ow == 0:
        return
    lo, hi = _source_rows(y0, y1, 0, nr)
    rows = np.empty((hi - lo + 1, ow), np.float32)
    for c in range(c0, c1):
        for y in range(lo, hi + 1):
            _resample_width(src[c, y], x0, x1, wx0, wx1, rows[y - lo])
        for r in range(nr):
            _blend_add_rows(dst[c, oy + r, ox : ox + ow], rows[y0[r] - lo], wy0[r], rows[y1[r] - lo], wy1[r], ow)


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def path_valid_rows(flat, w, t, full, out, a0, a1):  # pragma: no cover - compiled; tested against the reference
    """Rows [a0, a1) of SFR's path check on an h x w grid of N = h * w patches.

    out[i, j] is whether every sample of the straight path from patch i to patch j has label flat[i]; the k-th
    sample (k = 0 .. d_ij, d_ij the Chebyshev distance) is round(p_i * (1 - t_k) + p_j * t_k) in float32, half to
    even.

    Arguments:
        flat: (N,) int64 labels; w: grid width.
        t: (D + 1,) float32 torch.linspace(0, 1, D + 1), the prefix mode's t_k.
        full: take t_k = min(k / d_ij, 1) (the whole segment) instead of ``t``.
        out: (N, N) bool, rows [a0, a1) written.
    """
    n = flat.shape[0]
    one = np.float32(1.0)
    for i in range(a0, a1):
        ri = np.float32(i // w)
        ci = np.float32(i % w)
        li = flat[i]
        for j in range(n):
            rj = np.float32(j // w)
            cj = np.float32(j % w)
            d = max(abs(i // w - j // w), abs(i % w - j % w))
            ok = True
            for k in range(d + 1):
                if full:
                    tk = min(np.float32(k) / np.float32(max(d, 1)), one)
                else:
                    tk = t[k]
                u = one - tk
                r = np.int64(np.rint(ri * u + rj * tk))
                c = np.int64(np.rint(ci * u + cj * tk))
                if flat[r * w + c] != li:
                    ok = False
                    break
            out[i, j] = ok
