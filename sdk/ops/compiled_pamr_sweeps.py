"""One PAMR iteration over a block of row-padded planes: the compiled sweep kernels behind ``compiled_pamr``.

    sixteen_neighbours   16 neighbours at run-time offsets, channel pairs       (any two dilations)
    dilations_8_16       dilations (8, 16), offsets as constants, one channel at a time
    row_8_16             one output row of dilations (8, 16) (also the row of ``compiled_pamr.pamr_wavefront``)
    mset8x2, madd8x2, madd1x2   eight or one neighbour(s) for one row of a pair  (other neighbour counts)

Each writes ``dst`` from ``src`` (both (C, H, W') planes of ``compiled_pamr._plane_pair``, ``pad`` replicated
columns on each side of every row) with the weights ``a`` as ``compiled_pamr.pamr_weights`` lays them out; every
value is 0 + a_0 * n_0 + a_1 * n_1 + ... in the neighbours' order, products never fused into multiply-adds, rows
clamped at the plane's edges. What makes them fast (``benchmarks/RESULTS.md``, "Fifth session" and "Tenth session"):
a row of both channels of a pair is finished before the next (the two share one load of the weights); every loop
over a row is vectorised (unsigned indices, at most one output array per channel so that LLVM's alias checks pass);
one call sweeps all rows (a call per row and per eight neighbours cost ~70 ns each); an output row's 16 weight rows
are one contiguous block; every row starts on a 64-byte line, and the source and output planes lie 2 KiB apart
modulo 4 KiB, so that no vector load splits across cache lines except the half-line shifts of the neighbours
themselves, and no load waits on an unrelated store. For the methods' default dilations (8, 16) the offsets are
constants in the code: every neighbour of a source row is then one pointer plus a fixed displacement, and one
channel at a time beats the pair kernel, whose run-time offsets keep more pointers live than AVX2's 16 registers
hold (1.24x-1.34x at 224 x 224 on a Zen 3 VM).
"""

from __future__ import annotations

import numba
import numpy as np

from .compiled import CACHE_ON_DISK

_U = np.uint64


