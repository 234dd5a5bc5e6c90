"""numpy port of ``clipsam.dense.pamr`` (PAMR, ALGORITHMS.md A.7) for the torch-free runtime.

Same algorithm, same float32 arithmetic and neighbour order as the torch reference:

    sigma  = unbiased std over the 9 * len(dilations) samples of each channel (centre once per dilation)
    aff_n  = mean over image channels of  -|I - I_n| / (1e-8 + 0.1 * sigma)
    a      = softmax over the 8 * len(dilations) neighbours
    repeat num_iter times:  M <- sum_n a_n * M_n        (replicate padding, no self term)

Neighbours are strided views of one edge-padded copy per dilation and iteration; the update accumulates in
place, so memory stays O(C*H*W).
"""

from __future__ import annotations

import numpy as np

from .host_ops import resize_bilinear, softmax

__all__ = ["pamr", "NEIGHBOUR_OFFSETS"]

NEIGHBOUR_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _pad_edge(x: np.ndarray, d: int) -> np.ndarray:
    """Replicate-pad the last two axes by d (what F.pad(mode="replicate") does)."""
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(d, d), (d, d)], mode="edge")


def _shifted(padded: np.ndarray, d: int, h: int, w: int):
    for dy, dx in NEIGHBOUR_OFFSETS:
        yield padded[..., d + dy * d : d + dy * d + h, d + dx * d : d + dx * d + w]


def _affinity(image: np.ndarray, dilations) -> np.ndarray:
    """(K, H, W) image -> (8*len(dilations), H, W) neighbour weights summing to 1 over axis 0."""
    h, w = image.shape[-2:]
    samples, diffs = [], []
    for d in dilations:
        nbs = list(_shifted(_pad_edge(image, d), d, h, w))
        samples.extend(nbs[:4] + [image] + nbs[4:])
        diffs.extend(np.abs(image - nb) for nb in nbs)
    std = np.stack(samples, axis=1).std(axis=1, ddof=1)  # (K, H, W)
    denom = np.float32(1e-8) + np.float32(0.1) * std
    aff = np.stack([-dist / denom for dist in diffs], axis=1)  # (K, P, H, W)
    return softmax(aff.mean(axis=0, dtype=np.float32), axis=0)


def _pamr_one(image: np.ndarray, mask: np.ndarray, num_iter: int, dilations) -> np.ndarray:
    h, w = image.shape[-2:]
    a = _affinity(image, dilations)
    tmp = np.empty_like(mask)
    for _ in range(num_iter):
        out = np.zeros_like(mask)
        p = 0
        for d in dilations:
            for nb in _shifted(_pad_edge(mask, d), d, h, w):
                np.multiply(a[p], nb, out=tmp)
                out += tmp
                p += 1
        mask = out
    return mask


def pamr(image: np.ndarray, logits: np.ndarray, num_iter: int = 10, dilations=(8, 16)) -> np.ndarray:
    """Refine ``logits`` with affinities of ``image``.

    Arguments:
        image: (B, K, H, W) float32 normalised image.
        logits: (B, C, H', W') float32; resized to (H, W) bilinearly (align_corners=True) first, as upstream.

    Returns:
        (B, C, H, W) float32 refined logits.
    """
    if num_iter <= 0:
        return logits
    image = np.asarray(image, dtype=np.float32)
    if logits.shape[-2:] != image.shape[-2:]:
        logits = resize_bilinear(logits, image.shape[-2:], align_corners=True)
    mask = np.asarray(logits, dtype=np.float32)
    return np.stack([_pamr_one(image[b], mask[b], num_iter, tuple(dilations)) for b in range(mask.shape[0])])
