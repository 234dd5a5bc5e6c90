"""The softmax over the queries on the host, in cache-sized row blocks on the host threads, torch-free.

    query_softmax(x, scale)         softmax(scale * x) over axis 0        = postprocess.query_probs(x, scale)
    softmax_labels(x, scale, thd)   its argmax, 0 where its max < thd     (SFR's first pass)
    class_decision(p, thd)          labels and scores of class probs      = postprocess.decide(p, thd)[:2]

Both run ``compiled_softmax``'s kernels around numpy's exp on blocks of a few rows (each block's (Q, rows, W)
floats stay in cache, and blocks run on ``threads.host_threads()`` threads), with the reference's float32
arithmetic in its order: the same numbers bit for bit (tests/ops/test_softmax.py). NumPy's own path makes six
passes over queries x pixels with four temporaries of that size and one thread; this makes four passes in place.
"""

from __future__ import annotations

import numpy as np

from .threads import parallel_blocks

_F = np.float32
_BLOCK_BYTES = 1 << 20  # (Q, rows, W) float32 per block: stays in L2


def _rows_per_block(q: int, w: int) -> int:
    return max(1, _BLOCK_BYTES // max(1, 4 * q * w))


def query_softmax(x: np.ndarray, scale: float, out: np.ndarray | None = None) -> np.ndarray:
    """softmax(scale * x) over axis 0.

    Arguments:
        x: (Q, R, W) float32 logits (other shapes and dtypes: ``postprocess.query_probs`` itself).
        out: optional (Q, R, W) C-contiguous float32 array for the result (may be ``x``).

    Returns:
        (Q, R, W) float32 probabilities, equal to ``postprocess.query_probs(x, scale)`` bit for bit.
    """
    from .compiled_softmax import divide_rows, shift_rows

    if x.ndim != 3 or x.dtype != _F or out is not None and (out.shape != x.shape or out.dtype != _F):
        if out is not None:
            raise ValueError(f"query_softmax: x and out must be (Q, R, W) float32, got {x.shape}, {out.shape}")
        from ..postprocess import query_probs

        return query_probs(x, scale)
    src = np.ascontiguousarray(x)
    dst = np.empty_like(src) if out is None else out
    if not dst.flags.c_contiguous:
        raise ValueError("query_softmax: out must be C-contiguous")
    s = _F(scale)
    step = _rows_per_block(x.shape[0], x.shape[2])

    def run(b0: int, b1: int) -> None:
        for r0 in range(b0 * step, min(x.shape[1], b1 * step), step):
            r1 = min(x.shape[1], r0 + step)
            shift_rows(src, r0, s, dst, r0, r1 - r0)
            block = dst[:, r0:r1]
            np.exp(block, out=block)
            divide_rows(dst, r0, r1 - r0)

    parallel_blocks(run, -(-x.shape[1] // step))
    return dst


def softmax_labels(x: np.ndarray, scale: float, thd: float, rows: int | None = None) -> np.ndarray:
    """Per-pixel argmax of softmax(scale * x) over axis 0 (the first of equal probabilities), 0 where its maximum is
    below ``thd``, without the probabilities.

    Arguments:
        x: (Q, H, W) float32 logits (C-contiguous).
        rows: compute rows [0, rows) only (default: all).

    Returns:
        (rows, W) int64.
    """
    from .compiled_softmax import decide_rows, shift_rows

    q, h, w = x.shape
    n = h if rows is None else rows
    src = np.ascontiguousarray(x, dtype=_F)
    out = np.empty((n, w), np.int64)
    step = _rows_per_block(q, w)
    s, t = _F(scale), _F(thd)

    def run(b0: int, b1: int) -> None:
        tmp = np.empty((q, step, w), _F)
        for r0 in range(b0 * step, min(n, b1 * step), step):
            r1 = min(n, r0 + step)
            blk = tmp[:, : r1 - r0]
            shift_rows(src, r0, s, tmp, 0, r1 - r0)
            np.exp(blk, out=blk)
            decide_rows(tmp, 0, t, out, r0, r1 - r0)

    parallel_blocks(run, -(-n // step))
    _redo_nan_rows(out, lambda rows: _labels_ref(src[:, rows], s, t))
    return out


def _labels_ref(x: np.ndarray, scale: np.float32, thd: np.float32) -> np.ndarray:
    """``softmax_labels`` in numpy (the reference), for (Q, R, W) logits."""
    from ..postprocess import query_probs, thresholded_argmax

    return thresholded_argmax(query_probs(x, float(scale)), float(thd))


def _redo_nan_rows(labels: np.ndarray, ref, scores: np.ndarray | None = None) -> None:
    """Rows where a kernel left label -1 (a NaN reached the decision) recomputed by ``ref(rows)``, which returns
    labels (or labels and scores) for those rows: numpy's NaN semantics, the reference's numbers."""
    rows = np.flatnonzero((labels < 0).any(axis=1))
    if len(rows) == 0:
        return
    got = ref(rows)
    if scores is None:
        labels[rows] = got
    else:
        labels[rows], scores[rows] = got


def class_decision(probs: np.ndarray, thd: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores from class probabilities, without the renormalised (C, R, W) array.

    Arguments:
        probs: (C, R, W) float32 class probabilities.
        thd: pixels whose largest probability is below it get label 0 (compared in float32, as numpy compares a
            float32 array with a Python float).

    Returns:
        labels (R, W) int32 and scores (R, W) float32, equal to ``postprocess.decide(probs, thd)[:2]`` bit for bit.
    """
    from .compiled_softmax import class_decision_rows

    src = np.ascontiguousarray(probs, dtype=_F)
    _, r, w = src.shape
    labels = np.empty((r, w), np.int32)
    scores = np.empty((r, w), _F)
    step = _rows_per_block(src.shape[0], w)
    t = _F(thd)
    parallel_blocks(
        lambda b0, b1: class_decision_rows(src, t, labels, scores, b0 * step, min(r, b1 * step) - b0 * step),
        -(-r // step),
    )
    _redo_nan_rows(labels, lambda rows: _decision_ref(src[:, rows], thd), scores)
    return labels, scores


def _decision_ref(probs: np.ndarray, thd: float) -> tuple[np.ndarray, np.ndarray]:
    from ..postprocess import decide

    labels, scores, _ = decide(probs, thd, with_probs=False)
    return labels, scores
