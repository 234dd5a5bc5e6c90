"""From stitched member logits to labels at the original size, in row strips (numpy twin of
``clipsam.dense.finalize``).

Each member's logits (Q, h, w) are upsampled bilinearly (align_corners=False) to the original size, the ensemble is
combined and post-processed with ``clipsam.postprocess``'s own functions:

    prob_mean / weighted :  P = sum_m w_m softmax(logit_scale * L_m)      (weights sum to 1)
    logit_mean           :  P = softmax(logit_scale * sum_m w_m L_m)

Strips of output rows bound the memory; ``host_ops.resize_bilinear(rows=...)`` computes a strip exactly as the
same rows of the full resize. SCLIP's area rule needs global argmax counts and takes a second pass. Output PAMR
needs the whole map and disables strips.
"""

from __future__ import annotations

import numpy as np

from ..config import DenseConfig
from ..postprocess import finish_strips, merge_synonyms, query_probs, strip_rows
from .host_ops import resize_bilinear
from .pamr import pamr

__all__ = ["finalize_members"]


def _combine(ups: list[np.ndarray], weights, cfg: DenseConfig, vocab) -> np.ndarray:
    """Members' logits for the same pixels (Q, r, W0) each -> combined class probabilities (C, r, W0)."""
    if len(ups) == 1:
        probs = query_probs(ups[0], cfg.logit_scale)
    elif cfg.combine == "logit_mean":
        probs = query_probs(sum(np.float32(w) * u for u, w in zip(ups, weights)), cfg.logit_scale)
    else:
        probs = sum(np.float32(w) * query_probs(u, cfg.logit_scale) for u, w in zip(ups, weights))
    return merge_synonyms(probs, vocab.query_to_class, vocab.num_classes)


def finalize_members(logits: list[np.ndarray], weights: list[float], guides: list[np.ndarray], out_hw, cfg: DenseConfig,
                     vocab, max_strip_mb: float = 256.0, return_probs: bool = False):
    """Labels and scores of one image from its ensemble members.

    Arguments:
        logits: per member (Q, h_m, w_m) float32 logits at the member's resized size (flips undone).
        weights: per member ensemble weight (summing to 1).
        guides: per member (3, h_m, w_m) normalised image (unflipped), used only by output PAMR.
        out_hw: original (H0, W0).
        max_strip_mb: memory for the per-strip buffers, which sets the strip height.

    Returns:
        labels (H0, W0) int32, scores (H0, W0) float32, and with ``return_probs`` the renormalised class
        probabilities (C, H0, W0) float32.
    """
    h0 = out_hw[0]
    if cfg.pamr_iters > 0:
        logits = [pamr(resize_bilinear(g[None], out_hw), resize_bilinear(m[None], out_hw), cfg.pamr_iters,
                       cfg.pamr_dilations)[0] for m, g in zip(logits, guides)]
    rows = strip_rows(out_hw, len(logits), logits[0].shape[0], vocab.num_classes, max_strip_mb, cfg.pamr_iters > 0)

    def strips():
        for r0 in range(0, h0, rows):
            r1 = min(h0, r0 + rows)
            if cfg.pamr_iters > 0:
                ups = [m[:, r0:r1] for m in logits]
            else:
                ups = [resize_bilinear(m, out_hw, rows=(r0, r1)) for m in logits]
            yield r0, r1, _combine(ups, weights, cfg, vocab)

    return finish_strips(strips, out_hw, vocab.num_classes, cfg.prob_thd, cfg.area_thd, return_probs)
