"""Compiled CPU kernels (numba) of the hot host operations, each equal bit for bit to its numpy reference.

    pamr_channels      all PAMR iterations for a block of channels      reference: ``pamr.pamr_ref``
    bilinear_rows      bilinear resize, torch's CPU arithmetic order    reference: ``resize.resize_bilinear_ref``
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


_CACHE = _cache_on_disk()


@numba.njit(nogil=True, cache=_CACHE)
def _madd4(o, a0, s0, a1, s1, a2, s2, a3, s3, n):  # pragma: no cover - compiled
    """o += a0*s0, then += a1*s1, += a2*s2, += a3*s3 (four sequential passes in one; contiguous rows vectorise)."""
    for i in range(n):
        o[i] = (((o[i] + a0[i] * s0[i]) + a1[i] * s1[i]) + a2[i] * s2[i]) + a3[i] * s3[i]


@numba.njit(nogil=True, cache=_CACHE)
def _madd1(o, a0, s0, n):  # pragma: no cover - compiled
    for i in range(n):
        o[i] = o[i] + a0[i] * s0[i]


@numba.njit(nogil=True, cache=_CACHE)
def pamr_channels(m, a, offs, c0, c1, num_iter):  # pragma: no cover - compiled; tested against the reference
    """All PAMR iterations for channels [c0, c1) of ``m``, in place.

    Each channel lives in a row-padded copy (``pad`` = the largest column offset, edges replicated after every
    row), so every neighbour row is one contiguous slice and a row of output is 4 neighbours per memory pass,
    accumulated in the neighbours' order. Rows are clamped (replicate padding).

    Arguments:
        m: (C, H, W) float32 logits; channels [c0, c1) are replaced by the result.
        a: (P, H, W) float32 neighbour weights; offs: (P, 2) int64 (row, column) offsets of the neighbours.
        num_iter: iterations of M <- sum_p a_p * M shifted by offs_p.
    """
    h, w = m.shape[1], m.shape[2]
    npt = a.shape[0]
    pad = 0
    for p in range(npt):
        pad = max(pad, abs(offs[p, 1]))
    nc = c1 - c0
    src = np.empty((nc, h, w + 2 * pad), np.float32)
    dst = np.empty_like(src)
    for c in range(nc):
        for y in range(h):
            r = src[c, y]
            r[pad : pad + w] = m[c0 + c, y]
            r[:pad] = m[c0 + c, y, 0]
            r[pad + w :] = m[c0 + c, y, w - 1]
    acc = np.empty(w, np.float32)
    for _ in range(num_iter):
        for y in range(h):
            for c in range(nc):
                acc[:] = 0.0
                p = 0
                while p + 4 <= npt:
                    r0 = src[c, min(max(y + offs[p, 0], 0), h - 1)]
                    r1 = src[c, min(max(y + offs[p + 1, 0], 0), h - 1)]
                    r2 = src[c, min(max(y + offs[p + 2, 0], 0), h - 1)]
                    r3 = src[c, min(max(y + offs[p + 3, 0], 0), h - 1)]
                    d0, d1 = pad + offs[p, 1], pad + offs[p + 1, 1]
                    d2, d3 = pad + offs[p + 2, 1], pad + offs[p + 3, 1]
                    _madd4(
                        acc,
                        a[p, y],
                        r0[d0 : d0 + w],
                        a[p + 1, y],
                        r1[d1 : d1 + w],
                        a[p + 2, y],
                        r2[d2 : d2 + w],
                        a[p + 3, y],
                        r3[d3 : d3 + w],
                        w,
                    )
                    p += 4
                while p < npt:
                    r0 = src[c, min(max(y + offs[p, 0], 0), h - 1)]
                    d0 = pad + offs[p, 1]
                    _madd1(acc, a[p, y], r0[d0 : d0 + w], w)
                    p += 1
                r = dst[c, y]
                r[pad : pad + w] = acc
                r[:pad] = acc[0]
                r[pad + w :] = acc[w - 1]
        src, dst = dst, src
    for c in range(nc):
        m[c0 + c] = src[c, :, pad : pad + w]


@numba.njit(nogil=True, cache=_CACHE)
def _blend_rows(o, ra, a, rb, b, n):  # pragma: no cover - compiled
    for x in range(n):
        o[x] = ra[x] * a + rb[x] * b


@numba.njit(nogil=True, cache=_CACHE)
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
    lo, hi = y0[r0], y1[r0]
    for r in range(r0, r0 + nr):
        lo = min(lo, y0[r], y1[r])
        hi = max(hi, y0[r], y1[r])
    rows = np.empty((hi - lo + 1, ow), np.float32)
    for c in range(c0, c1):
        for y in range(lo, hi + 1):
            s = src[c, y]
            rr = rows[y - lo]
            for x in range(ow):
                rr[x] = s[x0[x]] * wx0[x] + s[x1[x]] * wx1[x]
        for r in range(nr):
            _blend_rows(out[c, r], rows[y0[r0 + r] - lo], wy0[r0 + r], rows[y1[r0 + r] - lo], wy1[r0 + r], ow)


@numba.njit(nogil=True, cache=_CACHE)
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
