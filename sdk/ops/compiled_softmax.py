"""Compiled CPU kernels (numba) of the softmax over the queries and the per-pixel decision taken from it.

    shift_rows     t = s * x - max_q(s * x)                          the reference's first two numpy steps
    divide_rows    p = e / sum_q e                                    after numpy's exp of t (``e``)
    decide_rows    argmax_q and max_q of e / sum_q e, thresholded      without the (Q, ...) quotient array
    class_decision_rows  labels and scores from class probabilities     ``postprocess.decide``'s, no renormalised copy

The exponential itself stays numpy's (``np.exp``), whose float32 implementation depends on the CPU's vector
extensions: a compiled exp could round some values differently. Every other step is the reference's float32
arithmetic in its order (the sum over the queries is sequential, query 0 first, as numpy reduces a leading axis;
no ``fastmath``), so the results equal ``postprocess.query_probs`` and the numpy argmax and threshold bit for bit.
Where a NaN reaches a decision (numpy's argmax returns the first NaN), the decision kernels write label -1 and the
callers (``clipsam.ops.softmax``) take those rows through numpy. Arrays are (Q, R, W) float32, C-contiguous (whole
arrays and a row offset are passed, not row slices, which numba would compile for any strides and not vectorise);
each call handles ``n`` rows, so ``threads.parallel_blocks`` runs row blocks on the host threads. Imported only
when a kernel runs.
"""

from __future__ import annotations

import numba
import numpy as np

from .compiled import CACHE_ON_DISK

_U = np.uint64  # unsigned loop indices: no negative-index wrap-around, so LLVM vectorises the loops


@numba.njit(nogil=True, cache=CACHE_ON_DISK, error_model="numpy")
def shift_rows(x, xi, s, t, ti, n):  # pragma: no cover - compiled; tested against the reference
    """t[:, ti + k] = x[:, xi + k] * s - max over the queries of x[:, xi + k] * s, for k < n.

    Arguments:
        x: (Q, R, W) float32 logits; s: float32 scale; t: (Q, R', W) float32 output (may be ``x``, with ti = xi).
    """
    q, w = x.shape[0], x.shape[2]
    m = np.empty(w, np.float32)
    for k in range(n):
        i, o = xi + k, ti + k
        xr, tr = x[0, i], t[0, o]
        for j in range(w):
            v = xr[j] * s
            tr[j] = v
            m[j] = v
        for c in range(1, q):
            xr, tr = x[c, i], t[c, o]
            for j in range(w):
                v = xr[j] * s
                tr[j] = v
                m[j] = v if v > m[j] else m[j]
        for c in range(q):
            tr = t[c, o]
            for j in range(w):
                tr[j] = tr[j] - m[j]


@numba.njit(nogil=True, boundscheck=False, cache=CACHE_ON_DISK, error_model="numpy")
def _sum_rows(e, i, acc, top):  # pragma: no cover - compiled
    """acc = e[0, i] + e[1, i] + ... in that order, and top = the maximum over the queries. Vectorised: unsigned
    indices and the running maximum read once per step (``top[j] = v if v > top[j] else top[j]`` compiles to a
    scalar loop, 4x slower)."""
    q, w = e.shape[0], e.shape[2]
    r = _U(i)
    for j in range(_U(w)):
        acc[j] = e[0, r, j]
        top[j] = e[0, r, j]
    for c in range(_U(1), _U(q)):
        for j in range(_U(w)):
            v = e[c, r, j]
            t = top[j]
            acc[j] = acc[j] + v
            top[j] = v if v > t else t


@numba.njit(nogil=True, cache=CACHE_ON_DISK, error_model="numpy")
def divide_rows(e, i0, n):  # pragma: no cover - compiled; tested against the reference
    """e[:, i] /= sum over the queries of e[:, i] (in place), for rows i in [i0, i0 + n)."""
    q, w = e.shape[0], e.shape[2]
    acc = np.empty(w, np.float32)
    top = np.empty(w, np.float32)
    for i in range(i0, i0 + n):
        _sum_rows(e, i, acc, top)
        for c in range(q):
            er = e[c, i]
            for j in range(w):
                er[j] = er[j] / acc[j]


