"""Logits to labels (``docs/algorithms.md``, post-processing), in numpy.

    P      = softmax(logit_scale * logits) over all queries         (synonyms compete)
    P_c    = max over the queries of class c
    area   (SCLIP): foreground classes whose argmax pixel count is <= area_thd * (foreground argmax pixels) get P = 0
    label  = argmax_c P_c; pixels with max_c P_c < prob_thd -> class 0
    score  = P_label / sum_c P_c  (the class probabilities renormalised after the synonym merge, as upstream)

The steps are separate functions so that large images can be finished in row strips with the same arithmetic
(``finish_strips``, driven by ``clipsam.pipeline.finalize``); ``postprocess`` runs them on a whole image.
"""

from __future__ import annotations

import numpy as np


def query_probs(logits: np.ndarray, logit_scale: float) -> np.ndarray:
    """softmax(logit_scale * logits) over axis 0: (Q, ...) float32."""
    x = logits.astype(np.float32, copy=False) * np.float32(logit_scale)
    x = np.exp(x - x.max(axis=0, keepdims=True))
    return x / x.sum(axis=0, keepdims=True)


def query_probs_fp16(logits: np.ndarray, logit_scale: float) -> np.ndarray:
    """``query_probs`` as upstream RF-CLIP's fp16 run computes it (``precision="fp16-upstream"``): the logits rounded
    to fp16, times the scale in fp16, the softmax computed in float32 and its result rounded to fp16 (what torch's
    fp16 softmax does). (Q, ...) float32 holding fp16 values."""
    x = (logits.astype(np.float16) * np.float16(logit_scale)).astype(np.float32)
    x = np.exp(x - x.max(axis=0, keepdims=True))
    return (x / x.sum(axis=0, keepdims=True)).astype(np.float16).astype(np.float32)


def merge_synonyms(probs: np.ndarray, query_to_class, num_classes: int) -> np.ndarray:
    """(Q, H, W) query probabilities -> (C, H, W) class probabilities (max over synonyms)."""
    q2c = np.asarray(query_to_class)
    if len(q2c) == num_classes:
        return probs
    out = np.empty((num_classes,) + probs.shape[1:], dtype=probs.dtype)
    for c in range(num_classes):
        out[c] = probs[q2c == c].max(axis=0)
    return out


def area_keep(class_counts: np.ndarray, area_thd: float | None) -> np.ndarray | None:
    """SCLIP's area rule from argmax pixel counts per class (C,): bool (C,) of classes kept, or None."""
    if area_thd is None or len(class_counts) < 2:
        return None
    fg = class_counts[1:]
    return np.concatenate([[True], fg > area_thd * fg.sum()])


def thresholded_argmax(probs: np.ndarray, thd: float, axis: int = 0) -> np.ndarray:
    """The index of the largest value along ``axis`` (the first of equal values; numpy's rule for NaN), 0 where
    that largest value is below ``thd`` (compared in the array's dtype)."""
    labels = probs.argmax(axis=axis)
    labels[probs.max(axis=axis) < probs.dtype.type(thd)] = 0
    return labels


