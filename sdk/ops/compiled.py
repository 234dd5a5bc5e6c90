"""Compiled CPU kernels (numba) of the hot host operations, each equal bit for bit to its numpy reference.

    pamr_channels      all PAMR iterations for a block of channels      reference: ``pamr.pamr_ref``
    pamr_affinity_rows PAMR's neighbour logits from the image           reference: ``pamr._affinity_ref``
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


_U = np.uint64


def _eight_neighbours(from_zero: bool):
    """The kernel that adds eight neighbours' products to an output row pair (``from_zero``: to zero instead of to
    what the row holds, for the first eight; a compile-time constant, so each variant has one branch-free loop)."""

    @numba.njit(nogil=True, boundscheck=False, cache=CACHE_ON_DISK)
    def madd8x2(o, q, a, y, g, sc, sd, rows, cols, w, base):  # pragma: no cover - compiled
        """o[base:][:w] = (0 or o) + a[g, y] * sc[rows[g], cols[g]:][:w], then + the same for g + 1 .. g + 7, each
        sum in that order; q the same with sd: two channels share one load of the eight neighbour weights, and
        each output row is read and written once per eight neighbours. Every index is unsigned, so numba emits no
        negative-index wrap-around and LLVM vectorises the loop over the row (a signed ``k + i`` index would compile
        to a scalar select per element). ``o`` is read and written through the same array, which LLVM's alias
        checks let through (a separate input array that is the same memory would make them fall back to scalars)."""
        y, g, base = _U(y), _U(g), _U(base)
        g1, g2, g3, g4, g5, g6, g7 = g + _U(1), g + _U(2), g + _U(3), g + _U(4), g + _U(5), g + _U(6), g + _U(7)
        r0, r1, r2, r3 = _U(rows[g]), _U(rows[g1]), _U(rows[g2]), _U(rows[g3])
        r4, r5, r6, r7 = _U(rows[g4]), _U(rows[g5]), _U(rows[g6]), _U(rows[g7])
        k0, k1, k2, k3 = _U(cols[g]), _U(cols[g1]), _U(cols[g2]), _U(cols[g3])
        k4, k5, k6, k7 = _U(cols[g4]), _U(cols[g5]), _U(cols[g6]), _U(cols[g7])
        zero = np.float32(0.0)
        for i in range(_U(w)):
            if from_zero:  # the reference's out = 0; out += a_p * shifted_p: 0 + the first product
                x, z = zero, zero
            else:
                x, z = o[base + i], q[base + i]
            b = a[g, y, i]
            x, z = x + b * sc[r0, k0 + i], z + b * sd[r0, k0 + i]
            b = a[g1, y, i]
            x, z = x + b * sc[r1, k1 + i], z + b * sd[r1, k1 + i]
            b = a[g2, y, i]
            x, z = x + b * sc[r2, k2 + i], z + b * sd[r2, k2 + i]
            b = a[g3, y, i]
            x, z = x + b * sc[r3, k3 + i], z + b * sd[r3, k3 + i]
            b = a[g4, y, i]
            x, z = x + b * sc[r4, k4 + i], z + b * sd[r4, k4 + i]
            b = a[g5, y, i]
            x, z = x + b * sc[r5, k5 + i], z + b * sd[r5, k5 + i]
            b = a[g6, y, i]
            x, z = x + b * sc[r6, k6 + i], z + b * sd[r6, k6 + i]
            b = a[g7, y, i]
            o[base + i], q[base + i] = x + b * sc[r7, k7 + i], z + b * sd[r7, k7 + i]

    return madd8x2


_mset8x2 = _eight_neighbours(True)
_madd8x2 = _eight_neighbours(False)


@numba.njit(nogil=True, boundscheck=False, cache=CACHE_ON_DISK)
def _madd1x2(o, q, a, y, p, sc, sd, r, k, w, base):  # pragma: no cover - compiled
    """o[base:][:w] += a[p, y] * sc[r, k:][:w] and the same for q with sd (``_madd8x2``'s conventions)."""
    y, p, r, k, base = _U(y), _U(p), _U(r), _U(k), _U(base)
    for i in range(_U(w)):
        b = a[p, y, i]
        o[base + i], q[base + i] = o[base + i] + b * sc[r, k + i], q[base + i] + b * sd[r, k + i]


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def _pad_row(r, acc, pad, w):  # pragma: no cover - compiled
    r[pad : pad + w] = acc
    _pad_edges(r, pad, w)


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def _pad_edges(r, pad, w):  # pragma: no cover - compiled
    r[:pad] = r[pad]
    r[pad + w :] = r[pad + w - 1]


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def pamr_channels(m, a, offs, c0, c1, num_iter):  # pragma: no cover - compiled; tested against the reference
    """All PAMR iterations for channels [c0, c1) of ``m``, in place.

    Each channel lives in a row-padded copy (``pad`` = the largest column offset, edges replicated after every
    row), so every neighbour row is one contiguous slice. An output row is computed for two channels at once, eight
    neighbours per memory pass (their weights loaded once for both channels), accumulated in the neighbours' order
    from zero, as the reference's ``out = 0; out += a_p * shifted_p``, straight into the padded output row. Rows are
    clamped (replicate padding).

    Arguments:
        m: (C, H, W) float32 logits; channels [c0, c1) are replaced by the result.
        a: (P, H, W) float32 neighbour weights; offs: (P, 2) int64 (row, column) offsets.
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
            _pad_row(src[c, y], m[c0 + c, y], pad, w)
    spare = np.empty(w + 2 * pad, np.float32)  # the second output row of an odd last channel
    rows = np.empty(npt, np.int64)
    cols = np.empty(npt, np.int64)
    for _ in range(num_iter):
        for y in range(h):
            for p in range(npt):
                rows[p] = min(max(y + offs[p, 0], 0), h - 1)
                cols[p] = pad + offs[p, 1]
            for c in range(0, nc, 2):
                d = min(c + 1, nc - 1)  # an odd last channel is computed twice (same numbers), written once
                sc, sd = src[c], src[d]
                o = dst[c, y]
                q = dst[d, y] if d != c else spare
                if npt < 8:
                    o[:] = 0.0
                    q[:] = 0.0
                for g in range(0, npt - npt % 8, 8):
                    if g == 0:
                        _mset8x2(o, q, a, y, g, sc, sd, rows, cols, w, pad)
                    else:
                        _madd8x2(o, q, a, y, g, sc, sd, rows, cols, w, pad)
                for p in range(npt - npt % 8, npt):  # a tail of fewer than eight neighbours, one at a time
                    _madd1x2(o, q, a, y, p, sc, sd, rows[p], cols[p], w, pad)
                _pad_edges(o, pad, w)
                _pad_edges(q, pad, w)
        src, dst = dst, src
    for c in range(nc):
        m[c0 + c] = src[c, :, pad : pad + w]


@numba.njit(nogil=True, cache=CACHE_ON_DISK, error_model="numpy")
def pamr_affinity_rows(image, offs, out, r0, r1):  # pragma: no cover - compiled; tested against the reference
    """PAMR's neighbour logits for rows [r0, r1): out[p, y, x] = mean over the K channels of
    -|I(y, x) - I(neighbour p)| / (1e-8 + 0.1 * sigma), sigma the unbiased std of the channel's 9 samples per
    dilation (the four neighbours before the centre, the centre, the other four; neighbours clamped to the image),
    every sum sequential in the reference's order (``pamr._affinity_ref``, before its softmax).

    Arguments:
        image: (K, H, W) float32; offs: (P, 2) int64 (row, column) offsets, eight per dilation in
            ``NEIGHBOUR_OFFSETS`` order; out: (P, H, W) float32.
    """
    k_n, h, w = image.shape
    npt = offs.shape[0]
    ns = npt + npt // 8  # samples: each dilation's eight neighbours and the centre
    vals = np.empty((k_n, ns), np.float32)
    nb = np.empty((k_n, npt), np.float32)
    denom = np.empty(k_n, np.float32)
    for y in range(r0, r1):
        for x in range(w):
            for k in range(k_n):
                c = image[k, y, x]
                for p in range(npt):
                    yy = min(max(y + offs[p, 0], 0), h - 1)
                    xx = min(max(x + offs[p, 1], 0), w - 1)
                    nb[k, p] = image[k, yy, xx]
                for g in range(npt // 8):  # per dilation: neighbours 0-3, the centre, neighbours 4-7
                    for t in range(4):
                        vals[k, 9 * g + t] = nb[k, 8 * g + t]
                    vals[k, 9 * g + 4] = c
                    for t in range(4, 8):
                        vals[k, 9 * g + t + 1] = nb[k, 8 * g + t]
                total = vals[k, 0]
                for i in range(1, ns):
                    total = total + vals[k, i]
                mean = total / np.float32(ns)
                d0 = vals[k, 0] - mean
                sq = d0 * d0
                for i in range(1, ns):
                    di = vals[k, i] - mean
                    sq = sq + di * di
                std = np.sqrt(sq / np.float32(ns - 1))
                denom[k] = np.float32(1e-8) + np.float32(0.1) * std
            for p in range(npt):
                acc = -abs(image[0, y, x] - nb[0, p]) / denom[0]
                for k in range(1, k_n):
                    acc = acc + -abs(image[k, y, x] - nb[k, p]) / denom[k]
                out[p, y, x] = acc / np.float32(k_n)


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