@numba.njit(nogil=True, boundscheck=False, cache=CACHE_ON_DISK, error_model="numpy")
def _near_rows(e, i, acc, near, last):  # pragma: no cover - compiled
    """acc = e[0, i] + e[1, i] + ... in that order, near = how many queries have e >= 0.99 and last = the last of
    them (0 if none), per column, in one vectorised pass (``decide_rows`` needs no maximum where a single query
    reaches 0.99)."""
    q, w = e.shape[0], e.shape[2]
    lim = np.float32(0.99)
    r = _U(i)
    for j in range(_U(w)):
        v = e[0, r, j]
        acc[j] = v
        near[j] = np.int32(v >= lim)
        last[j] = np.int32(0)
    for c in range(_U(1), _U(q)):
        k = np.int32(c)
        for j in range(_U(w)):
            v = e[c, r, j]
            acc[j] = acc[j] + v
            hit = v >= lim
            near[j] = near[j] + np.int32(hit)
            last[j] = k if hit else last[j]


@numba.njit(nogil=True, cache=CACHE_ON_DISK, error_model="numpy")
def decide_rows(e, ei, thd, out, oi, n):  # pragma: no cover - compiled; tested against the reference
    """out[oi + k] = argmax over the queries of p = e[:, ei + k] / sum_q e[:, ei + k] (the first of equal
    quotients), and 0 where max_q p < thd, for k < n; only the quotients that can equal the maximum are computed.

    Division by the (positive) sum does not change the order, so max_q p is max_q e divided by the sum, and a query
    whose e is below 0.99 of that maximum has a quotient strictly below max_q p after rounding. A softmax's largest
    e is exp(0) = 1 exactly (the shifted logits are <= 0, the largest exactly 0), so one pass counts the queries
    with e >= 0.99: where exactly one does and its e is 1, it is the maximum, no other quotient can round to its
    own, and it is the label. Elsewhere (near-ties, or a maximum other than 1) the maximum is found and the
    candidates are divided and compared in query order.

    Arguments:
        e: (Q, R, W) float32 exponentials (>= 0); thd: float32; out: (R, W) int64.
    """
    q, w = e.shape[0], e.shape[2]
    acc = np.empty(w, np.float32)
    near = np.empty(w, np.int32)
    last = np.empty(w, np.int32)
    one = np.float32(1.0)
    for k in range(n):
        i = ei + k
        _near_rows(e, i, acc, near, last)
        for j in range(w):
            if acc[j] != acc[j]:  # a NaN sum (a NaN among the queries): -1, left to the caller
                out[oi + k, j] = -1
                continue
            if near[j] == 1 and e[last[j], i, j] == one:
                lab = np.int64(last[j])
                best = one / acc[j]
            else:
                top = e[0, i, j]
                for c in range(1, q):
                    v = e[c, i, j]
                    top = v if v > top else top
                best = top / acc[j]
                lim = top * np.float32(0.99)
                lab = np.int64(-1)
                for c in range(q):
                    v = e[c, i, j]
                    if v >= lim and v / acc[j] == best:
                        lab = np.int64(c)
                        break
            out[oi + k, j] = 0 if best < thd else lab


@numba.njit(nogil=True, cache=CACHE_ON_DISK, error_model="numpy")
def class_decision_rows(p, thd, labels, scores, i0, n):  # pragma: no cover - compiled; tested against the reference
    """labels[i] = argmax over the classes of p[:, i] (the first of equal values), 0 where the maximum is below
    ``thd``; scores[i] = p[labels[i], i] / sum over the classes of p[:, i]; for rows i in [i0, i0 + n).

    Arguments:
        p: (C, R, W) float32 class probabilities; thd: float32; labels: (R, W) int32; scores: (R, W) float32.
    """
    c_n, w = p.shape[0], p.shape[2]
    acc = np.empty(w, np.float32)
    top = np.empty(w, np.float32)
    lab = np.empty(w, np.int64)
    for i in range(i0, i0 + n):
        _sum_rows(p, i, acc, top)
        r = _U(i)
        for j in range(w):
            lab[j] = 0
        for b in range(c_n):  # from the last class down, so that the first of equal ones is kept (a vectorised select)
            k = np.int64(c_n - 1 - b)
            c = _U(k)
            for j in range(_U(w)):
                lab[j] = k if p[c, r, j] == top[j] else lab[j]
        for j in range(w):
            if acc[j] != acc[j]:  # a NaN among the classes: left to the caller (numpy's argmax takes the first NaN)
                labels[i, j] = -1
                scores[i, j] = np.nan
                continue
            k = 0 if top[j] < thd else lab[j]
            labels[i, j] = k
            scores[i, j] = p[k, i, j] / acc[j]