def decide(
    probs: np.ndarray, prob_thd: float, keep: np.ndarray | None = None, with_probs: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Class probabilities (C, H, W) -> labels (H, W) int32, scores (H, W) float32, renormalised probs (None
    without ``with_probs``: then only each pixel's label is divided by the sum, the same numbers)."""
    if keep is not None and not keep.all():
        probs = probs * keep.astype(probs.dtype)[:, None, None]
    labels = thresholded_argmax(probs, prob_thd)
    total = probs.sum(axis=0, keepdims=True)
    if not with_probs:
        scores = np.take_along_axis(probs, labels[None], axis=0)[0] / total[0]
        return labels.astype(np.int32), scores.astype(np.float32), None
    probs = probs / total
    scores = np.take_along_axis(probs, labels[None], axis=0)[0]
    return labels.astype(np.int32), scores.astype(np.float32), probs.astype(np.float32, copy=False)


def postprocess(
    logits: np.ndarray,
    query_to_class,
    num_classes: int,
    logit_scale: float,
    prob_thd: float = 0.0,
    area_thd: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels from query logits of a whole image.

    Arguments:
        logits: (Q, H, W) float32 logits at the original image size.
        query_to_class: class index of each query, length Q.

    Returns:
        labels (H, W) int32, scores (H, W) float32, class probabilities (C, H, W) float32 (renormalised).
    """
    probs = merge_synonyms(query_probs(logits, logit_scale), query_to_class, num_classes)
    keep = None
    if area_thd is not None:
        keep = area_keep(np.bincount(probs.argmax(axis=0).ravel(), minlength=num_classes), area_thd)
    labels, scores, normed = decide(probs, prob_thd, keep)
    assert normed is not None  # with_probs
    return labels, scores, normed


# rows per strip at least: with hundreds of queries one row of a strip's buffers is MiBs, and one-row strips cost
# more in per-strip calls than they save in cache (measured on the CPU: benchmarks/RESULTS.md)
MIN_STRIP_ROWS = 4


def strip_rows(
    out_hw, members: int, num_queries: int, num_classes: int, max_strip_mb: float, whole: bool = False
) -> int:
    """Rows per strip so that the per-strip float buffers (members' upsampled logits, probabilities, class
    probabilities) fit ``max_strip_mb``, but at least ``MIN_STRIP_ROWS`` (or the whole image); all rows when
    ``whole`` (output PAMR needs the whole map)."""
    h0, w0 = out_hw
    per_row = 4.0 * w0 * ((members + 2) * num_queries + 2 * num_classes)
    return h0 if whole else int(max(1, min(h0, max(MIN_STRIP_ROWS, max_strip_mb * 2**20 // per_row))))


def argmax_counts(probs: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels per class of argmax over axis 0 of (C, ...) probabilities: (C,) int64."""
    return np.bincount(probs.argmax(axis=0).ravel(), minlength=num_classes)


def finish_strips(
    strips,
    out_hw,
    num_classes: int,
    prob_thd: float,
    area_thd: float | None,
    return_probs: bool,
    counts,
    decide_strip,
    keep_mb: float = 0.0,
):
    """Labels and scores of one image from its class probabilities, strip by strip.

    Arguments:
        strips: callable yielding (r0, r1, probs (C, r1 - r0, W0)) for consecutive row ranges covering the image,
            each ``probs`` its own array (not overwritten by later strips); called twice when SCLIP's area rule
            needs the global argmax counts first, unless the whole image's class probabilities (C x H0 x W0
            float32) fit ``keep_mb``: then the first pass's strips are kept and decided without recomputing them.
        counts: (probs, C) -> (C,) numpy argmax counts of a strip (``argmax_counts``, or a device version).
        decide_strip: (probs, prob_thd, keep, with_probs) -> numpy labels, scores and (when ``with_probs``)
            renormalised probabilities: ``decide`` or a device version.

    Returns:
        labels (H0, W0) int32, scores (H0, W0) float32, and with ``return_probs`` the renormalised class
        probabilities (C, H0, W0) float32.
    """
    h0, w0 = out_hw
    keep = None
    kept: list | None = None
    if area_thd is not None:
        total = np.zeros(num_classes, dtype=np.int64)
        kept = [] if 4.0 * num_classes * h0 * w0 <= keep_mb * 2**20 else None
        for strip in strips():
            total += counts(strip[2], num_classes)
            if kept is not None:
                kept.append(strip)
        keep = area_keep(total, area_thd)
    labels = np.empty((h0, w0), dtype=np.int32)
    scores = np.empty((h0, w0), dtype=np.float32)
    full = np.empty((num_classes, h0, w0), dtype=np.float32) if return_probs else None
    for r0, r1, probs in strips() if kept is None else kept:
        labels[r0:r1], scores[r0:r1], normed = decide_strip(probs, prob_thd, keep, return_probs)
        if full is not None:
            full[:, r0:r1] = normed
    return (labels, scores, full) if return_probs else (labels, scores)
