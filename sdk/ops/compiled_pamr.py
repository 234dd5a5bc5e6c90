"""Compiled CPU kernels (numba) of PAMR, equal bit for bit to the numpy references in ``pamr``.

    pamr_channels      all PAMR iterations for a block of channels      reference: ``pamr.pamr_ref``
    pamr_affinity_rows PAMR's neighbour logits from the image           reference: ``pamr._affinity_ref``

The conventions of ``compiled`` hold: ``nogil`` kernels over blocks of channels or rows (``threads.parallel_blocks``),
products accumulated in the reference's order and never fused into multiply-adds, compiled once per machine into
numba's cache.

What makes the iterations fast (each measured in ``benchmarks/bench_vocabulary.py``): a row of both channels of a
pair is finished before the next (the two channels share one load of the weights); every loop over a row is
vectorised (unsigned indices, at most one output array per channel so that LLVM's alias checks pass); and every
row the loops read or write starts on a 64-byte line, the source and output planes 2 KiB apart modulo 4 KiB, so
that no vector load splits across cache lines except the half-line shifts of the neighbours themselves, and no load
waits on an unrelated store.
"""

from __future__ import annotations

import numba
import numpy as np

from .compiled import CACHE_ON_DISK

_LANES = 16  # float32 values per 64-byte cache line (and per AVX-512 vector)

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
    """Replicate the row's first and last value into the columns before ``pad`` and after ``pad + w``."""
    r[:pad] = r[pad]
    r[pad + w :] = r[pad + w - 1]


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def _round_up(n, m):  # pragma: no cover - compiled
    return (n + m - 1) // m * m


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def _plane_pair(nc, h, wp):  # pragma: no cover - compiled
    """Two (nc, h, wp) float32 buffers in one allocation, each starting on a 64-byte boundary (a vector load from
    an unaligned row splits across two cache lines), the second 2 KiB past a multiple of 4 KiB from the first (a
    load whose address agrees with a pending store's in the low 12 bits waits for it: "4K aliasing")."""
    n = nc * h * wp
    gap = (_LANES * 32 - n % (_LANES * 64)) % (_LANES * 64)  # (n + gap) floats = 2 KiB past a multiple of 4 KiB
    buf = np.empty(2 * n + gap + _LANES, np.float32)
    s = (_LANES - (buf.ctypes.data // 4) % _LANES) % _LANES
    return buf[s : s + n].reshape((nc, h, wp)), buf[s + n + gap : s + 2 * n + gap].reshape((nc, h, wp))


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def pamr_channels(m, a, offs, c0, c1, num_iter):  # pragma: no cover - compiled; tested against the reference
    """All PAMR iterations for channels [c0, c1) of ``m``, in place.

    Each channel lives in a row-padded copy, so every neighbour row is one contiguous slice: ``pad`` columns on
    the left (the largest column offset, rounded up to whole 64-byte lines so that output rows start on one), the
    row width rounded up to whole lines (every row then starts on one too), edges replicated after every row.
    An output row is computed for two channels at once, eight neighbours per memory pass (their weights loaded
    once for both channels), accumulated in the neighbours' order from zero, as the reference's
    ``out = 0; out += a_p * shifted_p``, straight into the padded output row. Rows are clamped (replicate padding).

    Arguments:
        m: (C, H, W) float32 logits; channels [c0, c1) are replaced by the result.
        a: (P, H, W') float32 neighbour weights, W' >= W (columns past W unread; ``pamr_weights`` gives rows that
            start on 64-byte lines); offs: (P, 2) int64 (row, column) offsets.
        num_iter: iterations of M <- sum_p a_p * M shifted by offs_p.
    """
    h, w = m.shape[1], m.shape[2]
    npt = offs.shape[0]
    reach = 0
    for p in range(npt):
        reach = max(reach, abs(offs[p, 1]))
    pad = _round_up(reach, _LANES)
    nc = c1 - c0
    src, dst = _plane_pair(nc, h, _round_up(pad + w + reach, _LANES))
    for c in range(nc):
        for y in range(h):
            _pad_row(src[c, y], m[c0 + c, y], pad, w)
    spare = np.empty(src.shape[2], np.float32)  # the second output row of an odd last channel
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


def pamr_weights(npt: int, h: int, w: int) -> np.ndarray:
    """An empty (npt, h, w) float32 array for PAMR's neighbour weights whose rows all start on 64-byte lines
    where w allows (w a multiple of 16), which is what ``pamr_channels`` loads fastest."""
    n = npt * h * w
    buf = np.empty(n + _LANES, np.float32)
    s = (_LANES - (buf.ctypes.data // 4) % _LANES) % _LANES
    return buf[s : s + n].reshape(npt, h, w)
