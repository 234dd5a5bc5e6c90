"""From stitched member logits to labels at the original size, in row strips of bounded memory.

Each member's logits (Q, h, w) at its resized size are upsampled bilinearly (align_corners=False) to the
original size (H0, W0), then the ensemble is combined and post-processed (``clipsam.postprocess``):

    prob_mean / weighted :  P = sum_m w_m softmax(logit_scale * L_m)      (weights sum to 1)
    logit_mean           :  P = softmax(logit_scale * sum_m w_m L_m)

A single member whose whole map fits the strip budget reduces to the reference ``postprocess(upsample(L))``, bit
for bit. Beyond the budget, the upsampling is computed for a strip of output rows at a time (the backend's
``resize(..., rows=...)``), so a 6000 x 4000 photo never holds (Q, H0, W0) floats. SCLIP's area rule needs global
argmax counts first: the strips' class probabilities are kept for the decision where the whole image's fit the
memory budget, and computed again otherwise. Output PAMR needs the whole map and disables strips.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import DenseConfig
from ..postprocess import finish_strips, strip_rows
from .deferred import Upsampled, resize_logits


def class_probs(post, ups: list[Any], weights: list[float], cfg: DenseConfig, vocab, fp16_tail: bool = False) -> Any:
    """Members' logits for the same pixels, (Q, r, W0) each (``post``'s arrays) -> class probabilities (C, r, W0).
    ``fp16_tail``: the softmax in upstream RF-CLIP's fp16 arithmetic (``PostOps.query_probs_fp16``)."""
    scale = cfg.post.logit_scale
    softmax = post.query_probs_fp16 if fp16_tail else post.query_probs
    if len(ups) == 1:
        probs = softmax(ups[0], scale)
    elif cfg.schedule.combine == "logit_mean":
        probs = softmax(post.weighted_sum(ups, weights), scale)
    else:
        probs = post.weighted_sum((softmax(u, scale) for u in ups), weights)
    return post.merge_synonyms(probs, vocab.query_to_class, vocab.num_classes)


def finalize_members(
    ops,
    logits: list[Any],
    weights: list[float],
    guides: list[Any],
    out_hw: tuple[int, int],
    cfg: DenseConfig,
    vocab,
    max_strip_mb: float = 256.0,
    return_probs: bool = False,
    fp16_tail: bool = False,
    resize=None,
):
    """Labels and scores of one image from its ensemble members.

    Arguments:
        ops: the backend's ``HostOps``.
        logits: per member (Q, h_m, w_m) float32 logits at the member's resized size (flips undone), or an
            ``Upsampled`` grid standing for them (``clipsam.pipeline.deferred``).
        weights: per member ensemble weight (summing to 1).
        guides: per member (3, h_m, w_m) normalised image (unflipped), used only by output PAMR.
        out_hw: original (H0, W0).
        max_strip_mb: memory for the per-strip float buffers, which sets the strip height (at most the backend's
            ``ops.strip_mb``); with SCLIP's area rule, the whole image's class probabilities are kept between its
            two passes where they fit it.
        return_probs: also return the class probabilities (SAM2 refinement needs them; C x H0 x W0 floats).
        fp16_tail: upstream RF-CLIP's fp16 run (``precision="fp16-upstream"`` with a whole-image preset or PAMR),
            whose logits stay fp16 to the softmax: the softmax in fp16 (``PostOps.query_probs_fp16``), ``prob_thd``
            compared as the fp16 value it becomes there.
        resize: the upsampling of the logits to ``out_hw`` (``ops.resize``'s signature; default ``ops.resize``).

    Returns:
        labels (H0, W0) int32, scores (H0, W0) float32, and with ``return_probs`` the renormalised class
        probabilities (C, H0, W0) float32 (numpy).
    """
    h0 = out_hw[0]
    resize = resize or ops.resize
    pamr = cfg.post.pamr_iters > 0
    if pamr:  # PAMR needs the whole map: refine each member at full size, then treat it as final
        logits = [
            ops.pamr(
                ops.resize(g[None], out_hw),
                m.resize(out_hw)[None] if isinstance(m, Upsampled) else resize(m[None], out_hw),
                cfg.post.pamr_iters,
                cfg.post.pamr_dilations,
                # a resized copy is this step's own
                in_place=isinstance(m, Upsampled) or tuple(m.shape[-2:]) != tuple(out_hw),
            )[0]
            for m, g in zip(logits, guides)
        ]
    strip_mb = min(max_strip_mb, ops.strip_mb)
    rows = strip_rows(out_hw, len(logits), logits[0].shape[0], vocab.num_classes, strip_mb, pamr)
    whole = rows >= h0  # fits: one resize of the whole map, as the reference path

    def strips():
        for r0 in range(0, h0, rows):
            r1 = min(h0, r0 + rows)
            if pamr:
                ups = [m[:, r0:r1] for m in logits]
            else:
                ups = [resize_logits(m, out_hw, None if whole else (r0, r1), resize) for m in logits]
            yield r0, r1, class_probs(ops.post, [ops.to_post(u) for u in ups], weights, cfg, vocab, fp16_tail)

    return finish_strips(
        strips,
        out_hw,
        vocab.num_classes,
        float(np.float16(cfg.post.prob_thd)) if fp16_tail else cfg.post.prob_thd,
        cfg.post.area_thd,
        return_probs,
        ops.post.argmax_counts,
        ops.post.decide,
        keep_mb=max_strip_mb,
    )