def _eight_neighbours(from_zero: bool):
    """The kernel that adds eight neighbours' products to an output row pair (``from_zero``: to zero instead of to
    what the row holds, for the first eight; a compile-time constant, so each variant has one branch-free loop)."""

    @numba.njit(nogil=True, boundscheck=False, cache=CACHE_ON_DISK)
    def madd8x2(o, q, a, y, g, sc, sd, rows, cols, w, base):  # pragma: no cover - compiled
        """o[base:][:w] = (0 or o) + a[y, g] * sc[rows[g], cols[g]:][:w], then + the same for g + 1 .. g + 7, each
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
            b = a[y, g, i]
            x, z = x + b * sc[r0, k0 + i], z + b * sd[r0, k0 + i]
            b = a[y, g1, i]
            x, z = x + b * sc[r1, k1 + i], z + b * sd[r1, k1 + i]
            b = a[y, g2, i]
            x, z = x + b * sc[r2, k2 + i], z + b * sd[r2, k2 + i]
            b = a[y, g3, i]
            x, z = x + b * sc[r3, k3 + i], z + b * sd[r3, k3 + i]
            b = a[y, g4, i]
            x, z = x + b * sc[r4, k4 + i], z + b * sd[r4, k4 + i]
            b = a[y, g5, i]
            x, z = x + b * sc[r5, k5 + i], z + b * sd[r5, k5 + i]
            b = a[y, g6, i]
            x, z = x + b * sc[r6, k6 + i], z + b * sd[r6, k6 + i]
            b = a[y, g7, i]
            o[base + i], q[base + i] = x + b * sc[r7, k7 + i], z + b * sd[r7, k7 + i]

    return madd8x2


mset8x2 = _eight_neighbours(True)
madd8x2 = _eight_neighbours(False)


@numba.njit(nogil=True, boundscheck=False, cache=CACHE_ON_DISK)
def madd1x2(o, q, a, y, p, sc, sd, r, k, w, base):  # pragma: no cover - compiled
    """o[base:][:w] += a[y, p] * sc[r, k:][:w] and the same for q with sd (``madd8x2``'s conventions)."""
    y, p, r, k, base = _U(y), _U(p), _U(r), _U(k), _U(base)
    for i in range(_U(w)):
        b = a[y, p, i]
        o[base + i], q[base + i] = o[base + i] + b * sc[r, k + i], q[base + i] + b * sd[r, k + i]


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def row_of(y, dy, h):  # pragma: no cover - compiled
    """The source row of output row y for a row offset dy, clamped to the plane (replicate padding), unsigned."""
    return _U(min(max(y + dy, 0), h - 1))


@numba.njit(nogil=True, boundscheck=False, cache=CACHE_ON_DISK)
def sixteen_neighbours(dst, src, a, offs, w, pad):  # pragma: no cover - compiled
    """One iteration of every channel pair (0, 1), (2, 3), ... of the planes, exactly 16 neighbours: each value
    0 + a_0 * n_0 + a_1 * n_1 + ... + a_15 * n_15 in that order (the reference's), edges replicated after every
    row. The loop over the rows runs here, each output row of all the pairs in turn (the row's weights, one
    contiguous block, stay in cache for them all), and each row is written once: a row costs no call and no
    second pass (``madd8x2`` per eight neighbours otherwise); conventions as ``madd8x2``'s."""
    h = src.shape[1]
    base = _U(pad)
    zero = np.float32(0.0)
    g0, g1, g2, g3, g4, g5, g6, g7 = _U(0), _U(1), _U(2), _U(3), _U(4), _U(5), _U(6), _U(7)
    g8, g9, g10, g11, g12, g13, g14, g15 = _U(8), _U(9), _U(10), _U(11), _U(12), _U(13), _U(14), _U(15)
    k0, k1, k2, k3 = _U(pad + offs[0, 1]), _U(pad + offs[1, 1]), _U(pad + offs[2, 1]), _U(pad + offs[3, 1])
    k4, k5, k6, k7 = _U(pad + offs[4, 1]), _U(pad + offs[5, 1]), _U(pad + offs[6, 1]), _U(pad + offs[7, 1])
    k8, k9, k10, k11 = _U(pad + offs[8, 1]), _U(pad + offs[9, 1]), _U(pad + offs[10, 1]), _U(pad + offs[11, 1])
    k12, k13, k14 = _U(pad + offs[12, 1]), _U(pad + offs[13, 1]), _U(pad + offs[14, 1])
    k15 = _U(pad + offs[15, 1])
    for y in range(h):
        yy = _U(y)
        r0, r1, r2 = row_of(y, offs[0, 0], h), row_of(y, offs[1, 0], h), row_of(y, offs[2, 0], h)
        r3, r4, r5 = row_of(y, offs[3, 0], h), row_of(y, offs[4, 0], h), row_of(y, offs[5, 0], h)
        r6, r7, r8 = row_of(y, offs[6, 0], h), row_of(y, offs[7, 0], h), row_of(y, offs[8, 0], h)
        r9, r10, r11 = row_of(y, offs[9, 0], h), row_of(y, offs[10, 0], h), row_of(y, offs[11, 0], h)
        r12, r13, r14 = row_of(y, offs[12, 0], h), row_of(y, offs[13, 0], h), row_of(y, offs[14, 0], h)
        r15 = row_of(y, offs[15, 0], h)
        for c in range(0, src.shape[0], 2):
            sc, sd, o, q = src[c], src[c + 1], dst[c, y], dst[c + 1, y]
            for i in range(_U(w)):
                b = a[yy, g0, i]
                x, z = zero + b * sc[r0, k0 + i], zero + b * sd[r0, k0 + i]
                b = a[yy, g1, i]
                x, z = x + b * sc[r1, k1 + i], z + b * sd[r1, k1 + i]
                b = a[yy, g2, i]
                x, z = x + b * sc[r2, k2 + i], z + b * sd[r2, k2 + i]
                b = a[yy, g3, i]
                x, z = x + b * sc[r3, k3 + i], z + b * sd[r3, k3 + i]
                b = a[yy, g4, i]
                x, z = x + b * sc[r4, k4 + i], z + b * sd[r4, k4 + i]
                b = a[yy, g5, i]
                x, z = x + b * sc[r5, k5 + i], z + b * sd[r5, k5 + i]
                b = a[yy, g6, i]
                x, z = x + b * sc[r6, k6 + i], z + b * sd[r6, k6 + i]
                b = a[yy, g7, i]
                x, z = x + b * sc[r7, k7 + i], z + b * sd[r7, k7 + i]
                b = a[yy, g8, i]
                x, z = x + b * sc[r8, k8 + i], z + b * sd[r8, k8 + i]
                b = a[yy, g9, i]
                x, z = x + b * sc[r9, k9 + i], z + b * sd[r9, k9 + i]
                b = a[yy, g10, i]
                x, z = x + b * sc[r10, k10 + i], z + b * sd[r10, k10 + i]
                b = a[yy, g11, i]
                x, z = x + b * sc[r11, k11 + i], z + b * sd[r11, k11 + i]
                b = a[yy, g12, i]
                x, z = x + b * sc[r12, k12 + i], z + b * sd[r12, k12 + i]
                b = a[yy, g13, i]
                x, z = x + b * sc[r13, k13 + i], z + b * sd[r13, k13 + i]
                b = a[yy, g14, i]
                x, z = x + b * sc[r14, k14 + i], z + b * sd[r14, k14 + i]
                b = a[yy, g15, i]
                o[base + i], q[base + i] = x + b * sc[r15, k15 + i], z + b * sd[r15, k15 + i]
            pad_edges(o, pad, w)
            pad_edges(q, pad, w)


# The neighbours of the methods' default dilations (8, 16) in the weights' order (``pamr.NEIGHBOUR_OFFSETS`` per
# dilation): what ``dilations_8_16`` has written into its code as constants.
_D8_D16 = tuple(
    (dy * d, dx * d)
    for d in (8, 16)
    for dy, dx in ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
)


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def is_d8_d16(offs):  # pragma: no cover - compiled
    """Whether the (16, 2) offsets are those of dilations (8, 16), which ``dilations_8_16`` handles."""
    if offs.shape[0] != 16:
        return False
    for p in range(16):
        if offs[p, 0] != _D8_D16[p][0] or offs[p, 1] != _D8_D16[p][1]:
            return False
    return True


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def rows_8_16(plane, y, h, left):  # pragma: no cover - compiled
    """The source rows of output row y for dilations (8, 16): rows y - 16, y - 8, y, y + 8 and y + 16 of the
    (H, W') plane (clamped), each from column ``left`` on."""
    return (
        plane[row_of(y, -16, h), left:],
        plane[row_of(y, -8, h), left:],
        plane[_U(y), left:],
        plane[row_of(y, 8, h), left:],
        plane[row_of(y, 16, h), left:],
    )


@numba.njit(nogil=True, boundscheck=False, cache=CACHE_ON_DISK, inline="always")
def row_8_16(o, a, yy, u16, u8, m0, d8, d16, w, base):  # pragma: no cover - compiled
    """One output row for dilations (8, 16): o[base + i] = 0 + a[yy, 0, i] * (row y - 8, column i - 8) + ... + a[yy,
    15, i] * (row y + 16, column i + 16), in the neighbours' order, from the five source rows of ``rows_8_16``
    (``u16`` = row y - 16, ..., ``d16`` = row y + 16, each from column pad - 16 on). The offsets are constants here,
    so each source row needs one pointer and its three neighbours are fixed displacements from it; inlined into
    its callers (a call per row would cost about as much as a short row's arithmetic)."""
    zero = np.float32(0.0)
    c0, c8, c16, c24, c32 = _U(0), _U(8), _U(16), _U(24), _U(32)
    n0, n1, n2, n3, n4, n5, n6, n7 = _U(0), _U(1), _U(2), _U(3), _U(4), _U(5), _U(6), _U(7)
    n8, n9, n10, n11, n12, n13, n14, n15 = _U(8), _U(9), _U(10), _U(11), _U(12), _U(13), _U(14), _U(15)
    for i in range(_U(w)):
        x = zero + a[yy, n0, i] * u8[i + c8]  # dilation 8: (-8, -8), (-8, 0), (-8, 8), (0, -8), ...
        x = x + a[yy, n1, i] * u8[i + c16]
        x = x + a[yy, n2, i] * u8[i + c24]
        x = x + a[yy, n3, i] * m0[i + c8]
        x = x + a[yy, n4, i] * m0[i + c24]
        x = x + a[yy, n5, i] * d8[i + c8]
        x = x + a[yy, n6, i] * d8[i + c16]
        x = x + a[yy, n7, i] * d8[i + c24]
        x = x + a[yy, n8, i] * u16[i + c0]  # dilation 16
        x = x + a[yy, n9, i] * u16[i + c16]
        x = x + a[yy, n10, i] * u16[i + c32]
        x = x + a[yy, n11, i] * m0[i + c0]
        x = x + a[yy, n12, i] * m0[i + c32]
        x = x + a[yy, n13, i] * d16[i + c0]
        x = x + a[yy, n14, i] * d16[i + c16]
        o[base + i] = x + a[yy, n15, i] * d16[i + c32]


@numba.njit(nogil=True, boundscheck=False, cache=CACHE_ON_DISK)
def dilations_8_16(dst, src, a, nc, w, pad):  # pragma: no cover - compiled
    """``sixteen_neighbours`` for dilations (8, 16) only, one channel at a time (``row_8_16`` per output row): the
    same sums in the same order. With the offsets read from ``offs`` at run time, the pair kernel keeps about 30
    pointers and offsets live per 8 pixels and reloads most of them from the stack; one channel at a time with
    constants ran 1.2x-1.3x its multiply-adds per second at 224 x 224 on an AVX2 box (``benchmarks/RESULTS.md``,
    "Tenth session"). ``pad`` >= 16 (the reach of dilation 16)."""
    h = src.shape[1]
    base, left = _U(pad), _U(pad - 16)  # row[left + 16 + dx + i] is column dx + i of the plane
    for y in range(h):
        yy = _U(y)
        for c in range(nc):
            o = dst[c, y]
            u16, u8, m0, d8, d16 = rows_8_16(src[c], y, h, left)
            row_8_16(o, a, yy, u16, u8, m0, d8, d16, w, base)
            pad_edges(o, pad, w)


@numba.njit(nogil=True, cache=CACHE_ON_DISK)
def pad_edges(r, pad, w):  # pragma: no cover - compiled
    """Replicate the row's first and last value into the columns before ``pad`` and after ``pad + w``."""
    r[:pad] = r[pad]
    r[pad + w :] = r[pad + w - 1]
