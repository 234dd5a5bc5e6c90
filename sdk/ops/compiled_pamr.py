"""Compiled CPU kernels (numba) of PAMR, equal bit for bit to the numpy references in ``pamr``.

    pamr_channels      all PAMR iterations for a block of channels      reference: ``pamr.pamr_ref``
    pamr_wavefront     the same for dilations (8, 16), all iterations in one pass over the rows
    pamr_affinity_rows PAMR's neighbour logits from the image           reference: ``pamr._affinity_ref``
    pamr_weights       the neighbour weights laid out as the iterations read them

The conventions of ``compiled`` hold: ``nogil`` kernels over blocks of channels or rows (``threads.parallel_blocks``),
products accumulated in the reference's order and never fused into multiply-adds, compiled once per machine into
numba's cache. Each iteration is one sweep of ``compiled_pamr_sweeps`` over the block's row-padded planes (why they
are laid out as they are is said there).
"""

from __future__ import annotations

import numba
import numpy as np

from .compiled import CACHE_ON_DISK
from .compiled_pamr_sweeps import (
    dilations_8_16,
    is_d8_d16,
    madd1x2,
    madd8x2,
    mset8x2,
    pad_edges,
    row_8_16,
    row_of,
    sixteen_neighbours,
)

_LANES = 16  # float32 values per 64-byte cache line (and per AVX-512 vector)
_PASS_ITERATIONS = 16  # pamr_wavefront: iterations per pass over the rows (rings of 17 x 33 rows per channel at most)


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def _pad_row(r, acc, pad, w):  # pragma: no cover - compiled
    r[pad : pad + w] = acc
    pad_edges(r, pad, w)


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def _round_up(n, m):  # pragma: no cover - compiled
    return (n + m - 1) // m * m


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def _aligned(n):  # pragma: no cover - compiled
    """A new (n,) float32 array starting on a 64-byte line (a vector load from an unaligned row splits across two
    cache lines)."""
    buf = np.empty(n + _LANES, np.float32)
    s = (_LANES - (buf.ctypes.data // 4) % _LANES) % _LANES
    return buf[s : s + n]


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def _plane_pair(nc, h, wp):  # pragma: no cover - compiled
    """Two (nc, h, wp) float32 buffers in one allocation, each starting on a 64-byte boundary (a vector load from
    an unaligned row splits across two cache lines), the second 2 KiB past a multiple of 4 KiB from the first (a
    load whose address agrees with a pending store's in the low 12 bits waits for it: "4K aliasing")."""
    n = nc * h * wp
    gap = (_LANES * 32 - n % (_LANES * 64)) % (_LANES * 64)  # (n + gap) floats = 2 KiB past a multiple of 4 KiB
    buf = _aligned(2 * n + gap)
    return buf[:n].reshape((nc, h, wp)), buf[n + gap :].reshape((nc, h, wp))


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def pamr_channels(m, a, offs, c0, c1, num_iter, single):  # pragma: no cover - compiled; tested against the reference
    """All PAMR iterations for channels [c0, c1) of ``m``, in place.

    Each channel lives in a row-padded copy, so every neighbour row is one contiguous slice: ``pad`` columns on
    the left (the largest column offset, rounded up to whole 64-byte lines so that output rows start on one), the
    row width rounded up to whole lines (every row then starts on one too), edges replicated after every row.
    Every value is accumulated in the neighbours' order from zero, as the reference's
    ``out = 0; out += a_p * shifted_p``, straight into the padded output row. Rows are clamped (replicate
    padding). Channels go in pairs (an odd last channel is paired with a copy of itself), the two sharing each load
    of the weights, or, where ``single`` is set and the dilations are the methods' default (8, 16), one at a time.
    One at a time, one call sweeps all rows of all channels with the offsets as constants (``dilations_8_16``);
    in pairs, 16 neighbours take one such sweep with run-time offsets (``sixteen_neighbours``), and other counts
    eight neighbours per call and row, then single ones.

    Arguments:
        m: (C, H, W) float32 logits; channels [c0, c1) are replaced by the result.
        a: (H, P, W') float32 neighbour weights, row-major (the P rows of an output row are adjacent), W' >= W
            (columns past W unread; ``pamr_weights`` gives rows on 64-byte lines); offs: (P, 2) int64 (row, column)
            offsets.
        num_iter: iterations of M <- sum_p a_p * M shifted by offs_p.
        single: one channel at a time instead of pairs (dilations (8, 16) only; others always go in pairs).
    """
    h, w = m.shape[1], m.shape[2]
    npt = offs.shape[0]
    reach = 0
    for p in range(npt):
        reach = max(reach, abs(offs[p, 1]))
    pad = _round_up(reach, _LANES)
    nc = c1 - c0
    single = single and is_d8_d16(offs)
    planes = nc if single else nc + nc % 2  # the pair kernels pair an odd last channel with a copy of itself
    src, dst = _plane_pair(planes, h, _round_up(pad + w + reach, _LANES))
    for c in range(planes):
        for y in range(h):
            _pad_row(src[c, y], m[c0 + min(c, nc - 1), y], pad, w)
    rows = np.empty(npt, np.int64)
    cols = np.empty(npt, np.int64)
    for _ in range(num_iter):
        if single:
            dilations_8_16(dst, src, a, nc, w, pad)
        elif npt == 16:
            sixteen_neighbours(dst, src, a, offs, w, pad)
        else:
            for y in range(h):
                for p in range(npt):
                    rows[p] = min(max(y + offs[p, 0], 0), h - 1)
                    cols[p] = pad + offs[p, 1]
                for c in range(0, nc, 2):
                    sc, sd, o, q = src[c], src[c + 1], dst[c, y], dst[c + 1, y]
                    if npt < 8:
                        o[:] = 0.0
                        q[:] = 0.0
                    for g in range(0, npt - npt % 8, 8):
                        if g == 0:
                            mset8x2(o, q, a, y, g, sc, sd, rows, cols, w, pad)
                        else:
                            madd8x2(o, q, a, y, g, sc, sd, rows, cols, w, pad)
                    for p in range(npt - npt % 8, npt):  # a tail of fewer than eight neighbours, one at a time
                        madd1x2(o, q, a, y, p, sc, sd, rows[p], cols[p], w, pad)
                    pad_edges(o, pad, w)
                    pad_edges(q, pad, w)
        src, dst = dst, src
    for c in range(nc):
        m[c0 + c] = src[c, :, pad : pad + w]


@numba.njit(nogil=True, boundscheck=False, cache=CACHE_ON_DISK)
def pamr_wavefront(m, a, c0, c1, num_iter):  # pragma: no cover - compiled; tested against the reference
    """``pamr_channels`` for dilations (8, 16), all iterations in one pass over the rows: the same sums.

    An iteration's row y needs the previous iteration's rows y - 16 .. y + 16 only, so iteration k can follow
    iteration k - 1 sixteen rows behind it: step s pads input row s, then computes row s - 16k of every iteration k
    (``row_8_16``, one channel at a time), the last iteration's rows going straight back into ``m``. Each
    iteration keeps a ring of its last 33 rows per channel (fewer for shorter planes), so a block's working set is
    (num_iter + 1) x 33 padded rows per channel plus the 16 weight rows of the ~16 x num_iter rows in flight (more
    than ``_PASS_ITERATIONS`` iterations go in passes of that many, so the rings stay bounded), where
    ``pamr_channels`` needs two whole planes per channel and reads all the weights once per iteration: where those
    stream from memory (336 x 448 on a 2-vCPU Zen 3 VM) this runs 2x-2.3x its multiply-adds per second; where they
    stay in cache, the sweeps are as fast or faster (``pamr._layout_for`` times the two).

    Arguments:
        m: (C, H, W) float32 logits; channels [c0, c1) are replaced by the result.
        a: (H, 16, W') float32 weights as ``pamr_weights`` lays them out; num_iter >= 1.
    """
    h, w = m.shape[1], m.shape[2]
    nc, ring, levels = c1 - c0, min(33, h), max(1, min(num_iter, _PASS_ITERATIONS))
    pad = _LANES  # >= 16, the reach of dilation 16, on whole 64-byte lines
    wp = _round_up(pad + w + 16, _LANES)
    # rows[k]: iteration k's last rows (0: input), each on a 64-byte line
    rows = _aligned((levels + 1) * nc * ring * wp).reshape((levels + 1, nc, ring, wp))
    base, left = np.uint64(pad), pad - 16
    for done in range(0, num_iter, levels):  # a pass of at most _PASS_ITERATIONS iterations, m to m
        last = min(levels, num_iter - done)
        for s in range(h + 16 * last):
            if s < h:  # row s of m is read before row s - 16 * last is written back
                for c in range(nc):
                    _pad_row(rows[0, c, s % ring], m[c0 + c, s], pad, w)
            for k in range(1, min(last, s // 16) + 1):
                y = s - 16 * k
                if y >= h:
                    continue
                yy, u16, u8 = np.uint64(y), row_of(y, -16, h) % ring, row_of(y, -8, h) % ring
                m0, d8, d16 = y % ring, row_of(y, 8, h) % ring, row_of(y, 16, h) % ring
                for c in range(nc):
                    src, o = rows[k - 1, c], rows[k, c, y % ring]
                    row_8_16(
                        o,
                        a,
                        yy,
                        src[u16, left:],
                        src[u8, left:],
                        src[m0, left:],
                        src[d8, left:],
                        src[d16, left:],
                        w,
                        base,
                    )
                    if k == last:
                        m[c0 + c, y] = o[pad : pad + w]
                    else:
                        pad_edges(o, pad, w)


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


def pamr_weights(a: np.ndarray) -> np.ndarray:
    """(P, H, W) neighbour weights -> the same values as ``pamr_channels`` reads them fastest: (H, P, W')
    row-major (an output row's P weight rows adjacent), W' = W rounded up to whole 64-byte lines, the first on one
    (so every row starts on one); columns past W are zero."""
    npt, h, w = a.shape
    wl = -(-w // _LANES) * _LANES
    n = h * npt * wl
    buf = np.empty(n + _LANES, np.float32)  # ``_aligned``'s arithmetic on an array numpy allocates, as before
    s = (_LANES - (buf.ctypes.data // 4) % _LANES) % _LANES
    out = buf[s : s + n].reshape(h, npt, wl)
    out[:, :, w:] = 0.0
    out[:, :, :w] = a.transpose(1, 0, 2)
    return out
