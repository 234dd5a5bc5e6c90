"""Logits to labels (ALGORITHMS.md A.6), in numpy so every backend shares it.

    P      = softmax(logit_scale * logits) over all queries         (synonyms compete)
    P_c    = max over the queries of class c
    area   (SCLIP): foreground classes whose argmax pixel count is <= area_thd * (foreground argmax pixels) get P = 0
    label  = argmax_c P_c; pixels with max_c P_c < prob_thd -> class 0
    score  = P_label / sum_c P_c  (the class probabilities renormalised after the synonym merge, as upstream)
"""

from __future__ import annotations

import numpy as np

__all__ = ["merge_synonyms", "postprocess"]


def _softmax(x: np.ndarray, axis: int = 0) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(axis=axis, keepdims=True)


def merge_synonyms(probs: np.ndarray, query_to_class, num_classes: int) -> np.ndarray:
    """(Q, H, W) query probabilities -> (C, H, W) class probabilities (max over synonyms)."""
    q2c = np.asarray(query_to_class)
    if len(q2c) == num_classes:
        return probs
    out = np.empty((num_classes,) + probs.shape[1:], dtype=probs.dtype)
    for c in range(num_classes):
        out[c] = probs[q2c == c].max(axis=0)
    return out


def postprocess(logits: np.ndarray, query_to_class, num_classes: int, logit_scale: float, prob_thd: float = 0.0,
                area_thd: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels from query logits.

    Arguments:
        logits: (Q, H, W) float32 logits at the original image size.
        query_to_class: class index of each query, length Q.

    Returns:
        labels (H, W) int32, scores (H, W) float32, class probabilities (C, H, W) float32 (renormalised).
    """
    probs = _softmax(logits.astype(np.float32) * np.float32(logit_scale), axis=0)
    probs = merge_synonyms(probs, query_to_class, num_classes)
    if area_thd is not None and num_classes > 1:
        pred = probs.argmax(axis=0)
        counts = np.bincount(pred.ravel(), minlength=num_classes)[1:]
        keep = counts > area_thd * counts.sum()
        probs[1:] *= keep.astype(probs.dtype)[:, None, None]
    labels = probs.argmax(axis=0)
    labels[probs.max(axis=0) < prob_thd] = 0
    probs = probs / probs.sum(axis=0, keepdims=True)
    scores = np.take_along_axis(probs, labels[None], axis=0)[0]
    return labels.astype(np.int32), scores.astype(np.float32), probs.astype(np.float32)
